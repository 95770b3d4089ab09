"""make bench: iterfs against baselines measured in the same run, on a load the bench creates.

Load: LOAD_PROCS processes holding FILES_EACH open files each. Figures:
  1. cat MNT/task_file/all  vs  the same object pinned with `bpftool iter pin`, read with cat
  2. cat MNT/task_file/all  vs  walking /proc/*/fd with readlink (GNU find -printf %l)
  3. open/read/close of task_file/pid=<self>  vs  the same loop on a constant-file pyfuse3 fs,
     and the same with an fstat after the open, as cat and Python's open() do
  4. read MNT/task_file/all, seek(0), read it again  vs  the pin read twice, one open each
  5. daemon RSS idle, and with HELD iterator files open at once
  6. cat MNT/task/fields=<the bundled task program's columns>/all  vs  cat MNT/task/all, and vs
     a Python walk of /proc/*/task/*/status gathering the same values
  7. open/read/close by a reader in another network namespace (netlink/all) and in another pid
     namespace (task_file/pid=<itself>)  vs  the same reader in the daemon's namespaces
  8. every target's dump three ways: iterfs, the same program pinned, the kernel's own view
     (bench/targets.py), with 20,000 TCP and UDP sockets, 5,000 unix, 1,000 cgroups, 1,000 maps more
Each time is the median of several runs. Targets are ratios, never absolute times.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import ITERFS  # noqa: E402  (the installed command, as the tests run it)
import targets  # noqa: E402  (bench/targets.py: this script's directory is on sys.path)
LOAD_PROCS = int(os.environ.get("BENCH_PROCS", 2000))
FILES_EACH = 20
HELD = 500
RUNS = 7
CYCLES = 2000
# The bundled task program's columns (tgid pid ppid uid S comm) as fields: no one field holds
# its state letter (task_state_char() reads __state and exit_state), so __state stands for it.
TASK_FIELDS = "tgid,pid,real_parent.tgid,cred.uid,__state,comm"
_STATUS_KEYS = {b"Name": 5, b"State": 4, b"Tgid": 0, b"Pid": 1, b"PPid": 2, b"Uid": 3}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def compare(ours, baseline, runs: int = RUNS, timer=timed) -> tuple[float, float, float]:
    """Median times of ours and baseline, run in turn, and the median of the per-pair ratios.

    Taking the two in turns keeps a noisy machine's drift out of the ratio. timer(fn): the
    time fn takes (or, for a measure made in another process, what fn says it took).
    """
    pairs = [(timer(ours), timer(baseline)) for _ in range(runs)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[0] / p[1] for p in pairs))


def cat(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def proc_walk() -> None:
    subprocess.run(["find", "/proc", "-mindepth", "3", "-maxdepth", "3", "-path", "/proc/[0-9]*/fd/*",
                    "-printf", "%p %l\n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def proc_status_walk() -> list[str]:
    """The values of TASK_FIELDS for every thread, as lines, from /proc/*/task/*/status."""
    lines = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone since the listing
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                    text = f.read()
            except OSError:
                continue
            values = [b""] * 6
            for line in text.split(b"\n", 9)[:9]:  # Name ... Uid are the first nine lines
                key, _, value = line.partition(b":")
                at = _STATUS_KEYS.get(key)
                if at is not None:
                    values[at] = value.split()[0] if at != 5 else value.strip()
            lines.append(b"\t".join(values).decode(errors="backslashreplace"))
    return lines


def cycles(path: Path, n: int = CYCLES, fstat: bool = False) -> None:
    for _ in range(n):
        fd = os.open(path, os.O_RDONLY)
        if fstat:
            os.fstat(fd)
        while os.read(fd, 131072):
            pass
        os.close(fd)


# Run by a reader in a namespace: open/read/close of a path ("SELF" for its own pid, as the
# namespace numbers it) n times after one open; prints the seconds the n took.
CYCLES_INSIDE = r"""
import os, sys, time
path, n = sys.argv[1].replace("SELF", str(os.getpid())), int(sys.argv[2])
os.close(os.open(path, os.O_RDONLY))  # a new pid namespace's helper starts at its first open: not timed
started = time.perf_counter()
for _ in range(n):
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 131072):
        pass
    os.close(fd)
print(time.perf_counter() - started)
"""
NAMESPACE_CYCLES = CYCLES // 2


def cycles_inside(prefix: list[str], path: Path, python: str = sys.executable):
    """What CYCLES_INSIDE measures, run under prefix (unshare -n, ...): a timer's fn for compare()."""
    def run() -> float:
        done = subprocess.run([*prefix, python, "-I", "-c", CYCLES_INSIDE, str(path), str(NAMESPACE_CYCLES)],
                              capture_output=True, text=True, check=True)
        return float(done.stdout)
    return run


