"""`iterfs cat` and the Python API read iterators without a mount, through the same code."""

from __future__ import annotations

import os

import pytest

import iterfs
from conftest import run_iterfs
from helpers import ITERFS
from helpers import maps_part, proc_fds, stopped, task_file_lines, task_lines

pytestmark = pytest.mark.bpf


def test_cat_prints_proc_maps(child):
    with stopped(child) as maps:
        done = run_iterfs("cat", f"task_vma/pid={child.pid}")
    assert done.returncode == 0, done.stderr
    assert maps_part(done.stdout) == maps


def test_cat_readme_and_several_paths(child):
    done = run_iterfs("cat", "task/README", f"task/pid={child.pid}")
    assert done.returncode == 0
    assert done.stdout.startswith("task:")
    assert f"{child.pid} " in done.stdout


def test_cat_errors_are_one_line_with_status_1():
    for path, why in [("task/pid=4294967295", "no process 4294967295"), ("task/pid=abc", "positive decimal"),
                      ("nope/all", "no such iterator")]:
        done = run_iterfs("cat", path)
        assert done.returncode == 1
        assert done.stderr.strip().count("\n") == 0 and why in done.stderr and "Traceback" not in done.stderr


def test_cat_into_a_closed_pipe_is_quiet():
    import subprocess

    done = subprocess.run(f"'{ITERFS}' cat task_vma/all | head -c 10",
                          shell=True, capture_output=True, text=True)
    assert len(done.stdout) == 10 and done.stderr == ""


def test_usage_errors_exit_2():
    assert run_iterfs("frobnicate").returncode == 2
    assert run_iterfs("cat").returncode == 2


def test_read_and_stream(child):
    rows = task_lines(iterfs.read("task", pid=child.pid))
    assert [r["pid"] for r in rows] == [child.pid]
    chunks = list(iterfs.stream("task_file", pid=child.pid))
    assert all(isinstance(c, bytes) for c in chunks)
    assert {r["fd"]: r["path"] for r in task_file_lines(b"".join(chunks).decode())} == proc_fds(child.pid)
    with pytest.raises(ValueError, match="unknown parameter"):
        iterfs.read("task", cgroup=1)


def test_session_releases_its_links(child):
    from helpers import iter_links_of

    links = iter_links_of(os.getpid())  # the session's links are this process's
    with iterfs.Session() as session:
        stream = session.stream("task", pid=child.pid)
        next(stream)
        assert iter_links_of(os.getpid()) == links + 1
        stream.close()
        assert iter_links_of(os.getpid()) == links
        assert session.iterators.open_count == 0
