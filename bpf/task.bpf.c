// SPDX-License-Identifier: GPL-2.0
/* task: one line per thread. Columns: iterfs/readmes/task. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "    tgid      pid     ppid      uid S comm\n");

	BPF_SEQ_PRINTF(seq, "%8d %8d %8d %8u %c %s\n", task->tgid, task->pid,
		       BPF_CORE_READ(task, real_parent, tgid),
		       BPF_CORE_READ(task, cred, uid.val),
		       task_state_char(task), task->comm);
	return 0;
}
