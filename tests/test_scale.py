"""Complete at scale: every socket and cgroup exactly once, however many, against the kernel's views.

The kernel walks these in batches and resumes between read() calls; each resume is a
chance to lose or repeat objects (see each target's README). The tests make more objects
than one read holds, many times over, and count each one they made.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from iterfs import probes

pytestmark = pytest.mark.fuse

HOLDER = Path(__file__).with_name("socket_holder.py")


class Held:
    """Sockets of one kind, held by as many child processes as RLIMIT_NOFILE needs."""

    def __init__(self, kind: str, count: int):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        per = max(4, min(count, hard - 64) // 4 * 4)
        self.procs = []
        self.inodes: set[int] = set()
        try:
            for start in range(0, count, per):
                proc = subprocess.Popen([sys.executable, str(HOLDER), kind, str(min(per, count - start))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.procs.append(proc)
                self.inodes |= {int(i) for i in proc.stdout.readline().split()}
        except BaseException:
            self.close()
            raise
        assert len(self.inodes) >= count

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.wait()

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def inodes(text: str, column: int) -> Counter:
    """How often each inode (column counted from 0) is listed; header lines are skipped."""
    return Counter(int(f[column]) for f in (line.split() for line in text.splitlines())
                   if len(f) > column and f[column].isdigit())


def assert_each_once(listed: Counter, made: set[int], where: str) -> None:
    missing = sorted(i for i in made if listed[i] == 0)
    twice = sorted(i for i in made if listed[i] > 1)
    assert not missing and not twice, \
        f"{where}: {len(missing)} of {len(made)} sockets missing (e.g. {missing[:3]}), {len(twice)} listed twice"


def kernel_view(*views: str) -> str:
    return "".join(Path(view).read_text() for view in views)


@pytest.mark.parametrize("target, count, views, column", [
    ("unix", 16_000, ["/proc/net/unix"], 6),
    ("tcp", 20_000, ["/proc/net/tcp", "/proc/net/tcp6"], 9),
    ("udp", 20_000, ["/proc/net/udp", "/proc/net/udp6"], 9),
])
def test_every_socket_exactly_once(mount, target, count, views, column):
    with Held(target, count) as held:
        # the ground truth first: the kernel's own view lists each of them once
        assert_each_once(inodes(kernel_view(*views), column), held.inodes, " + ".join(views))
        assert_each_once(inodes(mount.read(f"{target}/all"), column), held.inodes, f"{target}/all")
        # a reader that reads little at a time gets the same (the kernel reads on in its own buffer)
        with open(mount / f"{target}/all", "rb", buffering=0) as f:
            text = b"".join(iter(lambda: f.read(1000), b"")).decode()
        assert_each_once(inodes(text, column), held.inodes, f"{target}/all in reads of 1000 bytes")


@pytest.fixture
def many_cgroups():
    """3,000 cgroups in a tree with wide and deep parts; yields (top, the directories made)."""
    top = Path(probes.cgroup2_root()) / f"iterfs-scale-{os.getpid()}"
    made = [top]
    top.mkdir()
    try:
        for i in range(3000):
            # a third each: under top, under the previous one (deep), under one half way back
            parent = [top, made[-1], made[len(made) // 2]][i % 3]
            made.append(parent / f"c{i}")
            made[-1].mkdir()
        yield top, made
    finally:
        for path in reversed(made):
            if path.exists():
                path.rmdir()


def cgroup_rows(text: str) -> list[tuple[int, str]]:
    lines = text.splitlines()
    assert lines[0] == "id level path"
    return [(int(i), path) for i, _, path in (line.split(" ", 2) for line in lines[1:])]


def assert_parents_first(rows: list[tuple[int, str]], top: str) -> None:
    """Depth-first pre-order: each cgroup right after its parent's subtree began, and a subtree's
    cgroups together (once the walk has left a cgroup's subtree, it never comes back to it)."""
    ancestors: list[str] = []  # the path from top down to the cgroup before
    for _, path in rows:
        parent = os.path.dirname(path)
        while ancestors and ancestors[-1] != parent:
            ancestors.pop()
        assert ancestors or path == top, f"{path}: not right after its parent's subtree began"
        ancestors.append(path)


def test_cgroup_walks_of_any_size_list_every_cgroup_once(mount, many_cgroups):
    top, made = many_cgroups
    root = probes.cgroup2_root()
    find = subprocess.run(["find", root, "-type", "d"], capture_output=True, text=True, check=True).stdout
    truth = {os.stat(path).st_ino: "/" + os.path.relpath(path, root) for path in find.splitlines()}
    truth[os.stat(root).st_ino] = "/"

    rows = cgroup_rows(mount.read("cgroup/all"))
    assert len(rows) == len(truth) and dict(rows) == truth  # every cgroup, once, at its path
    assert_parents_first(rows, "/")

    top_id, top_path = os.stat(top).st_ino, "/" + os.path.relpath(top, root)
    below = cgroup_rows(mount.read(f"cgroup/id={top_id}"))
    assert [i for i, _ in below] == [i for i, p in rows if p == top_path or p.startswith(top_path + "/")]
    post = cgroup_rows(mount.read(f"cgroup/id={top_id},order=descendants_post"))
    assert sorted(post) == sorted(below) and post[-1] == (top_id, top_path)
    position = {i: n for n, (i, _) in enumerate(post)}
    assert all(position[os.stat(p).st_ino] > position[os.stat(c).st_ino] for c in made[1:] for p in [c.parent])

    # siblings in the kernel's order: the order they were made in, which is the order of their ids
    children: dict[str, list[int]] = {}
    for cgroup, path in rows:
        children.setdefault(os.path.dirname(path), []).append(cgroup)
    assert all(ids == sorted(ids) for ids in children.values())

    # the kernel's own walk, pinned: its one read is where iterfs's output begins, byte for byte,
    # and its next read fails, the limit that iterfs's walk in parts is made for
    pin = Path("/sys/fs/bpf") / f"iterfs-scale-{os.getpid()}"
    subprocess.run([sys.executable, "-m", "iterfs", "pin", "cgroup/all", str(pin)], check=True)
    try:
        fd = os.open(pin, os.O_RDONLY)
        try:
            first = os.read(fd, 1 << 20)
            with pytest.raises(OSError) as info:
                os.read(fd, 1 << 20)
            assert info.value.errno == errno.EOPNOTSUPP
        finally:
            os.close(fd)
        ours = (mount / "cgroup/all").read_bytes()
        assert len(first) > 16 * 1024 and ours.startswith(first)
    finally:
        pin.unlink()
