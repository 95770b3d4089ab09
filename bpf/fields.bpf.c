// SPDX-License-Identifier: GPL-2.0
/*
 * fields: serves MNT/<target>/fields=<f1>,<f2>,.../, any members of the objects
 * of any target, as the running kernel's BTF lays them out.
 *
 * The daemon resolves each field name against the kernel's BTF into a recipe
 * (iterfs/fields.py) and writes the recipes into .rodata before the load; it
 * points this one program at the target (bpf_program__set_attach_target()),
 * so "fields" in the section name is a placeholder. Per object the program
 * writes either text, its line of the fields (text = 1), or a record: per
 * field a status byte (1 read, 0 not readable) and the field's bytes, which
 * the daemon turns into JSON or into text the program does not print (enum
 * names). The text is printed here, where it costs least: one pass, no copy.
 *
 * Each chain of pointers is followed with bpf_probe_read_kernel(), which fails
 * on NULL and bad addresses instead of faulting: a kernel thread's mm, say,
 * is "not readable", not a crash. The recipes are walked with bpf_loop(): the
 * verifier checks the callback once, whatever the field list, where a plain
 * loop over .rodata would be walked recipe by recipe. Every byte is built on
 * the stack of the run, or in a scratch slot it has claimed (iterfs.bpf.h):
 * concurrent runs share nothing.
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

#define MAX_FIELDS 32
#define MAX_STEPS 4	/* pointers followed by one field */
#define MAX_BYTES 64	/* bytes read for one field: strings and char arrays are cut there */
#define MAX_SLOTS 4	/* the context's arguments: meta, then up to three objects or values */
#define MAX_PACKED 12	/* values of one bpf_seq_printf() (MAX_BPRINTF_VARARGS) */
#define LINE_FORMAT_SIZE 256

enum how {
	READ_BYTES = 0,		/* size bytes at the end of the chain */
	READ_SLOT = 1,		/* the context argument itself (fd of task_file, uid of tcp) */
	READ_STRING = 2,	/* a NUL-terminated string at the end of the chain (a char *) */
};

enum print {
	PRINT_SIGNED = 0,
	PRINT_UNSIGNED = 1,
	PRINT_BOOL = 2,
	PRINT_POINTER = 3,	/* 0x and hex */
	PRINT_STRING = 4,	/* up to the first NUL; control bytes and backslash escaped */
	PRINT_HEX = 5,		/* two hex digits per byte */
};

struct recipe {
	__u32 slot;			/* the context argument the chain starts from */
	__u32 steps;			/* pointers followed, 0..MAX_STEPS */
	__u32 offset[MAX_STEPS + 1];	/* bytes added before each dereference, then before the read */
	__u32 size;			/* bytes read at the end, 1..MAX_BYTES */
	__u32 how;
	__u32 guarded;			/* not readable when the object fails the guard below */
	/* text only */
	__u32 print;
	__u32 shift;			/* a bitfield: its first bit, and how many */
	__u32 bits;
	__u32 big_endian;		/* __be16, __be32, __be64: swapped to host order */
	__u32 last;			/* the line's last field: a newline after it, else a tab */
};

/* Set by the daemon before the load; the verifier sees them as constants. */
const volatile __u32 nslots = 2;		/* arguments in the target's context */
const volatile __u32 object_slots = 2;		/* bit per argument that is NULL after the last object */
const volatile __u32 nfields = 0;
const volatile __u32 text = 0;
/*
 * A line of at most MAX_PACKED fields and no byte array is printed by one
 * bpf_seq_printf() with this format, which the daemon writes ("%lld\t%s\n"),
 * when every field of the object is readable and no string needs escaping;
 * otherwise field by field. One call per line is what the targets' own
 * programs cost; one per field costs half as much again.
 */
const volatile __u32 packed = 0;
const volatile char line_format[LINE_FORMAT_SIZE] = {};
const volatile struct recipe recipes[MAX_FIELDS] = {};
/*
 * A byte of the object that says which fields are its own: the tcp walk also
 * meets time-wait and request sockets, which are only a struct sock_common.
 */
const volatile __u32 guard_on = 0;
const volatile __u32 guard_offset = 0;		/* in the object of argument 1 */
const volatile __u8 guard_refuse[2] = {};	/* values of that byte that fail the guard */

struct walk {
	__u64 slots[MAX_SLOTS];
	struct seq_file *seq;
	__u32 guard_failed;
	/* packed lines: the values (strings: in the scratch slot), and whether the line can be */
	__u32 collect;
	__u32 packable;
	struct scratch *scratch;
	int slot;
	__u64 args[MAX_PACKED];
};

