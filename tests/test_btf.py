"""iterfs.btf reads the globals of objects built here and of the bundled ones, against bpftool's BTF dump.

bpftool is the ground truth for names, sections, sizes, linkage and signedness.
Offsets come from `bpftool gen object`: clang leaves a global's DATASEC offset
at 0 and a linker or loader fills it in, and bpftool's linker is libbpf's.
Only the C spellings (ctype) and our kind buckets have no bpftool equivalent.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import ROOT, missing
from helpers import bpftool_json
from iterfs.btf import read_globals
from iterfs.objects import ObjectError

SOURCE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

int target_pid = 0;
volatile const __u32 limit = 5;
char comm[16] = "x";
__u64 counter;
bool flag;
enum e { A = -1 } val;
unsigned char raw[6];
__u8 bytes[3];
_Bool bools[2];
struct point { int x, y; } origin;
struct task_struct *last_task;
char *const names[2];
int matrix[2][3];
int (*row)[4];
float ratio = 1.5;
static int hidden = 3;
SEC(".data.custom") int custom = 1;
SEC(".rodata.consts") const long long big = 7;
int __attribute__((btf_decl_tag("note"))) tagged;
int __attribute__((btf_type_tag("user"))) *user_ptr;
extern int LINUX_KERNEL_VERSION __kconfig;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} scratch SEC(".maps");

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	hidden++;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d %d %u %d\n", task->pid, LINUX_KERNEL_VERSION, limit, hidden);
	return 0;
}

char _license[] SEC("license") = "GPL";
"""

# (ctype, kind) as a person reads the declarations above
SPELLED = {
    "target_pid": ("int", "int"),
    "limit": ("const volatile __u32", "int"),
    "comm": ("char[16]", "chars"),
    "counter": ("__u64", "int"),
    "flag": ("bool", "int"),
    "val": ("enum e", "int"),
    "raw": ("unsigned char[6]", "chars"),
    "bytes": ("__u8[3]", "chars"),
    "bools": ("_Bool[2]", "other"),
    "origin": ("struct point", "other"),
    "last_task": ("struct task_struct *", "other"),
    "names": ("char *const[2]", "other"),
    "matrix": ("int[2][3]", "other"),
    "row": ("int (*)[4]", "other"),
    "ratio": ("float", "other"),
    "hidden": ("int", "int"),
    "custom": ("int", "int"),
    "big": ("const long long", "int"),
    "tagged": ("int", "int"),
    "user_ptr": ("int *", "other"),  # the type tag is an annotation, not C
}
WRAPPERS = ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG")


@pytest.fixture(scope="module", autouse=True)
def tools():
    for tool in ("clang", "bpftool"):
        if not shutil.which(tool):
            missing(tool)


def build(tmp_path: Path, source: str, *flags: str, target: str = "bpf") -> Path:
    src, obj = tmp_path / f"prog-{target}.bpf.c", tmp_path / f"prog-{target}.bpf.o"
    src.write_text(source)
    cmd = ["clang", *flags, "-O2", "-target", target, f"-I{ROOT / 'bpf'}", "-c", str(src), "-o", str(obj)]
    subprocess.run(cmd, check=True)
    return obj


def is_data(section: str) -> bool:
    return section in (".bss", ".data", ".rodata") or section.startswith((".data.", ".rodata."))


def bpftool_vars(obj: Path, link: bool = True) -> tuple[dict, dict]:
    """{(section, name): (offset, size, linkage)} for every DATASEC entry, and the types by id."""
    if link:  # finalise the offsets as a loader would
        linked = obj.with_suffix(".linked.o")
        subprocess.run(["bpftool", "gen", "object", str(linked), str(obj)], check=True, capture_output=True)
        obj = linked
    types = {t["id"]: t for t in bpftool_json("btf", "dump", "file", str(obj))["types"]}
    found = {
        (sec["name"], types[v["type_id"]]["name"]): (v["offset"], v["size"], types[v["type_id"]].get("linkage"))
        for sec in types.values()
        if sec["kind"] == "DATASEC"
        for v in sec["vars"]
    }
    return found, types


