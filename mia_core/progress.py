"""What long work tells the user on stderr: progress bars (tqdm, silenced by ``--quiet``)
and one-line notes."""

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm

from mia_core.redact import redact_text

#: Set by the CLI from the command's ``--quiet``: bars drawn by plugins (model loading) follow it.
QUIET = {"value": False}


def set_quiet(value: bool) -> None:
    QUIET["value"] = bool(value)


def progress(total: int | None = None, desc: str = "", unit: str = "it", quiet: bool = False,
             **kwargs: Any) -> tqdm:
    """A bar for known (``total``) or unknown (``None``) lengths, written to stderr; none at all when
    ``quiet`` or the command's ``-q`` (:func:`set_quiet`): bars drawn by plugins follow it too."""
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet or QUIET["value"], file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def clear_bars() -> None:
    """Erase every bar still on screen (work an error interrupted; a plugin's bar included), so
    that the error printed next starts on a clean line instead of after a bar's ``\r`` remnant."""
    for bar in list(getattr(std_tqdm, "_instances", ())):
        if not bar.disable:
            bar.leave = False
            bar.close()
    sys.stderr.flush()


def note(message: str, quiet: bool = False) -> None:
    """One line for the user on stderr (a warning, a fallback taken, where output went): the one
    way the library speaks outside its results and errors; stdout stays clean for --json.
    ``quiet`` silences it (a command's ``-q`` for lines that are not warnings)."""
    if quiet:
        return
    if any(not bar.disable for bar in list(getattr(std_tqdm, "_instances", ()))):
        std_tqdm.write(redact_text(message), file=sys.stderr)  # erases the bars, prints, redraws them
        sys.stderr.flush()
    else:
        print(redact_text(message), file=sys.stderr, flush=True)


@contextmanager
def stages(names: Sequence[str], desc: str, quiet: bool = False, tick_s: float = 1.0) -> Iterator[Callable[[], None]]:
    """A bar over the named stages of one long step that cannot count finer work (loading weights,
    converting a GGUF file). Yields ``advance()``, called as each stage ends. On a terminal the bar is
    redrawn every ``tick_s`` seconds, so its elapsed time moves even while one stage lasts a minute."""
    quiet = quiet or QUIET["value"]
    bar = progress(total=len(names), desc=desc, unit="step", quiet=quiet)
    done = [0]
    bar.set_postfix_str(names[0] if names else "")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(tick_s):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True) if not quiet and sys.stderr.isatty() else None
    if ticker is not None:
        ticker.start()

    def advance() -> None:
        done[0] += 1
        bar.update(1)
        if done[0] < len(names):
            bar.set_postfix_str(names[done[0]])

    try:
        yield advance
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
        bar.close()
