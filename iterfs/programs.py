"""The program cache: each recipe loaded once, on first use, and closed when no longer needed.

    Programs.prog_fd(recipe)     the loaded program's fd (loading it on first use, which blocks)
    Programs.map_fd(recipe, n)   a map of that load (a ptrace-filtering program's reader policy),
    Programs.hold(recipe)        kept while an open writes to it
    Programs.release(recipe)     the open has its link: the kernel holds the program now

A target's own load is kept until close(). Loads with global values (a
view's name=value files) are kept while idle, up to MAX_IDLE_VARIANTS; a
load for one map is closed as soon as its open has its link; a replaced
user object's loads go once their last open has its link. A failed load is
kept too, so its log lines are written once, not per open.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from . import _libbpf
from .catalog import Recipe
from .views import FileIdentity
from .discovery import refusal
from .errors import WouldBlock

log = logging.getLogger(__name__)

# Loads with global values set (a view's name=value parameters) kept once no open
# is creating a link from them; beyond this many, the least recently used are closed.
MAX_IDLE_VARIANTS = 16


class LoadFailed(OSError):
    """A load that failed, raised again for every open of it: the log said why when it failed."""


class Refused(LoadFailed):
    """The kernel refuses the target's programs (EPERM, EACCES): a state of the kernel, not a bug."""


class _Failure:
    """A failed load, kept: each open raises a new exception, so none grows a traceback per raise."""

    def __init__(self, kind: type[LoadFailed], code: int, message: str):
        self.kind, self.code, self.message = kind, code, message

    def exception(self) -> LoadFailed:
        return self.kind(self.code, self.message)


class _Loaded:
    def __init__(self, recipe: Recipe, entries: dict[str, tuple[bytes, bytes]]):
        self._maps: dict[str, int | None] = {}
        with recipe.object_file() as path:
            self.obj = _libbpf.object_open(path)
        try:
            for name, map_id in recipe.maps:
                fd = _libbpf.map_get_fd_by_id(map_id)
                try:
                    _libbpf.object_reuse_map(self.obj, name, fd)
                finally:
                    os.close(fd)
            if recipe.attach:
                _libbpf.object_set_iter_target(self.obj, recipe.program, recipe.attach)
            for section, offset, value in recipe.global_values:
                _libbpf.object_set_initial(self.obj, section, offset, value)
            _libbpf.object_load(self.obj)
            for name, (key, value) in entries.items():
                fd = self.map_fd(name)
                if fd is not None:
                    _libbpf.map_update(fd, key, value)
        except OSError:
            _libbpf.object_close(self.obj)
            raise

    def map_fd(self, name: str) -> int | None:
        # found once per load: most opens ask for a map their object does not have
        if name not in self._maps:
            self._maps[name] = _libbpf.object_map_fd(self.obj, name)
        return self._maps[name]

    def close(self) -> None:
        _libbpf.object_close(self.obj)


