"""Fields of a target's objects, named in the path: ``task/fields=pid,comm,mm.total_vm/all``.

    resolve(target, spec)         each name through the running kernel's BTF: a FieldList
    FieldList.global_values(...)  its recipes, as .rodata bytes for bpf/fields.bpf.c
    FieldList.formatter(as_json)  what turns a walk's output into lines (records.py)
    listing(target, path)         what MNT/<target>/FIELDS and FIELDS.<path> show

A name is a path through the members of the iterator's context, as C spells
it: the context's arguments by name (``task``, ``fd``, ``file``, ``uid``), and
where the context has one object, that object's members without a prefix
(``pid`` for ``task.pid``). A ``.`` through a pointer follows it; ``[N]``
indexes an array (or a pointer, as C does). Anonymous structs and unions are
seen through, wrappers of one member (``atomic_t``, ``kuid_t``) are
unwrapped, and the member names that the kernel's headers spell by a macro
(``sk_state`` for ``__sk_common.skc_state``) are served by ALIASES.

Each field's recipe says how to reach its bytes and how to print them:
integers as BTF declares them (``__be16`` in host order), ``char`` arrays and
``char *`` as escaped strings, other byte arrays in hex, pointers in hex, and
``-`` for what could not be read. The program prints that text itself; for
JSON, and for an enum (by name), it writes the bytes and records.py prints them.
"""

from __future__ import annotations

import functools
import re
import struct
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import _libbpf as K, records
from .btf import INT_BOOL, INT_SIGNED, Global, Types, vmlinux
from .errors import NotFound

# The program's limits: bpf/fields.bpf.c defines the same (a test compares them)
MAX_FIELDS = 32
MAX_STEPS = 4  # pointers followed by one field
MAX_BYTES = 64  # bytes read for one field: longer strings and arrays are cut there
MAX_SLOTS = 4  # context arguments: meta, then up to three objects or values
MAX_PACKED = 12  # fields one bpf_seq_printf() prints
PREFIX = "fields="
JSON = ".json"  # the suffix of a fields= file's JSON Lines sibling
FIELDS_PROGRAM_SOURCE = "bpf/fields.bpf.c"
LISTING = "FIELDS"
_READ_BYTES, _READ_SLOT, _READ_STRING = 0, 1, 2
# struct recipe of the program: its members in order, each that many __u32s
RECIPE_LAYOUT = (("slot", 1), ("steps", 1), ("offset", MAX_STEPS + 1), ("size", 1), ("how", 1), ("guarded", 1),
                 ("print", 1), ("shift", 1), ("bits", 1), ("big_endian", 1), ("last", 1))
_RECIPE = struct.Struct("=" + "".join(f"{count}I" for _, count in RECIPE_LAYOUT))
# enum print: how the program prints a field as text, by what the field is
_PRINT = {"int": 0, "unsigned": 1, "bool": 2, "pointer": 3, "char": 4, "string": 4, "bytes": 5}
_LINE_FORMATS = {0: "%lld", 1: "%llu", 2: "%llu", 3: "0x%llx", 4: "%s"}  # by print, in a packed line
_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[0-9]+\])*)\Z")
_BIG_ENDIAN = {"__be16", "__be32", "__be64"}
_MAX_OFFSET = 1 << 24  # bytes into one object: a struct recipe's offsets are 32-bit
_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}  # struct's unsigned codes; lower case: signed
_QUALIFIERS = frozenset({K.BTF_KIND_CONST, K.BTF_KIND_VOLATILE, K.BTF_KIND_RESTRICT, K.BTF_KIND_TYPE_TAG})

# The object a target's context holds, seen as the struct its iterator's own code
# casts it to: the tcp walk's sock_common is a struct sock unless it is a time-wait
# or request socket (GUARDS); udp, unix and netlink sockets begin with a struct sock.
SEEN_AS = {"tcp": "sock", "udp": "sock", "unix": "sock", "netlink": "sock"}
# The argument that is NULL in the call after the last object, where it is not the object
# itself: a map's element iterators give a NULL key then (a sockmap slot may have no socket).
END_MARKERS = {"bpf_map_elem": "key", "sockmap": "key", "bpf_sk_storage_map": "sk"}
# Members of the object that only some of a walk's objects have: (struct whose members
# all objects have, the member that tells, the values that say "only those members")
GUARDS = {"tcp": ("sock_common", "skc_state", (6, 12))}  # TCP_TIME_WAIT, TCP_NEW_SYN_RECV
# Member names the kernel's headers spell by a macro, per struct (include/net/sock.h,
# include/net/inet_sock.h): BTF has only what they stand for.
_SOCK_COMMON = ("node", "nulls_node", "refcnt", "tx_queue_mapping", "rx_queue_mapping", "hash", "portpair",
                "num", "dport", "addrpair", "daddr", "rcv_saddr", "family", "state", "reuse", "reuseport",
                "ipv6only", "net_refcnt", "bound_dev_if", "bind_node", "prot", "net", "v6_daddr",
                "v6_rcv_saddr", "cookie", "incoming_cpu", "flags", "rxhash")
