"""Users' own iterator programs: every ``.bpf.o`` in the --objects directories.

Each ``SEC("iter/<target>")`` program becomes a view ``MNT/<target>/<program>/``.
Questions are answered from a snapshot, which refresh() makes again: the
filesystem refreshes it, in a worker thread, whenever a request is about
views (listing a target, looking up a name that is not a parameter file,
opening a view's file), so objects added, replaced or removed show without
a remount and a target's own files never wait for a look at the directories.
An object is read again (pyelftools, never loaded here) only when its file
changed. A view carries its file's identity (inode, mtime, size): a replaced
object has a new identity, which new opens load while old opens finish on
the program they have; the load checks the identity on the file it loads.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from .access import declared_rule
from .btf import Global, read_globals
from .objects import ObjectError, read_object

log = logging.getLogger(__name__)

# The default place for users' objects, used when it exists and --objects names none.
SYSTEM_DIR = Path("/etc/iterfs/objects")
RESERVED = {"README", "all", "FIELDS"}  # names the tree gives a target's own files

FileIdentity = tuple[int, int, int]  # (inode, mtime ns, size) of an object file


def default_directories(given: list[Path]) -> list[Path]:
    """The objects directories to serve: those given, or SYSTEM_DIR if it exists."""
    return list(given) or ([SYSTEM_DIR] if SYSTEM_DIR.is_dir() else [])


class ViewsError(RuntimeError):
    pass


@dataclass(frozen=True)
class View:
    target: str
    name: str  # the directory name: the program's name
    object_path: Path
    program: str
    identity: FileIdentity  # of the object file as it was read
    globals: tuple[Global, ...] = ()  # the object's global variables, from its BTF
    rule: str | None = None  # the target whose rule for readers the object declares it safe under


def _safe(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def check_directory(path: Path) -> None:
    """The daemon loads kernel code from path: only root may change it, or what leads to it.

    Every directory on the way must be root's and writable by root alone; a
    sticky one (/tmp) may be writable by all, since no one else can rename
    root's entries in it.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ViewsError(f"--objects {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ViewsError(f"--objects {path}: not a directory")
    real = Path(os.path.realpath(path))
    for place in [real, *real.parents]:
        st = os.stat(place)
        if not (_safe(st) or (place != real and st.st_uid == 0 and st.st_mode & stat.S_ISVTX)):
            raise ViewsError(f"--objects {path}: {place} must be owned by root and not writable by group or "
                             f"others (it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): "
                             "iterfs loads kernel code from it")