def expected(found: dict) -> dict:
    """What read_globals should report: data sections, not extern, not compiler-named."""
    return {
        key: (offset, size, linkage == "static")
        for key, (offset, size, linkage) in found.items()
        if is_data(key[0]) and linkage in ("static", "global") and "." not in key[1]
    }


def ours(obj: Path) -> dict:
    return {(g.section, g.name): (g.offset, g.size, g.is_static) for g in read_globals(obj)}


def bpftool_integer(types: dict, var_name: str) -> tuple[bool, int] | None:
    """(signed, bits) of a variable's underlying integer or enum in bpftool's dump; None if not one."""
    t = next(t for t in types.values() if t["kind"] == "VAR" and t["name"] == var_name)
    t = types[t["type_id"]]
    while t["kind"] in WRAPPERS:
        t = types[t["type_id"]]
    if t["kind"] == "INT":
        return t["encoding"] == "SIGNED", t["nr_bits"]
    if t["kind"] in ("ENUM", "ENUM64"):
        return t["encoding"] == "SIGNED", t["size"] * 8
    return None


def test_globals_match_bpftool(tmp_path):
    obj = build(tmp_path, SOURCE, "-g")
    found, types = bpftool_vars(obj)
    assert ours(obj) == expected(found)
    assert ours(obj.with_suffix(".linked.o")) == expected(found)  # already-linked objects read the same
    # what was left out is there to leave out
    fmt, kconfig, maps = (".rodata", "dump_task.___fmt"), (".kconfig", "LINUX_KERNEL_VERSION"), (".maps", "scratch")
    for left_out in (fmt, kconfig, maps, ("license", "_license")):
        assert left_out in found and left_out not in ours(obj)
    assert {name for _, name in expected(found)} == set(SPELLED)
    for g in read_globals(obj):
        assert (g.ctype, g.kind) == SPELLED[g.name], g
        integer = bpftool_integer(types, g.name)
        assert (g.kind == "int") == (integer is not None), g
        if integer:
            assert (g.signed, g.int_bits) == integer, g
            assert g.int_bits == g.size * 8, g


def test_other_byte_order_is_refused(tmp_path):
    """libbpf opens objects of its own byte order only, so a bpfeb object can never load here."""
    assert sys.byteorder == "little"  # the bpfel build is the native one
    little = build(tmp_path, SOURCE, "-g", target="bpfel")
    assert read_globals(little) == read_globals(build(tmp_path, SOURCE, "-g"))
    big_obj = build(tmp_path, SOURCE, "-g", target="bpfeb")
    # bpftool's open (libbpf's bpf_object__open, as for a skeleton) refuses it too
    refused = subprocess.run(["bpftool", "gen", "skeleton", str(big_obj)], capture_output=True, text=True)
    assert refused.returncode != 0 and "Endian mismatch" in refused.stderr, refused.stderr
    with pytest.raises(ObjectError, match="built for the other byte order"):
        read_globals(big_obj)


def _replace_btf(obj: Path, out: Path, btf: bytes) -> Path:
    if not shutil.which("llvm-objcopy"):
        missing("llvm-objcopy")
    blob = out.with_suffix(".btf")
    blob.write_bytes(btf)
    subprocess.run(["llvm-objcopy", f"--update-section=.BTF={blob}", str(obj), str(out)], check=True)
    return out


