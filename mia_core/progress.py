"""What long work tells the user on stderr: progress bars (tqdm, silenced by ``--quiet``)
and one-line notes."""

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", unit: str = "it", quiet: bool = False,
             **kwargs: Any) -> tqdm:
    """A bar for known (``total``) or unknown (``None``) lengths, written to stderr."""
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def note(message: str) -> None:
    """One line for the user on stderr (a warning, a fallback taken): the one way the
    library speaks outside its results and errors."""
    print(message, file=sys.stderr, flush=True)
