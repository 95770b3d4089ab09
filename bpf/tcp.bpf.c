// SPDX-License-Identifier: GPL-2.0
/*
 * tcp: one line per TCP socket of the iterator's network namespace, the line
 * /proc/net/tcp (IPv4) or /proc/net/tcp6 (IPv6) shows for it. Columns:
 * iterfs/readmes/tcp.
 */
#include "iterfs.bpf.h"
#include "proc_net.bpf.h"
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "GPL";

/* include/linux/socket.h and include/net/inet_connection_sock.h: macros, not in BTF */
#define AF_INET			2
#define AF_INET6		10
#define ICSK_TIME_RETRANS	1
#define ICSK_TIME_PROBE0	3
#define ICSK_TIME_LOSS_PROBE	5
#define ICSK_TIME_REO_TIMEOUT	6
#define TCP_INFINITE_SSTHRESH	0x7fffffff
/* the TCP_PINGPONG_THRESH that kernels before the sysctl used */
#define TCP_PINGPONG_THRESH	1
#define USER_HZ			100
#define NSEC_PER_SEC		1000000000ULL
/* tcp4_seq_show(): seq_setwidth(TMPSZ - 1) and seq_pad() fill IPv4 lines with spaces */
#define TCP4_WIDTH		149

extern unsigned int CONFIG_HZ __kconfig;

/* kernel/time/time.c jiffies_to_clock_t(): /proc shows timers in USER_HZ ticks */
static __always_inline long jiffies_to_clock_t(unsigned long x)
{
	__u64 tick_nsec = (NSEC_PER_SEC + CONFIG_HZ / 2) / CONFIG_HZ;
	__u64 user_hz_nsec = NSEC_PER_SEC / USER_HZ;

	if (tick_nsec % user_hz_nsec == 0) {
		if (CONFIG_HZ < USER_HZ)
			return x * (USER_HZ / CONFIG_HZ);
		return x / (CONFIG_HZ / USER_HZ);
	}
	return x * tick_nsec / user_hz_nsec;
}

static __always_inline long jiffies_delta_to_clock_t(long delta)
{
	return delta > 0 ? jiffies_to_clock_t(delta) : 0;
}

/* Linux 6.5 ("tcp: Make pingpong threshold tunable") made the threshold a sysctl. */
static __always_inline int in_pingpong_mode(struct inet_connection_sock *icsk)
{
	struct sock *sk = &icsk->icsk_inet.sk;
	__u32 thresh = TCP_PINGPONG_THRESH;

	if (bpf_core_field_exists(sk->__sk_common.skc_net.net->ipv4.sysctl_tcp_pingpong_thresh))
		thresh = BPF_CORE_READ(sk, __sk_common.skc_net.net, ipv4.sysctl_tcp_pingpong_thresh);
	return icsk->icsk_ack.pingpong >= thresh;
}

/*
 * Linux 5.15 (04c7820b776f, "bpf: tcp: Bpf iter batching and lock_sock") makes
 * the iterator hold a reference on the socket it shows; /proc/net/tcp holds
 * none, so the count /proc shows is one less.
 */
static __always_inline int proc_refcnt(struct sock_common *skc)
{
	int refs = skc->skc_refcnt.refs.counter;

	return bpf_core_type_exists(struct bpf_tcp_iter_state) ? refs - 1 : refs;
}

/* What a line shows, as each kind of socket fills it in. */
struct tcp_cols {
	struct sock_cols s;	/* up to the pointer */
	/* listening and connected sockets only: the columns after the pointer */
	int full;
	__u64 rto, ato;
	__u32 quick, cwnd;
	int ssthresh;
};

/* Prints one line, as get_tcp4_sock() or get_tcp6_sock() and their siblings do (proc_net.bpf.h). */
static __noinline void print_line(struct seq_file *seq, struct sock_common *skc, int sl,
				  struct tcp_cols *c, char *buf)
{
	int v6 = skc->skc_family == AF_INET6;
	char *tail = buf + 2 * LINE_PART;
	__u32 at = LINE_PART, end = LINE_PART;

	if (!buf)
		return;
	/* backwards, from the last column */
	if (c->full) {
		end = put_sdec(tail, end, c->ssthresh, 0);
		end = put_char(tail, end, ' ');
		end = put_udec(tail, end, c->cwnd, 0);
		end = put_char(tail, end, ' ');
		end = put_udec(tail, end, c->quick, 0);
		end = put_char(tail, end, ' ');
		end = put_udec64(tail, end, c->ato, 0);
		end = put_char(tail, end, ' ');
		end = put_udec64(tail, end, c->rto, 0);
		end = put_char(tail, end, ' ');
	}
	at = put_sock_columns(buf, at, skc, v6, sl, 4, &c->s);
	/* tcp4_seq_show(): seq_setwidth(TMPSZ - 1) and seq_pad() fill IPv4 lines with spaces */
	write_sock_line(seq, buf, at, c->s.ptr, tail, end, buf + 4 * LINE_PART, v6 ? 0 : TCP4_WIDTH);
}

