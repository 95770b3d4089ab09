"""File names as iterator parameters: ``all`` or ``key=value[,key=value]``.

A name maps to the ``union bpf_iter_link_info`` the kernel takes at link
creation (include/uapi/linux/bpf.h). Each target has a schema saying which
keys it takes, in which order; a name is accepted only in its one canonical
spelling (keys in schema order, numbers without leading zeros), so one set of
parameters is one file.

Pure: nothing here asks the kernel. Whether the objects a name speaks of
exist, which names ``ls`` shows, and the fds a link_info holds are probes.py's.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping

from .btf import Global
from .errors import NotFound

ALL = "all"
LINK_INFO_SIZE = 16  # sizeof(union bpf_iter_link_info)
_DECIMAL = re.compile(r"[1-9][0-9]{0,19}\Z")
_SIGNED_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1

Values = Mapping[str, int]


class ParamError(NotFound, ValueError):
    """A name that is not a parameter set of this target, or names nothing; the message says why."""


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

    def __init__(self, target: str):
        self.target = target

    @property
    def base(self) -> Schema:
        """The schema of the target's own parameters (a view's takes its program's globals too)."""
        return self

    def parse(self, name: str) -> Params:
        """The parameters a file name stands for, or ParamError saying why it is not one."""
        if name == ALL:
            if not self.walks_all:
                raise ParamError(f"{self.target} has no 'all': it takes {', '.join(self.keys)}")
            return Params(ALL, ())
        values: dict[str, int | str] = {}
        given = []  # the pairs as named, aliases as the keys they stand for
        for pair in name.split(","):
            key, sep, text = pair.partition("=")
            if not sep:
                raise ParamError(f"{pair!r} is not key=value")
            key = self.aliases.get(key, key)
            given.append(f"{key}={text}")
            if key not in self.keys:
                takes = ", ".join(self.keys) or "no parameters"
                raise ParamError(f"unknown parameter {key!r} ({self.target} takes {takes})")
            if key in values:
                raise ParamError(f"{key} given twice")
            values[key] = self.parse_value(key, text)
        self.validate(values)
        ordered = tuple((key, values[key]) for key in self.keys if key in values)
        canonical = ",".join(f"{key}={self.format_value(key, value)}" for key, value in ordered)
        if canonical != ",".join(given):
            raise ParamError(f"{name!r} is spelled {canonical!r}")
        return Params(canonical, ordered)

    def as_text(self, params: Params) -> dict[str, str]:
        """The parameters as the file name spells them, e.g. {"order": "self_only"}."""
        return {key: self.format_value(key, value) for key, value in params.values}

    def parse_value(self, key: str, text: str) -> int | str:
        if not _DECIMAL.match(text) or int(text) > self.maximum:
            raise ParamError(f"{key}={text}: not a positive decimal number without leading zeros")
        return int(text)

    def format_value(self, key: str, value: int | str) -> str:
        return str(value)

    def validate(self, values: Values) -> None:
        """Raise ParamError for combinations the kernel would refuse."""

    def target_values(self, params: Params) -> dict[str, int]:
        """The values that are the target's parameters (a view's globals left out)."""
        return dict(params.values)

    def pack(self, values: Values, map_fd: int | None = None) -> bytes | None:
        """The link_info bytes for the target's values; None: the link takes none."""
        return None


class TaskSchema(Schema):
    """task, task_file, task_vma: link_info.task.{tid,pid} (Linux 6.1)."""

    keys = ("pid", "tid")

    def validate(self, values):
        if len(values) > 1:
            raise ParamError("pid and tid exclude each other")

    def pack(self, values, map_fd=None):
        if not values:
            return None
        return struct.pack("=III", values.get("tid", 0), values.get("pid", 0), 0).ljust(LINK_INFO_SIZE, b"\0")


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

    def pack(self, values, map_fd=None):
        order = values.get("order", CGROUP_ORDERS["descendants_pre"])
        return struct.pack("=IIQ", order, 0, values.get("id", 0))


# enum bpf_map_type, for messages
MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
                  10: "lru_percpu_hash", 15: "sockmap", 18: "sockhash", 24: "sk_storage"}
PERCPU_MAP_TYPES = frozenset({5, 6, 10})


