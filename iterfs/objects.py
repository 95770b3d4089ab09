"""What a BPF object file holds, read with pyelftools and without loading it.

libbpf decides program boundaries the same way: every global function symbol
in an executable section is one program, and the section name says its type.
Here only iterator programs matter: sections ``iter/<target>`` and
``iter.s/<target>`` (sleepable); and what an object says of whom it may be
shown to: the target named in its section ``.iterfs.rule``, and its maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

_ITER_PREFIXES = ("iter/", "iter.s/")
RULE_SECTION = ".iterfs.rule"
EM_BPF = 247


class ObjectError(Exception):
    """The file is not a BPF object iterfs can serve; the message says why."""


@dataclass(frozen=True)
class IterProgram:
    name: str  # the C function name, which libbpf uses as the program name
    target: str  # the iterator target, e.g. "task_vma"


@dataclass(frozen=True)
class BpfObject:
    path: Path
    license: str
    programs: tuple[IterProgram, ...]
    rule: str | None = None  # the target whose rule for readers its views declare they are safe under
    maps: tuple[str, ...] = ()  # its maps' names


def read_object(path: Path) -> BpfObject:
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] not in ("EM_BPF", EM_BPF):
                raise ObjectError(f"{path}: not a BPF object (machine {elf['e_machine']})")
            return BpfObject(path=Path(path), license=_license(elf), programs=tuple(_programs(elf)),
                             rule=_text(elf, RULE_SECTION), maps=tuple(_maps(elf)))
    except ELFError as e:
        raise ObjectError(f"{path}: not an ELF file ({e})") from None
    except OSError as e:
        raise ObjectError(f"{path}: {e.strerror}") from None


def _license(elf: ELFFile) -> str:
    return _text(elf, "license") or ""


def _text(elf: ELFFile, name: str) -> str | None:
    """The NUL-terminated text section name holds, or None without the section."""
    section = elf.get_section_by_name(name)
    if section is None:
        return None
    return section.data().split(b"\0", 1)[0].decode(errors="replace")


def _maps(elf: ELFFile):
    symtab = elf.get_section_by_name(".symtab")
    maps = elf.get_section_by_name(".maps")
    if not isinstance(symtab, SymbolTableSection) or maps is None:
        return
    index = next(i for i, section in enumerate(elf.iter_sections()) if section.name == ".maps")
    for symbol in symtab.iter_symbols():
        if symbol["st_shndx"] == index and symbol["st_info"]["type"] == "STT_OBJECT":
            yield symbol.name


def _programs(elf: ELFFile):
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        return
    for symbol in symtab.iter_symbols():
        if symbol["st_info"]["type"] != "STT_FUNC" or symbol["st_info"]["bind"] != "STB_GLOBAL":
            continue
        index = symbol["st_shndx"]
        if not isinstance(index, int):
            continue
        section = elf.get_section(index).name
        for prefix in _ITER_PREFIXES:
            if section.startswith(prefix):
                yield IterProgram(name=symbol.name, target=section[len(prefix):])
