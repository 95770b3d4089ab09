"""Each reader's namespaces: who reads, and iterators made as those namespaces show the kernel.

    Namespaces.reader(tid, kind)    the namespace of kind of the thread behind a request,
                                    if it is not the daemon's (an fd of it, held until close)
    Namespaces.place(target, r)     where an open's iterator fds are made and read:
      net     bpf_iter_create() in this thread, setns() into the reader's network
              namespace and back (the iterator keeps the namespace it was made in)
      pid     bpf_iter_create() in a helper process inside the reader's pid namespace
              (pidns_helper.py; the kernel takes the creator's pid namespace, which
              setns() cannot change for the daemon's own threads)
      cgroup  read() in this thread inside the reader's cgroup namespace (the program
              prints paths relative to the reading thread's namespace root)
    Namespaces.scope(reader)        the /proc and cgroup subtree that reader can name

A reader whose namespaces are the daemon's costs one stat(2) per open.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Iterator as Iter

from . import _libbpf, pidns_helper
from .probes import Scope

log = logging.getLogger(__name__)

# the namespace that decides what a target's walk shows
NAMESPACE_OF = {"tcp": "net", "udp": "net", "unix": "net", "netlink": "net", "ipv6_route": "net",
                "task": "pid", "task_file": "pid", "task_vma": "pid", "cgroup": "cgroup"}
_SETNS_FLAG = {"net": 0x40000000, "cgroup": 0x02000000}  # CLONE_NEWNET, CLONE_NEWCGROUP
# a pid namespace's helper ends after this long without a request
HELPER_IDLE = 60.0
HELPER_START_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, kind: str) -> None:
    if _libc.setns(fd, _SETNS_FLAG[kind]) < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns({kind}): {os.strerror(code)}")


class Reader:
    """The thread behind a request, and the one namespace of it that matters, if not the daemon's."""

    def __init__(self, tid: int, kind: str | None = None, fd: int = -1, inode: int = 0):
        self.tid = tid
        self.kind = kind if fd >= 0 else None  # None: it sees what the daemon sees
        self.fd = fd
        self.inode = inode

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
    """Where one open's iterator fds are made and its reads are done."""

    def iter_create(self, link_fd: int) -> int:
        return _libbpf.iter_create(link_fd)

    @contextlib.contextmanager
    def reading(self) -> Iter[None]:
        yield

    def close(self) -> None:
        pass


HERE = Place()  # the daemon's namespaces