class MapSchema(Schema):
    """bpf_map_elem, bpf_sk_storage_map, sockmap: link_info.map.map_fd, named by map id."""

    keys = ("map_id",)
    walks_all = False

    def __init__(self, target: str, map_types: Iterable[int]):
        super().__init__(target)
        self.map_types = frozenset(map_types)

    def validate(self, values):
        if "map_id" not in values:
            raise ParamError("map_id is required")

    def pack(self, values, map_fd=None):
        # the link takes its own reference to the map: the fd is only needed to create it
        return struct.pack("=I", map_fd).ljust(LINK_INFO_SIZE, b"\0")

    def wrong_type(self, map_id: int, map_type: int) -> str | None:
        """Why map map_id of map_type cannot be walked by this target, or None if it can."""
        if map_type in self.map_types:
            return None
        fitting = ", ".join(MAP_TYPE_NAMES[t] for t in sorted(self.map_types))
        return f"map {map_id} is a {MAP_TYPE_NAMES.get(map_type, map_type)} map, this target takes {fitting}"


GLOBAL = "global."


class ViewSchema(Schema):
    """A user's view: its target's parameters, and the program's globals (integers, char arrays).

    A global is the key ``global.NAME``; where the target has no parameter
    NAME, plain ``NAME`` is the key and ``global.NAME`` its alias, so
    ``pid=1`` is always the target's pid and ``global.pid=1`` always the global.
    A global's value goes into the program before it is loaded, so each set
    of values is a load of its own (programs.Programs keeps and evicts them).
    """

    def __init__(self, base: Schema, globals_: tuple[Global, ...]):
        super().__init__(base.target)
        self._base = base
        settable = [g for g in globals_ if g.kind in ("int", "chars")]
        self.globals = {(GLOBAL + g.name if g.name in base.keys else g.name): g for g in settable}
        self.aliases = {GLOBAL + g.name: g.name for g in settable if g.name not in base.keys}
        self.keys = base.keys + tuple(self.globals)
        self.walks_all = base.walks_all

    @property
    def base(self) -> Schema:
        return self._base

    def key_of(self, g: Global) -> str:
        """How a file name spells global g."""
        return next(key for key, known in self.globals.items() if known == g)

    def parse_value(self, key, text):
        g = self.globals.get(key)
        if g is None:
            return self._base.parse_value(key, text)
        if g.kind == "chars":
            if len(os.fsencode(text)) >= g.size:
                raise ParamError(f"{key}={text}: {g.ctype} holds at most {g.size - 1} bytes")
            return text
        low, high = (-(1 << (g.int_bits - 1)), (1 << (g.int_bits - 1)) - 1) if g.signed else (0, (1 << g.int_bits) - 1)
        if not _SIGNED_DECIMAL.match(text) or text == "-0" or not low <= int(text) <= high:
            raise ParamError(f"{key}={text}: not a decimal number from {low} to {high} ({g.ctype})")
        return int(text)

    def format_value(self, key, value):
        return str(value) if key in self.globals else self._base.format_value(key, value)

    def target_values(self, params):
        return self._target_part(dict(params.values))

    def validate(self, values):
        self._base.validate(self._target_part(values))

    def _target_part(self, values: Values) -> dict:
        return {k: v for k, v in values.items() if k in self._base.keys}

    def pack(self, values, map_fd=None):
        return self._base.pack(values, map_fd)

    def global_values(self, params: Params) -> tuple[tuple[str, int, bytes], ...]:
        """(section, offset, bytes) to write into the program's data before it is loaded."""
        writes = []
        for key, value in params.values:
            g = self.globals.get(key)
            if g is not None:
                data = os.fsencode(value).ljust(g.size, b"\0") if g.kind == "chars" else \
                    value.to_bytes(g.size, sys.byteorder, signed=g.signed)
                writes.append((g.section, g.offset, data))
        return tuple(writes)


_SCHEMAS: dict[str, Schema] = {
    "task": TaskSchema("task"),
    "task_file": TaskSchema("task_file"),
    "task_vma": TaskSchema("task_vma"),
    "cgroup": CgroupSchema("cgroup"),
    # kernel/bpf/map_iter.c bpf_iter_attach_map()
    "bpf_map_elem": MapSchema("bpf_map_elem", {1, 2, 5, 6, 9, 10}),
    "bpf_sk_storage_map": MapSchema("bpf_sk_storage_map", {24}),
    "sockmap": MapSchema("sockmap", {15, 18}),
}


def schema_for(target: str) -> Schema:
    """The one place a target's schema comes from (a view's: catalog, from this one)."""
    schema = _SCHEMAS.get(target)
    return schema if schema is not None else Schema(target)


def parse(target: str, name: str) -> Params:
    """The parameters of target a file name stands for (a view's: its schema's parse())."""
    return schema_for(target).parse(name)


def from_kwargs(target: str, kwargs: Mapping[str, int | str]) -> Params:
    if not kwargs:
        return parse(target, ALL)
    order = schema_for(target).keys
    unknown = sorted(set(kwargs) - set(order))
    if unknown:
        raise ParamError(f"unknown parameter {unknown[0]!r} for {target}")
    return parse(target, ",".join(f"{key}={kwargs[key]}" for key in order if key in kwargs))
