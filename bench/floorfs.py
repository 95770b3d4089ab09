"""The FUSE floor: a minimal pyfuse3 filesystem serving one constant file, opened like iterfs files.

    python floorfs.py MOUNTPOINT SIZE    prints "ready" once mounted; SIGTERM unmounts
"""

import errno
import signal
import stat
import sys

import pyfuse3
import trio

FILE_INODE = pyfuse3.ROOT_INODE + 1


class Floor(pyfuse3.Operations):
    def __init__(self, size: int):
        super().__init__()
        self.data = b"x" * (size - 1) + b"\n"

    def _attr(self, inode):
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_mode = (stat.S_IFDIR | 0o555) if inode == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o444)
        attr.entry_timeout = attr.attr_timeout = 300
        return attr

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != b"file":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, direct_io=True)

    async def read(self, fh, off, size):
        return self.data[off:off + size]

    async def release(self, fh):
        pass


async def main():
    async with trio.open_nursery() as nursery:
        async def stop():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return
        nursery.start_soon(stop)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    pyfuse3.init(Floor(int(sys.argv[2])), sys.argv[1], {"fsname=floorfs", "ro"})
    print("ready", flush=True)
    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)
