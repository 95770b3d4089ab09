"""A kernel that refuses whole targets: listed, refused with the kernel's errno, said once.

This kernel may or may not refuse any target (tests/test_bpf_objects.py asks it); here
refusing_kernel.py answers EPERM as such a kernel does, so that what iterfs does then
is seen on every machine. Everything else is the real kernel, compared with bpftool.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from helpers import (ITERFS, REFUSING_ITERFS, bpftool_json, make_map, make_sk_storage_map, map_pin, refusing_env, settled,
                     start_mount, task_lines)

pytestmark = pytest.mark.fuse

REFUSED = "bpf_map_elem,sockmap,bpf_sk_storage_map"  # as on the machines that refuse them
REFUSED_AT_LOAD = "task_vma"  # the probe loads, the target's own program is refused


@pytest.fixture(scope="module")
def refusing(tmp_path_factory, fuse_host):
    mnt = start_mount(tmp_path_factory.mktemp("refusing"), ["--debug"], command=REFUSING_ITERFS,
                      env=refusing_env(REFUSED, REFUSED_AT_LOAD))
    yield mnt
    mnt.stop()


def _errno_of(path) -> int:
    with pytest.raises(OSError) as info:
        path.read_bytes()
    return info.value.errno


def _said(mnt, words: str) -> list[str]:
    """The log lines above debug level that contain words."""
    return [line for line in mnt.log.read_text().splitlines() if words in line and " DEBUG " not in line]


def test_refused_targets_are_listed_and_give_the_kernels_errno_said_once(refusing, bpffs):
    sockmap = make_map(bpffs, "sockmap", 4, 8, 4)
    storage = make_sk_storage_map(bpffs)
    assert {"sockmap", "bpf_sk_storage_map", "bpf_map_elem"} <= set(os.listdir(refusing.path))
    for _ in range(5):
        assert _errno_of(refusing / f"sockmap/map_id={sockmap}") == errno.EPERM
        assert _errno_of(refusing / f"bpf_sk_storage_map/map_id={storage}") == errno.EPERM
    for target in ("sockmap", "bpf_sk_storage_map"):
        said = _said(refusing, f"refuses every program for target {target} ")
        assert len(said) == 1 and "(EPERM)" in said[0] and "its files give EPERM" in said[0], said
        assert not _said(refusing, f"dump_{target}.bpf.o")  # nothing more per open
        readme = (refusing / target / "README").read_text()
        assert readme.startswith(f"{target}: refused by this kernel (EPERM).")
        assert "map_id=N" in readme  # what the files would hold is still there
    status = json.loads((refusing / ".iterfs/status").read_text())
    assert status["refused_targets"] == {"sockmap": "refused by this kernel (EPERM)",
                                         "bpf_sk_storage_map": "refused by this kernel (EPERM)"}
    assert status["errors"]["EPERM"] >= 10
    done = subprocess.run([str(ITERFS), "status", str(refusing.path)], capture_output=True, text=True, timeout=60)
    assert "sockmap: refused by this kernel (EPERM)" in done.stdout.splitlines(), done.stdout
    assert "bpf_map_elem: served through bpf_map, since this kernel refuses its own programs" in done.stdout
    # a map of the wrong type, or none, is still ENOENT: names are checked before the kernel is asked
    assert _errno_of(refusing / "sockmap/map_id=4294967295") == errno.ENOENT


def test_iterfs_targets_says_which_targets_are_refused(fuse_host):
    done = subprocess.run([*REFUSING_ITERFS, "targets"], capture_output=True, text=True,
                          env=refusing_env(REFUSED), timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:] if line}
    assert rows["sockmap"][1] == rows["bpf_sk_storage_map"][1] == "refused"
    assert rows["bpf_map_elem"][1] == "yes" and rows["task"][1] == "yes"
    assert "sockmap: refused by this kernel (EPERM): its files give EPERM" in done.stdout
    assert "bpf_map_elem: its own programs are refused by this kernel (EPERM): served through bpf_map" \
        in done.stdout


def test_a_program_refused_at_load_gives_eperm_once_and_the_rest_reads(refusing):
    for _ in range(5):
        assert _errno_of(refusing / f"task_vma/pid={os.getpid()}") == errno.EPERM
    said = _said(refusing, "the kernel refused program dump_task_vma")
    assert len(said) == 1 and "(EPERM)" in said[0], said
    assert task_lines(refusing.read(f"task/pid={os.getpid()}"))[0]["tgid"] == os.getpid()


@pytest.mark.parametrize("kind", ["hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "array", "percpu_array"])
def test_bpf_map_elem_is_served_through_bpf_map_and_matches_bpftool(refusing, mount, bpffs, kind):
    map_id = make_map(bpffs, kind, 4, 12, 8)
    for key, value in [(1, "01 02 03 04 05 06 07 08 09 0a 0b 0c"), (7, "ff 00 ff 00 ff 00 ff 00 aa bb cc dd")]:
        subprocess.run(["bpftool", "map", "update", "id", str(map_id), "key", *f"{key} 0 0 0".split(),
                        "value", "hex", *value.split()], check=True)
    expected = {_bpftool_line(element) for element in bpftool_json("map", "dump", "id", str(map_id))}
    walked = (refusing / f"bpf_map_elem/map_id={map_id}").read_text()
    assert set(walked.splitlines()) == expected and walked.endswith("\n")
    assert walked == (mount / f"bpf_map_elem/map_id={map_id}").read_text()  # as the target's own program
    assert (refusing / "bpf_map_elem/README").read_text() == (mount / "bpf_map_elem/README").read_text()
    status = json.loads((refusing / ".iterfs/status").read_text())
    assert status["served_through"] == {"bpf_map_elem": "bpf_map"} and "bpf_map_elem" not in status["refused_targets"]


def test_the_walk_of_a_map_lets_the_map_go(refusing, bpffs):
    """A load made for one map holds that map: it is closed once its open has its link."""
    map_id = make_map(bpffs, "hash", 4, 8, 4)
    with open(refusing / f"bpf_map_elem/map_id={map_id}", "rb") as f:
        f.read()
    map_pin(bpffs, map_id).unlink()
    gone = lambda: subprocess.run(["bpftool", "map", "show", "id", str(map_id)], capture_output=True).returncode
    assert settled(gone, 255) != 0


def _bpftool_line(element: dict) -> str:
    """bpftool map dump's element as one line: bytes as %02x, two spaces after every 8th."""
    def hex_(data):
        return "".join(f"{int(b, 16):02x}" + ("  " if i % 8 == 7 else " ") for i, b in enumerate(data)).rstrip()
    if "values" in element:  # per-CPU
        return f"key: {hex_(element['key'])}" + "".join(
            f"  value (CPU {v['cpu']:02d}): {hex_(v['value'])}" for v in element["values"])
    return f"key: {hex_(element['key'])}  value: {hex_(element['value'])}"


