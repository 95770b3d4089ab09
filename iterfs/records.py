"""The program's records as lines: what each field's bytes say, as text or as JSON.

    Formatter(fields, as_json)    records -> lines (JSON, and text the program cannot print)
    Header(fields)                the program prints the text: a header line goes first
    integer/enum/pointer/string/char   what a field's unpacked bytes are, as Python values
    text_of(show, kind)           ... and as text, escaped as the program escapes it

A record is, per field, a status byte (1: read) and the field's bytes
(bpf/fields.bpf.c); struct unpacks a whole record in one go. Text here is
what the program prints for the same bytes: tab, newline, return, backslash
and the other control bytes escaped, every other byte as it is.
"""

from __future__ import annotations

import errno
import json
import struct
import sys
from typing import Callable


def integer(signed: bool, big_endian: bool, shift: int, width: int, as_bool: bool):
    order = "big" if big_endian else sys.byteorder

    def show(data: bytes):
        if width:  # a bitfield: little-endian bit numbering, as BTF gives it on this machine
            value = int.from_bytes(data, "little") >> shift & ((1 << width) - 1)
            if signed and value >> (width - 1):
                value -= 1 << width
        else:
            value = int.from_bytes(data, order, signed=signed)
        return bool(value) if as_bool else value
    return show


def enum(number, names: dict[int, str]):
    """An enum's name for its value (the number, when the value has none); number: from bytes."""
    def show(unpacked):
        value = number(unpacked) if number else unpacked
        return names.get(value, value)
    return show


def pointer(value: int) -> str:
    return f"{value:#x}"


def string(data: bytes) -> str:
    """JSON's: bytes that are no UTF-8 become U+FFFD, as JSON text holds no raw bytes."""
    return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def char(value: int) -> str:
    return chr(value & 0xFF) if value & 0xFF < 0x80 else "\ufffd"


# tab, newline and backslash would change what a line means; other control bytes, how it shows
_ESCAPES = str.maketrans({**{chr(c): f"\\x{c:02x}" for c in [*range(32), 127]},
                          "\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"})


def _string_text(data: bytes) -> str:
    """Text's, as the program prints it: control bytes escaped, other bytes as they are
    (surrogateescape carries those that are no UTF-8 through to the encode)."""
    return data.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape").translate(_ESCAPES)


def _char_text(value: int) -> str:
    return _string_text(bytes([value & 0xFF]))


def text_of(show: Callable | None, kind: str) -> Callable:
    """What was unpacked -> its text."""
    if show is None:
        return str
    if show is string:
        return _string_text
    if show is char:
        return _char_text
    if kind == "bool":
        return lambda unpacked: "1" if show(unpacked) else "0"
    return lambda unpacked: str(show(unpacked))  # enum names, hex: nothing to escape


class Header:
    """The program prints the text: a header line of the field names goes before it."""

    def __init__(self, fields):
        self._header = ("\t".join(f.name for f in fields.fields) + "\n").encode()
        self._started = False

    def feed(self, chunk: bytes) -> bytes:
        if self._started:
            return chunk
        self._started = True
        return self._header + chunk

    def end(self) -> bytes:
        """The header alone, for a walk without objects."""
        return b"" if self._started else self.feed(b"")


class Formatter:
    """The records of one walk, as text or JSON lines. Records may be split across reads."""

    def __init__(self, fields, as_json: bool):
        self._names = [f.name for f in fields.fields]
        # a record: per field its status byte (1: read) and its bytes, unpacked in one go
        self._record = struct.Struct("=" + "".join("B" + f.code for f in fields.fields))
        assert self._record.size == fields.record_size
        self._shows = [f.show or _same for f in fields.fields] if as_json else [f.text for f in fields.fields]
        self._header = None if as_json else Header(fields)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The lines of the whole records in what has arrived so far."""
        data = self._pending + chunk
        whole = len(data) - len(data) % self._record.size
        self._pending = data[whole:]
        if not whole:
            return b""
        lines, shows = [], self._shows
        with memoryview(data) as view:
            records = self._record.iter_unpack(view[:whole])
            if self._header is None:
                names = self._names
                for r in records:
                    values = [show(v) if ok else None for show, ok, v in zip(shows, r[::2], r[1::2])]
                    lines.append(json.dumps(dict(zip(names, values)), ensure_ascii=False))
            else:
                for r in records:
                    lines.append("\t".join([show(v) if ok else "-" for show, ok, v in zip(shows, r[::2], r[1::2])]))
        lines.append("")
        text = "\n".join(lines).encode("utf-8", errors="surrogateescape")
        return text if self._header is None else self._header.feed(text)

    def end(self) -> bytes:
        """The walk is over: the header of a walk without objects; nothing may be left half read."""
        if self._pending:
            raise OSError(errno.EIO, f"the walk ended inside a record "
                                     f"({len(self._pending)} of {self._record.size} bytes)")
        return b"" if self._header is None else self._header.end()


def _same(value):
    return value
