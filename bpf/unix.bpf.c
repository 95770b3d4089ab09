// SPDX-License-Identifier: GPL-2.0
/* unix: one line per AF_UNIX socket, as /proc/net/unix. Columns: iterfs/readmes/unix. */
#include "iterfs.bpf.h"
#include "line.bpf.h"

char _license[] SEC("license") = "GPL";

/* include/linux/net.h; a define, not in BTF */
#define __SO_ACCEPTCON	(1 << 16)
/* sizeof(struct sockaddr_un::sun_path) */
#define UNIX_PATH_MAX	108
/*
 * net/unix/af_unix.c: a walk position is bucket << BUCKET_SPACE | offset, the
 * offset counting from 1 at the bucket's first socket. BUCKET_SPACE is
 * BITS_PER_LONG - (UNIX_HASH_BITS + 1) - 1, with UNIX_HASH_BITS 8 since the
 * unix iterator exists.
 */
#define UNIX_BUCKET_SPACE	(64 - (8 + 1) - 1)
#define UNIX_BUCKET(pos)	((pos) >> UNIX_BUCKET_SPACE)

/*
 * Per walk (meta->session_id), the hash bucket it printed last, plus 1. A
 * walk's own key, so concurrent walks share nothing; the walk's end deletes
 * it, and one left by a walk closed early is evicted (LRU).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} unix_printed SEC(".maps");

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/*
 * The address as unix_seq_show() prints it: a filesystem path up to its NUL,
 * an abstract name as '@' and its bytes, each NUL byte (the leading one too)
 * shown as '@'. @tmp: UNIX_PATH_MAX bytes of a scratch slot, or NULL (no
 * slot free), and then a byte at a time.
 */
static __always_inline void seq_write_addr(struct seq_file *seq, struct unix_address *addr, char *tmp)
{
	int len = addr->len - (int)offsetof(struct sockaddr_un, sun_path);
	const char *name = addr->name[0].sun_path;
	char c = 0;

	if (len <= 0 || len > UNIX_PATH_MAX)
		return;
	/* the NUL that ends a filesystem path is counted in addr->len */
	if (bpf_probe_read_kernel(&c, 1, name) == 0 && c)
		len--;
	if (!tmp) {
		for (int i = 0; i < UNIX_PATH_MAX && i < len; i++) {
			if (bpf_probe_read_kernel(&c, 1, name + i))
				return;
			bpf_seq_write(seq, c ? &c : "@", 1);
		}
		return;
	}
	if (len <= 0 || bpf_probe_read_kernel(tmp, len & 127, name))
		return;
	for (int i = 0; i < UNIX_PATH_MAX && i < len; i++) {
		if (!tmp[i])
			tmp[i] = '@';
	}
	bpf_seq_write(seq, tmp, len & 127);
}

/*
 * One line, built by hand in @buf (a scratch slot, line.bpf.h) after the
 * address: %pK prints as kptr_restrict decides for the reader, the one
 * bpf_seq_printf(). Without a slot (@buf NULL), the same in one printf.
 */
static __always_inline void show_sock(struct seq_file *seq, struct unix_sock *u, char *buf)
{
	struct sock *sk = (struct sock *)u;
	int state = sk->__sk_common.skc_state;
	/* the iterator holds one reference on every socket of its batch */
	int refs = sk->__sk_common.skc_refcnt.refs.counter - 1;
	int st = sk->sk_socket ?
		 (state == TCP_ESTABLISHED ? SS_CONNECTED : SS_UNCONNECTED) :
		 (state == TCP_ESTABLISHED ? SS_CONNECTING : SS_DISCONNECTING);
	__u32 at = LINE_PART;

	if (!buf) {
		BPF_SEQ_PRINTF(seq, "%pK: %08X %08X %08X %04X %02X %5lu", sk, refs, 0,
			       state == TCP_LISTEN ? __SO_ACCEPTCON : 0, sk->sk_type, st, sock_ino(sk));
	} else {
		/* backwards, from the last column */
		at = put_udec64(buf, at, sock_ino(sk), 5);
		at = put_char(buf, at, ' ');
		at = put_hex(buf, at, st, 2);
		at = put_char(buf, at, ' ');
		at = put_hex(buf, at, sk->sk_type, 4);
		at = put_char(buf, at, ' ');
		at = put_hex(buf, at, state == TCP_LISTEN ? __SO_ACCEPTCON : 0, 8);
		at = put_char(buf, at, ' ');
		at = put_hex(buf, at, 0, 8);
		at = put_char(buf, at, ' ');
		at = put_hex(buf, at, refs, 8);
		at = put_char(buf, at, ' ');
		at = put_char(buf, at, ':');
		BPF_SEQ_PRINTF(seq, "%pK", sk);
		write_part(seq, buf, at);
	}
	/* bpf_seq_write(), not a bpf_seq_printf() that parses a format, for one byte */
	if (u->addr) {
		bpf_seq_write(seq, " ", 1);
		seq_write_addr(seq, u->addr, buf ? buf + 2 * LINE_PART : NULL);
	}
	bpf_seq_write(seq, "\n", 1);
}

