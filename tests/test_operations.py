"""The Operations class called in-process: errno mapping, handles, lookup counts."""

from __future__ import annotations

import errno
import os
import random
import threading
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from helpers import iter_links_of, proc_fds, stopped, task_file_lines
from iterfs import params as params_mod
from iterfs.catalog import Catalog
from iterfs.fs import IterFS
from iterfs.iterator import KEEP_BYTES, KERNEL_READ, READ_AHEAD, Iterators, Stream
from iterfs.tree import Tree

pytestmark = pytest.mark.bpf


@pytest.fixture
def ops():
    catalog = Catalog()
    operations = IterFS(Tree(catalog), Iterators(catalog))
    yield operations
    operations.close()


def run(fn, *args):
    return trio.run(fn, *args)


def _fuse_errno(fn, *args) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        run(fn, *args)
    return info.value.errno


def test_lookup_open_read_release(ops, child):
    async def cat():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task_file", None)
        f = await ops.lookup(d.st_ino, f"pid={child.pid}".encode(), None)
        info = await ops.open(f.st_ino, os.O_RDONLY, None)
        assert info.direct_io and not info.nonseekable  # seekable, as /proc files are
        data, off = b"", 0
        while chunk := await ops.read(info.fh, off, 4096):
            data += chunk
            off += len(chunk)
        again = await ops.read(info.fh, 0, 100)  # a re-read within the kept window
        await ops.release(info.fh)
        return data, again

    data, again = run(cat)
    assert {r["fd"]: r["path"] for r in task_file_lines(data.decode())} == proc_fds(child.pid)
    assert again == data[:100]


def test_write_access_is_eacces(ops):
    async def attempt():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        f = await ops.lookup(d.st_ino, b"all", None)
        await ops.open(f.st_ino, os.O_WRONLY, None)

    assert _fuse_errno(attempt) == errno.EACCES


def test_unknown_inode_and_names_are_enoent(ops):
    assert _fuse_errno(ops.getattr, 999999, None) == errno.ENOENT
    assert _fuse_errno(ops.lookup, pyfuse3.ROOT_INODE, b"nope", None) == errno.ENOENT


@pytest.mark.parametrize("bug", [RuntimeError("boom"), KeyError("handle")], ids=["RuntimeError", "KeyError"])
def test_unexpected_errors_become_eio_with_their_traceback(ops, monkeypatch, caplog, bug):
    """A KeyError too: a missing handle or dict key is a bug, not a quiet ENOENT."""
    def explode(*args):
        raise bug

    monkeypatch.setattr(ops._tree, "lookup", explode)
    assert _fuse_errno(ops.lookup, pyfuse3.ROOT_INODE, b"task", None) == errno.EIO
    assert any(r.exc_info and r.exc_info[1] is bug for r in caplog.records)


def test_release_closes_the_link(ops):
    async def open_one():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        f = await ops.lookup(d.st_ino, b"all", None)
        return (await ops.open(f.st_ino, os.O_RDONLY, None)).fh

    links = iter_links_of(os.getpid())  # ops serves in this process: its links are ours
    fh = run(open_one)
    assert iter_links_of(os.getpid()) == links + 1
    run(ops.release, fh)
    assert iter_links_of(os.getpid()) == links


def test_forget_drops_parameter_inodes(ops, child):
    async def look():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        return (await ops.lookup(d.st_ino, f"pid={child.pid}".encode(), None)).st_ino

    inode = run(look)
    run(ops.getattr, inode, None)
    run(ops.forget, [(inode, 1)])
    assert _fuse_errno(ops.getattr, inode, None) == errno.ENOENT


def test_lookups_of_names_that_do_not_exist_leave_no_nodes(ops):
    async def look_up_many():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        for pid in range(4294960000, 4294961000):
            with pytest.raises(pyfuse3.FUSEError):
                await ops.lookup(d.st_ino, f"pid={pid}".encode(), None)
        for name in (b"pid=abc", b"nosuch=1", b"README2"):
            with pytest.raises(pyfuse3.FUSEError):
                await ops.lookup(d.st_ino, name, None)

    before = ops._tree.size
    run(look_up_many)
    assert ops._tree.size == before


