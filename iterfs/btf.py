"""The global variables of a BPF object, read from its ``.BTF`` section without loading it.

pyelftools hands over the section bytes and the symbol table; the BTF format
(the kernel's Documentation/bpf/btf.rst) is parsed here. Each data section is a
DATASEC whose entries point at VARs: a name, a linkage and a type, which says
both how a person reads the variable (``const volatile __u32``) and what it is
underneath (a 32-bit unsigned integer).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .objects import EM_BPF, ObjectError

_MAGIC = 0xEB9F
# BTF_KIND_* values
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
# What follows each 12-byte btf_type, as (fixed bytes, bytes per vlen entry);
# one wrong entry would misread every later type. Unlisted kinds have none.
_TRAILING = {
    _INT: (4, 0), _ARRAY: (12, 0), _VAR: (4, 0), _DECL_TAG: (4, 0),  # encoding, btf_array, linkage, index
    _STRUCT: (0, 12), _UNION: (0, 12), _DATASEC: (0, 12), _ENUM64: (0, 12),  # members, var_secinfos, values
    _ENUM: (0, 8), _FUNC_PROTO: (0, 8),  # btf_enum values, btf_param
}
_QUALIFIERS = {_CONST: "const", _VOLATILE: "volatile", _RESTRICT: "restrict", _TYPE_TAG: ""}  # in C order
_WRAPPERS = set(_QUALIFIERS) | {_TYPEDEF}  # what is peeled off to find what a type really is
_TAGS = {_STRUCT: "struct", _UNION: "union", _ENUM: "enum", _ENUM64: "enum", _FWD: "struct"}
_INT_SIGNED, _INT_BOOL = 1, 4  # BTF_INT_ENCODING bits
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


@dataclass(frozen=True)
class _Type:
    kind: int
    name: str
    flag: bool  # kind_flag: for enums, signedness; for a FWD, union
    ref: int  # "size" or "type", depending on kind
    extra: bytes  # the trailing data


class _Btf:
    def __init__(self, data: bytes):
        # the magic, read in the file's own byte order, says which order that is
        self.order = "<" if data[:2] == struct.pack("<H", _MAGIC) else ">"
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            self.order + "HBBIIIII", data
        )
        if magic != _MAGIC or hdr_len < 24:
            raise ObjectError(f"bad BTF header (magic {magic:#x}, length {hdr_len})")
        if hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
            raise ObjectError("BTF sections run past the end of .BTF")
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[_Type | None] = [None]  # id 0 is void
        types, pos = data[hdr_len + type_off : hdr_len + type_off + type_len], 0
        while pos < len(types):
            name_off, info, ref = struct.unpack_from(self.order + "III", types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if not _INT <= kind <= _ENUM64:
                raise ObjectError(f"unknown BTF kind {kind}")
            fixed, per_entry = _TRAILING.get(kind, (0, 0))
            end = pos + 12 + fixed + per_entry * vlen
            if end > len(types):
                raise ObjectError(f"BTF type {len(self.types)} runs past the type section")
            name, extra = self.string(name_off), types[pos + 12 : end]
            self.types.append(_Type(kind, name, bool(info >> 31), ref, extra))
            pos = end

    def string(self, offset: int) -> str:
        end = self.strings.find(b"\0", offset)
        if end < 0:
            raise ObjectError(f"BTF string offset {offset} out of range")
        return self.strings[offset:end].decode(errors="replace")

    def type(self, type_id: int) -> _Type:
        if not 0 < type_id < len(self.types):
            raise ObjectError(f"BTF type id {type_id} out of range")
        return self.types[type_id]

    def words(self, t: _Type, fmt: str) -> tuple[int, ...]:
        return struct.unpack(self.order + fmt, t.extra)

    def encoding(self, t: _Type) -> int:
        """An INT's BTF_INT_ENCODING bits."""
        return self.words(t, "I")[0] >> 24

    def peel(self, type_id: int, kinds) -> tuple[set[int], int]:
        """The kinds of the wrappers (typedefs, qualifiers) on a type, and the type under them."""
        peeled = set()
        for _ in range(len(self.types)):  # bounded, so a cycle in a corrupt file ends
            if type_id == 0 or self.type(type_id).kind not in kinds:
                return peeled, type_id
            peeled.add(self.type(type_id).kind)
            type_id = self.type(type_id).ref
        raise ObjectError("BTF type chain loops")

    def resolve(self, type_id: int) -> _Type | None:
        """What a type is under its typedefs and qualifiers (None for void)."""
        under = self.peel(type_id, _WRAPPERS)[1]
        return self.type(under) if under else None

    def ctype(self, type_id: int, decl: str = "", depth: int = 0) -> str:
        """C spelling, built inside out like a declarator: ``char *const[2]``."""
        if depth > 64:
            raise ObjectError("BTF type nesting too deep")
        if type_id == 0:
            return _join("void", decl)
        t = self.type(type_id)
        if t.kind in _QUALIFIERS:
            peeled, under = self.peel(type_id, _QUALIFIERS)  # type tags are annotations, not C
            words = " ".join(_QUALIFIERS[k] for k in _QUALIFIERS if k in peeled and _QUALIFIERS[k])
            if under and self.type(under).kind == _PTR:  # a qualified pointer: "char *const"
                return self.ctype(under, _join(words, decl), depth + 1)
            return _join(words, self.ctype(under, decl, depth + 1))
        if t.kind == _PTR:
            return self.ctype(t.ref, "*" + decl, depth + 1)
        if t.kind == _ARRAY:
            elem, _index, count = self.words(t, "III")
            return self.ctype(elem, (f"({decl})" if decl.startswith("*") else decl) + f"[{count}]", depth + 1)
        if t.kind in _TAGS:
            tag = "union" if t.kind == _FWD and t.flag else _TAGS[t.kind]
            return _join(f"{tag} {t.name or '<anonymous>'}", decl)
        return _join(t.name or "<function>", decl)  # int, float, typedef; a FUNC_PROTO has no name


