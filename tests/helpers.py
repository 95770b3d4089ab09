"""Test helpers: mounts started as a user starts them, child processes, the kernel's own views."""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

# the installed command, beside this interpreter (the venv make setup made)
ITERFS = Path(sys.executable).with_name("iterfs")
CHILD = Path(__file__).with_name("child_proc.py")


class Mount:
    def __init__(self, path: Path, log: Path, pid: int, proc_args: list[str]):
        self.path = path
        self.log = log
        self.pid = pid
        self.args = proc_args

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str) -> str:
        return (self.path / name).read_bytes().decode(errors="surrogateescape")

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # a zombie is not alive for our purposes
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def wait_exit(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.02)
        return False

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self) -> None:
        """Always leaves no mount and no daemon behind."""
        subprocess.run([str(ITERFS), "umount", str(self.path)], capture_output=True, timeout=60)
        if not self.wait_exit(10):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.wait_exit(10):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)


# iterfs as on a kernel that refuses some targets (refusing_kernel.py says how)
REFUSING_ITERFS = [sys.executable, str(Path(__file__).with_name("refusing_kernel.py"))]


def refusing_env(targets: str = "", loads: str = "") -> dict[str, str]:
    return {**os.environ, "ITERFS_REFUSE": targets, "ITERFS_REFUSE_LOADS": loads}


def start_mount(directory: Path, extra: list[str] = (), command: list[str] | None = None,
                env: dict[str, str] | None = None) -> Mount:
    """Mount with the installed `iterfs mount` (or command), which returns once the mount is ready."""
    path = directory / "mnt"
    path.mkdir()
    log = directory / "iterfs.log"
    pid_file = directory / "iterfs.pid"
    args = [*(command or [str(ITERFS)]), "mount", str(path), "--log", str(log), "--pid-file", str(pid_file), *extra]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
        raise AssertionError(f"iterfs mount failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
    return Mount(path, log, int(pid_file.read_text()), args)


# as bpf/Makefile names the architecture for bpf_tracing.h
_ARCH = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390",
         "riscv64": "riscv"}.get(os.uname().machine, os.uname().machine)


def compile_bpf(source: str, out: Path) -> None:
    """Build a test's own BPF program (C source text) into out, against the project's vmlinux.h."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as work:  # not beside out: that may be a watched objects directory
        src = Path(work) / "program.bpf.c"
        src.write_text(source)
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{_ARCH}", "-Wall",
                        "-Werror", f"-I{root / 'bpf'}", "-c", str(src), "-o", str(out)], check=True, capture_output=True)


# A task_vma program the verifier refuses (EACCES): it reads the task without a NULL check.
REJECTED_TASK_VMA = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";

SEC("iter/task_vma")
int dump_task_vma(struct bpf_iter__task_vma *ctx)
{
	struct task_struct *task = ctx->task;

	/* no NULL check on task: the verifier must refuse this */
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d\n", task->pid);
	return 0;
}
"""


def bundled_copy(directory: Path) -> Path:
    """A copy of the bundled programs in directory/programs, for a mount with --bpf-dir to change."""
    programs = directory / "programs"
    shutil.copytree(Path(__file__).resolve().parent.parent / "iterfs" / "bpf", programs)
    return programs


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


