"""Bad names and broken programs: a clear errno and a log line, and everything else keeps working."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from helpers import REJECTED_TASK_VMA, bundled_copy, compile_bpf, start_mount, task_lines

pytestmark = pytest.mark.fuse


def _errno_of(path: Path) -> int:
    with pytest.raises(OSError) as info:
        path.read_bytes()
    return info.value.errno


def test_a_process_that_has_gone_is_enoent_with_a_reason(mount, child):
    gone = child.pid
    child.proc.kill()
    child.proc.wait()
    for target in ("task", "task_file", "task_vma"):
        assert _errno_of(mount / f"{target}/pid={gone}") == errno.ENOENT
        assert _errno_of(mount / f"{target}/tid={gone}") == errno.ENOENT
    assert f"no process {gone}" in mount.log.read_text()
    assert f"no thread {gone}" in mount.log.read_text()


def test_a_thread_is_not_a_process(mount, child):
    tid = child.start_threads(["not-a-process"])[0]
    assert _errno_of(mount / f"task/pid={tid}") == errno.ENOENT
    assert f"{tid} is a thread of process {child.pid}" in mount.log.read_text()
    assert task_lines(mount.read(f"task/tid={tid}"))[0]["pid"] == tid


@pytest.mark.parametrize("name", ["pid=abc", "pid=0", "pid=007", "pid=", "pid=1,tid=1", "uid=0", "nonsense", "all,pid=1"])
def test_malformed_and_unknown_names_are_enoent(mount, name):
    assert _errno_of(mount / f"task_vma/{name}") == errno.ENOENT
    assert not os.path.exists(mount / f"task_vma/{name}")


def test_unknown_target_is_enoent(mount):
    assert _errno_of(mount / "no_such_target/all") == errno.ENOENT
    assert "no target 'no_such_target'" in mount.log.read_text()


def test_files_cannot_be_opened_for_writing(mount):
    # the mount is read-only: the kernel refuses before asking the daemon
    for name in ("task/all", "task/README", "task/new"):
        with pytest.raises(OSError) as info:
            open(mount / name, "wb")
        assert info.value.errno == errno.EROFS


def test_a_rejected_program_gives_eio_and_the_others_still_read(tmp_path, fuse_host):
    programs = bundled_copy(tmp_path)
    compile_bpf(REJECTED_TASK_VMA, programs / "task_vma.bpf.o")
    mnt = start_mount(tmp_path, ["--bpf-dir", str(programs)])
    try:
        assert "task_vma" in os.listdir(mnt.path)
        assert _errno_of(mnt / "task_vma/all") == errno.EIO
        assert _errno_of(mnt / f"task_vma/pid={os.getpid()}") == errno.EIO  # failure is kept, not retried
        assert task_lines(mnt.read(f"task/pid={os.getpid()}"))[0]["tgid"] == os.getpid()
        assert mnt.read(f"task_file/pid={os.getpid()}")
        log = mnt.log.read_text()
        assert "task_vma: program dump_task_vma" in log and "failed to load" in log
        assert "BEGIN PROG LOAD LOG" in log and "invalid mem access" in log  # the verifier's own words
    finally:
        mnt.stop()


def test_a_directory_without_objects_refuses_to_mount(tmp_path, fuse_host):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="no BPF objects"):
        start_mount(tmp_path, ["--bpf-dir", str(tmp_path / "empty")])
