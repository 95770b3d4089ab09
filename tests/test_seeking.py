"""lseek(2) on iterator files, as on /proc's seq_files: tell, rewind, skip ahead, no SEEK_END."""

from __future__ import annotations

import csv
import errno
import itertools
import json
import os
import random
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import run_iterfs
from helpers import ITERFS, iter_links_of, maps_part, rss_kb, settled, start_mount, stopped, without_gate_vma

pytestmark = pytest.mark.fuse

KEPT = 64 * 1024  # what an open keeps of what it served, as the README says


@pytest.fixture
def big_maps(child):
    """A child whose task_vma output is several times what an open keeps."""
    child.add_mappings(3000)
    return child


def test_tell_is_the_bytes_read(mount, big_maps):
    path = mount / f"task_vma/pid={big_maps.pid}"
    with stopped(big_maps), open(path, "rb", buffering=0) as f:
        read, sizes = 0, itertools.cycle((1, 7, 100, 4096, 70_000, 1, 200_000))
        while chunk := f.read(next(sizes)):
            read += len(chunk)
            assert f.tell() == read == os.lseek(f.fileno(), 0, os.SEEK_CUR)
        assert read > 3 * KEPT and f.tell() == read
    with open(path) as f:  # text mode: tell() through the decoder's snapshot
        line = f.readline()
        assert f.tell() == len(line.encode())


def test_seek_back_to_the_start_is_a_complete_walk(mount, big_maps):
    path = mount / f"task_vma/pid={big_maps.pid}"
    with stopped(big_maps) as maps, open(path, "rb") as f:
        first = f.read(3 * KEPT)  # far more than is kept: the start is gone
        f.seek(0)
        whole = f.read()
        f.seek(0)
        again = f.read()
    assert len(maps) > 3 * KEPT
    assert maps_part(whole.decode()) == maps == maps_part(again.decode())
    assert whole.startswith(first)


def test_seek_back_within_what_is_kept_is_the_same_walk(mount, big_maps):
    """A short rewind is served from memory: the bytes of the first walk, no new one."""
    path = mount / f"task_vma/pid={big_maps.pid}"
    with open(path, "rb", buffering=0) as f:
        first = f.read(2 * KEPT)
        started_over = _status(mount)["walks_started_over"]
        big_maps.add_mappings(50)  # a new walk would show them, and its bytes would shift
        for offset in (2 * KEPT - 100, KEPT + 1, 2 * KEPT - KEPT // 2):
            f.seek(offset)
            assert f.read(100) == first[offset:offset + 100]
        assert _status(mount)["walks_started_over"] == started_over
        f.seek(0)  # before what is kept: a new walk, with the new mappings in it
        assert f.read(2 * KEPT) != first
        assert _status(mount)["walks_started_over"] == started_over + 1


def test_a_seek_back_past_what_is_kept_is_a_new_snapshot(mount, big_maps):
    path = mount / f"task_vma/pid={big_maps.pid}"
    with open(path, "rb") as f:
        first = f.read()
        big_maps.add_mappings(10)
        with stopped(big_maps) as maps:
            f.seek(0)
            second = f.read()
    assert len(first) > 3 * KEPT
    assert maps_part(second.decode()) == maps  # the state of now, not of the first walk
    assert maps_part(first.decode()) != maps


def test_a_seek_ahead_reads_what_a_plain_read_reaches(mount, big_maps):
    path = mount / f"task_vma/pid={big_maps.pid}"
    with stopped(big_maps):
        plain = path.read_bytes()
        for offset in (1, 100, KEPT - 1, KEPT + 1, 2 * KEPT + 12_345, len(plain) - 10, len(plain), len(plain) + 10**6):
            with open(path, "rb") as f:
                f.seek(offset)
                assert f.read() == plain[offset:], offset
        with open(path, "rb") as f:  # ahead of what this open already read
            assert f.read(500) == plain[:500]
            f.seek(3 * KEPT)
            assert f.read(1000) == plain[3 * KEPT:3 * KEPT + 1000]
    assert maps_part(plain.decode()) == without_gate_vma(open(f"/proc/{big_maps.pid}/maps").read())


def test_reads_at_any_offset_in_any_order(mount, big_maps):
    """pread(2) at random offsets, back and forth, by several threads on one fd."""
    path = mount / f"task_vma/pid={big_maps.pid}"
    with stopped(big_maps):
        plain = path.read_bytes()
        fd = os.open(path, os.O_RDONLY)
        failures = []

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(60):
                offset, size = rng.randrange(len(plain) + 100), rng.choice((1, 333, 4096, 65536, 131072))
                got = os.pread(fd, size, offset)
                if got != plain[offset:offset + size]:
                    failures.append((offset, size, len(got)))

        try:
            threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)  # a hang detector
            assert not any(t.is_alive() for t in threads)
        finally:
            os.close(fd)
    assert not failures


