"""Progress bars on stderr (tqdm), silenced by ``--quiet``."""

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", unit: str = "it", quiet: bool = False,
             **kwargs: Any) -> tqdm:
    """A bar for known (``total``) or unknown (``None``) lengths, written to stderr."""
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, **kwargs)
