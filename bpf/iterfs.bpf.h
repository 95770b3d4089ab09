/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by every bundled iterator program: scratch buffers that concurrent
 * runs never share, and CO-RE shims for fields that differ between kernels.
 */
#ifndef __ITERFS_BPF_H
#define __ITERFS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/*
 * Scratch space for strings too large for the 512-byte BPF stack (paths).
 *
 * Iterator programs run with migration disabled but are preemptible, so two
 * iterators on one CPU can interleave: a per-CPU buffer alone is not private
 * to a run. Each CPU therefore has a few slots, claimed with cmpxchg and
 * released after use. When every slot of this CPU is taken, the program asks
 * the kernel to retry the object (return 1 -> read() gives EAGAIN, which the
 * daemon retries), so output is never built in a buffer someone else owns.
 */
#define SCRATCH_SLOTS 4
#define SCRATCH_SIZE 4096

struct scratch {
	__u32 busy[SCRATCH_SLOTS];
	char buf[SCRATCH_SLOTS][SCRATCH_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} iterfs_scratch SEC(".maps");

/* Returns a slot index of *s, or -1 when this CPU has none free. */
static __always_inline int scratch_claim(struct scratch **s)
{
	__u32 zero = 0;

	*s = bpf_map_lookup_elem(&iterfs_scratch, &zero);
	if (!*s)
		return -1;
#pragma unroll
	for (int i = 0; i < SCRATCH_SLOTS; i++) {
		if (__sync_val_compare_and_swap(&(*s)->busy[i], 0, 1) == 0)
			return i;
	}
	return -1;
}

static __always_inline void scratch_release(struct scratch *s, int slot)
{
	if (slot >= 0 && slot < SCRATCH_SLOTS)
		__sync_lock_test_and_set(&s->busy[slot], 0);
}

/*
 * Writes the d_path() of @path (what readlink(/proc/PID/fd/N) and
 * /proc/PID/maps show) to @seq. Returns 1 when no scratch slot was free, so
 * the caller can ask for a retry.
 */
static __always_inline int seq_write_path(struct seq_file *seq, const struct path *path)
{
	struct scratch *s;
	int slot = scratch_claim(&s);
	long len;

	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	len = bpf_d_path((struct path *)path, s->buf[slot], SCRATCH_SIZE);
	/* bpf_d_path() counts the terminating NUL */
	if (len > 1 && len <= SCRATCH_SIZE)
		bpf_seq_write(seq, s->buf[slot], len - 1);
	else
		BPF_SEQ_PRINTF(seq, "?");
	scratch_release(s, slot);
	return 0;
}

/*
 * The name a table of type names (indexed by enum value) gives type, or "-"
 * for a type newer than the table, which keeps only its number (bpftool then
 * prints "type N").
 */
#define TYPE_NAME(table, type)								\
	((type) < sizeof(table) / sizeof((table)[0]) && (table)[type][0] ? (table)[type] : "-")

/* SOCK_INODE(): a socket's inode (the number in socket:[N]) follows it in struct socket_alloc. */
static __always_inline unsigned long sock_ino(struct sock *sk)
{
	struct socket *sock = sk->sk_socket;

	if (!sock)
		return 0;
	return BPF_CORE_READ(container_of(sock, struct socket_alloc, socket), vfs_inode.i_ino);
}

/* Linux 6.18 (net: add sk->sk_drop_counters) may count drops per NUMA node outside sk_drops. */
struct sock___drop_counters {
	struct numa_drop_counters *sk_drop_counters;
} __attribute__((preserve_access_index));

/* What sk_drops_read() (include/net/sock.h) returns: /proc shows it as drops. */
static __always_inline unsigned int sock_drops(struct sock *sk)
{
	struct sock___drop_counters *s = (void *)sk;
	struct numa_drop_counters *ndc;

	if (bpf_core_field_exists(s->sk_drop_counters)) {
		ndc = BPF_CORE_READ(s, sk_drop_counters);
		if (ndc)
			return BPF_CORE_READ(ndc, drops0.counter) + BPF_CORE_READ(ndc, drops1.counter);
	}
	return sk->sk_drops.counter;
}

/*
 * The pid namespace a task, task_file or task_vma iterator was made in:
 * bpf_iter_create() takes its creator's, and iterfs makes the iterator of a
 * reader in another pid namespace there. The seq_file's private data
 * (kernel/bpf/bpf_iter.c points it at bpf_iter_priv_data.target_private) of
 * these three targets begins with struct bpf_iter_seq_task_common.
 */
static __always_inline struct pid_namespace *iter_pid_ns(struct seq_file *seq)
{
	struct bpf_iter_seq_task_common *common = BPF_CORE_READ(seq, private);

	return BPF_CORE_READ(common, ns);
}

/* pid_nr_ns(): the number ns gives pid, 0 where ns cannot see it (as /proc shows a namespace init's ppid). */
static __always_inline int pid_nr_in(struct pid *pid, struct pid_namespace *ns)
{
	unsigned int level = BPF_CORE_READ(ns, level);
	struct upid upid;

	/* MAX_PID_NS_LEVEL is 32: a bound for the verifier */
	if (!pid || level > 32 || BPF_CORE_READ(pid, level) < level)
		return 0;
	if (bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]))
		return 0;
	return upid.ns == ns ? upid.nr : 0;
}

