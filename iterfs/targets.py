"""Which iterator targets the running kernel has, read from its BTF.

Every target registered with DEFINE_BPF_ITER_FUNC() has a context type
``struct bpf_iter__<target>`` in the BTF of vmlinux or of the module that
registers it. Names are found with one regular-expression pass over the BTF
string sections, then each candidate is confirmed to be a struct by libbpf.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from . import _libbpf

log = logging.getLogger(__name__)

BTF_DIR = Path("/sys/kernel/btf")
_CANDIDATE = re.compile(rb"\0bpf_iter__([a-z0-9_]+)(?=\0)")


class NoBTFError(RuntimeError):
    pass


def kernel_targets(btf_dir: Path = BTF_DIR) -> frozenset[str]:
    vmlinux = btf_dir / "vmlinux"
    if not vmlinux.exists():
        raise NoBTFError(
            f"no kernel BTF at {vmlinux}: iterfs needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )
    base = _libbpf.btf_load_vmlinux()
    try:
        found = _confirmed(base, _candidates(vmlinux))
        for module in sorted(btf_dir.iterdir()):
            if module.name == "vmlinux":
                continue
            names = _candidates(module) - found
            if not names:
                continue
            try:
                split = _libbpf.btf_parse_split(str(module), base)
            except OSError as e:
                log.debug("skipping module BTF %s: %s", module, e)
                continue
            try:
                found |= _confirmed(split, names)
            finally:
                _libbpf.btf_free(split)
    finally:
        _libbpf.btf_free(base)
    return frozenset(found)


def _candidates(path: Path) -> set[str]:
    # "__" inside the name marks a BTF type-tag variant (bpf_iter__task__safe_trusted), not a target
    return {m.decode() for m in _CANDIDATE.findall(path.read_bytes()) if b"__" not in m}


def _confirmed(btf: int, names: set[str]) -> set[str]:
    return {name for name in names if _libbpf.btf_find_struct(btf, f"bpf_iter__{name}")}
