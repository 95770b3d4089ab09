"""cgroup, kmem_cache, dmabuf through a real mount, against the kernel's own views."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from iterfs import probes

pytestmark = pytest.mark.fuse


def cgroup_rows(text: str) -> list[tuple[int, int, str]]:
    lines = text.splitlines()
    assert lines[0] == "id level path"
    return [(int(i), int(level), path) for i, level, path in (line.split(" ", 2) for line in lines[1:])]


@pytest.fixture
def cgroup_tree():
    """root/P, P/a, P/a/g, P/b (created in that order); yields {name: (id, level, path)}."""
    root = Path(probes.cgroup2_root())
    top = root / f"iterfs test {uuid.uuid4().hex[:6]}"  # a space: paths are the last column
    made = [top, top / "a", top / "a" / "g", top / "b"]
    for path in made:
        path.mkdir()
    root_level = 0  # the daemon runs in the root cgroup namespace
    nodes = {name: (os.stat(path).st_ino, root_level + len(path.relative_to(root).parts),
                    "/" + str(path.relative_to(root)))
             for name, path in zip(["P", "a", "g", "b"], made)}
    yield nodes
    for path in reversed(made):
        path.rmdir()


@pytest.mark.parametrize("order, expected", [
    ("self_only", ["P"]),
    ("descendants_pre", ["P", "a", "g", "b"]),
    ("descendants_post", ["g", "a", "b", "P"]),
])
def test_cgroup_orders_below_a_cgroup(mount, cgroup_tree, order, expected):
    top_id = cgroup_tree["P"][0]
    rows = cgroup_rows(mount.read(f"cgroup/id={top_id},order={order}"))
    assert rows == [cgroup_tree[name] for name in expected]


def test_cgroup_ancestors_up_reaches_the_root(mount, cgroup_tree):
    rows = cgroup_rows(mount.read(f"cgroup/id={cgroup_tree['g'][0]},order=ancestors_up"))
    assert rows[:3] == [cgroup_tree["g"], cgroup_tree["a"], cgroup_tree["P"]]
    assert rows[-1] == (os.stat(probes.cgroup2_root()).st_ino, 0, "/")


def test_cgroup_all_and_listing(mount, cgroup_tree):
    rows = cgroup_rows(mount.read("cgroup/all"))
    assert rows[0][1:] == (0, "/")
    assert set(cgroup_tree.values()) <= set(rows)
    assert f"id={cgroup_tree['g'][0]}" in os.listdir(mount / "cgroup")
    default = cgroup_rows(mount.read(f"cgroup/id={cgroup_tree['P'][0]}"))
    assert default == [cgroup_tree[name] for name in ["P", "a", "g", "b"]]  # descendants_pre


def test_cgroup_that_does_not_exist_is_enoent(mount):
    with pytest.raises(OSError) as info:
        (mount / "cgroup/id=18446744073709551615").read_bytes()
    assert info.value.errno == errno.ENOENT


def slabinfo() -> dict[str, list[int]]:
    rows = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        fields = line.split(":")[0].split()
        rows[fields[0]] = [int(x) for x in fields[1:6]]
    return rows


def test_kmem_cache_matches_slabinfo(mount):
    text = mount.read("kmem_cache/all")
    truth = slabinfo()
    lines = text.splitlines()
    assert lines[0] == Path("/proc/slabinfo").read_text().splitlines()[1].split(" : ")[0]
    ours = {}
    for line in lines[1:]:
        name, *numbers = line.split()
        ours[name] = [int(x) for x in numbers]
    assert set(ours) == set(truth)
    for name, (active, num, objsize, perslab, pages) in ours.items():
        assert [objsize, perslab, pages] == truth[name][2:], name  # the cache's geometry: fixed
        assert 0 <= active <= num
    # object counts move while the two views are read; nearly every cache holds still meanwhile
    same = sum(ours[name][:2] == truth[name][:2] for name in ours)
    assert same >= 0.9 * len(ours), f"only {same} of {len(ours)} caches agree on object counts"
    # and every line is slabinfo's, byte for byte up to its tunables
    slab_lines = {line.split(" : ")[0] for line in Path("/proc/slabinfo").read_text().splitlines()[2:]}
    assert sum(line in slab_lines for line in lines[1:]) >= 0.9 * len(ours)


def test_served_targets_are_exactly_the_kernels(mount):
    from iterfs.catalog import BUNDLED_DIR
    from iterfs.objects import read_object
    from iterfs.discovery import kernel_targets

    bundled = {p.target for path in BUNDLED_DIR.glob("*.bpf.o") for p in read_object(path).programs}
    kernel = kernel_targets()
    # with the generic program among the bundled, every target of the kernel is served
    assert "generic" in bundled
    assert set(os.listdir(mount.path)) - {"pinned", ".iterfs"} == kernel
    absent = sorted(bundled - kernel - {"generic"})
    print(f"targets this kernel lacks, absent from the tree: {absent or 'none'}")


def test_dmabuf_reads(mount):
    from iterfs.discovery import kernel_targets

    if "dmabuf" not in kernel_targets():
        assert "dmabuf" not in os.listdir(mount.path)
        print("this kernel has no dmabuf iterator (Linux 6.16): the target is absent, as it should be")
        return
    text = mount.read("dmabuf/all")
    bufinfo = Path("/sys/kernel/debug/dma_buf/bufinfo")
    if bufinfo.exists():
        buffers = [line for line in bufinfo.read_text().splitlines()[2:] if line[:1].isdigit()]
        ours = text.splitlines()[1:] if text else []
        assert sorted(line.replace("\t", " ") for line in buffers) == sorted(ours)
    else:
        assert text == "" or text.startswith("size ")
