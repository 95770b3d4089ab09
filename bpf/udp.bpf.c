// SPDX-License-Identifier: GPL-2.0
/*
 * udp: one line per UDP socket of the iterator's network namespace, the line
 * /proc/net/udp (IPv4) or /proc/net/udp6 (IPv6) shows for it. Columns:
 * iterfs/readmes/udp.
 */
#include "iterfs.bpf.h"
#include "proc_net.bpf.h"
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "GPL";

/* include/linux/socket.h: macros, not in BTF */
#define AF_INET		2
#define AF_INET6	10
/* udp4_seq_show(): seq_setwidth(127) and seq_pad() fill IPv4 lines with spaces */
#define UDP4_WIDTH	127

/*
 * Linux 6.5 (c96dac8d369f, "bpf: udp: Implement batching for sockets
 * iterator") makes the iterator hold a reference on the socket it shows;
 * /proc/net/udp holds none, so the count /proc shows is one less.
 */
static __always_inline int proc_refcnt(struct sock *sk)
{
	int refs = sk->__sk_common.skc_refcnt.refs.counter;

	return bpf_core_type_exists(struct bpf_udp_iter_state) ? refs - 1 : refs;
}

SEC("iter/udp")
int dump_udp(struct bpf_iter__udp *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct udp_sock *up = ctx->udp_sk;
	struct sock_common *skc;
	struct scratch *s;
	struct sock *sk;
	/*
	 * /proc's sl is the socket's bucket in the port hash; since c96dac8d369f
	 * ctx->bucket is one in the address+port hash (hash2), which would look
	 * like it but differ: sl is a running number instead.
	 */
	int sl = ctx->meta->seq_num;
	struct sock_cols c = {};
	__u32 at, end = LINE_PART;
	char *head, *tail;
	int slot, v6;

	if (!up)
		return 0;
	sk = &up->inet.sk;
	skc = &sk->__sk_common;
	if (skc->skc_family != AF_INET && skc->skc_family != AF_INET6)
		return 0;
	/* lines are too large for the stack */
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	head = s->buf[slot];
	tail = head + 2 * LINE_PART;
	v6 = skc->skc_family == AF_INET6;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (sl == 0)
		BPF_SEQ_PRINTF(seq, "%-127s\n",
			       "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
			       "retrnsmt   uid  timeout inode ref pointer drops");

	/* as udp4_format_sock() and __ip6_dgram_sock_seq_show(); UDP has no timers */
	c.srcp = bpf_ntohs(up->inet.inet_sport);
	c.destp = bpf_ntohs(skc->skc_dport);
	c.state = skc->skc_state;
	/* sk_wmem_alloc_get() and udp_rqueue_get() */
	c.tx_queue = sk->sk_wmem_alloc.refs.counter - 1;
	c.rx_queue = sk->sk_backlog.rmem_alloc.counter - up->forward_deficit;
	c.uid = ctx->uid;
	c.inode = sock_ino(sk);
	c.refcnt = proc_refcnt(sk);
	/* the columns up to the pointer, the pointer, then drops and (IPv4) the padding: proc_net.bpf.h */
	at = put_sock_columns(head, LINE_PART, skc, v6, sl, 5, &c);
	end = put_udec(tail, end, sock_drops(sk), 0);
	end = put_char(tail, end, ' ');
	/* udp4_seq_show(): seq_setwidth(127) and seq_pad() fill IPv4 lines with spaces */
	write_sock_line(seq, head, at, sk, tail, end, head + 4 * LINE_PART, v6 ? 0 : UDP4_WIDTH);
	scratch_release(s, slot);
	return 0;
}
