/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A line built by hand in a scratch slot, as printf would format it: a
 * bpf_seq_printf() parses its format and copies its strings on every call,
 * which made the socket programs slower than /proc (2 us a line against
 * 0.1 us without; bpftool prog show's run_time_ns, kernel.bpf_stats_enabled).
 *
 * Lines are built from their end backwards, in parts of LINE_PART bytes: each
 * put_*() writes its field just before @pos and returns the new start. A
 * field writes the most it may need unconditionally (leading zeros, spaces),
 * and what spills before its own start is overwritten by the field before it
 * (or left outside what is written out). So no branch depends on a number,
 * the offsets are masked into the part, and the verifier walks each line
 * once, with every write in bounds. A part's bytes are written out from
 * @pos to its end: a part is followed by LINE_PART bytes more of the slot,
 * which that bound needs.
 */
#ifndef __ITERFS_LINE_BPF_H
#define __ITERFS_LINE_BPF_H

#define LINE_PART	512
#define LINE_MASK	(LINE_PART - 1)

/*
 * Without a branch: the compiler would make comparisons of these (v > 9,
 * v > 99, ...), and each comparison a state more for the verifier; the empty
 * asm hides the value from it.
 */
static __always_inline __u64 nonzero(__u64 v)	/* 1 if v is not 0, else 0 */
{
	__u64 t = v | -v;

	barrier_var(t);
	return t >> 63;
}

static __always_inline __u64 at_least_0(__s64 v)	/* v, or 0 where it is below 0 */
{
	__u64 sign = v >> 63;

	barrier_var(sign);
	return (__u64)v & ~sign;
}

/*
 * part[at & LINE_MASK] = c, with the mask kept: where the compiler can bound
 * at itself it drops the mask, into a pointer minus a number, which the
 * verifier refuses.
 */
static __always_inline void store(char *part, __u32 at, char c)
{
	__u32 i = at & LINE_MASK;

	barrier_var(i);
	part[i] = c;
}

/* A hex digit, uppercase or (@lower 1) lowercase */
static __always_inline char hex_digit(__u64 d, __u64 lower)
{
	__u64 letter = (9 - d) >> 63;

	barrier_var(letter);
	return '0' + d + letter * ('A' - '0' - 10 + (lower & 1) * ('a' - 'A'));
}

/*
 * @digits hex digits of @v (at most @most, a constant), as "%0<digits>X"
 * prints, or "%0<digits>x" with @lower 1.
 */
static __always_inline __u32 put_hex_n(char *part, __u32 pos, __u64 v, __u32 digits, const int most,
				       __u64 lower)
{
#pragma unroll
	for (int i = 0; i < most; i++) {
		store(part, pos - 1 - i, hex_digit(v & 15, lower));
		v >>= 4;
	}
	return pos - (digits & 31);
}

/* "%0<digits>X" of a value that fits in @digits (a constant) */
#define put_hex(part, pos, v, digits)	put_hex_n(part, pos, v, digits, digits, 0)

/* "%0<least>X" (or "%0<least>x", @lower 1): at least @least (a constant) hex digits, more for a larger value. */
static __always_inline __u32 put_hex_least(char *part, __u32 pos, __u64 v, const int least, __u64 lower)
{
	__u32 digits = least;

#pragma unroll
	for (int k = least; k < 16; k++)
		digits += nonzero(v >> (4 * k));
	return put_hex_n(part, pos, v, digits, 16, lower);
}

/* "%08lX" */
#define put_hex_long(part, pos, v)	put_hex_least(part, pos, v, 8, 0)

/* v / 10 for any 32-bit v, by a multiplication: a division instruction costs ten times as much */
static __always_inline __u32 div10(__u32 v)
{
	return ((__u64)v * 0xCCCCCCCDULL) >> 35;
}

/*
 * @n decimal digits of @r (a 32-bit value), the units just before @pos;
 * *@digits counts one more for each digit there is after the first, with
 * @higher the value of the digits above these.
 */
static __always_inline __u32 put_digits(char *part, __u32 pos, __u32 r, __u64 higher, __u64 *digits,
					const int n)
{
#pragma unroll
	for (int i = 0; i < n; i++) {
		__u32 q = div10(r);

		store(part, pos - 1 - i, '0' + (r - 10 * q));
		r = q;
		*digits += nonzero(r | higher);
	}
	return pos - n;
}

/* The sign and the spaces that right-align a number of @digits in @width (at most 15). */
static __always_inline __u32 put_sign_pad(char *part, __u32 pos, __u64 digits, __u64 negative, __u32 width)
{
	__u64 pad;

	pos -= digits & 31;
	store(part, pos - 1, '-');
	pos -= negative & 1;
	pad = at_least_0((__s64)width - (__s64)(digits + negative)) & 15;
#pragma unroll
	for (int i = 0; i < 15; i++)
		store(part, pos - 1 - i, ' ');
	return pos - pad;
}

/*
 * "%<width>d" (@negative: 1 for a value below zero, @v its magnitude) or
 * "%<width>u" of a 32-bit value: decimal, right-aligned in @width with spaces.
 */
static __always_inline __u32 put_dec32(char *part, __u32 pos, __u32 v, __u64 negative, __u32 width)
{
	__u64 digits = 1;

	put_digits(part, pos, v, 0, &digits, 10);
	return put_sign_pad(part, pos, digits, negative, width);
}

/* "%<width>lu" of a 64-bit value: two divisions by 10^9, then 32-bit digits. */
static __always_inline __u32 put_udec64(char *part, __u32 pos, __u64 v, __u32 width)
{
	__u64 hi = v / 1000000000ULL, top = hi / 1000000000ULL, digits = 1;
	__u32 at;

	at = put_digits(part, pos, v - hi * 1000000000ULL, hi, &digits, 9);
	at = put_digits(part, at, hi - top * 1000000000ULL, top, &digits, 9);
	put_digits(part, at, top, 0, &digits, 2);
	return put_sign_pad(part, pos, digits, 0, width);
}

static __always_inline __u32 put_udec(char *part, __u32 pos, __u32 v, __u32 width)
{
	return put_dec32(part, pos, v, 0, width);
}

/* "%<width>d" of an int */
static __always_inline __u32 put_sdec(char *part, __u32 pos, int v, __u32 width)
{
	__u64 negative = (__u32)v >> 31;

	return put_dec32(part, pos, ((__u32)v ^ -(__u32)negative) + (__u32)negative, negative, width);
}

static __always_inline __u32 put_char(char *part, __u32 pos, char c)
{
	store(part, pos - 1, c);
	return pos - 1;
}

/* Writes out a part's bytes from @pos (what put_*() returned last) to its end. */
static __always_inline void write_part(struct seq_file *seq, char *part, __u32 pos)
{
	__u32 from = pos & LINE_MASK, len = (LINE_PART - pos) & LINE_MASK;

	barrier_var(from);
	barrier_var(len);
	bpf_seq_write(seq, part + from, len);
}

#endif /* __ITERFS_LINE_BPF_H */