ALIASES = {
    "sock": {f"sk_{name}": f"__sk_common.skc_{name}" for name in _SOCK_COMMON},
    "inet_sock": {"inet_daddr": "sk.__sk_common.skc_daddr", "inet_rcv_saddr": "sk.__sk_common.skc_rcv_saddr",
                  "inet_dport": "sk.__sk_common.skc_dport", "inet_num": "sk.__sk_common.skc_num"},
}


class FieldError(NotFound):
    """A field list that names nothing this kernel has; the message says which field and why."""


@dataclass(frozen=True)
class Field:
    name: str  # as the path spells it
    ctype: str  # the C type of the member, as declared
    where: str  # where it is read: "task_struct+1264", "task_struct+1136 -> mm_struct+360"
    slot: int
    offsets: tuple[int, ...]  # before each dereference, then before the read
    size: int  # bytes read
    how: int
    guarded: bool
    code: str  # how struct unpacks the bytes read: "i", "Q", "16s"
    show: Callable | None  # what was unpacked -> its Python value (None: as unpacked)
    kind: str  # what the value is: "int", "enum", "bool", "char", "string", "bytes", "pointer"
    signed: bool = False
    big_endian: bool = False  # __be16 and the like: host order is printed
    shift: int = 0  # a bitfield's first bit in the bytes read, and how many bits it has
    bits: int = 0

    @property
    def print(self) -> int | None:
        """How the program prints it as text (enum print); None: the daemon does (enum names)."""
        return _PRINT.get("unsigned" if self.kind == "int" and not self.signed else self.kind)

    @property
    def text(self) -> Callable:
        """What was unpacked -> its text, as the program would print it."""
        return records.text_of(self.show, self.kind)

    def recipe(self, last: bool) -> bytes:
        offsets = list(self.offsets) + [0] * (MAX_STEPS + 1 - len(self.offsets))
        return _RECIPE.pack(self.slot, len(self.offsets) - 1, *offsets, self.size, self.how, self.guarded,
                            self.print or 0, self.shift, self.bits, self.big_endian, last)


@dataclass(frozen=True)
class Context:
    """A target's iterator context: its arguments, and the object members are looked up in."""

    target: str
    args: dict[str, tuple[int, int]]  # name -> (slot, type id)
    end_slot: int  # the argument that is NULL after the last object
    object_name: str | None  # the argument whose members need no prefix
    object_type: int | None  # the struct they are looked up in
    guard: tuple[int, int, tuple[int, ...]] | None  # (size of what all objects have, offset, values)


