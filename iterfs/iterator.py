"""Iterator lifecycle: programs loaded once, and per open a link, an iterator fd and its reads.

    Iterators.open(target, params)    load the target's program on first use (kept)
      -> Iterator                     bpf_link_create(link_info) + bpf_iter_create()
    Iterator.read(n)                  read(2) on the iterator fd: the kernel runs the program
    Stream.read_at(offset, size)      what a FUSE read asks for, with a bounded window for re-reads

Everything here blocks (loads, syscalls): callers on an event loop run it in a
worker thread. Objects that hold kernel handles release them in close().
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from . import _libbpf, params as params_mod, pins
from .catalog import Catalog, Target, target_schema
from .targets import refusal
from .views import ViewsError, open_object

log = logging.getLogger(__name__)

# bpf_seq_read() fills a seq_file buffer of 8 pages; asking for less can split an object's output.
KERNEL_READ = 8 * os.sysconf("SC_PAGESIZE")
# Bytes an open keeps after serving them, for a reader that reads them again.
KEEP_BYTES = 64 * 1024
# A read that must go to the kernel (in a worker thread) reads this much further, so the
# reader's next read is answered from memory: half the thread hand-offs for long outputs.
READ_AHEAD = 128 * 1024
# Loads with global values set (a view's name=value parameters) kept once no open
# is creating a link from them; beyond this many, the least recently used are closed.
MAX_IDLE_VARIANTS = 16
# EAGAIN means "the program asked for a retry" or "a million objects without output":
# both make progress on retry. A program that asks for ever is cut off here.
MAX_EAGAIN = 100_000


class NotLoaded(Exception):
    """prog_fd(load=False) of a program that is not loaded yet."""


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
    def __init__(self, target: Target):
        if target.version is None:  # bundled: the package's own file
            self.obj = _libbpf.object_open(str(target.object_path))
        else:
            # a user's object: the very file (and version) that was read and checked
            try:
                fd = open_object(target.object_path, target.version)
            except ViewsError as e:
                raise OSError(errno.ESTALE, str(e)) from None
            try:
                self.obj = _libbpf.object_open(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        try:
            for name, map_id in target.maps:
                fd = _libbpf.map_get_fd_by_id(map_id)
                try:
                    _libbpf.object_reuse_map(self.obj, name, fd)
                finally:
                    os.close(fd)
            if target.attach:
                _libbpf.object_set_iter_target(self.obj, target.program, target.attach)
            for section, offset, value in target.initial:
                _libbpf.object_set_initial(self.obj, section, offset, value)
            _libbpf.object_load(self.obj)
        except OSError:
            _libbpf.object_close(self.obj)
            raise

    def close(self) -> None:
        _libbpf.object_close(self.obj)


_LIBBPF_LEVELS = {"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
_libbpf_log = logging.getLogger("iterfs.libbpf")


def _log_libbpf(level: str, text: str) -> None:
    # a failed load's verifier log arrives here, at warning level, in full
    _libbpf_log.log(_LIBBPF_LEVELS[level], "%s", text.rstrip("\n"))


_Key = tuple


def _key(target: Target) -> _Key:
    # one load per object file version, per target the generic program is
    # attached to, per set of global values and per map a placeholder stands for
    return (target.object_path, target.attach, target.version, target.initial, target.maps)


class Programs:
    """Loaded objects, one per file (and attach target), loaded on first use and kept until close()."""

    def __init__(self) -> None:
        _libbpf.set_log_handler(_log_libbpf)
        self._lock = threading.Lock()
        # per key being loaded: its lock, and how many opens hold or wait for it; the entry
        # goes with the last of them, so every load of a key takes the same lock
        self._loading: dict[_Key, list] = {}
        self._loaded: dict[_Key, _Loaded | _Failure] = {}
        self._users: dict[_Key, int] = {}  # opens between prog_fd() and done()
        self._idle: OrderedDict[_Key, None] = OrderedDict()  # variants no open is using, oldest first
        self._current: dict[Path, tuple] = {}  # a user object's newest loaded version

    def prog_fd(self, target: Target, load: bool = True) -> int:
        """The program's fd; its load counts as used, and stays open, until done(target).

        load=False: raise NotLoaded rather than load (a load blocks for milliseconds).
        """
        if target.refused:
            raise Refused(target.refused, f"{target.name}: {refusal(target.refused)}")
        key = _key(target)
        fd = self._use(target, key)
        if fd is not None:
            return fd
        if not load:
            raise NotLoaded(target.name)
        with self._lock:
            loading = self._loading.setdefault(key, [threading.Lock(), 0])
            loading[1] += 1
        try:
            with loading[0]:  # one load per key, however many first opens race
                fd = self._load_once(target, key)
        finally:
            with self._lock:
                loading[1] -= 1
                if not loading[1]:
                    del self._loading[key]
        if fd is None:  # evicted while idle between our load and our use: load again
            return self.prog_fd(target, load)
        return fd

    def _load_once(self, target: Target, key: _Key) -> int | None:
        """Load unless an open that held the key's lock before us did; then use the load. Under its lock."""
        with self._lock:
            present = key in self._loaded
        if not present:
            loaded = self._load(target)
            if isinstance(loaded, _Failure) and target.maps and loaded.kind is not Refused:
                # a load for one map is made per open anyway: a failure (ENOMEM, a map gone)
                # is that open's, not the map's for good
                raise loaded.exception()
            closing = []
            with self._lock:
                self._loaded[key] = loaded
                if target.version is not None:
                    self._current[target.object_path] = target.version
                if isinstance(loaded, _Failure) and (target.initial or target.maps):
                    closing = self._keep_idle(key)  # failures of value sets and maps are bounded too
            self._close(closing)
            if target.version is not None:
                self._retire(target)
        return self._use(target, key)

    def _use(self, target: Target, key: _Key) -> int | None:
        # one critical section from finding the load to counting its user: nothing
        # closes a load with users, so the fd stays valid until done()
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                return None
            if isinstance(loaded, _Failure):
                raise loaded.exception()
            self._users[key] = self._users.get(key, 0) + 1
            self._idle.pop(key, None)
            return _libbpf.object_program_fd(loaded.obj, target.program)

    def done(self, target: Target) -> None:
        """An open has its link: the kernel holds the program, the load may go when idle."""
        key = _key(target)
        closing = []
        with self._lock:
            self._users[key] -= 1
            if self._users[key]:
                return
            del self._users[key]
            if (target.version is not None and self._current.get(target.object_path) != target.version) \
                    or target.maps:
                # a replaced object's last open is done with it; a load for one map would keep
                # that map alive after its owner let go of it
                closing.append(self._loaded.pop(key))
            elif target.initial:
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

    @staticmethod
    def _load(target: Target) -> _Loaded | _Failure:
        started = time.monotonic()
        try:
            loaded = _Loaded(target)
        except OSError as e:
            # libbpf has logged the verifier's output just before this line. EPERM is never the
            # verifier's verdict on a program (that is EACCES or EINVAL): it is the kernel's policy.
            if e.errno == errno.EPERM:
                log.error("%s: the kernel refused program %s of %s (EPERM); its files give EPERM",
                          target.name, target.program, target.object_path)
                return _Failure(Refused, errno.EPERM, f"{target.object_path.name}: {refusal(errno.EPERM)}")
            log.error("%s: program %s of %s failed to load (%s); its files give EIO",
                      target.name, target.program, target.object_path, e.strerror)
            return _Failure(LoadFailed, errno.EIO, f"{target.object_path.name} failed to load: {e.strerror}")
        log.info("%s: loaded %s in %.1f ms", target.name, target.object_path.name,
                 (time.monotonic() - started) * 1e3)
        return loaded

    def _retire(self, current: Target) -> None:
        """Close loads of older versions of current's object file.

        Opens still reading them keep going: the kernel holds their program
        through their links. New opens use the current version.
        """
        with self._lock:
            stale = [key for key in self._loaded
                     if key[0] == current.object_path and key[2] not in (None, current.version)
                     and key not in self._users]
            closing = [self._loaded.pop(key) for key in stale]
            for key in stale:
                self._idle.pop(key, None)
        self._close(closing)
        if stale:
            log.info("%s: replaced; %d load(s) of the old file closed", current.object_path, len(stale))

    @property
    def loaded(self) -> list[_Key]:
        with self._lock:
            return [key for key, l in self._loaded.items() if isinstance(l, _Loaded)]

    def close(self) -> None:
        with self._lock:
            loaded, self._loaded = self._loaded, {}
        for obj in loaded.values():
            if isinstance(obj, _Loaded):
                obj.close()


