"""make bench, the targets table: each target's dump three ways, on a load made at scale.

For every target that has a kernel view of the same data, in turns:
  iterfs   cat MNT/<target>/all
  pinned   the same program pinned by `iterfs pin <target>/all` and read with cat: the
           kernel's side alone (the program and the iterator), no FUSE, no daemon
  kernel   the kernel's own view: one file (/proc/net/tcp, /proc/kallsyms), a command that
           asks the kernel (bpftool, ss), or a walk of many files (/proc/*/maps)
Load, made here: 20,000 TCP sockets, 20,000 UDP, 5,000 unix, 1,000 cgroups, 1,000 BPF maps
(the processes with open files are bench.py's).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOLDER = ROOT / "tests/socket_holder.py"
RUNS = int(os.environ.get("BENCH_RUNS", 7))
SOCKETS = {"tcp": 20_000, "udp": 20_000, "unix": 5_000}
CGROUPS = 1_000
MAPS = 1_000

FILE, COMMAND, WALK = "one file", "a command", "a walk"
# target: (the kernel's view as a shell command, what it is)
VIEWS = {
    "task": ("cat /proc/[0-9]*/task/*/stat", WALK),
    "task_file": ("find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/fd/*' -printf '%p %l\\n'", WALK),
    "task_vma": ("cat /proc/[0-9]*/maps", WALK),
    "tcp": ("cat /proc/net/tcp /proc/net/tcp6", FILE),
    "udp": ("cat /proc/net/udp /proc/net/udp6", FILE),
    "unix": ("cat /proc/net/unix", FILE),
    "netlink": ("cat /proc/net/netlink", FILE),
    "ipv6_route": ("cat /proc/net/ipv6_route", FILE),
    "ksym": ("cat /proc/kallsyms", FILE),
    "kmem_cache": ("cat /proc/slabinfo", FILE),
    "bpf_map": ("bpftool map list", COMMAND),
    "bpf_prog": ("bpftool prog list", COMMAND),
    "bpf_link": ("bpftool link list", COMMAND),
    "cgroup": ("find {cgroup2} -type d", WALK),
}
EXTRA = [("tcp", "ss -tan", COMMAND), ("udp", "ss -uan", COMMAND), ("unix", "ss -xan", COMMAND)]


def shell(command: str):
    return lambda: subprocess.run(command, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rounds(*fns, runs: int = RUNS) -> list[list[float]]:
    """Each fn's times over runs rounds, the fns taken in turns within a round."""
    times = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn))
    return times


def ratio(a: list[float], b: list[float]) -> float:
    """The median of the per-round ratios: a noisy machine's drift stays out of it."""
    return statistics.median(x / y for x, y in zip(a, b))


class Load:
    """What the targets walk, made at scale; close() removes it all."""

    def __init__(self):
        self.holders: list[subprocess.Popen] = []
        self.cgroups: list[Path] = []
        self.maps: list[int] = []
        try:
            self._sockets()
            self._cgroups()
            self._maps()
        except BaseException:
            self.close()
            raise

    def _sockets(self) -> None:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        per = min(16_000, hard - 64) // 4 * 4
        for kind, count in SOCKETS.items():
            for start in range(0, count, per):
                proc = subprocess.Popen([sys.executable, str(HOLDER), kind, str(min(per, count - start))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.holders.append(proc)
                proc.stdout.readline()

    def _cgroups(self) -> None:
        sys.path.insert(0, str(ROOT))
        from iterfs import probes
        top = Path(probes.cgroup2_root()) / f"iterfs-bench-{os.getpid()}"
        self.cgroups.append(top)
        top.mkdir()
        for i in range(CGROUPS):  # groups of a hundred, as a node's pods and their containers
            group = top / f"pod-{i // 100:02d}"
            path = group if i % 100 == 0 else group / f"container-{i % 100:02d}.scope"
            path.mkdir()
            self.cgroups.append(path)

    def _maps(self) -> None:
        libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
        libbpf.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p]
        for i in range(MAPS):
            fd = libbpf.bpf_map_create(1, f"bench_{i}".encode(), 4, 8, 16, None)  # BPF_MAP_TYPE_HASH
            if fd < 0:
                raise OSError(ctypes.get_errno(), "bpf_map_create")
            self.maps.append(fd)

    def close(self) -> None:
        for proc in self.holders:
            proc.stdin.close()
            proc.wait()
        for path in reversed(self.cgroups):
            path.rmdir()
        for fd in self.maps:
            os.close(fd)


def measure(iterfs: Path, mnt: Path, targets: list[str], pin_dir: Path) -> list[tuple]:
    """Rows: (target, lines, iterfs s, pinned s (or why none), kernel s, view, kind) for each target there is."""
    from iterfs import probes
    rows = []
    for target in targets:
        if target not in VIEWS or not (mnt / target).is_dir():
            continue
        view, kind = VIEWS[target]
        view = view.format(cgroup2=probes.cgroup2_root())
        pin = pin_dir / f"bench-{target}"
        subprocess.run([str(iterfs), "pin", f"{target}/all", str(pin)], check=True, capture_output=True)
        try:
            ours = shell(f"cat {mnt / target / 'all'}")
            ours()  # its program loaded once
            lines = (mnt / target / "all").read_bytes().count(b"\n")
            # a cgroup walk larger than one read: the pin's one walk fails (EOPNOTSUPP), iterfs's parts do not
            pin_reads = subprocess.run(["cat", str(pin)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if pin_reads.returncode == 0:
                t_ours, t_pin, t_kernel = rounds(ours, shell(f"cat {pin}"), shell(view))
            else:
                (t_ours, t_kernel), t_pin = rounds(ours, shell(view)), "fails (EOPNOTSUPP)"
            rows.append((target, lines, t_ours, t_pin, t_kernel, view, kind))
            for extra_target, extra_view, extra_kind in EXTRA:
                if extra_target == target and shutil.which(extra_view.split()[0]):
                    t_ours, t_extra = rounds(ours, shell(extra_view))
                    rows.append((target, lines, t_ours, "", t_extra, extra_view, extra_kind))
        finally:
            pin.unlink()
    return rows


def table(rows: list[tuple]) -> list[str]:
    """The Markdown table: medians, and the two ratios with their targets."""
    med = statistics.median
    out = ["| target | lines | iterfs | pinned | kernel's view | iterfs / pinned (≤ 1.15×) | "
           "iterfs vs kernel (≤ 1.0×; a walk: ≥ 5× faster) |",
           "|---|---:|---:|---:|---|---:|---:|"]
    for target, lines, t_ours, t_pin, t_kernel, view, kind in rows:
        fuse = f"{ratio(t_ours, t_pin):.2f}×" if isinstance(t_pin, list) else ""
        if kind == WALK:
            versus = f"{ratio(t_kernel, t_ours):.1f}× faster"
        else:
            versus = f"{ratio(t_ours, t_kernel):.2f}×"
        pinned = f"{med(t_pin) * 1e3:.1f} ms" if isinstance(t_pin, list) else t_pin
        out.append(f"| {target} | {lines} | {med(t_ours) * 1e3:.1f} ms | {pinned} | "
                   f"`{view}` {med(t_kernel) * 1e3:.1f} ms | {fuse} | {versus} |")
    return out
