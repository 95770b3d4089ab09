"""File names as iterator parameters: ``all`` or ``key=value[,key=value]``.

A name maps to the ``union bpf_iter_link_info`` the kernel takes at link
creation (include/uapi/linux/bpf.h). Each target has a schema saying which
keys it takes, in which order; a name is accepted only in its one canonical
spelling (keys in schema order, numbers without leading zeros), so one set of
parameters is one file.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from . import _libbpf
from .btf import Global
from .mounts import mount_points

ALL = "all"
LINK_INFO_SIZE = 16  # sizeof(union bpf_iter_link_info)
_DECIMAL = re.compile(r"[1-9][0-9]{0,19}\Z")
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

Values = Mapping[str, int]


class ParamError(ValueError):
    """A name that is not a parameter set of this target; the message says why."""


@dataclass(frozen=True)
class Params:
    name: str  # the canonical file name
    values: tuple[tuple[str, int | str], ...]


class Schema:
    """Parameters a target takes. The base schema takes none: only ``all``."""

    keys: tuple[str, ...] = ()
    aliases: Mapping[str, str] = {}  # other spellings of keys: alias -> key
    walks_all = True  # whether the target can walk without parameters (the file `all`)
    maximum = _U32_MAX

    def parse_value(self, key: str, text: str) -> int:
        if not _DECIMAL.match(text) or int(text) > self.maximum:
            raise ParamError(f"{key}={text}: not a positive decimal number without leading zeros")
        return int(text)

    def format_value(self, key: str, value: int) -> str:
        return str(value)

    def validate(self, values: Values) -> None:
        """Raise ParamError for combinations the kernel would refuse."""

    def check(self, values: Values) -> None:
        """Raise ParamError unless the objects named by values exist right now."""

    def listing(self) -> Iterable[str]:
        """Parameter file names worth showing in ``ls``, besides ``all``."""
        return ()

    @contextlib.contextmanager
    def link_info(self, values: Values) -> Iterator[bytes | None]:
        """The link_info for values, valid inside the block (it may hold fds)."""
        yield None


class TaskSchema(Schema):
    """task, task_file, task_vma: link_info.task.{tid,pid} (Linux 6.1)."""

    keys = ("pid", "tid")

    def validate(self, values):
        if len(values) > 1:
            raise ParamError("pid and tid exclude each other")

    @contextlib.contextmanager
    def link_info(self, values):
        if not values:
            yield None
        else:
            yield struct.pack("=III", values.get("tid", 0), values.get("pid", 0), 0).ljust(LINK_INFO_SIZE, b"\0")

    def check(self, values):
        # The kernel accepts any number and then walks nothing; say ENOENT instead.
        for key, number in values.items():
            tgid = _tgid_of(number)
            if tgid is None:
                raise ParamError(f"no {'process' if key == 'pid' else 'thread'} {number}")
            if key == "pid" and tgid != number:
                raise ParamError(f"{number} is a thread of process {tgid}, not a process: use tid={number}")

    def listing(self):
        return (f"pid={pid}" for pid in live_pids())


# enum bpf_cgroup_iter_order
CGROUP_ORDERS = {"self_only": 1, "descendants_pre": 2, "descendants_post": 3, "ancestors_up": 4}


class CgroupSchema(Schema):
    """cgroup: link_info.cgroup.{cgroup_id,order} (Linux 6.1). No id: the cgroup2 root.

    The kernel refuses order 0 (BPF_CGROUP_ITER_ORDER_UNSPEC) and an absent
    link_info alike (kernel/bpf/cgroup_iter.c bpf_iter_attach_cgroup), so
    every walk, `all` included, names its order: descendants_pre by default.
    """

    keys = ("id", "order")
    maximum = _U64_MAX

    def parse_value(self, key, text):
        if key == "order":
            if text not in CGROUP_ORDERS:
                raise ParamError(f"order={text}: not one of {', '.join(CGROUP_ORDERS)}")
            return CGROUP_ORDERS[text]
        return super().parse_value(key, text)

    def format_value(self, key, value):
        if key == "order":
            return next(name for name, number in CGROUP_ORDERS.items() if number == value)
        return str(value)

    @contextlib.contextmanager
    def link_info(self, values):
        order = values.get("order", CGROUP_ORDERS["descendants_pre"])
        yield struct.pack("=IIQ", order, 0, values.get("id", 0))

    def check(self, values):
        if "id" in values and values["id"] not in cgroup_ids():
            raise ParamError(f"no cgroup with id {values['id']} under {cgroup2_root()}")

    def listing(self):
        return (f"id={cgroup_id}" for cgroup_id in sorted(cgroup_ids()))


# enum bpf_map_type, for messages
MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
                  10: "lru_percpu_hash", 15: "sockmap", 18: "sockhash", 24: "sk_storage"}
PERCPU_MAP_TYPES = frozenset({5, 6, 10})


class MapSchema(Schema):
    """bpf_map_elem, bpf_sk_storage_map, sockmap: link_info.map.map_fd, named by map id."""

    keys = ("map_id",)
    walks_all = False

    def __init__(self, map_types: Iterable[int]):
        self.map_types = frozenset(map_types)

    def check(self, values):
        map_type = map_type_of(values["map_id"])
        if map_type is None:
            raise ParamError(f"no BPF map with id {values['map_id']}")
        if map_type not in self.map_types:
            fitting = ", ".join(MAP_TYPE_NAMES[t] for t in sorted(self.map_types))
            raise ParamError(f"map {values['map_id']} is a {MAP_TYPE_NAMES.get(map_type, map_type)} map, "
                             f"this target takes {fitting}")

    def validate(self, values):
        if "map_id" not in values:
            raise ParamError("map_id is required")

    @contextlib.contextmanager
    def link_info(self, values):
        # the link takes its own reference to the map: our fd is only needed to create it
        fd = _libbpf.map_get_fd_by_id(values["map_id"])
        try:
            yield struct.pack("=I", fd).ljust(LINK_INFO_SIZE, b"\0")
        finally:
            os.close(fd)

    def listing(self):
        return (f"map_id={map_id}" for map_id in _libbpf.map_ids() if map_type_of(map_id) in self.map_types)


_SIGNED_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)\Z")


GLOBAL = "global."


class ViewSchema(Schema):
    """A user's view: its target's parameters, and the program's globals (integers, char arrays).

    A global is the key ``global.NAME``; where the target has no parameter
    NAME, plain ``NAME`` is the key and ``global.NAME`` its alias, so
    ``pid=1`` is always the target's pid and ``global.pid=1`` always the global.
    A global's value goes into the program before it is loaded, so each set
    of values is a load of its own (iterator.Programs keeps and evicts them).
    """

    def __init__(self, base: Schema, globals_: tuple[Global, ...]):
        self.base = base
        settable = [g for g in globals_ if g.kind in ("int", "chars")]
        self.globals = {(GLOBAL + g.name if g.name in base.keys else g.name): g for g in settable}
        self.aliases = {GLOBAL + g.name: g.name for g in settable if g.name not in base.keys}
        self.keys = base.keys + tuple(self.globals)
        self.walks_all = base.walks_all

    def key_of(self, g: Global) -> str:
        """How a file name spells global g."""
        return next(key for key, known in self.globals.items() if known == g)

    def parse_value(self, key, text):
        g = self.globals.get(key)
        if g is None:
            return self.base.parse_value(key, text)
        if g.kind == "chars":
            if len(os.fsencode(text)) >= g.size:
                raise ParamError(f"{key}={text}: {g.ctype} holds at most {g.size - 1} bytes")
            return text
        low, high = (-(1 << (g.int_bits - 1)), (1 << (g.int_bits - 1)) - 1) if g.signed else (0, (1 << g.int_bits) - 1)
        if not _SIGNED_DECIMAL.match(text) or text == "-0" or not low <= int(text) <= high:
            raise ParamError(f"{key}={text}: not a decimal number from {low} to {high} ({g.ctype})")
        return int(text)

    def _split(self, values: Values) -> dict:
        return {k: v for k, v in values.items() if k in self.base.keys}

    def validate(self, values):
        self.base.validate(self._split(values))

    def check(self, values):
        self.base.check(self._split(values))

    def link_info(self, values):
        return self.base.link_info(self._split(values))

    def listing(self):
        return self.base.listing()

    def initial(self, values: Values) -> tuple[tuple[str, int, bytes], ...]:
        """(section, offset, bytes) to write into the program's data before it is loaded."""
        writes = []
        for key, value in values.items():
            g = self.globals.get(key)
            if g is not None:
                data = os.fsencode(value).ljust(g.size, b"\0") if g.kind == "chars" else \
                    value.to_bytes(g.size, sys.byteorder, signed=g.signed)
                writes.append((g.section, g.offset, data))
        return tuple(writes)


