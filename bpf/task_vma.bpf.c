// SPDX-License-Identifier: GPL-2.0
/*
 * task_vma: one line per memory mapping, the owning tgid followed by the line
 * /proc/PID/maps shows for it, byte for byte. Columns: iterfs/readmes/task_vma.
 */
#include "iterfs.bpf.h"
#include "line.bpf.h"
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
#define MAPS_NAME_COLUMN 72
#define PAD_MAX 128

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

/* Up to MAPS_NAME_COLUMN with spaces, then the space before the name. */
static __always_inline void write_pad(struct seq_file *seq, char *pad, __u32 spaces)
{
	bpf_seq_write(seq, pad, (spaces & (PAD_MAX - 1)) + 1);
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
	const char *name, *anon;
	__u64 pgoff = 0, ino = 0;
	__u32 dev = 0;
	__u32 at, columns, spaces;
	struct scratch *s;
	char *part, *pad;
	int tgid, slot;

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
	/* the columns of show_map_vma(), built by hand backwards (line.bpf.h) after the pid */
	slot = scratch_claim(&s);
	if (slot < 0 || slot >= SCRATCH_SLOTS)
		return 1;
	part = s->buf[slot];
	at = LINE_PART;
	at = put_char(part, at, ' ');
	at = put_udec64(part, at, ino, 0);
	at = put_char(part, at, ' ');
	at = put_hex_least(part, at, dev & ((1U << MINORBITS) - 1), 2, 1);
	at = put_char(part, at, ':');
	at = put_hex_least(part, at, dev >> MINORBITS, 2, 1);
	at = put_char(part, at, ' ');
	at = put_hex_least(part, at, pgoff, 8, 1);
	at = put_char(part, at, ' ');
	at = put_char(part, at, flags & VM_MAYSHARE ? 's' : 'p');
	at = put_char(part, at, flags & VM_EXEC ? 'x' : '-');
	at = put_char(part, at, flags & VM_WRITE ? 'w' : '-');
	at = put_char(part, at, flags & VM_READ ? 'r' : '-');
	at = put_char(part, at, ' ');
	at = put_hex_least(part, at, vma->vm_end, 8, 1);
	at = put_char(part, at, '-');
	at = put_hex_least(part, at, vma->vm_start, 8, 1);
	columns = LINE_PART - at;
	at = put_char(part, at, ' ');
	at = put_sdec(part, at, tgid, 0);
	write_part(seq, part, at);
	/* seq_pad(): a name starts after the columns padded to MAPS_NAME_COLUMN, and a space */
	pad = part + LINE_PART;
	__builtin_memset(pad, ' ', PAD_MAX);
	spaces = at_least_0((__s64)MAPS_NAME_COLUMN - (__s64)columns) & (PAD_MAX - 1);

	/* the order of get_vma_name(), fs/proc/task_mmu.c */
	if (file) {
		write_pad(seq, pad, spaces);
		scratch_release(s, slot);	/* the path walk takes a slot of its own */
		name = anon_name(vma);
		if (name) {
			BPF_SEQ_PRINTF(seq, "[anon_shmem:%s]\n", name);
			return 0;
		}
		if (seq_write_path_walked(seq, path))
			return 1;
		bpf_seq_write(seq, "\n", 1);
		return 0;
	}
	name = special_name(vma);
	anon = name ? NULL : anon_name(vma);
	if (name || anon)
		write_pad(seq, pad, spaces);
	scratch_release(s, slot);
	if (name)
		BPF_SEQ_PRINTF(seq, "%s\n", name);
	else if (anon)
		BPF_SEQ_PRINTF(seq, "[anon:%s]\n", anon);
	else
		bpf_seq_write(seq, "\n", 1);
	return 0;
}
