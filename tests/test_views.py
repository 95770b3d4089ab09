"""Users' own objects (--objects DIR): views, hot replacement, globals as parameters."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import Child, compile_bpf, proc_fds, start_mount

pytestmark = pytest.mark.fuse

# The seed document's "Without Parameters" program (bpf_iter_task_ex), as the document shows it.
SEED = r"""
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

int target_pid = 0;

SEC("iter/task_file")
int dump_task_file(struct bpf_iter__task_file *ctx)
{
      struct seq_file *seq = ctx->meta->seq;
      struct task_struct *task = ctx->task;
      struct file *file = ctx->file;
      __u32 fd = ctx->fd;
      if (task == NULL || file == NULL)
              return 0;
      if (ctx->meta->seq_num == 0) {
              BPF_SEQ_PRINTF(seq, "    tgid      pid       fd      file\n");
      }
      if (task->tgid != target_pid) /* Check task->pid instead to check thread IDs */
              return 0;
      BPF_SEQ_PRINTF(seq, "%8d %8d %8d %lx\n", task->tgid, task->pid, fd,
                      (long)file->f_op);
      return 0;
}
"""

# Two programs in one object, a char array and a const global, and a version tag to tell objects apart.
TWO = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
char tag[8] = "none";
volatile const int step = 1;

SEC("iter/task")
int tagged_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task && task->tgid == task->pid)
		BPF_SEQ_PRINTF(ctx->meta->seq, "VERSION %s %d %d\n", tag, step, task->pid);
	return 0;
}

SEC("iter/task")
int thread_count(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		BPF_SEQ_PRINTF(ctx->meta->seq, "VERSION %d\n", task->pid);
	return 0;
}
"""

REJECTED = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";

