"""The mount(8) helper and the systemd units: option translation, then real mount(8) runs.

The translation tests need nothing; tests that mount are marked `fuse` one by
one (not per module) so that the cheap ones run on any host.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT, missing, run_iterfs
from helpers import ITERFS, Mount, is_mounted, task_lines
from iterfs.cli import build_parser
from iterfs.mount_helper import (IGNORED, OURS, REFUSED, UsageError, iterfs_argv, parse_args,
                                 split_options, translate)

HELPERS = ROOT / "mount_helpers"
HELPER = HELPERS / "mount.fuse.iterfs"
MAN_PAGE = ROOT / "man" / "mount.iterfs.8.rst"
UNITS = ("iterfs.service", "mnt-iters.mount")
INSTALLED_ITERFS = "/usr/local/bin/iterfs"  # what `make install` provides and the units name


def run_helper(*args: str, helper: Path = HELPER, env: dict | None = None) -> subprocess.CompletedProcess:
    """The helper as mount(8) runs it, with this (the venv's) python."""
    return subprocess.run([sys.executable, str(helper), *args], capture_output=True, text=True, timeout=120,
                          env=env)


# The translation, pure


@pytest.mark.parametrize("option, flags", [
    ("foreground", ["--foreground"]),
    ("debug", ["--debug"]),
    ("log=/var/log/iterfs.log", ["--log", "/var/log/iterfs.log"]),
    ("pidfile=/run/iterfs.pid", ["--pid-file", "/run/iterfs.pid"]),
    ("bpf_dir=/opt/progs", ["--bpf-dir", "/opt/progs"]),
    ("objects=/opt/objs", ["--objects", "/opt/objs"]),
    ("bpffs=/sys/fs/bpf", ["--bpffs", "/sys/fs/bpf"]),
])
def test_each_option_of_ours_becomes_its_flag(option, flags):
    assert translate(option) == (flags, [])
    assert translate(f"rw,{option},defaults") == (flags, [])


def test_repeatable_options_add_up_and_the_others_keep_the_last():
    flags, _ = translate("objects=/a,bpffs=/b,log=/first,objects=/c,debug,log=/last,debug,bpffs=/d")
    assert flags == ["--debug", "--log", "/last", "--objects", "/a", "--objects", "/c",
                     "--bpffs", "/b", "--bpffs", "/d"]


def test_a_combination_as_fstab_and_systemd_give_it():
    flags, _ = translate("rw,nosuid,nodev,noexec,relatime,nofail,_netdev,debug,x-systemd.automount,"
                         "x-systemd.requires=network.target,x-mount.mkdir=0755,comment=iterfs,pidfile=/p,log=/l")
    assert flags == ["--debug", "--log", "/l", "--pid-file", "/p"]


@pytest.mark.parametrize("option", [*IGNORED, "x-systemd.automount", "x-systemd.idle-timeout=60", "x-foo",
                                    "comment=systemd.automount", "comment"])
def test_options_of_the_mount_system_are_accepted_and_ignored(option):
    assert translate(option) == ([], [])


@pytest.mark.parametrize("option", [*REFUSED, "user=alice", "allow_root=1"])
def test_refused_options_say_why(option):
    with pytest.raises(UsageError) as info:
        translate(f"debug,{option}", sloppy=True)  # -s does not let them through
    name = option.partition("=")[0]
    assert str(info.value) == f"{name}: {REFUSED[name]}"
    assert "\n" not in str(info.value)


def test_allow_other_shares_the_mount_and_allow_root_says_it_is_allow_other_that_does():
    assert translate("allow_other,debug") == (["--debug", "--allow-other"], [])  # in the order of OURS
    with pytest.raises(UsageError, match="option 'allow_other' takes no value"):
        translate("allow_other=1")
    with pytest.raises(UsageError, match="^allow_root: root mounts iterfs.*allow_other shares it"):
        translate("allow_root")


def test_an_unknown_option_is_an_error_unless_sloppy():
    with pytest.raises(UsageError) as info:
        translate("debug,xyz")
    assert str(info.value) == "unknown option 'xyz'"
    assert translate("debug,xyz,fsname=x", sloppy=True) == (["--debug"], ["xyz", "fsname=x"])


@pytest.mark.parametrize("text, message", [
    ("debug=1", "option 'debug' takes no value"),
    ("foreground=yes", "option 'foreground' takes no value"),
    ("log", "option 'log' needs a value (log=FILE)"),
    ("objects=", "option 'objects' needs a value (objects=DIR)"),
    ('bpffs=""', "option 'bpffs' needs a value (bpffs=PATH)"),
    ("ro=1", "unknown option 'ro=1'"),
    ('log="/a,b', "unbalanced double quote in options"),
])
def test_malformed_options(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        translate(text)


def test_a_value_may_hold_commas_in_double_quotes_as_libmount_reads_them():
    assert split_options('log="/a,b c",debug,,objects=/o,') == ['log="/a,b c"', "debug", "objects=/o"]
    assert translate('log="/var/log/a,b c.log",objects="/x,y"')[0] == [
        "--log", "/var/log/a,b c.log", "--objects", "/x,y"]


def test_the_command_line_as_mount_passes_it():
    # what mount(8) of util-linux passes: operands first, then each flag, then -o
    inv = parse_args(["iterfs", "/mnt/iters", "-s", "-f", "-n", "-v", "-o", "rw,debug"])
    assert (inv.source, inv.mountpoint, inv.options) == ("iterfs", "/mnt/iters", "rw,debug")
    assert inv.sloppy and inv.fake and inv.verbose
    inv = parse_args(["-sfnv", "-orw", "-o", "debug", "-t", "fuse.iterfs", "iterfs", "/m"])
    assert (inv.mountpoint, inv.options, inv.sloppy, inv.fake, inv.verbose) == ("/m", "rw,debug", True, True, True)
    inv = parse_args(["none", "/m", "-t", "iterfs"])
    assert (inv.source, inv.options, inv.fake) == ("none", "", False)


@pytest.mark.parametrize("argv, message", [
    (["iterfs"], "expected SOURCE and MOUNTPOINT, got 1 argument(s)"),
    (["iterfs", "/m", "/n"], "expected SOURCE and MOUNTPOINT, got 3 argument(s)"),
    (["iterfs", "/m", "-q"], "option -q not recognized"),
    (["iterfs", "/m", "-o"], "option -o requires argument"),
    (["iterfs", "/m", "-t", "fuse.sshfs"], "type 'fuse.sshfs' is not iterfs"),
    (["iterfs", "/m", "-N", "1"], "-N is not supported"),
])
def test_incorrect_invocations(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_args(argv)


def test_the_command_is_the_iterfs_of_this_python():
    assert iterfs_argv("/mnt/iters", ["--debug"]) == [sys.executable, "-I", "-m", "iterfs", "mount",
                                                      "/mnt/iters", "--debug"]


def test_iterfs_mount_accepts_every_flag_the_helper_gives():
    every = "foreground,debug,log=/l,pidfile=/p,bpf_dir=/b,objects=/o1,objects=/o2,bpffs=/f1,bpffs=/f2"
    flags, _ = translate(every)
    args = build_parser().parse_args(["mount", "/mnt/iters", *flags])
    assert (args.foreground, args.debug, args.log, args.pid_file, args.bpf_dir) == (
        True, True, Path("/l"), Path("/p"), Path("/b"))
    assert [Path("/o1"), Path("/o2")] == args.objects and [Path("/f1"), Path("/f2")] == args.bpffs


def test_the_man_page_documents_every_option():
    text = MAN_PAGE.read_text()
    for name in [*OURS, *IGNORED, *REFUSED, "x-", "comment"]:
        assert re.search(rf"\*\*{re.escape(name)}(\*\*|=)", text), f"{name} is not in mount.iterfs(8)"
    for flag in ("-f", "-v", "-s", "-n", "-t", "-N"):
        assert f"**{flag}**" in text, f"{flag} is not in mount.iterfs(8)"


# The helper script, run as mount(8) runs it


def test_errors_are_one_line_and_status_1():
    done = run_helper("iterfs", "/mnt/iters", "-o", "rw,xyz")
    assert (done.returncode, done.stderr, done.stdout) == (1, "mount.fuse.iterfs: unknown option 'xyz'\n", "")
    done = run_helper("iterfs", "/mnt/iters", "-o", "allow_root")
    assert done.returncode == 1
    assert done.stderr == f"mount.fuse.iterfs: allow_root: {REFUSED['allow_root']}\n"
    # named as mount(8) ran it: mount.iterfs is the same script
    done = run_helper("iterfs", "/mnt/iters", "-o", "user", helper=HELPERS / "mount.iterfs")
    assert done.returncode == 1 and done.stderr.startswith("mount.iterfs: user: ")


def test_fake_prints_the_command_and_does_nothing(tmp_path):
    mnt = tmp_path / "mnt"
    done = run_helper("iterfs", str(mnt), "-f", "-o", f"rw,noauto,debug,log={tmp_path}/my log")
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == [sys.executable, "-I", "-m", "iterfs", "mount", str(mnt),
                                        "--debug", "--log", f"{tmp_path}/my log"]
    assert not mnt.exists() and not (tmp_path / "my log").exists()


def test_sloppy_skips_unknown_options_with_a_warning(tmp_path):
    done = run_helper("iterfs", str(tmp_path), "-sf", "-o", "xyz,debug")
    assert done.returncode == 0
    assert done.stderr == "mount.fuse.iterfs: ignoring unknown option 'xyz' (-s)\n"
    assert shlex.split(done.stdout)[-1] == "--debug"


def test_only_root_mounts(tmp_path):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    done = subprocess.run([*nobody, sys.executable, str(HELPER), "iterfs", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "mount.fuse.iterfs: only root can mount iterfs (it loads BPF programs)\n"


def test_a_python_without_iterfs_is_a_mount_failure_saying_so(tmp_path):
    # a fresh virtual environment: a python that certainly has no iterfs
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    done = subprocess.run([str(python), "-I", str(HELPER), "iterfs", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 32 and done.stderr.count("\n") == 1
    assert "cannot import iterfs" in done.stderr


# Real mounts


@contextmanager
def cleaned_up(mnt: Path, log: Path, pid_file: Path):
    """Whatever happens, no mount and no daemon are left behind."""
    pid = None
    try:
        yield
    finally:
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            pass  # never started, or unmounted cleanly (the daemon removes its pid file)
        if pid:
            Mount(mnt, log, pid, []).stop()
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def log_of(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def assert_serves_us(mnt: Path, log: Path) -> None:
    entry = next((line for line in open("/proc/self/mountinfo") if line.split()[4] == str(mnt)), "")
    assert " - fuse.iterfs iterfs " in entry, f"not a fuse.iterfs mount: {entry!r}\n{log_of(log)}"
    rows = task_lines((mnt / f"task/pid={os.getpid()}").read_text())
    assert rows and rows[0]["pid"] == os.getpid() and rows[0]["tgid"] == os.getpid()


@pytest.mark.fuse
def test_the_helper_mounts_and_the_mount_is_ready_when_it_returns(tmp_path, fuse_host):
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    with cleaned_up(mnt, log, pid_file):
        done = run_helper("iterfs", str(mnt), "-o", f"log={log},defaults,noauto,x-systemd.automount,"
                          f"pidfile={pid_file}")
        assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
        assert_serves_us(mnt, log)
        assert run_iterfs("umount", str(mnt)).returncode == 0
        assert not is_mounted(mnt)


@pytest.mark.fuse
def test_a_failed_mount_is_status_32_with_the_reason(tmp_path, fuse_host):
    done = run_helper("iterfs", str(tmp_path / "absent"), "-o", f"log={tmp_path}/log")
    assert done.returncode == 32
    assert done.stderr.count("\n") == 1 and "is not a directory" in done.stderr


@pytest.mark.fuse
def test_foreground_makes_the_helper_the_daemon(tmp_path, fuse_host):
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener, cleaned_up(mnt, log, pid_file):
        listener.bind(str(address))
        listener.settimeout(60)
        helper = subprocess.Popen([sys.executable, str(HELPER), "iterfs", str(mnt), "-o",
                                   f"foreground,log={log},pidfile={pid_file}"],
                                  env={**os.environ, "NOTIFY_SOCKET": str(address)})
        try:
            assert listener.recv(64) == b"READY=1"
            assert int(pid_file.read_text()) == helper.pid  # exec'd: a supervisor's signals reach the daemon
            assert_serves_us(mnt, log)
            helper.send_signal(signal.SIGTERM)
            assert listener.recv(64) == b"STOPPING=1"
            assert helper.wait(timeout=60) == 0
            assert not is_mounted(mnt)
        finally:
            helper.kill()
            helper.wait()


@contextmanager
def sbin_helpers():
    """/sbin/mount.fuse.iterfs and /sbin/mount.iterfs, made for the test only where there are none."""
    made = []
    try:
        for name in ("mount.fuse.iterfs", "mount.iterfs"):
            path = Path("/sbin") / name
            wrapper = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(HELPERS / name))} "$@"\n'
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)  # never overwrite an installed one
            except FileExistsError:
                continue
            made.append(path)
            with os.fdopen(fd, "w") as f:
                f.write(wrapper)
        yield
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def mount_8(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=120)


def umount_8(mnt: Path, log: Path) -> None:
    done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
    assert not is_mounted(mnt)


@pytest.fixture
def root_only(fuse_host):
    if os.geteuid() != 0:
        missing("root (writing /sbin/mount.fuse.iterfs)")


@pytest.mark.fuse
@pytest.mark.parametrize("fstype", ["fuse.iterfs", "iterfs"])
def test_mount_t_runs_the_helper(tmp_path, root_only, fstype):
    mnt, pid_file = tmp_path / "mnt", tmp_path / "iterfs.pid"
    log = tmp_path / "iterfs,1.log"  # a comma: the value is quoted, as libmount reads it
    mnt.mkdir()
    with sbin_helpers(), cleaned_up(mnt, log, pid_file):
        done = mount_8("-t", fstype, "iterfs", str(mnt), "-o", f'log="{log}",pidfile={pid_file}')
        assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
        assert_serves_us(mnt, log)
        assert "serving" in log.read_text()  # the log went to the path with the comma
        umount_8(mnt, log)


@pytest.mark.fuse
def test_an_fstab_line_mounts(tmp_path, root_only):
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a test fstab\niterfs {mnt} fuse.iterfs defaults,noauto,log={log},pidfile={pid_file} 0 0\n")
    with sbin_helpers(), cleaned_up(mnt, log, pid_file):
        done = mount_8("--fstab", str(fstab), str(mnt))
        assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
        assert_serves_us(mnt, log)
        umount_8(mnt, log)


@pytest.mark.fuse
def test_mount_reports_a_refused_option_as_the_helper_does(tmp_path, root_only):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with sbin_helpers():
        done = mount_8("-t", "fuse.iterfs", "iterfs", str(mnt), "-o", "allow_root")
    assert done.returncode != 0 and REFUSED["allow_root"] in done.stderr
    assert not is_mounted(mnt)


@pytest.mark.fuse
def test_mount_o_allow_other_makes_a_shared_mount(tmp_path, root_only):
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    with sbin_helpers(), cleaned_up(mnt, log, pid_file):
        done = mount_8("-t", "fuse.iterfs", "iterfs", str(mnt), "-o", f"allow_other,log={log},pidfile={pid_file}")
        assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
        entry = next(line for line in open("/proc/self/mountinfo") if line.split()[4] == str(mnt))
        assert "allow_other" in entry.split(" - ")[1]
        assert json.loads((mnt / ".iterfs" / "status").read_text())["shared"] is True
        umount_8(mnt, log)


# The systemd units


def unit_option(unit: str, key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", (HELPERS / unit).read_text(), re.M)
    assert len(values) == 1, f"{unit}: {key}= {values}"
    return values[0]


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze (package systemd)")
    # As installed, but with the iterfs that exists here (verify checks that ExecStart= can run).
    for unit in UNITS:
        (tmp_path / unit).write_text((HELPERS / unit).read_text().replace(INSTALLED_ITERFS, str(ITERFS)))
    # --man=no: the man pages are checked below against the source tree, not the installed ones
    done = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / unit) for unit in UNITS)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if any(unit in line for unit in UNITS)]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
    for unit in UNITS:
        for page in re.findall(r"man:([\w.]+)\((\d)\)", unit_option(unit, "Documentation")):
            assert (ROOT / "man" / f"{page[0]}.{page[1]}.rst").exists(), f"{unit}: no man page {page}"


def test_the_units_mount_where_the_service_says():
    assert unit_option("mnt-iters.mount", "Where") == "/mnt/iters"
    assert unit_option("mnt-iters.mount", "Type") == "fuse.iterfs"
    assert "foreground" not in unit_option("mnt-iters.mount", "Options")  # mount(8) would never return
    assert unit_option("iterfs.service", "Type") == "notify"
    assert unit_option("iterfs.service", "ExecStart") == f"{INSTALLED_ITERFS} mount --foreground /mnt/iters"
    assert unit_option("iterfs.service", "ExecStartPre") == "/bin/mkdir -p /mnt/iters"


@pytest.mark.fuse
def test_the_service_capabilities_are_enough_for_every_target(tmp_path, fuse_host):
    """The daemon under the unit's CapabilityBoundingSet= and NoNewPrivileges=, emulated with setpriv."""
    caps = unit_option("iterfs.service", "CapabilityBoundingSet").split()
    assert unit_option("iterfs.service", "NoNewPrivileges") == "yes"
    bounding = ",".join(["-all", *(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)])
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    with cleaned_up(mnt, log, pid_file):
        done = subprocess.run(["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs",
                               str(ITERFS), "mount", str(mnt), "--log", str(log), "--pid-file", str(pid_file)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{done.stderr}\n{log_of(log)}"
        read = [target.name for target in mnt.iterdir() if (target / "all").exists()]
        for name in read:
            try:
                (mnt / name / "all").read_bytes()
            except OSError as e:
                pytest.fail(f"{name}/all under CapabilityBoundingSet={' '.join(caps)}: {e}\n{log_of(log)}")
        assert {"task", "task_file", "task_vma", "tcp", "ksym"} <= set(read)
        with open(mnt / "task/all", "rb") as f:  # a caller's syscall can be read: SEEK_END is refused
            f.read(100)
            with pytest.raises(OSError) as info:
                f.seek(0, os.SEEK_END)
            assert info.value.errno == errno.EINVAL and f.tell() == 100
        # kernel addresses as root sees them (CAP_SYSLOG), not zeros
        stable = lambda lines: [line for line in lines if not line.endswith("\t[bpf]")]
        ours = stable((mnt / "ksym/all").read_text().splitlines())
        assert ours == stable(Path("/proc/kallsyms").read_text().splitlines())
