/* SPDX-License-Identifier: GPL-2.0 */
/*
 * d_path() walked by the program itself, for a file the verifier will not
 * hand to bpf_d_path(). Some kernels mark every pointer read from a task_vma
 * iterator's vma (vma->vm_file among them) untrusted, and bpf_d_path() takes
 * only trusted ones: there the kernel's own selftest program for task_vma
 * fails to load. The walk reads through bpf_probe_read_kernel() alone, which
 * every kernel allows, and follows fs/d_path.c: d_path(), __prepend_path()
 * and the d_dname() of the pseudo filesystems whose files can be mapped.
 */
#ifndef __ITERFS_PATH_BPF_H
#define __ITERFS_PATH_BPF_H

#include "iterfs.bpf.h"

/* Directories followed up from a file (d_path() has no limit); deeper paths print "?". */
#define PATH_DEPTH 256
/* Steps of the walk: a directory up, or a mount crossed */
#define PATH_STEPS (4 * PATH_DEPTH)

/* include/linux/fs.h: FMODE_BACKING moved from bit 25 to bit 24 in Linux 6.14 (fsnotify's pre-content bits) */
extern unsigned int LINUX_KERNEL_VERSION __kconfig;
#define FMODE_BACKING (1U << (LINUX_KERNEL_VERSION >= KERNEL_VERSION(6, 14, 0) ? 24 : 25))

/* The d_dname() operations of the pseudo filesystems; 0 where this kernel has none. */
extern const void simple_dname __ksym __weak;
extern const void anon_inodefs_dname __ksym __weak;
extern const void pipefs_dname __ksym __weak;
extern const void sockfs_dname __ksym __weak;
extern const void dmabuf_dname __ksym __weak;

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct mount *root_mnt;
	struct seq_file *seq;
	int slot;
	__u32 depth;
	bool done;  /* the walk reached its end, not the end of its steps */
};

static __always_inline struct mount *real_mount(struct vfsmount *mnt)
{
	return (void *)mnt - bpf_core_field_offset(struct mount, mnt);
}

static __always_inline const unsigned char **path_names(int slot)
{
	struct scratch *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&iterfs_scratch, &zero);
	if (!s || slot < 0 || slot >= SCRATCH_SLOTS)
		return NULL;
	return (const unsigned char **)s->buf[slot];
}

/*
 * One step of __prepend_path(): up to the parent directory, or from the root
 * of a mount to where it is mounted. The names are kept, leaf first, in the
 * scratch slot, to be printed root first.
 */
static long path_up(__u32 i, struct path_walk *w)
{
	/* locals: BPF_CORE_READ() of w->mnt would relocate w itself */
	struct dentry *d = w->dentry, *parent;
	struct mount *mnt = w->mnt;
	const unsigned char **names;
	__u32 at;

	if (d == w->root_dentry && mnt == w->root_mnt)
		goto done;
	if (d == BPF_CORE_READ(mnt, mnt.mnt_root)) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt)  /* the root of the namespace, or of a detached mount: what was walked */
			goto done;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		return 0;
	}
	parent = BPF_CORE_READ(d, d_parent);
	if (parent == d) {  /* escaped: the root of a filesystem that is not its mount's root */
		w->depth = 0;  /* prepend_path() drops what it walked and prints "/" */
		goto done;
	}
	names = path_names(w->slot);
	at = w->depth;
	if (!names || at >= PATH_DEPTH)
		return 1;
	names[at] = BPF_CORE_READ(d, d_name.name);
	w->depth = at + 1;
	w->dentry = parent;
	return 0;
done:
	w->done = true;
	return 1;
}

static long path_print(__u32 i, struct path_walk *w)
{
	const unsigned char **names = path_names(w->slot);
	__u32 at = w->depth - 1 - i;

	if (!names || at >= PATH_DEPTH)
		return 1;
	BPF_SEQ_PRINTF(w->seq, "/%s", names[at]);
	return 0;
}

