"""ctypes signatures for the few libbpf calls iterfs makes, and their error checks.

libbpf 1.x has two error conventions (libbpf_common.h): functions returning a
pointer return NULL and set errno; functions returning int return -errno.
Each function below is declared with the checker for its convention.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Callable

BYTE_ORDER = sys.byteorder  # libbpf opens objects of this byte order only
BPF_TRACE_ITER = 28  # enum bpf_attach_type, include/uapi/linux/bpf.h
BPF_PROG_TYPE_TRACING = 26  # enum bpf_prog_type
# BTF_KIND_* (include/uapi/linux/btf.h)
BTF_KIND_STRUCT, BTF_KIND_FUNC = 4, 12
BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_UNION, BTF_KIND_ENUM = 1, 2, 3, 5, 6
BTF_KIND_FWD, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT = 7, 8, 9, 10, 11
BTF_KIND_FUNC_PROTO, BTF_KIND_VAR, BTF_KIND_DATASEC, BTF_KIND_FLOAT = 13, 14, 15, 16
BTF_KIND_DECL_TAG, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64 = 17, 18, 19
# "r0 = 0; exit": the smallest program, which libbpf's own feature probes load too
# (libbpf_probe_bpf_prog_type()); struct bpf_insn is {u8 code, u8 regs, s16 off, s32 imm}
_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")

# enum libbpf_print_level
_LEVELS = {0: "warning", 1: "info", 2: "debug"}


class LibbpfError(OSError):
    """A libbpf call failed; ``errno`` is what libbpf reported."""


class _LinkCreateOpts(ctypes.Structure):
    # struct bpf_link_create_opts up to target_btf_id; libbpf reads only `sz` bytes
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
    ]


class _ProgLoadOpts(ctypes.Structure):
    # struct bpf_prog_load_opts up to attach_btf_obj_fd; libbpf reads only `sz` bytes
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

# name: (argtypes, restype, convention)
_SIGNATURES = {
    "bpf_object__open_file": ([ctypes.c_char_p, ctypes.c_void_p], ctypes.c_void_p, "ptr"),
    "bpf_object__load": ([ctypes.c_void_p], ctypes.c_int, "int"),
    "bpf_object__close": ([ctypes.c_void_p], None, None),
    "bpf_object__find_program_by_name": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p, "ptr"),
    "bpf_object__find_map_by_name": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p, "ptr"),
    "bpf_map__reuse_fd": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_int, "int"),
    "bpf_map__fd": ([ctypes.c_void_p], ctypes.c_int, "int"),
    "bpf_map_update_elem": ([ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint64], ctypes.c_int, "int"),
    "bpf_map_delete_elem": ([ctypes.c_int, ctypes.c_char_p], ctypes.c_int, "int"),
    "bpf_prog_load": (
        [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
         ctypes.POINTER(_ProgLoadOpts)],
        ctypes.c_int,
        "int",
    ),
    "bpf_map__initial_value": ([ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)], ctypes.c_void_p, "ptr"),
    "bpf_program__fd": ([ctypes.c_void_p], ctypes.c_int, "int"),
    "bpf_program__set_attach_target": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p], ctypes.c_int, "int"),
    "bpf_link_create": (
        [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_LinkCreateOpts)],
        ctypes.c_int,
        "int",
    ),
    "bpf_iter_create": ([ctypes.c_int], ctypes.c_int, "int"),
    "bpf_obj_get": ([ctypes.c_char_p], ctypes.c_int, "int"),
    "bpf_obj_pin": ([ctypes.c_int, ctypes.c_char_p], ctypes.c_int, "int"),
    "bpf_map_get_fd_by_id": ([ctypes.c_uint32], ctypes.c_int, "int"),
    "bpf_map_get_next_id": ([ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)], ctypes.c_int, None),
    "btf__load_vmlinux_btf": ([], ctypes.c_void_p, "ptr"),
    "btf__parse_split": ([ctypes.c_char_p, ctypes.c_void_p], ctypes.c_void_p, "ptr"),
    "btf__find_by_name_kind": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int, "int"),
    "btf__free": ([ctypes.c_void_p], None, None),
    "btf__type_cnt": ([ctypes.c_void_p], ctypes.c_uint32, None),
    "btf__type_by_id": ([ctypes.c_void_p, ctypes.c_uint32], ctypes.c_void_p, "ptr"),
    "btf__name_by_offset": ([ctypes.c_void_p, ctypes.c_uint32], ctypes.c_char_p, None),
    "bpf_object__btf": ([ctypes.c_void_p], ctypes.c_void_p, None),
    "libbpf_set_print": ([_PRINT_FN], ctypes.c_void_p, None),
}

_lib = None
_lib_lock = threading.Lock()


def _check_ptr(result, func, args):
    if not result:
        err = ctypes.get_errno()
        raise LibbpfError(err, f"{func.__name__}: {os.strerror(err)}")
    return result


def _check_int(result, func, args):
    if result < 0:
        raise LibbpfError(-result, f"{func.__name__}: {os.strerror(-result)}")
    return result


def _load():
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
            for name, (argtypes, restype, convention) in _SIGNATURES.items():
                func = getattr(lib, name)
                func.argtypes = argtypes
                func.restype = restype
                if convention == "ptr":
                    func.errcheck = _check_ptr
                elif convention == "int":
                    func.errcheck = _check_int
            _lib = lib
    return _lib


# libbpf hands its printf-style messages over as (fmt, va_list); libc formats them.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int
_print_callback = None  # keeps the C callback alive
_VA_LIST_SIZE = 32


def set_log_handler(handler: Callable[[str, str], None]) -> None:
    """Route libbpf's messages (verifier logs included) to handler(level, text)."""
    global _print_callback

    def _print(level: int, fmt: bytes, args: int) -> int:
        # vsnprintf consumes its va_list, and a verifier log may need a second,
        # larger try: each try gets its own copy (va_copy by hand; the va_list
        # of x86-64 and aarch64 is at most _VA_LIST_SIZE bytes of plain data).
        saved = ctypes.string_at(args, _VA_LIST_SIZE)
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        args_copy = ctypes.create_string_buffer(saved, _VA_LIST_SIZE)
        n = _libc.vsnprintf(buf, size, fmt, ctypes.addressof(args_copy))
        if n >= size:
            buf = ctypes.create_string_buffer(n + 1)
            args_copy = ctypes.create_string_buffer(saved, _VA_LIST_SIZE)
            _libc.vsnprintf(buf, n + 1, fmt, ctypes.addressof(args_copy))
        handler(_LEVELS.get(level, "debug"), buf.value.decode(errors="replace"))
        return 0

    _print_callback = _PRINT_FN(_print)
    _load().libbpf_set_print(_print_callback)


