// SPDX-License-Identifier: GPL-2.0
/*
 * dmabuf: one line per DMA buffer, the buffer line of debugfs
 * dma_buf/bufinfo with spaces for tabs. Columns: iterfs/readmes/dmabuf.
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* include/uapi/linux/dma-buf.h */
#define DMA_BUF_NAME_LEN	32
/* include/linux/file_ref.h: counters from here on mean "no references" */
#define FILE_REF_RELEASED	0xc000000000000000UL

SEC("iter/dmabuf")
int dump_dmabuf(struct bpf_iter__dmabuf *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct dma_buf *buf = ctx->dmabuf;
	char name[DMA_BUF_NAME_LEN] = "<none>";
	unsigned long count;
	const char *pname;
	struct file *file;

	if (!buf)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "size     flags    mode     count    exp_name ino      name\n");

	/*
	 * bufinfo holds name_lock; a BPF program cannot, so, as the kernel's
	 * selftest (progs/dmabuf_iter.c), copy the name and accept a race with
	 * DMA_BUF_SET_NAME.
	 */
	pname = buf->name;
	if (pname)
		bpf_probe_read_kernel_str(name, sizeof(name), pname);

	/*
	 * file_count() is the counter + 1, and the iterator holds one reference
	 * (dma_buf_iter_begin()): the counter is the count bufinfo shows.
	 * f_ref is a file_ref_t since Linux 6.13 (90ee6ed776c0); the iterator
	 * came in 6.16.
	 */
	file = buf->file;
	count = file->f_ref.refcnt.counter;
	if (count >= FILE_REF_RELEASED)
		count = 0;

	/* drivers/dma-buf/dma-buf.c dma_buf_debug_show() */
	BPF_SEQ_PRINTF(seq, "%08zu %08x %08x %08ld %s %08lu %s\n", buf->size, file->f_flags,
		       file->f_mode, count, buf->exp_name, file->f_inode->i_ino, name);
	return 0;
}