def test_enum64_and_decl_tag_keep_the_walk_in_step(tmp_path):
    """clang 14 emits no ENUM64: append one (signed), a VAR, a DECL_TAG and a DATASEC by hand."""
    obj = build(tmp_path, SOURCE, "-g", target="bpfel")
    btf = ELFFile(open(obj, "rb")).get_section_by_name(".BTF").data()
    _magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", btf)
    types = btf[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = bytearray(btf[hdr_len + str_off : hdr_len + str_off + str_len])

    def name(text: str) -> int:
        strings.extend(text.encode() + b"\0")
        return len(strings) - len(text) - 1

    n = len(bpftool_json("btf", "dump", "file", str(obj))["types"])
    low = -(2**40) & (2**64 - 1)
    wide_info = 1 << 31 | 19 << 24 | 1  # signed ENUM64, one value
    types += struct.pack("<IIIIII", name("wide"), wide_info, 8, name("WIDE_LOW"), low & 0xFFFFFFFF, low >> 32)
    types += struct.pack("<IIII", name("wide_var"), 14 << 24, n + 1, 0)  # static
    types += struct.pack("<IIIi", name("note"), 17 << 24, n + 2, -1)
    # no ELF section backs .data.wide: libbpf's open asks the ELF only for a DATASEC of size 0
    # and for the symbols of non-static VARs (btf_fixup_datasec), so this one it takes as it is
    types += struct.pack("<IIIIII", name(".data.wide"), 15 << 24 | 1, 8, n + 2, 0, 8)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    wide = _replace_btf(obj, tmp_path / "wide.bpf.o", header + types + bytes(strings))

    found, bpftool_types = bpftool_vars(wide, link=False)
    assert found[(".data.wide", "wide_var")] == (0, 8, "static")
    g = next(g for g in read_globals(wide) if g.name == "wide_var")
    assert (g.section, g.offset, g.size, g.is_static) == (".data.wide", 0, 8, True)
    assert (g.ctype, g.kind) == ("enum wide", "int")
    assert (g.signed, g.int_bits) == bpftool_integer(bpftool_types, "wide_var") == (True, 64)
    assert {x.name for x in read_globals(wide)} == set(SPELLED) | {"wide_var"}


# no maps, no externs: libbpf opens this one without its BTF (bpf_object__btf() is NULL)
NO_BTF_NEEDED = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

int target_pid = 0;

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	return ctx->task && ctx->task->pid == target_pid;
}

char _license[] SEC("license") = "GPL";
"""


@pytest.mark.parametrize("source", [SOURCE, NO_BTF_NEEDED], ids=["btf required", "btf optional"])
@pytest.mark.parametrize(
    "damage",
    [lambda btf: btf[:40], lambda btf: b"\0\0" + btf[2:], lambda btf: btf[:24] + b"\xff" * (len(btf) - 24)],
    ids=["truncated", "bad magic", "garbage types"],
)
def test_corrupt_btf_raises(tmp_path, damage, source):
    """Whether libbpf refuses the open (maps and externs need BTF) or drops the BTF, the BTF is blamed."""
    obj = build(tmp_path, source, "-g", target="bpfel")
    assert read_globals(obj)  # intact, it reads
    btf = ELFFile(open(obj, "rb")).get_section_by_name(".BTF").data()
    broken = _replace_btf(obj, tmp_path / "broken.bpf.o", damage(btf))
    assert subprocess.run(["bpftool", "btf", "dump", "file", str(broken)], capture_output=True).returncode != 0
    with pytest.raises(ObjectError, match="corrupt BTF"):
        read_globals(broken)


def test_object_without_btf_has_no_globals(tmp_path):
    obj = build(tmp_path, SOURCE)
    assert ELFFile(open(obj, "rb")).get_section_by_name(".BTF") is None
    assert read_globals(obj) == ()


def test_not_an_object_raises(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file\n")
    with pytest.raises(ObjectError, match="not an ELF"):
        read_globals(text)
    with pytest.raises(ObjectError, match="not a BPF object"):
        read_globals(Path(sys.executable).resolve())
    with pytest.raises(ObjectError, match="No such file"):
        read_globals(tmp_path / "absent.bpf.o")


def test_bundled_objects_match_bpftool(tmp_path):
    objects = sorted((ROOT / "iterfs" / "bpf").glob("*.bpf.o"))
    if not objects:
        missing("built BPF objects (run make)")
    for obj in objects:
        copy = tmp_path / obj.name  # bpftool gen object writes next to it
        shutil.copy(obj, copy)
        found, types = bpftool_vars(copy)
        assert ours(copy) == expected(found), obj.name
        for g in read_globals(copy):
            integer = bpftool_integer(types, g.name)
            assert (g.kind == "int") == (integer is not None), g
            assert (g.signed, g.int_bits) == (integer or (False, 0)), g
    every = {g.name for obj in objects for g in read_globals(obj)}
    assert {"percpu", "map_type_names"} <= every  # an integer and a table: the loop above compared both
