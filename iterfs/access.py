"""Who may read what: for each target, the rule the kernel applies to its own view of the data.

    grant(target, creds, ...)  how an open by a reader with creds is served, or Denied
      as the daemon   task, cgroup: /proc/PID/status and /sys/fs/cgroup are world-readable
                      (the reader's namespaces are applied by namespaces.py)
      ptrace          task_file, task_vma: the program shows only the tasks the reader
                      may ptrace-read, from a policy keyed by the reading thread
      as the reader   tcp, udp, unix, netlink, ipv6_route, ksym, pins: the iterator is made
                      and read with the reader's credentials, and the kernel decides
                      (%pK, kallsyms_show_value(), bpffs's permissions)
      privileged      the rest: the capability the kernel's own view needs, else Denied
    ReaderPolicy(map_fd, creds)  the policy a ptrace-filtering program reads, stored for
                               the reading thread around the reads a request needs
    as_reader(creds, call, p)  a look at bpffs with the reader's credentials (pinned/)
    mode(...)                  the file mode that says the same to ls

Only a shared mount (--allow-other) asks: the kernel lets no one but root into
a private one, whose readers are served as the daemon.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Iterator as Iter

from . import _libbpf, credentials
from .credentials import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYSLOG, Credentials
from .errors import NotFound

log = logging.getLogger(__name__)

# struct reader_policy, bpf/reader.bpf.h: flags, tgid, fsuid, fsgid, user_ns, pad, caps
POLICY = struct.Struct("=6IQ")
POLICY_MAP = "reader_policy"  # the map of it in a program that applies the ptrace rule
READER_KNOWN, READER_ALL, READER_ADDRESSES, READER_HEADER = 1, 2, 4, 8
READER_DEFAULT_KEY = 0xFFFFFFFF  # the policy of a thread that stored none: only iterfs pin stores one
# what bpf(BPF_ITER_CREATE) itself needs on kernels that refuse unprivileged bpf() (before 6.5),
# added while an iterator fd is made for a reader (not while it is read): no check of a view uses it
ITER_CREATE_CAPS = 1 << CAP_BPF


class How(enum.Enum):
    AS_DAEMON = "as the daemon"
    PTRACE = "the tasks it may ptrace-read"
    AS_READER = "with the reader's credentials"


class Denied(PermissionError):
    """What the kernel's own view of the data would refuse this reader: EACCES, and why."""

    def __init__(self, target: str, why: str):
        super().__init__(errno.EACCES, f"{target}: {why}")
        self.target = target


@dataclass(frozen=True)
class _Privileged:
    why: str  # the kernel's view that needs it

    def allows(self, creds: Credentials) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class _Capability(_Privileged):
    caps: tuple[int, ...] = ()

    def allows(self, creds: Credentials) -> bool:
        return creds.capable(*self.caps)


@dataclass(frozen=True)
class _RootFile(_Privileged):
    def allows(self, creds: Credentials) -> bool:
        return creds.reads_root_file()


_BPFTOOL = _Capability("bpftool's listings need CAP_SYS_ADMIN (BPF_*_GET_NEXT_ID)", (CAP_SYS_ADMIN,))
_KERNEL_MEMORY = _Capability("reading kernel memory through BPF needs CAP_PERFMON or CAP_SYS_ADMIN",
                             (CAP_PERFMON, CAP_SYS_ADMIN))
RULES: dict[str, How | _Privileged] = {
    "task": How.AS_DAEMON, "cgroup": How.AS_DAEMON,
    "task_file": How.PTRACE, "task_vma": How.PTRACE,
    **{net: How.AS_READER for net in ("tcp", "udp", "unix", "netlink", "ipv6_route")},
    "ksym": How.AS_READER,
    "kmem_cache": _RootFile("/proc/slabinfo is root's, mode 0400"),
    "dmabuf": _RootFile("debugfs's dma_buf/bufinfo is root's alone"),
    **{bpf: _BPFTOOL for bpf in ("bpf_map", "bpf_prog", "bpf_link", "bpf_map_elem", "bpf_sk_storage_map",
                                 "sockmap")},
}
# a target iterfs has no program of its own for: the generic program prints object addresses
_UNKNOWN = _Capability("the generic program prints kernel addresses: CAP_SYS_ADMIN", (CAP_SYS_ADMIN,))


@dataclass(frozen=True)
class Grant:
    """How one open is served: the credentials its iterator fds are made and read with (None:
    the daemon's), and whose ptrace rights a program with the policy map applies (None: the
    daemon's reader, who sees every task as the daemon does)."""

    assume: Credentials | None
    subject: Credentials | None


def rule(target: str, view_rule: str | None = None, view: bool = False, fields: bool = False) -> How | _Privileged:
    """The rule for target's files: a view's is the one its object declares (view_rule), or
    privileged; a fields= file reads raw members: privileged too."""
    if fields:
        return _KERNEL_MEMORY
    if view:
        return RULES.get(view_rule, _KERNEL_MEMORY) if view_rule else _KERNEL_MEMORY
    return RULES.get(target, _UNKNOWN)


def grant(target: str, creds: Credentials | None, daemon: Credentials, view_rule: str | None = None,
          view: bool = False, fields: bool = False, pin: bool = False) -> Grant:
    """How an open of target's file by a reader with creds is served (None: a private mount's
    reader, served as the daemon); Denied saying why, where the kernel would refuse it."""
    if creds is None:
        return Grant(None, None)
    found = How.AS_READER if pin else rule(target, view_rule, view, fields)
    if isinstance(found, _Privileged):
        if not found.allows(creds):
            raise Denied(target, found.why)
        return Grant(None, creds)
    if found is How.AS_READER and not creds.covers(daemon):
        return Grant(creds, creds)
    return Grant(None, creds)


