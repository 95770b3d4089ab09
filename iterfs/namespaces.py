"""Each reader's namespaces: who reads, and iterators made as those namespaces show the kernel.

    Namespaces.reader(tid, target)  the namespace that decides target's walks, of the thread
                                    behind a request, if it is not the daemon's (an fd of it,
                                    held until close); EACCES where the daemon cannot tell
    Namespaces.place(target, r)     where an open's iterator fds are made and read:
      net     bpf_iter_create() in this thread, setns() into the reader's network
              namespace and back (the iterator keeps the namespace it was made in)
      pid     bpf_iter_create() in a helper process inside the reader's pid namespace
              (pidns_helper.py; the kernel takes the creator's pid namespace, which
              setns() cannot change for the daemon's own threads)
      cgroup  read() in this thread inside the reader's cgroup namespace (the program
              prints paths relative to the reading thread's namespace root)
    Namespaces.scope(reader)        the /proc and cgroup subtree that reader can name

A reader whose namespaces are the daemon's costs one stat(2) per open. Readers
in other namespaces get worker threads of their own (fs.py): a helper is a
process of theirs, which they can stop, and a request it leaves unanswered ends it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Iterator as Iter

from . import _libbpf, credentials, pidns_helper
from .access import ITER_CREATE_CAPS, ReaderPolicy
from .credentials import Credentials
from .errors import WouldBlock
from .probes import Scope

log = logging.getLogger(__name__)

# the namespace that decides what a target's walk shows
NAMESPACE_OF = {"tcp": "net", "udp": "net", "unix": "net", "netlink": "net", "ipv6_route": "net",
                "task": "pid", "task_file": "pid", "task_vma": "pid", "cgroup": "cgroup"}
_SETNS_FLAG = {"net": 0x40000000, "cgroup": 0x02000000}  # CLONE_NEWNET, CLONE_NEWCGROUP
# a pid namespace's helper ends after this long without a request
HELPER_IDLE = 60.0
HELPER_START_TIMEOUT = 10.0
# a request a helper does not answer in this long ends it (stopped by a signal from inside its namespace?)
HELPER_REQUEST_TIMEOUT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, kind: str) -> None:
    if _libc.setns(fd, _SETNS_FLAG[kind]) < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns({kind}): {os.strerror(code)}")


class Reader:
    """The thread behind a request, and the one namespace of it that matters, if not the daemon's;
    on a shared mount, its credentials too (None: served as the daemon)."""

    def __init__(self, tid: int, kind: str | None = None, fd: int = -1, inode: int = 0):
        self.tid = tid
        self.kind = kind if fd >= 0 else None  # None: it sees what the daemon sees
        self.fd = fd
        self.inode = inode
        self.creds: Credentials | None = None

    @property
    def foreign(self) -> bool:
        return self.kind is not None

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


DAEMON = Reader(0)  # the daemon itself (the Python API, iterfs cat): its own namespaces


class Place:
    """Where one open's iterator fds are made and its reads are done, and as whom: with a
    reader's credentials (assume), and its policy stored for a ptrace-filtering program."""

    def __init__(self, assume: Credentials | None = None, policy: ReaderPolicy | None = None):
        self._assume, self._policy = assume, policy
        self._reading = threading.local()
        # nothing to do around reads: the daemon's namespaces and credentials (HERE, most opens)
        self._plain = assume is None and policy is None and type(self)._entered is Place._entered

    def iter_create(self, link_fd: int) -> int:
        with self._as_reader(ITER_CREATE_CAPS):
            return _libbpf.iter_create(link_fd)

    @contextlib.contextmanager
    def reading(self, first: bool = False) -> Iter[None]:
        """Around read()s of the iterator: one, or all those one request needs (the reads inside
        are then the outer call's, which enters, stores and switches once). first: nothing of
        the walk was read yet. No iter_create() inside: a setns() needs the daemon's credentials."""
        if self._plain or getattr(self._reading, "inside", False):
            yield
            return
        self._reading.inside = True
        try:
            with self._entered(), self._policy.stored(first) if self._policy else contextlib.nullcontext(), \
                    self._as_reader():
                yield
        finally:
            self._reading.inside = False

    def _entered(self):
        """The reader's namespace reads are made in, where it is not where the iterator was made."""
        return contextlib.nullcontext()

    def _as_reader(self, extra_caps: int = 0):
        # innermost, after any setns(), which takes the daemon's capabilities
        return credentials.assumed(self._assume, extra_caps) if self._assume else contextlib.nullcontext()

    def close(self) -> None:
        if self._policy:
            self._policy.close()


HERE = Place()  # the daemon's namespaces and credentials


