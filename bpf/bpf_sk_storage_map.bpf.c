// SPDX-License-Identifier: GPL-2.0
/*
 * bpf_sk_storage_map: one line per socket that has a value in one
 * BPF_MAP_TYPE_SK_STORAGE map. Columns: iterfs/readmes/bpf_sk_storage_map.
 */
#include "hex.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/bpf_sk_storage_map")
int dump_bpf_sk_storage_map(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct sock *sk = ctx->sk;
	void *value = ctx->value;
	struct scratch *s;
	int slot;

	if (!sk || !value)
		return 0;
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	/* the ino: and sk: (socket cookie) fields of ss -e */
	BPF_SEQ_PRINTF(seq, "ino:%lu sk:%llx  value: ", sock_ino(sk), bpf_get_socket_cookie(sk));
	seq_write_hex(seq, s->buf[slot], value, ctx->map->value_size);
	BPF_SEQ_PRINTF(seq, "\n");
	scratch_release(s, slot);
	return 0;
}
