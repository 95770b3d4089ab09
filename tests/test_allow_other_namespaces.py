"""A shared mount's reader in another namespace: its namespaces and its credentials, both at once.

The reader runs as a user the suite made, inside a network or pid namespace the
test made, and is compared with what that user's own /proc shows there.
"""

from __future__ import annotations

import json

import pytest

from helpers import task_file_lines
from test_namespaces import run
from test_net_ksym import _after_sl, by_inode

pytestmark = pytest.mark.fuse

# Run as the user inside the namespace, by the system's python (the suite's may be where the
# user cannot reach): reads each path, then its own fds as its /proc shows them, and whether its
# /proc/kallsyms shows it addresses (kallsyms_show_value(): the first address not zero, if any is).
READ = r"""
import json, os, sys
out = {}
with open("/proc/kallsyms") as f:
    out["addresses"] = any(int(line.split(None, 1)[0], 16) for line in f)
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            out[path] = f.read().decode(errors="surrogateescape")
    except OSError as e:
        out[path] = e.errno
out["pid"] = os.getpid()
out["fds"] = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        out["fds"][fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass  # the listing's own fd, closed by now
print(json.dumps(out))
"""


def read_as(prefix: list[str], user, *paths: str) -> dict:
    return json.loads(run([*prefix, *user.command("python3", "-I", "-S", "-c", READ, *paths)]).stdout)


def test_a_user_in_a_netns_reads_tcp_as_that_namespaces_proc_net_shows_it_to_the_user(shared, users, netns):
    for _ in range(5):  # timers tick between the two reads
        seen = read_as(netns.prefix, users[0], str(shared / "tcp/all"), "/proc/net/tcp", "/proc/net/tcp6")
        ours = {inode: _after_sl(line) for inode, line in by_inode(seen[str(shared / "tcp/all")], 9).items()}
        truth = {inode: _after_sl(line) for view in ("/proc/net/tcp", "/proc/net/tcp6")
                 for inode, line in by_inode(seen[view], 9).items()}
        if ours == truth:
            break
    assert ours == truth
    assert netns.made("tcp") <= set(ours)  # the namespace's own sockets, none of the host's


def test_a_user_in_a_pidns_sees_only_its_own_process_files_by_that_namespaces_pid(shared, users, pidns):
    seen = read_as(pidns.prefix, users[0], str(shared / "task_file/all"))
    rows = task_file_lines(seen[str(shared / "task_file/all")])
    # the namespace's other processes are root's: only the reader's own is shown, as its pid there
    assert {row["tgid"] for row in rows} == {seen["pid"]}
    read = str(shared / "task_file/all")
    # its /proc/self/fd was listed after the read, whose fd it held then and no longer does
    assert {str(row["fd"]): row["path"] for row in rows if row["path"] != read} == seen["fds"]
    assert [row["path"] for row in rows].count(read) == 1
    # f_op: an address, shown as the user's own /proc/kallsyms shows it addresses
    assert {row["f_op"] != 0 for row in rows} == {seen["addresses"]}