class _Entered(Place):
    """A place inside one namespace of a reader's, held by an fd of its own (the open outlives the request)."""

    def __init__(self, namespaces: Namespaces, fd: int, assume: Credentials | None = None,
                 policy: ReaderPolicy | None = None):
        super().__init__(assume, policy)
        self._namespaces, self._fd = namespaces, os.dup(fd)

    def close(self) -> None:
        super().close()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _InNet(_Entered):
    def iter_create(self, link_fd: int) -> int:
        with self._namespaces.entered("net", self._fd):
            return super().iter_create(link_fd)


class _InCgroup(_Entered):
    def _entered(self):
        return self._namespaces.entered("cgroup", self._fd)


class _InPid(_Entered):
    """The helper makes the iterator fds, as the daemon's task targets are made (access.py);
    reads take the reader's credentials where given (a pin's)."""

    def __init__(self, namespaces: Namespaces, fd: int, inode: int, assume: Credentials | None = None,
                 policy: ReaderPolicy | None = None):
        super().__init__(namespaces, fd, assume, policy)
        self._inode = inode

    def iter_create(self, link_fd: int) -> int:
        # the namespace's helper of now: a walk started over after an idle minute starts a new one
        try:
            return self._namespaces.helper(self._fd, self._inode).iter_create(link_fd)
        except HelperGone:  # ended just now (idle): once more, with a new one
            return self._namespaces.helper(self._fd, self._inode).iter_create(link_fd)


class HelperGone(OSError):
    """The helper ended before it answered: a new one can serve the namespace, if it still has an init."""


class PidHelper:
    """A pidns_helper.py process pair serving one pid namespace."""

    def __init__(self, ns_fd: int, inode: int, on_end):
        self.inode = inode
        self._on_end = on_end
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self.last_used = time.monotonic()
        self._proc_fd = -1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # -I -S: nothing from the environment or site-packages runs in the namespace
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", pidns_helper.__file__, str(theirs.fileno()), str(ns_fd)],
                pass_fds=(theirs.fileno(), ns_fd), stdin=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        try:
            self.server_pid = self._handshake()
        except BaseException:
            self.close()
            self._process.kill()
            self._process.wait()
            raise
        # the namespace's own /proc, which the server mounted: by fd, not by the server's pid,
        # which another process may have once the server has gone
        self.proc = f"/proc/self/fd/{self._proc_fd}"
        threading.Thread(target=self._watch, name=f"pidns-{inode}", daemon=True).start()

    def _handshake(self) -> int:
        self._sock.settimeout(HELPER_START_TIMEOUT)
        server = None
        try:
            while server is None or self._proc_fd < 0:
                message, fds, _, _ = socket.recv_fds(self._sock, 16, 1)
                if message[:1] == pidns_helper.SERVER:
                    server = struct.unpack("=i", message[1:5])[0]
                elif message == pidns_helper.READY and len(fds) == 1:
                    self._proc_fd = fds[0]
                else:
                    raise _unexpected(message, fds, "the pid namespace's helper could not start")
        except socket.timeout:
            raise OSError(errno.ETIMEDOUT, "the pid namespace's helper did not start") from None
        self._sock.settimeout(HELPER_REQUEST_TIMEOUT)
        return server

    def iter_create(self, link_fd: int) -> int:
        with self._lock:
            self.touch()
            if self._ended.is_set():
                raise HelperGone(errno.EAGAIN, "the pid namespace's helper has ended")
            try:
                socket.send_fds(self._sock, [pidns_helper.REQUEST], [link_fd])
                message, fds, _, _ = socket.recv_fds(self._sock, 16, 1)
            except socket.timeout:
                log.warning("pid namespace helper for pid:[%d] did not answer in %.0f s: ending it",
                            self.inode, HELPER_REQUEST_TIMEOUT)
                self._process.kill()  # the server dies with it (PR_SET_PDEATHSIG)
                self.close()
                raise OSError(errno.ETIMEDOUT, "the pid namespace's helper did not answer") from None
            except OSError as e:
                raise HelperGone(errno.EAGAIN, f"the pid namespace's helper has ended: {e.strerror}") from None
        if message == pidns_helper.DONE and len(fds) == 1:
            return _an_iterator(fds[0])
        raise _unexpected(message, fds, "bpf_iter_create() in the pid namespace")

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def _watch(self) -> None:
        """Wait for the helper to end (its namespace ended, or it was closed), closing it when idle."""
        ended = os.pidfd_open(self._process.pid)
        try:
            while not select.select([ended], [], [], min(HELPER_IDLE, 5.0))[0]:
                if time.monotonic() - self.last_used > HELPER_IDLE:
                    log.info("pid namespace helper for pid:[%d] idle for %.0f s: ending it", self.inode, HELPER_IDLE)
                    self.close()
        finally:
            os.close(ended)
        code = self._process.wait()
        self._ended.set()
        self._on_end(self)
        self.close()
        with self._lock:  # no request reads it any longer
            if self._proc_fd >= 0:
                os.close(self._proc_fd)
                self._proc_fd = -1
        log.info("pid namespace helper ended: pid:[%d] (helper pid %d, exit %s)", self.inode, self.server_pid, code)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()  # the server reads EOF and exits, and the first process with it


