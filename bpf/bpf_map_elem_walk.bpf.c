// SPDX-License-Identifier: GPL-2.0
/*
 * bpf_map_elem on a kernel that refuses iter/bpf_map_elem programs: the same
 * lines as bpf_map_elem.bpf.c, made by an iter/bpf_map program. Before each
 * load iterfs points the placeholder map `elems` at map N
 * (bpf_map__reuse_fd()), so one load serves one map; the program walks it
 * with bpf_for_each_map_elem() once, at the first map the bpf_map iterator
 * visits. The whole dump is then one object's output, and must fit in the
 * iterator's read buffer of 8 pages (else E2BIG). Columns: iterfs/readmes/bpf_map_elem.
 */
#include "hex.bpf.h"

char _license[] SEC("license") = "GPL";

/* as in bpf_map_elem.bpf.c */
#define LINE_MAX	24576
#define CPUS_MAX	8192

/* set before load: the verifier allows per-CPU lookups in per-CPU maps only */
const volatile bool percpu = false;

/* stands for map N: its type and sizes here are replaced by map N's at load */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} elems SEC(".maps");

struct walk {
	struct seq_file *seq;
	char *buf;		/* a scratch slot */
	const void *key;
	__u32 key_size;
	__u32 value_size;
};

/* bpf_loop() callback: the value of CPU @cpu, NULL past the last one */
static long print_cpu_value(__u64 cpu, struct walk *w)
{
	const void *value = bpf_map_lookup_percpu_elem(&elems, w->key, cpu);

	if (!value || cpu >= CPUS_MAX)
		return 1;
	if (5 + hex_chars(w->key_size) + (cpu + 1) * (18 + hex_chars(w->value_size)) > LINE_MAX) {
		BPF_SEQ_PRINTF(w->seq, "  ...");
		return 1;
	}
	BPF_SEQ_PRINTF(w->seq, "  value (CPU %02llu): ", cpu);
	seq_write_hex(w->seq, w->buf, value, w->value_size);
	return 0;
}

/* bpf_for_each_map_elem() callback: one element, one line */
static long print_elem(struct bpf_map *map, const void *key, void *value, struct walk *w)
{
	w->key = key;
	w->key_size = map->key_size;
	w->value_size = map->value_size;
	BPF_SEQ_PRINTF(w->seq, "key: ");
	seq_write_hex(w->seq, w->buf, key, w->key_size);
	if (percpu) {
		bpf_loop(CPUS_MAX, print_cpu_value, w, 0);
	} else {
		BPF_SEQ_PRINTF(w->seq, "  value: ");
		seq_write_hex(w->seq, w->buf, value, w->value_size);
	}
	/*
	 * Once the read buffer is full every write fails (-EOVERFLOW) and the
	 * read gives E2BIG: stop, rather than print the rest of a large map to no one.
	 */
	return BPF_SEQ_PRINTF(w->seq, "\n") ? 1 : 0;
}

SEC("iter/bpf_map")
int dump_bpf_map_elem(struct bpf_iter__bpf_map *ctx)
{
	struct walk w = {};
	struct scratch *s;
	int slot;

	/* seq_num stays 0 while the first map is retried */
	if (!ctx->map || ctx->meta->seq_num)
		return 0;
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	w.seq = ctx->meta->seq;
	w.buf = s->buf[slot];
	bpf_for_each_map_elem(&elems, print_elem, &w, 0);
	scratch_release(s, slot);
	return 0;
}
