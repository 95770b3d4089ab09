"""The iterfs command as on a kernel whose local policy refuses some targets.

Some kernels refuse every program for a target with EPERM, before a single
instruction is verified (the machines this was seen on refuse bpf_map_elem,
sockmap and bpf_sk_storage_map). This one does not, so the tests that must
see such a kernel run iterfs through this wrapper: it answers EPERM where
such a kernel does, at the libbpf boundary, and leaves every other call to
the real kernel.

    ITERFS_REFUSE=sockmap,bpf_map_elem    every program for these, the probe included
    ITERFS_REFUSE_LOADS=task_vma          the programs for these, though the probe loads
    python refusing_kernel.py mount MNT ...   (the arguments of iterfs)
"""

from __future__ import annotations

import errno
import os
import sys

from iterfs import _libbpf
from iterfs.cli import main
from iterfs.objects import read_object

REFUSED = {t for t in os.environ.get("ITERFS_REFUSE", "").split(",") if t}
REFUSED_LOADS = REFUSED | {t for t in os.environ.get("ITERFS_REFUSE_LOADS", "").split(",") if t}

_funcs: dict[int, str] = {}  # BTF id -> target, for the probe
_targets: dict[int, set[str]] = {}  # bpf_object -> the targets its programs attach to


def _wrap(name):
    real = getattr(_libbpf, name)

    def install(fake):
        setattr(_libbpf, name, lambda *args: fake(real, *args))
    return install


@_wrap("btf_find_func")
def _find_func(real, btf, name):
    found = real(btf, name)
    if found is not None and name.startswith("bpf_iter_"):
        _funcs[found] = name[len("bpf_iter_"):]
    return found


@_wrap("probe_iter_target")
def _probe(real, btf_id):
    if _funcs.get(btf_id) in REFUSED:
        raise _libbpf.LibbpfError(errno.EPERM, "bpf_prog_load: Operation not permitted")
    return real(btf_id)


@_wrap("object_open")
def _open(real, path):
    obj = real(path)
    _targets[obj] = {program.target for program in read_object(path).programs}
    return obj


@_wrap("object_set_iter_target")
def _set_target(real, obj, program, target):
    real(obj, program, target)
    _targets[obj] = {target}


@_wrap("object_load")
def _load(real, obj):
    if _targets.get(obj, set()) & REFUSED_LOADS:
        raise _libbpf.LibbpfError(errno.EPERM, "bpf_object__load: Operation not permitted")
    return real(obj)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