class Child:
    """A process the test controls: it opens files and starts threads on request."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self.proc.pid
        self._expect("ready")

    def _expect(self, word: str) -> str:
        line = self.proc.stdout.readline().strip()
        assert line.startswith(word), f"child said {line!r}, expected {word!r}"
        return line[len(word):].strip()

    def command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._expect("ok")

    def open_file(self, path: Path) -> int:
        return int(self.command(f"open {path}"))

    def seek(self, fd: int, pos: int) -> None:
        self.command(f"seek {fd} {pos}")

    def add_mappings(self, count: int) -> None:
        self.command(f"mappings {count}")

    def start_threads(self, names: list[str]) -> list[int]:
        return [int(t) for t in self.command("threads " + " ".join(names)).split()]

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


# The kernel's own views


def proc_fds(pid: int) -> dict[int, str]:
    fds = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(entry)] = os.readlink(f"/proc/{pid}/fd/{entry}")
        except FileNotFoundError:
            pass
    return fds


def proc_threads(pid: int) -> dict[int, str]:
    return {
        int(tid): Path(f"/proc/{pid}/task/{tid}/comm").read_text().rstrip("\n")
        for tid in os.listdir(f"/proc/{pid}/task")
    }


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def proc_state(tid: int) -> str:
    return Path(f"/proc/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def settled(measure, expected, timeout: float = 20.0):
    """measure() once it equals expected, or its last value after timeout.

    FUSE sends RELEASE after close() has returned, so what a close frees in
    the daemon is freed a moment later.
    """
    deadline = time.monotonic() + timeout
    while (value := measure()) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def rss_kb(pid: int) -> int:
    """A process's resident memory, as /proc/PID/status says."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def iter_link_ids_of(pid: int) -> set[int]:
    """The ids of the iterator links that process pid holds fds of, as their fdinfo says.

    Counting a process's own links keeps a measurement free of other processes'
    links, including those of a daemon that has exited but whose links the
    kernel frees a moment later.
    """
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except FileNotFoundError:
            continue  # closed meanwhile
        if "link_type:\titer\n" in info:
            ids.add(int(re.search(r"^link_id:\s*(\d+)", info, re.M).group(1)))
    return ids


def iter_links_of(pid: int) -> int:
    """How many iterator links process pid holds fds of."""
    return len(iter_link_ids_of(pid))


def iter_link_ids() -> set[int]:
    """The ids of every iterator link the kernel has, as bpftool lists them."""
    out = subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True, check=True).stdout
    return {link["id"] for link in json.loads(out or "[]") if link.get("type") == "iter"}


def make_map(bpffs: Path, kind: str = "hash", key: int = 4, value: int = 8, entries: int = 16) -> int:
    """A map made and pinned by bpftool; its id."""
    pin = bpffs / f"m{uuid.uuid4().hex[:8]}"
    subprocess.run(["bpftool", "map", "create", str(pin), "type", kind, "key", str(key), "value", str(value),
                    "entries", str(entries), "name", pin.name], check=True, capture_output=True)
    return bpftool_json("map", "show", "pinned", str(pin))["id"]


