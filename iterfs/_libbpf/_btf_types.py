"""libbpf's BTF types as its inline accessors in btf.h read them (btf_members(), btf_array(), ...).

``btf__type_by_id()`` returns a pointer to a ``struct btf_type`` (include/uapi/linux/btf.h),
followed by what its kind has: members, array bounds, enumerators. Here that memory,
which libbpf owns and keeps while the BTF lives, becomes plain Python values.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

from ._binding import (BTF_KIND_ARRAY, BTF_KIND_DATASEC, BTF_KIND_DECL_TAG, BTF_KIND_ENUM, BTF_KIND_ENUM64,
                       BTF_KIND_FUNC_PROTO, BTF_KIND_INT, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_VAR, _load)

# struct btf_type (include/uapi/linux/btf.h), then what follows it for its kind, as
# libbpf's own inline accessors (btf_members(), btf_array(), ...) in btf.h read them
class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


# kind -> (32-bit words per entry, entries: "vlen" or a fixed count)
_TRAILING = {
    BTF_KIND_INT: (1, 1), BTF_KIND_ARRAY: (3, 1), BTF_KIND_VAR: (1, 1), BTF_KIND_DECL_TAG: (1, 1),
    BTF_KIND_STRUCT: (3, "vlen"), BTF_KIND_UNION: (3, "vlen"), BTF_KIND_DATASEC: (3, "vlen"),
    BTF_KIND_ENUM64: (3, "vlen"), BTF_KIND_ENUM: (2, "vlen"), BTF_KIND_FUNC_PROTO: (2, "vlen"),
}
# which words of an entry are string offsets, resolved to names here
_NAMED = {BTF_KIND_STRUCT: 0, BTF_KIND_UNION: 0, BTF_KIND_ENUM: 0, BTF_KIND_ENUM64: 0, BTF_KIND_FUNC_PROTO: 0}


class BtfType(NamedTuple):
    """One BTF type as libbpf holds it: its header, and its kind's entries as words.

    entries: INT (encoding word,); ARRAY (type, index_type, nelems); VAR (linkage,);
    STRUCT/UNION (name, type, offset) per member; ENUM (name, value); ENUM64
    (name, lo32, hi32); FUNC_PROTO (name, type) per parameter; DATASEC (type,
    offset, size) per variable. Names are str, other words int (an ENUM value signed).
    """

    kind: int
    name: str
    kflag: bool
    ref: int  # "size" or "type", as the kind says
    entries: tuple


def btf_type_count(btf: int) -> int:
    """Type ids run from 1 to this, less one (0 is void)."""
    return _load().btf__type_cnt(btf)


def btf_type(btf: int, type_id: int) -> BtfType:
    lib = _load()
    address = lib.btf__type_by_id(btf, type_id)
    head = _BtfType.from_address(address)
    kind, vlen = (head.info >> 24) & 0x1F, head.info & 0xFFFF
    width, count = _TRAILING.get(kind, (0, 0))
    count = vlen if count == "vlen" else count
    words = (ctypes.c_uint32 * (width * count)).from_address(address + ctypes.sizeof(_BtfType)) if count else ()
    entries = []
    for i in range(count):
        entry = list(words[i * width:(i + 1) * width])
        if kind in _NAMED:
            entry[0] = btf_name(btf, entry[0])
        if kind == BTF_KIND_ENUM:
            entry[1] = ctypes.c_int32(entry[1]).value
        entries.append(tuple(entry))
    return BtfType(kind, btf_name(btf, head.name_off), bool(head.info >> 31), head.size_or_type, tuple(entries))


def btf_name(btf: int, offset: int) -> str:
    name = _load().btf__name_by_offset(btf, offset)
    return name.decode(errors="replace") if name else ""