/* A thread's id and its process's, as ns numbers them (task_pid_nr_ns(), task_tgid_nr_ns()). */
static __always_inline int task_pid_in(struct task_struct *t, struct pid_namespace *ns)
{
	return pid_nr_in(BPF_CORE_READ(t, thread_pid), ns);
}

static __always_inline int task_tgid_in(struct task_struct *t, struct pid_namespace *ns)
{
	return pid_nr_in(BPF_CORE_READ(t, group_leader, thread_pid), ns);
}

/* Linux 5.14 (2f064a59a11f) renamed task_struct::state to __state. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline unsigned int task_state_raw(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

/* include/linux/sched.h; values are ABI (they show in /proc), not in BTF. */
#define TASK_UNINTERRUPTIBLE	0x00000002
#define TASK_NOLOAD		0x00000400
#define TASK_IDLE		(TASK_UNINTERRUPTIBLE | TASK_NOLOAD)
#define TASK_RTLOCK_WAIT	0x00001000
#define TASK_FROZEN		0x00008000
#define TASK_REPORT		0x0000007f
#define TASK_REPORT_IDLE	0x00000080

/*
 * fs/proc/array.c task_state_array, "RSDTtXZPI", indexed by the highest bit of
 * the reported state. A switch, not a table: a table at file scope is a BTF
 * global of every program including this header (iterfs offers those as
 * parameters of a user's view), and clang 14 misplaces function statics in BTF.
 */
static __always_inline char task_state_letter(int idx)
{
	switch (idx) {
	case 0: return 'R';	/* running */
	case 1: return 'S';	/* sleeping */
	case 2: return 'D';	/* disk sleep */
	case 3: return 'T';	/* stopped */
	case 4: return 't';	/* tracing stop */
	case 5: return 'X';	/* dead */
	case 6: return 'Z';	/* zombie */
	case 7: return 'P';	/* parked */
	default: return 'I';	/* idle */
	}
}

/* The state letter of /proc/PID/stat, as fs/proc/array.c get_task_state(). */
static __always_inline char task_state_char(struct task_struct *t)
{
	unsigned int raw = task_state_raw(t);
	unsigned int state = (raw | BPF_CORE_READ(t, exit_state)) & TASK_REPORT;
	int idx = 0;

	if ((raw & TASK_IDLE) == TASK_IDLE)
		state = TASK_REPORT_IDLE;
	/* 6.1 reports frozen and rtlock-waiting tasks as D, like rt_mutex waits */
	if (raw & (TASK_RTLOCK_WAIT | TASK_FROZEN))
		state = TASK_UNINTERRUPTIBLE;
#pragma unroll
	for (int bit = 0; bit < 8; bit++) {
		if (state & (1u << bit))
			idx = bit + 1;
	}
	return task_state_letter(idx);
}

#endif /* __ITERFS_BPF_H */
