"""The names of the mount and their inode numbers.

    /                             one directory per served target, and pinned/
    /<target>/README              what a line means, which parameters the target takes
    /<target>/all                 every object (targets that can walk without parameters)
    /<target>/<params>            e.g. pid=42, map_id=7: any well-formed name can be looked up
    /<target>/<view>/...          a user's program for the target: README, all, <params>
    /<target>/FIELDS[.<path>]     the members a fields= directory may name (at <path>)
    /<target>/fields=<f>,.../...  those members of each object: README, all, <params>, and
                                  a .json sibling of each (all.json, pid=42.json)
    /pinned/<abs path>            the iterator links pinned in bpffs, at their paths
    /.iterfs/status               the daemon's state, as JSON (iterfs status MNT)

Target directories, their READMEs and ``all`` live as long as the mount.
Everything else is made on lookup and dropped when the kernel forgets it
(lookup count 0), so a long-running mount does not collect one inode per pid,
view or pin ever seen.
"""

from __future__ import annotations

import enum
import itertools
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from . import access, fields as fields_mod, params as params_mod, probes
from .catalog import Catalog
from .errors import NotFound
from .pins import Mirror, Pin

ROOT_INODE = 1  # FUSE_ROOT_ID
README = "README"
PINNED = "pinned"
CONTROL = ".iterfs"  # the daemon's own files: .iterfs/status
# Targets, READMEs and `all` never change while mounted; parameter files are re-checked
# at open, so a short cache only delays ls/stat noticing that a process has gone.
STATIC_TIMEOUT = 300.0
PARAM_TIMEOUT = 1.0
XATTR_PREFIX = "user.iterfs."
Scope = Callable[[], probes.Scope]  # what a reader can name, asked only when a name is checked


class Kind(enum.Enum):
    DIR = "dir"  # the root, a target's directory, a view's or a fields= directory
    README = "readme"
    LISTING = "listing"  # FIELDS[.<path>]: made at open from the kernel's BTF, which takes a while
    ITER = "iter"  # all, or a parameter file
    MIRROR = "mirror"  # a directory of the bpffs mirror
    PIN = "pin"  # an iterator link pinned in bpffs
    STATUS = "status"  # .iterfs/status: the daemon's state, made at open


@dataclass(eq=False)
class Node:
    inode: int
    kind: Kind
    name: str
    target: str | None = None
    view: str | None = None  # a user's view of the target
    params: params_mod.Params | None = None
    path: str | None = None  # MIRROR and PIN: the absolute path mirrored
    fields: str | None = None  # the fields a fields= directory (and its files) name, less "fields="
    as_json: bool = False  # a fields= file's .json sibling
    parent: int = 0  # a parameter file's directory's inode
    lookups: int = 0
    key: tuple | None = None  # what a dynamic node stands for; None: lives as long as the mount
    children: dict[str, Node] = field(default_factory=dict)  # of permanent directories

    @property
    def permanent(self) -> bool:
        return self.key is None


class Attributes(NamedTuple):
    """What stat(2) says of a node, less what every node shares (owner, times)."""

    mode: int
    nlink: int
    size: int
    timeout: float  # how long the kernel may cache the entry and these attributes