@dataclass(frozen=True)
class FieldList:
    target: str
    spec: str  # as the directory name spells it, less "fields="
    fields: tuple[Field, ...]
    context: Context = field(repr=False)

    @property
    def record_size(self) -> int:
        return sum(1 + f.size for f in self.fields)

    @property
    def kernel_prints(self) -> bool:
        """Whether the program prints the text itself: every field but an enum (by name) it can."""
        # the program reads values as a little-endian machine lays them out
        return sys.byteorder == "little" and all(f.print is not None for f in self.fields)

    def global_values(self, program_globals: Iterable[Global], as_json: bool) -> tuple[tuple[str, int, bytes], ...]:
        """The (section, offset, bytes) that set the program up for these fields, before its load:
        to print their text, or (JSON, and text it cannot print) to write their records."""
        at = {g.name: g for g in program_globals}
        recipes = b"".join(f.recipe(last=i == len(self.fields) - 1) for i, f in enumerate(self.fields))
        if at["recipes"].size != MAX_FIELDS * _RECIPE.size:
            raise OSError(5, f"{FIELDS_PROGRAM_SOURCE}: struct recipe is not what iterfs/fields.py packs")
        slots = max(slot for slot, _ in self.context.args.values()) + 1
        text = self.kernel_prints and not as_json
        values = {"nslots": struct.pack("=I", slots), "object_slots": struct.pack("=I", 1 << self.context.end_slot),
                  "nfields": struct.pack("=I", len(self.fields)), "recipes": recipes, "text": struct.pack("=I", text)}
        line_format = self._line_format() if text else None
        if line_format is not None and len(line_format) < at["line_format"].size:
            values.update(packed=struct.pack("=I", 1), line_format=line_format + b"\0")
        if self.context.guard and any(f.guarded for f in self.fields):
            _size, offset, refused = self.context.guard
            values.update(guard_on=struct.pack("=I", 1), guard_offset=struct.pack("=I", offset),
                          guard_refuse=bytes((list(refused) + [refused[0]])[:2]))
        return tuple((at[name].section, at[name].offset, data) for name, data in sorted(values.items()))

    def _line_format(self) -> bytes | None:
        """The bpf_seq_printf() format of a whole line, where one call can print it."""
        if len(self.fields) > MAX_PACKED or any(f.print is None or f.kind == "bytes" for f in self.fields):
            return None
        return ("\t".join(_LINE_FORMATS[f.print] for f in self.fields) + "\n").encode()

    def formatter(self, as_json: bool) -> records.Formatter | records.Header:
        """What turns one walk's output into lines."""
        if self.kernel_prints and not as_json:
            return records.Header(self)
        return records.Formatter(self, as_json)

    @property
    def readme(self) -> str:
        width = max(len(f.name) for f in self.fields)
        lines = [f"{self.target}/{PREFIX}{self.spec}: one line per {self.target} object, with these fields,",
                 "walked when a file is opened. In this kernel (its BTF) they are:", ""]
        for f in self.fields:
            lines.append(f"  {f.name:<{width}}  {f.ctype:<24} {f.size:>2} bytes at {f.where}, printed as {f.kind}")
        lines.append("")
        return "\n".join(lines) + _FILES_README.format(target=self.target, max_fields=MAX_FIELDS,
                                                         max_steps=MAX_STEPS, max_bytes=MAX_BYTES)


_FILES_README = """
Files: the same as in {target}/ (all, and the parameter files it takes), each with a
.json sibling: all.json, pid=1.json, ...
  text   a header line of the field names, then one line per object, fields separated
         by a tab; - for a field that cannot be read (a NULL pointer on the way)
  .json  JSON Lines, one object per line: numbers, strings, null for what cannot be read

Integers are printed as BTF declares them (__be16/__be32 in host order), enums by
name, a char as a character, char arrays and char * as strings (tab, newline, CR,
backslash and other control bytes escaped as \\t \\n \\r \\\\ \\xNN; in JSON, bytes
that are not UTF-8 are U+FFFD), other byte arrays in hex, pointers in hex.
At most {max_fields} fields, {max_steps} pointers followed per field, {max_bytes} bytes per string or array.
What the fields are: ../FIELDS
"""


def _is_pointer(type_id: int) -> bool:
    t = vmlinux().resolve(type_id)
    return t is not None and t.kind == K.BTF_KIND_PTR