SCHEMAS: dict[str, Schema] = {
    "task": TaskSchema(),
    "task_file": TaskSchema(),
    "task_vma": TaskSchema(),
    "cgroup": CgroupSchema(),
    # kernel/bpf/map_iter.c bpf_iter_attach_map()
    "bpf_map_elem": MapSchema({1, 2, 5, 6, 9, 10}),
    "bpf_sk_storage_map": MapSchema({24}),
    "sockmap": MapSchema({15, 18}),
}
_NO_PARAMS = Schema()


def schema_for(target: str) -> Schema:
    return SCHEMAS.get(target, _NO_PARAMS)


def parse(target: str, name: str, schema: Schema | None = None) -> Params:
    """The parameters a file name stands for, or ParamError saying why it is not one."""
    schema = schema or schema_for(target)
    if name == ALL:
        if not schema.walks_all:
            raise ParamError(f"{target} has no 'all': it takes {', '.join(schema.keys)}")
        return Params(ALL, ())
    values: dict[str, int] = {}
    given = []  # the pairs as named, aliases as the keys they stand for
    for pair in name.split(","):
        key, sep, text = pair.partition("=")
        if not sep:
            raise ParamError(f"{pair!r} is not key=value")
        key = schema.aliases.get(key, key)
        given.append(f"{key}={text}")
        if key not in schema.keys:
            takes = ", ".join(schema.keys) or "no parameters"
            raise ParamError(f"unknown parameter {key!r} ({target} takes {takes})")
        if key in values:
            raise ParamError(f"{key} given twice")
        values[key] = schema.parse_value(key, text)
    schema.validate(values)
    ordered = tuple((key, values[key]) for key in schema.keys if key in values)
    canonical = ",".join(f"{key}={schema.format_value(key, value)}" for key, value in ordered)
    if canonical != ",".join(given):
        raise ParamError(f"{name!r} is spelled {canonical!r}")
    return Params(canonical, ordered)


