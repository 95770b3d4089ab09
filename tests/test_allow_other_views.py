"""A mount shared with --allow-other: each user reads what the kernel itself would show that user."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import run_iterfs
from helpers import (
    iter_link_ids_of,
    maps_part,
    proc_fds,
    proc_state,
    settled,
    start_mount,
    task_file_lines,
    without_gate_vma,
    world_traversable_dir,
)
from test_net_ksym import _after_sl, by_inode, inode_of

pytestmark = pytest.mark.fuse

# run as a user: every /proc/PID/fd/* its readlink can read, and the pids whose fds it may not read
WALK = r"""
import json, os
me, readable, denied = os.getpid(), {}, []
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == me:
        continue
    try:
        fds = {}
        for fd in os.listdir(f"/proc/{name}/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/{name}/fd/{fd}")
            except FileNotFoundError:
                pass
        readable[name] = fds
    except PermissionError:
        denied.append(int(name))
    except FileNotFoundError:
        pass
print(json.dumps({"readable": readable, "denied": denied}))
"""

# run as a user: per path on stdin, "errno length sha256" and then the bytes read
SERVE = r"""
import hashlib, sys
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    try:
        with open(line.rstrip(b"\n"), "rb") as f:
            data, code = f.read(), 0
    except OSError as e:
        data, code = b"", e.errno
    out.write(b"%d %d %s\n" % (code, len(data), hashlib.sha256(data).hexdigest().encode()) + data)
    out.flush()