@functools.lru_cache(maxsize=64)
def context(target: str) -> Context:
    """The context of target's iterator as this kernel's BTF has it; FieldError if it has none."""
    btf = vmlinux()
    ctx_id = btf.find(f"bpf_iter__{target}", K.BTF_KIND_STRUCT)
    if ctx_id is None:
        raise FieldError(f"{target}: this kernel's BTF has no struct bpf_iter__{target}")
    args = {}
    for name, type_id, bits in btf.type(ctx_id).entries:
        slot = (bits & 0xFFFFFF) // 64
        if not name:  # __bpf_md_ptr(): a union of one pointer, to give it 8 bytes
            (name, type_id, _), = btf.type(type_id).entries
        if slot and slot < MAX_SLOTS:
            args[name] = (slot, type_id)
    pointers = [(name, type_id) for name, (_, type_id) in args.items() if _is_pointer(type_id)]
    if not pointers:
        raise FieldError(f"{target}: its context holds no object (struct bpf_iter__{target})")
    end_slot = args[END_MARKERS.get(target, pointers[-1][0])][0]
    object_name = object_type = guard = None
    if len(pointers) == 1:
        object_name, pointer = pointers[0]
        object_type = btf.resolve(pointer).ref
        seen_as = SEEN_AS.get(target)
        if seen_as and btf.find(seen_as, K.BTF_KIND_STRUCT):
            object_type = btf.find(seen_as, K.BTF_KIND_STRUCT)
        if target in GUARDS:
            common, member, values = GUARDS[target]
            common_id = btf.find(common, K.BTF_KIND_STRUCT)
            found = _member(btf, common_id, member) if common_id else None
            if found:
                guard = (btf.size(common_id), found[1] // 8, values)
    return Context(target, args, end_slot, object_name, object_type, guard)


def _members(btf: Types, struct_id: int, base_bits: int = 0):
    """(name, type id, bit offset, bitfield bits) of a struct's members, anonymous ones seen through."""
    t = btf.resolve(struct_id)
    for name, type_id, offset in t.entries:
        bits, width = (offset & 0xFFFFFF, offset >> 24) if t.kflag else (offset, 0)
        if not name:
            inner = btf.resolve(type_id)
            if inner is not None and inner.kind in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION):
                yield from _members(btf, type_id, base_bits + bits)
            continue
        yield name, type_id, base_bits + bits, width


def _member(btf: Types, struct_id: int, name: str):
    return next((m[1:] for m in _members(btf, struct_id) if m[0] == name), None)


def _struct_name(btf: Types, type_id: int) -> str:
    t = btf.resolve(type_id)
    return t.name or btf.ctype(type_id)


def _suggest(btf: Types, struct_id: int, name: str) -> str:
    """Where name is one level down (an embedded struct's member), as "did you mean" says it."""
    for member, type_id, _bits, _width in _members(btf, struct_id):
        inner = btf.resolve(type_id)
        if inner is not None and inner.kind in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION):
            if _member(btf, type_id, name):
                return f"; did you mean {member}.{name}?"
    return ""


class _Walk:
    """One name being resolved: where the bytes are, and what type they have."""

    def __init__(self, slot: int, type_id: int, in_slot: bool):
        self.slot, self.type_id = slot, type_id
        self.in_slot = in_slot  # the value is the context argument itself, not in memory
        self.offsets = [0]  # the last is the offset of the value from the current base
        self.shift, self.bits = 0, 0  # a bitfield: its first bit in its bytes, and how many
        self.where: list[str] = []
        self.guarded = False

    def step(self, name: str) -> None:
        """The program is to follow the pointer the walk is at: what it points to is at offset 0."""
        if self.in_slot:  # the pointer is the context argument: no read to follow it
            self.in_slot = False
            return
        if len(self.offsets) > MAX_STEPS:
            raise FieldError(f"{name}: follows more than {MAX_STEPS} pointers")
        self.offsets.append(0)

    def deref(self, btf: Types, name: str) -> None:
        """Follow the pointer the walk is at, to a member or an element of what it points to."""
        pointer = btf.resolve(self.type_id)
        self.step(name)
        self.type_id = pointer.ref
        self.where.append(_struct_name(btf, self.type_id) if btf.resolve(self.type_id) else "void")


@functools.lru_cache(maxsize=256)
def resolve(target: str, spec: str) -> FieldList:
    """The fields of spec (``pid,comm,se.sum_exec_runtime``) in target's objects; FieldError if not."""
    ctx = context(target)
    names = spec.split(",")
    if not spec or any(not n for n in names):
        raise FieldError(f"{PREFIX}{spec}: an empty field name")
    if len(names) > MAX_FIELDS:
        raise FieldError(f"{PREFIX}{spec}: {len(names)} fields, at most {MAX_FIELDS}")
    seen = set()
    for name in names:
        if name in seen:
            raise FieldError(f"{name}: named twice")
        seen.add(name)
    return FieldList(target, spec, tuple(_field(ctx, name) for name in names), ctx)


def _field(ctx: Context, name: str) -> Field:
    btf = vmlinux()
    return _leaf(btf, _walk_to(btf, ctx, name), name)


