"""The mount(8) helper: ``mount -t fuse.iterfs iterfs MNT -o OPTIONS`` → ``iterfs mount MNT FLAGS``.

mount(8) runs ``/sbin/mount.fuse.iterfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]``
for type ``fuse.iterfs`` (an /etc/fstab line, a systemd .mount unit) and
``/sbin/mount.iterfs`` for type ``iterfs``. This module turns that into the
argv of ``iterfs mount`` (pure functions, no side effects) and runs it.

Exit status, as mount(8) documents for itself: 0 success, 1 incorrect
invocation or permissions (one line on stderr), 32 mount failure.
"""

from __future__ import annotations

import getopt
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

EXIT_OK, EXIT_USAGE, EXIT_MOUNT_FAILURE = 0, 1, 32
DEFAULT_PROG = "mount.fuse.iterfs"
TYPES = ("fuse.iterfs", "iterfs")
USAGE = "SOURCE MOUNTPOINT [-sfnv] [-o OPTION[,OPTION...]]"

# -o options of ours: option -> (iterfs mount flag, metavar of its value or None for a switch)
OURS: dict[str, tuple[str, str | None]] = {
    "foreground": ("--foreground", None),
    "debug": ("--debug", None),
    "log": ("--log", "FILE"),
    "log_level": ("--log-level", "LEVEL"),
    "pidfile": ("--pid-file", "FILE"),
    "bpf_dir": ("--bpf-dir", "DIR"),
    "objects": ("--objects", "DIR"),
    "bpffs": ("--bpffs", "PATH"),
    "allow_other": ("--allow-other", None),
}
# Given more than once, these add up; any other option given twice: the last one counts,
# as when mount(8) merges an fstab line with `-o` from its command line.
REPEATABLE = frozenset({"objects", "bpffs"})

# Accepted and ignored, with why (mount.iterfs(8) says the same). mount(8) itself keeps
# defaults, auto, noauto, comment= and x-* to itself; a direct caller or a copied fstab
# line may still pass them.
IGNORED: dict[str, str] = {
    "defaults": "mount(8) shorthand; changes nothing here",
    "rw": "mount(8) passes it unless ro is given; the mount is read-only regardless",
    "ro": "the mount is always read-only",
    "auto": "for mount -a, read by mount(8)",
    "noauto": "for mount -a, read by mount(8)",
    "nofail": "read by mount(8) and systemd",
    "_netdev": "read by systemd; iterfs needs no network",
    "nouser": "the default: only root mounts",
    "nosuid": "the mount is always nosuid",
    "nodev": "the mount is always nodev",
    "noexec": "the mount is always noexec",
    "async": "nothing is ever written",
    "sync": "nothing is ever written",
    "dirsync": "nothing is ever written",
    "atime": "access times are not kept",
    "noatime": "access times are not kept",
    "relatime": "access times are not kept",
    "strictatime": "access times are not kept",
    "nodiratime": "access times are not kept",
    "lazytime": "access times are not kept",
}
IGNORED_PREFIXES = ("x-",)  # x-systemd.*, x-mount.*, any x-: for other programs
IGNORED_WITH_VALUE = frozenset({"comment"})  # comment=TEXT, for other programs

PRIVATE = "only root mounts iterfs; allow_other shares the mount with every user, each reading what the kernel shows it"
ALWAYS = "the mount is always nosuid,nodev,noexec"
REFUSED: dict[str, str] = {
    "allow_root": "root mounts iterfs, and root always may use its mount: allow_other shares it with every user",
    "user": PRIVATE,  # also user=NAME
    "users": PRIVATE,
    "owner": PRIVATE,
    "group": PRIVATE,
    "suid": ALWAYS,
    "dev": ALWAYS,
    "exec": ALWAYS,
}


class UsageError(Exception):
    """Incorrect invocation (exit status 1); the message is one line."""


@dataclass
class Invocation:
    source: str
    mountpoint: str
    options: str = ""
    fake: bool = False
    verbose: bool = False
    sloppy: bool = False
    help: bool = False