SK_STORAGE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} storage SEC(".maps");
SEC("iter/task") int nothing(struct bpf_iter__task *ctx) { return 0; }
"""


def make_sk_storage_map(bpffs: Path) -> int:
    """An sk_storage map (it needs BTF, so an object defines it), made by bpftool and pinned; its id."""
    with tempfile.TemporaryDirectory() as work:
        compile_bpf(SK_STORAGE, Path(work) / "storage.bpf.o")
        programs, maps = bpffs / f"p{uuid.uuid4().hex[:8]}", bpffs / f"s{uuid.uuid4().hex[:8]}"
        subprocess.run(["bpftool", "prog", "loadall", str(Path(work) / "storage.bpf.o"), str(programs),
                        "pinmaps", str(maps)], check=True, capture_output=True)
    shutil.rmtree(programs)  # the program goes; the pinned map stays
    return bpftool_json("map", "show", "pinned", str(maps / "storage"))["id"]


def map_pin(bpffs: Path, map_id: int) -> Path:
    """Where make_map() pinned map map_id."""
    return next(p for p in bpffs.glob("m*") if not p.name.endswith(".debug")
                and bpftool_json("map", "show", "pinned", str(p))["id"] == map_id)


def bpftool_json(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)


# Parsers of our output: split only as the READMEs document (the last column may hold spaces)


def task_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    if not lines:
        return []
    assert lines[0].split() == ["tgid", "pid", "ppid", "uid", "S", "comm"], lines[0]
    rows = []
    for line in lines[1:]:
        tgid, pid, ppid, uid, state, comm = line.split(None, 5)
        rows.append(dict(tgid=int(tgid), pid=int(pid), ppid=int(ppid), uid=int(uid), state=state, comm=comm))
    return rows


def task_file_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    if not lines:
        return []
    assert lines[0].split() == ["tgid", "pid", "fd", "f_op", "path"], lines[0]
    rows = []
    for line in lines[1:]:
        tgid, pid, fd, f_op, path = line.split(None, 4)  # paths start with "/" or "type:"
        rows.append(dict(tgid=int(tgid), pid=int(pid), fd=int(fd), f_op=int(f_op, 16), path=path))
    return rows


def without_gate_vma(maps: str) -> str:
    """/proc/PID/maps less the [vsyscall] page, which is not a mapping of the process."""
    return "".join(line for line in maps.splitlines(keepends=True) if not line.rstrip().endswith("[vsyscall]"))


@contextmanager
def stopped(child):
    """child stopped, so its mappings hold still; yields its /proc/PID/maps (without_gate_vma)."""
    os.kill(child.pid, signal.SIGSTOP)
    try:
        yield without_gate_vma(open(f"/proc/{child.pid}/maps").read())
    finally:
        os.kill(child.pid, signal.SIGCONT)


def maps_part(ours: str) -> str:
    """/proc/PID/maps from task_vma lines: each without the pid in front."""
    return "".join(line.split(" ", 1)[1] for line in ours.splitlines(keepends=True))


_refusals: dict[str, int] = {}


def kernel_refusal(target: str) -> int:
    """0 if this kernel loads a program for target that does nothing, else the errno it refuses it with.

    The test's own probe, as a user would try it: the smallest C program, built and loaded by libbpf.
    """
    if target not in _refusals:
        import ctypes

        libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        libbpf.bpf_object__open_file.restype = ctypes.c_void_p
        libbpf.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        libbpf.bpf_object__load.argtypes = [ctypes.c_void_p]
        libbpf.bpf_object__close.argtypes = [ctypes.c_void_p]
        with tempfile.TemporaryDirectory() as work:
            out = Path(work) / "probe.bpf.o"
            compile_bpf(PROBE.replace("TARGET", target), out)
            obj = libbpf.bpf_object__open_file(str(out).encode(), None)
            assert obj, f"libbpf cannot open {out}"
            try:
                code = -libbpf.bpf_object__load(obj)
            finally:
                libbpf.bpf_object__close(obj)
        # a refusal is EPERM or EACCES; anything else means the probe itself is wrong here
        assert code in (0, errno.EPERM, errno.EACCES), f"the probe for {target}: {os.strerror(code)}"
        _refusals[target] = code
    return _refusals[target]


PROBE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
SEC("iter/TARGET") int probe(struct bpf_iter__TARGET *ctx) { return 0; }
"""


class User:
    """A system user the test suite made (and removes), to read as with the kernel's rules."""

    def __init__(self, name: str):
        self.name = name
        entry = pwd.getpwnam(name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def command(self, *args: str) -> list[str]:
        """args run as this user: its uid, gid and groups, and no capabilities once setpriv has
        exec'd (env execs too, so a process started so is the command itself)."""
        # root's PATH may lead through directories only root may enter (pyenv's shims in /root)
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                "/usr/bin/env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *args]

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), capture_output=True, timeout=120, **kw)

    def read(self, path) -> tuple[int, bytes]:
        """(0, contents) of path as read by this user's cat, or (errno, b"") as cat failed."""
        done = self.run("python3", "-I", "-S", "-c", _READ_AS, str(path))
        code = int(done.stderr.decode().strip() or 0) if done.returncode else 0
        return code, done.stdout

    def spawn(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **kw)


# the errno of a failed read, as a number, where cat would only say its message
_READ_AS = """
import os, sys
try:
    with open(sys.argv[1], "rb") as f:
        sys.stdout.buffer.write(f.read())
except OSError as e:
    sys.stderr.write(str(e.errno))
    sys.exit(1)
"""


def make_user(prefix: str = "iterfs-u") -> User:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    return User(name)


def remove_user(user: User) -> None:
    subprocess.run(["pkill", "-KILL", "-u", str(user.uid)], capture_output=True)
    for _ in range(100):
        if subprocess.run(["pgrep", "-u", str(user.uid)], capture_output=True).returncode:
            break
        time.sleep(0.05)
    subprocess.run(["userdel", user.name], capture_output=True)


def world_traversable_dir() -> Path:
    """A new directory others may pass through (pytest's tmp_path is root's alone, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="iterfs-shared-", dir="/tmp"))
    path.chmod(0o755)
    return path
