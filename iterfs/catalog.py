"""Which program serves which target: the bundled objects met with the kernel's targets.

A target is served when the running kernel has it and an object in the
programs directory holds an iterator program for it. A target the kernel has
and no program knows is served by the generic program (one line per object,
its address), attached to that target at load. Each target's README ships
beside the package (iterfs/readmes/<target>).

A target the kernel refuses (discovery.refused_targets) stays in the catalog,
marked with the kernel's errno, unless another target can make the same
lines: bpf_map_elem is then served by an iter/bpf_map program that walks the
one map (bpf_map_elem_walk.bpf.o), loaded once per map.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, NamedTuple

from . import fields as fields_mod, params as params_mod, probes
from .btf import Global, read_globals
from .discovery import NoPrivilege, kernel_targets, refusal, refused_targets
from .errors import NotFound
from .objects import ObjectError, read_object
from .views import FileIdentity, UserObjects, View, ViewsError, open_object

log = logging.getLogger(__name__)
# its own logger: a one-off reader (iterfs cat) need not hear of targets it does not read
refusals = logging.getLogger(__name__ + ".refusals")

BUNDLED_DIR = Path(__file__).parent / "bpf"
READMES_DIR = Path(__file__).parent / "readmes"
# the section target of bpf/generic.bpf.c: a placeholder, not a kernel target
GENERIC = "generic"


class Walk(NamedTuple):
    """How a refused target's lines are made by a program of another target."""

    via: str  # the target the program is for
    object_name: str  # in the programs directory; not scanned as a program of `via`
    program: str
    placeholder: str  # the object's map that stands for the map named by map_id=


WALKS = {"bpf_map_elem": Walk("bpf_map", "bpf_map_elem_walk.bpf.o", "dump_bpf_map_elem", "elems")}
# bpf/fields.bpf.c: serves <target>/fields=.../ for every target, attached to it at load
# (its section's target is a placeholder, as the generic program's is)
FIELDS_OBJECT, FIELDS_PROGRAM, FIELDS_PLACEHOLDER = "fields.bpf.o", "dump_fields", "fields"

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


_VIEW_README = """{target}/{view}: the output of program {program} of {path},
walked when a file is opened. What a line holds is up to that program.

Files: the same as in {target}/ (see ../README): all, when {target} can walk
without parameters, and the parameter files, e.g. {target}/{view}/all.
"""


_FIELDS_README = """
Any member of these objects, as this kernel's BTF lays them out (no BPF to write):
  FIELDS                        what the fields may be: members, one level into embedded structs
  FIELDS.<path>                 the members at path, a struct or a pointer to one
  fields=<name>,<name>,.../all  those members of every object (all.json: JSON Lines),
                                e.g. {target}/fields=<name>,<name>/all; its README says more
"""


def _globals_text(schema: params_mod.ViewSchema, globals_: tuple[Global, ...]) -> str:
    if not globals_:
        return ""
    target = schema.target
    usable = [g for g in globals_ if g in schema.globals.values()]
    lines = ["", "Globals of the program. Integers and char arrays are parameters too, alone or",
             "after the target's, as global.NAME=VALUE; a global whose name is not a parameter of",
             f"{target} may be named without global. (a file name spells it so):",
             f"e.g. {target}/<view>/{schema.key_of(usable[0])}=1" if usable else "(none can be set)", ""]
    for g in globals_:
        how = f"the parameter {schema.key_of(g)}=" if g in usable else "not settable"
        lines.append(f"  {g.name:<20} {g.ctype:<24} {g.section}, {how}")
    return "\n".join(lines) + "\n"


def _refused_text(target: str, code: int) -> str:
    return (f"{target}: {refusal(code)}. The kernel refuses every program for this\n"
            f"target (a local policy, or a hardened or locked-down kernel), so its files give\n"
            f"{errno.errorcode.get(code, code)}. What they would hold:\n")


class CatalogError(RuntimeError):
    pass