class Tree:
    def __init__(self, catalog: Catalog, mirror: Mirror | None = None):
        self._catalog = catalog
        self._mirror = mirror or Mirror()
        self._lock = threading.Lock()
        self._inodes = itertools.count(ROOT_INODE)
        self._nodes: dict[int, Node] = {}
        self._dynamic: dict[tuple, Node] = {}
        self.root = self._new(Kind.DIR, "")
        self.root.children[PINNED] = self._new(Kind.MIRROR, PINNED, path="/")
        control = self.root.children[CONTROL] = self._new(Kind.DIR, CONTROL)
        control.children["status"] = self._new(Kind.STATUS, "status")
        for name in sorted(catalog.targets):
            directory = self._new(Kind.DIR, name, target=name)
            self.root.children[name] = directory
            directory.children[README] = self._new(Kind.README, README, target=name)
            schema = catalog.schema(name)
            if schema.walks_all:
                directory.children[params_mod.ALL] = self._new(
                    Kind.ITER, params_mod.ALL, target=name, params=schema.parse(params_mod.ALL))
            directory.children[fields_mod.LISTING] = self._new(Kind.LISTING, fields_mod.LISTING, target=name)

    def _new(self, kind: Kind, name: str, **kw) -> Node:
        node = Node(next(self._inodes), kind, name, **kw)
        self._nodes[node.inode] = node
        return node

    def _node_for(self, key: tuple, kind: Kind, name: str, **kw) -> Node:
        """The dynamic node standing for key: the same one while the kernel remembers it."""
        with self._lock:
            node = self._dynamic.get(key)
            if node is None or node.kind is not kind or node.target != kw.get("target"):
                # new, or what stands there changed kind (a pin replaced by a directory)
                node = self._dynamic[key] = self._new(kind, name, key=key, **kw)
            return node

    def node(self, inode: int) -> Node:
        """The node of inode; NotFound if the kernel holds no reference to it."""
        with self._lock:
            node = self._nodes.get(inode)
        if node is None:
            raise NotFound(f"inode {inode} is not known")
        return node

    def blocks(self, node: Node, name: str | None = None) -> bool:
        """Whether looking up name in node (without a name: listing node) looks at more than a
        file or two: bpffs, the objects directories, a listing of /proc, the cgroup tree. An
        event loop runs those in a worker thread; a pid=N lookup reads /proc/N/status in place."""
        if node.kind is Kind.MIRROR:
            return True
        if node.kind is not Kind.DIR or node.target is None:
            return False  # the root, .iterfs
        if name is None:
            return True  # the views, and the objects that exist now
        if name in node.children:
            return False
        if _names_fields(node, name):
            return True  # the kernel's BTF, loaded on first use
        if "=" not in name:
            return self._names_a_view(node, name)
        return probes.costly(self._catalog.schema(node.target))

    @staticmethod
    def _names_a_view(parent: Node, name: str) -> bool:
        # under a target, a name that is no parameter file is a view or nothing: the
        # objects directories are looked at again before saying which
        return parent.kind is Kind.DIR and parent.target is not None and parent.view is None \
            and parent.fields is None and "=" not in name and name not in parent.children \
            and not _names_fields(parent, name)

    def names_objects(self, parent: Node, name: str) -> bool:
        """Whether name in parent is a parameter file (pid=42, map_id=7): it exists if what it
        names does."""
        return parent.kind is Kind.DIR and parent.target is not None and name not in parent.children \
            and "=" in name and not _names_fields(parent, name)

    def lookup(self, parent: Node, name: str, scope: Scope = lambda: probes.DAEMONS) -> Node:
        """The node called name in parent, for a reader who sees scope() (its pids and cgroups,
        asked only if a name is checked); NotFound (a ParamError for parameters) saying why
        not. Blocks when blocks(parent, name) says so.

        Everything is checked before a node is made: a name that does not
        exist leaves nothing behind.
        """
        if self._names_a_view(parent, name):
            self._catalog.refresh_views()
        return self._resolve(parent, name, scope)

    def entry(self, directory: Node, name: str) -> Node:
        """The node for a name listing() gave (no existence check: it was just listed)."""
        return self._resolve(directory, name, None)

    def _resolve(self, parent: Node, name: str, scope: Scope | None) -> Node:
        """scope: where the objects a name names must exist; None: no check."""
        if parent.kind is Kind.MIRROR:
            return self._mirror_node(os.path.join(parent.path, name))
        if parent.kind is not Kind.DIR:
            raise NotFound(f"{parent.name} is not a directory")
        if name in parent.children:
            return parent.children[name]
        if parent is self.root:
            raise NotFound(f"no target {name!r} on this mount")
        if parent.target is None:
            raise NotFound(f"no {name!r} in {parent.name}")
        target, view = parent.target, parent.view
        if parent.fields is not None:
            return self._in_fields(parent, name, scope)
        if _names_fields(parent, name):
            return self._fields_node(target, name)
        if view is None and name in self._catalog.views(target):
            return self._view_node(target, name)
        schema = self._catalog.schema(target, view)  # NotFound if the view has gone
        if view is not None and name == README:
            return self._readme_node(target, view)
        params = schema.parse(name)
        if scope is not None:
            probes.check(schema, params, scope())
        return self._params_node(parent, params)

    def _fields_node(self, target: str, name: str) -> Node:
        path = fields_mod.listing_path(name)
        if path is not None:  # FIELDS.<path>: the members at path
            fields_mod.listing(target, path)  # FieldError if path leads to no struct
            return self._node_for((target, None, name), Kind.LISTING, name, target=target)
        spec = name[len(fields_mod.PREFIX):]
        self._catalog.field_list(target, spec)  # FieldError, saying which field and why
        return self._node_for((target, name), Kind.DIR, name, target=target, fields=spec)

    def _in_fields(self, parent: Node, name: str, scope: Scope | None) -> Node:
        """README, or a parameter file of the target (and its .json sibling) in a fields= directory."""
        target, spec = parent.target, parent.fields
        if name == README:
            return self._node_for((target, parent.name, README), Kind.README, README, target=target, fields=spec)
        params_name, as_json = fields_mod.file_params(name)
        schema = self._catalog.schema(target)
        params = schema.parse(params_name)
        if scope is not None:
            probes.check(schema, params, scope())
        return self._node_for((target, parent.name, name), Kind.ITER, name, target=target, params=params,
                              fields=spec, as_json=as_json, parent=parent.inode)

    def _params_node(self, parent: Node, params: params_mod.Params) -> Node:
        return self._node_for((parent.target, parent.view, params.name), Kind.ITER, params.name,
                              target=parent.target, view=parent.view, params=params, parent=parent.inode)

    def _readme_node(self, target: str, view: str) -> Node:
        return self._node_for((target, view, README), Kind.README, README, target=target, view=view)

    def _view_node(self, target: str, view: str) -> Node:
        return self._node_for((target, view), Kind.DIR, view, target=target, view=view)

    def _mirror_node(self, path: str) -> Node:
        found = self._mirror.lookup(path)
        if found is None:
            raise NotFound(f"{path}: not a directory or iterator pin in bpffs")
        if found == "dir":
            return self._node_for((PINNED, path), Kind.MIRROR, os.path.basename(path), path=path)
        return self._node_for((PINNED, path), Kind.PIN, os.path.basename(path), target=found.target, path=path)

    def pin(self, node: Node) -> Pin:
        """What is pinned at a PIN node's path now; NotFound if that is no iterator link anymore."""
        found = self._mirror.lookup(node.path)
        if not isinstance(found, Pin):
            raise NotFound(f"{node.path}: no longer an iterator pin")
        return found

    def listing(self, directory: Node, scope: Scope = lambda: probes.DAEMONS) -> list[str]:
        """What ls shows: static entries, views, then the parameter files that exist now where
        scope() sees. Blocks when blocks(directory) says so."""
        if directory.kind is Kind.MIRROR:
            return self._mirror.entries(directory.path)
        names = list(directory.children)
        if directory.target is None:  # the root, .iterfs
            return names
        if directory.fields is not None:
            files = probes.listing(self._catalog.schema(directory.target), scope())
            return [README] + [name + suffix for name in files for suffix in ("", fields_mod.JSON)]
        self._catalog.refresh_views()
        if directory.view is None:
            names += sorted(self._catalog.views(directory.target))
        else:
            names.append(README)
        schema = self._catalog.schema(directory.target, directory.view)
        return names + [n for n in probes.listing(schema, scope()) if n not in directory.children]

    def listing_text(self, node: Node) -> bytes:
        """A LISTING node's text, from the kernel's BTF. Blocks: the BTF is loaded on first use."""
        return fields_mod.listing(node.target, fields_mod.listing_path(node.name)).encode()

    def readme(self, node: Node) -> bytes:
        """A README node's text: a target's made once, a view's from the view as last seen,
        a fields= directory's from the kernel's BTF (resolved when the directory was looked up)."""
        return self._catalog.recipe(node.target, node.view, fields=node.fields).readme.encode()

    def attributes(self, node: Node) -> Attributes:
        timeout = STATIC_TIMEOUT if node.permanent else PARAM_TIMEOUT
        if node.kind in (Kind.DIR, Kind.MIRROR):
            subdirectories = sum(1 for c in node.children.values() if c.kind is Kind.DIR)
            return Attributes(stat.S_IFDIR | 0o555, 2 + subdirectories, 0, timeout)
        # an iterator's size is unknown until it is read: like /proc, st_size is 0
        size = len(self.readme(node)) if node.kind is Kind.README else 0
        return Attributes(stat.S_IFREG | self._mode(node), 1, size, timeout)

    def _mode(self, node: Node) -> int:
        """Who may read it, as access.py decides for a shared mount: 0400 where only privileged readers may."""
        if node.kind is Kind.STATUS:
            return 0o400
        if node.kind is Kind.PIN:  # bpffs decides, at open: as the pin's own mode says for others
            try:
                return 0o444 if os.stat(node.path).st_mode & stat.S_IROTH else 0o400
            except FileNotFoundError:
                raise NotFound(f"{node.path}: no longer pinned") from None
        if node.kind is not Kind.ITER:
            return 0o444  # READMEs and FIELDS listings, from the kernel's world-readable BTF
        return access.mode(node.target, self.view_rule(node), node.view is not None, node.fields is not None)

    def view_rule(self, node: Node) -> str | None:
        """The rule a view's object declares (access.py), as the views were last seen."""
        view = self._catalog.views(node.target).get(node.view) if node.view else None
        return view.rule if view else None

    def xattrs(self, node: Node) -> dict[str, str]:
        """user.iterfs.*: a file's target and parameters (a pin's as its link's fdinfo says,
        which blocks: bpffs is asked)."""
        if node.kind is Kind.PIN:
            pin = self.pin(node)
            values = {"target": pin.target, "link_id": str(pin.link_id), "prog_id": str(pin.prog_id),
                      **pin.params}
        elif node.kind is Kind.ITER:
            view = {"view": node.view} if node.view else {}
            if node.fields is not None:
                view = {"fields": node.fields, "format": "json" if node.as_json else "text"}
            values = {"target": node.target, **view,
                      **self._catalog.schema(node.target, node.view).as_text(node.params)}
        else:
            return {}
        return {XATTR_PREFIX + key: value for key, value in values.items()}

    def parameter_files(self, targets: set[str]) -> list[tuple[int, str]]:
        """(directory inode, name) of each parameter file of targets the kernel holds."""
        with self._lock:
            return [(node.parent, node.name) for node in self._dynamic.values()
                    if node.kind is Kind.ITER and node.target in targets and node.lookups]

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
            if self._dynamic.get(node.key) is node:
                del self._dynamic[node.key]

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._nodes)


def _names_fields(parent: Node, name: str) -> bool:
    """fields=... or FIELDS.<path> in a target's own directory."""
    return parent.kind is Kind.DIR and parent.target is not None and parent.view is None \
        and parent.fields is None and (name.startswith(fields_mod.PREFIX)
                                       or name != fields_mod.LISTING and fields_mod.listing_path(name) is not None)