/* get_tcp4_sock() / get_tcp6_sock(): listening and connected sockets */
static __always_inline void dump_full(struct seq_file *seq, struct tcp_sock *tp, uid_t uid, int sl,
				      char *buf)
{
	struct inet_connection_sock *icsk = &tp->inet_conn;
	struct inet_sock *inet = &icsk->icsk_inet;
	struct sock *sk = &inet->sk;
	__u8 pending = icsk->icsk_pending;
	unsigned long expires = bpf_jiffies64();
	struct tcp_cols c = {};
	int rx;

	c.s.srcp = bpf_ntohs(inet->inet_sport);
	c.s.destp = bpf_ntohs(sk->__sk_common.skc_dport);
	c.s.state = sk->__sk_common.skc_state;
	if (pending == ICSK_TIME_RETRANS || pending == ICSK_TIME_REO_TIMEOUT ||
	    pending == ICSK_TIME_LOSS_PROBE) {
		c.s.timer = 1;
		expires = icsk->icsk_retransmit_timer.expires;
	} else if (pending == ICSK_TIME_PROBE0) {
		c.s.timer = 4;
		expires = icsk->icsk_retransmit_timer.expires;
	} else if (sk->sk_timer.entry.pprev) {
		/* timer_pending(): the keepalive timer is sk_timer */
		c.s.timer = 2;
		expires = sk->sk_timer.expires;
	}
	c.s.when = jiffies_delta_to_clock_t(expires - bpf_jiffies64());
	c.s.tx_queue = tp->write_seq - tp->snd_una;
	if (c.s.state == TCP_LISTEN) {
		c.s.rx_queue = sk->sk_ack_backlog;
		c.ssthresh = icsk->icsk_accept_queue.fastopenq.max_qlen;
	} else {
		/* unlocked, so it can be transiently negative */
		rx = tp->rcv_nxt - tp->copied_seq;
		c.s.rx_queue = rx < 0 ? 0 : rx;
		c.ssthresh = tp->snd_ssthresh >= TCP_INFINITE_SSTHRESH ? -1 : tp->snd_ssthresh;
	}
	c.s.retrnsmt = icsk->icsk_retransmits;
	c.s.uid = uid;
	c.s.timeout = icsk->icsk_probes_out;
	c.s.inode = sock_ino(sk);
	c.s.refcnt = proc_refcnt(&sk->__sk_common);
	c.s.ptr = sk;
	c.full = 1;
	c.rto = jiffies_to_clock_t(icsk->icsk_rto);
	c.ato = jiffies_to_clock_t(BPF_CORE_READ_BITFIELD(icsk, icsk_ack.ato));
	c.quick = (icsk->icsk_ack.quick << 1) | in_pingpong_mode(icsk);
	c.cwnd = tp->snd_cwnd;
	print_line(seq, &sk->__sk_common, sl, &c, buf);
}

/* get_timewait4_sock() / get_timewait6_sock() */
static __always_inline void dump_timewait(struct seq_file *seq, struct tcp_timewait_sock *ttw, int sl,
					  char *buf)
{
	struct inet_timewait_sock *tw = &ttw->tw_sk;
	struct tcp_cols c = {};

	c.s.srcp = bpf_ntohs(tw->tw_sport);
	c.s.destp = bpf_ntohs(tw->__tw_common.skc_dport);
	c.s.state = tw->tw_substate;
	c.s.timer = 3;
	c.s.when = jiffies_delta_to_clock_t(tw->tw_timer.expires - bpf_jiffies64());
	c.s.refcnt = proc_refcnt(&tw->__tw_common);
	c.s.ptr = tw;
	print_line(seq, &tw->__tw_common, sl, &c, buf);
}

/* get_openreq4() / get_openreq6(): SYN_RECV request sockets */
static __always_inline void dump_request(struct seq_file *seq, struct tcp_request_sock *treq,
					 uid_t uid, int sl, char *buf)
{
	struct request_sock *req = &treq->req.req;
	struct tcp_cols c = {};

	c.s.srcp = req->__req_common.skc_num;
	c.s.destp = bpf_ntohs(req->__req_common.skc_dport);
	c.s.state = TCP_SYN_RECV;
	c.s.timer = 1;
	c.s.when = jiffies_delta_to_clock_t(req->rsk_timer.expires - bpf_jiffies64());
	c.s.retrnsmt = BPF_CORE_READ_BITFIELD(req, num_timeout);
	/* uid, non-standard timer, inode (request sockets have none), refcount 0 */
	c.s.uid = uid;
	c.s.ptr = req;
	print_line(seq, &req->__req_common, sl, &c, buf);
}

SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct sock_common *skc = ctx->sk_common;
	int sl = ctx->meta->seq_num;
	struct tcp_timewait_sock *tw;
	struct tcp_request_sock *req;
	struct tcp_sock *tp;
	struct scratch *s;
	int slot;

	if (!skc)
		return 0;
	if (skc->skc_family != AF_INET && skc->skc_family != AF_INET6)
		return 0;
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	/*
	 * seq_num counts objects already shown, but the final call (NULL object)
	 * sees 0 after one object as after none: the header goes with an object.
	 */
	if (sl == 0)
		BPF_SEQ_PRINTF(seq, "%-149s\n",
			       "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
			       "retrnsmt   uid  timeout inode");

	tp = bpf_skc_to_tcp_sock(skc);
	tw = tp ? NULL : bpf_skc_to_tcp_timewait_sock(skc);
	req = tp || tw ? NULL : bpf_skc_to_tcp_request_sock(skc);
	if (tp)
		dump_full(seq, tp, ctx->uid, sl, s->buf[slot]);
	else if (tw)
		dump_timewait(seq, tw, sl, s->buf[slot]);
	else if (req)
		dump_request(seq, req, ctx->uid, sl, s->buf[slot]);
	scratch_release(s, slot);
	return 0;
}
