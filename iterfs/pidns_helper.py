"""A helper inside one pid namespace: makes iterator fds there, for the daemon.

The kernel's task iterators take the pid namespace of the process that calls
bpf_iter_create(), and setns() cannot move a process's own pid namespace, only
its children's. So the daemon runs this script with its end of a socket pair
and an fd of the namespace (their numbers are the arguments); it enters the
namespace for its children and forks the server, which:

  - lives in a mount namespace of its own whose root holds only a /proc of the
    pid namespace, and sends the daemon an O_PATH fd of it, so that the daemon
    can ask which pids exist there; and in a network namespace of its own;
  - drops every capability (bpf_iter_create() needs none: the link fd is the
    right to it), sets no_new_privs and is not dumpable;
  - answers each request, a link fd sent with SCM_RIGHTS, with an iterator fd
    of it (or an errno), until the daemon closes its end or the namespace's
    init exits (the kernel then kills every process of the namespace).

The first process waits for the server and exits with it, so the daemon reaps
both. Standalone by design: run as a script, it imports nothing of iterfs.
"""

import ctypes
import os
import socket
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, PR_SET_NAME, PR_SET_DUMPABLE = 38, 1, 15, 4
NAME = b"iterfs-pidns"  # what ps shows in the namespace, where readers see the server too
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MNT_DETACH = 2
_MACHINE = os.uname().machine
SYS_capset = {"x86_64": 126, "aarch64": 91, "riscv64": 91, "loongarch64": 91,
              "ppc64le": 184, "ppc64": 184, "s390x": 185}[_MACHINE]
SYS_pivot_root = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41,
                  "ppc64le": 203, "ppc64": 203, "s390x": 217}[_MACHINE]

REQUEST = b"I"  # + a link fd: make an iterator of it
# the server's pid as the daemon numbers it (from the first process); ready; + an iterator fd; + an errno
SERVER, READY, DONE, FAILED = b"P", b"R", b"D", b"E"

libc = ctypes.CDLL(None, use_errno=True)
libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)


def _check(result: int, what: str) -> None:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _drop_privileges() -> None:
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two empty __user_cap_data_struct: no capability, effective, permitted or inheritable
    _check(libc.syscall(SYS_capset, header, data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    # no one in the namespace without CAP_SYS_PTRACE may trace it and speak for it to the daemon
    _check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def _own_proc() -> None:
    """A mount namespace whose root holds only a /proc of this pid namespace.

    A copy of the daemon's mounts would hold every mount of the time, the iterfs
    mount included, and an umount on the host would then leave its FUSE
    connection alive in here: so nothing of them stays."""
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # nothing done below reaches the daemon's mount namespace
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount(/, MS_PRIVATE)")
    _check(libc.mount(b"iterfs-pidns", b"/proc", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=16k,mode=0755"),
           "mount(tmpfs)")
    os.mkdir("/proc/proc")
    _check(libc.mount(b"proc", b"/proc/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount(proc)")
    os.chdir("/proc")
    _check(libc.syscall(SYS_pivot_root, b".", b"."), "pivot_root")  # the old root now lies over the new one
    _check(libc.umount2(b".", MNT_DETACH), "umount2(old root)")
    os.chdir("/")
    # nor does it keep a way into the host's network (abstract unix sockets): task iterators need none
    _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def serve(sock: socket.socket) -> None:
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except OSError:
            return
        if not message:
            return  # the daemon closed its end
        if message != REQUEST or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            sock.send(FAILED + struct.pack("=i", 22))  # EINVAL
            continue
        iter_fd = libbpf.bpf_iter_create(fds[0])
        os.close(fds[0])
        if iter_fd < 0:
            sock.send(FAILED + struct.pack("=i", -iter_fd))
            continue
        try:
            socket.send_fds(sock, [DONE], [iter_fd])
        finally:
            os.close(iter_fd)


def main() -> int:
    sock_fd, ns_fd = (int(arg) for arg in sys.argv[1:3])
    sock = socket.socket(fileno=sock_fd)
    try:
        _check(libc.setns(ns_fd, CLONE_NEWPID), "setns(CLONE_NEWPID)")
    except OSError as e:
        sock.send(FAILED + struct.pack("=i", e.errno))
        return 1
    os.close(ns_fd)
    try:
        pid = os.fork()
    except OSError as e:  # ENOMEM: the namespace's init has exited, no process may join it
        sock.send(FAILED + struct.pack("=i", e.errno))
        return 1
    if pid:
        sock.send(SERVER + struct.pack("=i", pid))  # fork() numbers it in this process's namespace
        sock.close()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code  # as a shell says "killed by signal N"
    try:
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the first process is the daemon's hold on this one
        libc.prctl(PR_SET_NAME, NAME, 0, 0, 0)
        _own_proc()
        _drop_privileges()
    except OSError as e:
        sock.send(FAILED + struct.pack("=i", e.errno))
        return 1
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    socket.send_fds(sock, [READY], [proc])  # the daemon asks this /proc which pids exist here
    os.close(proc)
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