class Namespaces:
    """The namespaces the daemon serves readers in, and the pid namespaces' helpers."""

    def __init__(self) -> None:
        _OWN.fds  # opened now, while this thread is surely in the daemon's own namespaces
        self._lock = threading.Lock()
        self._helpers: dict[int, PidHelper] = {}
        self._starting: dict[int, threading.Lock] = {}
        self.opens: Counter[str] = Counter()  # opens served in a namespace other than the daemon's, by kind
        self._warned: set[str] = set()

    def reader(self, tid: int | None, target: str | None) -> Reader:
        """The reader thread tid, with the namespace that decides target's walks if it is not the
        daemon's (None: the daemon itself). The caller waits in the kernel until answered, so
        tid stays its thread. PermissionError where the daemon may not tell and the namespace
        matters: tid 0 is a reader whose pid the daemon's pid namespace does not have."""
        kind = NAMESPACE_OF.get(target)
        if kind is None or tid is None:
            return Reader(tid or 0)
        if not tid:
            raise PermissionError(errno.EACCES, "a reader outside the daemon's pid namespace (FUSE gives "
                                                "its pid as 0): its namespaces cannot be told")
        path = f"/proc/{tid}/ns/{kind}"
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return Reader(tid)  # the request's thread has gone: no one reads the answer
        except PermissionError as e:
            if _same_without_ptrace(tid, kind):
                return Reader(tid)
            self._warn(kind, e)
            raise PermissionError(errno.EACCES, f"thread {tid}: its {kind} namespace cannot be told "
                                                f"({path}: {e.strerror})") from None
        if inode == _OWN.inodes[kind]:
            return Reader(tid)
        return Reader(tid, kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC), inode)

    def _warn(self, kind: str, e: OSError) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("cannot read a reader's %s namespace (/proc/TID/ns/%s: %s; the daemon needs "
                        "CAP_SYS_PTRACE, and an LSM may forbid it): readers it cannot tell get EACCES "
                        "for the targets that namespace decides", kind, kind, e.strerror)

    def place(self, target: str | None, reader: Reader, assume: Credentials | None = None,
              policy: ReaderPolicy | None = None) -> Place:
        """Where an open of target by reader makes its iterator fds and reads them; with the
        credentials assume, and policy stored for the reading thread, where given. Takes policy."""
        if not reader.foreign or NAMESPACE_OF.get(target) != reader.kind:
            return Place(assume, policy) if assume or policy else HERE
        with self._lock:
            self.opens[reader.kind] += 1
        if reader.kind == "net":
            return _InNet(self, reader.fd, assume, policy)
        if reader.kind == "cgroup":
            return _InCgroup(self, reader.fd, assume, policy)
        return _InPid(self, reader.fd, reader.inode, assume, policy)

    def scope(self, reader: Reader, block: bool = True) -> Scope:
        """The /proc and cgroup subtree reader can name pids and cgroups in. Blocks the first
        time a pid namespace is served (its helper starts), and for a cgroup namespace (a
        setns() and two files); block=False raises WouldBlock instead."""
        if reader.kind == "pid":
            helper = self.helper(reader.fd, reader.inode) if block else self._running(reader.inode)
            if helper is None:
                raise WouldBlock("the pid namespace's helper starts first")
            helper.touch()
            return Scope(proc=helper.proc)
        if reader.kind == "cgroup":
            if not block:
                raise WouldBlock("the cgroup namespace's root is found in a worker thread")
            return Scope(cgroups=self._cgroup_root(reader))
        return Scope()

    def helper(self, ns_fd: int, inode: int) -> PidHelper:
        """The helper of the pid namespace ns_fd (inode), started if it has none. Blocks then."""
        helper = self._running(inode)
        if helper is not None:
            return helper
        with self._lock:
            starting = self._starting.setdefault(inode, threading.Lock())
        with starting:  # one start per namespace, however many readers wait for it
            try:
                helper = self._running(inode)
                if helper is not None:
                    return helper
                helper = PidHelper(ns_fd, inode, self._ended)
                log.info("pid namespace helper started: pid:[%d] (helper pid %d)", inode, helper.server_pid)
                with self._lock:
                    self._helpers[inode] = helper
                return helper
            finally:
                with self._lock:
                    self._starting.pop(inode, None)

    def _running(self, inode: int) -> PidHelper | None:
        """The helper of the pid namespace inode, if it has one that has not ended."""
        with self._lock:
            helper = self._helpers.get(inode)
        return helper if helper is not None and helper.alive else None

    def _ended(self, helper: PidHelper) -> None:
        with self._lock:
            if self._helpers.get(helper.inode) is helper:
                del self._helpers[helper.inode]

    def _cgroup_root(self, reader: Reader) -> str:
        """The reader's cgroup namespace root, as a path in the daemon's cgroup2 hierarchy: the
        reader's cgroup as the daemon sees it, less the same cgroup as its own namespace sees it."""
        full = _cgroup_of(reader.tid)
        with self.entered("cgroup", reader.fd):
            inside = _cgroup_of(reader.tid)
        if inside == "/":
            return full
        if inside.startswith("/..") or not full.endswith(inside):
            raise PermissionError(errno.EACCES, f"thread {reader.tid} is in a cgroup outside its cgroup "
                                                f"namespace's root ({inside}): the root cannot be told")
        return full[:-len(inside)] or "/"

    @staticmethod
    @contextlib.contextmanager
    def entered(kind: str, fd: int) -> Iter[None]:
        """This thread inside the namespace fd, and back in the daemon's afterwards. A thread that
        cannot go back must not serve anyone else: the daemon aborts."""
        _setns(fd, kind)
        try:
            yield
        finally:
            try:
                _setns(_OWN.fds[kind], kind)
            except OSError as e:
                log.critical("cannot return a thread to the daemon's %s namespace (%s): aborting", kind, e)
                os.abort()

    def status(self) -> dict:
        with self._lock:
            helpers = sorted(self._helpers.values(), key=lambda h: h.inode)
            opens = dict(self.opens)
        now = time.monotonic()
        return {
            "opens_in_other_namespaces": {kind: opens.get(kind, 0) for kind in ("net", "pid", "cgroup")},
            "pid_namespace_helpers": [{"pid_namespace": h.inode, "helper_pid": h.server_pid,
                                       "idle_seconds": round(now - h.last_used, 1)} for h in helpers],
        }

    def close(self) -> None:
        with self._lock:
            helpers, self._helpers = list(self._helpers.values()), {}
        for helper in helpers:
            helper.close()


