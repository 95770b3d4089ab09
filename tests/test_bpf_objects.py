"""bpf_map, bpf_prog, bpf_link, bpf_map_elem, sockmap through a real mount, against bpftool's listings."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import subprocess

import pytest

from helpers import bpftool_json, kernel_refusal, make_map, make_sk_storage_map, map_pin

pytestmark = pytest.mark.fuse


def rows(text: str) -> dict[int, list[str]]:
    """Lines after the header, split, keyed by the id in their first column."""
    return {int(line.split()[0]): line.split() for line in text.splitlines()[1:]}


def test_bpf_map_matches_bpftool_map_list(mount, bpffs):
    made = {make_map(bpffs, "hash", 4, 8, 16), make_map(bpffs, "array", 4, 20, 4), make_map(bpffs, "lru_hash", 8, 16, 8)}
    ours = rows(mount.read("bpf_map/all"))
    for info in bpftool_json("map", "list"):
        if info["id"] in made:
            line = ours[info["id"]]
            assert line[2] == info["type"] and line[3] == info["name"]
            assert [int(x) for x in line[4:7]] == [info["bytes_key"], info["bytes_value"], info["max_entries"]]
            assert int(line[7], 16) == info["flags"]
            made.discard(info["id"])
    assert not made


def test_bpf_prog_matches_bpftool_prog_list(mount):
    mount.read(f"task/pid={os.getpid()}")  # the daemon's own task program is loaded
    ours = rows(mount.read("bpf_prog/all"))
    listed = bpftool_json("prog", "list")
    compared = 0
    for info in listed:
        if info["id"] in ours:
            line = ours[info["id"]]
            assert (line[2], line[3], line[4]) == (info["type"], info.get("name", "-"), info["tag"]), line
            compared += 1
    assert compared >= len(listed) - 2  # programs may come and go between the two listings
    assert "dump_task" in {line[3] for line in ours.values()}


def test_bpf_link_matches_bpftool_link_list(mount):
    with open(mount / "task/all", "rb"):  # an open holds an iterator link
        ours = rows(mount.read("bpf_link/all"))
        listed = {info["id"]: info for info in bpftool_json("link", "list")}
    both = set(ours) & set(listed)
    # the held open's link is in both (the bpf_link read's own is gone before bpftool lists)
    assert any(listed[i]["type"] == "iter" for i in both)
    for link_id in both:
        assert (ours[link_id][2], int(ours[link_id][3])) == (listed[link_id]["type"], listed[link_id]["prog_id"])


def test_bpf_map_elem_matches_bpftool_map_dump(mount, bpffs):
    map_id = make_map(bpffs, "hash", 4, 12, 8)
    for key, value in [(1, "01 02 03 04 05 06 07 08 09 0a 0b 0c"), (7, "ff 00 ff 00 ff 00 ff 00 aa bb cc dd")]:
        subprocess.run(["bpftool", "map", "update", "id", str(map_id), "key", *f"{key} 0 0 0".split(),
                        "value", "hex", *value.split()], check=True)
    dump = bpftool_json("map", "dump", "id", str(map_id))
    expected = set()
    for element in dump:
        key = [int(b, 16) for b in element["key"]]
        value = [int(b, 16) for b in element["value"]]
        expected.add(f"key: {_hex(key)}  value: {_hex(value)}")
    assert set(mount.read(f"bpf_map_elem/map_id={map_id}").splitlines()) == expected
    assert f"map_id={map_id}" in os.listdir(mount / "bpf_map_elem")
    assert "all" not in os.listdir(mount / "bpf_map_elem")
    # the same lines either way; which way this kernel takes, the kernel says
    through = json.loads((mount / ".iterfs/status").read_text())["served_through"]
    assert through == ({"bpf_map_elem": "bpf_map"} if kernel_refusal("bpf_map_elem") else {})


def _hex(data: list[int]) -> str:
    """bpftool's fprint_hex(): bytes as %02x, one space apart, two after every 8th."""
    return "".join(f"{b:02x}" + ("  " if i % 8 == 7 else " ") for i, b in enumerate(data)).rstrip()


def test_map_targets_refuse_maps_of_another_type(mount, bpffs):
    hash_id = make_map(bpffs, "hash")
    for path in (f"sockmap/map_id={hash_id}", f"bpf_sk_storage_map/map_id={hash_id}", "bpf_map_elem/map_id=4294967295"):
        with pytest.raises(OSError) as info:
            (mount / path).read_bytes()
        assert info.value.errno == errno.ENOENT
    assert f"map {hash_id} is a hash map, this target takes sockmap, sockhash" in mount.log.read_text()


def test_sockmap_shows_the_sockets_the_test_put_in(mount, bpffs):
    """Or, where this kernel refuses every sockmap program, says so with the kernel's errno."""
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    map_id = make_map(bpffs, "sockmap", 4, 8, 4)
    pin = map_pin(bpffs, map_id)
    map_fd = libbpf.bpf_obj_get(str(pin).encode())
    assert map_fd >= 0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    try:
        key, value = struct.pack("I", 2), struct.pack("Q", client.fileno())
        assert libbpf.bpf_map_update_elem(map_fd, key, value, 0) == 0, os.strerror(ctypes.get_errno())
        refusal = kernel_refusal("sockmap")
        if refusal:
            with pytest.raises(OSError) as info:
                mount.read(f"sockmap/map_id={map_id}")
            assert info.value.errno == refusal
            code = errno.errorcode[refusal]
            assert mount.read("sockmap/README").startswith(f"sockmap: refused by this kernel ({code}).")
            assert json.loads((mount / ".iterfs/status").read_text())["refused_targets"]["sockmap"] == \
                f"refused by this kernel ({code})"
            return
        lines = mount.read(f"sockmap/map_id={map_id}").splitlines()
        cookie = struct.unpack("Q", client.getsockopt(socket.SOL_SOCKET, 57, 8))[0]  # SO_COOKIE
        assert f"key: 02 00 00 00  ino:{os.fstat(client.fileno()).st_ino} sk:{cookie:x}" in lines
        assert sum(line.endswith("  -") for line in lines) == 3  # the empty slots
    finally:
        os.close(map_fd)
        client.close()
        listener.close()


def test_bpf_sk_storage_map_shows_the_value_the_test_gave_a_socket(mount, bpffs):
    """Or, where this kernel refuses every bpf_sk_storage_map program, says so with the kernel's errno."""
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    map_id = make_sk_storage_map(bpffs)
    map_fd = libbpf.bpf_map_get_fd_by_id(map_id)
    assert map_fd >= 0
    with socket.socket() as sock:
        try:
            # an sk_storage map is keyed by a socket fd from user space
            key, value = struct.pack("i", sock.fileno()), struct.pack("Q", 0x1122334455667788)
            assert libbpf.bpf_map_update_elem(map_fd, key, value, 0) == 0, os.strerror(ctypes.get_errno())
        finally:
            os.close(map_fd)
        refusal = kernel_refusal("bpf_sk_storage_map")
        if refusal:
            with pytest.raises(OSError) as info:
                mount.read(f"bpf_sk_storage_map/map_id={map_id}")
            assert info.value.errno == refusal
            return
        cookie = struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, 57, 8))[0]  # SO_COOKIE
        lines = mount.read(f"bpf_sk_storage_map/map_id={map_id}").splitlines()
        assert lines == [f"ino:{os.fstat(sock.fileno()).st_ino} sk:{cookie:x}  value: 88 77 66 55 44 33 22 11"]