def test_a_targets_own_files_never_look_at_the_objects_directories(ops, monkeypatch, child):
    def refresh(*args):
        raise AssertionError("the objects directories were looked at")

    monkeypatch.setattr(Catalog, "refresh_views", refresh)

    async def cat():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        f = await ops.lookup(d.st_ino, f"pid={child.pid}".encode(), None)
        await ops.getattr(f.st_ino, None)
        info = await ops.open(f.st_ino, os.O_RDONLY, None)
        data = await ops.read(info.fh, 0, 4096)
        await ops.release(info.fh)
        return data

    assert str(child.pid).encode() in run(cat)


def test_attributes_are_not_cached_while_an_iterator_file_is_open(ops):
    """What lets lseek(SEEK_END) reach getattr(): attr_timeout 0 from the first open to the last close."""
    caller = SimpleNamespace(pid=threading.get_native_id(), uid=0, gid=0)  # this thread, in read(2) of /proc

    async def opens_and_closes():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        f = await ops.lookup(d.st_ino, b"all", None)
        timeouts = [f.attr_timeout]
        a = await ops.open(f.st_ino, os.O_RDONLY, None)
        b = await ops.open(f.st_ino, os.O_RDONLY, None)
        timeouts.append((await ops.getattr(f.st_ino, caller)).attr_timeout)
        await ops.release(a.fh)
        timeouts.append((await ops.getattr(f.st_ino, caller)).attr_timeout)  # b is still open
        await ops.release(b.fh)
        timeouts.append((await ops.getattr(f.st_ino, caller)).attr_timeout)
        readme = await ops.lookup(d.st_ino, b"README", None)
        r = await ops.open(readme.st_ino, os.O_RDONLY, None)
        timeouts.append((await ops.getattr(readme.st_ino, caller)).attr_timeout)  # not an iterator
        await ops.release(r.fh)
        return timeouts

    first, both, one, none, readme = run(opens_and_closes)
    assert first > 0 and both == one == 0 and none == first and readme > 0


def test_access_is_answered_from_the_mode_bits(ops):
    async def modes():
        d = await ops.lookup(pyfuse3.ROOT_INODE, b"task", None)
        f = await ops.lookup(d.st_ino, b"all", None)
        return [await ops.access(inode, mode, None) for inode in (f.st_ino, d.st_ino)
                for mode in (os.R_OK, os.X_OK, os.R_OK | os.X_OK)]

    assert run(modes) == [True, False, False, True, True, True]


@pytest.fixture
def stopped_maps(child):
    """A stopped child's task_vma/pid=P in one walk (several times what an open keeps), and its params."""
    child.add_mappings(3000)
    params = params_mod.parse("task_vma", f"pid={child.pid}")
    iterators = Iterators(Catalog())
    try:
        with stopped(child):
            walk = iterators.open("task_vma", params)
            plain = b"".join(walk)
            iterators.release(walk)
            assert len(plain) > 3 * KEEP_BYTES
            yield iterators, params, plain
    finally:
        iterators.close()


def test_a_stream_serves_any_offset_from_bounded_memory(stopped_maps):
    iterators, params, plain = stopped_maps
    stream = Stream(iterators.open("task_vma", params))
    sizes = (1, 333, 4096, 131072)
    bound = KEEP_BYTES + max(sizes) + READ_AHEAD + KERNEL_READ  # as the README says
    rng = random.Random(14)
    try:
        for _ in range(300):
            offset, size = rng.randrange(len(plain) + 1000), rng.choice(sizes)
            assert stream.read_at(offset, size) == plain[offset:offset + size], (offset, size)
            assert stream.held <= bound
    finally:
        stream.close()
        iterators.release(stream.iterator)


def test_a_stream_starts_over_only_before_what_it_keeps(stopped_maps):
    iterators, params, plain = stopped_maps
    end = len(plain)
    stream = Stream(iterators.open("task_vma", params))
    try:
        assert stream.read_at(end - 10, 10) == plain[-10:]  # read on to near the end
        assert stream.read_at(end + 10**6, 10) == b""  # beyond the end: nothing, and nothing lost
        assert stream.read_buffered(end - 1000, 100) == plain[end - 1000:end - 900]  # kept: no kernel read
        assert stream.iterator.started_over == 0
        assert stream.read_buffered(0, 10) is None  # gone: a kernel read, not for an event loop
        assert stream.read_at(0, 10) == plain[:10]
        assert stream.iterator.started_over == 1
    finally:
        stream.close()
        iterators.release(stream.iterator)
