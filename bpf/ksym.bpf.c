// SPDX-License-Identifier: GPL-2.0
/* ksym: one line per kernel symbol, as /proc/kallsyms. Columns: iterfs/readmes/ksym. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/ksym")
int dump_ksym(struct bpf_iter__ksym *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct kallsym_iter *it = ctx->ksym;
	void *value;
	char type;

	/* s_show() skips the nameless debugging symbols */
	if (!it || !it->name[0])
		return 0;

	/* show_value was decided from the creds of whoever created the iterator */
	value = it->show_value ? (void *)it->value : NULL;
	type = it->type;
	if (!it->module_name[0]) {
		BPF_SEQ_PRINTF(seq, "%px %c %s\n", value, type, it->name);
		return 0;
	}
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
	/* a name can fill the 512 bytes bpf_seq_printf() has for all strings of a call */
	BPF_SEQ_PRINTF(seq, "%px %c %s", value, type, it->name);
	BPF_SEQ_PRINTF(seq, "\t[%s]\n", it->module_name);
	return 0;
}
