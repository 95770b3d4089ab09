"""A cgroup walk too large for one read, made of walks that each fit one.

The kernel holds cgroup_mutex for one read() of a cgroup iterator only: a walk
whose output is larger than one kernel read buffer fails with EOPNOTSUPP on
its second read (kernel/bpf/cgroup_iter.c). Its first read is whole lines, in
the kernel's order, up to some cgroup L. The rest of the walk is then walks
of what comes after L, each of which may again stop after its first read:

    pre-order after L    L's children's subtrees; then, from L up to the walk's root,
                         each later sibling's subtree
    post-order after L   from L up to the root: each later sibling's subtree, then the parent

Siblings come in the order the kernel walks them, oldest first (a cgroup's
children list grows at its tail, kernel/cgroup/cgroup.c), which is the order
of their ids (kernfs ids only grow). L is found from the bundled program's
last line (id, level, path); where that is not possible (fields= records, a
path the line cannot name), the part is walked from a listing of its whole
tree instead, each cgroup alone or each subtree that fits. Each walk is a
snapshot of its own: a cgroup made or removed while a large walk is read may
be listed or not.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

from .params import CGROUP_ORDERS

SELF, PRE, POST = (CGROUP_ORDERS[name] for name in ("self_only", "descendants_pre", "descendants_post"))
ORDERS = frozenset({PRE, POST})  # the walks that may be larger than one read
HEADER = b"id level path\n"  # the bundled program's first line (bpf/cgroup.bpf.c)
# Listing a whole tree, a subtree whose guessed output is larger is split without trying it.
TRY_UP_TO = 24 * 1024


class Cgroup(NamedTuple):
    id: int
    path: str  # its cgroup2 directory


class Tree(NamedTuple):
    """The cgroups under a root, as its cgroup2 directories show them."""

    children: dict[int, list[int]]  # cgroup id -> its children's ids, oldest first
    size: dict[int, int]  # cgroup id -> guessed bytes of output for it and its descendants


class Kernel(NamedTuple):
    """What a walk in parts asks of the kernel and of the cgroup2 directories."""

    first_read: Callable[[int, int], tuple[bytes, bool]]  # (order, id) -> a new walk's first read, and
    #                                                      whether that was all of it
    children: Callable[[str], list[Cgroup]]  # a cgroup's directory -> its children, oldest first
    chain: Callable[[int, int, str], list[Cgroup] | None]  # (root id, id, path as printed) -> root .. it
    tree: Callable[[int], Tree | None]  # root id -> the tree under it


def walk(kernel: Kernel, root: int, order: int, bundled: bool, first: bytes) -> Iterator[bytes]:
    """The output of root's walk in order, part by part, from its first read, first, on.
    bundled: the bundled program's output, a header line and "id level path" lines, so a part's
    last cgroup is known; otherwise (fields= records) the walk goes on from a listing."""
    parts = _Parts(kernel, order, bundled)
    for chunk in parts.after(root, first) if bundled else parts.listed(root):
        if chunk:  # an empty chunk would end the reader's walk
            yield chunk


class _Parts:
    def __init__(self, kernel: Kernel, order: int, bundled: bool):
        self.kernel, self.order, self.bundled = kernel, order, bundled

    def read(self, order: int, cgroup: int) -> tuple[bytes, bool]:
        """A new walk's first read, without its header line: a walk whose first cgroup is a dead
        one (which the kernel skips, using up seq_num 0) has none."""
        output, whole = self.kernel.first_read(order, cgroup)
        if self.bundled and output.startswith(HEADER):
            output = output[len(HEADER):]
        return output, whole

    def part(self, cgroup: int) -> Iterator[bytes]:
        output, whole = self.read(self.order, cgroup)
        if whole:
            yield output
        else:
            yield from self.after(cgroup, output)

    def after(self, root: int, first: bytes) -> Iterator[bytes]:
        """root's walk from its first read, first (bundled lines), on: that read stopped short of
        the whole walk."""
        chain = self.kernel.chain(root, *_last(first))
        if chain is None:  # the last line names no cgroup that is there now: from a listing
            if first.startswith(HEADER):
                yield HEADER
            yield from self.listed(root)
            return
        yield first
        if self.order == PRE:
            for child in self.kernel.children(chain[-1].path):
                yield from self.part(child.id)
        for parent, done in reversed(list(zip(chain, chain[1:]))):
            later = [c.id for c in self.kernel.children(parent.path) if c.id > done.id]
            if not later:
                if self.order == POST:
                    yield self.read(SELF, parent.id)[0]
                continue
            if parent.id != root:
                # the parent's whole walk may fit one read: its lines after done's subtree, in one walk
                output, whole = self.read(self.order, parent.id)
                # pre-order: from the first later sibling's line; post-order: after done's line
                at = None if not whole else _line_of(output, later[0], after=False) \
                    if self.order == PRE else _line_of(output, done.id, after=True)
                if at is not None:
                    yield output[at:]
                    continue
            for sibling in later:
                yield from self.part(sibling)
            if self.order == POST:
                yield self.read(SELF, parent.id)[0]

    def listed(self, root: int) -> Iterator[bytes]:
        """root's walk from a listing of its tree: each subtree that fits one read whole, the
        others split into each cgroup alone and its children's subtrees."""
        tree = self.kernel.tree(root)
        if tree is None:
            return
        # a stack, not recursion: a tree may be deeper than Python's recursion limit
        pending = [(root, False)]  # (cgroup, whether its children are walked already: post-order)
        while pending:
            cgroup, children_done = pending.pop()
            if children_done:
                yield self.read(SELF, cgroup)[0]
                continue
            if not (tree.children.get(cgroup) and tree.size.get(cgroup, 0) > TRY_UP_TO):
                output, whole = self.read(self.order, cgroup)
                if whole:
                    yield output
                    continue
            children = [(child, False) for child in reversed(tree.children.get(cgroup, ()))]
            if self.order == PRE:
                yield self.read(SELF, cgroup)[0]
            else:
                pending.append((cgroup, True))
            pending.extend(children)


def _line_of(output: bytes, cgroup: int, after: bool) -> int | None:
    """Where, in the bundled program's lines, cgroup's line begins (after: the line after it);
    None if it has none."""
    wanted = b"%d " % cgroup
    at = 0 if output.startswith(wanted) else output.find(b"\n" + wanted) + 1
    if at == 0 and not output.startswith(wanted):
        return None
    if not after:
        return at
    end = output.find(b"\n", at)
    return end + 1 if end >= 0 else None


def _last(output: bytes) -> tuple[int, str]:
    """The id and path of the last cgroup of the bundled program's output ("id level path" lines);
    (0, "") where its last line is not one (a path with a newline in it ends there)."""
    line = output[output.rstrip(b"\n").rfind(b"\n") + 1:].rstrip(b"\n")
    fields = line.split(b" ", 2)
    if len(fields) != 3 or not fields[0].isdigit():
        return 0, ""
    return int(fields[0]), fields[2].decode(errors="surrogateescape")
