// SPDX-License-Identifier: GPL-2.0
/*
 * task_vma: one line per memory mapping, the owning tgid followed by the line
 * /proc/PID/maps shows for it, byte for byte. Columns: iterfs/readmes/task_vma.
 */
#include "iterfs.bpf.h"
#include "path.bpf.h"
#include "reader.bpf.h"

char _license[] SEC("license") = "GPL";

#define VM_READ		0x00000001
#define VM_WRITE	0x00000002
#define VM_EXEC		0x00000004
#define VM_MAYSHARE	0x00000080
/* x86-64 and the 4K-page configurations of other architectures */
#define PAGE_SHIFT	12
#define MINORBITS	20
/* fs/proc/task_mmu.c: the name column starts after 25 + sizeof(void *) * 6 - 1 */
#define MAPS_NAME_COLUMN "72"

/* Linux 5.17 (9a10064f5625) added vm_area_struct::anon_name (CONFIG_ANON_VMA_NAME). */
struct vm_area_struct___anon {
	struct anon_vma_name *anon_name;
} __attribute__((preserve_access_index));

/* Resolved from kallsyms; 0 when absent, and then special mappings stay unnamed. */
extern const void special_mapping_name __ksym __weak;

static __always_inline const char *anon_name(struct vm_area_struct *vma)
{
	struct vm_area_struct___anon *v = (void *)vma;
	struct anon_vma_name *name;

	if (!bpf_core_field_exists(v->anon_name))
		return NULL;
	name = BPF_CORE_READ(v, anon_name);
	return name ? name->name : NULL;
}

/* The name /proc/PID/maps gives a mapping that is not a file, or NULL. */
static __always_inline const char *special_name(struct vm_area_struct *vma)
{
	const struct vm_operations_struct *ops = vma->vm_ops;
	struct mm_struct *mm = vma->vm_mm;
	unsigned long start = vma->vm_start, end = vma->vm_end;

	if (&special_mapping_name && ops &&
	    (void *)BPF_CORE_READ(ops, name) == &special_mapping_name)
		return BPF_CORE_READ((struct vm_special_mapping *)vma->vm_private_data, name);
	if (!mm)
		return "[vdso]";
	/* vma_is_initial_heap() and vma_is_initial_stack(), include/linux/mm.h */
	if (start < mm->brk && end > mm->start_brk)
		return "[heap]";
	if (start <= mm->start_stack && end >= mm->start_stack)
		return "[stack]";
	return NULL;
}

SEC("iter/task_vma")
int dump_task_vma(struct bpf_iter__task_vma *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct vm_area_struct *vma = ctx->vma;
	unsigned long flags;
	struct file *file;
	const struct path *path = NULL;
	struct inode *inode;
	const char *name;
	__u64 pgoff = 0, ino = 0;
	__u32 dev = 0;
	char prefix[128];
	int tgid;

	if (!task || !vma)
		return 0;
	/* as /proc/PID/maps: only the tasks the reader may ptrace-read */
	if (!reader_may_read(reader(), task))
		return 0;

	/* as the reader's pid namespace numbers it, as its /proc does */
	tgid = task_tgid_in(task, iter_pid_ns(seq));
	flags = vma->vm_flags;
	file = vma->vm_file;
	if (file) {
		path = file_user_path(file, &inode);
		dev = BPF_CORE_READ(inode, i_sb, s_dev);
		ino = BPF_CORE_READ(inode, i_ino);
		pgoff = (__u64)vma->vm_pgoff << PAGE_SHIFT;
	}
	BPF_SNPRINTF(prefix, sizeof(prefix), "%08lx-%08lx %c%c%c%c %08llx %02x:%02x %lu ",
		     vma->vm_start, vma->vm_end,
		     flags & VM_READ ? 'r' : '-', flags & VM_WRITE ? 'w' : '-',
		     flags & VM_EXEC ? 'x' : '-', flags & VM_MAYSHARE ? 's' : 'p',
		     pgoff, dev >> MINORBITS, dev & ((1U << MINORBITS) - 1), ino);

	/* the order of get_vma_name(), fs/proc/task_mmu.c */
	if (file) {
		name = anon_name(vma);
		if (name) {
			BPF_SEQ_PRINTF(seq, "%d %-" MAPS_NAME_COLUMN "s [anon_shmem:%s]\n",
				       tgid, prefix, name);
			return 0;
		}
		BPF_SEQ_PRINTF(seq, "%d %-" MAPS_NAME_COLUMN "s ", tgid, prefix);
		if (seq_write_path_walked(seq, path))
			return 1;
		BPF_SEQ_PRINTF(seq, "\n");
		return 0;
	}
	name = special_name(vma);
	if (name) {
		BPF_SEQ_PRINTF(seq, "%d %-" MAPS_NAME_COLUMN "s %s\n", tgid, prefix, name);
		return 0;
	}
	name = anon_name(vma);
	if (name) {
		BPF_SEQ_PRINTF(seq, "%d %-" MAPS_NAME_COLUMN "s [anon:%s]\n", tgid, prefix, name);
		return 0;
	}
	BPF_SEQ_PRINTF(seq, "%d %s\n", tgid, prefix);
	return 0;
}