# an unprivileged reader: nobody, with the system's python (the venv's may be out of its reach)
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
SYSTEM_PYTHON = "/usr/bin/python3"


def read_twice(path: Path, rewind: bool) -> None:
    """Read path to its end twice: with a seek back in one open, or with two opens."""
    with open(path, "rb") as f:
        f.read()
        if rewind:
            f.seek(0)
            f.read()
            return
    with open(path, "rb") as f:
        f.read()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ensure_bpffs() -> None:
    """The pinned baseline needs bpffs at /sys/fs/bpf, which a fresh machine may not mount."""
    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


def start_load(tmp: Path) -> list[subprocess.Popen]:
    files = []
    for i in range(FILES_EACH):
        path = tmp / f"load-{i}"
        path.write_text("")
        files.append(os.open(path, os.O_RDONLY))
    procs = [subprocess.Popen(["sleep", "3600"], pass_fds=files, stdin=subprocess.DEVNULL) for _ in range(LOAD_PROCS)]
    for fd in files:
        os.close(fd)
    return procs


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ensure_bpffs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="iterfs-bench-") as tmpdir:
        tmp = Path(tmpdir)
        mnt, floor_mnt, pin = tmp / "mnt", tmp / "floor", Path(f"/sys/fs/bpf/iterfs-bench-{os.getpid()}")
        shared = Path(f"/tmp/iterfs-bench-shared-{os.getpid()}")  # others may pass through /tmp, not tmp
        mnt.mkdir()
        floor_mnt.mkdir()
        print(f"starting {LOAD_PROCS} processes with {FILES_EACH} open files each ...", file=sys.stderr)
        load = start_load(tmp)
        floor = None
        pid_file = tmp / "pid"
        try:
            subprocess.run([str(ITERFS), "mount", str(mnt), "--pid-file", str(pid_file), "--log", str(tmp / "log")],
                           check=True)
            daemon = int(pid_file.read_text())
            cat(mnt / "task_file/all")  # load the program once
            idle_rss = rss_mb(daemon)

            # the same program pinned: by iterfs pin, which gives the pin's reads the pinner's policy
            # (bpf/reader.bpf.h); bpftool iter pin of the object shows nothing, as no one stores one
            subprocess.run([str(ITERFS), "pin", "task_file/all", str(pin)], check=True, capture_output=True)
            ours_all, pinned, ratio = compare(lambda: cat(mnt / "task_file/all"), lambda: cat(pin), runs=11)
            rows.append(("cat task_file/all vs iterfs pin + cat", ours_all, pinned, ratio, "<= 1.3x"))
            ours_all, walk, ratio = compare(lambda: cat(mnt / "task_file/all"), proc_walk, runs=3)
            rows.append(("cat task_file/all vs find /proc/*/fd -printf %l", ours_all, walk, 1 / ratio,
                         ">= 5x faster"))
            lines = (mnt / "task_file/all").read_text().count("\n")

            size = len((mnt / f"task_file/pid={os.getpid()}").read_bytes())
            floor = subprocess.Popen([sys.executable, str(ROOT / "bench/floorfs.py"), str(floor_mnt), str(size)],
                                     stdout=subprocess.PIPE, text=True)
            assert floor.stdout.readline().strip() == "ready"
            ours_cycle, floor_cycle, ratio = compare(lambda: cycles(mnt / f"task_file/pid={os.getpid()}"),
                                                     lambda: cycles(floor_mnt / "file"), runs=5)
            rows.append((f"open/read/close task_file/pid=self ({size} B) vs FUSE floor", ours_cycle / CYCLES,
                         floor_cycle / CYCLES, ratio, "<= 1.5x"))
            ours_cycle, floor_cycle, ratio = compare(lambda: cycles(mnt / f"task_file/pid={os.getpid()}", fstat=True),
                                                     lambda: cycles(floor_mnt / "file", fstat=True), runs=5)
            rows.append(("the same with an fstat after each open", ours_cycle / CYCLES,
                         floor_cycle / CYCLES, ratio, "<= 1.5x"))
            ours_twice, pin_twice, ratio = compare(lambda: read_twice(mnt / "task_file/all", rewind=True),
                                                   lambda: read_twice(pin, rewind=False), runs=7)
            rows.append(("read task_file/all, seek(0), read again vs pin read twice", ours_twice, pin_twice, ratio,
                         "<= 1.3x"))

            held = [os.open(mnt / f"task_file/pid={os.getpid()}", os.O_RDONLY) for _ in range(HELD)]
            for fd in held:
                os.read(fd, 1)
            held_rss = rss_mb(daemon)
            for fd in held:
                os.close(fd)

            task_fields = mnt / f"task/fields={TASK_FIELDS}/all"
            cat(task_fields)  # load the fields program once (its first open loads it)
            cat(mnt / "task/all")
            ours_fields, bundled, ratio = compare(lambda: cat(task_fields), lambda: cat(mnt / "task/all"), runs=11)
            rows.append(("cat task/fields=<task's columns>/all vs cat task/all", ours_fields, bundled, ratio,
                         "<= 1.2x"))
            ours_fields, walk, ratio = compare(lambda: cat(task_fields), proc_status_walk, runs=5)
            rows.append(("the same vs a Python walk of /proc/*/task/*/status", ours_fields, walk, 1 / ratio,
                         ">= 5x faster"))
            task_lines = (mnt / "task/all").read_bytes().count(b"\n")  # bytes: a comm need not be UTF-8

            # the reader's namespaces, found per open; another namespace's iterator made inside it
            by_itself = lambda fn: fn()  # noqa: E731
            ours_ns, host_ns, ratio = compare(cycles_inside(["unshare", "-n"], mnt / "netlink/all"),
                                              cycles_inside([], mnt / "netlink/all"), runs=5, timer=by_itself)
            rows.append(("netlink/all cycle: another netns vs the daemon's", ours_ns / NAMESPACE_CYCLES,
                         host_ns / NAMESPACE_CYCLES, ratio, "report"))
            ours_ns, host_ns, ratio = compare(
                cycles_inside(["unshare", "-p", "-f", "--mount-proc"], mnt / "task_file/pid=SELF"),
                cycles_inside([], mnt / "task_file/pid=SELF"), runs=5, timer=by_itself)
            rows.append(("task_file/pid=self cycle: another pidns vs the daemon's",
                         ours_ns / NAMESPACE_CYCLES, host_ns / NAMESPACE_CYCLES, ratio, "report"))

            # a shared mount: each reader's credentials read per open, and taken around its reads
            shared.mkdir()
            shared.chmod(0o755)
            (shared / "mnt").mkdir()
            subprocess.run([str(ITERFS), "mount", str(shared / "mnt"), "--allow-other", "--log", str(tmp / "log2")],
                           check=True)
            for name, path in (("netlink/all", "netlink/all"), ("task_file/pid=self", "task_file/pid=SELF")):
                ours_user, root_private, ratio = compare(
                    cycles_inside(AS_NOBODY, shared / "mnt" / path, SYSTEM_PYTHON),
                    cycles_inside([], mnt / path, SYSTEM_PYTHON), runs=5, timer=by_itself)
                rows.append((f"{name} cycle: nobody on a shared mount vs root on a private one",
                             ours_user / NAMESPACE_CYCLES, root_private / NAMESPACE_CYCLES, ratio, "report"))

            print("making 20,000 TCP and UDP sockets, 5,000 unix, 1,000 cgroups, 1,000 maps ...", file=sys.stderr)
            load_more = targets.Load()
            try:
                target_rows = targets.measure(ITERFS, mnt, sorted(targets.VIEWS), Path("/sys/fs/bpf"))
            finally:
                load_more.close()
        finally:
            subprocess.run([str(ITERFS), "umount", str(shared / "mnt")], capture_output=True)
            shutil.rmtree(shared, ignore_errors=True)
            pin.unlink(missing_ok=True)
            if floor:
                floor.send_signal(signal.SIGTERM)
                floor.wait()
            subprocess.run([str(ITERFS), "umount", str(mnt)], capture_output=True)
            for p in load:
                p.kill()
            for p in load:
                p.wait()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"\niterfs bench: {platform.node()}, Linux {platform.release()}, {os.cpu_count()} x {cpu}")
    print(f"load: {LOAD_PROCS} processes x {FILES_EACH} files ({lines} lines in task_file/all, "
          f"{task_lines} in task/all)")
    print(f"task's columns as fields: {TASK_FIELDS} (__state for the state letter)\n")
    print(f"| {'measure':<58} | {'iterfs':>10} | {'baseline':>10} | {'ratio':>7} | target        |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 12}|{'-' * 9}|---------------|")
    for name, ours, base, ratio, target in rows:
        print(f"| {name:<58} | {ours * 1e3:>8.2f}ms | {base * 1e3:>8.2f}ms | {ratio:>6.2f}x | {target:<13} |")
    print(f"| {'daemon RSS idle (programs loaded)':<58} | {idle_rss:>8.1f}MB | {'':>10} | {'':>7} | <= 60 MB      |")
    print(f"| {f'daemon RSS with {HELD} iterator files open':<58} | {held_rss:>8.1f}MB | {'':>10} | {'':>7} | <= 150 MB     |")
    print(f"\nEvery target's dump ({targets.RUNS} rounds, medians), with the load above and the sockets, "
          f"cgroups and maps of bench/targets.py:\n")
    print("\n".join(targets.table(target_rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
