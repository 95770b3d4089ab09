"""Which iterator targets the running kernel has, read from its BTF, and which it refuses.

Every target registered with DEFINE_BPF_ITER_FUNC() has a context type
``struct bpf_iter__<target>`` in the BTF of vmlinux or of the module that
registers it. Names are found with one regular-expression pass over the BTF
string sections, then each candidate is confirmed to be a struct by libbpf.

Having a target is not being allowed to use it: hardened, locked-down or
locally patched kernels refuse every program for some targets (EPERM or
EACCES before any instruction is verified). The kernel is asked with the
smallest program there is, one per target.
"""

from __future__ import annotations

import errno
import logging
import re
from pathlib import Path
from typing import Iterable

from . import _libbpf

log = logging.getLogger(__name__)

BTF_DIR = Path("/sys/kernel/btf")
# what a policy answers; anything else (EINVAL from an older kernel, say) is not a refusal
REFUSALS = frozenset({errno.EPERM, errno.EACCES})
_CANDIDATE = re.compile(rb"\0bpf_iter__([a-z0-9_]+)(?=\0)")


class NoPrivilege(PermissionError):
    """The kernel refuses every program to this process: a missing capability, not a policy."""


def require_btf(btf_dir: Path = BTF_DIR) -> None:
    """Raise FileNotFoundError, saying what the kernel lacks, unless it has BTF."""
    if not (btf_dir / "vmlinux").exists():
        raise FileNotFoundError(errno.ENOENT, f"no kernel BTF at {btf_dir / 'vmlinux'}: iterfs needs a kernel "
                                              "built with CONFIG_DEBUG_INFO_BTF=y")


def kernel_targets(btf_dir: Path = BTF_DIR) -> frozenset[str]:
    """The names of the iterator targets in the BTF of vmlinux and its modules under btf_dir."""
    require_btf(btf_dir)
    vmlinux = btf_dir / "vmlinux"
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


def refusal(code: int) -> str:
    """How the README, the status and iterfs targets say that the kernel refuses a target."""
    return f"refused by this kernel ({errno.errorcode.get(code, code)})"


def refused_targets(names: Iterable[str]) -> dict[str, int]:
    """The targets of names whose every program the kernel refuses: target -> errno.

    Only vmlinux targets are asked (a module's would need its BTF object fd);
    a module target the kernel refuses shows when its own program is refused.
    """
    refused, asked = {}, 0
    base = _libbpf.btf_load_vmlinux()
    try:
        for name in sorted(names):
            func = _libbpf.btf_find_func(base, f"bpf_iter_{name}")
            if func is None:
                continue
            asked += 1
            try:
                _libbpf.probe_iter_target(func)
            except OSError as e:
                if e.errno in REFUSALS:
                    refused[name] = e.errno
                else:
                    log.debug("%s: the probe program failed to load (%s): not a refusal", name, e.strerror)
    finally:
        _libbpf.btf_free(base)
    if asked and len(refused) == asked:
        # no kernel policy refuses everything: this process may not load programs at all
        code = next(iter(refused.values()))
        raise NoPrivilege(code, "this process may load no BPF iterator program: that needs CAP_BPF and "
                                "CAP_PERFMON (or CAP_SYS_ADMIN), as root has")
    return refused
