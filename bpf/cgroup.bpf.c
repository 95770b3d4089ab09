// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup: one line per cgroup2 cgroup. Columns: iterfs/readmes/cgroup.
 * Never returns 1: for this target that ends the walk (kernel/bpf/cgroup_iter.c).
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* deeper paths end in "/..." */
#define MAX_DEPTH 32
/* a directory name and its NUL: NAME_MAX + 1 */
#define NAME_SIZE 256

/*
 * Paths are relative to the cgroup2 root of the reader's cgroup namespace, as
 * /sys/fs/cgroup shows them there. The reader is current: the thread that
 * reads the iterator, which iterfs puts in the reader's cgroup namespace for
 * the read.
 */
static __always_inline struct cgroup *ns_root(void)
{
	struct task_struct *me = bpf_get_current_task_btf();

	return BPF_CORE_READ(me, nsproxy, cgroup_ns, root_cset, dfl_cgrp);
}

SEC("iter/cgroup")
int dump_cgroup(struct bpf_iter__cgroup *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct cgroup *cgrp = ctx->cgroup;
	struct cgroup *root = ns_root(), *anc;
	struct scratch *s = NULL;
	int level, top, slot;
	const char *name;
	__u32 top_idx;
	long len;

	if (!cgrp)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "id level path\n");

	level = cgrp->level;
	top = BPF_CORE_READ(root, level);
	/*
	 * Not under the reader's namespace root (above it on a walk up, or anywhere
	 * in a pinned walk of the whole tree): not the reader's to see. The bound
	 * is for the verifier; no cgroup is 64K levels deep.
	 */
	top_idx = top;
	if (level < top || top_idx > 0xffff)
		return 0;
	if (bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[top_idx]) || anc != root)
		return 0;
	BPF_SEQ_PRINTF(seq, "%llu %d ", cgrp->kn->id, level);
	if (level == top) {
		bpf_seq_write(seq, "/\n", 2);
		return 0;
	}
	/* each name read into a scratch slot after its "/", and written in one go (cheaper than a printf) */
	slot = scratch_claim(&s);
	/*
	 * Linux 6.1 (7f203bc89eb6) replaced ancestor_ids[] with ancestors[], the
	 * release that added this iterator: no fallback needed.
	 */
	for (int i = 1; i <= MAX_DEPTH && top + i <= level; i++) {
		__u32 idx = top + i;

		/* a bound for the verifier; no cgroup is 64K levels deep */
		if (idx > 0xffff)
			break;
		if (bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[idx]) || !anc)
			break;
		name = BPF_CORE_READ(anc, kn, name);
		if (slot < 0 || slot >= SCRATCH_SLOTS) {
			/* none free, and a retry would end the walk */
			BPF_SEQ_PRINTF(seq, "/%s", name);
			continue;
		}
		s->buf[slot][0] = '/';
		len = bpf_probe_read_kernel_str(&s->buf[slot][1], NAME_SIZE, name);
		/* the "/" and the name, not its NUL; the "/" alone for a name that cannot be read */
		bpf_seq_write(seq, s->buf[slot], len > 1 && len <= NAME_SIZE ? len : 1);
	}
	if (slot >= 0 && slot < SCRATCH_SLOTS)
		scratch_release(s, slot);
	if (level - top > MAX_DEPTH)
		BPF_SEQ_PRINTF(seq, "/...");
	BPF_SEQ_PRINTF(seq, "\n");
	return 0;
}
