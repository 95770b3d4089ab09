"""Mount lifecycle: checks, daemonizing with readiness, the trio + pyfuse3 main loop, unmount.

``iterfs mount`` returns only once the kernel has the mount: the daemon
writes "ready" on a pipe after pyfuse3.init(), or why it failed. From then on
the kernel queues requests until the loop serves them, so a reader that
starts right after the command returns is answered.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyfuse3
import trio

from . import credentials
from .catalog import BUNDLED_DIR, Catalog, CatalogError
from .discovery import require_btf
from .fs import IterFS
from .iterator import Iterators
from .mounts import mount_points
from .pins import Mirror, NotInBpffs, require_bpffs
from .programs import route_libbpf_log
from .tree import Tree
from .views import default_directories

log = logging.getLogger(__name__)

FSTYPE = "fuse.iterfs"
# allow_other only with --allow-other: without it, the kernel lets no one but the user who
# mounted (root) use the mount. Not default_permissions: with it the kernel asks the daemon
# for attributes at each open of a file whose attributes it dropped, and it must drop them
# of an open file for lseek(SEEK_END) to reach getattr() (fs.IterFS._uncache_attributes);
# nor could modes say what each reader may see of a file. Access is decided per reader
# instead (access.py): open() is read-only, access() answers from the mode bits.
FUSE_OPTIONS = frozenset({"fsname=iterfs", "subtype=iterfs", "ro", "nosuid", "nodev", "noexec"})


class MountError(RuntimeError):
    """A mount or unmount that cannot go ahead; the message is one line for the user."""


@dataclass
class Options:
    mountpoint: Path
    foreground: bool = False
    debug: bool = False
    log_level: str = "info"
    log_file: Path | None = None
    pid_file: Path | None = None
    bpf_dir: Path = BUNDLED_DIR
    bpffs: list[Path] = field(default_factory=list)  # mirror these; none: every bpffs mount
    objects: list[Path] = field(default_factory=list)  # users' objects; none: SYSTEM_DIR if it exists
    allow_other: bool = False  # every user may read, each what the kernel would show it


def check_host(mountpoint: Path) -> None:
    if os.geteuid() != 0:
        raise MountError("iterfs mount needs root: loading BPF iterators takes CAP_BPF and CAP_PERFMON")
    if not os.path.exists("/dev/fuse"):
        raise MountError("no /dev/fuse: load the fuse kernel module (modprobe fuse)")
    try:
        require_btf()
    except FileNotFoundError as e:
        raise MountError(e.strerror) from None
    if not mountpoint.is_dir():
        raise MountError(f"mount point {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise MountError(f"{mountpoint} is already an iterfs mount")


def check_bpffs(paths: list[Path]) -> None:
    for path in paths:
        try:
            require_bpffs(path, mount_at=path)
        except NotInBpffs as e:
            raise MountError(f"--bpffs {e}") from None


def mount(opts: Options, configure_logging: Callable[[], None]) -> None:
    opts.mountpoint = opts.mountpoint.resolve()
    check_host(opts.mountpoint)
    check_bpffs(opts.bpffs)
    if opts.foreground:
        configure_logging()
        _write_pid_file(opts)

        def ready() -> None:
            log.info("mounted on %s", opts.mountpoint)
            sd_notify(b"READY=1")

        serve(opts, ready)
    else:
        _daemonize(opts, configure_logging)


def _daemonize(opts: Options, configure_logging: Callable[[], None]) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message != "ready":
            os.waitpid(pid, 0)
            raise MountError(message or "the daemon exited before the mount was ready (see its log)")
        return

    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    status = 1
    try:
        configure_logging()
        _write_pid_file(opts)

        def ready() -> None:
            os.write(write_end, b"ready")
            os.close(write_end)

        serve(opts, ready)
        status = 0
    except BaseException as e:  # the parent waits for a message, whatever went wrong
        # a MountError's cause is expected (a bad directory, a kernel error): its traceback is for --debug
        log.error("%s", e, exc_info=not isinstance(e, MountError) or log.isEnabledFor(logging.DEBUG))
        try:
            os.write(write_end, str(e).encode() or type(e).__name__.encode())
        except OSError:
            pass  # already reported ready: the error is in the log
    finally:
        os._exit(status)


def sd_notify(message: bytes) -> None:
    """Tell systemd (Type=notify) about the daemon's state; nothing without $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message, address)
        except OSError as e:
            log.warning("cannot notify systemd at %s: %s", os.environ["NOTIFY_SOCKET"], e)