def object_open(path: str) -> int:
    return _load().bpf_object__open_file(os.fsencode(path), None)


def object_load(obj: int) -> None:
    _load().bpf_object__load(obj)


def object_close(obj: int) -> None:
    _load().bpf_object__close(obj)


def object_set_iter_target(obj: int, program: str, target: str) -> None:
    """Point an iterator program at another target before load (libbpf adds "bpf_iter_")."""
    prog = _load().bpf_object__find_program_by_name(obj, program.encode())
    _load().bpf_program__set_attach_target(prog, 0, target.encode())


def object_set_initial(obj: int, section: str, offset: int, value: bytes) -> None:
    """Write value at offset of a data section (".bss", ".data", ".rodata", ...) before load."""
    data_map = _load().bpf_object__find_map_by_name(obj, section.encode())
    size = ctypes.c_size_t()
    data = _load().bpf_map__initial_value(data_map, ctypes.byref(size))
    if offset + len(value) > size.value:
        raise LibbpfError(22, f"{section}: {offset}+{len(value)} is past its {size.value} bytes")
    ctypes.memmove(data + offset, value, len(value))


def object_reuse_map(obj: int, name: str, fd: int) -> None:
    """Make the object's map called name stand for the existing map fd (libbpf dups fd) at load."""
    bpf_map = _load().bpf_object__find_map_by_name(obj, name.encode())
    _load().bpf_map__reuse_fd(bpf_map, fd)