@dataclass(frozen=True)
class Recipe:
    """How to load the program that serves a target, or a user's view of it, with its values.

    Programs keeps one load per recipe (less its schema and README); a
    target's own recipe lives as long as the catalog, a view's is made per
    open from the views as the last look at the objects directories found them.
    """

    target: str  # the kernel's name of the iterator target
    object_path: Path
    program: str
    schema: params_mod.Schema = field(compare=False, repr=False)
    attach: str | None = None  # a target to attach the program to at load, instead of its section's
    view: str | None = None  # a user's view of the target: the directory MNT/<target>/<view>/
    file_identity: FileIdentity | None = None  # a user's object as read: a new file is a new load
    global_values: tuple[tuple[str, int, bytes], ...] = ()  # (section, offset, bytes) written before load
    globals: tuple[Global, ...] = field(default=(), compare=False)  # a view's program globals
    refused: int | None = None  # the errno with which this kernel refuses every program of the target
    through: str | None = None  # the program is another target's (WALKS): its params are not the link's
    maps: tuple[tuple[str, int], ...] = ()  # (map of the object, id of the existing map it stands for)
    fields: fields_mod.FieldList | None = field(default=None, compare=False)  # <target>/fields=.../
    rule: str | None = field(default=None, compare=False)  # a view's declared rule for readers (access.py)

    @contextlib.contextmanager
    def object_file(self) -> Iterator[str]:
        """A path libbpf can open that is the very file that was read and checked (its identity)."""
        if self.file_identity is None:  # bundled: the package's own file
            yield str(self.object_path)
            return
        try:
            fd = open_object(self.object_path, self.file_identity)
        except ViewsError as e:
            raise OSError(errno.ESTALE, f"{self.object_path}: {e}") from None
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)

    @functools.cached_property
    def readme(self) -> str:
        """Made once per recipe: a target's own lives as long as the mount."""
        if self.refused:
            return _refused_text(self.target, self.refused) + "\n" + replace(self, refused=None).readme
        if self.fields:
            return self.fields.readme
        if self.view:
            return _VIEW_README.format(target=self.target, view=self.view, path=self.object_path,
                                       program=self.program) + _globals_text(self.schema, self.globals)
        if self.attach:
            return _GENERIC_README.format(target=self.target)
        try:
            text = (READMES_DIR / self.target).read_text()
        except FileNotFoundError:
            text = f"{self.target}: served by program {self.program} of {self.object_path.name}.\n"
        return text + _FIELDS_README.format(target=self.target)