def _walk_to(btf: Types, ctx: Context, name: str) -> _Walk:
    """Where name's bytes are, and their type: a walk through members, pointers and indexes."""
    parts = name.split(".")
    walk = None
    for i, part in enumerate(parts):
        matched = _NAME.match(part)
        if not matched:
            raise FieldError(f"{name}: {part!r} is not a C member name (with [N] indexes)")
        member, indexes = matched.group(1), [int(n) for n in re.findall(r"\[([0-9]+)\]", matched.group(2))]
        if walk is None:
            walk = _start(btf, ctx, name, member)
            if walk is None:  # an alias: the same name spelled as the kernel's BTF has it
                alias = _alias(btf, ctx.object_type, member) + matched.group(2)
                return _walk_to(btf, ctx, ".".join([alias] + parts[1:]))
        else:
            _into(btf, walk, name, member, ".".join(parts[:i]))
        for index in indexes:
            _index(btf, walk, name, index)
    return walk


def _alias(btf: Types, struct_id: int, member: str) -> str:
    return ALIASES.get(_struct_name(btf, struct_id), {})[member]


def _start(btf: Types, ctx: Context, name: str, first: str) -> _Walk | None:
    if first in ctx.args:
        slot, type_id = ctx.args[first]
        walk = _Walk(slot, type_id, in_slot=True)
        walk.where.append(f"context argument {first}")
        return walk
    if ctx.object_type is None:
        raise FieldError(f"{name}: {ctx.target}'s context has no argument {first!r} (it has "
                         f"{', '.join(ctx.args)}): start with one of them")
    found = _member(btf, ctx.object_type, first)
    if found is None:
        if first in ALIASES.get(_struct_name(btf, ctx.object_type), {}):
            return None
        raise FieldError(f"{name}: {_struct_name(btf, ctx.object_type)} has no member {first!r}"
                         f"{_suggest(btf, ctx.object_type, first)}")
    slot, _ = ctx.args[ctx.object_name]
    walk = _Walk(slot, ctx.object_type, in_slot=False)
    walk.where.append(_struct_name(btf, ctx.object_type))
    _at_member(btf, walk, found)
    if ctx.guard and found[1] // 8 >= ctx.guard[0]:
        walk.guarded = True  # not every object of the walk has this member
    return walk


def _at_member(btf: Types, walk: _Walk, found) -> None:
    type_id, bits, width = found
    walk.offsets[-1] += bits // 8
    walk.shift, walk.bits = (bits % 8, width) if width else (0, 0)
    if not width and bits % 8:
        raise FieldError(f"{walk.where[0]}: a member not on a byte boundary")
    walk.type_id = type_id
    walk.where[-1] = f"{walk.where[-1].split('+')[0]}+{walk.offsets[-1]}"


def _into(btf: Types, walk: _Walk, name: str, member: str, before: str) -> None:
    t = btf.resolve(walk.type_id)
    if t is not None and t.kind == K.BTF_KIND_PTR:
        walk.deref(btf, name)
        t = btf.resolve(walk.type_id)
    if t is None or t.kind not in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION):
        what = "void" if t is None else btf.ctype(walk.type_id)
        raise FieldError(f"{name}: {before} is a {what}, which has no members")
    if walk.bits:
        raise FieldError(f"{name}: {before} is a bitfield")
    found = _member(btf, walk.type_id, member)
    if found is None:
        alias = ALIASES.get(t.name, {}).get(member)
        if alias is None:
            raise FieldError(f"{name}: {t.name or before} has no member {member!r}"
                             f"{_suggest(btf, walk.type_id, member)}")
        for step in alias.split("."):
            _into(btf, walk, name, step, before)
        return
    _at_member(btf, walk, found)


def _index(btf: Types, walk: _Walk, name: str, index: int) -> None:
    t = btf.resolve(walk.type_id)
    if t is not None and t.kind == K.BTF_KIND_ARRAY:
        elem, _index_type, count = t.entries[0]
        if count and index >= count:
            raise FieldError(f"{name}: index {index} is past the {count} elements of {btf.ctype(walk.type_id)}")
    elif t is not None and t.kind == K.BTF_KIND_PTR:
        walk.deref(btf, name)
        elem = walk.type_id
    else:
        raise FieldError(f"{name}: [{index}] indexes a {btf.ctype(walk.type_id)}: not an array or pointer")
    walk.offsets[-1] += index * btf.size(elem)
    if walk.offsets[-1] >= _MAX_OFFSET:
        raise FieldError(f"{name}: [{index}] is {walk.offsets[-1]} bytes into the object: past any object")
    walk.type_id = elem
    walk.where[-1] = f"{walk.where[-1].split('+')[0]}+{walk.offsets[-1]}"