_LIBBPF_LEVELS = {"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
_libbpf_log = logging.getLogger("iterfs.libbpf")
_routed = False


def _log_libbpf(level: str, text: str) -> None:
    # a failed load's verifier log arrives here, at warning level, in full
    _libbpf_log.log(_LIBBPF_LEVELS[level], "%s", text.rstrip("\n"))


def route_libbpf_log() -> None:
    """Send libbpf's messages (a failed load's verifier log) to the log "iterfs.libbpf".

    libbpf has one print callback per process: the process's entry points
    (the mount, the Python API) call this once, before their first load.
    """
    global _routed
    if not _routed:
        _libbpf.set_log_handler(_log_libbpf)
        _routed = True


_Key = tuple


def _key(recipe: Recipe) -> _Key:
    # one load per object file (and its identity), per target the generic program (or the
    # fields program) is attached to, per set of global values and per map a placeholder
    # stands for; the fields a fields= load prints are named for .iterfs/status
    return (recipe.object_path, recipe.attach, recipe.file_identity, recipe.global_values, recipe.maps,
            recipe.fields.spec if recipe.fields else None)


class Programs:
    """Loaded objects, one per recipe, loaded on first use and kept as the module says."""

    def __init__(self, entries: dict[str, tuple[bytes, bytes]] | None = None) -> None:
        """entries: map name -> (key, value), written into that map of every load that has it."""
        self._entries = entries or {}
        self._lock = threading.Lock()
        # per key being loaded: its lock, and how many opens hold or wait for it; the entry
        # goes with the last of them, so every load of a key takes the same lock
        self._loading: dict[_Key, list] = {}
        self._loaded: dict[_Key, _Loaded | _Failure] = {}
        self._users: dict[_Key, int] = {}  # opens between prog_fd() and release()
        self._idle: OrderedDict[_Key, None] = OrderedDict()  # variants no open is using, oldest first
        self._current: dict[Path, FileIdentity] = {}  # a user object's newest loaded file identity

    def prog_fd(self, recipe: Recipe, block: bool = True) -> int:
        """The program's fd; its load counts as used, and stays open, until release(recipe).

        block=False: raise WouldBlock rather than load (a load blocks for milliseconds).
        """
        if recipe.refused:
            raise Refused(recipe.refused, f"{recipe.target}: {refusal(recipe.refused)}")
        key = _key(recipe)
        fd = self._use(recipe, key)
        if fd is not None:
            return fd
        if not block:
            raise WouldBlock(f"{recipe.target}: not loaded yet")
        with self._lock:
            loading = self._loading.setdefault(key, [threading.Lock(), 0])
            loading[1] += 1
        try:
            with loading[0]:  # one load per key, however many first opens race
                fd = self._load_once(recipe, key)
        finally:
            with self._lock:
                loading[1] -= 1
                if not loading[1]:
                    del self._loading[key]
        if fd is None:  # evicted while idle between our load and our use: load again
            return self.prog_fd(recipe, block)
        return fd

    def _load_once(self, recipe: Recipe, key: _Key) -> int | None:
        """Load unless an open that held the key's lock before us did; then use the load. Under its lock."""
        with self._lock:
            present = key in self._loaded
        if not present:
            loaded = self._load(recipe)
            if isinstance(loaded, _Failure) and recipe.maps and loaded.kind is not Refused:
                # a load for one map is made per open anyway: a failure (ENOMEM, a map gone)
                # is that open's, not the map's for good
                raise loaded.exception()
            closing = []
            with self._lock:
                self._loaded[key] = loaded
                if recipe.file_identity is not None:
                    self._current[recipe.object_path] = recipe.file_identity
                if isinstance(loaded, _Failure) and (recipe.global_values or recipe.maps):
                    closing = self._keep_idle(key)  # failures of value sets and maps are bounded too
            self._close(closing)
            if recipe.file_identity is not None:
                self._retire(recipe)
        return self._use(recipe, key)

    def _use(self, recipe: Recipe, key: _Key) -> int | None:
        # one critical section from finding the load to counting its user: nothing
        # closes a load with users, so the fd stays valid until release()
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                return None
            if isinstance(loaded, _Failure):
                raise loaded.exception()
            self._users[key] = self._users.get(key, 0) + 1
            self._idle.pop(key, None)
            return _libbpf.object_program_fd(loaded.obj, recipe.program)

    def map_fd(self, recipe: Recipe, name: str) -> int | None:
        """The fd of the map called name in recipe's load, valid until release() (hold() keeps
        it for one more), or None if the object has no such map."""
        with self._lock:
            loaded = self._loaded.get(_key(recipe))
        return loaded.map_fd(name) if isinstance(loaded, _Loaded) else None

    def hold(self, recipe: Recipe) -> None:
        """One more use of a load prog_fd() gave, released by one more release(): an open that
        writes to the load's map keeps it while it reads."""
        with self._lock:
            self._users[_key(recipe)] += 1

    def release(self, recipe: Recipe) -> None:
        """An open has its link: the kernel holds the program, the load may go when idle."""
        key = _key(recipe)
        closing = []
        with self._lock:
            self._users[key] -= 1
            if self._users[key]:
                return
            del self._users[key]
            if (recipe.file_identity is not None
                    and self._current.get(recipe.object_path) != recipe.file_identity) or recipe.maps:
                # a replaced object's last open is done with it; a load for one map would keep
                # that map alive after its owner let go of it
                closing.append(self._loaded.pop(key))
            elif recipe.global_values:
                closing = self._keep_idle(key)
        self._close(closing)

    def _keep_idle(self, key: _Key) -> list:
        """Mark a value-set load idle; the loads beyond MAX_IDLE_VARIANTS to close. Under _lock."""
        self._idle[key] = None
        closing = []
        while len(self._idle) > MAX_IDLE_VARIANTS:
            oldest, _ = self._idle.popitem(last=False)
            closing.append(self._loaded.pop(oldest))
        return closing

    @staticmethod
    def _close(loads: list) -> None:
        for loaded in loads:
            if isinstance(loaded, _Loaded):
                loaded.close()

    def _load(self, recipe: Recipe) -> _Loaded | _Failure:
        started = time.monotonic()
        try:
            loaded = _Loaded(recipe, self._entries)
        except OSError as e:
            # libbpf has logged the verifier's output just before this line. EPERM is never the
            # verifier's verdict on a program (that is EACCES or EINVAL): it is the kernel's policy.
            if e.errno == errno.EPERM:
                log.error("%s: the kernel refused program %s of %s (EPERM); its files give EPERM",
                          recipe.target, recipe.program, recipe.object_path)
                return _Failure(Refused, errno.EPERM, f"{recipe.object_path.name}: {refusal(errno.EPERM)}")
            log.error("%s: program %s of %s failed to load (%s); its files give EIO",
                      recipe.target, recipe.program, recipe.object_path, e.strerror)
            return _Failure(LoadFailed, errno.EIO, f"{recipe.object_path.name} failed to load: {e.strerror}")
        log.info("%s: loaded %s in %.1f ms", recipe.target, recipe.object_path.name,
                 (time.monotonic() - started) * 1e3)
        return loaded

    def _retire(self, current: Recipe) -> None:
        """Close loads of current's object file as it was before (other file identities).

        Opens still reading them keep going: the kernel holds their program
        through their links. New opens use the file as it is now.
        """
        with self._lock:
            stale = [key for key in self._loaded
                     if key[0] == current.object_path and key[2] not in (None, current.file_identity)
                     and key not in self._users]
            closing = [self._loaded.pop(key) for key in stale]
            for key in stale:
                self._idle.pop(key, None)
        self._close(closing)
        if stale:
            log.info("%s: replaced; %d load(s) of the old file closed", current.object_path, len(stale))

    @property
    def loaded(self) -> list[dict]:
        """The loads that hold a program now, as .iterfs/status lists them."""
        with self._lock:
            keys = [key for key, loaded in self._loaded.items() if isinstance(loaded, _Loaded)]
        # "target" and "view_version" as .iterfs/status has always spelled them (scripts read it)
        return [{"object": str(path), "target": attach, "view_version": identity, **({"fields": spec} if spec else {})}
                for path, attach, identity, _values, _maps, spec in keys]

    def close(self) -> None:
        with self._lock:
            loaded, self._loaded = self._loaded, {}
        self._close(list(loaded.values()))