SEC("iter/task")
int no_null_check(struct bpf_iter__task *ctx)
{
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d\n", ctx->task->pid);
	return 0;
}
"""


def build(source: str, out: Path, version: str = "v1") -> None:
    compile_bpf(source.replace("VERSION", version), out)


@pytest.fixture
def objects(tmp_path):
    d = tmp_path / "objects"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def view_mount(tmp_path, objects, fuse_host):
    mnt = start_mount(tmp_path, ["--objects", str(objects), "--debug"])
    yield mnt
    mnt.stop()


def seed_lines(text: str) -> list[list[int]]:
    lines = text.splitlines()
    assert lines and lines[0].split() == ["tgid", "pid", "fd", "file"]
    return [[int(x) for x in line.split()[:3]] for line in lines[1:]]


def test_the_seed_documents_program_filters_by_its_global(tmp_path, objects, view_mount, child):
    build(SEED, objects / "bpf_iter_task_ex.bpf.o")
    view = view_mount / "task_file" / "dump_task_file"
    assert {"README", "all", f"pid={child.pid}"} <= set(os.listdir(view))
    readme = (view / "README").read_text()
    assert "target_pid" in readme and "int" in readme and ".bss" in readme
    rows = seed_lines((view / f"target_pid={child.pid}").read_text())
    assert {r[2] for r in rows} == set(proc_fds(child.pid)) and {r[0] for r in rows} == {child.pid}
    both = seed_lines((view / f"pid={child.pid},target_pid={child.pid}").read_text())  # with link_info too
    assert sorted(both) == sorted(rows)
    assert seed_lines((view / "all").read_text()) == []  # target_pid 0: no process


def test_concurrent_opens_with_different_values_see_only_their_own(tmp_path, objects, view_mount):
    build(SEED, objects / "seed.bpf.o")
    view = view_mount / "task_file" / "dump_task_file"
    with Child() as a, Child() as b:
        files = {c.pid: open(view / f"target_pid={c.pid}", "rb") for c in (a, b) for _ in range(3)}
        try:
            for pid, f in files.items():
                assert {r[0] for r in seed_lines(f.read().decode())} == {pid}
        finally:
            for f in files.values():
                f.close()


def test_two_programs_two_views_and_char_and_const_globals(tmp_path, objects, view_mount, child):
    build(TWO, objects / "two.bpf.o")
    assert {"tagged_tasks", "thread_count"} <= set(os.listdir(view_mount / "task"))
    lines = (view_mount / f"task/tagged_tasks/pid={child.pid},tag=hello,step=-3").read_text().splitlines()
    assert lines == [f"v1 hello -3 {child.pid}"]
    assert (view_mount / f"task/tagged_tasks/pid={child.pid}").read_text() == f"v1 none 1 {child.pid}\n"
    attrs = {n: os.getxattr(view_mount / "task/tagged_tasks/tag=x", n) for n in
             os.listxattr(view_mount / "task/tagged_tasks/tag=x")}
    assert attrs == {"user.iterfs.target": b"task", "user.iterfs.view": b"tagged_tasks", "user.iterfs.tag": b"x"}


@pytest.mark.parametrize("name, why", [
    ("tag=waytoolongvalue", "holds at most 7 bytes"),
    ("step=2147483648", "from -2147483648 to 2147483647"),
    ("step=01", "not a decimal number"),
    ("nosuch=1", "unknown parameter 'nosuch'"),
])
def test_globals_that_do_not_fit_are_enoent_with_a_reason(tmp_path, objects, view_mount, name, why):
    build(TWO, objects / "two.bpf.o")
    with pytest.raises(OSError) as info:
        (view_mount / f"task/tagged_tasks/{name}").read_bytes()
    assert info.value.errno == errno.ENOENT
    assert why in view_mount.log.read_text()


def test_objects_come_go_and_are_replaced_without_remount(tmp_path, objects, view_mount, child):
    assert "thread_count" not in os.listdir(view_mount / "task")
    build(TWO, objects / "two.bpf.o", "v1")
    path = view_mount / f"task/thread_count/pid={child.pid}"
    old = open(path, "rb")  # opened on the first version
    try:
        build(TWO, tmp_path / "two-v2.bpf.o", "v2")
        os.replace(tmp_path / "two-v2.bpf.o", objects / "two.bpf.o")
        assert path.read_text() == f"v2 {child.pid}\n"  # new opens: the new program
        assert old.read().decode() == f"v1 {child.pid}\n"  # the old open finishes on the old one
    finally:
        old.close()
    (objects / "two.bpf.o").unlink()
    assert "thread_count" not in os.listdir(view_mount / "task")
    with pytest.raises(OSError) as info:
        path.read_bytes()
    assert info.value.errno == errno.ENOENT


def test_broken_objects_are_reported_and_the_rest_works(tmp_path, objects, view_mount, child):
    (objects / "junk.bpf.o").write_bytes(b"\x7fELF but not really")
    build(REJECTED, objects / "rejected.bpf.o")
    build(TWO, objects / "two.bpf.o")
    names = set(os.listdir(view_mount / "task"))
    assert {"no_null_check", "tagged_tasks"} <= names
    with pytest.raises(OSError) as info:
        (view_mount / "task/no_null_check/all").read_bytes()
    assert info.value.errno == errno.EIO
    assert (view_mount / f"task/tagged_tasks/pid={child.pid}").read_text() == f"v1 none 1 {child.pid}\n"
    assert (view_mount / f"task/pid={child.pid}").read_text()  # the bundled program too
    log = view_mount.log.read_text()
    assert "junk.bpf.o" in log and "not an ELF" in log
    assert "no_null_check" in log and "failed to load" in log and "BEGIN PROG LOAD LOG" in log


def test_objects_others_could_change_are_refused(tmp_path, objects, view_mount, child):
    build(TWO, objects / "two.bpf.o")
    os.chmod(objects / "two.bpf.o", 0o666)
    assert "tagged_tasks" not in os.listdir(view_mount / "task")
    assert "two.bpf.o: must be owned by root and not writable by group or others" in view_mount.log.read_text()
    os.chmod(objects / "two.bpf.o", 0o644)
    assert "tagged_tasks" in os.listdir(view_mount / "task")


@pytest.mark.parametrize("mode, owner, why", [(0o777, 0, "writable by group or others"),
                                              (0o755, 65534, "owned by root")])
def test_objects_directory_must_be_roots_alone(tmp_path, fuse_host, mode, owner, why):
    d = tmp_path / "unsafe"
    d.mkdir()
    os.chmod(d, mode)
    os.chown(d, owner, 0)
    with pytest.raises(AssertionError, match=why):
        start_mount(tmp_path, ["--objects", str(d)])


def test_an_object_linked_by_bpftool_gen_is_served(tmp_path, objects, view_mount, child):
    build(TWO, tmp_path / "two.o")
    subprocess.run(["bpftool", "gen", "object", str(objects / "linked.bpf.o"), str(tmp_path / "two.o")],
                   check=True, capture_output=True)
    assert (view_mount / f"task/tagged_tasks/pid={child.pid},tag=linked").read_text() == \
        f"v1 linked 1 {child.pid}\n"


def test_many_value_sets_at_once_each_see_their_own(tmp_path, objects, view_mount, child):
    """More value sets than idle loads are kept, opened from 8 threads: loads are evicted under use."""
    import threading

    build(TWO, objects / "two.bpf.o")
    wrong, errors = [], []

    def reader(worker: int) -> None:
        for i in range(40):
            tag = f"w{worker}v{i}"[:7]
            try:
                text = (view_mount / f"task/tagged_tasks/pid={child.pid},tag={tag}").read_text()
            except OSError as e:
                errors.append(e)
                continue
            if text != f"v1 {tag} 1 {child.pid}\n":
                wrong.append((tag, text))

    threads = [threading.Thread(target=reader, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not wrong


def test_a_char_global_takes_the_bytes_of_the_file_name(tmp_path, objects, view_mount, child):
    build(TWO, objects / "two.bpf.o")
    name = os.fsdecode(b"pid=%d,tag=\xff\xfe" % child.pid)  # not UTF-8: still a name, still bytes
    assert (view_mount / "task/tagged_tasks" / name).read_bytes() == b"v1 \xff\xfe 1 %d\n" % child.pid


def test_a_directory_under_one_others_may_change_is_refused(tmp_path, fuse_host):
    parent = tmp_path / "shared"
    parent.mkdir()
    os.chmod(parent, 0o777)  # not sticky: anyone may rename the directory below
    (parent / "objects").mkdir(mode=0o755)
    with pytest.raises(AssertionError, match="shared must be owned by root and not writable"):
        start_mount(tmp_path, ["--objects", str(parent / "objects")])


def test_an_object_that_is_a_symlink_is_refused(tmp_path, objects, view_mount, child):
    build(TWO, tmp_path / "elsewhere.bpf.o")
    (objects / "two.bpf.o").symlink_to(tmp_path / "elsewhere.bpf.o")
    assert "tagged_tasks" not in os.listdir(view_mount / "task")
    assert "two.bpf.o: not a regular file (symlinks are not followed)" in view_mount.log.read_text()


# The kernel's own selftest program (tools/testing/selftests/bpf/progs/bpf_iter_task_vma.c),
# on vmlinux.h instead of bpf_iter.h, without its bpf_d_path() (kernels that mark vma->vm_file
# untrusted refuse it: bpf/path.bpf.h): it filters on a global named like the target's parameter.
PROC_MAPS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

/* Copied from mm.h */
#define VM_READ		0x00000001
#define VM_WRITE	0x00000002
#define VM_EXEC		0x00000004
#define VM_MAYSHARE	0x00000080

/* Copied from kdev_t.h */
#define MINORBITS	20
#define MINORMASK	((1U << MINORBITS) - 1)
#define MAJOR(dev)	((unsigned int) ((dev) >> MINORBITS))
#define MINOR(dev)	((unsigned int) ((dev) & MINORMASK))

__u32 pid = 0;
__u32 one_task = 0;
__u32 one_task_error = 0;

SEC("iter/task_vma") int proc_maps(struct bpf_iter__task_vma *ctx)
{
	struct vm_area_struct *vma = ctx->vma;
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file;
	char perm_str[] = "----";

	if (task == (void *)0 || vma == (void *)0)
		return 0;

	file = vma->vm_file;
	if (task->tgid != (pid_t)pid) {
		if (one_task)
			one_task_error = 1;
		return 0;
	}
	perm_str[0] = (vma->vm_flags & VM_READ) ? 'r' : '-';
	perm_str[1] = (vma->vm_flags & VM_WRITE) ? 'w' : '-';
	perm_str[2] = (vma->vm_flags & VM_EXEC) ? 'x' : '-';
	perm_str[3] = (vma->vm_flags & VM_MAYSHARE) ? 's' : 'p';
	BPF_SEQ_PRINTF(seq, "%08llx-%08llx %s ", vma->vm_start, vma->vm_end, perm_str);

	if (file) {
		__u32 dev = file->f_inode->i_sb->s_dev;

		BPF_SEQ_PRINTF(seq, "%08llx ", vma->vm_pgoff << 12);
		BPF_SEQ_PRINTF(seq, "%02x:%02x %u", MAJOR(dev), MINOR(dev),
			       file->f_inode->i_ino);
		BPF_SEQ_PRINTF(seq, "\n");
	} else {
		BPF_SEQ_PRINTF(seq, "%08llx 00:00 0\n", 0ULL);
	}
	return 0;
}
"""