class Iterator:
    """One walk of the kernel's current state: its own link and iterator fd."""

    def __init__(self, target: str, prog_fd: int, link_info: bytes | None, walked_by: str | None = None):
        self.target = target
        self.walked_by = walked_by  # the target whose program makes this one's lines in one go
        self.produced = 0
        self.link_fd = _libbpf.link_create(prog_fd, link_info)
        try:
            self.iter_fd = _libbpf.iter_create(self.link_fd)
        except OSError:
            os.close(self.link_fd)
            raise

    @classmethod
    def of_pin(cls, path: str, target: str) -> Iterator:
        """A walk of an iterator link pinned in bpffs: open(2) on the pin makes one."""
        iterator = cls.__new__(cls)
        iterator.target = target
        iterator.walked_by = None
        iterator.produced = 0
        iterator.link_fd = -1  # the pin holds the link
        iterator.iter_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        return iterator

    def read(self, size: int = KERNEL_READ) -> bytes:
        """The next bytes of output, b"" at the end of the walk."""
        for _ in range(MAX_EAGAIN):
            try:
                chunk = os.read(self.iter_fd, max(size, KERNEL_READ))
            except BlockingIOError:
                continue
            except OSError as e:
                raise self._explained(e) from None
            self.produced += len(chunk)
            return chunk
        raise OSError(errno.EAGAIN, f"{self.target}: the program asked for a retry {MAX_EAGAIN} times in a row")

    def _explained(self, e: OSError) -> OSError:
        if e.errno == errno.EOPNOTSUPP and self.produced:
            # kernel/bpf/cgroup_iter.c: cgroup_mutex is held for one read() only
            return OSError(e.errno, f"{self.target}: the kernel cannot continue this walk after "
                                    f"{self.produced} bytes (one read buffer); narrow it with id= and order=")
        if e.errno == errno.E2BIG and self.walked_by:
            return OSError(e.errno, f"{self.target}: its lines are larger than the kernel's read buffer "
                                    f"({KERNEL_READ} bytes): this kernel refuses {self.target} programs, and "
                                    f"the {self.walked_by} program that makes them instead makes them in one go")
        if e.errno == errno.E2BIG:
            return OSError(e.errno, f"{self.target}: one object's output is larger than the kernel's "
                                    f"read buffer ({KERNEL_READ} bytes)")
        return OSError(e.errno, f"{self.target}: read: {e.strerror}")

    def close(self) -> None:
        if self.iter_fd >= 0:
            os.close(self.iter_fd)
            if self.link_fd >= 0:
                os.close(self.link_fd)
            self.iter_fd = self.link_fd = -1

    def __enter__(self) -> Iterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while chunk := self.read():
            yield chunk


