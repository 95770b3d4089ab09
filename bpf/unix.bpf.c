// SPDX-License-Identifier: GPL-2.0
/* unix: one line per AF_UNIX socket, as /proc/net/unix. Columns: iterfs/readmes/unix. */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* include/linux/net.h; a define, not in BTF */
#define __SO_ACCEPTCON	(1 << 16)
/* sizeof(struct sockaddr_un::sun_path) */
#define UNIX_PATH_MAX	108

/*
 * The address as unix_seq_show() prints it: a filesystem path up to its NUL,
 * an abstract name as '@' and its bytes, each NUL byte (the leading one too)
 * shown as '@'.
 */
static __always_inline void seq_write_addr(struct seq_file *seq, struct unix_address *addr)
{
	char buf[UNIX_PATH_MAX];
	int len = addr->len - (int)offsetof(struct sockaddr_un, sun_path);

	if (len <= 0 || len > UNIX_PATH_MAX)
		return;
	if (bpf_probe_read_kernel(buf, len, addr->name[0].sun_path))
		return;
	/* the NUL that ends a filesystem path is counted in addr->len */
	if (buf[0])
		len--;
	for (int i = 0; i < UNIX_PATH_MAX && i < len; i++) {
		if (!buf[i])
			buf[i] = '@';
	}
	if (len > 0 && len <= UNIX_PATH_MAX)
		bpf_seq_write(seq, buf, len);
}

SEC("iter/unix")
int dump_unix(struct bpf_iter__unix *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct unix_sock *u = ctx->unix_sk;
	struct sock *sk = (struct sock *)u;
	int state, refs;

	if (!u)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "Num       RefCount Protocol Flags    Type St Inode Path\n");

	state = sk->__sk_common.skc_state;
	/* the iterator holds one reference on every socket of its batch */
	refs = sk->__sk_common.skc_refcnt.refs.counter - 1;
	BPF_SEQ_PRINTF(seq, "%pK: %08X %08X %08X %04X %02X %5lu", sk, refs, 0,
		       state == TCP_LISTEN ? __SO_ACCEPTCON : 0, sk->sk_type,
		       sk->sk_socket ?
		       (state == TCP_ESTABLISHED ? SS_CONNECTED : SS_UNCONNECTED) :
		       (state == TCP_ESTABLISHED ? SS_CONNECTING : SS_DISCONNECTING),
		       sock_ino(sk));
	if (u->addr) {
		BPF_SEQ_PRINTF(seq, " ");
		seq_write_addr(seq, u->addr);
	}
	BPF_SEQ_PRINTF(seq, "\n");
	return 0;
}