def policy(creds: Credentials | None) -> bytes:
    """struct reader_policy for creds: __ptrace_may_access(PTRACE_MODE_READ_FSCREDS) for a reader
    without CAP_SYS_PTRACE is applied by the program from it. None: a reader served as the
    daemon (a private mount's), who sees every task and its addresses, as before."""
    if creds is None:
        return POLICY.pack(READER_KNOWN | READER_ALL | READER_ADDRESSES, 0, 0, 0, 0, 0, 0)
    flags = READER_KNOWN
    if creds.capable(CAP_SYS_PTRACE):
        flags |= READER_ALL
    if show_addresses(creds):
        flags |= READER_ADDRESSES
    return POLICY.pack(flags, creds.tgid, creds.fsuid, creds.fsgid, creds.user_ns, 0, creds.caps)


def show_addresses(creds: Credentials) -> bool:
    """kallsyms_show_value(), kernel/ksyms_common.c: whether /proc/kallsyms shows creds addresses."""
    restrict = _sysctl("kernel/kptr_restrict")
    if restrict == 0 and _sysctl("kernel/perf_event_paranoid") <= 1:
        return True
    return restrict <= 1 and creds.capable(CAP_SYSLOG)


def _sysctl(name: str) -> int:
    try:
        with open(f"/proc/sys/{name}", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2  # unknown: the strictest that still counts capabilities


def declared_rule(rule: str | None, maps: tuple[str, ...]) -> str | None:
    """The rule a user's object declares its views safe under (objects.RULE_SECTION), if iterfs
    can serve it: a ptrace rule needs the object to read the policy (reader.bpf.h). Any
    target's rule, whatever the views' targets: its author (root) says what they show.
    ValueError saying why not."""
    if rule is None:
        return None
    if rule not in RULES or isinstance(RULES[rule], _Privileged):
        raise ValueError(f"declares the rule of {rule!r}, which is no target every reader may read")
    if RULES[rule] is How.PTRACE and POLICY_MAP not in maps:
        raise ValueError(f"declares the rule of {rule!r} but has no map {POLICY_MAP} (bpf/reader.bpf.h) "
                         "to apply it with")
    return rule


def needs_credentials(target: str, view: bool = False, fields: bool = False, pin: bool = False) -> bool:
    """Whether how target's file is served depends on who reads it (not for task and cgroup,
    which every reader gets as the daemon would show it)."""
    return view or fields or pin or rule(target) is not How.AS_DAEMON


def privileged(target: str | None) -> bool:
    """Whether target's own files are for privileged readers only (None: no target's)."""
    return target is not None and isinstance(rule(target), _Privileged)


def may_read(target: str, creds: Credentials | None, view_rule: str | None = None, view: bool = False,
             fields: bool = False) -> bool:
    """Whether a reader with creds may read target's file at all (None: a private mount's reader)."""
    found = rule(target, view_rule, view, fields)
    return creds is None or not isinstance(found, _Privileged) or found.allows(creds)


def mode(target: str, view_rule: str | None = None, view: bool = False, fields: bool = False) -> int:
    """A file's permission bits: 0444 where every reader gets its own view, 0400 where only
    privileged readers get one."""
    return 0o400 if isinstance(rule(target, view_rule, view, fields), _Privileged) else 0o444


class ReaderPolicy:
    """One open's reader policy, for the program whose map map_fd is. The map fd is the load's,
    valid until close() calls done(), which lets the load go."""

    def __init__(self, map_fd: int, creds: Credentials | None, done: Callable[[], None]):
        self._fd, self._done = map_fd, done
        self._value = policy(creds)
        # the same before a walk's first line: the program prints the header with it
        self._first = _FLAGS.pack(_FLAGS.unpack_from(self._value)[0] | READER_HEADER) + self._value[_FLAGS.size:]

    @contextlib.contextmanager
    def stored(self, first: bool) -> Iter[None]:
        """The policy under the calling thread's id while it reads: the program finds it there.
        first: the walk has shown nothing yet (a header goes before its first line)."""
        key = _KEY.pack(threading.get_native_id())
        _libbpf.map_update(self._fd, key, self._first if first else self._value)
        try:
            yield
        finally:
            try:
                _libbpf.map_delete(self._fd, key)
            except OSError as e:  # the next read by this thread stores its own policy first
                log.error("cannot delete a reader policy of thread %d: %s", threading.get_native_id(), e)

    def close(self) -> None:
        if self._fd >= 0:
            self._fd = -1
            self._done()


def as_reader(creds: Credentials, call: Callable, path: str):
    """call(path) in this (worker) thread with the reader's credentials, for what the kernel's
    permissions on bpffs let it see of pinned/: Denied where they refuse, NotFound for nothing."""
    try:
        with credentials.assumed(creds):
            return call(path)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file in bpffs") from None
    except PermissionError as e:
        raise Denied("pinned", f"{path}: {e.strerror}, with the reader's credentials") from None


def default_entry() -> tuple[bytes, bytes]:
    """(key, value) of the daemon's policy for every thread that stores none (reader.bpf.h), in
    the loads of a private mount (every reader is served as the daemon) and in a load a pin
    outlives (read through bpffs, where no one stores a policy, it shows whoever the pin's own
    permissions let open it what the pinner's walk shows)."""
    return _KEY.pack(READER_DEFAULT_KEY), policy(None)


_KEY = _FLAGS = struct.Struct("=I")  # a key; the flags that begin a policy
