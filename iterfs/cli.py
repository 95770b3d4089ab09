"""The ``iterfs`` command: parse arguments, run one subcommand, map errors to exit codes.

Exit status: 0 success, 1 failure (one line on stderr saying why), 2 usage error.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .catalog import BUNDLED_DIR

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("iterfs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iterfs", description="Linux BPF iterators as plain files.")
    parser.add_argument("--version", action="version", version=f"iterfs {__version__}")
    parser.add_argument("--debug", action="store_true", help="log everything, and show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # what the commands that load programs share: where the programs are
    programs = argparse.ArgumentParser(add_help=False)
    programs.add_argument("--bpf-dir", type=Path, default=BUNDLED_DIR, metavar="DIR",
                          help="directory of the programs that serve the targets (default: the bundled ones)")

    mount = commands.add_parser("mount", parents=[programs],
                                help="mount the iterator tree; returns once the mount is ready")
    mount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    mount.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground, logging to stderr")
    # SUPPRESS: an unset subcommand --debug must not overwrite `iterfs --debug mount`
    mount.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="log every request and libbpf message")
    mount.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                       help="log messages of this level and above (default: info; --debug means debug)")
    mount.add_argument("--log", type=Path, metavar="FILE", help="log to FILE (default: stderr in the foreground, "
                       "otherwise syslog when /dev/log exists)")
    mount.add_argument("--allow-other", action="store_true",
                       help="let every user read the mount, each getting what the kernel would show it "
                            "(default: root only)")
    mount.add_argument("--pid-file", type=Path, metavar="FILE", help="write the daemon's pid to FILE")

    mount.add_argument("--bpffs", type=Path, action="append", default=[], metavar="PATH",
                       help="mirror the iterator pins under PATH in pinned/ (repeatable; default: every bpffs mount)")

    mount.add_argument("--objects", type=Path, action="append", default=[], metavar="DIR",
                       help="serve the iterator programs of the .bpf.o files in DIR as views "
                            "TARGET/PROGRAM/ (repeatable; default: /etc/iterfs/objects if it exists)")

    umount = commands.add_parser("umount", help="unmount, also a mount whose daemon was killed")
    umount.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")

    cat = commands.add_parser("cat", parents=[programs],
                              help="print a tree path without a mount, e.g. task_vma/pid=42")
    cat.add_argument("paths", nargs="+", metavar="PATH")

    pin = commands.add_parser("pin", parents=[programs],
                              help="pin the iterator of a tree path in bpffs, e.g. task_vma/pid=42 "
                                   "/sys/fs/bpf/vma42; cat works on the pin after iterfs is gone")
    pin.add_argument("path", metavar="PATH")
    pin.add_argument("bpffs_path", type=Path, metavar="BPFFS_PATH")

    unpin = commands.add_parser("unpin", help="remove an iterator pin from bpffs")
    unpin.add_argument("bpffs_path", type=Path, metavar="BPFFS_PATH")

    targets = commands.add_parser("targets", parents=[programs],
                                  help="every target: whether this kernel has it, which programs serve it, "
                                       "its parameters")
    targets.add_argument("--objects", type=Path, action="append", default=[], metavar="DIR",
                         help="count the views of the .bpf.o files in DIR too (default: /etc/iterfs/objects "
                              "if it exists)")

    status = commands.add_parser("status", help="what a running daemon is doing: loaded programs, open "
                                                "iterators, bytes served, errors")
    status.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    status.add_argument("--json", action="store_true", help="print the daemon's status file as it is")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug
    try:
        if args.command == "mount":
            return _mount(args)
        if args.command == "umount":
            from .mount import umount

            umount(args.mountpoint)
            return EXIT_OK
        if args.command == "pin":
            from .api import Session

            _quiet_about_refusals(args)
            with Session(args.bpf_dir) as session:
                session.pin(args.path, args.bpffs_path)
            return EXIT_OK
        if args.command == "unpin":
            from .pins import unpin

            unpin(args.bpffs_path)
            return EXIT_OK
        if args.command == "targets":
            return _targets(args)
        if args.command == "status":
            return _status(args)
        return _cat(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # the reader went away (`iterfs cat ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        if debug:
            raise
        print(f"iterfs: {_describe(e)}", file=sys.stderr)
        return EXIT_FAILURE


def _describe(e: Exception) -> str:
    if isinstance(e, OSError) and e.errno and not e.args[1:]:
        return f"{os.strerror(e.errno)}"
    if isinstance(e, OSError) and e.errno:
        return f"{e.strerror} ({errno.errorcode.get(e.errno, e.errno)})" + (f": {e.filename}" if e.filename else "")
    return str(e)


def _mount(args: argparse.Namespace) -> int:
    from .mount import Options, mount

    options = Options(mountpoint=args.mountpoint, foreground=args.foreground, debug=args.debug,
                      log_level="debug" if args.debug else args.log_level,
                      log_file=args.log, pid_file=args.pid_file, bpf_dir=args.bpf_dir, bpffs=args.bpffs,
                      objects=args.objects, allow_other=args.allow_other)
    mount(options, lambda: configure_logging(options))
    return EXIT_OK


def configure_logging(options) -> None:
    level = getattr(logging, options.log_level.upper())
    if options.log_file:
        handler: logging.Handler = logging.FileHandler(options.log_file)
    elif options.foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler

        handler = SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter("iterfs[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    if not handler.formatter:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # libbpf narrates every load at debug level: keep it for --debug
    logging.getLogger("iterfs.libbpf").setLevel(logging.DEBUG if options.debug else logging.WARNING)


def _targets(args: argparse.Namespace) -> int:
    from . import params
    from .catalog import Catalog
    from .discovery import refusal
    from .views import default_directories

    # what the log would say of refused targets, the table says
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, format=LOG_FORMAT)
    catalog = Catalog(args.bpf_dir, objects=default_directories(args.objects))
    rows = [("TARGET", "KERNEL", "PROGRAMS", "PARAMETERS")]
    notes = []
    for name in sorted(set(catalog.targets) | set(catalog.absent)):
        schema = params.schema_for(name)
        keys = (["all"] if schema.walks_all else []) + [f"{key}=" for key in schema.keys]
        if name in catalog.targets:
            recipe = catalog.targets[name]
            programs = ["generic" if recipe.attach else f"bundled {recipe.program}"]
            if recipe.through:
                programs[0] += f" through {recipe.through}"
            programs += [f"view {view}" for view in sorted(catalog.views(name))]
            if recipe.refused:
                code = errno.errorcode.get(recipe.refused, recipe.refused)
                notes.append(f"{name}: {refusal(recipe.refused)}: its files give {code}")
            elif recipe.through:
                notes.append(f"{name}: its own programs are {refusal(catalog.refused[name])}: "
                             f"served through {recipe.through}, with the same lines")
            rows.append((name, "refused" if recipe.refused else "yes", ", ".join(programs), " ".join(keys)))
        else:
            rows.append((name, "no", f"bundled {catalog.absent[name]}", " ".join(keys)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip())
    if catalog.cannot_load:
        notes.append(f"Which targets this kernel refuses is not known: {catalog.cannot_load}.")
    if notes:
        print()
        print("\n".join(notes))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    import json

    from .mount import MountError, is_mounted

    if not is_mounted(args.mountpoint):
        raise MountError(f"{args.mountpoint} is not an iterfs mount")
    try:
        text = (args.mountpoint / ".iterfs" / "status").read_text()
    except OSError as e:
        raise MountError(f"{args.mountpoint}: the daemon does not answer ({e.strerror})") from None
    if args.json:
        sys.stdout.write(text)
        return EXIT_OK
    state = json.loads(text)
    print(f"iterfs on {state['mountpoint']}: pid {state['pid']}, up {state['uptime_seconds']} s, "
          f"{len(state['targets'])} targets")
    print(f"open iterators: {state['open_iterators']}, opens: {state['opens']}, "
          f"bytes served: {state['bytes_served']}, walks started over: {state.get('walks_started_over', '?')}")
    errors = ", ".join(f"{name} {count}" for name, count in sorted(state["errors"].items())) or "none"
    print(f"errors: {errors}")
    if state.get("shared"):
        denials = ", ".join(f"{name} {count}" for name, count in sorted(state.get("denials", {}).items())) or "none"
        print(f"shared with every user (allow_other); denials: {denials}")
    for name, why in sorted(state.get("refused_targets", {}).items()):
        print(f"{name}: {why}")
    for name, via in sorted(state.get("served_through", {}).items()):
        print(f"{name}: served through {via}, since this kernel refuses its own programs")
    other = state.get("opens_in_other_namespaces", {})
    print("opens in other namespaces: " + ", ".join(f"{kind} {count}" for kind, count in other.items()))
    for helper in state.get("pid_namespace_helpers", []):
        print(f"  pid namespace pid:[{helper['pid_namespace']}]: helper pid {helper['helper_pid']}, "
              f"idle {helper['idle_seconds']} s")
    print(f"loaded programs: {len(state['loaded_programs'])}")
    for program in state["loaded_programs"]:
        print(f"  {program['object']}" + (f" (attached to {program['target']})" if program["target"] else ""))
    return EXIT_OK


def _quiet_about_refusals(args: argparse.Namespace) -> None:
    from .catalog import refusals

    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format=LOG_FORMAT)
    if not args.debug:  # a refused target's own files say why it is refused, when they are read
        refusals.setLevel(logging.ERROR)


def _cat(args: argparse.Namespace) -> int:
    from .api import Session

    _quiet_about_refusals(args)
    out = sys.stdout.buffer
    with Session(args.bpf_dir) as session:
        for path in args.paths:
            for chunk in session.stream_path(path):
                out.write(chunk)
            out.flush()
    return EXIT_OK
