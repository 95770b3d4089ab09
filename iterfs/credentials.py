"""Each reader's credentials, and a thread that takes them for a while.

    of_thread(tid, uid, gid)   the credentials of the thread behind a request, as
                               /proc/TID/status shows them (its uids, gids, groups,
                               effective capabilities) and its user namespace
    assumed(creds)             the calling thread with what of those credentials the
                               kernel's checks of a reader use, and with the daemon's
                               again afterwards

What the kernel checks when a reader opens its own view of the data is the
filesystem ids, the groups and the capabilities: path permissions (a pin in
bpffs) take the fsuid, fsgid and groups; kallsyms_show_value() and %pK the
capabilities. A thread takes those of the reader, and keeps the daemon's real,
effective and saved uids and gids: with the reader's real uid the reader could
signal, renice or pin the daemon's thread meanwhile, and with a saved uid of 0
nothing is lost on the way back. Credentials are per thread in the kernel;
glibc's set*id() wrappers change them in every thread of the process (a signal
to each), so the switch is made with the raw syscalls, and each thread
switches only itself. A thread that cannot switch back, or does not read back
the daemon's credentials afterwards, must serve no one else: the daemon aborts.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import re
import threading
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

log = logging.getLogger(__name__)

# capability bits, include/uapi/linux/capability.h
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYSLOG = 34
CAP_PERFMON = 38
CAP_BPF = 39

# the syscalls' numbers, per architecture with a table of its own
_NUMBERS = {
    "x86_64": dict(setgroups=116, setfsuid=122, setfsgid=123, capget=125, capset=126),
    "aarch64": dict(setgroups=159, setfsuid=151, setfsgid=152, capget=90, capset=91),
}.get(platform.machine())
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class Credentials:
    """What the kernel checks of a reader: as /proc/TID/status shows them, with its user namespace."""

    uids: tuple[int, int, int]  # real, effective, filesystem
    gids: tuple[int, int, int]
    groups: tuple[int, ...]
    caps: int  # effective capabilities, in its own user namespace
    user_ns: int  # the inode of its user namespace
    tgid: int = field(default=0, compare=False)  # its process, as the daemon's pid namespace numbers it

    @property
    def fsuid(self) -> int:
        return self.uids[2]

    @property
    def fsgid(self) -> int:
        return self.gids[2]

    def capable(self, *caps: int) -> bool:
        """Whether it has one of caps in the initial user namespace (the kernel's capable())."""
        return self.user_ns == _INITIAL_USER_NS and any(self.caps >> cap & 1 for cap in caps)

    def covers(self, other: Credentials) -> bool:
        """Whether every check the kernel makes of other passes for these too: root's uids, its
        real and effective gid alike (%pK asks), and all of other's capabilities, in its user
        namespace. Such a reader can be served as other."""
        return self.uids == (0, 0, 0) and self.gids[0] == self.gids[1] and self.user_ns == other.user_ns \
            and self.caps & other.caps == other.caps

    def reads_root_file(self) -> bool:
        """Whether open(2) lets it read a file of root's with mode 0400 (/proc/slabinfo)."""
        return self.fsuid == 0 or self.capable(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)


def _user_ns(path: str) -> int:
    return os.stat(path).st_ino


_INITIAL_USER_NS = 0xEFFFFFFD  # PROC_USER_INIT_INO, include/linux/proc_ns.h


_STATUS = re.compile(rb"\nTgid:\t(\d+)\n.*?\nUid:\t(\d+)\t(\d+)\t\d+\t(\d+)\nGid:\t(\d+)\t(\d+)\t\d+\t(\d+)\n"
                     rb".*?\nGroups:\t([\d ]*)\n.*?\nCapEff:\t([0-9a-f]+)\n", re.S)


def of_thread(tid: int, uid: int, gid: int) -> Credentials:
    """The credentials of thread tid, whose fsuid and fsgid FUSE gave as uid and gid. A thread
    the daemon cannot look at (gone, or in a pid namespace it does not see: tid 0) counts as
    uid and gid with no groups and no capabilities: it can be given no more than that."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            found = _STATUS.search(f.read())
        user_ns = _user_ns(f"/proc/{tid}/ns/user")
        if found is None:
            raise ValueError("its status has no uids, gids, groups or capabilities")
        tgid, ruid, euid, fsuid, rgid, egid, fsgid, groups, caps = found.groups()
        creds = Credentials(uids=(int(ruid), int(euid), int(fsuid)), gids=(int(rgid), int(egid), int(fsgid)),
                            groups=tuple(int(g) for g in groups.split()), caps=int(caps, 16), user_ns=user_ns,
                            tgid=int(tgid))
    except (OSError, ValueError) as e:
        if tid:
            log.debug("thread %d: its credentials cannot be read (%s): uid %d, gid %d, nothing more", tid, e,
                      uid, gid)
        return _only(uid, gid)
    if (creds.fsuid, creds.fsgid) != (uid, gid):  # it changed them since it asked: trust neither
        return _only(uid, gid)
    return creds


def _only(uid: int, gid: int) -> Credentials:
    """A reader known by the ids FUSE gave alone: no groups, no capabilities, no user namespace."""
    return Credentials((uid, uid, uid), (gid, gid, gid), (), 0, 0)


def own() -> Credentials:
    """The credentials of the calling thread."""
    r, e, _ = os.getresuid()
    rg, eg, _ = os.getresgid()
    return Credentials((r, e, e), (rg, eg, eg), tuple(os.getgroups()), _caps()[0], _user_ns("/proc/self/ns/user"),
                       os.getpid())


def require_switching() -> None:
    """OSError unless this process can switch a thread's credentials: the syscalls' numbers
    for this machine, and CAP_SETUID and CAP_SETGID."""
    if _NUMBERS is None:
        raise OSError(95, f"switching a thread's credentials is not supported on {platform.machine()}")
    if ~_caps()[1] & (1 << CAP_SETUID | 1 << CAP_SETGID):
        raise OSError(1, "taking each reader's credentials needs CAP_SETUID and CAP_SETGID")


def _syscall(name: str, *args) -> int:
    if _NUMBERS is None:
        raise OSError(95, f"switching a thread's credentials is not supported on {platform.machine()}")
    result = _libc.syscall(_NUMBERS[name], *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")
    return result


def _capget() -> tuple[_CapHeader, ctypes.Array]:
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _syscall("capget", ctypes.byref(header), data)
    return header, data


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    for i in range(2):
        data[i].effective = effective >> (32 * i) & 0xFFFFFFFF
        data[i].permitted = permitted >> (32 * i) & 0xFFFFFFFF
        data[i].inheritable = inheritable >> (32 * i) & 0xFFFFFFFF
    _syscall("capset", ctypes.byref(header), data)


def _caps() -> tuple[int, int, int]:
    """The calling thread's effective, permitted and inheritable capabilities."""
    _, data = _capget()
    return tuple(getattr(data[0], k) | getattr(data[1], k) << 32 for k in ("effective", "permitted", "inheritable"))


def _setgroups(groups: tuple[int, ...]) -> None:
    array = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
    _syscall("setgroups", ctypes.c_size_t(len(groups)), array)


def _set_fs_id(name: str, value: int) -> None:
    """setfsuid(2) or setfsgid(2), which answer the previous id whatever happened: asked again
    (with -1, which changes nothing), to tell."""
    _syscall(name, value)
    if _syscall(name, -1) != value:
        raise OSError(1, f"{name}({value}) did not take")


class _Mine(NamedTuple):
    """The daemon's credentials, which every thread has outside assumed()."""

    fsuid: int
    fsgid: int
    groups: tuple[int, ...]
    caps: tuple[int, int, int]  # effective, permitted, inheritable


_mine: _Mine | None = None
_assuming = threading.local()


@contextlib.contextmanager
def assumed(creds: Credentials, extra_caps: int = 0) -> Iterator[None]:
    """The calling thread with creds' fsuid, fsgid, groups and those of its capabilities that
    count here (none, for a reader in another user namespace), plus extra_caps; the daemon's
    own again afterwards, or the daemon aborts. Not nested: a thread takes one reader's at a time."""
    global _mine
    if getattr(_assuming, "reader", False):
        raise RuntimeError("credentials assumed twice in one thread")
    if _mine is None:  # the process's, read in a thread that has taken no one's
        _mine = _Mine(_syscall("setfsuid", -1), _syscall("setfsgid", -1), tuple(os.getgroups()), _caps())
    _, permitted, inheritable = _mine.caps
    reader_caps = creds.caps if creds.user_ns == _INITIAL_USER_NS else 0
    _assuming.reader = True
    try:
        try:
            _setgroups(creds.groups)
            _set_fs_id("setfsgid", creds.fsgid)
            _set_fs_id("setfsuid", creds.fsuid)  # an fsuid other than 0 drops the file capabilities
            _capset((reader_caps | extra_caps) & permitted, permitted, inheritable)
        except BaseException:
            _restore(_mine)
            raise
        try:
            yield
        finally:
            _restore(_mine)
    finally:
        _assuming.reader = False


def _restore(mine: _Mine) -> None:
    effective, permitted, inheritable = mine.caps
    try:
        _capset(permitted, permitted, inheritable)  # always allowed: CAP_SETUID and CAP_SETGID for the way back
        _set_fs_id("setfsuid", mine.fsuid)
        _set_fs_id("setfsgid", mine.fsgid)
        _setgroups(mine.groups)
        _capset(effective, permitted, inheritable)
        if tuple(os.getgroups()) != mine.groups or _caps() != mine.caps:
            raise OSError(0, "the groups and capabilities read back are not the daemon's")
    except BaseException as e:
        log.critical("cannot return a thread to the daemon's credentials (%s): aborting", e)
        os.abort()