struct batch_walk {
	struct seq_file *seq;
	char *buf;
	struct sock **batch;
	__u32 from;
};

/* bpf_loop() callback: socket @i after the current one in the iterator's batch. */
static long show_batched(__u64 i, struct batch_walk *w)
{
	struct unix_sock *u = NULL;

	if (bpf_probe_read_kernel(&u, sizeof(u), &w->batch[w->from + 1 + i]))
		return 1;
	u = bpf_rdonly_cast(u, bpf_core_type_id_kernel(struct unix_sock));
	if (!u)
		return 1;
	/* gone since the batch was taken: bpf_iter_unix_seq_show() skips it too (sk_unhashed()) */
	if (u->sk.__sk_common.skc_node.pprev)
		show_sock(w->seq, u, w->buf);
	return 0;
}

/*
 * Works around a kernel bug that loses sockets (net/unix/af_unix.c, seen up to
 * Linux 6.18): the iterator takes a hash bucket's sockets as one batch, and
 * bpf_iter_unix_seq_stop() never clears st_bucket_done, so every read() after
 * the first resumes at the next bucket, dropping what the previous read left
 * of its bucket. Here the first socket of a bucket the walk shows prints the
 * whole batch, and the bucket's next socket ends the read (return 1 with
 * output pending: the kernel keeps that output and stops there), so the
 * kernel's skip drops only sockets already printed. A kernel that resumes
 * inside the bucket gets nothing printed twice. Returns -1 where the
 * iterator's state is not the shape this knows, and the caller prints the
 * one socket, as the kernel walks.
 */
static __always_inline int show_bucket(struct seq_file *seq, __u64 session, struct unix_sock *u, char *buf)
{
	struct bpf_unix_iter_state *iter;
	struct batch_walk w = { .seq = seq };
	__u64 bucket, *printed;
	struct sock *held = NULL;
	__u32 cur, end;

	if (!bpf_core_field_exists(struct bpf_unix_iter_state, st_bucket_done) ||
	    !bpf_core_field_exists(struct bpf_unix_iter_state, batch) || !bpf_rdonly_cast)
		return -1;
	iter = bpf_rdonly_cast(seq->private, bpf_core_type_id_kernel(struct bpf_unix_iter_state));
	if (!iter)
		return -1;
	cur = iter->cur_sk;
	end = iter->end_sk;
	w.batch = iter->batch;
	if (cur >= end || bpf_probe_read_kernel(&held, sizeof(held), &w.batch[cur]) ||
	    held != (struct sock *)u)
		return -1;
	bucket = UNIX_BUCKET(seq->index) + 1;
	printed = bpf_map_lookup_elem(&unix_printed, &session);
	if (printed && *printed == bucket)
		/* printed by this read (end it here), or by an earlier one (a kernel that resumes) */
		return seq->count > 0 ? 1 : 0;
	bpf_map_update_elem(&unix_printed, &session, &bucket, BPF_ANY);
	/* the first socket of the bucket the walk shows: it and the rest of the batch */
	w.buf = buf;
	show_sock(seq, u, buf);
	w.from = cur;
	bpf_loop(end - cur - 1, show_batched, &w, 0);
	return 0;
}

SEC("iter/unix")
int dump_unix(struct bpf_iter__unix *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct unix_sock *u = ctx->unix_sk;
	__u64 session = ctx->meta->session_id;
	struct scratch *s;
	char *buf = NULL;
	int shown, slot;

	if (!u) {	/* the walk's end */
		bpf_map_delete_elem(&unix_printed, &session);
		return 0;
	}
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "Num       RefCount Protocol Flags    Type St Inode Path\n");
	/* no slot free: lines by printf, as a retry (return 1) would end the read (show_bucket()) */
	slot = scratch_claim(&s);
	if (slot >= 0 && slot < SCRATCH_SLOTS)
		buf = s->buf[slot];
	shown = show_bucket(seq, session, u, buf);
	if (shown < 0) {
		show_sock(seq, u, buf);
		shown = 0;
	}
	if (buf)
		scratch_release(s, slot);
	return shown;
}
