"""The wheel: `python -m build` packs the BPF objects; a fresh venv without clang mounts from it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, missing
from helpers import Mount, is_mounted, task_lines

pytestmark = pytest.mark.fuse

# What builds the objects and what the installed package must not need: kept off PATH.
TOOLCHAIN = ("clang", "llc", "llvm-", "bpftool")
SYSTEM_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def test_wheel_carries_the_objects_and_mounts_in_a_fresh_venv_without_clang(tmp_path, fuse_host):
    if importlib.util.find_spec("build") is None:
        missing("the build package (pip install -e '.[test]')")
    if not (ROOT / ".git").exists():
        missing(f"a git checkout at {ROOT}")
    src = _working_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    done = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], tmp_path, timeout=600)
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout[-6000:]}"

    # what the source tree gives, from a copy with no built objects: the build hook made them
    objects = {f"iterfs/bpf/{c.name.removesuffix('.c')}.o" for c in (src / "bpf").glob("*.bpf.c")}
    readmes = {f"iterfs/readmes/{p.name}" for p in (src / "iterfs" / "readmes").iterdir() if p.is_file()}
    assert objects and readmes
    [wheel] = dist.glob("*.whl")
    assert wheel.name.endswith(f"-py3-none-linux_{os.uname().machine}.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n for n in names if n.startswith("iterfs/bpf/")} == objects
    assert readmes <= names, sorted(readmes - names)
    [sdist] = dist.glob("*.tar.gz")
    carried = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    sources = {f"bpf/{p.name}" for p in (src / "bpf").iterdir() if p.name.endswith((".bpf.c", ".bpf.h"))}
    assert sources | {"bpf/Makefile", "build_bpf.py"} <= carried
    assert "bpf/vmlinux.h" not in carried

    venv = tmp_path / "venv"
    done = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{_system_bin_without_toolchain(tmp_path / 'bin')}"
    assert not any(shutil.which(tool, path=env["PATH"]) for tool in ("clang", "bpftool"))
    done = _run([str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel)], tmp_path, 900, env)
    assert done.returncode == 0, f"pip install of the wheel failed:\n{done.stdout[-6000:]}"
    done = _run([str(venv / "bin" / "python"), "-c", "from iterfs.catalog import BUNDLED_DIR; print(BUNDLED_DIR)"],
                tmp_path, 60, env)
    bundled = Path(done.stdout.strip())
    assert done.returncode == 0 and bundled.is_relative_to(venv), done.stdout
    assert {f"iterfs/bpf/{p.name}" for p in bundled.glob("*.bpf.o")} == objects

    iterfs = venv / "bin" / "iterfs"
    mnt, log, pid_file = tmp_path / "mnt", tmp_path / "iterfs.log", tmp_path / "iterfs.pid"
    mnt.mkdir()
    args = [str(iterfs), "mount", str(mnt), "--log", str(log), "--pid-file", str(pid_file)]
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not pid_file.exists():
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
        pytest.fail(f"iterfs mount from the wheel failed ({done.returncode}): {done.stderr.strip()}\n{tail}")
    mount = Mount(mnt, log, int(pid_file.read_text()), args)
    try:
        cmdline = Path(f"/proc/{mount.pid}/cmdline").read_bytes().split(b"\0")
        assert os.fsencode(iterfs) in cmdline, (cmdline, mount.log_tail())
        rows = task_lines(mount.read(f"task/pid={os.getpid()}"))
        assert rows and rows[0]["pid"] == os.getpid(), mount.log_tail()
        assert {row["tgid"] for row in rows} == {os.getpid()}, mount.log_tail()
        done = subprocess.run([str(iterfs), "umount", str(mnt)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{done.stderr}\n{mount.log_tail()}"
        assert mount.wait_exit(), mount.log_tail()
        assert not is_mounted(mnt)
    finally:
        mount.stop()


def _run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run away from the checkout, whose iterfs/ python -c would import from the working directory."""
    return subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def _working_tree(dest: Path) -> Path:
    """The checkout as committed plus local changes: tracked and untracked files, nothing
    git ignores, so no built objects and no vmlinux.h (as in a fresh clone)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout
    for name in os.fsdecode(listed).split("\0"):
        if name and (ROOT / name).is_file():  # a tracked file deleted locally is not in the tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def _system_bin_without_toolchain(directory: Path) -> Path:
    """One directory of links to every system command but clang, llc, llvm-* and bpftool."""
    directory.mkdir()
    for system in SYSTEM_BIN:
        for tool in sorted(Path(system).iterdir()) if os.path.isdir(system) else ():
            link = directory / tool.name
            if tool.name.startswith(TOOLCHAIN) or link.is_symlink() or not tool.is_file() or not os.access(tool, os.X_OK):
                continue
            link.symlink_to(tool)
    return directory