def _join(base: str, decl: str) -> str:
    if not base or not decl:
        return base or decl
    return base + decl if decl[0] == "[" else f"{base} {decl}"


def read_globals(path) -> tuple[Global, ...]:
    """The variables in the object's data sections, by section and offset; () if built without -g."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] not in ("EM_BPF", EM_BPF):
                raise ObjectError(f"{path}: not a BPF object (machine {elf['e_machine']})")
            section = elf.get_section_by_name(".BTF")
            if section is None:
                return ()
            try:
                found = _globals(_Btf(section.data()), _symbols(elf))
                return tuple(sorted(found, key=lambda g: (g.section, g.offset)))
            except (ObjectError, struct.error) as e:
                raise ObjectError(f"{path}: corrupt BTF ({e})") from None
    except ELFError as e:
        raise ObjectError(f"{path}: not an ELF file ({e})") from None
    except OSError as e:
        raise ObjectError(f"{path}: {e.strerror}") from None


def _symbols(elf: ELFFile) -> dict[tuple[str, str], int]:
    """(section, name) -> offset of each data object in the symbol table."""
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return {}
    return {
        (elf.get_section(s["st_shndx"]).name, s.name): s["st_value"]
        for s in symtab.iter_symbols()
        if s["st_info"]["type"] == "STT_OBJECT" and isinstance(s["st_shndx"], int)
    }


def _globals(btf: _Btf, symbols: dict[tuple[str, str], int]):
    for sec in btf.types:
        # .kconfig/.ksyms hold externs, .maps map definitions; license is not data
        if sec is None or sec.kind != _DATASEC:
            continue
        if sec.name not in (".bss", ".data", ".rodata") and not sec.name.startswith((".data.", ".rodata.")):
            continue
        for i in range(0, len(sec.extra), 12):
            type_id, offset, size = struct.unpack_from(btf.order + "III", sec.extra, i)
            var = btf.type(type_id)
            if var.kind != _VAR:
                continue
            (linkage,) = btf.words(var, "I")
            # A name with a dot is a function-scope static, which clang names
            # "func.var": BPF_SEQ_PRINTF's format strings ("dump_task.___fmt").
            # The compiler made those, not the author; no C code can name them.
            if linkage not in (_LINKAGE_STATIC, _LINKAGE_GLOBAL) or "." in var.name:
                continue
            if linkage == _LINKAGE_GLOBAL:
                # clang writes 0 for a global's offset; libbpf takes the real one
                # from the symbol table when it opens the object (btf_fixup_datasec)
                if (sec.name, var.name) not in symbols:
                    raise ObjectError(f"no symbol for global {var.name!r} in {sec.name}")
                offset = symbols[(sec.name, var.name)]
            yield _global(btf, var, sec.name, offset, size, linkage == _LINKAGE_STATIC)


def _global(btf: _Btf, var: _Type, section: str, offset: int, size: int, is_static: bool) -> Global:
    t, kind, signed, bits = btf.resolve(var.ref), "other", False, 0
    if t and t.kind == _INT:
        kind, signed, bits = "int", bool(btf.encoding(t) & _INT_SIGNED), t.ref * 8
    elif t and t.kind in (_ENUM, _ENUM64):
        kind, signed, bits = "int", t.flag, t.ref * 8  # kind_flag set: a signed enum
    elif t and t.kind == _ARRAY:
        elem = btf.resolve(btf.words(t, "III")[0])
        if elem and elem.kind == _INT and elem.ref == 1 and not btf.encoding(elem) & _INT_BOOL:
            kind = "chars"  # char, signed char, unsigned char, and typedefs of them like __u8
    return Global(var.name, section, offset, size, btf.ctype(var.ref), kind, signed, bits, is_static)
