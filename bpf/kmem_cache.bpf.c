// SPDX-License-Identifier: GPL-2.0
/*
 * kmem_cache: one line per slab cache, the first six columns of /proc/slabinfo
 * byte for byte. Columns: iterfs/readmes/kmem_cache.
 */
#include "iterfs.bpf.h"

char _license[] SEC("license") = "GPL";

/* mm/slub.c: struct kmem_cache_order_objects packs the order above the object count */
#define OO_SHIFT	16
#define OO_MASK		((1U << OO_SHIFT) - 1)
/*
 * count_partial() walks a node's partial list under list_lock; a walk without
 * it may follow a slab onto another list, so it is capped.
 */
#define MAX_PARTIAL	(1 << 20)

extern struct kmem_cache *bpf_get_kmem_cache(__u64 addr) __ksym;

struct partial_walk {
	struct list_head *head;
	struct list_head *pos;
	unsigned long free;
};

struct node_walk {
	struct kmem_cache *s;
	unsigned long objs;
	unsigned long free;
};

/* count_free() of one slab on the partial list (mm/slub.c) */
static int partial_step(__u32 i, struct partial_walk *w)
{
	struct list_head *pos = w->pos;
	struct slab *slab;

	if (!pos || pos == w->head)
		return 1;
	slab = (void *)pos - bpf_core_field_offset(struct slab, slab_list);
	w->free += BPF_CORE_READ_BITFIELD_PROBED(slab, objects) -
		   BPF_CORE_READ_BITFIELD_PROBED(slab, inuse);
	w->pos = BPF_CORE_READ(pos, next);
	return 0;
}

/* one node of get_slabinfo()'s for_each_kmem_cache_node() (mm/slub.c) */
static int node_step(__u32 i, struct node_walk *w)
{
	struct partial_walk pw = {};
	struct kmem_cache *s = w->s;
	struct kmem_cache_node *n;

	/* a bound for the verifier: the size of node[] in this kernel's BTF */
	if (i >= bpf_core_field_size(s->node) / sizeof(n))
		return 1;
	if (bpf_core_read(&n, sizeof(n), &s->node[i]) || !n)
		return 0;
	/* node_nr_objs(): without CONFIG_SLUB_DEBUG the kernel counts no objects either */
	if (bpf_core_field_exists(n->total_objects))
		w->objs += BPF_CORE_READ(n, total_objects.counter);
	pw.head = &n->partial;
	pw.pos = BPF_CORE_READ(n, partial.next);
	bpf_loop(MAX_PARTIAL, partial_step, &pw, 0);
	w->free += pw.free;
	return 0;
}

/*
 * nr_node_ids, which bounds node[] (mm/slub.c kmem_cache_init() allocates a
 * struct kmem_cache with nr_node_ids pointers) but is not a BTF variable:
 * every struct kmem_cache is an object of the "kmem_cache" cache, whose
 * object_size is exactly that allocation size.
 */
static __always_inline __u32 nr_nodes(struct bpf_iter__kmem_cache *ctx)
{
	struct kmem_cache *meta;
	__u64 addr = 0;
	__u32 size;

	/* kfunc scalar arguments reject pointers: pass the address as a number */
	bpf_probe_read_kernel(&addr, sizeof(addr), &ctx->s);
	meta = bpf_get_kmem_cache(addr);
	if (!meta)
		return 1;
	size = meta->object_size;
	if (size <= bpf_core_field_offset(struct kmem_cache, node))
		return 1;
	return (size - bpf_core_field_offset(struct kmem_cache, node)) / sizeof(void *);
}

SEC("iter/kmem_cache")
int dump_kmem_cache(struct bpf_iter__kmem_cache *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct kmem_cache *s = ctx->s;
	struct node_walk w = {};
	unsigned int oo;

	if (!s)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "# name            <active_objs> <num_objs> <objsize> "
				    "<objperslab> <pagesperslab>\n");

	w.s = s;
	bpf_loop(nr_nodes(ctx), node_step, &w, 0);
	/* unlocked reads can see more free objects than the nodes count */
	if (w.free > w.objs)
		w.free = w.objs;
	oo = s->oo.x;
	/* mm/slab_common.c cache_show() */
	BPF_SEQ_PRINTF(seq, "%-17s %6lu %6lu %6u %4u %4d\n", s->name, w.objs - w.free, w.objs,
		       s->size, oo & OO_MASK, 1 << (oo >> OO_SHIFT));
	return 0;
}
