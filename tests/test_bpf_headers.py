"""bpf/iterfs.bpf.h and bpf/hex.bpf.h give a program that includes them no globals.

A global of a program is a parameter of the user's view of it (iterfs.btf.read_globals),
so a table in a shared header would show up as a setting of every user's program.
"""

from __future__ import annotations

import shutil

from conftest import missing
from helpers import compile_bpf
from iterfs.btf import read_globals
from iterfs.catalog import BUNDLED_DIR

# Uses what the headers define: the state letter, the hex dump, the scratch slots.
USER_PROGRAM = r"""
#include "hex.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct scratch *s;
	int slot;

	if (!task)
		return 0;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d %c ", task->pid, task_state_char(task));
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	seq_write_hex(ctx->meta->seq, s->buf[slot], &task->pid, sizeof(task->pid));
	scratch_release(s, slot);
	BPF_SEQ_PRINTF(ctx->meta->seq, "\n");
	return 0;
}
"""


def test_shared_headers_add_no_globals(tmp_path):
    if shutil.which("clang") is None:
        missing("clang")
    objects = sorted(BUNDLED_DIR.glob("*.bpf.o"))
    if not objects:
        missing("built BPF objects (run make)")

    user = tmp_path / "user.bpf.o"
    compile_bpf(USER_PROGRAM, user)
    assert read_globals(user) == ()

    found = {obj.name: read_globals(obj) for obj in objects}
    names = {g.name for globals_ in found.values() for g in globals_}
    assert not names & {"task_state_letters", "hex_digits"}
    # the settable ones (integers, char arrays); bpf_link/bpf_map/bpf_prog keep their type-name tables
    settable = {name: {g.name for g in globals_ if g.kind in ("int", "chars")} for name, globals_ in found.items()}
    # the two programs iterfs sets up at load: a walk of one map, and the fields= program
    assert {name: s for name, s in settable.items() if s} == {
        "bpf_map_elem_walk.bpf.o": {"percpu"},
        "fields.bpf.o": {"nslots", "object_slots", "nfields", "text", "packed", "line_format", "guard_on",
                         "guard_offset", "guard_refuse"},
    }
