"""Build hooks for setuptools: the BPF objects go into the wheel, built when they are missing.

pyproject.toml names these classes in [tool.setuptools.cmdclass]; this file is
no part of the installed package.

build_py copies the package, with the objects a checkout or an sdist already
holds (iterfs/bpf/*.bpf.o, package data), then runs `make -C bpf` into the
build directory when an object is missing or older than its bpf/*.bpf.c or
a bpf/*.bpf.h. So a wheel built from an sdist that carries the objects needs no
clang, and one built from a fresh clone needs clang, bpftool and kernel BTF,
as `make bpf` does. An editable install (`pip install -e`, `make setup`)
builds nothing: it uses iterfs/bpf/ in the checkout, which `make bpf` fills.

bdist_wheel tags the wheel py3-none-<platform>: no Python ABI, but objects in
the build machine's byte order, built with -D__TARGET_ARCH_<its arch>.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.errors import ExecError

try:  # setuptools >= 70.1 has its own; before, the wheel package's
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "bpf"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
NEEDS = f"building them needs make, clang, bpftool and the kernel BTF at {VMLINUX_BTF}"


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            build_objects(Path(self.build_lib) / "iterfs" / "bpf")


class BdistWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")


def build_objects(out: Path) -> None:
    """Every object bpf/*.bpf.c gives, up to date in out; nothing else there."""
    sources = sorted(SOURCES.glob("*.bpf.c"))
    if not sources:
        raise ExecError(f"no BPF sources in {SOURCES}: the source tree or sdist is incomplete")
    objects = [out / (source.name[: -len(".c")] + ".o") for source in sources]
    for stale in set(out.glob("*.bpf.o")) - set(objects):  # left behind by a renamed or removed program
        stale.unlink()
    headers = max((path.stat().st_mtime for path in SOURCES.glob("*.bpf.h")), default=0)
    # as make sees it: an object is older than its .bpf.c or a .bpf.h (but vmlinux.h, not in an sdist)
    if all(obj.exists() and obj.stat().st_mtime >= max(src.stat().st_mtime, headers)
           for src, obj in zip(sources, objects)):
        return
    problem = _missing()
    if problem:
        raise ExecError(f"cannot build the BPF objects (iterfs/bpf/*.bpf.o): {problem}; {NEEDS}")
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["make", "-C", str(SOURCES), f"OUT={out.resolve()}"])
    if done.returncode != 0:
        raise ExecError(f"make -C bpf failed (exit {done.returncode}, see above); {NEEDS}")
    missing = [obj.name for obj in objects if not obj.exists()]
    if missing:
        raise ExecError(f"make -C bpf did not build {', '.join(missing)}")


def _missing() -> str | None:
    """What would stop make from building the objects, before it fails less clearly."""
    for tool in ("make", os.environ.get("CLANG", "clang")):
        if not shutil.which(tool):
            return f"{tool} is not on PATH"
    if (SOURCES / "vmlinux.h").exists():
        return None
    bpftool = os.environ.get("BPFTOOL", "bpftool")
    if not shutil.which(bpftool):
        return f"{bpftool} is not on PATH"
    if not os.access(VMLINUX_BTF, os.R_OK):
        return f"this kernel has no BTF at {VMLINUX_BTF} (CONFIG_DEBUG_INFO_BTF=y)"
    return None
