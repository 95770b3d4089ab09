// SPDX-License-Identifier: GPL-2.0
/*
 * bpf_map_elem: one line per element of one hash or array map, the bytes as
 * bpftool map dump prints them. Columns: iterfs/readmes/bpf_map_elem.
 */
#include "hex.bpf.h"

char _license[] SEC("license") = "GPL";

/* the iterator's seq buffer is 8 pages, and one element must fit in it (else E2BIG) */
#define LINE_MAX	24576
/* NR_CPUS of CONFIG_MAXSMP */
#define CPUS_MAX	8192

struct percpu_values {
	struct seq_file *seq;
	char *buf;
	const unsigned char *value;
	__u32 value_size;
	__u32 key_chars;	/* characters of "key: ..." */
};

/*
 * bpf_loop() callback: the value of CPU @cpu. The kernel's copy holds the
 * values of the num_possible_cpus() possible CPUs, one after the other,
 * 8-byte aligned. Without data symbols in kallsyms (no CONFIG_KALLSYMS_ALL) a
 * program cannot read cpu_possible_mask; a per-CPU lookup stops at
 * nr_cpu_ids, which is the same count where the possible CPUs are 0..N-1
 * (x86, arm64). Nothing here changes *v, so the verifier sees the loop body once.
 */
static long print_cpu_value(__u64 cpu, struct percpu_values *v)
{
	__u64 off = cpu * ((v->value_size + 7) & ~7U);
	__u32 zero = 0;

	if (!bpf_map_lookup_percpu_elem(&iterfs_scratch, &zero, cpu))
		return 1;
	/* the verifier wants a bounded offset; values are at most 32 KiB (PCPU_MIN_UNIT_SIZE) */
	if (cpu >= CPUS_MAX || off >= (__u64)CPUS_MAX * 32768)
		return 1;
	if (v->key_chars + (cpu + 1) * (18 + hex_chars(v->value_size)) > LINE_MAX) {
		BPF_SEQ_PRINTF(v->seq, "  ...");
		return 1;
	}
	/* bpftool numbers the possible CPUs from 0, as the kernel's copy does */
	BPF_SEQ_PRINTF(v->seq, "  value (CPU %02llu): ", cpu);
	seq_write_hex(v->seq, v->buf, v->value + off, v->value_size);
	return 0;
}

SEC("iter/bpf_map_elem")
int dump_bpf_map_elem(struct bpf_iter__bpf_map_elem *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_map *map = ctx->map;
	void *key = ctx->key, *value = ctx->value;
	struct percpu_values v = {};
	struct scratch *s;
	__u32 type;
	int slot;

	if (!key || !value)
		return 0;
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;

	BPF_SEQ_PRINTF(seq, "key: ");
	seq_write_hex(seq, s->buf[slot], key, map->key_size);
	type = map->map_type;
	if (type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
	    type == BPF_MAP_TYPE_PERCPU_ARRAY) {
		v.seq = seq;
		v.buf = s->buf[slot];
		v.value = value;
		v.value_size = map->value_size;
		v.key_chars = 5 + hex_chars(map->key_size);
		bpf_loop(CPUS_MAX, print_cpu_value, &v, 0);
	} else {
		BPF_SEQ_PRINTF(seq, "  value: ");
		seq_write_hex(seq, s->buf[slot], value, map->value_size);
	}
	BPF_SEQ_PRINTF(seq, "\n");
	scratch_release(s, slot);
	return 0;
}
