"""The mount table as the kernel shows it to this process (/proc/self/mountinfo)."""

from __future__ import annotations

import os
import re

# mountinfo writes space, tab, newline and backslash in paths as \ooo; other bytes stand as they are
_ESCAPE = re.compile(rb"\\([0-7]{3})")


def mount_table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, in mount order."""
    table = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            point = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            table.append((os.fsdecode(point), os.fsdecode(fields[fields.index(b"-") + 1])))
    return table


def mount_points(fstype: str) -> list[str]:
    return [point for point, kind in mount_table() if kind == fstype]


def within(path: str, points: list[str]) -> bool:
    """Whether path is one of points or below one."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in points)
