"""iterfs: Linux BPF iterators as plain files."""

from .api import Session, read, stream

__version__ = "0.1.0"
__all__ = ["Session", "read", "stream", "__version__"]
