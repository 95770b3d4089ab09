// SPDX-License-Identifier: GPL-2.0
/*
 * udp: one line per UDP socket of the iterator's network namespace, the line
 * /proc/net/udp (IPv4) or /proc/net/udp6 (IPv6) shows for it. Columns:
 * iterfs/readmes/udp.
 */
#include "iterfs.bpf.h"
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "GPL";

/* include/linux/socket.h: macros, not in BTF */
#define AF_INET		2
#define AF_INET6	10
/* udp4_seq_show(): seq_setwidth(127) and seq_pad() fill IPv4 lines with spaces */
#define UDP4_WIDTH	"127"

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
	const __u32 *src, *dst;
	struct scratch *s;
	struct sock *sk;
	/*
	 * /proc's sl is the socket's bucket in the port hash; since c96dac8d369f
	 * ctx->bucket is one in the address+port hash (hash2), which would look
	 * like it but differ: sl is a running number instead.
	 */
	int sl = ctx->meta->seq_num;
	__u32 srcp, destp, tx_queue, rx_queue;
	char *tail, *line;
	int slot;

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
	tail = s->buf[slot];
	line = s->buf[slot] + SCRATCH_SIZE / 2;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (sl == 0)
		BPF_SEQ_PRINTF(seq, "%-" UDP4_WIDTH "s\n",
			       "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
			       "retrnsmt   uid  timeout inode ref pointer drops");

	/* as udp4_format_sock() and __ip6_dgram_sock_seq_show(); UDP has no timers */
	srcp = bpf_ntohs(up->inet.inet_sport);
	destp = bpf_ntohs(skc->skc_dport);
	/* sk_wmem_alloc_get() and udp_rqueue_get() */
	tx_queue = sk->sk_wmem_alloc.refs.counter - 1;
	rx_queue = sk->sk_backlog.rmem_alloc.counter - up->forward_deficit;
	/* uid, timeout, inode, ref, pointer, drops */
	BPF_SNPRINTF(tail, SCRATCH_SIZE / 2, "%5u %8d %lu %d %pK %u", ctx->uid, 0, sock_ino(sk),
		     proc_refcnt(sk), sk, sock_drops(sk));
	if (skc->skc_family == AF_INET6) {
		src = skc->skc_v6_rcv_saddr.in6_u.u6_addr32;
		dst = skc->skc_v6_daddr.in6_u.u6_addr32;
		BPF_SEQ_PRINTF(seq, "%5d: %08X%08X%08X%08X:%04X %08X%08X%08X%08X:%04X ",
			       sl, src[0], src[1], src[2], src[3], srcp,
			       dst[0], dst[1], dst[2], dst[3], destp);
		BPF_SEQ_PRINTF(seq, "%02X %08X:%08X %02X:%08lX %08X %s\n", skc->skc_state,
			       tx_queue, rx_queue, 0, 0L, 0, tail);
	} else {
		BPF_SNPRINTF(line, SCRATCH_SIZE / 2,
			     "%5d: %08X:%04X %08X:%04X %02X %08X:%08X %02X:%08lX %08X %s",
			     sl, skc->skc_rcv_saddr, srcp, skc->skc_daddr, destp,
			     skc->skc_state, tx_queue, rx_queue, 0, 0L, 0, tail);
		BPF_SEQ_PRINTF(seq, "%-" UDP4_WIDTH "s\n", line);
	}
	scratch_release(s, slot);
	return 0;
}
