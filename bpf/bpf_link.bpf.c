// SPDX-License-Identifier: GPL-2.0
/* bpf_link: one line per BPF link, as bpftool link list. Columns: iterfs/readmes/bpf_link. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* libbpf's link_type_name[] (libbpf_bpf_link_type_str()), the names bpftool prints */
const char link_type_names[][16] = {
	[BPF_LINK_TYPE_UNSPEC]		= "unspec",
	[BPF_LINK_TYPE_RAW_TRACEPOINT]	= "raw_tracepoint",
	[BPF_LINK_TYPE_TRACING]		= "tracing",
	[BPF_LINK_TYPE_CGROUP]		= "cgroup",
	[BPF_LINK_TYPE_ITER]		= "iter",
	[BPF_LINK_TYPE_NETNS]		= "netns",
	[BPF_LINK_TYPE_XDP]		= "xdp",
	[BPF_LINK_TYPE_PERF_EVENT]	= "perf_event",
	[BPF_LINK_TYPE_KPROBE_MULTI]	= "kprobe_multi",
	[BPF_LINK_TYPE_STRUCT_OPS]	= "struct_ops",
	[BPF_LINK_TYPE_NETFILTER]	= "netfilter",
	[BPF_LINK_TYPE_TCX]		= "tcx",
	[BPF_LINK_TYPE_UPROBE_MULTI]	= "uprobe_multi",
	[BPF_LINK_TYPE_NETKIT]		= "netkit",
	[BPF_LINK_TYPE_SOCKMAP]		= "sockmap",
};

SEC("iter/bpf_link")
int dump_bpf_link(struct bpf_iter__bpf_link *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_link *link = ctx->link;
	const char *type_name;
	__u32 type, prog_id = 0;

	if (!link)
		return 0;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "      id type typename       prog_id\n");

	type = link->type;
	type_name = TYPE_NAME(link_type_names, type);
	/* struct_ops links may have no program; BPF_OBJ_GET_INFO_BY_FD then says prog_id 0 */
	if (link->prog)
		prog_id = BPF_CORE_READ(link, prog, aux, id);
	BPF_SEQ_PRINTF(seq, "%8u %4u %-14s %7u\n", link->id, type, type_name, prog_id);
	return 0;
}
