/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Keys and values as hex, as bpftool map dump prints them: for the programs
 * that print map elements (bpf_map_elem, bpf_sk_storage_map, sockmap).
 */
#ifndef __ITERFS_HEX_BPF_H
#define __ITERFS_HEX_BPF_H

#include "iterfs.bpf.h"

/* bytes printed of one key or value; longer ones end in " ..." */
#define HEX_MAX		512

/*
 * A lowercase hex digit, as bpftool's fprint_hex() ("%02hhx"). Computed, not
 * looked up: a digit table at file scope is a BTF global of every program
 * including this header (iterfs offers those as parameters of a user's view).
 */
static __always_inline char hex_digit(unsigned char b)
{
	return b < 10 ? '0' + b : 'a' + b - 10;
}

/* bpf_loop() callback: byte @i of the copy at the end of *@slot, as hex. */
static long hex_byte(__u64 i, char **slot)
{
	char *buf = *slot;
	unsigned char b;
	__u64 pos;

	if (i >= HEX_MAX)
		return 1;
	b = buf[SCRATCH_SIZE - HEX_MAX + i];
	/* two spaces every 8 bytes, as bpftool's fprint_hex() */
	pos = 3 * i + i / 8;
	buf[pos] = hex_digit(b >> 4);
	buf[pos + 1] = hex_digit(b & 15);
	buf[pos + 2] = ' ';
	buf[pos + 3] = ' ';
	return 0;
}

/*
 * Writes @len bytes at @src as bpftool's fprint_hex() does, "01 02 .. 08  09 ..",
 * but its line break after every 16 bytes is two spaces here. @buf is a
 * scratch slot. The bytes are copied with bpf_probe_read_kernel(): indexing
 * ctx->key or ctx->value directly would make the verifier record HEX_MAX as
 * the size read, and bpf_iter_attach_map() then refuses (EACCES) every map
 * with smaller keys or values.
 */
static __always_inline void seq_write_hex(struct seq_file *seq, char *buf, const void *src,
					  __u32 len)
{
	__u64 n = len < HEX_MAX ? len : HEX_MAX;

	if (n == 0 || bpf_probe_read_kernel(buf + SCRATCH_SIZE - HEX_MAX, n, src))
		return;
	bpf_loop(n, hex_byte, &buf, 0);
	bpf_seq_write(seq, buf, 3 * n - 1 + (n - 1) / 8);
	if (len > HEX_MAX)
		BPF_SEQ_PRINTF(seq, " ...");
}

/* Characters seq_write_hex() writes for @len bytes. */
static __always_inline __u32 hex_chars(__u32 len)
{
	__u32 n = len < HEX_MAX ? len : HEX_MAX;

	return n ? 3 * n - 1 + (n - 1) / 8 + (len > HEX_MAX ? 4 : 0) : 0;
}

#endif /* __ITERFS_HEX_BPF_H */
