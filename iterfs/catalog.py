"""Which program serves which target: the bundled objects met with the kernel's targets.

A target is served when the running kernel has it and an object in the
programs directory holds an iterator program for it. A target the kernel has
and no program knows is served by the generic program (one line per object,
its address), attached to that target at load. Each target's README ships
beside the package (iterfs/readmes/<target>).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .objects import ObjectError, read_object
from .targets import kernel_targets

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "bpf"
READMES_DIR = Path(__file__).parent / "readmes"
# the section target of bpf/generic.bpf.c: a placeholder, not a kernel target
GENERIC = "generic"

_GENERIC_README = """{target}: one line per object, walked when the file is opened.

No bundled program knows this target's objects yet: iterfs serves it with its
generic program, attached to this target.

Columns (a header line comes before the first object):
  object   the kernel address of the object visited (the second member of
           struct bpf_iter__{target})

Files:
  all      every object, e.g. {target}/all

If the kernel needs parameters to walk this target, reads fail with EIO and
the daemon log says why.
"""


class CatalogError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    name: str
    object_path: Path
    program: str
    attach: str | None = None  # a target to attach the program to at load, instead of its section's

    @property
    def readme(self) -> str:
        if self.attach:
            return _GENERIC_README.format(target=self.name)
        try:
            return (READMES_DIR / self.name).read_text()
        except FileNotFoundError:
            return f"{self.name}: served by program {self.program} of {self.object_path.name}.\n"


class Catalog:
    def __init__(self, bpf_dir: Path = BUNDLED_DIR, kernel: frozenset[str] | None = None):
        self.bpf_dir = Path(bpf_dir)
        self.kernel = kernel_targets() if kernel is None else kernel
        self.targets: dict[str, Target] = {}
        self._generic: tuple[Path, str] | None = None
        objects = sorted(self.bpf_dir.glob("*.bpf.o"))
        if not objects:
            raise CatalogError(f"no BPF objects in {self.bpf_dir}: build them with 'make'")
        for path in objects:
            self._add(path)
        if self._generic:
            path, program = self._generic
            for name in sorted(self.kernel - set(self.targets)):
                log.info("%s: no program knows this target, serving it with %s", name, path.name)
                self.targets[name] = Target(name, path, program, attach=name)

    def _add(self, path: Path) -> None:
        try:
            obj = read_object(path)
        except ObjectError as e:
            log.error("ignoring %s", e)
            return
        if not obj.programs:
            log.error("ignoring %s: no iterator programs (no SEC(\"iter/...\"))", path)
            return
        for program in obj.programs:
            if program.target == GENERIC:
                self._generic = (path, program.name)
            elif program.target not in self.kernel:
                log.info("%s: this kernel has no iterator target %r", path.name, program.target)
            elif program.target in self.targets:
                log.warning("%s: target %r is already served by %s", path.name, program.target,
                            self.targets[program.target].object_path.name)
            else:
                self.targets[program.target] = Target(program.target, path, program.name)

    def get(self, name: str) -> Target:
        try:
            return self.targets[name]
        except KeyError:
            why = "this kernel has no such iterator" if name not in self.kernel else "no program serves it"
            raise LookupError(f"target {name!r}: {why}") from None
