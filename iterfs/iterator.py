"""Iterator lifecycle: per open a link, an iterator fd and its reads.

    Iterators.open(target, params)    the recipe (catalog), its program (programs, loaded once)
      -> Iterator                     bpf_link_create(link_info) + bpf_iter_create(), in the
                                      reader's namespace where the target has one (namespaces)
    Iterator.read()                   read(2) on the iterator fd: the kernel runs the program
    Iterator.start_over()             a new iterator fd from the same link: a new walk
    Stream.read_at(offset, size)      what a FUSE read asks for, at any offset, as seq_file serves it

Everything here may block (loads, syscalls); callers on an event loop pass
block=False where it is offered, or run the call in a worker thread. Objects
that hold kernel handles release them in close().
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import functools
import logging
import os
import threading
from types import GeneratorType
from typing import Callable, NamedTuple

from . import _libbpf, access, credentials, pieces, pins, probes
from .catalog import Catalog
from .discovery import refusal
from .errors import NotFound, WouldBlock
from .namespaces import DAEMON, HERE, Namespaces, Place, Reader
from .params import CgroupSchema, Params
from .programs import Programs
from .records import Formatter, Header

log = logging.getLogger(__name__)

# bpf_seq_read() fills a seq_file buffer of 8 pages; asking for less can split an object's output.
KERNEL_READ = 8 * os.sysconf("SC_PAGESIZE")
# Bytes an open keeps after serving them, for a reader that reads them again.
KEEP_BYTES = 64 * 1024
# A read that must go to the kernel (in a worker thread) reads this much further, so the
# reader's next read is answered from memory: half the thread hand-offs for long outputs.
READ_AHEAD = 128 * 1024
# What is read ahead in the background for a reader that reads through grows with what it
# has read, up to this: the kernel's walk then runs while the reader takes what it got.
AHEAD_MAX = 1024 * 1024
# EAGAIN means "the program asked for a retry" or "a million objects without output":
# both make progress on retry. A program that asks for ever is cut off here.
MAX_EAGAIN = 100_000


class Parts(NamedTuple):
    """How a cgroup walk larger than one read is made of walks of its subtrees (pieces.py)."""

    prog_fd: int  # the walk's program: the Iterator's own fd of it, closed in close()
    pack: Callable[[int, int], bytes]  # (order, cgroup id) -> link_info
    cgroups: str  # the reader's cgroup namespace root, whose tree is walked
    root: int | None  # the walk's cgroup id; None: the root of cgroups
    order: int
    bundled: bool  # the bundled program's lines: a header, then "id level path" lines


class Iterator:
    """One walk of the kernel's current state: an iterator fd, and the link it was made from.

    The link is this open's own (or, for a pin, the pinned link, held by fd), so
    start_over() walks the same program with the same parameters and objects."""

    def __init__(self, target: str, link_fd: int, through: str | None = None,
                 formatter: Callable[[], Formatter | Header] | None = None, place: Place = HERE,
                 parts: Parts | None = None):
        """Takes link_fd, place and parts.prog_fd: closed here if no iterator can be made of them,
        and in close(). formatter: makes what turns each walk's records into lines (a fields=
        file); place: where iterator fds are made and read (the reader's namespace); parts: a
        cgroup walk that is made of smaller walks when it does not fit one read."""
        self.target = target
        self.through = through  # the target whose program makes this one's lines in one go
        self.produced = 0
        self.started_over = 0  # walks after the first, for .iterfs/status
        self.link_fd = link_fd
        self._place = place
        self._parts = parts
        self._chunks: GeneratorType | None = None  # a walk in parts, as it goes
        try:
            self.iter_fd = place.iter_create(link_fd)
        except OSError:
            os.close(link_fd)
            place.close()
            if parts:
                os.close(parts.prog_fd)
            raise
        self._formatter = formatter
        self._records = formatter() if formatter else None

    @classmethod
    def attach(cls, target: str, prog_fd: int, link_info: bytes | None, through: str | None = None,
               formatter: Callable[[], Formatter | Header] | None = None, place: Place = HERE,
               parts: Parts | None = None) -> Iterator:
        """A walk of a new link of prog_fd with link_info."""
        try:
            link_fd = _libbpf.link_create(prog_fd, link_info)
        except OSError:
            place.close()
            if parts:
                os.close(parts.prog_fd)
            raise
        return cls(target, link_fd, through, formatter, place, parts)

    def start_over(self) -> None:
        """A new walk from the same link: a fresh iterator fd, so a fresh snapshot of the
        kernel's state, as a seq_file walks again from its start after a seek back."""
        fd = self._place.iter_create(self.link_fd)
        os.close(self.iter_fd)
        self.iter_fd = fd
        self.produced = 0
        self.started_over += 1
        self._chunks = None
        if self._formatter:
            self._records = self._formatter()

    def read(self) -> bytes:
        """The next bytes of output (a kernel read buffer's), b"" at the end of the walk."""
        if self._records is None:
            return self._read()
        while chunk := self._read():  # records are lines once whole: a read may end inside one
            if lines := self._records.feed(chunk):
                return lines
        return self._records.end()  # then b"", as a walk's end reads again

    def _read(self) -> bytes:
        try:
            if self._parts is None:
                chunk = self._kernel_read(self.iter_fd)
            else:
                if self._chunks is None:
                    self._chunks = self._walk_in_parts()
                chunk = next(self._chunks, b"")
        except OSError as e:
            raise self._explained(e) from None
        self.produced += len(chunk)
        return chunk

    def _kernel_read(self, fd: int) -> bytes:
        for _ in range(MAX_EAGAIN):
            try:
                with self.reading():
                    return os.read(fd, KERNEL_READ)
            except BlockingIOError:
                continue
        raise OSError(errno.EAGAIN, f"the program asked for a retry {MAX_EAGAIN} times in a row")

    def _walk_in_parts(self):
        """The walk's output, chunk by chunk; when the walk is larger than one read, what was
        read of it is dropped and it is walked again in parts that each fit one."""
        first = self._kernel_read(self.iter_fd)
        try:
            more = self._kernel_read(self.iter_fd)
        except OSError as e:
            if e.errno != errno.EOPNOTSUPP:
                raise
            parts = self._parts
            log.debug("%s: the walk is larger than one read (%d bytes): walked in parts", self.target, len(first))
            kernel = pieces.Kernel(self._first_read, probes.cgroup_children,
                                   functools.partial(probes.cgroup_chain, parts.cgroups),
                                   functools.partial(probes.cgroup_tree, parts.cgroups))
            root = parts.root or probes.cgroup_root_id(parts.cgroups)
            yield from pieces.walk(kernel, root, parts.order, parts.bundled, first)
            return
        yield first
        while more:
            yield more
            more = self._kernel_read(self.iter_fd)

    def _first_read(self, order: int, cgroup: int) -> tuple[bytes, bool]:
        """A part: the first read of a new walk of cgroup in order, and whether it was all of it."""
        try:
            link_fd = _libbpf.link_create(self._parts.prog_fd, self._parts.pack(order, cgroup))
        except FileNotFoundError:
            return b"", True  # removed since it was listed
        try:
            fd = self._place.iter_create(link_fd)
        finally:
            os.close(link_fd)  # the iterator fd holds the link
        try:
            out = self._kernel_read(fd)
            try:
                while more := self._kernel_read(fd):
                    out += more
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise
                return out, False
            return out, True
        finally:
            os.close(fd)

    def reading(self):
        """Around reads: each read() takes it, and a caller that reads on takes it once for all
        (in the reader's cgroup namespace, with its policy stored and its credentials)."""
        return self._place.reading(first=not self.produced)

    def _explained(self, e: OSError) -> OSError:
        if e.errno == errno.EOPNOTSUPP and self.produced:
            # kernel/bpf/cgroup_iter.c: cgroup_mutex is held for one read() only
            return OSError(e.errno, f"{self.target}: the kernel cannot continue this walk after "
                                    f"{self.produced} bytes (one read buffer); narrow it with id= and order=")
        if e.errno == errno.E2BIG and self.through:
            return OSError(e.errno, f"{self.target}: its lines are larger than the kernel's read buffer "
                                    f"({KERNEL_READ} bytes): this kernel refuses {self.target} programs, and "
                                    f"the {self.through} program that makes them instead makes them in one go")
        if e.errno == errno.E2BIG:
            return OSError(e.errno, f"{self.target}: one object's output is larger than the kernel's "
                                    f"read buffer ({KERNEL_READ} bytes)")
        return OSError(e.errno, f"{self.target}: read: {e.strerror}")

    def close(self) -> None:
        if self.iter_fd >= 0:
            iter_fd, link_fd, self.iter_fd, self.link_fd = self.iter_fd, self.link_fd, -1, -1
            try:
                os.close(iter_fd)
            finally:
                os.close(link_fd)
                self._place.close()
                if self._parts:
                    os.close(self._parts.prog_fd)

    def __enter__(self) -> Iterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while chunk := self.read():
            yield chunk


class Stream:
    """An Iterator read at offsets, as FUSE asks after any lseek(2): a seq_file's rules.

    read_at() reads the kernel as far as a request needs, and blocks;
    read_buffered() never blocks on the kernel and answers
    what the buffer already holds (the next read, the final empty read, a
    re-read), so an event loop can serve it itself; read_ahead() reads on in
    the background meanwhile, one kernel read at a time, so a reader that
    reads through finds its next bytes read already. An offset:
      - still kept (within KEEP_BYTES of the furthest byte served) is answered from memory;
      - further on than what was read is reached by reading on and dropping what is passed;
      - before what is kept makes the walk start over and skip to it: a new snapshot,
        as seq_file walks again after a seek back.

    Memory per open: at most KEEP_BYTES + one FUSE read + the read-ahead (READ_AHEAD, up to
    AHEAD_MAX for a reader that has read that much) + one kernel read, however far a read skips.
    """

    def __init__(self, iterator: Iterator):
        self.iterator = iterator
        self._lock = threading.Lock()  # the kernel's reads (and a new walk): one at a time
        self._held = threading.Lock()  # what is held: taken for moments, never around a kernel read
        self._more = threading.Condition(self._held)  # notified as read_ahead() brings each read
        self._reading_ahead = False
        self._lock_wanted = 0  # read_at()s waiting for _lock: read_ahead() gives way to them
        self._pinned: list[int] = []  # offsets read_at()s will take: kept until they are taken
        self._closed = False
        self._closing = False  # read_ahead() gives way to a close
        self._at_start()

    def _at_start(self) -> None:
        """Nothing read yet of the iterator's walk."""
        # what is held: the kernel's reads as they came (no copy of what is held, ever), from
        # stream offset _base (the first one's start) to _produced
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # the stream offset of each
        self._base = 0
        self._produced = 0
        self._served_end = 0
        self._eof = False
        self._error: OSError | None = None

    @property
    def held(self) -> int:
        """Bytes of output this open holds in memory."""
        return self._produced - self._base

    def read_at(self, offset: int, size: int) -> bytes:
        """The bytes at offset, reading the kernel as needed. Blocks."""
        with self._held:
            # what read_ahead() is reading is taken as it comes: its thread would hold _lock on
            # and on (a lock that is released and taken again at once is not handed over)
            while self._reading_ahead and not self._has(offset, size) and offset >= self._base:
                self._more.wait()
            if self._has(offset, size):
                return self._take(offset, size)
            # a read at another offset meanwhile (a pread(2) of the same fd) drops nothing from here
            self._pinned.append(offset)
            pinned = True
            self._lock_wanted += 1
        try:
            with self._lock:
                with self._held:
                    self._lock_wanted -= 1
                if self._closed:
                    raise OSError(errno.EBADF, "read after release")
                if offset < self._base:
                    log.debug("%s: a read at %d, before the %d bytes kept from %d on: the walk starts over",
                              self.iterator.target, offset, self.held, self._base)
                    self._start_over()
                # what a read at offset keeps afterwards: nothing before this is kept while filling
                keep_from = max(offset, self._served_end) - KEEP_BYTES
                with self.iterator.reading():  # one switch to the reader for the reads this request needs
                    self._fill_to(offset + size, keep_from)
                with self._held:
                    self._pinned.remove(offset)  # first: what this read takes is then dropped as any
                    pinned = False
                    return self._take(offset, size)
        finally:
            if pinned:
                with self._held:
                    self._pinned.remove(offset)

    def read_buffered(self, offset: int, size: int) -> bytes | None:
        """What read_at() would return, if that needs no kernel read; otherwise None."""
        with self._held:
            return self._take(offset, size) if self._has(offset, size) else None

    def _has(self, offset: int, size: int) -> bool:
        """Whether what a read at offset gets is here (under _held); a read before what is
        kept starts the walk over, and a closed stream has nothing."""
        if self._closed or self._closing or offset < self._base:
            return False
        return offset + size <= self._produced or self._eof or self._error is not None

    def _ahead(self) -> int:
        """How far past what was served read_ahead() reads: more for a reader that has read more."""
        return min(AHEAD_MAX, max(READ_AHEAD, self._served_end))

    def wants_ahead(self) -> bool:
        """Whether less than half the read-ahead is read yet. Unlocked: a hint, which
        read_ahead() checks again."""
        return not (self._eof or self._error or self._closed) and \
            self._produced - self._served_end < self._ahead() // 2

    def read_ahead(self) -> None:
        """Read the kernel on to the read-ahead past what was served, for the reads to come;
        a read_at() meanwhile takes its bytes as they come. Gives way to a read_at() that needs
        _lock (one before what is kept, which starts the walk over) and to a close. Blocks."""
        with self._held:
            if self._closed or self._closing:
                return
            self._reading_ahead = True  # before _lock: a read_at() now waits for its bytes instead
        try:
            with self._lock, self.iterator.reading():
                while True:
                    with self._held:
                        if self._closing or self._eof or self._error or self._lock_wanted:
                            return
                        end = self._served_end + self._ahead()
                        keep_from = self._served_end - KEEP_BYTES
                    if self._produced >= end:
                        return
                    self._fill_to(self._produced + 1, keep_from)
        finally:
            with self._held:
                self._reading_ahead = False
                self._more.notify_all()

    def _start_over(self) -> None:
        self.iterator.start_over()
        with self._held:
            self._at_start()

    def _fill_to(self, end: int, keep_from: int) -> None:
        """Read the kernel until end is read (or the walk ends). Under _lock: the buffer changes
        only here and in _take(), each under _held."""
        while self._produced < end and not self._eof and self._error is None:
            try:
                chunk = self.iterator.read()
            except Exception as e:  # noqa: BLE001 - any failure ends the walk with an errno, never as its end
                # the reader gets every byte before the error, then the error
                if not isinstance(e, OSError):
                    log.exception("%s: read", self.iterator.target)
                    e = OSError(errno.EIO, f"{self.iterator.target}: {e}")
                with self._held:
                    self._error = e
                    self._more.notify_all()
                return
            with self._held:
                if not chunk:
                    self._eof = True
                    self._more.notify_all()
                    return
                self._starts.append(self._produced)
                self._chunks.append(chunk)
                self._produced += len(chunk)
                # skipped over by a read further on; the walk's last KEEP_BYTES stay, for a read
                # beyond the end followed by one before it
                self._drop_before(min(keep_from, self._produced - KEEP_BYTES))
                self._more.notify_all()

    def _take(self, offset: int, size: int) -> bytes:
        """The bytes at offset that are held (offset is not before _base). Under _held."""
        if offset >= self._produced and self._error is not None:
            raise self._error
        at, stop = offset, min(offset + size, self._produced)
        parts = []
        i = bisect.bisect_right(self._starts, offset) - 1
        assert i >= 0 or at >= stop, "a read before what is held"
        while at < stop:
            chunk, start = self._chunks[i], self._starts[i]
            begin, end = at - start, min(len(chunk), stop - start)
            parts.append(chunk if begin == 0 and end == len(chunk) else memoryview(chunk)[begin:end])
            at, i = start + end, i + 1
        data = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        if data:  # a read beyond the end serves nothing, and moves what is kept nowhere
            self._served_end = max(self._served_end, offset + len(data))
        self._drop_before(self._served_end - KEEP_BYTES)
        return data

    def _drop_before(self, offset: int) -> None:
        """Let go of the reads that end at or before offset, but what a read_at() in flight will
        take. Under _held."""
        if self._pinned:
            offset = min(offset, *self._pinned)
        gone = 0
        while gone < len(self._chunks) and self._starts[gone] + len(self._chunks[gone]) <= offset:
            gone += 1
        if gone:
            del self._chunks[:gone], self._starts[:gone]
            self._base = self._starts[0] if self._starts else self._produced

    def try_close(self) -> bool:
        """Close now unless a kernel read holds the stream; True if closed."""
        with self._held:
            self._closing = True
            self._more.notify_all()
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._close()
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        """Close, waiting for a kernel read of this stream to finish. Blocks."""
        with self._held:
            self._closing = True
            self._more.notify_all()
        with self._lock:
            self._close()

    def _close(self) -> None:
        with self._held:
            self._closed = True
            self._chunks, self._starts = [], []
            self._base = self._produced
        self.iterator.close()


class Iterators:
    """Opens iterators by target name and parameters; owns every kernel handle it made."""

    def __init__(self, catalog: Catalog, shared: bool = False):
        """shared: readers other than the daemon's own are served (a mount with allow_other), so
        a ptrace-filtering program shows no one anything unless their policy says so; otherwise
        every load's default policy is the daemon's: every task, for every reader."""
        self._catalog = catalog
        self._shared = shared
        self._programs = Programs({} if shared else {access.POLICY_MAP: access.default_entry()})
        self.namespaces = Namespaces()
        self.daemon = credentials.own()  # this thread's now, before any reader's
        self._lock = threading.Lock()
        self._open: set[Iterator] = set()
        self._started_over = 0  # by iterators released

    @contextlib.contextmanager
    def _link_parts(self, target: str, params: Params, view: str | None, block: bool, fields: str | None = None,
                    as_json: bool = False, reader: Reader = DAEMON):
        """(prog_fd, link_info, recipe, grant, scope) for a link of target, view (or fields) and params as
        reader names them, valid inside the block; access.Denied first where the reader may not."""
        if reader.foreign and reader.kind != "net" and not block:
            # a network namespace is entered and left in place: two setns() around bpf_iter_create()
            raise WouldBlock(f"{target}: a reader in another {reader.kind} namespace")
        if view is not None:
            # a view's object may have been replaced or removed: look at the directories first
            if not block:
                raise WouldBlock(f"{target}/{view}: the objects directories are looked at first")
            self._catalog.refresh_views()
            # the name was parsed when the object may have been another: its globals may differ now
            params = self._catalog.schema(target, view).parse(params.name)
        recipe = self._catalog.recipe(target, view, params, fields, as_json)
        grant = access.grant(target, reader.creds, self.daemon, recipe.rule, view is not None, fields is not None)
        if not block and probes.costly(recipe.schema):
            raise WouldBlock(f"{target}: checking {params.name} walks the cgroup tree")
        scope = self.namespaces.scope(reader)
        probes.check(recipe.schema, params, scope)
        prog_fd = self._programs.prog_fd(recipe, block)
        try:
            if recipe.through:  # the program walks what params name itself: its link takes none
                yield prog_fd, None, recipe, grant, scope
                return
            with probes.link_info(recipe.schema, params, scope) as link_info:
                yield prog_fd, link_info, recipe, grant, scope
        finally:
            self._programs.release(recipe)

    def open(self, target: str, params: Params, view: str | None = None, block: bool = True,
             fields: str | None = None, as_json: bool = False, reader: Reader = DAEMON) -> Iterator:
        """A new walk of target (of a view of it, or of the fields a fields= directory names,
        as text or JSON lines), as reader's namespaces show it. Loads the program on first
        use, and serves a reader in another namespace, which block; block=False raises
        WouldBlock instead, for callers that must not block."""
        with self._link_parts(target, params, view, block, fields, as_json, reader) as parts:
            prog_fd, link_info, recipe, grant, scope = parts
            formatter = functools.partial(recipe.fields.formatter, as_json) if recipe.fields else None
            map_fd = self._programs.map_fd(recipe, access.POLICY_MAP)
            policy = None
            if map_fd is not None and (self._shared or grant.subject is not None):
                # the program filters by its reader's policy: its load stays while read
                self._programs.hold(recipe)
                policy = access.ReaderPolicy(map_fd, grant.subject, functools.partial(self._programs.release, recipe))
            place = self.namespaces.place(target, reader, grant.assume, policy)
            try:
                in_parts = self._in_parts(recipe, params, prog_fd, scope)
            except BaseException:
                place.close()
                raise
            iterator = Iterator.attach(target, prog_fd, link_info, recipe.through, formatter, place, in_parts)
        with self._lock:
            self._open.add(iterator)
        return iterator

    @staticmethod
    def _in_parts(recipe, params: Params, prog_fd: int, scope: probes.Scope) -> Parts | None:
        """How a cgroup walk of a bundled program (its own or fields=) is made of smaller ones
        when it is larger than one read. Not for a user's view, whose output may be anything."""
        if not isinstance(recipe.schema.base, CgroupSchema) or recipe.view is not None:
            return None
        values = recipe.schema.target_values(params)
        order = values.get("order", pieces.PRE)
        if order not in pieces.ORDERS:
            return None
        pack = lambda order, cgroup: recipe.schema.pack({"order": order, "id": cgroup})  # noqa: E731
        return Parts(os.dup(prog_fd), pack, scope.cgroups, values.get("id"), order, bundled=recipe.fields is None)

    def open_pin(self, path: str, target: str, reader: Reader = DAEMON) -> Iterator:
        """A new walk of the iterator link pinned at path (still an iterator link?), as reader's
        namespaces show it, as open(2) of the pin would. Blocks. The open holds that link:
        a walk started over is of it, even if the pin is replaced."""
        grant = access.grant(target, reader.creds, self.daemon, pin=True)
        as_reader = functools.partial(credentials.assumed, grant.assume) if grant.assume else contextlib.nullcontext
        try:
            with pins.held(path, as_reader) as same:  # the inode the reader may open, not what is there later
                link_fd = pins.open_link(same)
        except FileNotFoundError:
            raise NotFound(f"{path}: no longer pinned") from None
        except PermissionError as e:
            raise access.Denied("pinned", f"{path}: open(2) with the reader's credentials: {e.strerror}") from None
        if link_fd is None:
            raise NotFound(f"{path}: no longer pinned")
        try:
            if pins.describe(link_fd, path) is None:
                raise NotFound(f"{path}: no longer an iterator pin")
            place = self.namespaces.place(target, reader, grant.assume)
        except BaseException:
            os.close(link_fd)
            raise
        iterator = Iterator(target, link_fd, place=place)
        with self._lock:
            self._open.add(iterator)
        return iterator

    def pin(self, target: str, params: Params, path: str) -> None:
        """Pin a link for target and params at path in bpffs; it outlives this process."""
        with self._link_parts(target, params, None, True) as (prog_fd, link_info, recipe, _, _):
            map_fd = self._programs.map_fd(recipe, access.POLICY_MAP)
            if map_fd is not None:  # read through bpffs, where no one stores a policy: as the pinner
                _libbpf.map_update(map_fd, *access.default_entry())
            link_fd = _libbpf.link_create(prog_fd, link_info)
        try:
            _libbpf.obj_pin(link_fd, path)
        finally:
            os.close(link_fd)

    def release(self, iterator: Iterator) -> None:
        with self._lock:
            self._open.discard(iterator)
            self._started_over += iterator.started_over
        iterator.close()

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def status(self) -> dict:
        """The targets, the programs loaded and the iterators open, for .iterfs/status."""
        targets = self._catalog.targets
        return {
            "targets": sorted(targets),
            # the kernel refuses every program for these: their files give that errno
            "refused_targets": {name: refusal(r.refused) for name, r in sorted(targets.items()) if r.refused},
            # targets served through a program of another target, since the kernel refuses their own
            "served_through": {name: r.through for name, r in sorted(targets.items()) if r.through},
            "loaded_programs": self._programs.loaded,
            "open_iterators": self.open_count,
            # reads before what an open kept (seeks back): each a walk from the start
            "walks_started_over": self.walks_started_over,
            **self.namespaces.status(),
        }

    @property
    def walks_started_over(self) -> int:
        with self._lock:
            return self._started_over + sum(i.started_over for i in self._open)

    def close(self) -> None:
        with self._lock:
            still_open, self._open = self._open, set()
        for iterator in still_open:
            iterator.close()
        self._programs.close()
        self.namespaces.close()