class Catalog:
    """Every target's recipe, and the users' views, as this kernel and these directories have them."""

    def __init__(self, bpf_dir: Path = BUNDLED_DIR, kernel: frozenset[str] | None = None,
                 objects: list[Path] | None = None):
        self.bpf_dir = Path(bpf_dir)
        self.kernel = kernel_targets() if kernel is None else kernel
        self.cannot_load: str | None = None  # why this process may load no program, if it may not
        try:
            self.refused = refused_targets(self.kernel)  # target -> errno
        except NoPrivilege as e:
            self.refused, self.cannot_load = {}, e.strerror
        try:
            self.user_objects = UserObjects(list(objects or []), self.kernel)
        except ViewsError as e:
            raise CatalogError(str(e)) from None
        self.targets: dict[str, Recipe] = {}
        self.absent: dict[str, str] = {}  # bundled programs whose target this kernel lacks: target -> program
        self._generic: tuple[Path, str] | None = None
        self._percpu_flags: dict[str, Global] = {}  # a target served by a walk -> its program's `percpu`
        self._fields_globals: tuple[Global, ...] | None = None  # of FIELDS_OBJECT, read on first use
        objects = sorted(self.bpf_dir.glob("*.bpf.o"))
        if not objects:
            raise CatalogError(f"no BPF objects in {self.bpf_dir}: build them with 'make'")
        not_targets = {walk.object_name for walk in WALKS.values()} | {FIELDS_OBJECT}
        for path in objects:
            if path.name not in not_targets:
                self._add(path)
        if self._generic:
            path, program = self._generic
            for name in sorted(self.kernel - set(self.targets)):
                log.info("%s: no program knows this target, serving it with %s", name, path.name)
                self.targets[name] = Recipe(name, path, program, params_mod.schema_for(name), attach=name)
        for name, code in sorted(self.refused.items()):
            if name in self.targets:
                self._refuse(name, code)

    def _refuse(self, name: str, code: int) -> None:
        """Serve a refused target through another target where one can, else mark it refused."""
        why = f"this kernel refuses every program for target {name} ({errno.errorcode.get(code, code)})"
        walk = WALKS.get(name)
        percpu = self._walk_flag(walk) if walk and walk.via in self.targets and walk.via not in self.refused \
            else None
        if percpu:
            refusals.warning("%s; serving it through %s with %s", why, walk.via, walk.object_name)
            self._percpu_flags[name] = percpu
            self.targets[name] = Recipe(name, self.bpf_dir / walk.object_name, walk.program,
                                        params_mod.schema_for(name), through=walk.via)
        else:
            refusals.warning("%s; its files give %s", why, errno.errorcode.get(code, code))
            self.targets[name] = replace(self.targets[name], refused=code)

    def _walk_flag(self, walk: Walk) -> Global | None:
        """The walk program's `percpu` global, or None if its object is missing or not the one we built."""
        try:
            return next(g for g in read_globals(self.bpf_dir / walk.object_name) if g.name == "percpu")
        except (ObjectError, StopIteration) as e:
            log.error("%s: cannot serve through %s: %s", walk.object_name, walk.via, e or "no global percpu")
            return None

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
                self.absent[program.target] = program.name
            elif program.target in self.targets:
                log.warning("%s: target %r is already served by %s", path.name, program.target,
                            self.targets[program.target].object_path.name)
            else:
                self.targets[program.target] = Recipe(program.target, path, program.name,
                                                      params_mod.schema_for(program.target))

    def schema(self, name: str, view: str | None = None) -> params_mod.Schema:
        """The parameters the files of a target (or of a view of it, globals included) take."""
        return self.recipe(name, view).schema

    def recipe(self, name: str, view: str | None = None, params: params_mod.Params | None = None,
               fields: str | None = None, as_json: bool = False) -> Recipe:
        """How to load the program serving target name, or the user's view of it as the last
        look at the objects directories found it, with the global values params give it,
        or the program that prints the fields a fields= directory names (as_json: their records)."""
        if fields is not None:
            return self._fields(name, fields, as_json)
        if view is None:
            try:
                recipe = self.targets[name]
            except KeyError:
                why = "this kernel has no such iterator" if name not in self.kernel else "no program serves it"
                raise NotFound(f"target {name!r}: {why}") from None
            return self._walk(recipe, params) if recipe.through and params is not None else recipe
        found = self.views(name).get(view)
        if found is None:
            raise NotFound(f"no view {name}/{view} in {', '.join(map(str, self.user_objects.directories))}")
        schema = params_mod.ViewSchema(params_mod.schema_for(name), found.globals)
        # a view's program is refused as the target's own is: its files say so without a load
        return Recipe(name, found.object_path, found.program, schema, view=view, file_identity=found.identity,
                      global_values=schema.global_values(params) if params is not None else (),
                      globals=found.globals, refused=self.refused.get(name), rule=found.rule)

    def field_list(self, name: str, spec: str) -> fields_mod.FieldList:
        """The fields spec names in target name's objects; NotFound (a FieldError) saying why not."""
        self.recipe(name)  # NotFound for a target this mount does not serve
        if self._fields_globals is None:  # here, where lookups may block: opens then need not
            self._fields_globals = read_globals(self.bpf_dir / FIELDS_OBJECT)
        return fields_mod.resolve(name, spec)

    def _fields(self, name: str, spec: str, as_json: bool) -> Recipe:
        # the fields program is the target's own, refused as its other programs are (a target
        # served through another's program included): its files say so without a load
        field_list = self.field_list(name, spec)
        return Recipe(name, self.bpf_dir / FIELDS_OBJECT, FIELDS_PROGRAM, self.targets[name].schema, attach=name,
                      global_values=field_list.global_values(self._fields_globals, as_json), fields=field_list,
                      refused=self.refused.get(name))

    def _walk(self, recipe: Recipe, params: params_mod.Params) -> Recipe:
        """The load that walks the one map params name: its placeholder map is that map."""
        map_id = dict(params.values)["map_id"]
        map_type = probes.map_type_of(map_id)
        if map_type is None:
            raise params_mod.ParamError(f"no BPF map with id {map_id}")
        # the verifier allows per-CPU lookups in per-CPU maps only: the program is told which at load
        percpu = self._percpu_flags[recipe.target]
        value = bytes([map_type in params_mod.PERCPU_MAP_TYPES])
        return replace(recipe, maps=((WALKS[recipe.target].placeholder, map_id),),
                       global_values=((percpu.section, percpu.offset, value),))

    def views(self, name: str) -> dict[str, View]:
        """The views of target name as the last look at the objects directories found them."""
        return self.user_objects.views(name) if name in self.targets else {}

    def refresh_views(self) -> None:
        """Look at the objects directories again. Blocks: event loops run it in a worker thread."""
        self.user_objects.refresh()