def parse_args(argv: list[str]) -> Invocation:
    """The helper's command line, as mount(8) passes it (see "EXTERNAL HELPERS" in mount(8))."""
    try:
        opts, operands = getopt.gnu_getopt(argv, "sfnvho:t:N:", ["help"])
    except getopt.GetoptError as e:
        raise UsageError(e.msg) from None
    inv = Invocation(source="", mountpoint="")
    given = []
    for opt, value in opts:
        if opt == "-o":
            given.append(value)  # several -o add up, as with mount(8)
        elif opt == "-t" and value not in TYPES:
            raise UsageError(f"type {value!r} is not iterfs (fuse.iterfs or iterfs)")
        elif opt == "-N":
            raise UsageError("-N is not supported: run mount in the target mount namespace (nsenter -m)")
        elif opt in ("-h", "--help"):
            inv.help = True
        else:
            # -n (do not write /etc/mtab): iterfs never writes it, so it needs nothing
            inv.fake |= opt == "-f"
            inv.verbose |= opt == "-v"
            inv.sloppy |= opt == "-s"
    inv.options = ",".join(given)
    if inv.help:
        return inv
    if len(operands) != 2:
        raise UsageError(f"expected SOURCE and MOUNTPOINT, got {len(operands)} argument(s)")
    inv.source, inv.mountpoint = operands
    return inv


def split_options(text: str) -> list[str]:
    """Split at commas outside double quotes, as libmount does: log="/a,b" is one option."""
    items, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise UsageError(f"unbalanced double quote in options {text!r}")
    items.append("".join(current))
    return [item for item in items if item]  # ",," and a trailing comma are nothing


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def translate(options: str, sloppy: bool = False) -> tuple[list[str], list[str]]:
    """`-o` options → (the flags for `iterfs mount`, unknown options skipped because of -s)."""
    single: dict[str, str | None] = {}
    repeated: dict[str, list[str]] = {name: [] for name in REPEATABLE}
    skipped = []
    for item in split_options(options):
        name, equals, value = item.partition("=")
        if name in OURS:
            value = _checked_value(name, bool(equals), unquote(value))
            if name in REPEATABLE:
                repeated[name].append(value)
            else:
                single[name] = value
        elif name in REFUSED:
            raise UsageError(f"{name}: {REFUSED[name]}")
        elif _ignored(name, bool(equals)):
            continue
        elif sloppy:
            skipped.append(item)
        else:
            raise UsageError(f"unknown option {item!r}")
    return _flags(single, repeated), skipped


def _checked_value(name: str, has_value: bool, value: str) -> str | None:
    metavar = OURS[name][1]
    if metavar is None and has_value:
        raise UsageError(f"option {name!r} takes no value")
    if metavar is not None and not value:
        raise UsageError(f"option {name!r} needs a value ({name}={metavar})")
    return value if metavar else None


def _ignored(name: str, has_value: bool) -> bool:
    if name.startswith(IGNORED_PREFIXES) or name in IGNORED_WITH_VALUE:
        return True
    return name in IGNORED and not has_value


def _flags(single: dict[str, str | None], repeated: dict[str, list[str]]) -> list[str]:
    flags = []
    for name, (flag, metavar) in OURS.items():  # in table order, so the result is stable
        if name in REPEATABLE:
            for value in repeated[name]:
                flags += [flag, value]
        elif name in single:
            flags += [flag] if metavar is None else [flag, single[name]]
    return flags


def iterfs_argv(mountpoint: str, flags: list[str]) -> list[str]:
    # The iterfs of this very Python installation, not whatever `iterfs` is on PATH.
    # -I: neither the current directory nor PYTHON* variables can put another iterfs first.
    return [sys.executable, "-I", "-m", "iterfs", "mount", mountpoint, *flags]


def main(argv: list[str] | None = None) -> int:
    prog = _prog_name()
    try:
        inv = parse_args(sys.argv[1:] if argv is None else argv)
        if inv.help:
            print(f"usage: {prog} {USAGE}\nsee mount.iterfs(8) for the options")
            return EXIT_OK
        flags, skipped = translate(inv.options, inv.sloppy)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    for item in skipped:
        print(f"{prog}: ignoring unknown option {item!r} (-s)", file=sys.stderr)
    # absolute: a relative mount point can then never be taken for an option
    command = iterfs_argv(os.path.abspath(inv.mountpoint), flags)
    if inv.fake or inv.verbose:
        print(shlex.join(command))
    if inv.fake:
        return EXIT_OK
    return _run(prog, command, foreground="--foreground" in flags)


def _prog_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("mount.") else DEFAULT_PROG


def _run(prog: str, command: list[str], foreground: bool) -> int:
    if os.geteuid() != 0:
        print(f"{prog}: only root can mount iterfs (it loads BPF programs)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if foreground:
            # Become the daemon: a supervisor's signals and $NOTIFY_SOCKET reach it directly.
            os.execv(command[0], command)
        # `iterfs mount` returns once the mount is ready (or says why it failed, on stderr).
        status = subprocess.run(command).returncode
    except OSError as e:
        print(f"{prog}: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        return EXIT_MOUNT_FAILURE
    return EXIT_OK if status == 0 else EXIT_MOUNT_FAILURE
