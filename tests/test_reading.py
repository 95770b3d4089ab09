"""How files read: fresh walks per open, real readers, interleaved and concurrent opens."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from helpers import maps_part, proc_fds, stopped, task_file_lines, task_lines

pytestmark = pytest.mark.fuse


def test_every_open_is_a_fresh_walk(mount, child, tmp_path):
    path = mount / f"task_file/pid={child.pid}"
    with open(path, "rb") as first:
        before = task_file_lines(first.read().decode())
        later = tmp_path / "opened-later"
        later.write_text("")
        fd = child.open_file(later)
        assert first.read() == b""  # the first walk is over
    after = task_file_lines(path.read_text())
    assert fd not in {r["fd"] for r in before}
    assert {r["fd"]: r["path"] for r in after}[fd] == str(later)


def test_two_opens_read_byte_by_byte_in_turn_are_both_complete(mount, child):
    path = mount / f"task_file/pid={child.pid}"
    truth = proc_fds(child.pid)
    a, b = os.open(path, os.O_RDONLY), os.open(path, os.O_RDONLY)
    try:
        out = {a: bytearray(), b: bytearray()}
        live = [a, b]
        while live:
            for fd in list(live):
                byte = os.read(fd, 1)
                if byte:
                    out[fd] += byte
                else:
                    live.remove(fd)
    finally:
        os.close(a)
        os.close(b)
    for data in out.values():
        assert {r["fd"]: r["path"] for r in task_file_lines(data.decode())} == truth


@pytest.mark.parametrize(
    "reader",
    [
        ["cat"],
        ["dd", "bs=1", "status=none"],
        ["dd", "bs=7", "status=none"],
        ["python3", "-c", "import sys; sys.stdout.write(open(sys.argv[1]).read())"],
    ],
    ids=["cat", "dd-bs1", "dd-bs7", "python"],
)
def test_real_readers_get_proc_maps(mount, child, reader):
    path = str(mount / f"task_vma/pid={child.pid}")
    args = [*reader, f"if={path}"] if reader[0] == "dd" else [*reader, path]
    with stopped(child) as maps:
        ours = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert maps_part(ours) == maps


def test_head_and_grep(mount, child):
    path = str(mount / f"task_vma/pid={child.pid}")
    with stopped(child) as maps:
        full = open(path).read()
    with stopped(child):
        head = subprocess.run(["head", "-c", "100", path], capture_output=True, check=True).stdout
    assert head == full.encode()[:100]
    grep = subprocess.run(["grep", "-F", "[stack]", path], capture_output=True, text=True, check=True).stdout
    assert maps_part(grep) == "".join(line + "\n" for line in maps.splitlines() if line.endswith("[stack]"))


def test_large_output_streams_whole(mount):
    """task_vma/all spans many kernel reads and FUSE reads; every line must arrive whole."""
    text = mount.read("task_vma/all")
    lines = text.splitlines()
    assert len(text) > 64 * 1024 and text.endswith("\n")
    pids = {int(line.split(" ", 1)[0]) for line in lines}
    assert os.getpid() in pids
    own = [line.split(" ", 1)[1] for line in lines if line.startswith(f"{os.getpid()} ")]
    assert len(own) > 10 and all("-" in line.split()[0] for line in own)


def test_idle_open_does_not_delay_sixteen_readers(mount, child):
    idle = os.open(mount / "task_file/all", os.O_RDONLY)  # opened, never read
    results, errors = [], []

    def reader():
        try:
            results.append(task_file_lines((mount / "task_file/all").read_text()))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)  # a hang detector, not a speed requirement
        assert not any(t.is_alive() for t in threads), "readers hung behind an idle open"
    finally:
        os.close(idle)
    assert not errors
    assert len(results) == 16
    truth = proc_fds(child.pid)
    for rows in results:
        assert {r["fd"]: r["path"] for r in rows if r["tgid"] == child.pid} == truth


def test_readme_is_a_regular_file_with_a_size(mount):
    st = os.stat(mount / "task/README")
    assert st.st_size == len((mount / "task/README").read_bytes()) > 0
    st = os.stat(mount / "task/all")
    assert st.st_size == 0 and oct(st.st_mode & 0o777) == "0o444"
    assert task_lines(mount.read("task/all"))
