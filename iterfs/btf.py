"""BTF, the kernel's and an object's, read through libbpf's own ``btf__*`` API.

    vmlinux()             the running kernel's types (/sys/kernel/btf/vmlinux), loaded once
    read_globals(path)    the global variables of a BPF object, without loading it

``Types`` wraps one BTF as libbpf holds it: types by id, names looked up
(and kept: ``btf__find_by_name_kind`` scans every type), and the C spelling
of a type. An object's BTF comes from ``bpf_object__open``, which loads
nothing into the kernel and fills in what clang leaves out (the offsets of
global variables in their sections). Each data section is a DATASEC whose
entries point at VARs: a name, a linkage and a type, which says both how a
person reads the variable (``const volatile __u32``) and what it is
underneath (a 32-bit unsigned integer).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from . import _libbpf
from ._libbpf import BtfType
from .objects import EM_BPF, ObjectError

K = _libbpf  # the BTF_KIND_* constants
_QUALIFIERS = {K.BTF_KIND_CONST: "const", K.BTF_KIND_VOLATILE: "volatile", K.BTF_KIND_RESTRICT: "restrict",
               K.BTF_KIND_TYPE_TAG: ""}  # in C order; type tags are annotations, not C
WRAPPERS = frozenset(_QUALIFIERS) | {K.BTF_KIND_TYPEDEF}  # what is peeled off to find what a type is
_TAGS = {K.BTF_KIND_STRUCT: "struct", K.BTF_KIND_UNION: "union", K.BTF_KIND_ENUM: "enum",
         K.BTF_KIND_ENUM64: "enum", K.BTF_KIND_FWD: "struct"}
INT_SIGNED, INT_BOOL = 1, 4  # BTF_INT_ENCODING bits
_LINKAGE_STATIC, _LINKAGE_GLOBAL = 0, 1  # 2 is extern: no storage in this object


@dataclass(frozen=True)
class Global:
    name: str  # the C variable name
    section: str  # ".bss", ".data", ".rodata", or a custom ".data.*"/".rodata.*"
    offset: int  # bytes from the start of that section
    size: int  # bytes
    ctype: str  # the C type as declared: "const volatile __u32", "char[16]", "struct foo"
    kind: str  # "int" (integers, bool, enums), "chars" (array of 1-byte non-bool ints), "other"
    signed: bool  # for kind "int"
    int_bits: int  # for kind "int": size * 8
    is_static: bool  # `static` in C: not visible to other objects at link time


class Types:
    """One BTF as libbpf holds it. Thread-safe: what is kept is only ever added to."""

    def __init__(self, handle: int):
        self.handle = handle
        self.count = _libbpf.btf_type_count(handle)
        self._types: dict[int, BtfType] = {}
        self._found: dict[tuple[str, int], int | None] = {}

    def type(self, type_id: int) -> BtfType:
        found = self._types.get(type_id)
        if found is None:
            if not 0 < type_id < self.count:
                raise ObjectError(f"BTF type id {type_id} out of range")
            found = self._types[type_id] = _libbpf.btf_type(self.handle, type_id)
        return found

    def find(self, name: str, kind: int) -> int | None:
        """The id of the type called name of that kind, or None."""
        key = (name, kind)
        if key not in self._found:
            self._found[key] = _libbpf.btf_find(self.handle, name, kind)
        return self._found[key]

    def peel(self, type_id: int, kinds=WRAPPERS) -> tuple[list[int], int]:
        """The ids of the wrappers (typedefs, qualifiers) on a type, outermost first, and the id under them."""
        peeled = []
        for _ in range(self.count):  # bounded, so a cycle in a corrupt file ends
            if type_id == 0 or self.type(type_id).kind not in kinds:
                return peeled, type_id
            peeled.append(type_id)
            type_id = self.type(type_id).ref
        raise ObjectError("BTF type chain loops")

    def resolve(self, type_id: int) -> BtfType | None:
        """What a type is under its typedefs and qualifiers (None for void)."""
        under = self.peel(type_id)[1]
        return self.type(under) if under else None

    def size(self, type_id: int) -> int:
        """sizeof() of a type: what it resolves to, arrays counted out."""
        t = self.resolve(type_id)
        if t is None:
            return 0
        if t.kind == K.BTF_KIND_ARRAY:
            elem, _index, count = t.entries[0]
            return self.size(elem) * count
        if t.kind == K.BTF_KIND_PTR:
            return 8
        return t.ref  # int, enum, struct, union, float: "size"

    def ctype(self, type_id: int, decl: str = "", depth: int = 0) -> str:
        """C spelling, built inside out like a declarator: ``char *const[2]``."""
        if depth > 64:
            raise ObjectError("BTF type nesting too deep")
        if type_id == 0:
            return _join("void", decl)
        t = self.type(type_id)
        if t.kind in _QUALIFIERS:
            peeled, under = self.peel(type_id, _QUALIFIERS)
            kinds = {self.type(i).kind for i in peeled}
            words = " ".join(_QUALIFIERS[k] for k in _QUALIFIERS if k in kinds and _QUALIFIERS[k])
            if under and self.type(under).kind == K.BTF_KIND_PTR:  # a qualified pointer: "char *const"
                return self.ctype(under, _join(words, decl), depth + 1)
            return _join(words, self.ctype(under, decl, depth + 1))
        if t.kind == K.BTF_KIND_PTR:
            return self.ctype(t.ref, "*" + decl, depth + 1)
        if t.kind == K.BTF_KIND_ARRAY:
            elem, _index, count = t.entries[0]
            return self.ctype(elem, (f"({decl})" if decl.startswith("*") else decl) + f"[{count}]", depth + 1)
        if t.kind in _TAGS:
            tag = "union" if t.kind == K.BTF_KIND_FWD and t.kflag else _TAGS[t.kind]
            return _join(f"{tag} {t.name or '<anonymous>'}", decl)
        return _join(t.name or "<function>", decl)  # int, float, typedef; a FUNC_PROTO has no name


def _join(base: str, decl: str) -> str:
    if not base or not decl:
        return base or decl
    return base + decl if decl[0] == "[" else f"{base} {decl}"


_vmlinux: Types | None = None
_vmlinux_lock = threading.Lock()


def vmlinux() -> Types:
    """The running kernel's BTF, loaded on first use (about 10 ms) and kept for the process."""
    global _vmlinux
    with _vmlinux_lock:
        if _vmlinux is None:
            _vmlinux = Types(_libbpf.btf_load_vmlinux())
        return _vmlinux


