"""File names as iterator parameters: ``all`` or ``key=value[,key=value]``.

A name maps to the ``union bpf_iter_link_info`` the kernel takes at link
creation (include/uapi/linux/bpf.h). Each target has a schema saying which
keys it takes; a name is accepted only in its one canonical spelling, so one
set of parameters is one file.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

ALL = "all"
LINK_INFO_SIZE = 16  # sizeof(union bpf_iter_link_info)
_DECIMAL = re.compile(r"[1-9][0-9]{0,9}\Z")
_U32_MAX = 2**32 - 1


class ParamError(ValueError):
    """A name that is not a parameter set of this target; the message says why."""


@dataclass(frozen=True)
class Params:
    name: str  # the canonical file name
    values: tuple[tuple[str, int], ...]
    link_info: bytes | None  # None: walk every object


class Schema:
    """Parameters a target takes. The base schema takes none: only ``all``."""

    keys: tuple[str, ...] = ()

    def link_info(self, values: Mapping[str, int]) -> bytes | None:
        return None

    def check(self, values: Mapping[str, int]) -> None:
        """Raise ParamError unless the objects named by values exist right now."""

    def listing(self) -> Iterable[str]:
        """Parameter file names worth showing in ``ls``, besides ``all``."""
        return ()

    def validate(self, values: Mapping[str, int]) -> None:
        """Raise ParamError for combinations the kernel would refuse."""


class TaskSchema(Schema):
    """task, task_file, task_vma: link_info.task.{tid,pid} (Linux 6.1)."""

    keys = ("pid", "tid")

    def validate(self, values):
        if len(values) > 1:
            raise ParamError("pid and tid exclude each other")

    def link_info(self, values):
        if not values:
            return None
        return struct.pack("=III", values.get("tid", 0), values.get("pid", 0), 0).ljust(
            LINK_INFO_SIZE, b"\0"
        )

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


SCHEMAS: dict[str, Schema] = {
    "task": TaskSchema(),
    "task_file": TaskSchema(),
    "task_vma": TaskSchema(),
}
_NO_PARAMS = Schema()


def schema_for(target: str) -> Schema:
    return SCHEMAS.get(target, _NO_PARAMS)


def parse(target: str, name: str) -> Params:
    """The parameters a file name stands for, or ParamError saying why it is not one."""
    schema = schema_for(target)
    if name == ALL:
        return Params(ALL, (), None)
    values: dict[str, int] = {}
    for pair in name.split(","):
        key, sep, text = pair.partition("=")
        if not sep:
            raise ParamError(f"{pair!r} is not key=value")
        if key not in schema.keys:
            takes = ", ".join(schema.keys) or "no parameters"
            raise ParamError(f"unknown parameter {key!r} ({target} takes {takes})")
        if key in values:
            raise ParamError(f"{key} given twice")
        if not _DECIMAL.match(text) or int(text) > _U32_MAX:
            raise ParamError(f"{key}={text}: not a positive decimal number without leading zeros")
        values[key] = int(text)
    schema.validate(values)
    canonical = ",".join(f"{key}={values[key]}" for key in schema.keys if key in values)
    if canonical != name:
        raise ParamError(f"{name!r} is spelled {canonical!r}")
    return Params(canonical, tuple((key, values[key]) for key in schema.keys if key in values), schema.link_info(values))


def from_kwargs(target: str, kwargs: Mapping[str, int]) -> Params:
    if not kwargs:
        return parse(target, ALL)
    order = schema_for(target).keys
    unknown = sorted(set(kwargs) - set(order))
    if unknown:
        raise ParamError(f"unknown parameter {unknown[0]!r} for {target}")
    return parse(target, ",".join(f"{key}={kwargs[key]}" for key in order if key in kwargs))


def check(target: str, params: Params) -> None:
    schema_for(target).check(dict(params.values))


def listing(target: str) -> Iterator[str]:
    yield ALL
    yield from schema_for(target).listing()


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
