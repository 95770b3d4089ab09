// SPDX-License-Identifier: GPL-2.0
/*
 * generic: serves a target that no bundled program knows, one line per object
 * with the object's kernel address. iterfs points this one program at each such
 * target before loading it (bpf_program__set_attach_target()), so "generic"
 * in its section name is a placeholder, not a target. Columns: README in the
 * target's directory.
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/*
 * Every target's context (DEFINE_BPF_ITER_FUNC) starts with meta, then a
 * pointer to the object being visited; the verifier types the second slot
 * from the actual target's BTF.
 */
struct bpf_iter__any {
	struct bpf_iter_meta *meta;
	void *object;
};

SEC("iter/generic")
int dump_object(struct bpf_iter__any *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	void *object = ctx->object;

	if (!object)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "object\n");
	BPF_SEQ_PRINTF(seq, "%px\n", object);
	return 0;
}