/* An integer of size bytes (little-endian, zero above), as the recipe says it is. */
static __always_inline __u64 integer_of(const volatile struct recipe *r, __u64 v, __u32 size)
{
	__u32 width = size * 8, shift = r->shift, bits = r->bits;

	if (bits && bits < 64 && shift < 64) {
		v = (v >> shift) & ((1ULL << bits) - 1);
		width = bits;
	} else if (r->big_endian) {
		if (size == 2)
			v = __builtin_bswap16(v);
		else if (size == 4)
			v = __builtin_bswap32(v);
		else if (size == 8)
			v = __builtin_bswap64(v);
	}
	if (width > 0 && width < 64)
		v &= (1ULL << width) - 1;	/* a context argument's slot has 8 bytes, the value fewer */
	if (r->print == PRINT_SIGNED && width > 0 && width < 64)
		v = (__s64)(v << (64 - width)) >> (64 - width);
	else if (r->print == PRINT_BOOL)
		v = v != 0;
	return v;
}

/*
 * An integer of size bytes (little-endian, zero above), as the recipe says to
 * print it, and the separator after it: one helper call per field.
 */
static __always_inline void print_integer(struct seq_file *seq, const volatile struct recipe *r,
					  __u64 v, __u32 size, char sep)
{
	v = integer_of(r, v, size);
	if (r->print == PRINT_SIGNED) {
		BPF_SEQ_PRINTF(seq, "%lld%c", v, sep);
	} else if (r->print == PRINT_BOOL) {
		BPF_SEQ_PRINTF(seq, "%llu%c", v, sep);
	} else if (r->print == PRINT_POINTER) {
		BPF_SEQ_PRINTF(seq, "0x%llx%c", v, sep);
	} else {
		BPF_SEQ_PRINTF(seq, "%llu%c", v, sep);
	}
}

static __always_inline int plain_char(unsigned char c)
{
	return c >= 0x20 && c != 0x7f && c != '\\';
}

/* A string being printed: its bytes (the caller's stack), their length, and whether all are plain. */
struct chars {
	struct seq_file *seq;
	const char *s;
};

/*
 * The length of the string at s (to its first NUL) when no byte before the NUL
 * needs escaping, else -1; s has MAX_BYTES + 1 bytes, zero after the value.
 * Eight bytes at a time: a byte below 0x20 (NUL too), DEL or a backslash sets
 * its high bit in special, and the lowest one set is exact (a borrow only
 * carries upwards), so it says which comes first, the NUL or a byte to escape.
 */
static __always_inline int plain_length(const char *s)
{
	const __u64 ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	__u64 x, del, backslash, special, low;

#pragma unroll
	for (int k = 0; k < MAX_BYTES / 8; k++) {
		__builtin_memcpy(&x, s + k * 8, sizeof(x));
		del = x ^ (ones * 0x7f);
		backslash = x ^ (ones * 0x5c);
		special = ((x - ones * 0x20) & ~x & highs) | ((del - ones) & ~del & highs) |
			  ((backslash - ones) & ~backslash & highs);
		if (!special)
			continue;
		low = special & -special;
		for (int b = 0; b < 8; b++) {
			if (low == 0x80ULL << (8 * b))
				return s[k * 8 + b] ? -1 : k * 8 + b;
		}
		return -1;
	}
	return MAX_BYTES;	/* s[MAX_BYTES] is the NUL */
}

static long print_char(__u64 i, struct chars *t)
{
	unsigned char c = t->s[i & (MAX_BYTES - 1)];
	char escape[2] = {'\\', 0};

	escape[1] = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\\' ? '\\' : 0;
	if (plain_char(c))
		bpf_seq_write(t->seq, &t->s[i & (MAX_BYTES - 1)], 1);
	else if (escape[1])
		bpf_seq_write(t->seq, escape, 2);
	else
		BPF_SEQ_PRINTF(t->seq, "\\x%02x", c);
	return 0;
}

static long print_hex(__u64 i, struct chars *t)
{
	BPF_SEQ_PRINTF(t->seq, "%02x", (unsigned char)t->s[i & (MAX_BYTES - 1)]);
	return 0;
}

/*
 * Bytes up to the first NUL: in one write when none needs escaping (the usual
 * case), else byte by byte, a tab, newline, return or backslash as \t \n \r
 * \\ and other control bytes as \xNN. Loops over bytes are bpf_loop()s: the
 * verifier checks each callback once.
 */
static __always_inline void print_string(struct seq_file *seq, const char *s, char sep)
{
	struct chars t = {.seq = seq, .s = s};
	int len = plain_length(s);

	if (len >= 0) {	/* s ends with a NUL: the caller's buffer has a byte more than any value */
		BPF_SEQ_PRINTF(seq, "%s%c", s, sep);
		return;
	}
	for (len = 0; len < MAX_BYTES && s[len]; len++)
		;
	bpf_loop(len, print_char, &t, 0);
	bpf_seq_write(seq, &sep, 1);
}

