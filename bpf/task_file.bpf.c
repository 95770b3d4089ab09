// SPDX-License-Identifier: GPL-2.0
/* task_file: one line per open file descriptor. Columns: iterfs/readmes/task_file. */
#include "iterfs.bpf.h"
#include "reader.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/task_file")
int dump_task_file(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct reader_policy *p;
	struct pid_namespace *ns;
	bool header;

	if (!task || !file)
		return 0;
	/* as /proc/PID/fd: only the tasks the reader may ptrace-read, addresses as kallsyms shows them */
	p = reader();
	if (!p || !reader_may_read(p, task))
		return 0;
	/* the final call (NULL object) sees seq_num 0 after one object as after none: the header goes with one */
	header = reader_header_first(p, ctx->meta->seq_num);
	if (header)
		BPF_SEQ_PRINTF(seq, "    tgid      pid       fd             f_op path\n");

	/* pids as the reader's pid namespace numbers them, as its /proc does */
	ns = iter_pid_ns(seq);
	BPF_SEQ_PRINTF(seq, "%8d %8d %8u %16lx ", task_tgid_in(task, ns), task_pid_in(task, ns), ctx->fd,
		       reader_address(p, file->f_op));
	if (seq_write_path(seq, &file->f_path)) {
		if (header)  /* the kernel drops this object's output, and shows it again */
			reader_header_again(p);
		return 1;
	}
	BPF_SEQ_PRINTF(seq, "\n");
	return 0;
}