def from_kwargs(target: str, kwargs: Mapping[str, int | str]) -> Params:
    if not kwargs:
        return parse(target, ALL)
    order = schema_for(target).keys
    unknown = sorted(set(kwargs) - set(order))
    if unknown:
        raise ParamError(f"unknown parameter {unknown[0]!r} for {target}")
    return parse(target, ",".join(f"{key}={kwargs[key]}" for key in order if key in kwargs))


def as_text(target: str, params: Params, schema: Schema | None = None) -> dict[str, str]:
    """The parameters as the file name spells them, e.g. {"order": "self_only"}."""
    schema = schema or schema_for(target)
    return {key: schema.format_value(key, value) for key, value in params.values}


def check(target: str, params: Params, schema: Schema | None = None) -> None:
    (schema or schema_for(target)).check(dict(params.values))


def link_info(target: str, params: Params, schema: Schema | None = None):
    """Context manager: the link_info bytes (or None) for params, valid inside the block."""
    return (schema or schema_for(target)).link_info(dict(params.values))


def listing(target: str, schema: Schema | None = None) -> Iterator[str]:
    schema = schema or schema_for(target)
    if schema.walks_all:
        yield ALL
    yield from schema.listing()


def live_pids() -> list[int]:
    return sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())


def _tgid_of(tid: int) -> int | None:
    # /proc/<tid> resolves every thread, not only the group leaders it lists.
    # os.open/os.read: this runs on every open, and io.open adds three syscalls.
    try:
        fd = os.open(f"/proc/{tid}/status", os.O_RDONLY)
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


def cgroup_ids() -> set[int]:
    """The ids of every cgroup: a cgroup2 directory's inode number is its cgroup id."""
    ids = set()
    pending = [cgroup2_root()]
    while pending:
        path = pending.pop()
        try:
            ids.add(os.stat(path).st_ino)
            pending.extend(entry.path for entry in os.scandir(path) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            pass  # removed while we walked
    return ids


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
