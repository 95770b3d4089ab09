"""bpffs pins: the pinned/ mirror, and iterfs pin / unpin, against bpftool and the kernel's views."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_iterfs
from helpers import bpftool_json, make_map, proc_fds, start_mount, task_file_lines

ROOT = Path(__file__).resolve().parent.parent
OBJECTS = ROOT / "iterfs" / "bpf"
pytestmark = pytest.mark.fuse


@pytest.fixture
def mirrored(tmp_path, bpffs, fuse_host):
    """A mount mirroring only the test's own bpffs."""
    mnt = start_mount(tmp_path, ["--bpffs", str(bpffs)])
    yield mnt, mnt / "pinned" / str(bpffs).lstrip("/")
    mnt.stop()


def bpftool_pin(obj: str, path: Path) -> None:
    subprocess.run(["bpftool", "iter", "pin", str(OBJECTS / obj), str(path)], check=True, capture_output=True)


def test_a_bpftool_pin_is_mirrored_and_reads_like_the_pin(mirrored, bpffs):
    mnt, mirror = mirrored
    (bpffs / "sub" / "deeper").mkdir(parents=True)
    bpftool_pin("ipv6_route.bpf.o", bpffs / "sub" / "deeper" / "routes")  # a walk that holds still
    make_map(bpffs / "sub")  # a map pinned beside it
    assert os.listdir(mirror) == ["sub"]
    assert os.listdir(mirror / "sub") == ["deeper"]  # the map is left out
    assert os.listdir(mirror / "sub" / "deeper") == ["routes"]
    assert (mirror / "sub" / "deeper" / "routes").read_text() == (bpffs / "sub" / "deeper" / "routes").read_text()
    assert (mirror / "sub" / "deeper" / "routes").read_text() == Path("/proc/net/ipv6_route").read_text()


def test_mirror_follows_bpffs_live(mirrored, bpffs):
    mnt, mirror = mirrored
    assert os.listdir(mirror) == []
    bpftool_pin("ksym.bpf.o", bpffs / "syms")
    assert os.listdir(mirror) == ["syms"]
    (bpffs / "syms").unlink()
    assert os.listdir(mirror) == []
    with pytest.raises(OSError) as info:
        (mirror / "syms").read_bytes()
    assert info.value.errno == errno.ENOENT


def test_a_mirrored_pin_shows_its_link_as_xattrs(mirrored, bpffs):
    mnt, mirror = mirrored
    bpftool_pin("task.bpf.o", bpffs / "tasks")
    link = bpftool_json("link", "show", "pinned", str(bpffs / "tasks"))
    attrs = {name: os.getxattr(mirror / "tasks", name).decode() for name in os.listxattr(mirror / "tasks")}
    assert attrs["user.iterfs.target"] == "task"
    assert int(attrs["user.iterfs.link_id"]) == link["id"]
    assert int(attrs["user.iterfs.prog_id"]) == link["prog_id"]


def test_tree_files_show_their_target_and_parameters_as_xattrs(mirrored):
    mnt, _ = mirrored
    path = mnt / f"task_vma/pid={os.getpid()}"
    assert {n: os.getxattr(path, n) for n in os.listxattr(path)} == {
        "user.iterfs.target": b"task_vma", "user.iterfs.pid": str(os.getpid()).encode()}


def test_iterfs_pin_sets_parameters_bpftool_cannot_and_outlives_iterfs(bpffs, child, fuse_host):
    pin = bpffs / "child-fds"
    done = run_iterfs("pin", f"task_file/pid={child.pid}", str(pin))
    assert done.returncode == 0, done.stderr
    # iterfs pin has exited: the pin holds link and program on its own
    rows = task_file_lines(pin.read_text())
    assert {r["fd"]: r["path"] for r in rows} == proc_fds(child.pid)
    link = bpftool_json("link", "show", "pinned", str(pin))
    assert link["type"] == "iter" and link.get("target_name") == "task_file"
    assert run_iterfs("unpin", str(pin)).returncode == 0
    assert not pin.exists()


def test_pin_and_unpin_refuse_what_they_should(bpffs, tmp_path, fuse_host):
    done = run_iterfs("pin", "task/all", str(tmp_path / "not-bpffs"))
    assert done.returncode == 1 and "not in a bpf filesystem" in done.stderr
    done = run_iterfs("pin", "task/pid=4294967295", str(bpffs / "x"))
    assert done.returncode == 1 and "no process 4294967295" in done.stderr
    make_map(bpffs)
    map_pin = next(bpffs.iterdir())
    done = run_iterfs("unpin", str(map_pin))
    assert done.returncode == 1 and "not a pinned iterator link" in done.stderr
    assert map_pin.exists()


def test_the_mirror_does_not_enter_other_mounts_or_accept_a_non_bpffs(bpffs, tmp_path, fuse_host):
    # this very mount inside the mirrored bpffs: a lookup there would wait for its own daemon
    (bpffs / "inner").mkdir()
    mnt = start_mount(tmp_path, ["--bpffs", str(bpffs)])
    try:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(bpffs / "inner")], check=True)
        try:
            mirror = mnt / "pinned" / str(bpffs).lstrip("/")
            assert "inner" not in os.listdir(mirror)
            with pytest.raises(OSError) as info:
                os.listdir(mirror / "inner")
            assert info.value.errno == errno.ENOENT
        finally:
            subprocess.run(["umount", str(bpffs / "inner")], check=True)
    finally:
        mnt.stop()
    done = run_iterfs("mount", str(tmp_path / "mnt"), "--bpffs", str(tmp_path))
    assert done.returncode == 1 and "not in a bpf filesystem" in done.stderr


def test_unpin_refuses_a_symlink_to_a_pin(bpffs, tmp_path, fuse_host):
    bpftool_pin("ksym.bpf.o", bpffs / "syms")
    (tmp_path / "link").symlink_to(bpffs / "syms")
    done = run_iterfs("unpin", str(tmp_path / "link"))
    assert done.returncode == 1 and (bpffs / "syms").exists() and (tmp_path / "link").is_symlink()
    assert run_iterfs("unpin", str(bpffs / "syms")).returncode == 0


def test_mounts_at_paths_with_unusual_characters(tmp_path, fuse_host):
    place = tmp_path / "é d\tx"
    place.mkdir()
    mnt = start_mount(place)
    try:
        assert mnt.read(f"task/pid={os.getpid()}")
        assert run_iterfs("status", str(mnt.path)).returncode == 0
        assert run_iterfs("mount", str(mnt.path)).returncode == 1  # already mounted, recognised
    finally:
        assert run_iterfs("umount", str(mnt.path)).returncode == 0
        mnt.stop()
