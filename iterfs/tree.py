"""The names of the mount and their inode numbers.

    /                       one directory per served target, and pinned/
    /<target>/README        what a line means, which parameters the target takes
    /<target>/all           every object (targets that can walk without parameters)
    /<target>/<params>      e.g. pid=42, map_id=7: any well-formed name can be looked up
    /pinned/<abs path>      the iterator links pinned in bpffs, at their paths

Directories, READMEs and ``all`` live as long as the mount. Parameter files
are made on lookup and dropped when the kernel forgets them (lookup count 0),
so a long-running mount does not collect one inode per pid ever seen.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
from dataclasses import dataclass, field

from . import params as params_mod
from .catalog import Catalog
from .pins import Mirror, Pin

ROOT_INODE = 1  # FUSE_ROOT_ID
README = "README"
PINNED = "pinned"


class Kind(enum.Enum):
    DIR = "dir"
    README = "readme"
    ITER = "iter"
    MIRROR = "mirror"  # a directory of the bpffs mirror
    PIN = "pin"  # an iterator link pinned in bpffs


@dataclass(eq=False)
class Node:
    inode: int
    kind: Kind
    name: str
    target: str | None = None
    params: params_mod.Params | None = None
    path: str | None = None  # MIRROR and PIN: the absolute path mirrored
    lookups: int = 0
    permanent: bool = True
    children: dict[str, Node] = field(default_factory=dict)


class Tree:
    def __init__(self, catalog: Catalog, mirror: Mirror | None = None):
        self._catalog = catalog
        self._mirror = mirror or Mirror()
        self._lock = threading.Lock()
        self._inodes = itertools.count(ROOT_INODE)
        self._nodes: dict[int, Node] = {}
        # dynamic nodes by what they stand for: (target, params name) or (PINNED, path)
        self._params: dict[tuple[str, str], Node] = {}
        self.root = self._new(Kind.DIR, "")
        self.root.children[PINNED] = self._new(Kind.MIRROR, PINNED, path="/")
        for name in sorted(catalog.targets):
            directory = self._new(Kind.DIR, name, target=name)
            self.root.children[name] = directory
            directory.children[README] = self._new(Kind.README, README, target=name)
            if params_mod.schema_for(name).walks_all:
                everything = params_mod.parse(name, params_mod.ALL)
                directory.children[params_mod.ALL] = self._new(Kind.ITER, params_mod.ALL, target=name,
                                                               params=everything)

    def _new(self, kind: Kind, name: str, **kw) -> Node:
        node = Node(next(self._inodes), kind, name, **kw)
        self._nodes[node.inode] = node
        return node

    def node(self, inode: int) -> Node:
        """The node of inode; KeyError if the kernel holds no reference to it."""
        with self._lock:
            return self._nodes[inode]

    def lookup(self, parent: Node, name: str) -> Node:
        """The node called name in parent; LookupError (or ParamError) saying why not."""
        if parent.kind is Kind.MIRROR:
            return self._mirror_node(os.path.join(parent.path, name))
        if parent.kind is not Kind.DIR:
            raise LookupError(f"{parent.name} is not a directory")
        static = parent.children.get(name)
        if static is not None:
            return static
        if parent is self.root:
            raise LookupError(f"no target {name!r} on this mount")
        params = params_mod.parse(parent.target, name)
        params_mod.check(parent.target, params)
        return self._param_node(parent.target, params)

    def _param_node(self, target: str, params: params_mod.Params) -> Node:
        with self._lock:
            node = self._params.get((target, params.name))
            if node is None:
                node = self._new(Kind.ITER, params.name, target=target, params=params, permanent=False)
                self._params[(target, params.name)] = node
            return node

    def _mirror_node(self, path: str) -> Node:
        found = self._mirror.lookup(path)
        if found is None:
            raise LookupError(f"{path}: not a directory or iterator pin in bpffs")
        kind, target = (Kind.MIRROR, None) if found == "dir" else (Kind.PIN, found.target)
        with self._lock:
            node = self._params.get((PINNED, path))
            if node is None or node.kind is not kind or node.target != target:
                if node is not None:  # replaced by something else: the old inode lives on until forgotten
                    del self._params[(PINNED, path)]
                node = self._new(kind, os.path.basename(path), target=target, path=path, permanent=False)
                self._params[(PINNED, path)] = node
            return node

    def pin(self, node: Node) -> Pin:
        """What is pinned at a PIN node's path now; LookupError if that is no iterator link anymore."""
        found = self._mirror.lookup(node.path)
        if not isinstance(found, Pin):
            raise LookupError(f"{node.path}: no longer an iterator pin")
        return found

    def listing(self, directory: Node) -> list[str]:
        """What ls shows, in order: static entries, then the parameter files that exist now."""
        if directory.kind is Kind.MIRROR:
            return self._mirror.entries(directory.path)
        names = list(directory.children)
        if directory is not self.root:
            names += [n for n in params_mod.listing(directory.target) if n not in directory.children]
        return names

    def entry(self, directory: Node, name: str) -> Node:
        """The node for a name listing() gave (no existence check: it was just listed)."""
        if directory.kind is Kind.MIRROR:
            return self._mirror_node(os.path.join(directory.path, name))
        static = directory.children.get(name)
        if static is not None:
            return static
        return self._param_node(directory.target, params_mod.parse(directory.target, name))

    def remember(self, node: Node) -> None:
        with self._lock:
            node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        with self._lock:
            node = self._nodes.get(inode)
            if node is None:
                return
            node.lookups = max(0, node.lookups - count)
            self._drop_if_unused(node)

    def drop_if_unused(self, node: Node) -> None:
        """Drop a node made for an entry the kernel did not take."""
        with self._lock:
            self._drop_if_unused(node)

    def _drop_if_unused(self, node: Node) -> None:
        if node.lookups == 0 and not node.permanent and self._nodes.get(node.inode) is node:
            del self._nodes[node.inode]
            key = (PINNED, node.path) if node.path else (node.target, node.name)
            if self._params.get(key) is node:
                del self._params[key]

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._nodes)
