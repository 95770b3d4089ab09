"""What the kernel has right now, for the parameters that name it: processes, cgroups, maps.

params.py says what a name means; this module asks the kernel whether the
objects it names exist (so a name of nothing is ENOENT, not an empty walk),
which names ``ls`` shows, and makes the link_info of a name, which for a
map holds an fd of it for as long as the link is being made.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import struct
from typing import Iterator, NamedTuple

from . import _libbpf, pieces
from .mounts import mount_points
from .params import ALL, CgroupSchema, MapSchema, ParamError, Params, Schema, TaskSchema


class Scope(NamedTuple):
    """What a reader can name: the pids of a /proc, the cgroups under a cgroup2 path."""

    proc: str = "/proc"  # the /proc of the reader's pid namespace
    cgroups: str = "/"  # the reader's cgroup namespace root, under the cgroup2 mount


DAEMONS = Scope()


def costly(schema: Schema) -> bool:
    """Whether check() of the schema's names walks many files (the whole cgroup tree, where the
    cgroup2 mount opens no file handles) rather than reading one or two (/proc/N/status, a
    map's fdinfo, a cgroup's directory by its id): an event loop runs those in a worker thread."""
    return isinstance(schema.base, CgroupSchema) and not _handles_open()


def check(schema: Schema, params: Params, scope: Scope = DAEMONS) -> None:
    """Raise ParamError unless the objects params name exist right now, where scope sees."""
    values = schema.target_values(params)
    base = schema.base
    if isinstance(base, TaskSchema):
        # the kernel accepts any number and then walks nothing; say ENOENT instead
        for key, number in values.items():
            tgid = tgid_of(number, scope.proc)
            if tgid is None:
                raise ParamError(f"no {'process' if key == 'pid' else 'thread'} {number}")
            if key == "pid" and tgid != number:
                raise ParamError(f"{number} is a thread of process {tgid}, not a process: use tid={number}")
    elif isinstance(base, CgroupSchema):
        if "id" in values and not cgroup_exists(values["id"], scope.cgroups):
            raise ParamError(f"no cgroup with id {values['id']} under {_cgroup_dir(scope.cgroups)}")
    elif isinstance(base, MapSchema):
        map_type = map_type_of(values["map_id"])
        if map_type is None:
            raise ParamError(f"no BPF map with id {values['map_id']}")
        why = base.wrong_type(values["map_id"], map_type)
        if why:
            raise ParamError(why)


def listing(schema: Schema, scope: Scope = DAEMONS) -> Iterator[str]:
    """The parameter file names ls shows: ``all`` where the target walks without any, then
    one per object that exists now, where scope sees."""
    if schema.walks_all:
        yield ALL
    base = schema.base
    if isinstance(base, TaskSchema):
        yield from (f"pid={pid}" for pid in live_pids(scope.proc))
    elif isinstance(base, CgroupSchema):
        yield from (f"id={cgroup_id}" for cgroup_id in sorted(cgroup_ids(scope.cgroups)))
    elif isinstance(base, MapSchema):
        yield from (f"map_id={map_id}" for map_id in _libbpf.map_ids()
                    if map_type_of(map_id) in base.map_types)


@contextlib.contextmanager
def link_info(schema: Schema, params: Params, scope: Scope = DAEMONS) -> Iterator[bytes | None]:
    """The link_info bytes (or None) for params, valid inside the block. A cgroup walk
    without an id starts at the root of what scope sees."""
    values = schema.target_values(params)
    if isinstance(schema.base, CgroupSchema) and "id" not in values and scope.cgroups != "/":
        values = {**values, "id": os.stat(_cgroup_dir(scope.cgroups)).st_ino}
    if not isinstance(schema.base, MapSchema):
        yield schema.pack(values)
        return
    fd = _libbpf.map_get_fd_by_id(values["map_id"])
    try:
        yield schema.pack(values, fd)
    finally:
        os.close(fd)


def live_pids(proc: str = "/proc") -> list[int]:
    return sorted(int(entry) for entry in os.listdir(proc) if entry.isdigit())


def tgid_of(tid: int, proc: str = "/proc") -> int | None:
    """The process thread tid belongs to, or None if there is no such thread."""
    # /proc/<tid> resolves every thread, not only the group leaders it lists.
    # os.open/os.read: this runs on every open, and io.open adds three syscalls.
    try:
        fd = os.open(f"{proc}/{tid}/status", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        status = os.read(fd, 4096)
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)
    start = status.find(b"\nTgid:")
    return int(status[start + 6:status.index(b"\n", start + 1)]) if start >= 0 else None


def cgroup2_root() -> str:
    """Where cgroup2 is mounted (its first mount)."""
    points = mount_points("cgroup2")
    if not points:
        raise ParamError("cgroup2 is not mounted")
    return points[0]


def _cgroup_dir(cgroups: str) -> str:
    return os.path.join(cgroup2_root(), cgroups.lstrip("/")).rstrip("/") or "/"


def cgroup_exists(cgroup_id: int, cgroups: str = "/") -> bool:
    """Whether a cgroup with this id is under cgroups now: its directory, opened by its file
    handle (a kernfs handle is the id), or a walk of the tree where the mount opens none."""
    if not _handles_open():
        return cgroup_id in cgroup_ids(cgroups)
    path = _cgroup_by_id(cgroup_id)
    under = _cgroup_dir(cgroups)
    return path is not None and (path == under or path.startswith(under.rstrip("/") + "/"))


FILEID_KERNFS = 0xFE  # include/linux/exportfs.h: a kernfs node's handle is its 64-bit id
_libc = ctypes.CDLL(None, use_errno=True)


def _cgroup_by_id(cgroup_id: int) -> str | None:
    """The cgroup2 directory of the cgroup with this id (open_by_handle_at(2)), None if none."""
    handle = ctypes.create_string_buffer(struct.pack("=IiQ", 8, FILEID_KERNFS, cgroup_id), 16)
    root = os.open(cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.open_by_handle_at(root, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            if code in (errno.ESTALE, errno.ENOENT):
                return None  # no such cgroup (now)
            raise OSError(code, f"open_by_handle_at(cgroup {cgroup_id}): {os.strerror(code)}")
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
    finally:
        os.close(root)


@functools.lru_cache(maxsize=None)
def _handles_open() -> bool:
    """Whether the cgroup2 mount opens a directory by its file handle (the root's, id 1)."""
    try:
        return _cgroup_by_id(os.stat(cgroup2_root()).st_ino) is not None
    except (OSError, ParamError):
        return False


def cgroup_ids(cgroups: str = "/") -> set[int]:
    """The ids of every cgroup under cgroups: a cgroup2 directory's inode number is its cgroup id."""
    ids = set()
    pending = [_cgroup_dir(cgroups)]
    while pending:
        path = pending.pop()
        try:
            ids.add(os.stat(path).st_ino)
            pending.extend(entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            pass  # removed while we walked
    return ids


def cgroup_root_id(cgroups: str = "/") -> int:
    return os.stat(_cgroup_dir(cgroups)).st_ino


def cgroup_children(path: str) -> list[pieces.Cgroup]:
    """The children of the cgroup at path, oldest first. A cgroup's id is its directory's inode
    number, which a kernfs directory entry gives (d_ino) without a stat(); ids only grow."""
    try:
        return sorted(pieces.Cgroup(e.inode(), e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:  # removed meanwhile
        return []


def cgroup_chain(cgroups: str, root: int, cgroup: int, printed: str) -> list[pieces.Cgroup] | None:
    """The cgroups from root down to cgroup, whose path the cgroup program printed as printed
    (relative to cgroups: the reader's namespace root); None if that is not where cgroup is now."""
    path = _cgroup_dir(cgroups)
    chain = []
    for name in [""] + [part for part in printed.split("/") if part]:
        path = os.path.join(path, name) if name else path
        try:
            chain.append(pieces.Cgroup(os.stat(path).st_ino, path))
        except (FileNotFoundError, NotADirectoryError):
            return None
    ids = [c.id for c in chain]
    if root not in ids or ids[-1] != cgroup:
        return None
    return chain[ids.index(root):]


def cgroup_tree(cgroups: str, root: int) -> pieces.Tree | None:
    """The tree of cgroups under root, found under cgroups, with a guess of each subtree's output
    (its lines as the bundled program prints them); None if root is not there now."""
    base = _cgroup_dir(cgroups)
    children: dict[int, list[int]] = {}
    size: dict[int, int] = {}
    order: list[tuple[int, int | None]] = []  # (id, parent id), parents first
    pending: list[tuple[str, int, int | None]] = [(base, cgroup_root_id(cgroups), None)]
    while pending:
        path, cgroup, parent = pending.pop()
        order.append((cgroup, parent))
        size[cgroup] = len(path) - len(base) + 24
        subdirs = cgroup_children(path)
        children[cgroup] = [c.id for c in subdirs]
        pending.extend((c.path, c.id, cgroup) for c in subdirs)
    for cgroup, parent in reversed(order):
        if parent is not None:
            size[parent] += size[cgroup]
    return pieces.Tree(children, size) if root in size else None


def map_type_of(map_id: int) -> int | None:
    """The map's type, from the kernel's fdinfo of a map fd, or None if there is no such map."""
    try:
        fd = _libbpf.map_get_fd_by_id(map_id)
    except OSError:
        return None
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("map_type:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    return None
