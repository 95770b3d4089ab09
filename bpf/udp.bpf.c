// SPDX-License-Identifier: GPL-2.0
/*
 * udp: one line per UDP socket of the iterator's network namespace, the line
 * /proc/net/udp (IPv4) or /proc/net/udp6 (IPv6) shows for it. Columns:
 * iterfs/readmes/udp.
 */
#include "iterfs.bpf.h"
#include "line.bpf.h"
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "GPL";

/* include/linux/socket.h: macros, not in BTF */
#define AF_INET		2
#define AF_INET6	10
/* udp4_seq_show(): seq_setwidth(127) and seq_pad() fill IPv4 lines with spaces */
#define UDP4_WIDTH	127
#define PK_WIDTH	16
#define PAD_MAX		64

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
	__u32 at, end = LINE_PART, from;
	char *head, *tail, *pad;
	__u64 spaces;
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
	pad = head + 4 * LINE_PART;
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
	srcp = bpf_ntohs(up->inet.inet_sport);
	destp = bpf_ntohs(skc->skc_dport);
	/* sk_wmem_alloc_get() and udp_rqueue_get() */
	tx_queue = sk->sk_wmem_alloc.refs.counter - 1;
	rx_queue = sk->sk_backlog.rmem_alloc.counter - up->forward_deficit;
	/* built by hand, backwards (line.bpf.h): up to the pointer, %pK, then drops and the padding */
	at = LINE_PART;
	at = put_char(head, at, ' ');
	at = put_sdec(head, at, proc_refcnt(sk), 0);
	at = put_char(head, at, ' ');
	at = put_udec64(head, at, sock_ino(sk), 0);
	at = put_char(head, at, ' ');
	at = put_sdec(head, at, 0, 8);
	at = put_char(head, at, ' ');
	at = put_udec(head, at, ctx->uid, 5);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, 0, 8);
	at = put_char(head, at, ' ');
	at = put_hex_long(head, at, 0);
	at = put_char(head, at, ':');
	at = put_hex(head, at, 0, 2);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, rx_queue, 8);
	at = put_char(head, at, ':');
	at = put_hex(head, at, tx_queue, 8);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, skc->skc_state, 2);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, destp, 4);
	at = put_char(head, at, ':');
	if (v6) {
		dst = skc->skc_v6_daddr.in6_u.u6_addr32;
		at = put_hex(head, at, dst[3], 8);
		at = put_hex(head, at, dst[2], 8);
		at = put_hex(head, at, dst[1], 8);
		at = put_hex(head, at, dst[0], 8);
	} else {
		at = put_hex(head, at, skc->skc_daddr, 8);
	}
	at = put_char(head, at, ' ');
	at = put_hex(head, at, srcp, 4);
	at = put_char(head, at, ':');
	if (v6) {
		src = skc->skc_v6_rcv_saddr.in6_u.u6_addr32;
		at = put_hex(head, at, src[3], 8);
		at = put_hex(head, at, src[2], 8);
		at = put_hex(head, at, src[1], 8);
		at = put_hex(head, at, src[0], 8);
	} else {
		at = put_hex(head, at, skc->skc_rcv_saddr, 8);
	}
	at = put_char(head, at, ' ');
	at = put_char(head, at, ':');
	at = put_sdec(head, at, sl, 5);
	end = put_udec(tail, end, sock_drops(sk), 0);
	end = put_char(tail, end, ' ');
	/* udp4_seq_show(): seq_setwidth(127) and seq_pad() fill IPv4 lines with spaces */
	spaces = v6 ? 0 : at_least_0((__s64)UDP4_WIDTH -
				     (__s64)((LINE_PART - at) + PK_WIDTH + (LINE_PART - end)));
	spaces &= PAD_MAX - 1;
	__builtin_memset(pad, ' ', PAD_MAX);
	pad[PAD_MAX] = '\n';	/* spaces, then the newline at pad[PAD_MAX] */
	write_part(seq, head, at);
	/* %pK prints as kptr_restrict decides for the reader: 16 characters on a 64-bit kernel */
	BPF_SEQ_PRINTF(seq, "%pK", sk);
	write_part(seq, tail, end);
	from = (PAD_MAX - spaces) & (2 * PAD_MAX - 1);
	barrier_var(from);
	bpf_seq_write(seq, pad + from, spaces + 1);
	scratch_release(s, slot);
	return 0;
}