class _Entered(Place):
    """A place inside one namespace of a reader's, held by an fd of its own (the open outlives the request)."""

    def __init__(self, namespaces: Namespaces, fd: int):
        self._namespaces, self._fd = namespaces, os.dup(fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _InNet(_Entered):
    def iter_create(self, link_fd: int) -> int:
        with self._namespaces.entered("net", self._fd):
            return _libbpf.iter_create(link_fd)


class _InCgroup(_Entered):
    @contextlib.contextmanager
    def reading(self) -> Iter[None]:
        with self._namespaces.entered("cgroup", self._fd):
            yield


class _InPid(_Entered):
    def __init__(self, namespaces: Namespaces, fd: int, inode: int):
        super().__init__(namespaces, fd)
        self._inode = inode

    def iter_create(self, link_fd: int) -> int:
        # the namespace's helper of now: a walk started over after an idle minute starts a new one
        return self._namespaces.helper(self._fd, self._inode).iter_create(link_fd)


class PidHelper:
    """A pidns_helper.py process pair serving one pid namespace."""

    def __init__(self, ns_fd: int, inode: int, on_end):
        self.inode = inode
        self._on_end = on_end
        self._lock = threading.Lock()
        self.last_used = time.monotonic()
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
            self._process.wait()
            raise
        self.proc = f"/proc/{self.server_pid}/root/proc"  # the namespace's own /proc, mounted by the server
        threading.Thread(target=self._watch, name=f"pidns-{inode}", daemon=True).start()

    def _handshake(self) -> int:
        self._sock.settimeout(HELPER_START_TIMEOUT)
        server = ready = None
        try:
            while server is None or not ready:
                message = self._sock.recv(16)
                if message[:1] == pidns_helper.SERVER:
                    server = struct.unpack("=i", message[1:5])[0]
                elif message == pidns_helper.READY:
                    ready = True
                elif message[:1] == pidns_helper.FAILED:
                    code = struct.unpack("=i", message[1:5])[0]
                    raise OSError(code, f"the pid namespace's helper could not start: {os.strerror(code)}")
                else:
                    raise OSError(errno.ESRCH, "the pid namespace's helper ended while starting")
        except socket.timeout:
            raise OSError(errno.ETIMEDOUT, "the pid namespace's helper did not start") from None
        finally:
            self._sock.settimeout(None)
        return server

    def iter_create(self, link_fd: int) -> int:
        with self._lock:
            self.last_used = time.monotonic()
            try:
                socket.send_fds(self._sock, [pidns_helper.REQUEST], [link_fd])
                message, fds, _, _ = socket.recv_fds(self._sock, 16, 1)
            except OSError as e:
                raise OSError(errno.ESRCH, f"the pid namespace's helper has ended: {e.strerror}") from None
        if message == pidns_helper.DONE and len(fds) == 1:
            return fds[0]
        for fd in fds:
            os.close(fd)
        if message[:1] == pidns_helper.FAILED:
            code = struct.unpack("=i", message[1:5])[0]
            raise OSError(code, f"bpf_iter_create() in the pid namespace: {os.strerror(code)}")
        # its namespace's init has exited: the kernel has killed every process in it
        raise OSError(errno.ESRCH, "the pid namespace's helper has ended: its namespace has no init anymore")

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None and self._sock.fileno() >= 0

    def _watch(self) -> None:
        """Wait for the helper to end (its namespace ended, or it was closed), closing it when idle."""
        while True:
            try:
                code = self._process.wait(timeout=min(HELPER_IDLE, 5.0))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - self.last_used > HELPER_IDLE:
                    log.info("pid namespace helper for pid:[%d] idle for %.0f s: ending it", self.inode, HELPER_IDLE)
                    self.close()
        self.close()
        log.info("pid namespace helper ended: pid:[%d] (helper pid %d, exit %s)", self.inode, self.server_pid, code)
        self._on_end(self)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()  # the server reads EOF and exits, and the first process with it


class Namespaces:
    """The namespaces the daemon serves readers in, and the pid namespaces' helpers."""

    def __init__(self) -> None:
        self._own = {kind: os.stat(f"/proc/thread-self/ns/{kind}").st_ino for kind in ("net", "pid", "cgroup")}
        # to return to after setns(); every thread of the daemon starts in these
        self._own_fds = {kind: os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
                         for kind in _SETNS_FLAG}
        self._lock = threading.Lock()
        self._helpers: dict[int, PidHelper] = {}
        self._starting: dict[int, threading.Lock] = {}
        self.opens: Counter[str] = Counter()  # opens served in a namespace other than the daemon's, by kind
        self._warned = False

    def reader(self, tid: int, target: str | None) -> Reader:
        """The reader thread tid, with the namespace that decides target's walks if it is not the
        daemon's. The caller waits in the kernel until answered, so tid stays its thread."""
        kind = NAMESPACE_OF.get(target)
        if kind is None or not tid:
            return Reader(tid)
        path = f"/proc/{tid}/ns/{kind}"
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            return Reader(tid)  # the request's thread has gone: no one reads the answer
        except PermissionError as e:  # it holds for every reader
            if not self._warned:
                self._warned = True
                log.warning("cannot read readers' namespaces (/proc/TID/ns: %s): without CAP_SYS_PTRACE, or where "
                            "Yama or an LSM forbids it, every reader sees the daemon's namespaces", e.strerror)
            return Reader(tid)
        if inode == self._own[kind]:
            return Reader(tid)
        return Reader(tid, kind, os.open(path, os.O_RDONLY | os.O_CLOEXEC), inode)

    def place(self, target: str | None, reader: Reader) -> Place:
        """Where an open of target by reader makes its iterator fds and reads them. Blocks the
        first time a pid namespace is served (its helper starts)."""
        if not reader.foreign or NAMESPACE_OF.get(target) != reader.kind:
            return HERE
        with self._lock:
            self.opens[reader.kind] += 1
        if reader.kind == "net":
            return _InNet(self, reader.fd)
        if reader.kind == "cgroup":
            return _InCgroup(self, reader.fd)
        return _InPid(self, reader.fd, reader.inode)

    def scope(self, reader: Reader) -> Scope:
        """The /proc and cgroup subtree reader can name pids and cgroups in. Blocks the first
        time a pid namespace is served (its helper starts)."""
        if reader.kind == "pid":
            helper = self.helper(reader.fd, reader.inode)
            helper.touch()
            return Scope(proc=helper.proc)
        if reader.kind == "cgroup":
            return Scope(cgroups=self._cgroup_root(reader))
        return Scope()

    def helper(self, ns_fd: int, inode: int) -> PidHelper:
        """The helper of the pid namespace ns_fd (inode), started if it has none. Blocks then."""
        with self._lock:
            helper = self._helpers.get(inode)
            if helper is not None and helper.alive:
                return helper
            starting = self._starting.setdefault(inode, threading.Lock())
        with starting:  # one start per namespace, however many readers wait for it
            with self._lock:
                helper = self._helpers.get(inode)
                if helper is not None and helper.alive:
                    return helper
            helper = PidHelper(ns_fd, inode, self._ended)
            log.info("pid namespace helper started: pid:[%d] (helper pid %d)", inode, helper.server_pid)
            with self._lock:
                self._helpers[inode] = helper
                self._starting.pop(inode, None)
            return helper

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

    @contextlib.contextmanager
    def entered(self, kind: str, fd: int) -> Iter[None]:
        """This thread inside the namespace fd, and back in the daemon's afterwards. A thread that
        cannot go back must not serve anyone else: the daemon aborts."""
        _setns(fd, kind)
        try:
            yield
        finally:
            try:
                _setns(self._own_fds[kind], kind)
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
        for fd in self._own_fds.values():
            os.close(fd)
        self._own_fds = {}


def _cgroup_of(tid: int) -> str:
    """Thread tid's cgroup2 path, as the calling thread's cgroup namespace shows it."""
    with open(f"/proc/{tid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    raise OSError(errno.ENOENT, f"thread {tid} has no cgroup2 cgroup")