@pytest.mark.parametrize("whence", [os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE], ids=["END", "DATA", "HOLE"])
@pytest.mark.parametrize("before", ["open", "fstat", "read", "read all", "stat"])
@pytest.mark.parametrize("where", ["iterfs", "proc"])  # /proc/net/unix: the ground truth
def test_seek_end_is_einval_and_leaves_the_position(mount, where, before, whence):
    path = mount / "unix/all" if where == "iterfs" else Path("/proc/net/unix")
    with open(path, "rb", buffering=0) as f:
        if before == "fstat":
            os.fstat(f.fileno())
        elif before == "read":
            f.read(100)
        elif before == "read all":
            f.read()
        elif before == "stat":
            f.read(100)
            os.stat(path)
        position = f.tell()
        with pytest.raises(OSError) as info:
            os.lseek(f.fileno(), 0, whence)
        assert info.value.errno == errno.EINVAL
        assert f.tell() == position
        f.seek(0)
        assert f.read(50).split()[0] == b"Num"  # still readable, from the header on


def test_a_readme_seeks_to_its_end(mount):
    path = mount / "task/README"
    with open(path, "rb") as f:
        assert f.seek(0, os.SEEK_END) == os.stat(path).st_size > 0


def test_sizes_stay_zero_and_stat_works_while_open(mount):
    path = mount / "task/all"
    with open(path, "rb") as f:
        f.read(10)
        assert os.stat(path).st_size == 0 == os.fstat(f.fileno()).st_size
    assert os.stat(path).st_size == 0


def test_csv_sniffer_then_seek_zero_parses_every_line(mount):
    """Sniff a sample, rewind, parse: what works on /proc/net/tcp works on tcp/all."""
    listeners = []
    try:
        for _ in range(40):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            listeners.append(s)
        ports = {s.getsockname()[1] for s in listeners}

        def sniffed(path):
            with open(path, newline="") as f:
                sample = f.read(4096)
                dialect = csv.Sniffer().sniff(sample[:sample.rfind("\n") + 1])
                f.seek(0)
                lines = []  # what the reader was given, line by line: the same walk it parsed
                rows = list(csv.reader((lines.append(line) or line for line in f), dialect))
                return dialect, rows, lines

        truth_dialect, truth_rows, _ = sniffed("/proc/net/tcp")
        dialect, rows, lines = sniffed(mount / "tcp/all")
    finally:
        for s in listeners:
            s.close()
    assert (dialect.delimiter, dialect.skipinitialspace) == (truth_dialect.delimiter, truth_dialect.skipinitialspace)
    assert len(rows) == len(lines) > 40 and all(line.endswith("\n") for line in lines)
    assert {len(r) for r in rows[1:]} == {len(r) for r in truth_rows[1:]}
    listening = {int(r[2].split()[0], 16) for r in rows[1:] if r[1].strip() == "0100007F"}
    assert ports <= listening