class Stream:
    """An Iterator read at offsets, as FUSE asks.

    read_at() reads the kernel as far as a request needs and READ_AHEAD
    beyond, and blocks; read_buffered() never blocks and answers what the
    buffer already holds (the next read, the final empty read, a re-read), so
    an event loop can serve it itself. A read at an offset already served is
    answered again while it is within the last KEEP_BYTES.

    Memory per open: at most KEEP_BYTES + one FUSE read + READ_AHEAD + one kernel read.
    """

    def __init__(self, iterator: Iterator):
        self.iterator = iterator
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._served_end = 0
        self._eof = False
        self._error: OSError | None = None
        self._closed = False
        self.served = 0

    @property
    def _produced(self) -> int:
        return self._base + len(self._buf)

    def read_at(self, offset: int, size: int) -> bytes:
        """The bytes at offset, reading the kernel as needed. Blocks."""
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "read after release")
            self._fill_to(offset + size + READ_AHEAD)
            return self._take(offset, size)

    def read_buffered(self, offset: int, size: int) -> bytes | None:
        """What read_at() would return, if that needs no kernel read; otherwise None."""
        if not self._lock.acquire(blocking=False):
            return None  # a read_at() is in the kernel
        try:
            if offset + size > self._produced and not (self._eof or self._error):
                return None
            return self._take(offset, size)
        finally:
            self._lock.release()

    def _fill_to(self, end: int) -> None:
        while self._produced < end and not self._eof and self._error is None:
            try:
                chunk = self.iterator.read(end - self._produced)
            except OSError as e:
                # the reader gets every byte before the error, then the error
                self._error = e
                return
            if chunk:
                self._buf += chunk
            else:
                self._eof = True

    def _take(self, offset: int, size: int) -> bytes:
        if offset < self._base:
            raise OSError(errno.ESPIPE, f"bytes before {self._base} of this open are no longer kept")
        start = offset - self._base
        if start >= len(self._buf) and self._error is not None:
            raise self._error
        with memoryview(self._buf) as view:  # released before the buffer is resized below
            data = bytes(view[start:start + size])
        self._served_end = max(self._served_end, offset + len(data))
        drop = self._served_end - self._base - KEEP_BYTES
        if drop > 0:
            del self._buf[:drop]
            self._base += drop
        self.served += len(data)
        return data

    def try_close(self) -> bool:
        """Close now unless a kernel read holds the stream; True if closed."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._close()
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        """Close, waiting for a kernel read of this stream to finish. Blocks."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._buf = bytearray()
        self.iterator.close()