def test_a_walked_map_larger_than_one_kernel_read_is_e2big_with_a_reason(refusing, bpffs):
    import ctypes
    import struct

    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    map_id = make_map(bpffs, "hash", 4, 8, 2000)
    fd = libbpf.bpf_map_get_fd_by_id(map_id)
    try:
        for key in range(2000):  # 2000 lines of 49 bytes: three times the buffer
            assert libbpf.bpf_map_update_elem(fd, struct.pack("I", key), struct.pack("Q", key), 0) == 0
    finally:
        os.close(fd)
    assert _errno_of(refusing / f"bpf_map_elem/map_id={map_id}") == errno.E2BIG
    said = _said(refusing, "larger than the kernel's read buffer")
    assert said and "refuses bpf_map_elem programs" in said[-1], said


def test_fields_of_a_refused_target_give_the_kernels_errno(refusing, bpffs):
    sockmap = make_map(bpffs, "sockmap", 4, 8, 4)
    elems = make_map(bpffs, "array", 4, 8, 2)
    assert _errno_of(refusing / f"sockmap/fields=sk.sk_num/map_id={sockmap}") == errno.EPERM
    # served through bpf_map's program, but fields are a program of the target's own
    assert _errno_of(refusing / f"bpf_map_elem/fields=map.id/map_id={elems}") == errno.EPERM
    assert _errno_of(refusing / f"task_vma/fields=vma.vm_start/pid={os.getpid()}") == errno.EPERM
    readme = (refusing / "sockmap/fields=sk.sk_num/README").read_text()
    assert readme.startswith("sockmap: refused by this kernel (EPERM).") and "sk.sk_num" in readme
    assert (refusing / "task/fields=pid/all").read_text().startswith("pid\n")  # the others serve
