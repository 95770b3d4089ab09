"""iterfs targets, iterfs status and log levels, against the kernel and what the test did."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess

import pytest

from conftest import run_iterfs
from helpers import ITERFS, kernel_refusal, settled, start_mount

pytestmark = pytest.mark.fuse


def test_targets_lists_every_kernel_target_with_its_parameters():
    btf = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    kernel = {m for m in re.findall(r"STRUCT 'bpf_iter__(\w+)'", btf) if "__" not in m}
    done = run_iterfs("targets")
    assert done.returncode == 0, done.stderr
    table, _, notes = done.stdout.partition("\n\n")  # the notes on refused targets follow a blank line
    lines, notes = table.splitlines(), notes.splitlines()
    assert lines[0].split() == ["TARGET", "KERNEL", "PROGRAMS", "PARAMETERS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert kernel <= set(rows)
    for name in kernel:
        code = kernel_refusal(name)  # the kernel's answer to the smallest program of the target
        if not code:
            assert rows[name].split()[1] == "yes"
        elif " through " in rows[name]:  # served by another target's walk, with the same lines
            assert rows[name].split()[1] == "yes"
            assert any(n.startswith(f"{name}: its own programs are refused by this kernel") for n in notes)
        else:
            assert rows[name].split()[1] == "refused"
            code_name = errno.errorcode[code]
            assert f"{name}: refused by this kernel ({code_name}): its files give {code_name}" in notes
    assert len(notes) == sum(1 for name in kernel if kernel_refusal(name))
    assert rows["task_vma"].split()[-3:] == ["all", "pid=", "tid="]
    assert rows["bpf_map_elem"].split()[-1] == "map_id=" and "all" not in rows["bpf_map_elem"].split()[3:]
    assert rows["cgroup"].endswith("all id= order=")


def test_status_reports_what_the_daemon_did(mount):
    before = json.loads((mount / ".iterfs" / "status").read_text())
    assert before["pid"] == mount.pid and before["mountpoint"] == str(mount.path)
    data = (mount / f"task/pid={os.getpid()}").read_bytes()
    with pytest.raises(OSError):
        (mount / "task/pid=4294967295").read_bytes()
    held = open(mount / "task/all", "rb")
    try:
        after = json.loads((mount / ".iterfs" / "status").read_text())
        assert after["open_iterators"] == before["open_iterators"] + 1
    finally:
        held.close()
    assert after["opens"] == before["opens"] + 2
    assert after["bytes_served"] == before["bytes_served"] + len(data)
    assert after["errors"].get("ENOENT", 0) == before["errors"].get("ENOENT", 0) + 1
    assert any(p["object"].endswith("/task.bpf.o") for p in after["loaded_programs"])
    status = lambda: json.loads((mount / ".iterfs" / "status").read_text())["open_iterators"]
    assert settled(status, before["open_iterators"]) == before["open_iterators"]

    done = run_iterfs("status", str(mount.path))
    assert done.returncode == 0, done.stderr
    assert f"pid {mount.pid}" in done.stdout and "task.bpf.o" in done.stdout
    assert json.loads(run_iterfs("status", "--json", str(mount.path)).stdout)["pid"] == mount.pid


def test_status_of_something_else_is_one_line(tmp_path):
    done = run_iterfs("status", str(tmp_path))
    assert done.returncode == 1 and "not an iterfs mount" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize("level, shown, hidden", [
    ("warning", [], ["INFO", "DEBUG"]),
    ("debug", ["DEBUG", "INFO"], []),
])
def test_log_levels(tmp_path, fuse_host, level, shown, hidden):
    mnt = start_mount(tmp_path, ["--log-level", level])
    try:
        mnt.read(f"task/pid={os.getpid()}")
        with pytest.raises(OSError):
            (mnt / "task/pid=0").read_bytes()
    finally:
        mnt.stop()
    log = mnt.log.read_text()
    for word in shown:
        assert f" {word} " in log
    for word in hidden:
        assert f" {word} " not in log


def test_without_the_capabilities_to_load_nothing_is_called_refused(tmp_path):
    """A process that may load no program learns that, instead of every target 'refused'."""
    drop = ["setpriv", "--bounding-set", "-bpf,-perfmon,-sys_admin"]
    done = subprocess.run([*drop, str(ITERFS), "targets"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table, _, notes = done.stdout.partition("\n\n")
    rows = [line.split() for line in table.splitlines()[1:]]
    assert rows and all(row[1] == "yes" for row in rows)
    assert "Which targets this kernel refuses is not known: this process may load no BPF iterator program: " \
           "that needs CAP_BPF and CAP_PERFMON" in notes
    (tmp_path / "mnt").mkdir()
    done = subprocess.run([*drop, str(ITERFS), "mount", str(tmp_path / "mnt")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "needs CAP_BPF" in done.stderr