class _Own:
    """The daemon's own namespaces: their inodes, and fds to return to after setns(). Every
    thread starts in them; they are opened once per process, by the first Namespaces."""

    @functools.cached_property
    def inodes(self) -> dict[str, int]:
        return {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("net", "pid", "cgroup")}

    @functools.cached_property
    def fds(self) -> dict[str, int]:
        return {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in _SETNS_FLAG}


_OWN = _Own()


def _same_without_ptrace(tid: int, kind: str) -> bool:
    """Whether thread tid is in the daemon's namespace of kind, from what /proc shows anyone:
    NSpid lists one pid where the task's pid namespace is this /proc's (the daemon's), and the
    files of /proc/TID/net are its network namespace's own (one inode each per namespace). A
    cgroup namespace shows nowhere."""
    try:
        if kind == "pid":
            return _nspid_count(f"/proc/{tid}/status") == _nspid_count("/proc/self/status") == 1
        if kind == "net":
            return os.stat(f"/proc/{tid}/net/dev").st_ino == os.stat("/proc/self/net/dev").st_ino
    except OSError:
        pass
    return False


def _nspid_count(path: str) -> int:
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"NSpid:"):
                return len(line.split()) - 1
    return 0


def _unexpected(message: bytes, fds: list[int], what: str) -> OSError:
    """What a helper's message other than the answer asked for says (its fds closed): the errno
    of a failure of what, or that the helper has ended (closed, or its namespace's init has
    exited: the kernel has killed every process in it)."""
    for fd in fds:
        os.close(fd)
    if message[:1] == pidns_helper.FAILED:
        code = struct.unpack("=i", message[1:5])[0]
        return OSError(code, f"{what}: {os.strerror(code)}")
    return HelperGone(errno.EAGAIN, "the pid namespace's helper has ended")


def _an_iterator(fd: int) -> int:
    """fd, if it is a BPF iterator's: the daemon reads nothing else a process in a reader's
    namespace hands it."""
    try:
        kind = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        kind = "?"
    if kind != "anon_inode:bpf_iter":
        os.close(fd)
        raise OSError(errno.EPROTO, f"the pid namespace's helper sent an fd of {kind}, not an iterator")
    return fd


def _cgroup_of(tid: int) -> str:
    """Thread tid's cgroup2 path, as the calling thread's cgroup namespace shows it."""
    with open(f"/proc/{tid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    raise OSError(errno.ENOENT, f"thread {tid} has no cgroup2 cgroup")