class Iterators:
    """Opens iterators by target name and parameters; owns every kernel handle it made."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.programs = Programs()
        self._lock = threading.Lock()
        self._open: set[Iterator] = set()

    @contextlib.contextmanager
    def _link_parts(self, target_name: str, params: params_mod.Params, view: str | None, load: bool):
        """(prog_fd, link_info, target) for a link of target, view and params, valid inside the block."""
        target = self.catalog.get(target_name, view, params)
        schema = target_schema(target)
        params_mod.check(target_name, params, schema)
        prog_fd = self.programs.prog_fd(target, load)
        try:
            if target.walks:  # the program walks what params name itself: its link takes none
                yield prog_fd, None, target
                return
            with params_mod.link_info(target_name, params, schema) as link_info:
                yield prog_fd, link_info, target
        finally:
            self.programs.done(target)

    def open(self, target_name: str, params: params_mod.Params, view: str | None = None,
             load: bool = True) -> Iterator:
        """A new walk. Loads the target's program on first use, which blocks;
        load=False raises NotLoaded instead, for callers that must not block."""
        with self._link_parts(target_name, params, view, load) as (prog_fd, link_info, target):
            iterator = Iterator(target_name, prog_fd, link_info, target.walks)
        with self._lock:
            self._open.add(iterator)
        return iterator

    def open_pin(self, path: str, target: str) -> Iterator:
        """A new walk of the iterator link pinned at path (still an iterator link?). Blocks."""
        if pins.inspect(path) is None:
            raise LookupError(f"{path}: no longer an iterator pin")
        iterator = Iterator.of_pin(path, target)
        with self._lock:
            self._open.add(iterator)
        return iterator

    def pin(self, target_name: str, params: params_mod.Params, path: str) -> None:
        """Pin a link for target and params at path in bpffs; it outlives this process."""
        with self._link_parts(target_name, params, None, True) as (prog_fd, link_info, _):
            link_fd = _libbpf.link_create(prog_fd, link_info)
        try:
            _libbpf.obj_pin(link_fd, path)
        finally:
            os.close(link_fd)

    def release(self, iterator: Iterator) -> None:
        with self._lock:
            self._open.discard(iterator)
        iterator.close()

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        with self._lock:
            still_open, self._open = self._open, set()
        for iterator in still_open:
            iterator.close()
        self.programs.close()
