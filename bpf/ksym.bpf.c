// SPDX-License-Identifier: GPL-2.0
/* ksym: one line per kernel symbol, as /proc/kallsyms. Columns: iterfs/readmes/ksym. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

#define NAME_MAX_LEN	512	/* KSYM_NAME_LEN */
#define MODULE_MAX_LEN	56	/* MODULE_NAME_LEN */

/* 16 hex digits of v, as %px prints a 64-bit pointer. */
static __always_inline void put_hex16(char *out, __u64 v)
{
#pragma unroll
	for (int i = 15; i >= 0; i--) {
		__u8 d = v & 15;

		out[i] = d < 10 ? '0' + d : 'a' + d - 10;
		v >>= 4;
	}
}

/*
 * One line per symbol, built in a scratch slot and written with one
 * bpf_seq_write(): a bpf_seq_printf() parses its format and copies its
 * strings on every call, which made this program 1.5x slower than
 * /proc/kallsyms (make bench).
 */
SEC("iter/ksym")
int dump_ksym(struct bpf_iter__ksym *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct kallsym_iter *it = ctx->ksym;
	struct scratch *s;
	__u32 at, slot;
	char *buf;
	long len;
	char type;
	int claimed;

	/* s_show() skips the nameless debugging symbols */
	if (!it || !it->name[0])
		return 0;
	type = it->type;
	if (it->module_name[0]) {
		/*
		 * After the last symbol the kernel calls the program once more, with
		 * the iterator instead of NULL: it still holds the last symbol, relabeled
		 * "__builtin__kprobes" by the failed lookup. Lookups past the core image
		 * leave pos at the symbol's index, which is seq_num; in that extra call
		 * pos is one past it.
		 */
		if ((__u64)it->pos != ctx->meta->seq_num)
			return 0;
		/* a module symbol's case says whether the module exports it */
		if (it->exported && type >= 'a' && type <= 'z')
			type -= 'a' - 'A';
		else if (!it->exported && type >= 'A' && type <= 'Z')
			type += 'a' - 'A';
	}

	claimed = scratch_claim(&s);
	if (claimed < 0 || claimed >= SCRATCH_SLOTS)
		return 1;
	slot = claimed;
	buf = s->buf[slot];
	/* show_value was decided from the creds of whoever created the iterator */
	put_hex16(buf, it->show_value ? it->value : 0);
	buf[16] = ' ';
	buf[17] = type;
	buf[18] = ' ';
	len = bpf_probe_read_kernel_str(buf + 19, NAME_MAX_LEN, it->name);
	at = 19 + (len > 1 ? len - 1 : 0);	/* without its NUL */
	if (it->module_name[0] && at < 19 + NAME_MAX_LEN) {
		buf[at++] = '\t';
		buf[at++] = '[';
		len = bpf_probe_read_kernel_str(buf + at, MODULE_MAX_LEN, it->module_name);
		at += len > 1 ? len - 1 : 0;
		if (at < 19 + NAME_MAX_LEN + 2 + MODULE_MAX_LEN)
			buf[at++] = ']';
	}
	if (at < SCRATCH_SIZE - 1) {
		buf[at++] = '\n';
		bpf_seq_write(seq, buf, at);
	}
	scratch_release(s, slot);
	return 0;
}
