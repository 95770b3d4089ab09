// SPDX-License-Identifier: GPL-2.0
/* ipv6_route: one line per IPv6 route, as /proc/net/ipv6_route. Columns: iterfs/readmes/ipv6_route. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* include/uapi/linux/route.h and socket.h; defines, not in BTF */
#define RTF_GATEWAY	0x0002
#define AF_INET6	10

/* Without subtrees the kernel prints a zero source prefix. */
extern bool CONFIG_IPV6_SUBTREES __kconfig __weak;

/*
 * nexthop_fib6_nh(): a nexthop object's IPv6 nexthop; for a group its first
 * member's. NULL when that is not IPv6.
 */
static __always_inline struct fib6_nh *nexthop_fib6_nh(struct nexthop *nh)
{
	struct nh_info *nhi;

	if (nh->is_group) {
		struct nh_group *grp = nh->nh_grp;

		if (!grp || BPF_CORE_READ(grp, num_nh) < 1)
			return NULL;
		nh = BPF_CORE_READ(grp, nh_entries[0].nh);
		if (!nh)
			return NULL;
	}
	nhi = BPF_CORE_READ(nh, nh_info);
	if (!nhi || BPF_CORE_READ(nhi, family) != AF_INET6)
		return NULL;
	return &nhi->fib6_nh;
}

SEC("iter/ipv6_route")
int dump_ipv6_route(struct bpf_iter__ipv6_route *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct fib6_info *rt = ctx->rt;
	struct fib6_nh *nh;
	struct net_device *dev = NULL;
	unsigned int flags;

	if (!rt)
		return 0;

	nh = rt->nh ? nexthop_fib6_nh(rt->nh) : &rt->fib6_nh[0];
	flags = rt->fib6_flags;

	BPF_SEQ_PRINTF(seq, "%pi6 %02x ", &rt->fib6_dst.addr, rt->fib6_dst.plen);
	if (CONFIG_IPV6_SUBTREES)
		BPF_SEQ_PRINTF(seq, "%pi6 %02x ", &rt->fib6_src.addr, rt->fib6_src.plen);
	else
		BPF_SEQ_PRINTF(seq, "00000000000000000000000000000000 00 ");
	if (nh && BPF_CORE_READ(nh, nh_common.nhc_gw_family)) {
		flags |= RTF_GATEWAY;
		BPF_SEQ_PRINTF(seq, "%pi6", &nh->nh_common.nhc_gw.ipv6);
	} else {
		BPF_SEQ_PRINTF(seq, "00000000000000000000000000000000");
	}
	if (nh)
		dev = BPF_CORE_READ(nh, nh_common.nhc_dev);
	/* a route without a device still has the column, blank */
	BPF_SEQ_PRINTF(seq, " %08x %08x %08x %08x %8s\n", rt->fib6_metric,
		       rt->fib6_ref.refs.counter, 0, flags, dev ? dev->name : "");
	return 0;
}
