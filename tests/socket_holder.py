"""Holds sockets for a test: "KIND COUNT" on the command line, then prints their inode numbers
on one line (a tcp holder's two listeners among them) and holds them until stdin closes.
KIND: unix (socketpairs), tcp (connections on loopback, both ends, half IPv4 and half IPv6),
udp (bound sockets, half IPv4 and half IPv6).

A process may hold no more files than RLIMIT_NOFILE: tests start as many holders as they need.
Sockets close with SO_LINGER 0, so a closed connection leaves no TIME_WAIT socket behind.
"""

import os
import resource
import socket
import struct
import sys

LINGER_NOW = struct.pack("ii", 1, 0)


def tcp(count):
    held = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen(128)
        held.append(listener)
        for _ in range(count // 4):
            client = socket.create_connection(listener.getsockname()[:2])
            server, _ = listener.accept()
            for s in (client, server):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
            held += [client, server]
    return held


def udp(count):
    held = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for _ in range(count // 2):
            s = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, 0))  # an unbound UDP socket is in no hash table: no walk lists it
            held.append(s)
    return held


def unix(count):
    return [s for _ in range(count // 2) for s in socket.socketpair()]


kind, count = sys.argv[1], int(sys.argv[2])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = {"tcp": tcp, "udp": udp, "unix": unix}[kind](count)
print(" ".join(str(os.fstat(s.fileno()).st_ino) for s in held), flush=True)
sys.stdin.read()