def test_a_global_named_like_a_parameter_is_global_dot_name(tmp_path, objects, view_mount, child):
    build(PROC_MAPS, objects / "bpf_iter_task_vma.bpf.o")
    view = view_mount / "task_vma" / "proc_maps"
    maps = [line.split()[0] for line in Path(f"/proc/{child.pid}/maps").read_text().splitlines()
            if not line.endswith("[vsyscall]")]
    ranges = lambda text: [line.split()[0].lstrip("0") for line in text.splitlines()]
    expected = [r.lstrip("0") for r in maps]
    # pid= is the target's (link_info.task.pid); global.pid= the program's own filter
    assert ranges((view / f"pid={child.pid},global.pid={child.pid}").read_text()) == expected
    assert ranges((view / f"global.pid={child.pid}").read_text()) == expected  # every task walked, one shown
    assert (view / f"pid={child.pid}").read_text() == ""  # the global is 0: the program shows nothing
    readme = (view / "README").read_text()
    assert re.search(r"\bpid +__u32 +\.bss, the parameter global\.pid=", readme), readme
    assert re.search(r"\bone_task +__u32 +\.bss, the parameter one_task=", readme), readme
    attrs = os.listxattr(view / f"pid={child.pid},global.pid=1")
    assert "user.iterfs.global.pid" in attrs and "user.iterfs.pid" in attrs
    with pytest.raises(OSError) as info:  # keys in the README's order: the target's, then the globals
        (view / f"global.pid={child.pid},pid={child.pid}").read_bytes()
    assert info.value.errno == errno.ENOENT