def read_globals(path) -> tuple[Global, ...]:
    """The variables in the object's data sections, by section and offset; () if built without -g."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] not in ("EM_BPF", EM_BPF):
                raise ObjectError(f"{path}: not a BPF object (machine {elf['e_machine']})")
            if elf.get_section_by_name(".BTF") is None:
                return ()
            if elf.little_endian != (_libbpf.BYTE_ORDER == "little"):
                raise ObjectError(f"{path}: built for the other byte order: no program of it can load here")
    except ELFError as e:
        raise ObjectError(f"{path}: not an ELF file ({e})") from None
    except OSError as e:
        raise ObjectError(f"{path}: {e.strerror}") from None
    try:
        obj = _libbpf.object_open(str(path))
    except OSError as e:
        # An object with maps or externs needs its BTF, so libbpf refuses the whole
        # open over a .BTF it cannot parse: say so if that is why (its log has the detail).
        btf_error = _btf_error(path)
        if btf_error:
            raise ObjectError(f"{path}: corrupt BTF (libbpf could not parse its .BTF section: {btf_error})") from None
        raise ObjectError(f"{path}: libbpf cannot open it ({e.strerror})") from None
    try:
        handle = _libbpf.object_btf(obj)
        if handle is None:  # libbpf drops a .BTF it cannot parse, and says why in its log
            raise ObjectError(f"{path}: corrupt BTF (libbpf could not parse its .BTF section)")
        try:
            found = _globals(Types(handle))
            return tuple(sorted(found, key=lambda g: (g.section, g.offset)))
        except ObjectError as e:
            raise ObjectError(f"{path}: corrupt BTF ({e})") from None
    finally:
        _libbpf.object_close(obj)


def _btf_error(path) -> str | None:
    """Why libbpf cannot parse the object's .BTF section on its own, or None if it can."""
    try:
        handle = _libbpf.btf_parse_split(str(path), None)  # no base: btf__parse, of .BTF only
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    _libbpf.btf_free(handle)
    return None


def _globals(btf: Types):
    for type_id in range(1, btf.count):
        sec = btf.type(type_id)
        # .kconfig/.ksyms hold externs, .maps map definitions; license is not data
        if sec.kind != K.BTF_KIND_DATASEC:
            continue
        if sec.name not in (".bss", ".data", ".rodata") and not sec.name.startswith((".data.", ".rodata.")):
            continue
        for var_id, offset, size in sec.entries:  # offsets as libbpf fixed them up at open
            var = btf.type(var_id)
            if var.kind != K.BTF_KIND_VAR:
                continue
            (linkage,) = var.entries[0]
            # A name with a dot is a function-scope static, which clang names
            # "func.var": BPF_SEQ_PRINTF's format strings ("dump_task.___fmt").
            # The compiler made those, not the author; no C code can name them.
            if linkage not in (_LINKAGE_STATIC, _LINKAGE_GLOBAL) or "." in var.name:
                continue
            yield _global(btf, var, sec.name, offset, size, linkage == _LINKAGE_STATIC)


def _global(btf: Types, var: BtfType, section: str, offset: int, size: int, is_static: bool) -> Global:
    t, kind, signed, bits = btf.resolve(var.ref), "other", False, 0
    if t and t.kind == K.BTF_KIND_INT:
        kind, signed, bits = "int", bool(t.entries[0][0] >> 24 & INT_SIGNED), t.ref * 8
    elif t and t.kind in (K.BTF_KIND_ENUM, K.BTF_KIND_ENUM64):
        kind, signed, bits = "int", t.kflag, t.ref * 8  # kind_flag set: a signed enum
    elif t and t.kind == K.BTF_KIND_ARRAY:
        elem = btf.resolve(t.entries[0][0])
        if elem and elem.kind == K.BTF_KIND_INT and elem.ref == 1 and not elem.entries[0][0] >> 24 & INT_BOOL:
            kind = "chars"  # char, signed char, unsigned char, and typedefs of them like __u8
    return Global(var.name, section, offset, size, btf.ctype(var.ref), kind, signed, bits, is_static)