def test_a_pinned_iterator_seeks_the_same_and_keeps_its_link(tmp_path, bpffs, fuse_host, child):
    """Under pinned/: rewinds walk the link the open holds, even once the pin is gone."""
    child.add_mappings(3000)
    pin = bpffs / "vmas"
    run_iterfs("pin", f"task_vma/pid={child.pid}", str(pin), check=True)
    mnt = start_mount(tmp_path, ["--bpffs", str(bpffs)])
    try:
        path = mnt / "pinned" / str(pin).lstrip("/")
        with stopped(child) as maps, open(path, "rb") as f:
            first = f.read(2 * KEPT)
            pin.unlink()  # the open holds the link: its walks go on
            f.seek(0)  # before what is kept: a new walk
            whole = f.read()
            assert whole.startswith(first)
            f.seek(10)
            assert f.read(100) == whole[10:110]
            with pytest.raises(OSError) as info:
                f.seek(0, os.SEEK_END)
            assert info.value.errno == errno.EINVAL
        assert maps_part(whole.decode()) == maps
    finally:
        mnt.stop()


def test_thousands_of_seeks_back_leak_nothing(mount, big_maps):
    path = mount / f"task_vma/pid={big_maps.pid}"
    path.read_bytes()  # program loaded, caches warm
    links = settled(lambda: iter_links_of(mount.pid), 0)  # once that open's release has come
    fds = mount.fd_count()
    started_over = _status(mount)["walks_started_over"]
    with open(path, "rb", buffering=0) as f:
        f.read(3 * KEPT)
        for _ in range(2000):  # each rewinds past what is kept: a new walk
            f.seek(0)
            assert f.read(1)
            f.seek(2 * KEPT)
            assert len(f.read(10)) == 10
        assert iter_links_of(mount.pid) == links + 1  # one link for the open, however many walks
        assert mount.fd_count() == fds + 2  # and one iterator fd at a time
        assert _status(mount)["walks_started_over"] == started_over + 2000
    assert settled(lambda: iter_links_of(mount.pid), links) == links
    assert settled(mount.fd_count, fds) == fds
    assert _status(mount)["walks_started_over"] == started_over + 2000  # counted after the close too


def _status(mount) -> dict:
    return json.loads((mount / ".iterfs" / "status").read_text())


def test_a_seek_far_ahead_keeps_memory_bounded(mount):
    """Skipping to the end of ksym/all (megabytes) holds no more than a read's worth."""
    path = mount / "ksym/all"
    size = len(path.read_bytes())
    assert size > 1 << 20
    before = rss_kb(mount.pid)
    with open(path, "rb") as f:
        for _ in range(5):  # each seek(0) is a new walk; BPF programs may come and go meanwhile
            f.seek(size - 10)
            f.read()
            f.seek(0)
            assert f.read(10)
    grown = rss_kb(mount.pid) - before
    assert grown < size // 1024 // 2, f"the daemon grew by {grown} KB skipping over {size // 1024} KB"


def test_head_then_tail_of_the_same_open(mount, big_maps):
    """dd with skip= seeks the open file forward: the bytes a plain read gives there."""
    path = mount / f"task_vma/pid={big_maps.pid}"
    with stopped(big_maps):
        plain = path.read_bytes()
        out = subprocess.run(["dd", f"if={path}", "bs=4096", "skip=20", "count=3", "status=none"],
                             capture_output=True, check=True).stdout
    assert out == plain[20 * 4096:23 * 4096]


def test_a_daemon_that_cannot_read_callers_syscalls_says_so_once(tmp_path, fuse_host):
    """Without CAP_SYS_PTRACE the daemon cannot tell lseek from stat: SEEK_END gives 0, as on
    any file of size 0, and one log line says why."""
    mnt = start_mount(tmp_path, command=["setpriv", "--bounding-set=-sys_ptrace", str(ITERFS)])
    try:
        for _ in range(3):
            with open(mnt / "task/all", "rb", buffering=0) as f:
                f.read(100)
                assert f.seek(0, os.SEEK_END) == 0 == f.tell()
                assert f.read(50).split()[0] == b"tgid"  # read again from the start
        assert mnt.log.read_text().count("lseek(SEEK_END) on open files gives 0 instead of EINVAL") == 1
    finally:
        mnt.stop()
