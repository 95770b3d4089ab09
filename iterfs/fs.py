"""The FUSE operations: thin methods over the tree and the iterators.

Every method runs on the trio loop. A kernel read of an iterator (where the
kernel runs the program), a program load and a look at more than a file or
two (bpffs, the objects directories, a listing: Tree.blocks() says when)
always go to a worker thread, and so does what a reader in another pid or
cgroup namespace asks (its helper may take a while), in threads readers in
other namespaces share; creating a link and an iterator fd are quick bpf()
calls made in place (in a reader's network namespace too: setns() there and
back), and a read that what was already read answers (the final empty read, a
re-read) is served in place too. On a shared mount (allow_other) each request's
reader is asked for what it may see (access.py): its credentials are read from
/proc in place, and what it may see of bpffs is looked at with them in a worker
thread. Only ``pyfuse3.FUSEError``
leaves this module: the ``_errors`` boundary maps the failures the layers
below name (NotFound, the kernel's errnos) to errnos, and logs anything else
with its traceback as EIO.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import logging
import os
import time
from collections import Counter
from typing import Sequence

import pyfuse3
import trio

from . import access, callers, credentials, pins, probes
from .access import Denied
from .credentials import Credentials
from .errors import NotFound, WouldBlock
from .fields import FieldError
from .iterator import Iterators, Stream
from .namespaces import NAMESPACE_OF, Reader
from .programs import LoadFailed
from .tree import Kind, Node, Tree

log = logging.getLogger(__name__)

# A caller that has just sent a request may still be on its way to sleep, when its
# syscall cannot be read: looks at it, and the wait between two (trio rounds it to 1 ms).
SYSCALL_LOOKS = 5
SYSCALL_WAIT = 0.0005
# After a reader in another pid or cgroup namespace, how long parameter files of the targets
# it decides are looked up per reader (one LOOKUP per open) before the kernel may cache them again.
PER_READER_LINGER = 60.0
# worker threads that readers in other namespaces than the daemon's share
OTHER_NAMESPACE_THREADS = 8


class Stats:
    """What the daemon has done, for .iterfs/status."""

    def __init__(self) -> None:
        self.started = time.time()
        self.opens = 0
        self.bytes_served = 0
        self.errors: Counter[str] = Counter()  # by errno name
        self.denials: Counter[str] = Counter()  # opens and lookups a reader may not make, by target

    def error(self, code: int) -> None:
        self.errors[errno.errorcode.get(code, str(code))] += 1


def _errors(method):
    """The one exception boundary: our errors become errnos, others EIO with a traceback."""

    @functools.wraps(method)
    async def wrapper(self, *args):
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError as e:
            self.stats.error(e.errno)
            raise
        except Denied as e:  # the kernel's rules for this reader, not a failure: at debug, counted
            log.debug("%s%r: EACCES: %s", method.__name__, args[:2], e.strerror)
            self.stats.error(errno.EACCES)
            self.stats.denials[e.target] += 1
            raise pyfuse3.FUSEError(errno.EACCES) from None
        except FieldError as e:  # a person typed the name: say which field, and why
            log.info("%s%r: ENOENT: %s", method.__name__, args[:2], e)
            self.stats.error(errno.ENOENT)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except NotFound as e:  # ParamError too: a name that is no parameter set, or names nothing
            log.debug("%s%r: ENOENT: %s", method.__name__, args[:2], e)
            self.stats.error(errno.ENOENT)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except LoadFailed as e:
            # logged once, when the load failed or the kernel's refusal was found
            log.debug("%s%r: %s: %s", method.__name__, args[:2], errno.errorcode.get(e.errno, e.errno), e)
            self.stats.error(e.errno)
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            code = e.errno or errno.EIO
            log.warning("%s%r: %s: %s", method.__name__, args[:2], errno.errorcode.get(code, code), e)
            self.stats.error(code)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s%r: unexpected error, answering EIO", method.__name__, args[:2])
            self.stats.error(errno.EIO)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _Text:
    """A file whose contents are made at open: a README, .iterfs/status."""

    def __init__(self, text: bytes):
        self.text = text


class _Open:
    """An open iterator file: its Stream and inode, and the right to a worker thread."""

    def __init__(self, stream: Stream, inode: int):
        self.stream = stream
        self.inode = inode
        # pread(2)s of one fd by many threads wait here, not each in a worker thread of its own
        self.in_kernel = trio.Lock()
        self.reading_ahead = False  # a worker thread reads the kernel on for the reads to come


class IterFS(pyfuse3.Operations):
    def __init__(self, tree: Tree, iterators: Iterators, mountpoint: str = "", shared: bool = False):
        """shared: a mount with allow_other, where each reader gets what the kernel would show it
        (access.py); a private mount's readers are root's, and are served as the daemon."""
        super().__init__()
        self.stats = Stats()
        self._mountpoint = mountpoint
        self._shared = shared
        self._tree = tree
        self._iterators = iterators
        self._handles: dict[int, _Open | _Text] = {}
        self._streams_of: Counter[int] = Counter()  # inode -> iterator files open
        # per opendir: the directory and its entries (names, or nodes already made for a mirror)
        self._listings: dict[int, tuple[Node, list[str | Node]]] = {}
        self._fh = itertools.count(1)
        self._mounted_ns = time.time_ns()
        # when a reader outside the daemon's pid or cgroup namespace was last served: meanwhile,
        # which parameter files exist depends on who asks, and the kernel caches none
        self._per_reader: dict[str, float] = {}
        self._other_limiter: trio.CapacityLimiter | None = None

    # names

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent, name = self._tree.node(parent_inode), os.fsdecode(name)
        if self._shared:
            await self._may_look_up(parent, name, ctx)
        with self._scope_for(ctx, parent.target) as (scope, limiter):
            try:  # in place, where the name needs no more than a file or two looked at
                if self._tree.blocks(parent, name):
                    raise WouldBlock(f"looking up {name}")
                node = self._tree.lookup(parent, name, functools.partial(scope, block=False))
            except WouldBlock:
                node = await trio.to_thread.run_sync(self._tree.lookup, parent, name, scope, limiter=limiter)
        try:
            attributes = self._attributes(node)
        except Exception:
            self._tree.drop_if_unused(node)
            raise
        self._tree.remember(node)  # counted only once the reply is sure
        return attributes

    async def _may_look_up(self, parent: Node, name: str, ctx: pyfuse3.RequestContext) -> None:
        """Denied where a reader on a shared mount may not learn that name exists: a parameter
        file of a privileged target (map_id=7 says map 7 exists), a path bpffs hides from it."""
        if parent.kind is Kind.MIRROR:
            creds = self._credentials(ctx)
            if creds is not None:  # what the reader may see of bpffs itself
                await trio.to_thread.run_sync(access.as_reader, creds, os.lstat, os.path.join(parent.path, name))
        elif self._tree.names_objects(parent, name) and access.privileged(parent.target) \
                and not access.may_read(parent.target, self._credentials(ctx)):
            raise Denied(parent.target, f"{name}: which objects exist is for privileged readers")

    def _credentials(self, ctx: pyfuse3.RequestContext | None) -> Credentials | None:
        """The credentials of the reader behind a request on a shared mount; None: served as the daemon
        (a private mount's reader, or one at least as privileged as the daemon)."""
        if not self._shared or ctx is None:
            return None
        creds = credentials.of_thread(ctx.pid, ctx.uid, ctx.gid)
        return None if creds.covers(self._iterators.daemon) else creds

    @contextlib.contextmanager
    def _scope_for(self, ctx: pyfuse3.RequestContext | None, target: str | None):
        """(scope, limiter) for a lookup or a listing of target's: scope(block=True) gives the pids
        and cgroups its reader can name, asked only where a name is checked; limiter, the
        worker threads the reader may take (readers in other namespaces share their own)."""
        try:
            reader = self._reader(ctx, target, names=True)
        except PermissionError as e:
            refusal = e

            def cannot_tell(block: bool = True) -> probes.Scope:
                raise refusal
            yield cannot_tell, None
            return
        with reader:
            if not reader.foreign:
                yield (lambda block=True: probes.DAEMONS), None
            else:
                yield functools.partial(self._iterators.namespaces.scope, reader), self._other_namespaces

    @property
    def _other_namespaces(self) -> trio.CapacityLimiter:
        """The worker threads for readers in other namespaces than the daemon's: however long their
        helpers take, the daemon's own readers keep trio's default threads."""
        if self._other_limiter is None:
            self._other_limiter = trio.CapacityLimiter(OTHER_NAMESPACE_THREADS)
        return self._other_limiter

    def _reader(self, ctx: pyfuse3.RequestContext | None, target: str | None, names: bool = False) -> Reader:
        """Who asks, with the namespace that decides target's objects if it is not the daemon's.
        names: for a lookup or a listing, which a network namespace does not change (it
        changes what a walk shows, not which files exist)."""
        if names and NAMESPACE_OF.get(target) == "net":
            target = None
        reader = self._iterators.namespaces.reader(ctx.pid if ctx else None, target)
        if reader.kind in ("pid", "cgroup"):
            if not self._serving_per_reader(reader.kind):
                self._serve_per_reader(reader.kind)
            self._per_reader[reader.kind] = time.monotonic()
        return reader

    def _serving_per_reader(self, kind: str | None) -> bool:
        return time.monotonic() - self._per_reader.get(kind, float("-inf")) < PER_READER_LINGER

    def _serve_per_reader(self, kind: str) -> None:
        """Entries of parameter files the kernel cached for earlier readers may not exist for this
        one: drop them, and give the kernel no more to cache for a while."""
        targets = {target for target, of in NAMESPACE_OF.items() if of == kind}
        for parent_inode, name in self._tree.parameter_files(targets):
            pyfuse3.invalidate_entry_async(parent_inode, os.fsencode(name), ignore_enoent=True)
        log.info("serving a reader in another %s namespace: %s parameter files are looked up per reader "
                 "until %.0f s after the last such reader", kind, ", ".join(sorted(targets)), PER_READER_LINGER)

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._tree.node(inode)
        if self._streams_of[inode] and await self._seeking_by_size(ctx.pid):
            # as seq_lseek() answers in /proc: a walk has no end (nor data, nor holes) to seek to
            log.debug("getattr(%d): lseek(SEEK_END/DATA/HOLE) on %s: EINVAL, the size is unknown",
                      inode, node.name)
            raise pyfuse3.FUSEError(errno.EINVAL)
        return self._attributes(node)

    async def _seeking_by_size(self, tid: int) -> bool:
        """Whether thread tid is in lseek(SEEK_END/DATA/HOLE). It sent the request and may
        not be asleep yet, when what it is doing cannot be read: look again, briefly."""
        for _ in range(SYSCALL_LOOKS):
            seeking = callers.seeking_by_size(tid)
            if seeking is not None:
                return seeking
            await trio.sleep(SYSCALL_WAIT)
        return False

    @_errors
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self._tree.forget(inode, count)

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        directory = self._tree.node(inode)
        if directory.kind not in (Kind.DIR, Kind.MIRROR):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = next(self._fh)
        creds = self._credentials(ctx) if directory.kind is Kind.MIRROR or access.privileged(directory.target) else None
        # one snapshot per opendir, so entries are neither repeated nor skipped across calls
        if directory.kind is Kind.MIRROR:
            listing = await trio.to_thread.run_sync(self._mirror_listing, directory, creds)
        elif self._tree.blocks(directory):
            with self._scope_for(ctx, directory.target) as (scope, limiter):
                listing = await trio.to_thread.run_sync(self._tree.listing, directory, scope, limiter=limiter)
        else:
            listing = self._tree.listing(directory)
        if access.privileged(directory.target) and not access.may_read(directory.target, creds):
            listing = [name for name in listing if not self._tree.names_objects(directory, name)]
        self._listings[fh] = (directory, listing)
        return fh

    def _mirror_listing(self, directory: Node, creds: Credentials | None) -> list[str | Node]:
        """A mirror directory's entries as nodes, made here in a worker thread (they look at bpffs):
        those the reader could list in bpffs itself."""
        visible = None if creds is None else set(access.as_reader(creds, os.listdir, directory.path))
        nodes = []
        for name in self._tree.listing(directory):
            if visible is not None and name not in visible:
                continue
            try:
                nodes.append(self._tree.entry(directory, name))
            except NotFound:
                pass  # gone since it was listed
        return nodes

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        directory, names = self._listings[fh]
        for index in range(start_id, len(names)):
            try:
                node = names[index] if isinstance(names[index], Node) else self._tree.entry(directory, names[index])
            except (NotFound, OSError) as e:
                log.debug("readdir: %s has gone: %s", names[index], e)  # skipped, not the whole listing
                continue
            try:
                attributes = self._attributes(node)
            except (NotFound, OSError) as e:
                log.debug("readdir: %s has gone: %s", names[index], e)
                self._tree.drop_if_unused(node)
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), attributes, index + 1):
                self._tree.drop_if_unused(node)
                return
            self._tree.remember(node)

    @_errors
    async def releasedir(self, fh: int) -> None:
        _, names = self._listings.pop(fh, (None, []))
        for node in names:
            if isinstance(node, Node):
                self._tree.drop_if_unused(node)  # made for the listing, never replied

    # contents

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._tree.node(inode)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EACCES)
        fh = next(self._fh)
        if node.kind is Kind.README:
            self._handles[fh] = _Text(self._tree.readme(node))
            return pyfuse3.FileInfo(fh=fh, keep_cache=True)
        if node.kind is Kind.STATUS:
            creds = self._credentials(ctx)
            if creds is not None and not creds.reads_root_file():
                raise Denied(".iterfs", "status is root's, mode 0400")
            self._handles[fh] = _Text(self._status())
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        if node.kind is Kind.LISTING:  # size 0 and direct I/O, as its size is known only once made
            self._handles[fh] = _Text(await trio.to_thread.run_sync(self._tree.listing_text, node))
            return pyfuse3.FileInfo(fh=fh, direct_io=True)
        with self._reader(ctx, node.target) as reader:
            if access.needs_credentials(node.target, node.view is not None, node.fields is not None,
                                        node.kind is Kind.PIN):
                reader.creds = self._credentials(ctx)
            limiter = self._other_namespaces if reader.foreign else None
            if node.kind is Kind.PIN:
                iterator = await trio.to_thread.run_sync(self._iterators.open_pin, node.path, node.target, reader,
                                                         limiter=limiter)
            else:
                open_ = functools.partial(self._iterators.open, node.target, node.params, node.view,
                                          fields=node.fields, as_json=node.as_json, reader=reader)
                try:  # in place when the program is loaded: a link and an iterator fd are quick
                    iterator = open_(block=False)
                except WouldBlock:
                    iterator = await trio.to_thread.run_sync(open_, limiter=limiter)
        self._handles[fh] = _Open(Stream(iterator), inode)
        self._streams_of[inode] += 1
        if self._streams_of[inode] == 1:  # later opens find attr_timeout 0 in every reply
            self._uncache_attributes(inode)
        self.stats.opens += 1
        # size unknown until read: like /proc, st_size is 0 and reads bypass the page cache;
        # seekable like /proc too: the kernel keeps the position, a read at any offset is a Stream's
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles[fh]
        if isinstance(handle, _Text):
            return handle.text[off:off + size]
        stream = handle.stream
        data = stream.read_buffered(off, size)
        if data is None:
            async with handle.in_kernel:
                data = stream.read_buffered(off, size)  # the read waited for may have brought it
                if data is None:
                    data = await trio.to_thread.run_sync(stream.read_at, off, size)
        self.stats.bytes_served += len(data)
        if not handle.reading_ahead and stream.wants_ahead():
            handle.reading_ahead = True
            trio.lowlevel.spawn_system_task(self._read_ahead, handle)
        return data

    async def _read_ahead(self, handle: _Open) -> None:
        """The kernel's next reads of an open, made in a worker thread while its reader takes
        what it was served: a system task, which nothing waits for. Errors are the stream's,
        for the read that reaches them."""
        try:
            await trio.to_thread.run_sync(handle.stream.read_ahead)
        except Exception:  # a system task's exception would end the daemon
            log.exception("%s: read ahead", handle.stream.iterator.target)
        finally:
            handle.reading_ahead = False

    def _uncache_attributes(self, inode: int) -> None:
        """Make the kernel ask getattr() for the attributes of inode until its last close.

        lseek(SEEK_END) asks for the size only when the kernel holds no attributes; after
        this it holds none (getattr() answers with attr_timeout 0 while the file is open),
        so getattr() can refuse it. The price: a stat(2) of an open file, and the first
        after its last close, is a round trip to the daemon."""
        try:
            pyfuse3.invalidate_inode(inode, attr_only=True)
        except OSError as e:
            if e.errno == errno.ENOENT:  # the kernel has let go of the inode: nothing is cached
                return
            log.warning("invalidate_inode(%d): %s: lseek(SEEK_END) on this open gives 0, not EINVAL",
                        inode, e.strerror)

    @_errors
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, _Open):
            self._streams_of[handle.inode] -= 1
            if not self._streams_of[handle.inode]:
                del self._streams_of[handle.inode]
            if not handle.stream.try_close():
                # a read of this handle is still in the kernel: wait for it in a thread
                await trio.to_thread.run_sync(handle.stream.close)
            self._iterators.release(handle.stream.iterator)

    @_errors
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        """access(2), answered from the mode bits as default_permissions would for root, and on a
        shared mount as an open by the reader would be (W_OK passes here: the read-only mount
        answers EROFS)."""
        node = self._tree.node(inode)
        if mode & os.X_OK and not self._tree.attributes(node).mode & 0o111:
            return False
        if not mode & os.R_OK or not self._shared:
            return True
        if node.kind is Kind.STATUS:
            creds = self._credentials(ctx)
            return creds is None or creds.reads_root_file()
        if node.kind is Kind.PIN:  # as open(2) of the pin by the reader would say
            creds = self._credentials(ctx)
            if creds is not None:
                try:
                    await trio.to_thread.run_sync(access.as_reader, creds, pins.check_readable, node.path)
                except Denied:
                    return False
            return True
        if node.kind is not Kind.ITER or self._tree.attributes(node).mode & 0o004:
            return True
        view = self._tree.view_rule(node)
        return access.may_read(node.target, self._credentials(ctx), view, node.view is not None, node.fields is not None)

    @_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [name.encode() for name in await self._xattrs(self._tree.node(inode), ctx)]

    @_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = (await self._xattrs(self._tree.node(inode), ctx)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value.encode()

    async def _xattrs(self, node: Node, ctx: pyfuse3.RequestContext) -> dict[str, str]:
        if node.kind is Kind.PIN:  # bpffs is asked what the pin is now
            creds = self._credentials(ctx)
            if creds is not None:  # its link's fdinfo says what open(2) of the pin would show the reader
                await trio.to_thread.run_sync(access.as_reader, creds, pins.check_readable, node.path)
            return await trio.to_thread.run_sync(self._tree.xattrs, node)
        return self._tree.xattrs(node)

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_files = self._tree.size
        data.f_namemax = 255
        return data

    # helpers

    def _status(self) -> bytes:
        state = {
            "pid": os.getpid(),
            "mountpoint": self._mountpoint,
            "uptime_seconds": round(time.time() - self.stats.started, 1),
            **self._iterators.status(),
            "opens": self.stats.opens,
            "bytes_served": self.stats.bytes_served,
            "errors": dict(self.stats.errors),
            "shared": self._shared,
            # opens and lookups that readers' credentials did not allow, by target
            "denials": dict(self.stats.denials),
        }
        return (json.dumps(state, indent=2) + "\n").encode()

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        made = self._tree.attributes(node)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.inode
        attr.st_mode, attr.st_nlink, attr.st_size = made.mode, made.nlink, made.size
        attr.st_uid = attr.st_gid = 0
        attr.st_blksize = 4096
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self._mounted_ns
        attr.entry_timeout = attr.attr_timeout = made.timeout
        if node.kind is Kind.ITER and not node.permanent and self._serving_per_reader(NAMESPACE_OF.get(node.target)):
            attr.entry_timeout = 0  # whether it exists depends on who asks
        if self._shared and not node.permanent and (node.kind in (Kind.MIRROR, Kind.PIN) or node.kind is Kind.ITER
                                                    and access.privileged(node.target)):
            attr.entry_timeout = 0  # who may see it depends on who asks: the kernel caches it for no one
        if self._streams_of[node.inode]:
            attr.attr_timeout = 0  # while open, lseek(SEEK_END) must reach getattr()
        return attr

    def close(self) -> None:
        """Release every kernel handle still open (the mount is going away)."""
        self._handles.clear()
        self._iterators.close()