/* The name a pseudo filesystem's d_dname() gives dentry; 0 when it is not one of them. */
static __always_inline int seq_write_dname(struct seq_file *seq, struct dentry *dentry, const void *dname)
{
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	unsigned long ino = BPF_CORE_READ(dentry, d_inode, i_ino);

	if (dname == &simple_dname)
		BPF_SEQ_PRINTF(seq, "/%s (deleted)", name);
	else if (dname == &anon_inodefs_dname)
		BPF_SEQ_PRINTF(seq, "anon_inode:%s", name);
	else if (dname == &pipefs_dname)
		BPF_SEQ_PRINTF(seq, "pipe:[%lu]", ino);
	else if (dname == &sockfs_dname)
		BPF_SEQ_PRINTF(seq, "socket:[%lu]", ino);
	else if (dname == &dmabuf_dname && bpf_core_field_exists(((struct dma_buf *)0)->name)) {
		struct dma_buf *dmabuf = BPF_CORE_READ(dentry, d_fsdata);
		const char *buf_name = BPF_CORE_READ(dmabuf, name);

		BPF_SEQ_PRINTF(seq, "/%s:%s", name, buf_name ? buf_name : "");
	} else
		return 0;
	return 1;
}

/*
 * file_user_path() and file_user_inode() (include/linux/fs.h), what
 * /proc/PID/maps shows: an overlayfs file's mapping holds the file of a layer
 * below, a backing file, which keeps the overlay's path.
 */
static __always_inline const struct path *file_user_path(struct file *file, struct inode **inode)
{
	struct backing_file *backing;

	if (bpf_core_type_exists(struct backing_file) && (BPF_CORE_READ(file, f_mode) & FMODE_BACKING)) {
		backing = (void *)file - bpf_core_field_offset(struct backing_file, file);
		*inode = BPF_CORE_READ(backing, user_path.dentry, d_inode);
		return &backing->user_path;
	}
	*inode = BPF_CORE_READ(file, f_inode);
	return &file->f_path;
}

/*
 * Writes what d_path() makes of @path, relative to the reading task's root,
 * as seq_write_path() does with bpf_d_path(). Returns 1 when no scratch slot
 * was free, so the caller can ask for a retry.
 */
static __always_inline int seq_write_path_walked(struct seq_file *seq, const struct path *path)
{
	struct task_struct *current = (void *)bpf_get_current_task();
	struct dentry *dentry = BPF_CORE_READ(path, dentry);
	struct mount *mnt = real_mount(BPF_CORE_READ(path, mnt));
	const struct dentry_operations *ops = BPF_CORE_READ(dentry, d_op);
	const void *dname = ops ? BPF_CORE_READ(ops, d_dname) : NULL;
	int root = dentry == BPF_CORE_READ(dentry, d_parent);
	struct path_walk w = { .dentry = dentry, .mnt = mnt, .seq = seq };
	struct scratch *s;

	/* d_path(): a pseudo file names itself, unless it is the root of its mount */
	if (dname && (!root || dentry != BPF_CORE_READ(mnt, mnt.mnt_root)) && seq_write_dname(seq, dentry, dname))
		return 0;
	w.slot = scratch_claim(&s);
	if (w.slot < 0)
		return 1;
	w.root_dentry = BPF_CORE_READ(current, fs, root.dentry);
	w.root_mnt = real_mount(BPF_CORE_READ(current, fs, root.mnt));
	bpf_loop(PATH_STEPS, path_up, &w, 0);
	if (!w.done)
		BPF_SEQ_PRINTF(seq, "?");
	else if (w.depth == 0)
		BPF_SEQ_PRINTF(seq, "/");
	else
		bpf_loop(w.depth, path_print, &w, 0);
	scratch_release(s, w.slot);
	/* d_unlinked(): removed from the dcache's hash, and not a root */
	if (!BPF_CORE_READ(dentry, d_hash.pprev) && !root)
		BPF_SEQ_PRINTF(seq, " (deleted)");
	return 0;
}

#endif /* __ITERFS_PATH_BPF_H */
