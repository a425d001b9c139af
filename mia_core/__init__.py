"""mia: test string membership and memorization in language models."""

from mia_core.hookspecs import hookimpl
from mia_core.option_schema import Option

__version__ = "0.1.0"
__all__ = ["Option", "hookimpl", "__version__"]
