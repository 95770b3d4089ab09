"""unix, netlink, ipv6_route, ksym through a real mount, against /proc/net/* and /proc/kallsyms."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuse


def by_inode(text: str, column: int) -> dict[int, str]:
    """Lines keyed by their inode column (counted from 0); header lines are skipped."""
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > column and fields[column].isdigit():
            rows[int(fields[column])] = line
    return rows


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_unix_sockets_match_proc_net_unix(mount, tmp_path):
    path = tmp_path / "bound socket"  # a space: the path is the last column
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(b"\0iterfs-" + uuid.uuid4().hex.encode())
    pair = socket.socketpair()
    sockets = [listener, abstract, *pair]
    try:
        ours = mount.read("unix/all")
        truth = Path("/proc/net/unix").read_text()
        assert ours.splitlines()[0] == truth.splitlines()[0]
        ours_rows, truth_rows = by_inode(ours, 6), by_inode(truth, 6)
        for s in sockets:
            assert ours_rows[inode_of(s)] == truth_rows[inode_of(s)]
        assert ours_rows[inode_of(listener)].endswith(f" {path}")
        assert ours_rows[inode_of(abstract)].split()[-1].startswith("@iterfs-")
    finally:
        for s in sockets:
            s.close()


def test_netlink_sockets_match_proc_net_netlink(mount):
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.bind((0, 1))  # RTMGRP_LINK: a groups word to compare
    try:
        ours, truth = mount.read("netlink/all"), Path("/proc/net/netlink").read_text()
        assert ours.splitlines()[0] == truth.splitlines()[0]
        assert by_inode(ours, 9)[inode_of(sock)] == by_inode(truth, 9)[inode_of(sock)]
    finally:
        sock.close()


@pytest.fixture
def ipv6_route():
    prefix = f"2001:db8:{uuid.uuid4().int % 0xffff:x}::/64"
    subprocess.run(["ip", "-6", "route", "add", prefix, "dev", "lo", "metric", "1234"], check=True)
    yield prefix
    subprocess.run(["ip", "-6", "route", "del", prefix, "dev", "lo"], check=True)


def test_ipv6_route_matches_proc(mount, ipv6_route):
    ours, truth = mount.read("ipv6_route/all"), Path("/proc/net/ipv6_route").read_text()
    assert sorted(ours.splitlines()) == sorted(truth.splitlines())
    ours_line = ours.splitlines()  # the test's route, by its destination and metric 0x4d2
    assert any(line.startswith("20010db8") and " 000004d2 " in line and line.endswith("lo") for line in ours_line)


def test_ksym_is_proc_kallsyms(mount):
    ours = mount.read("ksym/all").splitlines()
    truth = Path("/proc/kallsyms").read_text().splitlines()
    # BPF programs come and go between the two reads (the daemon loads its own): compare the rest
    stable = lambda lines: [line for line in lines if not line.endswith("\t[bpf]")]
    assert stable(ours) == stable(truth)
    assert len(stable(ours)) > 10000


def _after_sl(line: str) -> str:
    return line.split(":", 1)[1]


def _same_lines(mount, target: str, views: list[str], sockets: list[socket.socket], attempts: int = 5) -> None:
    """Each socket's line equals the kernel's, every column after sl (a running number in both).

    Timers tick between the two reads, so the comparison is retried a few times.
    """
    for attempt in range(attempts):
        ours = by_inode(mount.read(f"{target}/all"), 9)
        truth = {}
        for view in views:
            truth.update(by_inode(Path(view).read_text(), 9))
        mismatched = [s for s in sockets if _after_sl(ours.get(inode_of(s), ":")) != _after_sl(truth[inode_of(s)])]
        if not mismatched:
            return
    s = mismatched[0]
    assert ours.get(inode_of(s)) == truth[inode_of(s)]


def test_tcp_sockets_match_proc_net_tcp_and_tcp6(mount):
    sockets = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
        client.sendall(b"unread")  # an rx_queue to compare
        sockets += [listener, client, server]
    try:
        ours = mount.read("tcp/all")
        assert ours.splitlines()[0] == Path("/proc/net/tcp").read_text().splitlines()[0]
        _same_lines(mount, "tcp", ["/proc/net/tcp", "/proc/net/tcp6"], sockets)
        states = {by_inode(ours, 9)[inode_of(s)].split()[3] for s in sockets}
        assert states == {"0A", "01"}  # LISTEN, ESTABLISHED
    finally:
        for s in sockets:
            s.close()


def test_udp_sockets_match_proc_net_udp_and_udp6(mount):
    sockets = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        receiver = socket.socket(family, socket.SOCK_DGRAM)
        receiver.bind((host, 0))
        sender = socket.socket(family, socket.SOCK_DGRAM)
        sender.connect(receiver.getsockname()[:2])
        sender.send(b"queued")
        sockets += [receiver, sender]
    try:
        ours = mount.read("udp/all")
        assert ours.splitlines()[0] == Path("/proc/net/udp").read_text().splitlines()[0]
        _same_lines(mount, "udp", ["/proc/net/udp", "/proc/net/udp6"], sockets)
    finally:
        for s in sockets:
            s.close()