def probe_iter_target(attach_btf_id: int) -> None:
    """Load, then close, a program that returns 0 for the iterator target whose
    bpf_iter_<target> function has vmlinux BTF id attach_btf_id; OSError if the kernel refuses it."""
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=BPF_TRACE_ITER,
                         attach_btf_id=attach_btf_id)
    fd = _load().bpf_prog_load(BPF_PROG_TYPE_TRACING, b"iterfs_probe", b"GPL", _RETURN_ZERO,
                               len(_RETURN_ZERO) // 8, ctypes.byref(opts))
    os.close(fd)


def object_program_fd(obj: int, program: str) -> int:
    prog = _load().bpf_object__find_program_by_name(obj, program.encode())
    return _load().bpf_program__fd(prog)


def object_map_fd(obj: int, name: str) -> int | None:
    """The fd of the object's map called name (valid while the object is open), or None."""
    try:
        found = _load().bpf_object__find_map_by_name(obj, name.encode())
    except LibbpfError:
        return None
    return _load().bpf_map__fd(found)


def map_update(fd: int, key: bytes, value: bytes) -> None:
    _load().bpf_map_update_elem(fd, key, value, 0)  # BPF_ANY


def map_delete(fd: int, key: bytes) -> None:
    _load().bpf_map_delete_elem(fd, key)


def link_create(prog_fd: int, link_info: bytes | None) -> int:
    """An iterator link for prog_fd, with link_info (union bpf_iter_link_info) or none."""
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts))
    keep = None
    if link_info:
        keep = ctypes.create_string_buffer(link_info, len(link_info))
        opts.iter_info = ctypes.cast(keep, ctypes.c_void_p)
        opts.iter_info_len = len(link_info)
    return _load().bpf_link_create(prog_fd, 0, BPF_TRACE_ITER, ctypes.byref(opts))


def iter_create(link_fd: int) -> int:
    return _load().bpf_iter_create(link_fd)


def obj_get(path: str) -> int:
    """An fd for the BPF object pinned at path in bpffs."""
    return _load().bpf_obj_get(os.fsencode(path))


def obj_pin(fd: int, path: str) -> None:
    _load().bpf_obj_pin(fd, os.fsencode(path))


def map_get_fd_by_id(map_id: int) -> int:
    return _load().bpf_map_get_fd_by_id(map_id)


def map_ids() -> list[int]:
    """Every BPF map id, ascending (bpf_map_get_next_id() until ENOENT)."""
    ids, current, following = [], 0, ctypes.c_uint32()
    while _load().bpf_map_get_next_id(current, ctypes.byref(following)) == 0:
        current = following.value
        ids.append(current)
    return ids


def btf_load_vmlinux() -> int:
    return _load().btf__load_vmlinux_btf()


def btf_parse_split(path: str, base: int) -> int:
    return _load().btf__parse_split(os.fsencode(path), base)


def btf_find_struct(btf: int, name: str) -> bool:
    return btf_find(btf, name, BTF_KIND_STRUCT) is not None


def btf_find_func(btf: int, name: str) -> int | None:
    """The BTF id of function name, or None."""
    return btf_find(btf, name, BTF_KIND_FUNC)


def btf_find(btf: int, name: str, kind: int) -> int | None:
    try:
        return _load().btf__find_by_name_kind(btf, name.encode(), kind)
    except LibbpfError:
        return None


def btf_free(btf: int) -> None:
    _load().btf__free(btf)


def object_btf(obj: int) -> int | None:
    """The BTF of an opened object (libbpf's, freed with the object), or None if built without -g."""
    return _load().bpf_object__btf(obj) or None

