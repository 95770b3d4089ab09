"""Mount and unmount as users do it: ready on return, signals, kill -9, permissions."""

from __future__ import annotations

import errno
import os
import signal
import subprocess

import pytest

from conftest import run_iterfs
from helpers import ITERFS
from helpers import is_mounted, start_mount, task_lines

pytestmark = pytest.mark.fuse


def test_mount_is_readable_as_soon_as_the_command_returns(tmp_path, fuse_host):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["sh", "-c", '"$0" mount "$1" --log "$2" && cat "$1/task/pid=$$"', ITERFS,
         str(mnt), str(tmp_path / "log")],
        capture_output=True, text=True,
    )
    try:
        assert done.returncode == 0, done.stderr
        assert task_lines(done.stdout)[0]["comm"] == "sh"
        entry = next(line for line in open("/proc/self/mountinfo") if line.split()[4] == str(mnt))
        assert " - fuse.iterfs iterfs " in entry  # fsname and subtype
        assert "allow_other" not in entry
    finally:
        assert run_iterfs("umount", str(mnt)).returncode == 0
    assert not is_mounted(mnt)


def test_umount_stops_the_daemon(tmp_path, fuse_host):
    mnt = start_mount(tmp_path)
    done = run_iterfs("umount", str(mnt.path))
    assert done.returncode == 0, done.stderr
    assert mnt.wait_exit()
    assert not is_mounted(mnt.path)
    assert "unmounted" in mnt.log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(tmp_path, fuse_host, sig):
    mnt = start_mount(tmp_path)
    try:
        assert mnt.read("task/all")
        os.kill(mnt.pid, sig)
        assert mnt.wait_exit()
        assert not is_mounted(mnt.path)
        assert f"{sig.name}: unmounting" in mnt.log.read_text()
    finally:
        mnt.stop()


def test_kill_9_leaves_a_stale_mount_that_umount_removes(tmp_path, fuse_host):
    mnt = start_mount(tmp_path)
    try:
        os.kill(mnt.pid, signal.SIGKILL)
        assert mnt.wait_exit()
        with pytest.raises(OSError) as info:
            os.listdir(mnt.path)
        assert info.value.errno == errno.ENOTCONN
        done = run_iterfs("umount", str(mnt.path))
        assert done.returncode == 0, done.stderr
        assert not is_mounted(mnt.path)
    finally:
        mnt.stop()


def test_mount_errors_are_one_line(tmp_path, fuse_host):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    done = run_iterfs("mount", str(not_a_dir))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "not a directory" in done.stderr and "Traceback" not in done.stderr
    done = run_iterfs("umount", str(tmp_path))
    assert done.returncode == 1 and "not an iterfs mount" in done.stderr


def test_mounting_twice_is_refused(tmp_path, fuse_host):
    mnt = start_mount(tmp_path)
    try:
        done = run_iterfs("mount", str(mnt.path))
        assert done.returncode == 1 and "already an iterfs mount" in done.stderr
        assert mnt.read("task/all")
    finally:
        mnt.stop()


def test_the_mount_is_private_to_root(mount):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run([*nobody, "cat", str(mount / "task/all")], capture_output=True, text=True)
    assert done.returncode != 0 and "Permission denied" in done.stderr
    done = subprocess.run([*nobody, str(ITERFS), "mount", "/tmp"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "needs root" in done.stderr


def test_allow_other_is_refused_to_a_daemon_that_cannot_take_readers_credentials(tmp_path, fuse_host):
    """Without CAP_SETUID and CAP_SETGID (here: out of the bounding set, so out of what root's
    exec permits) no reader's credentials can be taken: the mount says so, and is not made."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    without = ["setpriv", "--bounding-set=-setuid,-setgid", "--"]
    done = subprocess.run([*without, str(ITERFS), "mount", str(mnt), "--allow-other", "--log", str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "--allow-other: taking each reader's credentials needs CAP_SETUID and CAP_SETGID" in done.stderr
    assert not is_mounted(mnt)


def test_access_answers_as_the_mode_bits_say(mount):
    """No default_permissions: iterfs answers access(2) itself, as the kernel would from the modes."""
    for path, modes in ((mount / "task/all", "r--"), (mount / "task/README", "r--"), (mount / "task", "r-x")):
        got = "".join(c if os.access(path, m) else "-" for c, m in zip("rwx", (os.R_OK, os.W_OK, os.X_OK)))
        assert got == modes, path
        assert oct(os.stat(path).st_mode & 0o777) == {"r--": "0o444", "r-x": "0o555"}[modes]
    with pytest.raises(OSError) as info:
        open(mount / "task/all", "r+b")
    assert info.value.errno == errno.EROFS


def test_foreground_daemon_tells_systemd_when_ready_and_stopping(tmp_path, fuse_host):
    import socket

    address = tmp_path / "notify"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.settimeout(60)
        daemon = subprocess.Popen([str(ITERFS), "mount", "--foreground", str(mnt)], stderr=subprocess.DEVNULL,
                                  env={**os.environ, "NOTIFY_SOCKET": str(address)})
        try:
            assert listener.recv(64) == b"READY=1"
            assert task_lines((mnt / f"task/pid={os.getpid()}").read_text())[0]["pid"] == os.getpid()
            daemon.terminate()
            assert listener.recv(64) == b"STOPPING=1"
            assert daemon.wait(timeout=60) == 0
            assert not is_mounted(mnt)
        finally:
            daemon.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