def _leaf(btf: Types, walk: _Walk, name: str) -> Field:
    ctype = btf.ctype(walk.type_id)
    type_id = walk.type_id
    for _ in range(8):  # atomic_t, refcount_t -> atomic_t, kuid_t: one member, unwrapped
        t = btf.resolve(type_id)
        if t is None or t.kind not in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION) or len(t.entries) != 1:
            break
        inner = btf.resolve(t.entries[0][1])
        if inner is None or inner.kind in (K.BTF_KIND_ARRAY,):
            break
        type_id = t.entries[0][1]
    t = btf.resolve(type_id)
    big_endian = any(btf.type(i).name in _BIG_ENDIAN for i in btf.peel(type_id)[0])
    how, size, code, signed = _READ_BYTES, 0, "", False
    plain = not walk.bits and not big_endian  # unpacked by struct as it is
    if t is None:
        raise FieldError(f"{name}: a void has no value")
    if t.kind == K.BTF_KIND_INT:
        size, encoding = t.ref, t.entries[0][0] >> 24
        if size > 8:
            raise FieldError(f"{name}: a {size}-byte integer ({ctype}) is more than iterfs prints")
        signed = bool(encoding & INT_SIGNED)
        kind = "bool" if encoding & INT_BOOL else "int"
        if plain and size == 1 and _is_char(btf, type_id, any_char=False):
            code, kind, show = "B", "char", records.char  # ksym's type 'T', as C's char is read
        elif plain:
            code, show = _INT_CODES[size].lower() if signed else _INT_CODES[size], bool if kind == "bool" else None
        else:
            show = records.integer(signed, big_endian, walk.shift, walk.bits, kind == "bool")
    elif t.kind in (K.BTF_KIND_ENUM, K.BTF_KIND_ENUM64):
        size, kind = t.ref, "enum"
        names = {_enum_value(t, e): e[0] for e in t.entries}
        if plain and size in _INT_CODES:
            code, show = _INT_CODES[size].lower() if t.kflag else _INT_CODES[size], records.enum(None, names)
        else:
            show = records.enum(records.integer(t.kflag, False, walk.shift, walk.bits, False), names)
    elif t.kind == K.BTF_KIND_PTR:
        if _is_char(btf, t.ref, any_char=True):
            walk.step(name)  # the string is read where the char * points
            how, size, kind, show = _READ_STRING, MAX_BYTES, "string", records.string
        else:
            size, kind, code, show = 8, "pointer", "Q", records.pointer
    elif t.kind == K.BTF_KIND_ARRAY:
        elem, _index_type, count = t.entries[0]
        inner = btf.resolve(elem)
        if inner is None or inner.kind != K.BTF_KIND_INT or inner.ref != 1 or not count:
            raise FieldError(f"{name}: a whole array ({ctype}) is no field: index it, e.g. {name}[0]")
        size = min(count, MAX_BYTES)
        kind, show = ("string", records.string) if _is_char(btf, elem, any_char=True) else ("bytes", bytes.hex)
    elif t.kind in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION):
        some = ", ".join(m[0] for m in list(_members(btf, type_id))[:4])
        raise FieldError(f"{name}: a whole {ctype} is no field: name one of its members ({some}, ...)")
    else:
        raise FieldError(f"{name}: iterfs does not print a {ctype}")
    if walk.bits:
        size = (walk.shift + walk.bits + 7) // 8
        if size > 8:
            raise FieldError(f"{name}: a bitfield across {size} bytes is more than iterfs prints")
    if walk.in_slot:
        how = _READ_SLOT
        if size > 8:
            raise FieldError(f"{name}: a context argument of {size} bytes")
    where = " -> ".join(walk.where)
    if walk.bits:
        where += f", bits {walk.shift}..{walk.shift + walk.bits - 1}"
    return Field(name, ctype, where, walk.slot, tuple(walk.offsets), size, how, walk.guarded,
                 code or f"{size}s", show, kind, signed, big_endian, walk.shift, walk.bits)


def _enum_value(t, entry) -> int:
    """An enumerator's value as its enum's signedness (kind_flag) says: BTF keeps 32 bits, or two halves."""
    if t.kind == K.BTF_KIND_ENUM:
        value, bits = entry[1] & 0xFFFFFFFF, 32
    else:
        value, bits = entry[1] | entry[2] << 32, 64
    return value - (1 << bits) if t.kflag and value >> (bits - 1) else value


