"""Shared fixtures: host capability checks, real mounts, child processes.

Under CI=true a missing capability (root, /dev/fuse, bpf(), BTF) fails the
run; elsewhere it skips the tests that need it, saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ITERFS, Child, Mount, make_user, remove_user, start_mount, world_traversable_dir

IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parent.parent


def missing(what: str) -> None:
    pytest.fail(f"required in CI: {what}") if IN_CI else pytest.skip(f"host lacks {what}")


def _bpf_problem() -> str | None:
    if os.geteuid() != 0:
        return "root (bpf() and FUSE mounts need it)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel BTF (/sys/kernel/btf/vmlinux)"
    if not any((ROOT / "iterfs" / "bpf").glob("*.bpf.o")):
        return "built BPF objects (run make)"
    try:
        import iterfs

        with iterfs.Session() as session:
            session.read("task", pid=os.getpid())
    except Exception as e:  # any failure here means the kernel cannot run our programs
        return f"a working bpf() ({e})"
    return None


def _fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse"
    if not shutil.which("fusermount3"):
        return "fusermount3 (package fuse3)"
    return None


@pytest.fixture(scope="session")
def bpf_host() -> None:
    problem = _bpf_problem()
    if problem:
        missing(problem)


@pytest.fixture(scope="session")
def fuse_host(bpf_host) -> None:
    problem = _fuse_problem()
    if problem:
        missing(problem)


@pytest.fixture(autouse=True)
def _capabilities(request):
    if request.node.get_closest_marker("fuse"):
        request.getfixturevalue("fuse_host")
    elif request.node.get_closest_marker("bpf"):
        request.getfixturevalue("bpf_host")


@pytest.fixture(scope="module")
def mount(tmp_path_factory, fuse_host):
    """A real mount made by the installed `iterfs mount`, with --debug logging."""
    mnt = start_mount(tmp_path_factory.mktemp("mnt"), extra=["--debug"])
    yield mnt
    mnt.stop()


@pytest.fixture(scope="session")
def users(bpf_host):
    """Two system users made for the run (and removed after it), with no processes of their own."""
    made = [make_user(), make_user()]
    yield made
    for user in made:
        remove_user(user)


@pytest.fixture(scope="module")
def shared(fuse_host):
    """A mount with --allow-other, in a directory every user may pass through."""
    directory = world_traversable_dir()
    mnt = start_mount(directory, extra=["--allow-other", "--debug"])
    yield mnt
    mnt.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def netns(tmp_path):
    """A network namespace with sockets of every kind the net targets walk (test_namespaces.NetNs)."""
    from test_namespaces import NetNs

    ns = NetNs(tmp_path)
    yield ns
    ns.close()


@pytest.fixture
def pidns(tmp_path):
    """A pid namespace with a mount of its own /proc and a few processes (test_namespaces.PidNs)."""
    from test_namespaces import PidNs

    ns = PidNs(tmp_path)
    yield ns
    ns.kill()


@pytest.fixture
def bpffs(tmp_path):
    """A bpffs of the test's own, for pinning maps it creates (unmounting frees them)."""
    path = tmp_path / "bpffs"
    path.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def child():
    with Child() as c:
        yield c


# A failing test that used a mount shows the daemon's log.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Mount):
                report.sections.append(("iterfs daemon log", value.log_tail()))


def run_iterfs(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(ITERFS), *args], capture_output=True, text=True, check=check, timeout=120)
