// SPDX-License-Identifier: GPL-2.0
/*
 * sockmap: one line per slot of one BPF_MAP_TYPE_SOCKMAP or per element of one
 * BPF_MAP_TYPE_SOCKHASH map. Columns: iterfs/readmes/sockmap.
 */
#include "hex.bpf.h"

char _license[] SEC("license") = "GPL";

SEC("iter/sockmap")
int dump_sockmap(struct bpf_iter__sockmap *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct sock *sk = ctx->sk;
	void *key = ctx->key;
	struct scratch *s;
	int slot;

	/* a sockmap's empty slots come with a key and no socket */
	if (!key)
		return 0;
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	BPF_SEQ_PRINTF(seq, "key: ");
	seq_write_hex(seq, s->buf[slot], key, ctx->map->key_size);
	scratch_release(s, slot);
	if (sk)
		/* the ino: and sk: (socket cookie) fields of ss -e */
		BPF_SEQ_PRINTF(seq, "  ino:%lu sk:%llx\n", sock_ino(sk), bpf_get_socket_cookie(sk));
	else
		BPF_SEQ_PRINTF(seq, "  -\n");
	return 0;
}