def _is_char(btf: Types, type_id: int, any_char: bool = False) -> bool:
    """A C char (plain, signed or unsigned) as strings hold them: not __u8 or bool.
    any_char=False: a char alone is a character only when spelled plain "char"."""
    under = btf.peel(type_id, _QUALIFIERS)[1]  # a typedef (__u8, __s8) is a number, not a char
    t = btf.type(under) if under else None
    if t is None or t.kind != K.BTF_KIND_INT or t.ref != 1:
        return False
    return "char" in t.name if any_char else t.name == "char"


def listing_path(name: str) -> str | None:
    """The path a FIELDS (""), FIELDS.<path> name lists the members at; None for other names."""
    if name == LISTING or name.startswith(LISTING + "."):
        return name[len(LISTING) + 1:]
    return None


def file_params(name: str) -> tuple[str, bool]:
    """A fields= file's name as its target's parameter file names it, and whether it is the .json one."""
    return (name[:-len(JSON)], True) if name.endswith(JSON) else (name, False)


@functools.lru_cache(maxsize=64)
def listing(target: str, path: str = "") -> str:
    """What FIELDS (path "") or FIELDS.<path> shows: the members there, one level into embedded structs."""
    btf = vmlinux()
    ctx = context(target)
    lines = []
    if not path:
        lines += [f"{target}: the fields of its objects, for {target}/{PREFIX}<name>,<name>,.../all",
                  "", "Context arguments (struct bpf_iter__%s):" % target]
        for name, (slot, type_id) in ctx.args.items():
            lines.append(_line(btf, name, type_id, f"argument {slot}", 0, hint=True))
        if ctx.object_type is None:
            lines += ["", f"Start each field with an argument: e.g. {next(iter(ctx.args))}.<member>"]
        else:
            struct_name = _struct_name(btf, ctx.object_type)
            lines += ["", f"Members of {ctx.object_name} ({btf.ctype(ctx.object_type)}), named without a prefix:"]
            lines += _member_lines(btf, ctx.object_type, "")
            aliases = ALIASES.get(struct_name)
            if aliases:
                lines += ["", "Also named as the kernel's headers name them:"]
                lines += [f"  {a:<28} {b}" for a, b in aliases.items()]
    else:
        walk = _walk_to(btf, ctx, path)
        t = btf.resolve(walk.type_id)
        type_id = t.ref if t is not None and t.kind == K.BTF_KIND_PTR else walk.type_id
        inner = btf.resolve(type_id)
        if inner is None or inner.kind not in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION):
            raise FieldError(f"{LISTING}.{path}: {path} is a {btf.ctype(walk.type_id)}, which has no members")
        lines += [f"{target}: the members of {path} ({btf.ctype(type_id)}), for {target}/{PREFIX}{path}.<member>",
                  ""]
        lines += _member_lines(btf, type_id, path + ".")
    return "\n".join(lines) + "\n"


def _member_lines(btf: Types, struct_id: int, prefix: str) -> list[str]:
    lines = []
    for name, type_id, bits, width in _members(btf, struct_id):
        lines.append(_line(btf, prefix + name, type_id, f"+{bits // 8}", width, hint=True))
        inner = btf.resolve(type_id)
        if inner is not None and inner.kind in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION) and len(inner.entries) > 1:
            for sub, sub_type, sub_bits, sub_width in _members(btf, type_id):
                lines.append(_line(btf, f"{prefix}{name}.{sub}", sub_type, f"+{(bits + sub_bits) // 8}",
                                   sub_width, hint=False))
    return lines


def _line(btf: Types, name: str, type_id: int, where: str, width: int, hint: bool) -> str:
    ctype = btf.ctype(type_id) + (f" :{width}" if width else "")
    t = btf.resolve(type_id)
    note = ""
    if t is not None and t.kind == K.BTF_KIND_PTR:
        pointee = btf.resolve(t.ref)
        if pointee is not None and pointee.kind in (K.BTF_KIND_STRUCT, K.BTF_KIND_UNION) and pointee.entries:
            note = f"-> {LISTING}.{name}"
    return f"  {name:<32} {ctype:<36} {where}" + (f"  {note}" if note and hint else "")
