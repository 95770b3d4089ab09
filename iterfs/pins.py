"""Iterator links pinned in bpffs: finding them, telling them apart, pinning and unpinning.

What a pin is comes from the kernel itself: bpf_obj_get() on the path, then
the fdinfo of that fd, which for an iterator link says ``link_type: iter``,
its ids, its target and the target's parameters. An iterator made from that link fd
(bpf_iter_create) is a new walk, so reading a pin needs no program.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from . import _libbpf
from .mounts import mount_points, within

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    path: str
    target: str
    link_id: int
    prog_id: int
    params: dict[str, str] = field(default_factory=dict)  # as the link's fdinfo names them


_FDINFO_IDS = {"link_id", "prog_id"}
_FDINFO_GENERIC = {"pos", "flags", "mnt_id", "ino", "link_type", "prog_tag", "target_name"}


def inspect(path: str) -> Pin | None:
    """The iterator link pinned at path, or None for anything else (maps, programs, other links)."""
    fd = open_link(path)
    if fd is None:
        return None
    try:
        return describe(fd, path)
    finally:
        os.close(fd)


# bpf_obj_get()'s errnos for a path that holds no BPF object (EACCES: a file that is no pin)
_NOTHING_PINNED = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EINVAL}


def open_link(path: str) -> int | None:
    """An fd for the object pinned at path (bpf_obj_get), or None if no BPF object is there.
    Other failures (EMFILE, ENOMEM) are raised: they say nothing of the path."""
    try:
        return _libbpf.obj_get(path)
    except OSError as e:
        if e.errno not in _NOTHING_PINNED:
            raise
        log.debug("%s: cannot open the pinned object: %s", path, e.strerror)
        return None


def check_readable(path: str) -> None:
    """Whether the calling thread may open(2) the pin at path for reading, as cat of it would:
    PermissionError if not (the open made an iterator, closed unread)."""
    os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


@contextlib.contextmanager
def held(path: str, as_reader: Callable[[], ContextManager] = contextlib.nullcontext) -> Iterator[str]:
    """A path naming the very inode pinned at path now (/proc/self/fd/N of an O_PATH fd), found
    and checked readable as check_readable() says, both inside as_reader(): what is opened later
    through it is what was checked, whatever is renamed meanwhile. PermissionError if the
    reader may not; FileNotFoundError if nothing is there."""
    with as_reader():
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            try:
                check_readable(f"/proc/self/fd/{fd}")
            except PermissionError:
                raise
            except OSError:
                pass  # no iterator there (a map's pin): describe() says so
        except BaseException:
            os.close(fd)
            raise
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def describe(fd: int, path: str) -> Pin | None:
    """The iterator link that fd (pinned at path) is, as its fdinfo says; None for other objects."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    if info.get("link_type") != "iter":
        return None
    params = {k: v for k, v in info.items() if k not in _FDINFO_GENERIC | _FDINFO_IDS}
    return Pin(path, info.get("target_name", "?"), int(info["link_id"]), int(info.get("prog_id", 0)), params)


def bpffs_mounts() -> list[str]:
    return sorted(set(mount_points("bpf")))


class Mirror:
    """The directories under the bpffs mounts, and the iterator pins in them.

    Paths are absolute. A path above a bpffs mount (/sys, /sys/fs) is shown
    as a directory holding the way down to it; below one, directories are
    shown as they are and files only when they are iterator links. Nothing
    is cached: a pin made or removed shows on the next look.
    """

    def __init__(self, roots: list[str] | None = None):
        self._roots = [os.path.normpath(r) for r in roots] if roots else None

    def roots(self) -> list[str]:
        return self._roots if self._roots is not None else bpffs_mounts()

    def _inside(self, path: str) -> bool:
        return within(path, self.roots())

    def _same_mount(self, path: str, st: os.stat_result) -> bool:
        # never into another filesystem mounted below a bpffs: above all not into this
        # mount itself, where a lookup would wait for the daemon that makes it
        root = next(r for r in sorted(self.roots(), key=len, reverse=True) if within(path, [r]))
        return st.st_dev == os.stat(root).st_dev

    def _ways_down(self, path: str) -> set[str]:
        prefix = path.rstrip("/") + "/"
        return {r[len(prefix):].split("/", 1)[0] for r in self.roots() if r.startswith(prefix) and r != path}

    def lookup(self, path: str) -> Pin | str | None:
        """"dir" for a directory of the mirror, a Pin for an iterator pin, None for neither."""
        if self._inside(path):
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if not self._same_mount(path, st):
                return None
            if stat.S_ISDIR(st.st_mode):
                return "dir"
            return inspect(path) if stat.S_ISREG(st.st_mode) else None
        parent, name = os.path.split(path)
        return "dir" if name in self._ways_down(parent) else None

    def entries(self, path: str) -> list[str]:
        """The names ls shows in the mirror directory path."""
        names = set(self._ways_down(path))
        if self._inside(path):
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        st = entry.stat(follow_symlinks=False)
                        if not self._same_mount(entry.path, st):
                            continue
                        if stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and inspect(entry.path)):
                            names.add(entry.name)
            except OSError as e:
                log.debug("%s: cannot list: %s", path, e.strerror)
        return sorted(names)


class NotInBpffs(ValueError):
    """A path that must be in a bpf filesystem is not; the message says how to mount one."""


def require_bpffs(path: Path, mount_at: Path | str = "/sys/fs/bpf") -> None:
    """Raise NotInBpffs unless path is in a bpf filesystem (symlinks resolved); the message
    says to mount one at mount_at."""
    if not within(os.path.realpath(path), bpffs_mounts()):
        raise NotInBpffs(f"{path} is not in a bpf filesystem (mount -t bpf bpf {mount_at})")


def unpin(path: Path) -> None:
    """Remove an iterator pin; anything else pinned there (or a link to one) is left alone."""
    require_bpffs(path.parent)
    try:
        st = os.lstat(path)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or inspect(str(path)) is None:
        raise ValueError(f"{path} is not a pinned iterator link")
    os.unlink(path)
