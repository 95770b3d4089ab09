"""A process with known open files and threads, driven by the tests over stdin.

At start it holds: a regular file, a deleted file, a pipe, a TCP listening
socket on loopback, a unix socketpair, an eventfd, and a file mapping.
Commands: "open PATH" -> "ok FD"; "seek FD POS" -> "ok"; "threads NAME..." -> "ok TID...";
"mappings N" -> "ok": N more anonymous mappings, one page each, that the kernel cannot merge.
"map PATH" -> "ok": a shared mapping of the file's first page; "memfd NAME" -> "ok": one of a new
memfd; "perf" -> "ok": a perf event's ring buffer, a mapping of an anon_inode file.
"""

import ctypes
import mmap
import os
import socket
import struct
import sys
import tempfile
import threading

PR_SET_NAME = 15
PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}  # syscall numbers
libc = ctypes.CDLL(None, use_errno=True)
keep = []

regular = tempfile.NamedTemporaryFile(prefix="iterfs-child-")
deleted = tempfile.NamedTemporaryFile(prefix="iterfs-deleted-", delete=False)
os.unlink(deleted.name)
keep += [regular, deleted, os.pipe()]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen()
keep += [listener, socket.socketpair(), os.eventfd(0)]
regular.write(b"x" * 8192)
regular.flush()
keep.append(mmap.mmap(regular.fileno(), 8192, prot=mmap.PROT_READ))


def named_thread(name: str, started: threading.Event, tids: list) -> None:
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    tids.append(threading.get_native_id())
    started.set()
    threading.Event().wait()


print("ready", flush=True)
for line in sys.stdin:
    command, _, rest = line.strip().partition(" ")
    if command == "open":
        f = open(rest, "rb")
        keep.append(f)
        print(f"ok {f.fileno()}", flush=True)
    elif command == "seek":
        fd, pos = map(int, rest.split())
        os.lseek(fd, pos, os.SEEK_SET)
        print("ok", flush=True)
    elif command == "threads":
        tids = []
        for name in rest.split():
            started = threading.Event()
            threading.Thread(target=named_thread, args=(name, started, tids), daemon=True).start()
            started.wait()
        print("ok " + " ".join(map(str, tids)), flush=True)
    elif command == "mappings":
        for _ in range(int(rest)):  # MAP_SHARED anonymous: each its own shmem object, never merged
            keep.append(mmap.mmap(-1, mmap.PAGESIZE))
        print("ok", flush=True)
    elif command == "map":
        with open(rest, "rb") as f:
            keep.append(mmap.mmap(f.fileno(), mmap.PAGESIZE, prot=mmap.PROT_READ))
        print("ok", flush=True)
    elif command == "memfd":
        fd = os.memfd_create(rest)
        os.ftruncate(fd, mmap.PAGESIZE)
        keep.append(mmap.mmap(fd, mmap.PAGESIZE))
        print("ok", flush=True)
    elif command == "perf":
        attr = bytearray(128)
        struct.pack_into("IIQ", attr, 0, 1, len(attr), 9)  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_DUMMY
        struct.pack_into("Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
        fd = libc.syscall(PERF_EVENT_OPEN[os.uname().machine], bytes(attr), 0, -1, -1, 0)
        if fd < 0:
            print(f"error perf_event_open: {os.strerror(ctypes.get_errno())}", flush=True)
        else:
            keep.append(mmap.mmap(fd, 2 * mmap.PAGESIZE))
            print("ok", flush=True)
    else:
        print(f"error unknown command {command!r}", flush=True)
