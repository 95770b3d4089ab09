"""What the thread behind a FUSE request is doing, as /proc/TID/syscall tells it.

FUSE keeps a file's position in the kernel: lseek(2) with SEEK_SET or SEEK_CUR
never reaches the daemon. SEEK_END, SEEK_DATA and SEEK_HOLE do, as a GETATTR
for the file's size, but pyfuse3 does not hand on the file handle that tells it
apart from a stat(2). The caller waits in the kernel until the daemon answers,
so the syscall it is in says which of the two the request is. Where the daemon
may not read that (no CAP_SYS_PTRACE, Yama's ptrace_scope 3, an LSM), every
GETATTR looks like a stat(2), and one warning says so.
"""

from __future__ import annotations

import logging
import os
import platform

log = logging.getLogger(__name__)

BY_SIZE = {os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE}  # the whences that ask for the size
# lseek(2)'s number in the syscall table of each architecture with its own table
_LSEEK = {"x86_64": 8, "aarch64": 62, "riscv64": 62, "loongarch64": 62,
          "ppc64le": 19, "ppc64": 19, "s390x": 19}.get(platform.machine())


_warned = False


def _warn_once(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("%s: lseek(SEEK_END) on open files gives 0 instead of EINVAL", why)


def seeking_by_size(tid: int) -> bool | None:
    """Whether thread tid (in the daemon's pid namespace) is in an lseek(2) whose whence
    needs the file's size: SEEK_END, SEEK_DATA or SEEK_HOLE. None while it is on a CPU."""
    if _LSEEK is None:
        _warn_once(f"lseek(2) has no syscall number iterfs knows on {platform.machine()}")
        return False
    if not tid:
        return False
    try:
        fd = os.open(f"/proc/{tid}/syscall", os.O_RDONLY | os.O_CLOEXEC)  # half the cost of open()
        try:
            fields = os.read(fd, 256).split()
        finally:
            os.close(fd)
    except PermissionError as e:  # it holds for every caller
        _warn_once(f"cannot read /proc/TID/syscall ({e.strerror}): without CAP_SYS_PTRACE, or where "
                   "Yama or an LSM forbids it")
        return False
    except OSError:  # gone, or no such file on this kernel
        return False
    if fields[:1] == [b"running"]:
        return None
    # "NR ARG0 ... ARG5 SP PC" while in a syscall, "-1 SP PC" outside one
    return len(fields) >= 4 and fields[0] == str(_LSEEK).encode() and int(fields[3], 16) in BY_SIZE
