"""The failures every layer may name, which the FUSE boundary answers without a traceback.

Anything else that reaches fs.py is a bug: it is logged with its traceback
and answered EIO.
"""


class NotFound(Exception):
    """A name that names nothing (no such target, view, pin or inode): ENOENT."""


class WouldBlock(Exception):
    """A caller that must not block asked for what takes a while (a load, a look at many files,
    a namespace's helper): it asks again in a worker thread."""
