"""The failures every layer may name, which the FUSE boundary answers without a traceback.

Anything else that reaches fs.py is a bug: it is logged with its traceback
and answered EIO.
"""


class NotFound(Exception):
    """A name that names nothing (no such target, view, pin or inode): ENOENT."""
