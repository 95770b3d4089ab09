"""What the thread behind a FUSE request is doing, as /proc/TID/syscall tells it.

FUSE keeps a file's position in the kernel: lseek(2) with SEEK_SET or SEEK_CUR
never reaches the daemon. SEEK_END does, as a GETATTR for the file's size, but
pyfuse3 does not hand on the file handle that tells it apart from a stat(2).
The caller waits in the kernel until the daemon answers, so the syscall it is
in says which of the two the request is.
"""

from __future__ import annotations

import os
import platform

SEEK_END = os.SEEK_END
# lseek(2)'s number in the syscall table of each architecture with its own table
_LSEEK = {"x86_64": 8, "aarch64": 62, "riscv64": 62, "loongarch64": 62,
          "ppc64le": 19, "ppc64": 19, "s390x": 19}.get(platform.machine())


def seeking_to_end(tid: int) -> bool:
    """Whether thread tid (in the daemon's pid namespace) is in lseek(fd, off, SEEK_END)."""
    if _LSEEK is None or not tid:
        return False
    try:
        with open(f"/proc/{tid}/syscall", "rb") as f:
            fields = f.read().split()
    except OSError:  # gone, or no such file on this kernel
        return False
    # "NR ARG0 ... ARG5 SP PC" while in a syscall; "running" or "-1 SP PC" otherwise
    return len(fields) >= 4 and fields[0] == str(_LSEEK).encode() and int(fields[3], 16) == SEEK_END
