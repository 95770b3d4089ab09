// SPDX-License-Identifier: GPL-2.0
/* netlink: one line per AF_NETLINK socket, as /proc/net/netlink. Columns: iterfs/readmes/netlink. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/netlink")
int dump_netlink(struct bpf_iter__netlink *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct netlink_sock *nlk = ctx->sk;
	struct sock *sk = (struct sock *)nlk;
	unsigned long group = 0;

	if (!nlk)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "sk               Eth Pid        Groups   "
			       "Rmem     Wmem     Dump  Locks    Drops    Inode\n");

	/* the first word of the group bitmap, as netlink_seq_show() */
	if (nlk->groups)
		bpf_probe_read_kernel(&group, sizeof(group), nlk->groups);
	BPF_SEQ_PRINTF(seq, "%pK %-3d %-10u %08x %-8d %-8d %-5d %-8d %-8u %-8lu\n",
		       sk, sk->sk_protocol, nlk->portid, (__u32)group,
		       sk->sk_backlog.rmem_alloc.counter,
		       sk->sk_wmem_alloc.refs.counter - 1,
		       nlk->cb_running, sk->__sk_common.skc_refcnt.refs.counter,
		       sock_drops(sk), sock_ino(sk));
	return 0;
}