def open_object(path: Path, identity: FileIdentity | None = None) -> int:
    """An fd of the object file at path, not through a symlink, checked on the fd itself.

    Returns the fd (the caller reads /proc/self/fd/N and closes it); raises
    ViewsError if the file is not root's alone, or is not the file identity gives.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or not _safe(st):
        os.close(fd)
        raise ViewsError(f"must be a regular file owned by root and not writable by group or others "
                         f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
    if identity is not None and (st.st_ino, st.st_mtime_ns, st.st_size) != identity:
        os.close(fd)
        raise ViewsError("changed since it was read")
    return fd


class UserObjects:
    def __init__(self, directories: list[Path], kernel_targets: frozenset[str]):
        for directory in directories:
            check_directory(directory)
        self.directories = directories
        self._kernel = kernel_targets
        self._read: dict[Path, tuple[FileIdentity, list[View]]] = {}
        self._refused: dict[Path, str] = {}
        self._duplicates: set[tuple[Path, str, str]] = set()  # reported once each
        self._refreshing = threading.Lock()
        self._snapshot: dict[str, dict[str, View]] = {}  # target -> name -> view; replaced whole
        self._begun = self._finished = 0  # looks begun, and the number of the last one finished
        self.refresh()

    def views(self, target: str) -> dict[str, View]:
        """The views of target, by name, as the last refresh() found them. Never blocks."""
        return self._snapshot.get(target, {})

    def refresh(self) -> None:
        """Look at the directories and their objects again, or wait for a look that began
        after this call did (a burst of lookups shares one). Blocks."""
        if not self.directories:
            return
        arrived = self._begun
        with self._refreshing:  # one look at a time: _read and _refused are the looks' own
            if self._finished > arrived:
                return  # a look that began after we arrived has just ended: it is ours too
            self._begun += 1
            self._take_snapshot()
            self._finished = self._begun

    def _take_snapshot(self) -> None:
        """Under _refreshing."""
        snapshot: dict[str, dict[str, View]] = {}
        for view in self._all():
            found = snapshot.setdefault(view.target, {})
            if view.name not in found:
                found[view.name] = view
            elif (view.object_path, view.target, view.name) not in self._duplicates:
                self._duplicates.add((view.object_path, view.target, view.name))
                log.warning("%s: view %s/%s is already served by %s", view.object_path, view.target,
                            view.name, found[view.name].object_path)
        self._snapshot = snapshot

    def _directories(self) -> list[Path]:
        """The directories that are still safe: checked again on every look."""
        safe = []
        for directory in self.directories:
            try:
                check_directory(directory)
            except ViewsError as e:
                self._refuse(directory, str(e))
                continue
            self._refused.pop(directory, None)
            safe.append(directory)
        return safe

    def _all(self) -> list[View]:
        seen: dict[Path, FileIdentity] = {}
        for directory in self._directories():
            try:
                entries = sorted(directory.glob("*.bpf.o"))
            except OSError as e:
                log.warning("%s: cannot list: %s", directory, e.strerror)
                continue
            for path in entries:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # removed while we looked
                if not stat.S_ISREG(st.st_mode):
                    self._refuse(path, "not a regular file (symlinks are not followed)")
                    continue
                if not _safe(st):
                    # the directory is root's, but a file in it may still be someone else's to change
                    self._refuse(path, f"must be owned by root and not writable by group or others "
                                       f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
                    continue
                self._refused.pop(path, None)
                seen[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        for path in set(self._read) - set(seen):
            log.info("%s: removed, its views are gone", path)
            del self._read[path]
        views = []
        for path, identity in seen.items():
            known = self._read.get(path)
            if known is None or known[0] != identity:
                known = self._read[path] = (identity, self._views_of(path, identity))
            views.extend(known[1])
        return views

    def _refuse(self, path: Path, why: str) -> None:
        if self._refused.get(path) != why:  # once, not on every look
            log.error("ignoring %s: %s", path, why)
            self._refused[path] = why

    def _views_of(self, path: Path, identity: FileIdentity) -> list[View]:
        """The views one object file offers; a broken object offers none, and says why once."""
        try:
            fd = open_object(path, identity)
        except (OSError, ViewsError) as e:
            log.error("ignoring %s: %s", path, getattr(e, "strerror", None) or e)
            return []
        try:
            # programs and globals from the one file checked, whatever the name points to now
            checked = Path(f"/proc/self/fd/{fd}")
            try:
                obj = read_object(checked)
            except ObjectError as e:
                log.error("ignoring %s: %s", path, str(e).replace(str(checked), "the file"))
                return []
            if not obj.programs:
                log.error("ignoring %s: no iterator programs (no SEC(\"iter/...\"))", path)
                return []
            try:
                globals_ = read_globals(checked)
            except ObjectError as e:
                log.error("%s: its globals cannot be parameters: %s", path, e)
                globals_ = ()
        finally:
            os.close(fd)
        views = []
        for program in obj.programs:
            if program.target not in self._kernel:
                log.error("%s: program %s: this kernel has no iterator target %r", path, program.name,
                          program.target)
            elif program.name in RESERVED:
                log.error("%s: program %s: the name is taken by the tree", path, program.name)
            else:
                try:
                    rule = declared_rule(obj.rule, obj.maps)
                except ValueError as e:
                    log.error("%s: %s: its views are for privileged readers only", path, e)
                    rule = None
                views.append(View(program.target, program.name, path, program.name, identity, globals_, rule))
        log.info("%s: views %s", path, ", ".join(f"{v.target}/{v.name}" for v in views) or "none")
        return views
