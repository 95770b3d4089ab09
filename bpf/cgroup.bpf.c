// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup: one line per cgroup2 cgroup. Columns: iterfs/readmes/cgroup.
 * Never returns 1: for this target that ends the walk (kernel/bpf/cgroup_iter.c).
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* deeper paths end in "/..." */
#define MAX_DEPTH 32

/*
 * Paths are relative to the cgroup2 root of the reader's cgroup namespace, as
 * /sys/fs/cgroup shows them there. The reader is current: iterators run in
 * its read().
 */
static __always_inline int ns_root_level(void)
{
	struct task_struct *me = bpf_get_current_task_btf();

	return BPF_CORE_READ(me, nsproxy, cgroup_ns, root_cset, dfl_cgrp, level);
}

SEC("iter/cgroup")
int dump_cgroup(struct bpf_iter__cgroup *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct cgroup *cgrp = ctx->cgroup;
	struct cgroup *anc;
	int level, top;

	if (!cgrp)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "id level path\n");

	level = cgrp->level;
	top = ns_root_level();
	BPF_SEQ_PRINTF(seq, "%llu %d ", cgrp->kn->id, level);
	if (level == top) {
		BPF_SEQ_PRINTF(seq, "/\n");
		return 0;
	}
	/* ancestors_up walks past the namespace root: "/.." per level, as cgroup_path_ns() */
	for (int i = 0; i < MAX_DEPTH && level + i < top; i++)
		BPF_SEQ_PRINTF(seq, "/..");
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
		BPF_SEQ_PRINTF(seq, "/%s", BPF_CORE_READ(anc, kn, name));
	}
	if (level - top > MAX_DEPTH)
		BPF_SEQ_PRINTF(seq, "/...");
	BPF_SEQ_PRINTF(seq, "\n");
	return 0;
}
