"""The Operations class called in-process: errno mapping, handles, lookup counts."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest
import trio

from helpers import iter_links, proc_fds, task_file_lines
from iterfs.catalog import Catalog
from iterfs.fs import IterFS
from iterfs.iterator import Iterators
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

    links = iter_links()
    fh = run(open_one)
    assert iter_links() == links + 1
    run(ops.release, fh)
    assert iter_links() == links


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
