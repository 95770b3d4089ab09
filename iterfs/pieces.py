"""A cgroup walk too large for one read, made of walks of its subtrees.

The kernel holds cgroup_mutex for one read() of a cgroup iterator only: a walk
whose output is larger than one kernel read buffer fails with EOPNOTSUPP on
its second read (kernel/bpf/cgroup_iter.c). A tree of any size is still
walked whole, and in the kernel's order, when each part is a walk that fits:

    pre-order of C   =  C's pre-order walk if it fits, else C alone, then each child's pre-order
    post-order of C  =  C's post-order walk if it fits, else each child's post-order, then C alone

Children are taken in the order the kernel walks them, oldest first (a
cgroup's children list grows at its tail: kernel/cgroup/cgroup.c), which is
the order of their ids. Each part is its own snapshot; a cgroup removed
between parts is left out, one made between them may be.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

from .params import CGROUP_ORDERS

SELF, PRE, POST = (CGROUP_ORDERS[name] for name in ("self_only", "descendants_pre", "descendants_post"))
ORDERS = frozenset({PRE, POST})  # the walks that may be larger than one read
# A part whose guessed output is larger is split without trying it: a try that fails costs a walk.
TRY_UP_TO = 24 * 1024


class Tree(NamedTuple):
    """The cgroups under a root, as its cgroup2 directories show them."""

    children: dict[int, list[int]]  # cgroup id -> its children's ids, oldest first
    size: dict[int, int]  # cgroup id -> guessed bytes of output for it and its descendants


# walk(order, cgroup id) -> the whole output of that walk, or None when it is larger than one read
Walk = Callable[[int, int], "bytes | None"]


def walk(tree: Tree, root: int, order: int, walk_one: Walk, header: bool) -> Iterator[bytes]:
    """The output of root's walk in order, part by part. header: the program's output begins
    with a header line, which only the first part that has one keeps."""
    first = True
    for part in (_pre if order == PRE else _post)(tree, root, walk_one):
        if not part:
            continue
        if header and not first:
            part = part[part.find(b"\n") + 1:]
        first = False
        if part:
            yield part


def _pre(tree: Tree, root: int, walk_one: Walk) -> Iterator[bytes]:
    pending = [root]  # a stack, not recursion: a tree may be deeper than Python's recursion limit
    while pending:
        cgroup = pending.pop()
        whole = _try(tree, cgroup, PRE, walk_one)
        if whole is not None:
            yield whole
            continue
        yield walk_one(SELF, cgroup) or b""
        pending.extend(reversed(tree.children.get(cgroup, ())))


def _post(tree: Tree, root: int, walk_one: Walk) -> Iterator[bytes]:
    pending = [(root, False)]  # (cgroup, whether its children are walked already)
    while pending:
        cgroup, children_done = pending.pop()
        if children_done:
            yield walk_one(SELF, cgroup) or b""
            continue
        whole = _try(tree, cgroup, POST, walk_one)
        if whole is not None:
            yield whole
            continue
        pending.append((cgroup, True))
        pending.extend((child, False) for child in reversed(tree.children.get(cgroup, ())))


def _try(tree: Tree, cgroup: int, order: int, walk_one: Walk) -> bytes | None:
    if tree.children.get(cgroup) and tree.size.get(cgroup, 0) > TRY_UP_TO:
        return None
    return walk_one(order, cgroup)
