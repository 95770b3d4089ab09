"""Users' own iterator programs: every ``.bpf.o`` in the --objects directories.

Each ``SEC("iter/<target>")`` program becomes a view ``MNT/<target>/<program>/``.
The directories are looked at again on every question, and an object is read
again (pyelftools, never loaded here) only when its file changed, so objects
added, replaced or removed show without a remount. A view carries its file's
identity (inode, mtime, size): a replaced object is a new view version, which
new opens load while old opens finish on the program they have.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .btf import Global, read_globals
from .objects import ObjectError, read_object

log = logging.getLogger(__name__)

# The default place for users' objects, used when it exists and --objects names none.
SYSTEM_DIR = Path("/etc/iterfs/objects")
RESERVED = {"README", "all"}


class ViewsError(RuntimeError):
    pass


@dataclass(frozen=True)
class View:
    target: str
    name: str  # the directory name: the program's name
    object_path: Path
    program: str
    version: tuple[int, int, int]  # (inode, mtime ns, size) of the object file
    globals: tuple[Global, ...] = ()  # the object's global variables, from its BTF


def check_directory(path: Path) -> None:
    """The daemon loads kernel code from path: it must be root's and writable by root alone."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ViewsError(f"--objects {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ViewsError(f"--objects {path}: not a directory")
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ViewsError(f"--objects {path}: must be owned by root and not writable by group or others "
                         f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): "
                         "iterfs loads kernel code from it")


class UserObjects:
    def __init__(self, directories: list[Path], kernel_targets: frozenset[str]):
        for directory in directories:
            check_directory(directory)
        self.directories = directories
        self._kernel = kernel_targets
        self._read: dict[Path, tuple[tuple[int, int, int], list[View]]] = {}
        self._refused: dict[Path, str] = {}

    def views(self, target: str) -> dict[str, View]:
        """The views of target as the directories hold them now, by name."""
        found: dict[str, View] = {}
        for view in self._all():
            if view.target != target:
                continue
            if view.name in found:
                log.warning("%s: view %s/%s is already served by %s", view.object_path, target, view.name,
                            found[view.name].object_path)
            else:
                found[view.name] = view
        return found

    def _all(self) -> list[View]:
        seen: dict[Path, tuple[int, int, int]] = {}
        for directory in self.directories:
            try:
                entries = sorted(directory.glob("*.bpf.o"))
            except OSError as e:
                log.warning("%s: cannot list: %s", directory, e.strerror)
                continue
            for path in entries:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # removed while we looked
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    # the directory is root's, but a file in it may still be someone else's to change
                    self._refuse(path, f"must be owned by root and not writable by group or others "
                                       f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
                    continue
                seen[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        for path in set(self._read) - set(seen):
            log.info("%s: removed, its views are gone", path)
            del self._read[path]
        views = []
        for path, version in seen.items():
            known = self._read.get(path)
            if known is None or known[0] != version:
                known = self._read[path] = (version, self._views_of(path, version))
            views.extend(known[1])
        return views

    def _refuse(self, path: Path, why: str) -> None:
        if self._refused.get(path) != why:  # once, not on every look
            log.error("ignoring %s: %s", path, why)
            self._refused[path] = why

    def _views_of(self, path: Path, version: tuple[int, int, int]) -> list[View]:
        """The views one object file offers; a broken object offers none, and says why once."""
        try:
            obj = read_object(path)
        except ObjectError as e:
            log.error("ignoring %s", e)
            return []
        if not obj.programs:
            log.error("ignoring %s: no iterator programs (no SEC(\"iter/...\"))", path)
            return []
        try:
            globals_ = read_globals(path)
        except ObjectError as e:
            log.error("%s: its globals cannot be parameters: %s", path, e)
            globals_ = ()
        views = []
        for program in obj.programs:
            if program.target not in self._kernel:
                log.error("%s: program %s: this kernel has no iterator target %r", path, program.name,
                          program.target)
            elif program.name in RESERVED:
                log.error("%s: program %s: the name is taken by the tree", path, program.name)
            else:
                views.append(View(program.target, program.name, path, program.name, version, globals_))
        log.info("%s: views %s", path, ", ".join(f"{v.target}/{v.name}" for v in views) or "none")
        return views
