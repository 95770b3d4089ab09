"""The kernel's read rules: EAGAIN is retried inside the daemon, E2BIG reaches the reader."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from helpers import bundled_copy, compile_bpf, proc_threads, start_mount

pytestmark = pytest.mark.fuse

# Asks the kernel to retry every other call (return 1 -> read() gives EAGAIN).
# A test program only: the counter is shared between runs on purpose.
RETRYING = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
__u64 calls;

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	if (__sync_fetch_and_add(&calls, 1) % 2 == 0)
		return 1;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d %d\n", task->tgid, task->pid);
	return 0;
}
"""

# One object's output (64 KiB) is larger than the kernel's read buffer (32 KiB).
TOO_BIG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	if (!ctx->task)
		return 0;
	for (int i = 0; i < 1024; i++)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%062d\n", i);
	return 0;
}
"""


def mount_with_task_program(tmp_path: Path, source: str):
    programs = bundled_copy(tmp_path)
    compile_bpf(source, programs / "task.bpf.o")
    return start_mount(tmp_path, ["--bpf-dir", str(programs)])


def test_eagain_is_retried_and_the_walk_completes(tmp_path, fuse_host, child):
    child.start_threads(["one", "two"])
    mnt = mount_with_task_program(tmp_path, RETRYING)
    try:
        rows = {tuple(map(int, line.split())) for line in mnt.read(f"task/pid={child.pid}").splitlines()}
        assert rows == {(child.pid, tid) for tid in proc_threads(child.pid)}
    finally:
        mnt.stop()


def test_e2big_reaches_the_reader_with_a_log_line(tmp_path, fuse_host):
    mnt = mount_with_task_program(tmp_path, TOO_BIG)
    try:
        with pytest.raises(OSError) as info:
            (mnt / f"task/pid={os.getpid()}").read_bytes()
        assert info.value.errno == errno.E2BIG
        assert "one object's output is larger than the kernel's read buffer" in mnt.log.read_text()
        assert mnt.read(f"task_file/pid={os.getpid()}")  # the others still read
    finally:
        mnt.stop()
