"""The system libbpf (libbpf.so.1), through ctypes: signatures and error checks only.

Every function here either returns a plain value or raises ``OSError`` with the
errno libbpf reported. Nothing above this package touches ctypes.
"""

from ._binding import (
    BPF_TRACE_ITER,
    LibbpfError,
    btf_find_func,
    btf_find_struct,
    btf_free,
    btf_load_vmlinux,
    btf_parse_split,
    iter_create,
    link_create,
    map_get_fd_by_id,
    map_ids,
    obj_get,
    obj_pin,
    object_close,
    object_load,
    object_open,
    object_program_fd,
    object_reuse_map,
    object_set_initial,
    object_set_iter_target,
    probe_iter_target,
    set_log_handler,
)

__all__ = [
    "BPF_TRACE_ITER",
    "LibbpfError",
    "btf_find_func",
    "btf_find_struct",
    "btf_free",
    "btf_load_vmlinux",
    "btf_parse_split",
    "iter_create",
    "link_create",
    "map_get_fd_by_id",
    "map_ids",
    "obj_get",
    "obj_pin",
    "object_close",
    "object_load",
    "object_open",
    "object_program_fd",
    "object_reuse_map",
    "object_set_initial",
    "object_set_iter_target",
    "probe_iter_target",
    "set_log_handler",
]
