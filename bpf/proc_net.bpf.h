/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The columns /proc/net/tcp and /proc/net/udp (and their IPv6 twins) share,
 * from sl to the pointer, and the way such a line ends: tcp4_seq_show(),
 * udp4_format_sock() and their siblings. Built by hand, backwards
 * (line.bpf.h); the pointer is the one bpf_seq_printf(), for %pK.
 */
#ifndef __ITERFS_PROC_NET_BPF_H
#define __ITERFS_PROC_NET_BPF_H

#include "line.bpf.h"

/* %pK prints as kptr_restrict decides for the reader: always 16 characters on a 64-bit kernel */
#define PK_WIDTH	16
/* the most spaces an IPv4 line is padded with (seq_setwidth() and seq_pad()) */
#define PAD_MAX		64

/* What a line shows up to its pointer, as each kind of socket fills it in. */
struct sock_cols {
	__u32 srcp, destp;
	__u32 state, tx_queue, rx_queue, timer;
	long when;
	__u32 retrnsmt;
	__u32 uid, timeout;
	__u64 inode;
	int refcnt;
	void *ptr;
};

/* "%08X" of an IPv4 address, or "%08X%08X%08X%08X" of an IPv6 one, as the kernel's u32s. */
static __always_inline __u32 put_inet_addr(char *part, __u32 at, const __u32 *v6addr, __u32 v4addr, int v6)
{
	if (!v6)
		return put_hex(part, at, v4addr, 8);
	at = put_hex(part, at, v6addr[3], 8);
	at = put_hex(part, at, v6addr[2], 8);
	at = put_hex(part, at, v6addr[1], 8);
	return put_hex(part, at, v6addr[0], 8);
}

/*
 * The columns from sl ("%<sl_width>d:") to the refcount and the space after
 * it, backwards before @at in @head.
 */
static __always_inline __u32 put_sock_columns(char *head, __u32 at, struct sock_common *skc, int v6,
					      int sl, const int sl_width, struct sock_cols *c)
{
	at = put_char(head, at, ' ');
	at = put_sdec(head, at, c->refcnt, 0);
	at = put_char(head, at, ' ');
	at = put_udec64(head, at, c->inode, 0);
	at = put_char(head, at, ' ');
	at = put_sdec(head, at, c->timeout, 8);
	at = put_char(head, at, ' ');
	at = put_udec(head, at, c->uid, 5);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, c->retrnsmt, 8);
	at = put_char(head, at, ' ');
	at = put_hex_long(head, at, c->when);
	at = put_char(head, at, ':');
	at = put_hex(head, at, c->timer, 2);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, c->rx_queue, 8);
	at = put_char(head, at, ':');
	at = put_hex(head, at, c->tx_queue, 8);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, c->state, 2);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, c->destp, 4);
	at = put_char(head, at, ':');
	at = put_inet_addr(head, at, skc->skc_v6_daddr.in6_u.u6_addr32, skc->skc_daddr, v6);
	at = put_char(head, at, ' ');
	at = put_hex(head, at, c->srcp, 4);
	at = put_char(head, at, ':');
	at = put_inet_addr(head, at, skc->skc_v6_rcv_saddr.in6_u.u6_addr32, skc->skc_rcv_saddr, v6);
	at = put_char(head, at, ' ');
	at = put_char(head, at, ':');
	return put_sdec(head, at, sl, sl_width);
}

/*
 * Writes the line: @head from @at, the pointer, @tail from @end, then spaces
 * up to @width characters (0: none, for IPv6 lines) and the newline. @pad:
 * 2 * PAD_MAX bytes of the slot.
 */
static __always_inline void write_sock_line(struct seq_file *seq, char *head, __u32 at, void *ptr,
					    char *tail, __u32 end, char *pad, __u32 width)
{
	__u64 spaces = at_least_0((__s64)width - (__s64)((LINE_PART - at) + PK_WIDTH + (LINE_PART - end)));
	__u32 from;

	spaces &= PAD_MAX - 1;
	__builtin_memset(pad, ' ', PAD_MAX);
	pad[PAD_MAX] = '\n';	/* spaces, then the newline at pad[PAD_MAX] */
	write_part(seq, head, at);
	BPF_SEQ_PRINTF(seq, "%pK", ptr);
	write_part(seq, tail, end);
	from = (PAD_MAX - spaces) & (2 * PAD_MAX - 1);
	barrier_var(from);
	bpf_seq_write(seq, pad + from, spaces + 1);
}

#endif /* __ITERFS_PROC_NET_BPF_H */
