"""Each reader sees its own namespaces, as /proc does: readers in network, pid and cgroup
namespaces the test makes, against that namespace's own /proc read from inside it."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import (
    ITERFS,
    iter_links_of,
    maps_part,
    proc_status,
    settled,
    start_mount,
    task_file_lines,
    task_lines,
    without_gate_vma,
)
from iterfs import probes
from test_kernel_views import cgroup_rows
from test_net_ksym import _after_sl, by_inode

pytestmark = pytest.mark.fuse

TIMEOUT = 60  # for any one command run inside a namespace


def need(tool: str, package: str) -> str:
    """The tool's path; never a skip: these tests are the feature's only proof."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is needed to make namespaces (Debian package {package})")
    return path


def run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, errors="surrogateescape", timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, f"{args[:6]}... exited {done.returncode}: {done.stderr.strip()}"
    return done


# Run inside a namespace by the test's interpreter: reads files of the mount, in `threads`
# threads at once `rounds` times each, then the namespace's own views. The reader's threads
# are alive for both, so that a pid namespace's task list is the same for the two.
LOOK = r"""
import json, os, sys, threading
ask = json.loads(sys.argv[1])

def read(name):
    path = name if name.startswith("/") else os.path.join(ask["mnt"], name)
    try:
        if name.endswith("/"):
            return sorted(os.listdir(path))
        with open(path, "rb") as f:
            return f.read().decode(errors="surrogateescape")
    except OSError as e:
        return e.errno

reads = {name: [] for name in ask["names"]}
start, done, release = threading.Barrier(ask["threads"]), threading.Barrier(ask["threads"] + 1), threading.Event()

def reader():
    start.wait()
    for _ in range(ask["rounds"]):
        for name in ask["names"]:
            reads[name].append(read(name))
    done.wait()
    release.wait()

threads = [threading.Thread(target=reader) for _ in range(ask["threads"])]
for thread in threads:
    thread.start()
done.wait()
after = {name: read(name) for name in ask["after"]}
links = {d: {e: os.readlink(os.path.join(d, e)) for e in os.listdir(d)} for d in ask["links"]}
tree = []
for top in ask["tree"]:
    for path, dirs, _ in os.walk(top):
        dirs.sort(key=lambda d: os.stat(os.path.join(path, d)).st_ino)  # creation order
        rel = os.path.relpath(path, top)
        tree.append([os.stat(path).st_ino, "/" if rel == "." else "/" + rel])
tasks = []
for pid in (p for p in os.listdir("/proc") if ask["tasks"] and p.isdigit()):
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f)
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().rstrip("\n")
            tasks.append([int(status["Tgid"]), int(status["Pid"]), int(status["PPid"]), comm])
    except FileNotFoundError:
        pass
release.set()
for thread in threads:
    thread.join()
print(json.dumps(dict(self=os.getpid(), reads=reads, after=after, links=links, tree=tree, tasks=tasks)))
"""


class Seen:
    """What one LOOK run read: reads[name] (texts, or errnos), after[name], links, tree, tasks."""

    def __init__(self, out: str):
        data = json.loads(out)
        self.self_pid = data["self"]
        self.reads, self.after, self.links, self.tree = data["reads"], data["after"], data["links"], data["tree"]
        self.tasks = sorted(tuple(t) for t in data["tasks"])

    def one(self, name: str):
        return self.reads[name][0]

    def text(self, name: str):
        """The first read of name (a text, or a listing), which must have succeeded."""
        got = self.one(name)
        assert not isinstance(got, int), f"{name} read inside the namespace: {errno.errorcode.get(got, got)}"
        return got


def look(prefix: list[str], mount, names: list[str], after: list[str] = (), threads: int = 1, rounds: int = 1,
         tasks: bool = False, links: list[str] = (), tree: list[str] = ()) -> Seen:
    ask = dict(mnt=str(mount.path), names=names, after=list(after), threads=threads, rounds=rounds, tasks=tasks,
               links=list(links), tree=list(tree))
    return Seen(run([*prefix, sys.executable, "-I", "-c", LOOK, json.dumps(ask)]).stdout)


