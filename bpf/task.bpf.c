// SPDX-License-Identifier: GPL-2.0
/* task: one line per thread. Columns: iterfs/readmes/task. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct pid_namespace *ns;

	if (!task)
		return 0;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "    tgid      pid     ppid      uid S comm\n");

	/* pids as the reader's pid namespace numbers them, as its /proc does */
	ns = iter_pid_ns(seq);
	BPF_SEQ_PRINTF(seq, "%8d %8d %8d %8u %c %s\n", task_tgid_in(task, ns), task_pid_in(task, ns),
		       task_tgid_in(BPF_CORE_READ(task, real_parent), ns),
		       BPF_CORE_READ(task, cred, uid.val),
		       task_state_char(task), task->comm);
	return 0;
}