def _write_pid_file(opts: Options) -> None:
    if opts.pid_file:
        opts.pid_file.write_text(f"{os.getpid()}\n")


def serve(opts: Options, ready: Callable[[], None]) -> None:
    """Mount, call ready(), serve until unmounted or signalled, then release everything."""
    _raise_fd_limit()
    route_libbpf_log()
    try:
        catalog = Catalog(opts.bpf_dir, objects=default_directories(opts.objects))
    except (CatalogError, OSError) as e:  # anything else is a bug, and goes up with its traceback
        raise MountError(str(e)) from e
    if catalog.cannot_load:
        raise MountError(catalog.cannot_load)
    log.info("serving %s from %s", ", ".join(sorted(catalog.targets)), catalog.bpf_dir)
    iterators = Iterators(catalog, shared=opts.allow_other)
    operations = IterFS(Tree(catalog, Mirror([str(p) for p in opts.bpffs])), iterators, str(opts.mountpoint),
                        shared=opts.allow_other)
    options = set(FUSE_OPTIONS)
    if opts.allow_other:
        try:
            credentials.require_switching()  # the readers' credentials are taken per thread
        except OSError as e:
            raise MountError(f"--allow-other: {e.strerror}") from None
        options.add("allow_other")
        log.info("shared with every user (allow_other): each reader gets what the kernel would show it")
    if opts.debug:
        options.add("debug")
    try:
        pyfuse3.init(operations, str(opts.mountpoint), options)
    except RuntimeError as e:
        raise MountError(f"cannot mount on {opts.mountpoint}: {e}") from None
    clean = True
    try:
        ready()
        try:
            trio.run(_main)
        except Exception:
            clean = False
            raise
    finally:
        # after the loop failed the mount stays, so readers get ENOTCONN rather than the
        # empty directory beneath it (which a log shipper would take for "no objects")
        pyfuse3.close(unmount=clean)
        operations.close()
        if opts.pid_file:
            opts.pid_file.unlink(missing_ok=True)
        if clean:
            log.info("unmounted %s", opts.mountpoint)
        else:
            log.error("left %s mounted after a failure: iterfs umount removes it", opts.mountpoint)


def _raise_fd_limit() -> None:
    # every open file holds two fds (link and iterator): 1024 would cap readers at ~500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("file descriptor limit raised from %d to %d", soft, hard)


async def _main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            sd_notify(b"STOPPING=1")
            pyfuse3.terminate()
            return


def is_mounted(mountpoint: Path) -> bool:
    return os.path.realpath(mountpoint) in mount_points(FSTYPE)


def umount(mountpoint: Path) -> None:
    """Unmount, also a mount whose daemon was killed (fusermount3 handles both)."""
    if not is_mounted(mountpoint):
        raise MountError(f"{mountpoint} is not an iterfs mount")
    fusermount = shutil.which("fusermount3") or shutil.which("fusermount")
    if fusermount is None:
        raise MountError("fusermount3 not found: install the fuse3 package")
    done = subprocess.run([fusermount, "-u", str(mountpoint)], capture_output=True, text=True)
    if done.returncode != 0 and is_mounted(mountpoint):
        # busy: detach now, the kernel finishes once the last user lets go
        lazy = subprocess.run([fusermount, "-u", "-z", str(mountpoint)], capture_output=True, text=True)
        if lazy.returncode != 0:
            raise MountError(f"cannot unmount {mountpoint}: {(lazy.stderr or done.stderr).strip()}")