"""


def text(data: bytes) -> str:
    return data.decode(errors="surrogateescape")


def read_as(user, path) -> str:
    """What user reads at path; the read must succeed."""
    code, data = user.read(path)
    assert code == 0, f"{user.name} cannot read {path}: {os.strerror(code)}"
    return text(data)


def shows_addresses(kallsyms: str) -> bool:
    """Whether a /proc/kallsyms as read shows addresses (kallsyms_show_value()) or zeroes every one."""
    return any(int(line.split(None, 1)[0], 16) for line in kallsyms.splitlines())


def wait_sleeping(pid: int) -> None:
    """Until process pid has become sleep (setpriv has exec'd it) and sleeps in it."""
    def now():
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip(), proc_state(pid)
        except FileNotFoundError:
            return None
    assert settled(now, ("sleep", "S")) == ("sleep", "S")


@pytest.fixture(scope="module")
def sleepers(users):
    """A long-lived sleep of each user's and one of root's: u, v, root (Popen objects)."""
    u, v = users
    procs = {}
    try:
        procs["u"] = u.spawn("sleep", "1000")
        procs["v"] = v.spawn("sleep", "1000")
        procs["root"] = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        for proc in procs.values():
            wait_sleeping(proc.pid)
        yield SimpleNamespace(**procs)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def addresses(users):
    """Whether /proc/kallsyms shows addresses to root and to the first user: the kernel's
    kallsyms_show_value() for each."""
    return SimpleNamespace(root=shows_addresses(Path("/proc/kallsyms").read_text()),
                           user=shows_addresses(read_as(users[0], "/proc/kallsyms")))


def walk_as(user) -> tuple[dict[int, dict[int, str]], set[int]]:
    """({pid: {fd: path}} that user's readlink of /proc/*/fd/* reads, {pids it may not})."""
    done = user.run("python3", "-I", "-S", "-c", WALK)
    assert done.returncode == 0, done.stderr.decode()
    found = json.loads(done.stdout)
    readable = {int(pid): {int(fd): path for fd, path in fds.items()} for pid, fds in found["readable"].items()}
    return readable, set(found["denied"])


def fds_of(rows: list[dict], pid: int) -> dict[int, str]:
    return {r["fd"]: r["path"] for r in rows if r["tgid"] == pid}


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_task_file_all_as_a_user_lists_exactly_the_fds_of_its_own_processes(shared, users, sleepers, addresses):
    u, _ = users
    rows = task_file_lines(read_as(u, shared / "task_file/all"))
    readable, denied = walk_as(u)  # after the read: the reader above has exited meanwhile
    assert fds_of(rows, sleepers.u.pid) == readable[sleepers.u.pid] == proc_fds(sleepers.u.pid)
    assert len([r for r in rows if r["tgid"] == sleepers.u.pid]) == len(readable[sleepers.u.pid])
    for other in (sleepers.v.pid, sleepers.root.pid):
        assert other in denied, "the kernel lets the user read another user's or root's fds"
        assert other not in {r["tgid"] for r in rows}
    strangers = {r["tgid"] for r in rows} - set(readable)
    assert not {pid for pid in strangers if alive(pid)}, "processes whose fds the user may not readlink"
    assert set(readable) <= {r["tgid"] for r in rows}, "processes the user may read that iterfs leaves out"
    # f_op: an address, shown as kallsyms_show_value() shows addresses to each
    assert {r["f_op"] != 0 for r in rows} == {addresses.user}
    as_root = task_file_lines(shared.read(f"task_file/pid={sleepers.u.pid}"))
    assert fds_of(as_root, sleepers.u.pid) == readable[sleepers.u.pid]
    assert {r["f_op"] != 0 for r in as_root} == {addresses.root}


def test_task_file_of_processes_a_user_may_not_read_is_empty_for_it(shared, users, sleepers):
    """As task_vma's is, and as the README says an empty walk is: not even the header."""
    u, _ = users
    for other in (sleepers.v.pid, sleepers.root.pid):
        assert u.run("readlink", f"/proc/{other}/fd/0").returncode != 0  # the kernel's answer: no
        assert task_file_lines(shared.read(f"task_file/pid={other}"))  # root sees its fds
        assert u.read(shared / f"task_file/pid={other}") == (0, b"")


def test_task_vma_as_a_user_is_its_proc_maps_and_nothing_of_another_users(shared, users, sleepers):
    u, _ = users
    mine, theirs = sleepers.u.pid, sleepers.v.pid
    os.kill(mine, signal.SIGSTOP)  # a stopped process's mappings hold still
    try:
        one = read_as(u, shared / f"task_vma/pid={mine}")
        everyone = read_as(u, shared / "task_vma/all")
        maps = without_gate_vma(read_as(u, f"/proc/{mine}/maps"))
    finally:
        os.kill(mine, signal.SIGCONT)
    assert maps and all(line.startswith(f"{mine} ") for line in one.splitlines())
    assert maps_part(one) == maps
    assert maps_part("".join(line for line in everyone.splitlines(keepends=True)
                             if line.startswith(f"{mine} "))) == maps
    # the kernel refuses the user another user's maps: iterfs shows it none of them
    assert u.read(f"/proc/{theirs}/maps") == (errno.EACCES, b"")
    assert not [line for line in everyone.splitlines() if line.split(" ", 1)[0] in (str(theirs),
                                                                                   str(sleepers.root.pid))]
    assert u.read(shared / f"task_vma/pid={theirs}") == (0, b"")
    assert shared.read(f"task_vma/pid={theirs}")  # while root sees them


@pytest.fixture
def inet_sockets():
    """{"tcp": [...], "udp": [...]}: a listener, a connection with unread bytes, a UDP pair with a
    queued datagram, in IPv4 and IPv6."""
    made = {"tcp": [], "udp": []}
    try:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            listener = socket.socket(family, socket.SOCK_STREAM)
            made["tcp"].append(listener)
            listener.bind((host, 0))
            listener.listen()
            client = socket.create_connection(listener.getsockname()[:2])
            made["tcp"].append(client)
            server, _ = listener.accept()
            made["tcp"].append(server)
            client.sendall(b"unread")
            receiver = socket.socket(family, socket.SOCK_DGRAM)
            made["udp"].append(receiver)
            receiver.bind((host, 0))
            sender = socket.socket(family, socket.SOCK_DGRAM)
            made["udp"].append(sender)
            sender.connect(receiver.getsockname()[:2])
            sender.send(b"queued")
        yield made
    finally:
        for s in made["tcp"] + made["udp"]:
            s.close()


@pytest.mark.parametrize("target", ["tcp", "udp"])
def test_inet_sockets_as_a_user_are_its_proc_net(shared, users, inet_sockets, target):
    """Every column after sl (a running number in both) of the test's sockets; timers tick
    between the two reads, so the comparison is retried a few times."""
    u, _ = users
    sockets = inet_sockets[target]
    for _ in range(5):
        ours = read_as(u, shared / f"{target}/all")
        truth_text = read_as(u, f"/proc/net/{target}")
        truth = {**by_inode(truth_text, 9), **by_inode(read_as(u, f"/proc/net/{target}6"), 9)}
        rows = by_inode(ours, 9)
        mismatched = [s for s in sockets if _after_sl(rows.get(inode_of(s), ":")) != _after_sl(truth[inode_of(s)])]
        if not mismatched:
            break
    assert ours.splitlines()[0] == truth_text.splitlines()[0]
    for s in mismatched[:1]:
        assert rows.get(inode_of(s)) == truth[inode_of(s)]


def test_unix_sockets_as_a_user_are_its_proc_net_unix(shared, users, tmp_path):
    u, _ = users
    path = tmp_path / "bound socket"  # a space: the path is the last column
    sockets = []
    try:
        for kind, address in ((socket.SOCK_STREAM, str(path)),
                              (socket.SOCK_DGRAM, b"\0iterfs-" + uuid.uuid4().hex.encode())):
            sock = socket.socket(socket.AF_UNIX, kind)
            sockets.append(sock)
            sock.bind(address)
        sockets[0].listen()
        sockets += socket.socketpair()
        ours, truth = read_as(u, shared / "unix/all"), read_as(u, "/proc/net/unix")
        assert ours.splitlines()[0] == truth.splitlines()[0]
        ours_rows, truth_rows = by_inode(ours, 6), by_inode(truth, 6)
        for s in sockets:
            assert ours_rows[inode_of(s)] == truth_rows[inode_of(s)]
        assert ours_rows[inode_of(sockets[0])].endswith(f" {path}")
    finally:
        for s in sockets:
            s.close()


def test_ksym_as_a_user_is_its_proc_kallsyms(shared, users, addresses):
    u, _ = users
    ours = read_as(u, shared / "ksym/all").splitlines()
    truth = read_as(u, "/proc/kallsyms").splitlines()
    # BPF programs come and go between the two reads (the daemon loads its own): compare the rest
    stable = lambda lines: [line for line in lines if not line.endswith("\t[bpf]")]
    assert stable(ours) == stable(truth)
    assert len(stable(ours)) > 10000
    assert shows_addresses("\n".join(ours)) == addresses.user


class Server:
    """A process of the user's that reads the paths it is sent, one open each, and answers
    (errno, bytes)."""

    def __init__(self, user):
        self.proc = subprocess.Popen(user.command("python3", "-I", "-S", "-c", SERVE),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, paths: list[Path]) -> None:
        self.proc.stdin.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
        self.proc.stdin.flush()

    def answer(self) -> tuple[int, bytes]:
        header = self.proc.stdout.readline().split()
        assert len(header) == 3, f"the user's reader said {header!r}"
        code, length = int(header[0]), int(header[1])
        data = self.proc.stdout.read(length)
        assert len(data) == length and hashlib.sha256(data).hexdigest().encode() == header[2]
        return code, data

    def read(self, path: Path) -> tuple[int, bytes]:
        self.send([path])
        return self.answer()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def thread_credentials(pid: int) -> dict[int, dict[str, str]]:
    """Uid, Gid, Groups and CapEff of each thread of process pid."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            lines = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
        except FileNotFoundError:
            continue  # an idle worker thread that has exited meanwhile
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        found[int(tid)] = {key: status[key].strip() for key in ("Uid", "Gid", "Groups", "CapEff")}
    return found


def held_map_ids(pid: int) -> set[int]:
    """The ids of the BPF maps process pid holds fds of, as their fdinfo says."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except FileNotFoundError:
            continue
        for line in info.splitlines():
            if line.startswith("map_id:"):
                ids.add(int(line.split()[1]))
    return ids


def bpftool(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)


def test_a_thousand_opens_by_root_and_a_user_each_see_only_their_own_view(shared, users, sleepers, addresses):
    """Alternating and concurrent reads of one mount: no credentials or reader policy of one
    reader reach another's read, and nothing is left behind."""
    u, _ = users
    mine, roots = sleepers.u.pid, sleepers.root.pid
    paths = {"root's": shared / f"task_file/pid={roots}", "u's": shared / f"task_file/pid={mine}",
             "tcp": shared / "tcp/all"}
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a line that holds still in tcp/all
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = Server(u)
    try:
        # each side's ground truth, from the kernel's own views as that side reads them
        walked = walk_as(u)[0][mine]
        assert walked == proc_fds(mine)
        root_fds = proc_fds(roots)
        inode = inode_of(listener)
        listening = {"root": _after_sl(by_inode(Path("/proc/net/tcp").read_text(), 9)[inode]),
                     "user": _after_sl(by_inode(read_as(u, "/proc/net/tcp"), 9)[inode])}
        expected = {
            ("root", "root's"): (root_fds, addresses.root), ("root", "u's"): (walked, addresses.root),
            ("user", "root's"): ({}, addresses.user), ("user", "u's"): (walked, addresses.user),
        }
        verdicts: dict[tuple[str, str, bytes], str | None] = {}

        def check(side: str, name: str, code: int, data: bytes) -> str | None:
            """None if what side read of paths[name] is its own view, else what is wrong."""
            if code:
                return f"{side} reading {name}: {os.strerror(code)}"
            key = (side, name, hashlib.sha256(data).digest())
            if key not in verdicts:
                verdicts[key] = judge(side, name, text(data))
            return verdicts[key]

        def judge(side: str, name: str, got: str) -> str | None:
            if name == "tcp":
                line = by_inode(got, 9).get(inode)
                if line is None or _after_sl(line) != listening[side]:
                    return f"{side}'s tcp/all shows the listener as {line!r}, its /proc/net/tcp {listening[side]!r}"
                return None
            rows = task_file_lines(got)
            fds, shown = expected[side, name]
            pid = roots if name == "root's" else mine
            if {r["tgid"] for r in rows} - {pid} or fds_of(rows, pid) != fds or len(rows) != len(fds):
                return f"{side} reading {name} task_file got {got!r}, not the fds {fds}"
            if any((r["f_op"] != 0) != shown for r in rows):
                return f"{side} reading {name} task_file got f_op {got!r}: addresses {'' if shown else 'not '}expected"
            return None

        def root_read(name: str) -> str | None:
            try:
                return check("root", name, 0, paths[name].read_bytes())
            except OSError as e:
                return check("root", name, e.errno, b"")

        names = ["root's", "u's", "tcp"]
        for name in names:  # programs loaded, fds the first reads open: what the daemon holds at rest
            assert root_read(name) is None
            assert check("user", name, *server.read(paths[name])) is None
        assert settled(lambda: iter_link_ids_of(shared.pid), set()) == set()
        assert settled(lambda: json.loads(shared.read(".iterfs/status"))["open_iterators"], 0) == 0
        fds_before = shared.fd_count()
        log_before = shared.log.stat().st_size

        wrong = []
        for i in range(250):  # alternating, one at a time
            wrong.append(root_read(names[i % 3]))
            name = names[(i + 1) % 3]
            wrong.append(check("user", name, *server.read(paths[name])))
        # and at once: root in threads while the user's process reads
        user_names = [names[i % 3] for i in range(250)]
        with ThreadPoolExecutor(max_workers=3) as pool:
            root_results = pool.map(root_read, [names[(i + 2) % 3] for i in range(250)])
            server.send([paths[name] for name in user_names])
            wrong += [check("user", name, *server.answer()) for name in user_names]
            wrong += list(root_results)
        wrong = [w for w in wrong if w]
        assert not wrong, f"{len(wrong)} of 1000 reads were not the reader's own view: {wrong[:3]}"
    finally:
        server.close()
        listener.close()

    # afterwards, every thread of the daemon is back to its own credentials
    threads = thread_credentials(shared.pid)
    main = threads[shared.pid]
    assert main["Uid"].split() == ["0"] * 4 and main["Gid"].split() == ["0"] * 4
    assert len(threads) > 1
    for tid, creds in threads.items():
        assert creds == main, f"thread {tid} of the daemon: {creds}, not the daemon's {main}"
    with open(shared.log, "rb") as f:
        f.seek(log_before)
        troubles = [line for line in f.read().decode(errors="replace").splitlines()
                    if " ERROR " in line or " CRITICAL " in line]
    assert not troubles, troubles[:3]
    # and nothing is left behind
    assert settled(lambda: json.loads(shared.read(".iterfs/status"))["open_iterators"], 0) == 0
    assert settled(lambda: iter_link_ids_of(shared.pid), set()) == set()
    assert settled(shared.fd_count, fds_before) == fds_before
    policies = [i for i in held_map_ids(shared.pid)
                if bpftool("map", "show", "id", str(i)).get("name") == "reader_policy"]
    assert policies, "the daemon holds no reader_policy map: task_file's program is not the one loaded"
    for map_id in policies:
        assert bpftool("map", "dump", "id", str(map_id)) == [], f"reader_policy map {map_id} keeps entries"


# run as a user: per pid given, 0 if its readlink of /proc/PID/fd/0 reads the link, else the errno
READLINK = r"""
import os, sys
for pid in sys.argv[1:]:
    try:
        os.readlink(f"/proc/{pid}/fd/0")
        print(0)
    except OSError as e:
        print(e.errno)
"""

# prctl(PR_SET_DUMPABLE, 0), then a long sleep
NON_DUMPABLE = "import ctypes; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); import time; time.sleep(1000)"


def readlink_errnos(user, pids: list[int]) -> list[int]:
    done = user.run("python3", "-I", "-S", "-c", READLINK, *(str(pid) for pid in pids))
    assert done.returncode == 0, done.stderr.decode()
    return [int(line) for line in done.stdout.decode().split()]


def ids_of(pid: int) -> tuple[list[str], list[str]]:
    """The Uid and Gid lines of /proc/PID/status: real, effective, saved, filesystem."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return status["Uid"].split(), status["Gid"].split()


@pytest.fixture
def unptraceable(users):
    """Two processes of U's uid that U may not ptrace-read: a python3 that made itself
    non-dumpable, and a sleep with V's gid (and no groups)."""
    u, v = users
    procs = []
    try:
        procs.append(u.spawn("python3", "-I", "-S", "-c", NON_DUMPABLE))
        procs.append(subprocess.Popen(
            ["setpriv", f"--reuid={u.uid}", f"--regid={v.gid}", "--clear-groups", "--",
             "/usr/bin/env", "PATH=/usr/bin:/bin", "sleep", "1000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dumping, other_gid = procs

        def now():  # exec'd, its /proc/PID/status root's once it is non-dumpable, and asleep in time.sleep()
            try:
                return (Path(f"/proc/{dumping.pid}/comm").read_text().strip(),
                        os.stat(f"/proc/{dumping.pid}/status").st_uid, proc_state(dumping.pid))
            except FileNotFoundError:
                return None
        assert settled(now, ("python3", 0, "S")) == ("python3", 0, "S")
        wait_sleeping(other_gid.pid)
        assert ids_of(dumping.pid) == ([str(u.uid)] * 4, [str(u.gid)] * 4)
        assert ids_of(other_gid.pid) == ([str(u.uid)] * 4, [str(v.gid)] * 4)
        yield SimpleNamespace(non_dumpable=dumping, other_gid=other_gid)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_task_file_and_task_vma_leave_out_a_users_own_processes_it_may_not_ptrace_read(
        shared, users, sleepers, unptraceable):
    """The ptrace rule's other branches: a process of U's uid that is not dumpable, or whose gid
    is not U's, is one the kernel refuses U (readlink of /proc/PID/fd/0): iterfs shows U none of
    it, while root sees it."""
    u, _ = users
    hidden = [unptraceable.non_dumpable.pid, unptraceable.other_gid.pid]
    # the kernel's answer first: no for both, yes for U's plain sleep
    assert readlink_errnos(u, [*hidden, sleepers.u.pid]) == [errno.EACCES, errno.EACCES, 0]
    files = task_file_lines(read_as(u, shared / "task_file/all"))
    vmas = read_as(u, shared / "task_vma/all")
    assert fds_of(files, sleepers.u.pid) == proc_fds(sleepers.u.pid)
    assert any(line.startswith(f"{sleepers.u.pid} ") for line in vmas.splitlines())
    roots = {row["tgid"] for row in task_file_lines(shared.read("task_file/all"))}
    for pid in hidden:
        assert pid not in {row["tgid"] for row in files}, pid
        assert not [line for line in vmas.splitlines() if line.split(" ", 1)[0] == str(pid)], pid
        assert u.read(shared / f"task_file/pid={pid}") == (0, b""), pid
        assert u.read(shared / f"task_vma/pid={pid}") == (0, b""), pid
        # root sees them
        assert pid in roots
        theirs = task_file_lines(shared.read(f"task_file/pid={pid}"))
        assert {row["tgid"] for row in theirs} == {pid} and fds_of(theirs, pid) == proc_fds(pid)
        maps = shared.read(f"task_vma/pid={pid}")
        assert maps and all(line.startswith(f"{pid} ") for line in maps.splitlines()), pid


# run as a user: once a line comes on stdin, reads each path given (its "{pid}" its own) ROUNDS
# times; says how many reads gave bytes, and the first failures
READ_LOOP = r"""
import json, os, sys
rounds, paths = int(sys.argv[1]), [path.replace("{pid}", str(os.getpid())) for path in sys.argv[2:]]
sys.stdin.readline()
read, failed = 0, []
for _ in range(rounds):
    for path in paths:
        try:
            with open(path, "rb") as f:
                if f.read():
                    read += 1
                else:
                    failed.append([path, "empty"])
        except OSError as e:
            failed.append([path, e.errno])
print(json.dumps({"read": read, "failures": len(failed), "first": failed[:5]}))
"""

# run as a user: kill(own, 0) and kill(root's, 0) first, as ground truth; then, while process
# reader runs, kill(tid, 0) of every thread of process daemon, listed afresh each round. Counts
# the kills that went through, those refused, and those made while the thread had the user's
# fsuid both before and after (it was serving the user meanwhile).
PROBE = r"""
import json, os, sys
daemon, reader, own, roots = (int(arg) for arg in sys.argv[1:5])
uid = os.getuid()

def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between the open and the read
        return False

def fsuid(tid):
    try:
        with open(f"/proc/{daemon}/task/{tid}/status") as f:
            return next(int(line.split()[4]) for line in f if line.startswith("Uid:"))
    except (FileNotFoundError, ProcessLookupError):
        return None

os.kill(own, 0)
try:
    os.kill(roots, 0)
    refused = 0
except PermissionError as e:
    refused = e.errno
print(json.dumps({"own": 0, "roots": refused}), flush=True)
rounds = signalled = denied = while_serving = 0
while running(reader):
    rounds += 1
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{daemon}/task")]
    except FileNotFoundError:
        break
    for tid in tids:
        before = fsuid(tid)
        try:
            os.kill(tid, 0)
            signalled += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            denied += 1
        if before == uid == fsuid(tid):
            while_serving += 1
print(json.dumps(dict(rounds=rounds, signalled=signalled, denied=denied, while_serving=while_serving)), flush=True)
"""


def test_a_reader_cannot_signal_the_daemons_threads_while_they_serve_it(shared, users, sleepers):
    """A thread serving U takes U's fsuid, not its real or effective uid: kill(tid, 0) by U, which
    the kernel allows on U's own processes, is refused on every thread of the daemon, also on one
    that has U's fsuid at that moment."""
    u, _ = users
    rounds = 2000
    paths = [str(shared / "netlink/all"), str(shared / "tcp/all"), str(shared / "task_file/pid={pid}")]
    reader = subprocess.Popen(u.command("python3", "-I", "-S", "-c", READ_LOOP, str(rounds), *paths),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    prober = None
    try:
        prober = subprocess.Popen(u.command("python3", "-I", "-S", "-c", PROBE, str(shared.pid), str(reader.pid),
                                            str(sleepers.u.pid), str(sleepers.root.pid)), stdout=subprocess.PIPE)
        # ground truth: the kernel lets U signal its own sleep, and refuses it root's
        assert json.loads(prober.stdout.readline()) == {"own": 0, "roots": errno.EPERM}
        out, _ = reader.communicate(b"go\n", timeout=600)
        assert reader.returncode == 0
        read = json.loads(out)
        out, _ = prober.communicate(timeout=60)
        assert prober.returncode == 0
        probed = json.loads(out)
    finally:
        for proc in (reader, prober):
            if proc:
                proc.kill()
                proc.wait()
    assert read == {"read": rounds * len(paths), "failures": 0, "first": []}, read
    # the kills were made while the reads went on, some at threads that were serving U then
    assert probed["rounds"] > 0 and probed["denied"] > 0 and probed["while_serving"] > 0, probed
    assert probed["signalled"] == 0, f"U signalled the daemon's threads {probed['signalled']} times: {probed}"


@pytest.fixture
def task_file_pin(fuse_host):
    """A task_file/all pin made by iterfs pin, mode 0644 in directories of mode 0755, in a bpffs of
    the test's own in a directory others may pass through; and a shared mount mirroring only that
    bpffs: (the mount, the pin)."""
    directory = world_traversable_dir()
    bpffs = directory / "bpffs"
    bpffs.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    try:
        (bpffs / "iters").mkdir()
        pin = bpffs / "iters" / "files"
        done = run_iterfs("pin", "task_file/all", str(pin))
        assert done.returncode == 0, done.stderr
        for path, mode in ((bpffs, 0o755), (pin.parent, 0o755), (pin, 0o644)):
            os.chmod(path, mode)
        mnt = start_mount(directory, ["--allow-other", "--bpffs", str(bpffs), "--debug"])
        try:
            yield mnt, pin
        finally:
            mnt.stop()
    finally:
        subprocess.run(["umount", "-l", str(bpffs)], check=True)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_task_file_pin_shows_a_user_through_the_mirror_what_it_shows_the_user_itself(task_file_pin, users,
                                                                                       sleepers):
    """A pin shows what the pinner's walk shows, to whoever its permissions let open it
    (bpf/reader.bpf.h): through pinned/ as directly, U's read has root's and V's sleeps too."""
    u, _ = users
    mnt, pin = task_file_pin
    mirror = mnt / "pinned" / str(pin).lstrip("/")
    started = {sleepers.u.pid, sleepers.v.pid, sleepers.root.pid}

    def rows(view: str) -> set[tuple[int, int, str]]:
        return {(r["tgid"], r["fd"], r["path"]) for r in task_file_lines(view) if r["tgid"] in started}

    through, direct = rows(read_as(u, mirror)), rows(read_as(u, pin))
    assert through == direct
    assert direct == {(pid, fd, path) for pid in started for fd, path in proc_fds(pid).items()}
    assert {sleepers.v.pid, sleepers.root.pid} <= {tgid for tgid, _, _ in through}, "the pinner's walk shows them"
