// SPDX-License-Identifier: GPL-2.0
/* task_file: one line per open file descriptor. Columns: iterfs/readmes/task_file. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/task_file")
int dump_task_file(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct pid_namespace *ns;

	if (!task || !file)
		return 0;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "    tgid      pid       fd             f_op path\n");

	/* pids as the reader's pid namespace numbers them, as its /proc does */
	ns = iter_pid_ns(seq);
	BPF_SEQ_PRINTF(seq, "%8d %8d %8u %16lx ", task_tgid_in(task, ns), task_pid_in(task, ns), ctx->fd,
		       (long)file->f_op);
	if (seq_write_path(seq, &file->f_path))
		return 1;
	BPF_SEQ_PRINTF(seq, "\n");
	return 0;
}