def task_set(text: str) -> list[tuple]:
    return sorted((r["tgid"], r["pid"], r["ppid"], r["comm"]) for r in task_lines(text))


# Network namespaces

# Sockets of every kind the net targets walk, made inside the namespace; the holder prints
# their inodes and keeps them until its stdin closes.
HOLDER = r"""
import json, os, socket, sys
made = {}
for family, host, v in ((socket.AF_INET, "127.0.0.1", "4"), (socket.AF_INET6, "::1", "6")):
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    client.sendall(b"unread")
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    made.update({"tcp listen" + v: listener, "tcp client" + v: client, "tcp server" + v: server,
                 "udp" + v: receiver})
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(sys.argv[1])
unix.listen()
abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
abstract.bind(b"\0" + sys.argv[2].encode())
netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
netlink.bind((0, 1))
made.update({"unix bound": unix, "unix abstract": abstract, "netlink": netlink})
print(json.dumps({name: os.fstat(s.fileno()).st_ino for name, s in made.items()}), flush=True)
sys.stdin.read()
"""

# target: its /proc/net views, and the column of its lines' inode (None: lines compared as a set)
NET = {"tcp": (["tcp", "tcp6"], 9), "udp": (["udp", "udp6"], 9), "unix": (["unix"], 6),
       "netlink": (["netlink"], 9), "ipv6_route": (["ipv6_route"], None)}


def comparable(target: str, text: str):
    """A net target's lines as the host tests compare them: by inode (tcp and udp after sl,
    a running number), ipv6_route as a set of lines."""
    column = NET[target][1]
    if column is None:
        return sorted(text.splitlines())
    rows = by_inode(text, column)
    return {inode: _after_sl(line) for inode, line in rows.items()} if target in ("tcp", "udp") else rows


def comparable_while_walked(target: str, text: str):
    """comparable(), less the refcount of tcp and udp lines: a walk in progress holds a
    reference on each socket of its batch, so a concurrent reader sees it one higher."""
    rows = comparable(target, text)
    if target not in ("tcp", "udp"):
        return rows
    return {inode: " ".join(line.split()[:9] + line.split()[10:]) for inode, line in rows.items()}


def proc_net(target: str) -> list[str]:
    return [f"/proc/net/{view}" for view in NET[target][0]]


def proc_net_text(seen: Seen, target: str) -> str:
    return "".join(seen.after[view] for view in proc_net(target))


