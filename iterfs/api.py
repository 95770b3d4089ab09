"""Reading iterators without a mount, through the same code the filesystem uses.

    >>> import iterfs
    >>> print(iterfs.read("task", pid=1))
    >>> for chunk in iterfs.stream("task_file"):
    ...     ...
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Iterator as TypingIterator

from . import params as params_mod
from .catalog import BUNDLED_DIR, Catalog
from .iterator import Iterators
from .pins import require_bpffs
from .programs import route_libbpf_log
from .fields import PREFIX, file_params, listing, listing_path
from .tree import README


class Session:
    """Loaded programs kept across reads; close() releases them."""

    def __init__(self, bpf_dir: Path = BUNDLED_DIR):
        route_libbpf_log()  # the API's process starts here, as far as libbpf is concerned
        self.catalog = Catalog(bpf_dir)
        self.iterators = Iterators(self.catalog)

    def stream(self, target: str, /, **params: int) -> TypingIterator[bytes]:
        """The output of one fresh walk, chunk by chunk."""
        return self._stream(target, params_mod.from_kwargs(target, params))

    def read(self, target: str, /, **params: int) -> str:
        return b"".join(self.stream(target, **params)).decode(errors="surrogateescape")

    def stream_path(self, path: str) -> TypingIterator[bytes]:
        """The contents of a tree path such as ``task_vma/pid=42``, ``task/README`` or
        ``task/fields=pid,comm/all.json``."""
        target, name = self._split(path)
        path = listing_path(name)
        if path is not None:  # FIELDS, FIELDS.mm
            yield listing(target, path).encode()
            return
        fields = None
        if name.startswith(PREFIX):  # task/fields=pid,comm/all, .../all.json
            fields, _, name = name[len(PREFIX):].partition("/")
            name = name or params_mod.ALL
        if name == README:
            yield self.catalog.recipe(target, fields=fields).readme.encode()
            return
        params_name, as_json = file_params(name) if fields is not None else (name, False)
        params = params_mod.parse(target, params_name)
        yield from self._stream(target, params, fields, as_json)

    def pin(self, path: str, bpffs_path: Path) -> None:
        """Pin the iterator of a tree path (``task_vma/pid=42``) at bpffs_path; it outlives us."""
        target, name = self._split(path)
        require_bpffs(bpffs_path.parent)
        self.iterators.pin(target, params_mod.parse(target, name), str(bpffs_path))

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        """("task_vma", "pid=42") of "task_vma/pid=42"; a bare target means its `all`."""
        target, _, name = path.strip("/").partition("/")
        return target, name or params_mod.ALL

    def _stream(self, target: str, params: params_mod.Params, fields: str | None = None,
                as_json: bool = False) -> TypingIterator[bytes]:
        iterator = self.iterators.open(target, params, fields=fields, as_json=as_json)
        try:
            yield from iterator
        finally:
            self.iterators.release(iterator)

    def close(self) -> None:
        self.iterators.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: Session | None = None
_default_lock = threading.Lock()


def default_session() -> Session:
    global _default
    with _default_lock:
        if _default is None:
            _default = Session()
            atexit.register(_default.close)
        return _default


def stream(target: str, /, **params: int) -> TypingIterator[bytes]:
    return default_session().stream(target, **params)


def read(target: str, /, **params: int) -> str:
    return default_session().read(target, **params)
