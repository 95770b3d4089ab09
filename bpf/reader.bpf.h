/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The ptrace rule for programs whose kernel view needs it (/proc/PID/fd and
 * /proc/PID/maps: PTRACE_MODE_READ_FSCREDS), which the kernel does not apply
 * to an iterator. Before the read()s of an iterator of such a program that a
 * request needs, the daemon stores the policy of the open's reader under the
 * id of the thread that reads (iterfs/access.py), and deletes it after: a
 * thread reads for one open at a time, so no run sees another reader's
 * policy. No entry: nothing is shown, unless the load has a default
 * (READER_DEFAULT_KEY), the daemon's (every task): the loads of a private
 * mount, whose readers are all served as the daemon, have one, and so does the
 * load iterfs pin pins, whose reads through bpffs store nothing (whoever the
 * pin's own permissions let open it reads it all, as the pinner chose). A
 * shared mount's loads have none. Include it after iterfs.bpf.h; a user's view
 * that includes it and declares the rule (iterfs(7)) gets the same policy.
 */
#ifndef __ITERFS_READER_BPF_H
#define __ITERFS_READER_BPF_H

#define READER_KNOWN		1	/* an entry the daemon stored */
#define READER_ALL		2	/* CAP_SYS_PTRACE in the initial user namespace */
#define READER_ADDRESSES	4	/* kallsyms_show_value(): kernel addresses may be shown */
#define READER_HEADER		8	/* the walk has shown nothing yet: a header goes first */

#define READER_DEFAULT_KEY	0xffffffff	/* no thread has this id */
#define CAP_SYS_PTRACE_BIT	19
#define MMF_DUMPABLE_MASK	3
#define SUID_DUMP_USER		1

struct reader_policy {
	__u32 flags;
	__u32 tgid;		/* the reader's process, as the daemon's pid namespace numbers it: always readable */
	__u32 fsuid;
	__u32 fsgid;
	__u32 user_ns;		/* the inode of the reader's user namespace */
	__u32 pad;
	__u64 caps;		/* its effective capabilities, in that namespace */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);	/* the reading thread's id (reading_upid()) */
	__type(value, struct reader_policy);
} reader_policy SEC(".maps");

/* before Linux 6.18 (mm_flags_t), mm->flags was a plain word */
struct mm_struct___word {
	unsigned long flags;
} __attribute__((preserve_access_index));

/*
 * The reading thread's id and pid namespace, as that namespace numbers it:
 * gettid() in the daemon, also where the daemon runs in a container.
 */
static __always_inline bool reading_upid(struct upid *upid)
{
	struct pid *pid = bpf_get_current_task_btf()->thread_pid;
	unsigned int level = BPF_CORE_READ(pid, level);

	return level <= 32 && !bpf_core_read(upid, sizeof(*upid), &pid->numbers[level]);
}

static __always_inline struct reader_policy *reader(void)
{
	struct upid me;
	__u32 key = reading_upid(&me) ? me.nr : 0;	/* 0: never a key */
	struct reader_policy *p = bpf_map_lookup_elem(&reader_policy, &key);

	if (p)
		return p;
	key = READER_DEFAULT_KEY;
	return bpf_map_lookup_elem(&reader_policy, &key);
}

static __always_inline unsigned long mm_flags(struct mm_struct *mm)
{
	struct mm_struct___word *old = (void *)mm;

	if (bpf_core_field_exists(old->flags))
		return BPF_CORE_READ(old, flags);
	return BPF_CORE_READ(mm, flags.__mm_flags[0]);
}

/*
 * __ptrace_may_access(task, PTRACE_MODE_READ_FSCREDS), kernel/ptrace.c, with
 * cap_ptrace_access_check(), security/commoncap.c. Failing closed where it
 * cannot tell: a reader with CAP_SYS_PTRACE only in a user namespace other
 * than the initial one reads that namespace's own tasks, not nested ones'.
 */
static __always_inline bool reader_may_read(const struct reader_policy *p, struct task_struct *task)
{
	const struct cred *cred;
	struct mm_struct *mm;
	__u64 permitted = 0;
	struct upid me;
	__u32 task_ns;

	if (!p || !(p->flags & READER_KNOWN))
		return false;
	if (p->flags & READER_ALL)
		return true;
	if (p->tgid && reading_upid(&me) && task_tgid_in(task, me.ns) == p->tgid)
		return true;
	cred = task->real_cred;
	task_ns = BPF_CORE_READ(cred, user_ns, ns.inum);
	mm = task->mm;
	if ((p->caps >> CAP_SYS_PTRACE_BIT & 1) && task_ns == p->user_ns &&
	    (!mm || BPF_CORE_READ(mm, user_ns, ns.inum) == p->user_ns))
		return true;
	if (cred->uid.val != p->fsuid || cred->euid.val != p->fsuid || cred->suid.val != p->fsuid ||
	    cred->gid.val != p->fsgid || cred->egid.val != p->fsgid || cred->sgid.val != p->fsgid)
		return false;
	if (mm && (mm_flags(mm) & MMF_DUMPABLE_MASK) != SUID_DUMP_USER)
		return false;
	/* kernel_cap_t: a u64 since 6.3, two u32s (low first) before */
	bpf_probe_read_kernel(&permitted, sizeof(permitted), &cred->cap_permitted);
	return task_ns == p->user_ns && !(permitted & ~p->caps);
}

/*
 * Whether a header goes before this object's line, the first the walk shows
 * the reader. seq_num counts objects left out too, so for a reader that does
 * not see them all the daemon says (READER_HEADER, in the reading thread's own
 * entry) whether the walk has shown anything yet; the first line clears it.
 */
static __always_inline bool reader_header_first(struct reader_policy *p, __u64 seq_num)
{
	if (p->flags & READER_ALL)
		return seq_num == 0;
	if (!(p->flags & READER_HEADER))
		return false;
	__sync_fetch_and_and(&p->flags, ~READER_HEADER);
	return true;
}

/* The object whose line had the header is shown again (its program asked for a retry). */
static __always_inline void reader_header_again(struct reader_policy *p)
{
	if (!(p->flags & READER_ALL))
		__sync_fetch_and_or(&p->flags, READER_HEADER);
}

/* A kernel address as this reader may see it: 0 unless kallsyms would show it the value. */
static __always_inline unsigned long reader_address(const struct reader_policy *p, const void *addr)
{
	return p && (p->flags & READER_ADDRESSES) ? (unsigned long)addr : 0;
}

#endif /* __ITERFS_READER_BPF_H */
