"""mia: test string membership and memorization in language models."""

from mia_core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
