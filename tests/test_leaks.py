"""Every link, iterator fd and program the daemon makes is released."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers import (REFUSING_ITERFS, REJECTED_TASK_VMA, bundled_copy, compile_bpf, iter_link_ids, iter_link_ids_of,
                     iter_links_of, make_map, refusing_env,
                     rss_kb, settled, start_mount)

pytestmark = pytest.mark.fuse


def test_opens_hold_one_link_each_and_closes_release_them(mount):
    path = mount / f"task_file/pid={os.getpid()}"
    path.read_bytes()  # program loaded, caches warm
    links = settled(daemon_links := lambda: iter_links_of(mount.pid), 0)  # once that open's release has come
    fds = mount.fd_count()
    held = [open(path, "rb") for _ in range(10)]
    try:
        # the measurement sees what an open holds: a link and an iterator fd
        assert daemon_links() == links + 10
        assert mount.fd_count() == fds + 20
    finally:
        for f in held:
            f.close()
    assert settled(daemon_links, links) == links
    assert settled(mount.fd_count, fds) == fds


def test_two_thousand_cycles_leak_nothing(mount):
    path = mount / f"task_file/pid={os.getpid()}"
    path.read_bytes()
    links = settled(daemon_links := lambda: iter_links_of(mount.pid), 0)
    fds = mount.fd_count()
    for _ in range(2000):
        with open(path, "rb") as f:
            assert f.read()
    for _ in range(100):  # half-read and unread opens too
        with open(path, "rb") as f:
            f.read(10)
        open(path, "rb").close()
    assert settled(mount.fd_count, fds) == fds
    assert settled(daemon_links, links) == links


def test_unmount_releases_links_and_programs(tmp_path, fuse_host):
    mnt = start_mount(tmp_path)
    try:
        held = open(mnt / "task/all", "rb")
        links = iter_link_ids_of(mnt.pid)
        assert len(links) == 1 and links <= iter_link_ids()
        progs = _program_ids(mnt.pid)
        assert progs and all(_prog_exists(p) for p in progs), "the daemon should hold the loaded program"
    finally:
        mnt.stop()
    held.close()
    assert mnt.wait_exit()
    # the kernel frees an exited process's links a moment after it is gone
    assert settled(lambda: links & iter_link_ids(), set()) == set()
    assert not any(_prog_exists(p) for p in progs)


def _program_ids(pid: int) -> list[int]:
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog":
            for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                if line.startswith("prog_id:"):
                    ids.append(int(line.split()[1]))
    return ids


def _prog_exists(prog_id: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True).returncode == 0


def _growth_kb(mnt, path, opens: int = 3000) -> int:
    """How much the daemon's RSS grows over opens of path, after as many to warm up."""
    def cycle():
        try:
            with open(path, "rb") as f:
                f.read()
        except OSError:
            pass
    for _ in range(opens):
        cycle()
    before = rss_kb(mnt.pid)
    for _ in range(opens):
        cycle()
    return rss_kb(mnt.pid) - before


def test_thousands_of_opens_keep_the_daemon_flat(tmp_path, fuse_host, bpffs):
    """Good opens, opens of a program that failed to load, of a target the kernel refuses."""
    programs = bundled_copy(tmp_path)
    compile_bpf(REJECTED_TASK_VMA, programs / "task_vma.bpf.o")
    mnt = start_mount(tmp_path, ["--bpf-dir", str(programs)], command=REFUSING_ITERFS,
                      env=refusing_env("sockmap"))
    try:
        sockmap = make_map(bpffs, "sockmap", 4, 8, 4)
        for name in (f"task_file/pid={os.getpid()}", "task_vma/all", f"sockmap/map_id={sockmap}"):
            grown = _growth_kb(mnt, mnt / name)
            assert grown < 1024, f"{name}: the daemon grew by {grown} KB over 3000 opens"
        log = mnt.log.read_text()
        assert log.count("its files give EIO") == 1  # one load, one line, however many opens
    finally:
        mnt.stop()
