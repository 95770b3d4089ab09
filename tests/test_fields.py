"""<target>/fields=.../ through a real mount, against the kernel's own views of what the test made.

Ground truth: /proc/PID/status, schedstat and fdinfo, sockets and maps the test
creates (and bpftool's listing of them), and bpftool's dump of the kernel's BTF.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import missing, run_iterfs
from helpers import bpftool_json, iter_links_of, kernel_refusal, make_map, proc_status, proc_threads, settled, stopped

pytestmark = pytest.mark.fuse

TASK = "pid,tgid,comm,real_parent.tgid,se.sum_exec_runtime,mm.total_vm,cred.uid,comm[0],exit_signal"
O_CLOEXEC = 0o2000000
TCP_LISTEN, TCP_TIME_WAIT = 10, 6


def rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The header's names and each line's values, split only at tabs."""
    lines = text.splitlines()
    assert lines, "no header"
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def by_name(text: str) -> list[dict[str, str]]:
    names, values = rows(text)
    assert all(len(v) == len(names) for v in values), "a line with another number of fields"
    return [dict(zip(names, v)) for v in values]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_task_fields_are_the_values_proc_shows(mount, child):
    tids = child.start_threads(["worker"])
    with stopped(child):  # a stopped process's run time and memory hold still
        text = mount.read(f"task/fields={TASK}/pid={child.pid}")
        parsed = json_lines(mount.read(f"task/fields={TASK}/pid={child.pid}.json"))
        status = proc_status(child.pid)
        schedstat = {tid: int(open(f"/proc/{child.pid}/task/{tid}/schedstat").read().split()[0])
                     for tid in os.listdir(f"/proc/{child.pid}/task")}
    names, _ = rows(text)
    assert names == TASK.split(",")
    found = {int(r["pid"]): r for r in by_name(text)}
    assert set(found) == {int(t) for t in schedstat} and tids[0] in found
    page_kb = os.sysconf("SC_PAGESIZE") // 1024
    for tid, r in found.items():
        assert int(r["tgid"]) == child.pid == int(status["Tgid"])
        assert int(r["real_parent.tgid"]) == int(status["PPid"])
        assert int(r["cred.uid"]) == int(status["Uid"].split()[0])
        assert int(r["se.sum_exec_runtime"]) == schedstat[str(tid)]
        assert int(r["mm.total_vm"]) * page_kb == int(status["VmSize"].split()[0])
        comm = open(f"/proc/{child.pid}/task/{tid}/comm").read().rstrip("\n")
        assert r["comm"] == comm and r["comm[0]"] == comm[0]  # a char alone is a character
        # a signed int, negative for a thread that is not the leader: field 38 of stat
        stat = open(f"/proc/{child.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        assert int(r["exit_signal"]) == int(stat[38 - 3]) == (-1 if tid != child.pid else signal.SIGCHLD)
    # the JSON sibling holds the same values, typed
    assert [{k: str(v) for k, v in line.items()} for line in parsed] == by_name(text)
    assert all(isinstance(line["pid"], int) and isinstance(line["comm"], str) for line in parsed)


def kernel_thread() -> int:
    """A kernel thread: no VmSize in its status, as it has no mm."""
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            status = proc_status(pid)
        except FileNotFoundError:
            continue
        if "VmSize" not in status and (pid == 2 or status["PPid"] == "2"):  # kthreadd and its children
            return pid
    raise AssertionError("no kernel thread found")


def test_a_field_through_a_null_pointer_is_a_dash_and_null(mount):
    pid = kernel_thread()
    text = mount.read(f"task/fields=pid,mm.total_vm,comm/pid={pid}")
    (r,) = [r for r in by_name(text) if int(r["pid"]) == pid]
    assert r["mm.total_vm"] == "-" and r["comm"] == open(f"/proc/{pid}/comm").read().rstrip("\n")
    (line,) = [x for x in json_lines(mount.read(f"task/fields=pid,mm.total_vm,comm/pid={pid}.json"))
               if x["pid"] == pid]
    assert line["mm.total_vm"] is None


def test_task_file_fields_are_what_fdinfo_says(mount, child, tmp_path):
    path = tmp_path / "data with\ttab"
    path.write_bytes(b"x" * 10000)
    fds = {child.open_file(path): 1234, child.open_file(path): 9876}
    for fd, pos in fds.items():
        child.seek(fd, pos)
    text = mount.read(f"task_file/fields=fd,file.f_flags,file.f_pos,file.f_path.dentry.d_name.name,task.pid/"
                      f"pid={child.pid}")
    found = {int(r["fd"]): r for r in by_name(text)}
    assert set(found) == {int(fd) for fd in os.listdir(f"/proc/{child.pid}/fd")}
    for fd, r in found.items():
        info = dict(line.split(":\t", 1) for line in open(f"/proc/{child.pid}/fdinfo/{fd}").read().splitlines()
                    if ":\t" in line)
        assert int(r["file.f_pos"]) == int(info["pos"])
        # fdinfo adds O_CLOEXEC from the fd table; f_flags is the file's own
        assert int(r["file.f_flags"]) & ~O_CLOEXEC == int(info["flags"], 8) & ~O_CLOEXEC
        assert int(r["task.pid"]) == child.pid
    for fd, pos in fds.items():
        assert int(found[fd]["file.f_pos"]) == pos
        # a char * string, with the tab escaped
        assert found[fd]["file.f_path.dentry.d_name.name"] == "data with\\ttab"


def test_a_string_that_is_not_utf8_keeps_its_bytes_in_text_and_is_valid_json(mount, tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xc3\xa9 \\ \xff")  # UTF-8, a backslash, then a byte that is none
    odd.write_bytes(b"")
    fd = os.open(odd, os.O_RDONLY)
    try:
        spec = f"fields=fd,file.f_path.dentry.d_name.name/pid={os.getpid()}"
        (r,) = [r for r in by_name(mount.read(f"task_file/{spec}")) if int(r["fd"]) == fd]
        (line,) = [x for x in json_lines(mount.read(f"task_file/{spec}.json")) if x["fd"] == fd]
    finally:
        os.close(fd)
    # text: the backslash escaped, other bytes as they are (mount.read keeps the 0xff); JSON: U+FFFD
    assert r["file.f_path.dentry.d_name.name"] == "caf\u00e9 \\\\ \udcff"
    assert line["file.f_path.dentry.d_name.name"] == "caf\u00e9 \\ \ufffd"


def tcp_rows(mount, spec: str) -> list[dict[str, str]]:
    return by_name(mount.read(f"tcp/fields={spec}/all"))


def test_tcp_fields_of_sockets_the_test_made(mount):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        port, client_port = listener.getsockname()[1], client.getsockname()[1]
        found = tcp_rows(mount, "sk_common.skc_num,sk_num,sk_dport,sk_rcv_saddr,sk_state,sk_family,"
                                "sk_common.skc_reuse,sk_reuseport,sk_rcvbuf,sk_prot.name")
        (listening,) = [r for r in found if int(r["sk_num"]) == port and int(r["sk_state"]) == TCP_LISTEN]
        assert int(listening["sk_common.skc_num"]) == port
        assert int(listening["sk_family"]) == socket.AF_INET and listening["sk_prot.name"] == "TCP"
        assert int(listening["sk_rcv_saddr"]) == 0x7F000001  # a __be32 in host order
        assert int(listening["sk_common.skc_reuse"]) == 1  # a 4-bit bitfield: SO_REUSEADDR
        assert int(listening["sk_reuseport"]) == 1  # the 1-bit one after it: SO_REUSEPORT
        assert int(listening["sk_rcvbuf"]) == listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        (connected,) = [r for r in found if int(r["sk_num"]) == client_port]
        assert int(connected["sk_dport"]) == port  # a __be16 in host order
        assert int(connected["sk_common.skc_reuse"]) == int(connected["sk_reuseport"]) == 0
    finally:
        for s in (client, server, listener):
            s.close()


def test_members_a_time_wait_socket_lacks_are_dashes(mount):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    client_port = client.getsockname()[1]
    client.close()  # the side that closes first waits in TIME_WAIT
    server.close()
    listener.close()

    def waiting() -> bool:  # the kernel's view: /proc/net/tcp says TIME_WAIT (after FIN_WAIT2)
        rows = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
        return any(int(f[1].split(":")[1], 16) == client_port and int(f[3], 16) == TCP_TIME_WAIT for f in rows)

    assert settled(waiting, True)
    found = tcp_rows(mount, "sk_num,sk_state,sk_rcvbuf")
    (waiting,) = [r for r in found if int(r["sk_num"]) == client_port]
    assert int(waiting["sk_state"]) == TCP_TIME_WAIT and waiting["sk_rcvbuf"] == "-"


def test_an_enum_by_name_and_a_char_array_of_a_map_the_test_made(mount, bpffs):
    map_id = make_map(bpffs, kind="percpu_array", entries=3)
    shown = bpftool_json("map", "show", "id", str(map_id))
    found = by_name(mount.read("bpf_map/fields=map.id,map.map_type,map.name,map.max_entries/all"))
    (r,) = [r for r in found if int(r["map.id"]) == map_id]
    assert r["map.map_type"] == "BPF_MAP_TYPE_" + shown["type"].upper()
    assert (r["map.name"], int(r["map.max_entries"])) == (shown["name"], shown["max_entries"])
    (line,) = [x for x in json_lines(mount.read("bpf_map/fields=map.id,map.map_type/all.json"))
               if x["map.id"] == map_id]
    assert line["map.map_type"] == r["map.map_type"]


@functools.lru_cache(maxsize=1)
def vmlinux_dump() -> dict[int, tuple[str, str, list[tuple[str, int, int]]]]:
    """The kernel's BTF as bpftool dumps it: id -> (kind, name, [(member, type id, bit offset)])."""
    dump = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                          check=True, capture_output=True, text=True).stdout
    types, members = {}, None
    for line in dump.splitlines():
        head = re.match(r"\[(\d+)\] (\w+) '([^']*)'", line)
        if head:
            members = []
            types[int(head.group(1))] = (head.group(2), head.group(3), members)
            continue
        member = re.match(r"\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)", line)
        if member and members is not None:
            members.append((member.group(1), int(member.group(2)), int(member.group(3))))
    return types


def vmlinux_members(struct: str) -> dict[str, int]:
    """Member name -> byte offset in a struct of the kernel's BTF, anonymous members seen through."""
    types = vmlinux_dump()
    by_name = {name: type_id for type_id, (kind, name, _) in types.items() if kind == "STRUCT"}
    found = {}

    def walk(type_id: int, base: int) -> None:
        for name, member_type, bits in types[type_id][2]:
            if name == "(anon)":  # an anonymous struct or union: its members are the outer struct's
                walk(member_type, base + bits)
            else:
                found.setdefault(name, (base + bits) // 8)

    walk(by_name[struct], 0)
    return found


def test_readme_and_fields_say_where_each_member_is_in_this_kernel(mount):
    offsets = vmlinux_members("task_struct")
    readme = mount.read("task/fields=pid,comm,mm.total_vm/README")
    assert re.search(rf"pid\s+pid_t\s+4 bytes at task_struct\+{offsets['pid']},", readme)
    assert re.search(rf"comm\s+char\[16\]\s+16 bytes at task_struct\+{offsets['comm']},", readme)
    mm_offsets = vmlinux_members("mm_struct")
    assert f"task_struct+{offsets['mm']} -> mm_struct+{mm_offsets['total_vm']}" in readme
    listing = mount.read("task/FIELDS")
    assert re.search(rf"^  pid\s+pid_t\s+\+{offsets['pid']}$", listing, re.M)
    assert re.search(r"^  se\.sum_exec_runtime\s+u64\s+\+\d+$", listing, re.M)
    assert re.search(r"^  mm\s+struct mm_struct \*\s+\+\d+\s+-> FIELDS\.mm$", listing, re.M)
    assert re.search(rf"^  mm\.total_vm\s+.*\+{mm_offsets['total_vm']}$", mount.read("task/FIELDS.mm"), re.M)
    assert "task/fields=" in mount.read("task/README")  # each target's README points here


def test_a_fields_directory_has_the_targets_files_and_json_siblings(mount, child):
    names = os.listdir(mount / "task/fields=pid,comm")
    assert {"README", "all", "all.json", f"pid={child.pid}", f"pid={child.pid}.json"} <= set(names)
    # a thread alone, as task/tid=N
    tid = child.start_threads(["only"])[0]
    assert [r["pid"] for r in by_name(mount.read(f"task/fields=pid,comm/tid={tid}"))] == [str(tid)]
    # targets whose context holds more than one object take every field by argument
    assert "-> FIELDS.file" in mount.read("task_file/FIELDS")
    # what a file is, for scripts: as the target's own files say it, with the fields and format
    path = mount / f"task/fields=pid,comm/pid={child.pid}.json"
    assert {name: os.getxattr(path, name).decode() for name in os.listxattr(path)} == {
        "user.iterfs.target": "task", "user.iterfs.fields": "pid,comm", "user.iterfs.format": "json",
        "user.iterfs.pid": str(child.pid)}


def test_a_fields_file_seeks_back_and_reads_the_same_header_and_lines(mount, child):
    with open(mount / f"task/fields=pid,comm/pid={child.pid}", "rb") as f:
        first = f.read()
        f.seek(0)
        assert f.read(4) == b"pid\t" and f.tell() == 4
        f.seek(0)
        assert f.read() == first  # a sleeping child's threads and names hold still


@pytest.mark.parametrize("spec, why", [
    ("sum_exec_runtime", "task_struct has no member 'sum_exec_runtime'; did you mean se.sum_exec_runtime?"),
    ("pid.x", "pid is a pid_t, which has no members"),
    ("se", "a whole struct sched_entity is no field"),
    ("pid_links", "a whole array"),
    ("comm[16]", "index 16 is past the 16 elements"),
    (",".join(["pid"] * 2), "named twice"),
    (",".join(f"f{i}" for i in range(33)), "33 fields, at most 32"),
    ("real_parent." * 5 + "pid", "follows more than 4 pointers"),
    ("pid-1", "is not a C member name"),
    ("pid,", "an empty field name"),
    ("mm[99999999999].total_vm", "past any object"),
])
def test_bad_fields_are_enoent_with_a_log_line_that_says_why(mount, spec, why):
    with pytest.raises(FileNotFoundError):
        os.stat(mount / f"task/fields={spec}")
    assert why in mount.log_tail(50)
    assert by_name(mount.read("task/fields=pid/all"))  # the daemon still serves


def test_a_field_path_that_leads_to_no_struct_has_no_listing(mount):
    with pytest.raises(OSError) as raised:
        os.stat(mount / "task/FIELDS.pid")
    assert raised.value.errno == errno.ENOENT
    assert "pid is a pid_t, which has no members" in mount.log_tail(20)


def test_concurrent_readers_of_different_field_lists_get_their_own_columns(mount):
    specs = ["pid,comm", "comm,tgid,pid", "tgid,se.nr_migrations", "pid,cred.uid,comm,real_parent.tgid"]
    failures = []
    comm, me = open("/proc/self/comm").read().rstrip("\n"), str(os.getpid())

    def reader(spec: str) -> None:
        for _ in range(15):
            text = mount.read(f"task/fields={spec}/all")
            names, values = rows(text)
            if names != spec.split(",") or not values or any(len(v) != len(names) for v in values):
                failures.append((spec, text[:200]))
            # this process's own line says what it should, in this list's columns
            key = "pid" if "pid" in names else "tgid"
            mine = [dict(zip(names, v)) for v in values if v[names.index(key)] == str(os.getpid())]
            if len(mine) != 1 if key == "pid" else not mine:
                failures.append((spec, mine))
            elif mine[0].get("comm", comm) != comm or any(m.get("tgid", me) != me for m in mine):
                failures.append((spec, mine))

    threads = [threading.Thread(target=reader, args=(spec,)) for spec in specs for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_constants_match_the_program():
    from iterfs import fields

    source = (Path(__file__).resolve().parent.parent / "bpf" / "fields.bpf.c").read_text()
    defines = dict(re.findall(r"^#define (MAX_\w+) (\d+)", source, re.M))
    assert {name: int(value) for name, value in defines.items()} == {
        "MAX_FIELDS": fields.MAX_FIELDS, "MAX_STEPS": fields.MAX_STEPS, "MAX_BYTES": fields.MAX_BYTES,
        "MAX_SLOTS": fields.MAX_SLOTS, "MAX_PACKED": fields.MAX_PACKED}


@pytest.mark.parametrize("target, kind", [("bpf_map_elem", "array"), ("bpf_map_elem", "hash"),
                                          ("sockmap", "sockmap")])
def test_fields_of_map_elements_as_this_kernel_allows(mount, bpffs, target, kind):
    map_id = make_map(bpffs, kind, 4, 8, 3)
    path = mount / f"{target}/fields=map.id,map.max_entries/map_id={map_id}"
    code = kernel_refusal(target)  # the kernel's answer to the smallest program of the target
    if code:
        with pytest.raises(OSError) as raised:
            path.read_bytes()
        assert raised.value.errno == code
        return
    text = path.read_text()
    if kind == "hash":  # empty: the header alone, so a reader still knows the columns
        assert text == "map.id\tmap.max_entries\n" and bpftool_json("map", "dump", "id", str(map_id)) == []
        return
    found = by_name(text)
    assert all(int(r["map.id"]) == map_id and int(r["map.max_entries"]) == 3 for r in found)
    if kind == "array":
        assert len(found) == len(bpftool_json("map", "dump", "id", str(map_id)))
    else:  # a slot without a socket is an element too: its socket's members cannot be read
        found = by_name(mount.read(f"{target}/fields=map.id,sk.__sk_common.skc_num/map_id={map_id}"))
        assert len(found) == bpftool_json("map", "show", "id", str(map_id))["max_entries"]
        assert {r["sk.__sk_common.skc_num"] for r in found} == {"-"}


def test_each_field_list_is_a_load_named_in_status_kept_while_idle_and_bounded(mount):
    from iterfs.programs import MAX_IDLE_VARIANTS

    specs = [f"{first},comm[{i}]" for first in ("pid", "tgid") for i in range(16)][:MAX_IDLE_VARIANTS + 2]
    for spec in specs:
        assert rows(mount.read(f"task/fields={spec}/all"))[0] == spec.split(",")
    status = json.loads(mount.read(".iterfs/status"))
    loaded = [p["fields"] for p in status["loaded_programs"] if p.get("fields")]
    assert len(loaded) <= MAX_IDLE_VARIANTS and specs[-1] in loaded and specs[0] not in loaded
    assert settled(lambda: iter_links_of(mount.pid), 0) == 0  # every open's link released


def test_iterfs_cat_reads_fields_without_a_mount(child):
    done = run_iterfs("cat", f"task/fields=pid,comm/pid={child.pid}", check=True)
    assert {int(r["pid"]): r["comm"] for r in by_name(done.stdout)} == proc_threads(child.pid)
    done = run_iterfs("cat", f"task/fields=pid,comm/pid={child.pid}.json", check=True)
    assert {line["pid"] for line in json_lines(done.stdout)} == set(proc_threads(child.pid))


@pytest.mark.parametrize("target, spec, params", [
    ("task_file", "fd,file.f_pos,file.f_flags,file.f_path.dentry.d_name.name,task.comm,file.f_op", "pid={self}"),
    ("tcp", "sk_num,sk_dport,sk_rcv_saddr,sk_common.skc_reuse,sk_rcvbuf,sk_prot.name,sk_v6_daddr.in6_u.u6_addr8,"
            "uid,sk_family", "all"),
    ("task", "pid,comm,comm[0],real_parent.tgid,cred.uid,prio,mm", "pid={self}"),
])
def test_the_programs_text_is_what_the_daemon_makes_of_its_records(tmp_path, target, spec, params):
    """Text is printed by the program itself, except for lists with an enum, which the daemon
    prints from the records the .json files are made of: both must say the same."""
    from iterfs import fields, records
    from iterfs.api import Session
    from iterfs.params import parse

    odd = tmp_path / os.fsdecode(b"t\tb\\s \xff\x01")  # a tab, a backslash, no UTF-8, a control byte
    odd.write_bytes(b"")
    fd = os.open(odd, os.O_RDONLY)
    listener = socket.create_server(("127.0.0.1", 0))
    # objects that hold still between the two walks: the first column of their lines
    keys = {"task_file": [fd, listener.fileno()], "tcp": [listener.getsockname()[1]], "task": [os.getpid()]}[target]
    try:
        with Session() as session:
            name = parse(target, params.format(self=os.getpid()))

            def walk(as_json: bool) -> bytes:
                iterator = session.iterators.open(target, name, fields=spec, as_json=as_json)
                try:  # the JSON walk's records, before they are JSON
                    return b"".join(iterator) if not as_json else b"".join(iter(iterator._read, b""))
                finally:
                    session.iterators.release(iterator)

            printed, raw = walk(False), walk(True)
    finally:
        os.close(fd)
        listener.close()
    field_list = fields.resolve(target, spec)
    assert field_list.kernel_prints
    daemon = records.Formatter(field_list, as_json=False)
    made = daemon.feed(raw) + daemon.end()
    assert printed.split(b"\n", 1)[0] == made.split(b"\n", 1)[0] == "\t".join(spec.split(",")).encode()

    def lines_of(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if line.split(b"\t", 1)[0] in {str(k).encode() for k in keys}]

    assert len(lines_of(printed)) == len(keys) and lines_of(printed) == lines_of(made)
    if target == "task_file":
        assert rb"t\tb\\s " + b"\xff" + rb"\x01" in printed


def test_a_target_whose_context_holds_two_objects_takes_names_by_argument(mount):
    with pytest.raises(FileNotFoundError):
        os.stat(mount / "task_file/fields=pid")
    assert "task_file's context has no argument 'pid'" in mount.log_tail(20)


def system_python() -> str:
    """A python3 that another user may run (the test's own may live under /root)."""
    found = shutil.which("python3", path="/usr/bin:/bin")
    if found is None:
        missing("python3 in /usr/bin")
    return found


def test_values_of_another_user_are_that_users(mount, tmp_path):
    """uid 0 reads as zeros: a process of nobody's, with a socket, says whose they are."""
    nobody = 65534
    server = subprocess.Popen(
        [system_python(), "-c", "import socket, sys; s = socket.create_server(('127.0.0.1', 0)); "
                               "print(s.getsockname()[1], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
        preexec_fn=lambda: (os.setgid(nobody), os.setuid(nobody)))
    try:
        port = int(server.stdout.readline())
        (task,) = by_name(mount.read(f"task/fields=pid,cred.uid,cred.euid,cred.fsgid/pid={server.pid}"))
        status = proc_status(server.pid)
        assert [int(task[k]) for k in ("cred.uid", "cred.euid")] == [int(x) for x in status["Uid"].split()[:2]]
        assert int(task["cred.fsgid"]) == int(status["Gid"].split()[3]) == nobody
        (sock,) = [r for r in by_name(mount.read("tcp/fields=sk_num,uid/all")) if int(r["sk_num"]) == port]
        proc = [f for f in (line.split() for line in open("/proc/net/tcp").read().splitlines()[1:])
                if int(f[1].split(":")[1], 16) == port]
        assert int(sock["uid"]) == int(proc[0][7]) == nobody
    finally:
        server.kill()
        server.wait()


def test_the_recipe_iterfs_packs_is_the_programs_struct(tmp_path):
    """bpf/fields.bpf.c's struct recipe, as its object's BTF (bpftool) lays it out."""
    from iterfs import fields
    from iterfs.catalog import BUNDLED_DIR, FIELDS_OBJECT

    dump = bpftool_json("btf", "dump", "file", str(BUNDLED_DIR / FIELDS_OBJECT))["types"]
    (recipe,) = [t for t in dump if t["kind"] == "STRUCT" and t["name"] == "recipe"]
    at, expected = 0, []
    for name, count in fields.RECIPE_LAYOUT:
        expected.append((name, at * 32))
        at += count
    assert [(m["name"], m["bits_offset"]) for m in recipe["members"]] == expected
    assert recipe["size"] == at * 4