class NetNs:
    def __init__(self, tmp_path: Path):
        need("ip", "iproute2")
        self.name = f"iterfs-test-{uuid.uuid4().hex[:8]}"
        self.prefix = ["ip", "netns", "exec", self.name]
        self.route = f"2001:db8:{uuid.uuid4().int % 0xffff:x}::/64"
        self.holder = None
        run(["ip", "netns", "add", self.name])
        try:
            run([*self.prefix, "ip", "link", "set", "lo", "up"])
            run([*self.prefix, "ip", "-6", "route", "add", self.route, "dev", "lo", "metric", "1234"])
            self.holder = subprocess.Popen(
                [*self.prefix, sys.executable, "-I", "-c", HOLDER, str(tmp_path / "ns unix socket"),
                 f"iterfs-ns-{uuid.uuid4().hex}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.inodes = json.loads(read_line(self.holder, "the socket holder in the netns"))
        except BaseException:
            self.close()
            raise

    def made(self, target: str) -> set[int]:
        """The holder's sockets of target."""
        return {inode for name, inode in self.inodes.items() if name.startswith(target)}

    def look(self, mount, names, **kw) -> Seen:
        return look(self.prefix, mount, names, **kw)

    def close(self) -> None:
        if self.holder is not None:
            self.holder.stdin.close()
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait()
        run(["ip", "netns", "delete", self.name], check=False)


def read_line(proc: subprocess.Popen, what: str, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"{what} said nothing in {timeout} s"
    line = proc.stdout.readline()
    assert line, f"{what} exited ({proc.poll()}) before it was ready"
    return line


@pytest.fixture
def host_sockets(tmp_path):
    """A listening TCP socket and a bound unix socket of the host's, made by the test."""
    listener = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "host unix socket"))
    unix.listen()
    yield {"tcp": os.fstat(listener.fileno()).st_ino, "unix": os.fstat(unix.fileno()).st_ino}
    listener.close()
    unix.close()


@pytest.mark.parametrize("target", list(NET))
def test_net_target_read_in_a_netns_is_that_namespaces_proc_net(mount, netns, target):
    for _ in range(5):  # a timer may tick between the two reads
        seen = netns.look(mount, [f"{target}/all"], after=proc_net(target))
        ours, truth = seen.text(f"{target}/all"), proc_net_text(seen, target)
        if comparable(target, ours) == comparable(target, truth):
            break
    assert comparable(target, ours) == comparable(target, truth)
    if target != "ipv6_route":  # it has no header
        assert ours.splitlines()[0] == truth.splitlines()[0]
        assert netns.made(target) <= set(by_inode(ours, NET[target][1]))
    else:  # the namespace's own route, by its destination and metric 0x4d2
        assert any(line.startswith("20010db8") and " 000004d2 " in line for line in ours.splitlines())


def test_a_netns_reader_and_a_host_reader_at_once_each_see_only_their_own_sockets(mount, netns, host_sockets):
    ns_sockets = set(netns.inodes.values())
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            inside = pool.submit(netns.look, mount, ["tcp/all", "unix/all", "ipv6_route/all"])
            host = {name: mount.read(f"{name}/all") for name in ("tcp", "unix", "ipv6_route")}
            seen = inside.result()
            for name, column in (("tcp", 9), ("unix", 6)):
                ns_rows, host_rows = set(by_inode(seen.text(f"{name}/all"), column)), set(by_inode(host[name], column))
                assert host_sockets[name] not in ns_rows
                assert netns.made(name) <= ns_rows
                assert host_sockets[name] in host_rows
                assert not ns_sockets & host_rows
            ns_route = [line for line in seen.text("ipv6_route/all").splitlines() if " 000004d2 " in line]
            assert ns_route and not set(ns_route) & set(host["ipv6_route"].splitlines())


# Pid namespaces

# The namespace's init (sh) and its children: two sleeps named nsmember, a process of three threads.
INIT = '"$1" 1000 >/dev/null & "$1" 1000 >/dev/null & "$2" -I -c "$3" & wait'
THREADED = ("import threading, time\n"
            "for _ in range(2):\n"
            "    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(1000)\n")


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def comm_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except FileNotFoundError:
        return None


def ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


class PidNs:
    """`unshare -p -f --mount-proc` running INIT; inside() runs a command in its pid and mount namespaces."""

    def __init__(self, tmp_path: Path):
        unshare = need("unshare", "util-linux")
        need("nsenter", "util-linux")
        member = tmp_path / "nsmember"
        if not member.exists():
            member.symlink_to(shutil.which("sleep"))
        self.proc = subprocess.Popen([unshare, "-p", "-f", "--mount-proc", "--kill-child", "sh", "-c", INIT, "sh",
                                      str(member), sys.executable, THREADED],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        try:
            assert read_line(self.proc, "the pid namespace's threaded process").strip() == "ready"
            deadline = time.monotonic() + 10
            # init's children have their own names once they have exec'd
            while not (len(children_of(self.init)) == 3 and
                       all(comm_of(c) not in (None, "sh") for c in children_of(self.init))):
                assert time.monotonic() < deadline, f"the pid namespace did not settle: {children_of(self.init)}"
                time.sleep(0.02)
            self.inode = ns_inode(self.init, "pid")
            self.prefix = ["nsenter", "-t", str(self.init), "-p", "-m", "--"]
        except BaseException:
            self.kill()
            raise

    @property
    def init(self) -> int:
        """The namespace's init, by its host pid."""
        kids = children_of(self.proc.pid)
        assert kids, "unshare has no child"
        return kids[0]

    def host_pids(self) -> list[int]:
        """The namespace's processes, by their host pids."""
        return sorted(p for p in (int(e) for e in os.listdir("/proc") if e.isdigit())
                      if ns_inode(p, "pid") == self.inode)

    def look(self, mount, names, **kw) -> Seen:
        return look(self.prefix, mount, names, **kw)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for kid in children_of(self.proc.pid):
                os.kill(kid, signal.SIGKILL)  # the namespace's init: the kernel kills the rest
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


def test_task_all_read_in_a_pidns_is_that_namespaces_proc(mount, pidns):
    seen = pidns.look(mount, ["task/all"], tasks=True)
    assert task_set(seen.text("task/all")) == seen.tasks
    # not vacuous: the namespace's init, its sleeps, its threads and the reader, by their pids there
    assert (1, 1, 0, "sh") in seen.tasks
    assert sum(1 for t in seen.tasks if t[3] == "nsmember" and t[2] == 1) == 2
    assert any(tgid != pid and tgid != seen.self_pid for tgid, pid, _, _ in seen.tasks)
    assert any(t[:3] == (seen.self_pid, seen.self_pid, 0) for t in seen.tasks)  # its parent, nsenter, is outside


def test_pid_n_in_a_pidns_names_the_namespaces_process_n(mount, pidns):
    seen = pidns.look(mount, ["task/all"], tasks=True)
    threaded = next(tgid for tgid, pid, _, _ in seen.tasks if tgid != pid and tgid != seen.self_pid)
    try:
        on_host = task_set(mount.read(f"task/pid={threaded}"))  # the host's lookup first: nothing of it may stick
    except FileNotFoundError:
        on_host = []
    seen = pidns.look(mount, [f"task/pid={threaded}"], tasks=True)  # after the host's lookup of the same name
    rows = task_set(seen.text(f"task/pid={threaded}"))
    assert rows == [t for t in seen.tasks if t[0] == threaded] and len(rows) == 3
    assert rows != on_host


def test_ls_task_in_a_pidns_lists_the_namespaces_pids(mount, pidns):
    host_before = os.listdir(mount / "task")  # a listing the kernel could keep for the next reader
    seen = pidns.look(mount, ["task/"], after=["/proc/"])
    listed = seen.text("task/")
    assert {e for e in listed if e.startswith("pid=")} == {f"pid={p}" for p in seen.after["/proc/"] if p.isdigit()}
    assert {e for e in listed if not e.startswith("pid=")} == {e for e in host_before if not e.startswith("pid=")}
    host_after = os.listdir(mount / "task")
    assert f"pid={os.getpid()}" in host_before and f"pid={os.getpid()}" in host_after
    assert f"pid={pidns.init}" in host_after


def test_task_file_pid_1_in_a_pidns_is_its_init(mount, pidns):
    seen = pidns.look(mount, ["task_file/pid=1"], links=["/proc/1/fd"])
    rows = task_file_lines(seen.text("task_file/pid=1"))
    assert {str(r["fd"]): r["path"] for r in rows} == seen.links["/proc/1/fd"]
    assert {(r["tgid"], r["pid"]) for r in rows} == {(1, 1)}


def test_task_vma_pid_column_is_the_namespaces_pid(mount, pidns):
    seen = pidns.look(mount, ["task/all"], tasks=True)
    member = next(tgid for tgid, _, _, comm in seen.tasks if comm == "nsmember")
    seen = pidns.look(mount, [f"task_vma/pid={member}"], after=[f"/proc/{member}/maps"])
    ours = seen.text(f"task_vma/pid={member}")
    assert ours and all(line.startswith(f"{member} ") for line in ours.splitlines())
    assert maps_part(ours) == without_gate_vma(seen.after[f"/proc/{member}/maps"])


def test_a_pid_only_the_host_has_is_enoent_in_a_pidns(mount, pidns):
    host_only = os.getpid()
    assert task_lines(mount.read(f"task/pid={host_only}"))  # the host's lookup first: nothing of it may stick
    names = [f"{target}/pid={host_only}" for target in ("task", "task_file", "task_vma")]
    seen = pidns.look(mount, names, after=["/proc/"])
    assert str(host_only) not in seen.after["/proc/"]
    assert {name: seen.one(name) for name in names} == {name: errno.ENOENT for name in names}
    done = run([*pidns.prefix, "cat", str(mount / f"task/pid={host_only}")], check=False)
    assert done.returncode != 0 and "No such file or directory" in done.stderr


def host_view_of(pids: list[int]) -> set[tuple]:
    """(tgid, pid, ppid, comm) of the main threads of host pids, as the host's /proc says."""
    rows = set()
    for pid in pids:
        status = proc_status(pid)
        rows.add((int(status["Tgid"]), int(status["Pid"]), int(status["PPid"]), comm_of(pid)))
    return rows


def test_the_host_reader_sees_host_pids_while_a_pidns_reads(mount, pidns):
    in_ns = pidns.host_pids()
    expected = host_view_of(in_ns) | host_view_of([os.getpid()])
    with ThreadPoolExecutor(1) as pool:
        for _ in range(3):
            inside = pool.submit(pidns.look, mount, ["task/all"], tasks=True)
            host = set(task_set(mount.read("task/all")))
            assert expected <= host
            seen = inside.result()
            assert task_set(seen.text("task/all")) == seen.tasks
    assert (pidns.init, pidns.init, pidns.proc.pid, "sh") in expected


# Cgroup namespaces


@pytest.fixture
def cgroups():
    """root/top, top/child and root/outside under the cgroup2 mount."""
    root = Path(probes.cgroup2_root())
    tag = uuid.uuid4().hex[:8]
    made = {"top": root / f"iterfs-ns-{tag}", "outside": root / f"iterfs-ns-{tag}-outside"}
    made["child"] = made["top"] / "child"
    for name in ("top", "child", "outside"):
        made[name].mkdir()
    yield {"root": root, **made}
    for name in ("child", "top", "outside"):
        deadline = time.monotonic() + 10
        while True:
            try:
                made[name].rmdir()
                break
            except OSError as e:  # the reader that was in it may still be exiting
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def in_cgroupns(cgroups, view: Path, then: str = "top") -> list[str]:
    """A prefix that moves the command into cgroup top, unshares a cgroup namespace rooted there,
    moves it on into cgroup then, and mounts cgroup2 on view, as the namespace shows it."""
    unshare = need("unshare", "util-linux")
    view.mkdir(exist_ok=True)
    return ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh", str(cgroups["top"]),
            unshare, "-C", "-m", "sh", "-c",
            'echo $$ > "$2/cgroup.procs" && mount -t cgroup2 cgroup2 "$1" && shift 2 && exec "$@"', "sh", str(view),
            str(cgroups[then])]


def test_cgroup_all_in_a_cgroupns_is_the_tree_that_namespace_shows(mount, cgroups, tmp_path):
    view = tmp_path / "cgroup view"
    seen = look(in_cgroupns(cgroups, view), mount, ["cgroup/all", "cgroup/"], after=["/proc/self/cgroup"],
                tree=[str(view)])
    assert "0::/\n" in seen.after["/proc/self/cgroup"]  # the kernel's: the reader is at its namespace's root
    assert seen.tree == [[os.stat(cgroups["top"]).st_ino, "/"], [os.stat(cgroups["child"]).st_ino, "/child"]]
    level = len(cgroups["top"].relative_to(cgroups["root"]).parts)  # counted from the real root
    assert cgroup_rows(seen.text("cgroup/all")) == [(ino, level + (0 if path == "/" else path.count("/")), path)
                                                   for ino, path in seen.tree]
    assert {e for e in seen.text("cgroup/") if e.startswith("id=")} == {f"id={ino}" for ino, _ in seen.tree}


def test_a_cgroupns_reader_below_its_root_sees_the_tree_from_the_root(mount, cgroups, tmp_path):
    """The namespace's root is where it was made, not the reader's cgroup: a reader moved on
    into a child still walks from the root."""
    view = tmp_path / "cgroup view"
    seen = look(in_cgroupns(cgroups, view, then="child"), mount, ["cgroup/all"], after=["/proc/self/cgroup"],
                tree=[str(view)])
    assert "0::/child\n" in seen.after["/proc/self/cgroup"]  # the kernel's: one below its namespace's root
    assert [path for _, _, path in cgroup_rows(seen.text("cgroup/all"))] == ["/", "/child"]
    assert [ino for ino, _, _ in cgroup_rows(seen.text("cgroup/all"))] == [ino for ino, _ in seen.tree]


def test_a_cgroup_outside_the_cgroupns_is_enoent_inside(mount, cgroups, tmp_path):
    # self_only: the host's walk from its root may be larger than one kernel read
    outside = {f"cgroup/id={os.stat(cgroups[name]).st_ino},order=self_only" for name in ("outside", "root")}
    child = os.stat(cgroups["child"]).st_ino
    for name in outside:
        assert cgroup_rows(mount.read(name))  # the host's lookup first: nothing of it may stick
    seen = look(in_cgroupns(cgroups, tmp_path / "cgroup view"), mount, [*sorted(outside), f"cgroup/id={child}"])
    assert {name: seen.one(name) for name in outside} == {name: errno.ENOENT for name in outside}
    level = len(cgroups["child"].relative_to(cgroups["root"]).parts)
    assert cgroup_rows(seen.text(f"cgroup/id={child}")) == [(child, level, "/child")]


# Many readers, helpers, leaks


def test_readers_in_three_namespaces_at_once_each_get_their_own_view(mount, netns, pidns, host_sockets):
    net_names = ["tcp/all", "udp/all", "unix/all"]
    net_after = [view for name in net_names for view in proc_net(name.split("/")[0])]
    expected_host = host_view_of(pidns.host_pids()) | host_view_of([os.getpid()])

    def host_reader():
        tcp, tasks = mount.read("tcp/all"), set(task_set(mount.read("task/all")))
        return set(by_inode(tcp, 9)), tasks

    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            net = pool.submit(netns.look, mount, net_names, after=net_after, threads=4, rounds=3)
            pid = pool.submit(pidns.look, mount, ["task/all", "task_file/pid=1"], threads=4, rounds=3, tasks=True,
                              links=["/proc/1/fd"])
            host = [pool.submit(host_reader) for _ in range(4)]
            for inodes, tasks in (f.result() for f in host):
                assert host_sockets["tcp"] in inodes and not set(netns.inodes.values()) & inodes
                assert expected_host <= tasks
            seen = net.result()
            for name in net_names:
                target = name.split("/")[0]
                truth = comparable_while_walked(target, proc_net_text(seen, target))
                assert len(seen.reads[name]) == 12 and netns.made(target) <= set(truth)
                bad = [text for text in seen.reads[name] if comparable_while_walked(target, text) != truth]
                assert not bad or comparable_while_walked(target, bad[0]) == truth, f"{len(bad)} of 12 reads of {name}"
            seen = pid.result()
            assert len(seen.reads["task/all"]) == 12
            bad = [text for text in seen.reads["task/all"] if task_set(text) != seen.tasks]
            assert not bad or task_set(bad[0]) == seen.tasks, f"{len(bad)} of 12 reads of task/all"
            fds = [{str(r["fd"]): r["path"] for r in task_file_lines(text)} for text in seen.reads["task_file/pid=1"]]
            assert fds == [seen.links["/proc/1/fd"]] * 12


def daemon_children(mount) -> set[int]:
    """The daemon's child processes, zombies too."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(proc_status(int(entry))["PPid"]) == mount.pid:
                    children.add(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return children


def helpers_for(mount, ns: PidNs) -> list[int]:
    """The daemon's descendants in the pid namespace, or making their children there."""
    found, pending = [], list(daemon_children(mount))
    while pending:
        pid = pending.pop()
        pending += children_of(pid)
        if ns.inode in (ns_inode(pid, "pid"), ns_inode(pid, "pid_for_children")):
            found.append(pid)
    return found


def status(mount) -> dict:
    return json.loads(mount.read(".iterfs/status"))


def test_a_pidns_helper_ends_within_seconds_once_the_namespace_has_no_process(mount, tmp_path):
    children_before = daemon_children(mount)
    ns = PidNs(tmp_path)
    try:
        ns.look(mount, ["task/all"])
        assert helpers_for(mount, ns), "no process of the daemon's serves the pid namespace"
        assert f"pid namespace helper started: pid:[{ns.inode}]" in mount.log.read_text()
        assert ns.inode in [h["pid_namespace"] for h in status(mount)["pid_namespace_helpers"]]
    finally:
        ns.kill()
    assert settled(lambda: helpers_for(mount, ns), [], timeout=10) == []
    assert settled(lambda: daemon_children(mount) - children_before, set(), timeout=10) == set()  # reaped
    ended = f"pid namespace helper ended: pid:[{ns.inode}]"
    assert settled(lambda: ended in mount.log.read_text(), True, timeout=5)
    assert ns.inode not in [h["pid_namespace"] for h in status(mount)["pid_namespace_helpers"]]


def test_a_helper_that_stops_answering_is_replaced_not_waited_for(mount, pidns):
    """A process of the namespace may stop its helper (it is one of theirs): that namespace's
    opens fail with ETIMEDOUT instead of hanging, and the next has a new helper."""
    pidns.look(mount, ["task/all"])
    server = [pid for pid in helpers_for(mount, pidns) if ns_inode(pid, "pid") == pidns.inode]
    assert len(server) == 1
    os.kill(server[0], signal.SIGSTOP)
    seen = pidns.look(mount, ["task/all"])
    assert seen.one("task/all") == errno.ETIMEDOUT
    assert "did not answer" in mount.log.read_text()
    again = pidns.look(mount, ["task/all"], tasks=True)
    assert task_set(again.text("task/all")) == again.tasks
    assert settled(lambda: server[0] in helpers_for(mount, pidns), False) is False


def test_a_daemon_that_cannot_read_readers_namespaces_refuses_what_it_cannot_tell(tmp_path, fuse_host, pidns):
    """Without CAP_SYS_PTRACE /proc/TID/ns is closed to the daemon: a reader /proc shows to be in
    its pid and network namespaces is served, one it cannot tell gets EACCES, never the host's view."""
    mnt = start_mount(tmp_path, command=["setpriv", "--bounding-set=-sys_ptrace", str(ITERFS)])
    try:
        assert {r["pid"] for r in task_lines(mnt.read("task/all"))} >= {os.getpid()}
        assert mnt.read("tcp/all").split()[:3] == ["sl", "local_address", "rem_address"]
        # the mount came after the namespace: in its pids, with the host's mounts
        seen = look(["nsenter", "-t", str(pidns.init), "-p", "--"], mnt, ["task/all", "tcp/all"])
        assert seen.one("task/all") == errno.EACCES
        assert seen.one("tcp/all") != errno.EACCES  # its network namespace is the host's, as /proc shows
        with pytest.raises(PermissionError):  # a cgroup namespace shows nowhere but /proc/TID/ns
            mnt.read("cgroup/all")
        assert mnt.read("ksym/all")  # a target no namespace decides
        log = mnt.log.read_text()
        assert log.count("cannot read a reader's pid namespace") == 1
        assert log.count("cannot read a reader's cgroup namespace") == 1
    finally:
        mnt.stop()


def test_status_counts_opens_per_namespace_kind(mount, netns, pidns):
    before = status(mount)["opens_in_other_namespaces"]
    netns.look(mount, ["tcp/all", "unix/all", "task/all"])  # task/all: the netns reader's pid namespace is the host's
    pidns.look(mount, ["task/all", "task_file/pid=1", "tcp/all"])
    mount.read("task/all")
    after = status(mount)["opens_in_other_namespaces"]
    assert {kind: after[kind] - before.get(kind, 0) for kind in after} == {"net": 2, "pid": 2, "cgroup": 0}
    said = run([str(ITERFS), "status", str(mount.path)]).stdout  # the same counts, for a person
    counted = json.loads(mount.read(".iterfs/status"))["opens_in_other_namespaces"]
    assert "opens in other namespaces: " + ", ".join(f"{k} {n}" for k, n in counted.items()) in said


def test_thousands_of_opens_across_namespaces_leak_no_fd_link_or_helper(mount, tmp_path):
    net_names = ["tcp/all", "udp/all", "unix/all", "netlink/all", "ipv6_route/all"]
    pid_names = ["task/all", "task_file/pid=1", "task_vma/pid=1", "task/pid=2"]
    for name in {*net_names, *pid_names} - {"task/pid=2"}:
        mount.read(name)  # programs loaded, as they stay
    links = settled(daemon_links := lambda: iter_links_of(mount.pid), 0)  # once the last release has come
    fds, children = mount.fd_count(), daemon_children(mount)
    netns, pidns = NetNs(tmp_path), PidNs(tmp_path)
    try:
        netns.look(mount, net_names)
        pidns.look(mount, pid_names)
        assert settled(daemon_links, links) == links
        serving = {"fds": mount.fd_count(), "helpers": sorted(helpers_for(mount, pidns))}
        helper_fds = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in serving["helpers"]}
        with ThreadPoolExecutor(2) as pool:
            net = pool.submit(netns.look, mount, net_names, threads=4, rounds=60)  # 1200 opens
            pid = pool.submit(pidns.look, mount, pid_names, threads=4, rounds=75)  # 1200 opens
            for seen in (net.result(), pid.result()):
                assert all(isinstance(text, str) for texts in seen.reads.values() for text in texts)
        assert settled(mount.fd_count, serving["fds"]) == serving["fds"]
        assert settled(daemon_links, links) == links
        assert sorted(helpers_for(mount, pidns)) == serving["helpers"]
        assert {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in serving["helpers"]} == helper_fds
    finally:
        netns.close()
        pidns.kill()
    assert settled(mount.fd_count, fds) == fds
    assert settled(lambda: daemon_children(mount) - children, set()) == set()


def test_umount_while_a_pidns_helper_serves_stops_the_daemon_and_its_helper(tmp_path, fuse_host):
    ns = PidNs(tmp_path)  # made before the mount: its mount namespace holds no copy of it
    try:
        (tmp_path / "own").mkdir()
        mnt = start_mount(tmp_path / "own")
        try:
            # in the namespace's pids, the host's mounts: the reader sees this mount
            done = run(["nsenter", "-t", str(ns.init), "-p", "--", "cat", str(mnt / "task/all")])
            assert {1} <= {r["pid"] for r in task_lines(done.stdout)}
            helpers = helpers_for(mnt, ns)
            assert helpers
            done = run([str(ITERFS), "umount", str(mnt.path)], check=False)
            assert done.returncode == 0, done.stderr
            assert mnt.wait_exit(15), "the daemon did not exit after umount with a pid namespace helper alive"
            assert settled(lambda: [p for p in helpers if os.path.exists(f"/proc/{p}")], [], timeout=5) == []
        finally:
            mnt.stop()
    finally:
        ns.kill()