static __always_inline void print_field(struct seq_file *seq, const volatile struct recipe *r,
					const char *value, __u32 size, int ok)
{
	char sep = r->last ? '\n' : '\t';
	__u64 v = 0;

	if (!ok) {
		BPF_SEQ_PRINTF(seq, "-%c", sep);
	} else if (r->print == PRINT_STRING) {
		print_string(seq, value, sep);
	} else if (r->print == PRINT_HEX) {
		struct chars t = {.seq = seq, .s = value};

		bpf_loop(size, print_hex, &t, 0);
		bpf_seq_write(seq, &sep, 1);
	} else {
		__builtin_memcpy(&v, value, sizeof(v));
		print_integer(seq, r, v, size, sep);
	}
}

/* A packed line's value of field i; 1 (stop) when the line cannot be packed. */
static __always_inline long collect_field(struct walk *w, const volatile struct recipe *r, __u64 i,
					  const char *value, __u32 size, int ok)
{
	struct scratch *s = w->scratch;
	__u64 v = 0;
	char *copy;

	if (!ok || i >= MAX_PACKED || !s) {
		w->packable = 0;
		return 1;
	}
	if (r->print != PRINT_STRING) {
		__builtin_memcpy(&v, value, sizeof(v));
		w->args[i] = integer_of(r, v, size);
		return 0;
	}
	if (plain_length(value) < 0) {
		w->packable = 0;
		return 1;
	}
	copy = s->buf[w->slot & (SCRATCH_SLOTS - 1)] + i * (MAX_BYTES + 1);
	__builtin_memcpy(copy, value, MAX_BYTES + 1);	/* with the NUL after the value */
	w->args[i] = (__u64)copy;
	return 0;
}

static long show_field(__u64 i, struct walk *w)
{
	char out[1 + MAX_BYTES + 1];	/* status, the value, and a NUL after any value */
	const volatile struct recipe *r;
	__u32 size, how, s;
	__u64 p;
	int ok;

	if (i >= MAX_FIELDS)
		return 1;
	r = &recipes[i];
	size = r->size;
	how = r->how;
	if (size == 0 || size > MAX_BYTES)
		return 1;
	__builtin_memset(out, 0, sizeof(out));
	p = w->slots[r->slot & (MAX_SLOTS - 1)];
	ok = !(r->guarded && w->guard_failed);
	if (how == READ_SLOT) {
		if (size > 8)
			return 1;
		__builtin_memcpy(&out[1], &p, 8);	/* the low bytes: a little-endian slot */
	} else {
		for (s = 0; s < MAX_STEPS && ok; s++) {
			if (s >= r->steps)
				break;
			ok = !bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + r->offset[s]));
		}
		if (ok && s < MAX_STEPS + 1) {
			p += r->offset[s];
			if (how == READ_STRING)
				ok = bpf_probe_read_kernel_str(&out[1], size, (void *)p) >= 0;
			else
				ok = !bpf_probe_read_kernel(&out[1], size, (void *)p);
		}
		if (!ok)
			__builtin_memset(out, 0, sizeof(out));
	}
	if (w->collect)
		return collect_field(w, r, i, &out[1], size, ok);
	if (text) {
		print_field(w->seq, r, &out[1], size, ok);
		return 0;
	}
	out[0] = ok;
	bpf_seq_write(w->seq, out, 1 + size);
	return 0;
}

struct bpf_iter__any {
	struct bpf_iter_meta *meta;
};

SEC("iter/fields")
int dump_fields(struct bpf_iter__any *ctx)
{
	struct walk w = {};
	__u32 n = nslots;
	__u8 state;

	if (n < 1 || n > MAX_SLOTS)
		return 0;
	/* every target's context is its arguments, 8 bytes each, in the kernel's memory */
	if (bpf_probe_read_kernel(w.slots, n * sizeof(__u64), ctx))
		return 0;
#pragma unroll
	for (int s = 1; s < MAX_SLOTS; s++) {
		if ((object_slots & (1u << s)) && !w.slots[s])
			return 0;	/* the call after the last object */
	}
	if (guard_on) {
		if (bpf_probe_read_kernel(&state, 1, (void *)(w.slots[1] + guard_offset)))
			w.guard_failed = 1;
		else
			w.guard_failed = state == guard_refuse[0] || state == guard_refuse[1];
	}
	w.seq = ctx->meta->seq;
	if (packed && text && nfields <= MAX_PACKED) {
		w.slot = scratch_claim(&w.scratch);
		if (w.slot >= 0) {
			w.collect = w.packable = 1;
			bpf_loop(nfields, show_field, &w, 0);
			w.collect = 0;
			if (w.packable)
				bpf_seq_printf(w.seq, (const char *)line_format, sizeof(line_format), w.args,
					       nfields * sizeof(__u64));
			scratch_release(w.scratch, w.slot);
			if (w.packable)
				return 0;
		}
	}
	bpf_loop(nfields, show_field, &w, 0);
	return 0;
}
