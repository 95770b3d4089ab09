// SPDX-License-Identifier: GPL-2.0
/* bpf_prog: one line per BPF program, as bpftool prog list. Columns: iterfs/readmes/bpf_prog. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* libbpf's prog_type_name[] (libbpf_bpf_prog_type_str()), the names bpftool prints */
const char prog_type_names[][24] = {
	[BPF_PROG_TYPE_UNSPEC]			= "unspec",
	[BPF_PROG_TYPE_SOCKET_FILTER]		= "socket_filter",
	[BPF_PROG_TYPE_KPROBE]			= "kprobe",
	[BPF_PROG_TYPE_SCHED_CLS]		= "sched_cls",
	[BPF_PROG_TYPE_SCHED_ACT]		= "sched_act",
	[BPF_PROG_TYPE_TRACEPOINT]		= "tracepoint",
	[BPF_PROG_TYPE_XDP]			= "xdp",
	[BPF_PROG_TYPE_PERF_EVENT]		= "perf_event",
	[BPF_PROG_TYPE_CGROUP_SKB]		= "cgroup_skb",
	[BPF_PROG_TYPE_CGROUP_SOCK]		= "cgroup_sock",
	[BPF_PROG_TYPE_LWT_IN]			= "lwt_in",
	[BPF_PROG_TYPE_LWT_OUT]			= "lwt_out",
	[BPF_PROG_TYPE_LWT_XMIT]		= "lwt_xmit",
	[BPF_PROG_TYPE_SOCK_OPS]		= "sock_ops",
	[BPF_PROG_TYPE_SK_SKB]			= "sk_skb",
	[BPF_PROG_TYPE_CGROUP_DEVICE]		= "cgroup_device",
	[BPF_PROG_TYPE_SK_MSG]			= "sk_msg",
	[BPF_PROG_TYPE_RAW_TRACEPOINT]		= "raw_tracepoint",
	[BPF_PROG_TYPE_CGROUP_SOCK_ADDR]	= "cgroup_sock_addr",
	[BPF_PROG_TYPE_LWT_SEG6LOCAL]		= "lwt_seg6local",
	[BPF_PROG_TYPE_LIRC_MODE2]		= "lirc_mode2",
	[BPF_PROG_TYPE_SK_REUSEPORT]		= "sk_reuseport",
	[BPF_PROG_TYPE_FLOW_DISSECTOR]		= "flow_dissector",
	[BPF_PROG_TYPE_CGROUP_SYSCTL]		= "cgroup_sysctl",
	[BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE]	= "raw_tracepoint_writable",
	[BPF_PROG_TYPE_CGROUP_SOCKOPT]		= "cgroup_sockopt",
	[BPF_PROG_TYPE_TRACING]			= "tracing",
	[BPF_PROG_TYPE_STRUCT_OPS]		= "struct_ops",
	[BPF_PROG_TYPE_EXT]			= "ext",
	[BPF_PROG_TYPE_LSM]			= "lsm",
	[BPF_PROG_TYPE_SK_LOOKUP]		= "sk_lookup",
	[BPF_PROG_TYPE_SYSCALL]			= "syscall",
	[BPF_PROG_TYPE_NETFILTER]		= "netfilter",
};

/*
 * The name bpftool shows (get_prog_full_name()): a name that fills the 15
 * characters of aux->name may have been cut, so bpftool takes the name of the
 * program's BTF function instead.
 */
static __always_inline const char *prog_name(struct bpf_prog_aux *aux)
{
	struct bpf_func_info *fi = aux->func_info;
	struct btf *btf = aux->btf;
	__u32 id, name_off, start_id = 0, start_str_off = 0;
	struct btf_type *t;

	if (!aux->name[sizeof(aux->name) - 2] || !btf || !fi || !aux->func_info_cnt)
		return aux->name;
	/* Linux 5.11 (split BTF) added btf::start_id and start_str_off, 0 for a program's BTF */
	if (bpf_core_field_exists(btf->start_id)) {
		start_id = btf->start_id;
		start_str_off = btf->start_str_off;
	}
	id = fi->type_id - start_id;
	if (id >= btf->nr_types || bpf_probe_read_kernel(&t, sizeof(t), btf->types + id) || !t)
		return aux->name;
	name_off = BPF_CORE_READ(t, name_off) - start_str_off;
	if ((BPF_CORE_READ(t, info) >> 24 & 0x1f) != BTF_KIND_FUNC || name_off >= btf->hdr.str_len)
		return aux->name;
	return btf->strings + name_off;
}

SEC("iter/bpf_prog")
int dump_bpf_prog(struct bpf_iter__bpf_prog *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_prog *prog = ctx->prog;
	struct bpf_prog_aux *aux;
	const char *type_name, *name = "-";
	__u8 *tag;
	__u32 type;

	if (!prog)
		return 0;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "      id type typename                name             "
			       "tag                 uid gpl\n");

	aux = prog->aux;
	type = prog->type;
	type_name = TYPE_NAME(prog_type_names, type);
	if (aux->name[0])
		name = prog_name(aux);
	BPF_SEQ_PRINTF(seq, "%8u %4u %-23s %-16s ", aux->id, type, type_name, name);
	tag = prog->tag;
	/* bpftool's uid is created_by_uid: the loader's uid, seen from the init namespace here */
	BPF_SEQ_PRINTF(seq, "%02x%02x%02x%02x%02x%02x%02x%02x %5u %3u\n",
		       tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7],
		       BPF_CORE_READ(aux, user, uid.val),
		       (__u32)BPF_CORE_READ_BITFIELD(prog, gpl_compatible));
	return 0;
}