def test_any_global_may_be_named_global_dot_name(tmp_path, objects, view_mount, child):
    build(SEED, objects / "seed.bpf.o")
    view = view_mount / "task_file" / "dump_task_file"
    plain = (view / f"target_pid={child.pid}").read_text()
    assert seed_lines(plain) and (view / f"global.target_pid={child.pid}").read_text() == plain
    assert f"global.target_pid={child.pid}" not in os.listdir(view)  # one name in ls per set of values


def test_a_name_whose_global_the_replaced_object_lacks_is_enoent_at_open(tmp_path, objects, view_mount, child):
    """A name parsed against an object that has since been replaced is parsed again at open."""
    build(TWO, objects / "two.bpf.o")
    name = f"pid={child.pid},tag=x"
    view = os.open(view_mount / "task/tagged_tasks", os.O_RDONLY | os.O_DIRECTORY)  # keeps the view's inode
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=view)
        assert os.read(fd, 100) == f"v1 x 1 {child.pid}\n".encode()
        os.close(fd)
        build(TWO.replace("tag[8]", "label[8]").replace(", tag,", ", label,"), tmp_path / "v2.bpf.o", "v2")
        os.replace(tmp_path / "v2.bpf.o", objects / "two.bpf.o")
        with pytest.raises(OSError) as info:
            os.open(name, os.O_RDONLY, dir_fd=view)
        assert info.value.errno == errno.ENOENT
        assert (view_mount / f"task/tagged_tasks/pid={child.pid},label=y").read_text() == f"v2 y 1 {child.pid}\n"
    finally:
        os.close(view)
