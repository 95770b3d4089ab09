"""task, task_file, task_vma through a real mount, against /proc's view of processes the test made."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import time

import pytest

from helpers import (
    maps_part,
    proc_fds,
    proc_state,
    proc_status,
    proc_threads,
    stopped,
    task_file_lines,
    task_lines,
    without_gate_vma,
)

pytestmark = pytest.mark.fuse


def test_root_lists_the_task_targets(mount):
    assert {"task", "task_file", "task_vma"} <= set(os.listdir(mount.path))


@pytest.mark.parametrize("target", ["task", "task_file", "task_vma"])
def test_each_target_lists_readme_all_and_live_processes(mount, child, target):
    names = os.listdir(mount / target)
    assert "README" in names and "all" in names
    assert f"pid={child.pid}" in names and f"pid={os.getpid()}" in names
    readme = mount.read(f"{target}/README")
    assert readme.startswith(f"{target}:") and "pid=N" in readme and "tid=N" in readme


def test_task_file_lists_exactly_the_fds_of_proc(mount, child, tmp_path):
    extra = tmp_path / "name with spaces"
    extra.write_text("x")
    child.open_file(extra)
    truth = proc_fds(child.pid)
    rows = task_file_lines(mount.read(f"task_file/pid={child.pid}"))
    assert {r["fd"]: r["path"] for r in rows} == truth
    assert len(rows) == len(truth)  # no fd twice
    assert all(r["tgid"] == child.pid and r["pid"] == child.pid for r in rows)
    kinds = {path.split(":")[0] for path in truth.values() if ":[" in path}
    assert {"pipe", "socket", "anon_inode"} <= kinds
    assert any(path.endswith(" (deleted)") for path in truth.values())
    assert str(extra) in truth.values()


def test_task_file_f_op_is_shared_by_files_of_one_kind(mount, child):
    rows = task_file_lines(mount.read(f"task_file/pid={child.pid}"))
    by_kind = {}
    for r in rows:
        kind = r["path"].split(":[")[0] if ":[" in r["path"] else "path"
        by_kind.setdefault(kind, set()).add(r["f_op"])
    assert len(by_kind["pipe"]) == 1 and by_kind["pipe"].isdisjoint(by_kind["socket"])
    assert all(f_op > 0 for r in rows for f_op in [r["f_op"]])


def test_task_vma_is_proc_maps_byte_for_byte(mount, child):
    os.kill(child.pid, signal.SIGSTOP)  # a stopped process's mappings hold still
    try:
        ours = mount.read(f"task_vma/pid={child.pid}")
        maps = without_gate_vma(open(f"/proc/{child.pid}/maps").read())
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert all(line.startswith(f"{child.pid} ") for line in ours.splitlines())
    assert maps_part(ours) == maps
    for name in ("[heap]", "[stack]", "[vdso]", "iterfs-child-"):
        assert name in ours


def test_task_vma_names_files_as_proc_maps_does_across_mounts_and_pseudo_files(mount, child, tmp_path):
    """The program walks d_path() itself (bpf/path.bpf.h): each of its turns against the kernel's."""
    top = tmp_path / "a mount"
    top.mkdir()
    mounts = []

    def mounted(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)
        mounts.append(args[-1])

    try:
        mounted("-t", "tmpfs", "iterfs-test", str(top))
        for d in ("dir with spaces/b", "lower", "upper", "work", "overlay", "moved/sub", "bound"):
            (top / d).mkdir(parents=True)
        kept, gone = top / "dir with spaces" / "b" / "kept file", top / "gone"
        (top / "lower" / "layered").write_bytes(b"x" * mmap.PAGESIZE)
        (top / "moved" / "sub" / "out").write_bytes(b"x" * mmap.PAGESIZE)
        mounted("-t", "overlay", "iterfs-test", "-o", f"lowerdir={top}/lower,upperdir={top}/upper,workdir={top}/work",
                str(top / "overlay"))  # a mapping of a file of the layer below, named by the overlay's path
        mounted("--bind", str(top / "moved" / "sub"), str(top / "bound"))
        for path in (kept, gone):
            path.write_bytes(b"x" * mmap.PAGESIZE)
        for path in (kept, gone, top / "overlay" / "layered", top / "bound" / "out"):
            child.command(f"map {path}")
        gone.unlink()
        (top / "moved" / "sub" / "out").rename(top / "moved" / "out")  # now outside what is bound: "/"
        child.command("memfd iterfs-memfd")
        child.command("perf")
        child.add_mappings(1)  # shared anonymous memory is a file of shmem's: /dev/zero (deleted)
        with stopped(child):
            ours = mount.read(f"task_vma/pid={child.pid}")
            maps = without_gate_vma(open(f"/proc/{child.pid}/maps").read())
        names = [f"{kept}", f"{gone} (deleted)", f"{top}/overlay/layered", "/", "/memfd:iterfs-memfd (deleted)",
                 "anon_inode:[perf_event]", "/dev/zero (deleted)"]
        assert all(any(line.endswith(" " + name) for line in maps.splitlines()) for name in names), maps
        assert maps_part(ours) == maps
    finally:
        child.proc.kill()  # its mappings keep the mounts busy
        child.proc.wait()
        for path in reversed(mounts):
            subprocess.run(["umount", path], check=True)


def test_task_lists_exactly_the_threads_of_proc(mount, child):
    child.start_threads(["alpha", "beta gamma"])
    rows = task_lines(mount.read(f"task/pid={child.pid}"))
    assert {r["pid"]: r["comm"] for r in rows} == proc_threads(child.pid)
    status = proc_status(child.pid)
    for r in rows:
        assert r["tgid"] == child.pid
        assert r["ppid"] == int(status["PPid"]) == os.getpid()
        assert r["uid"] == int(status["Uid"].split()[0])


def test_task_state_letters_match_proc_stat(mount, child):
    tids = child.start_threads(["stopme"])
    os.kill(child.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while proc_state(tids[0]) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        rows = task_lines(mount.read(f"task/pid={child.pid}"))
        assert {r["pid"]: r["state"] for r in rows} == {tid: proc_state(tid) for tid in proc_threads(child.pid)}
        assert {r["state"] for r in rows} == {"T"}
    finally:
        os.kill(child.pid, signal.SIGCONT)


def test_tid_gives_that_thread_only(mount, child):
    tid = child.start_threads(["only-me"])[0]
    rows = task_lines(mount.read(f"task/tid={tid}"))
    assert [(r["tgid"], r["pid"], r["comm"]) for r in rows] == [(child.pid, tid, "only-me")]
    assert {r["fd"] for r in task_file_lines(mount.read(f"task_file/tid={tid}"))} == set(proc_fds(child.pid))


def test_all_contains_the_tests_own_processes(mount, child):
    child.start_threads(["in-all"])
    rows = task_lines(mount.read("task/all"))
    seen = {(r["tgid"], r["pid"]) for r in rows}
    assert {(child.pid, tid) for tid in proc_threads(child.pid)} <= seen
    assert (os.getpid(), os.getpid()) in seen
    assert len(seen) == len(rows)
    files = task_file_lines(mount.read("task_file/all"))
    assert {r["fd"]: r["path"] for r in files if r["tgid"] == child.pid} == proc_fds(child.pid)
    vmas = mount.read("task_vma/all")
    assert sum(1 for line in vmas.splitlines() if line.startswith(f"{child.pid} ")) >= 10
