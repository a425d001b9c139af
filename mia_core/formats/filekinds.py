"""What a mia file is (map, run, scores, attack results) and which runs a list of paths names.

Scores (``<run>.scores.h5``) live beside their run in ``<map>/runs/``, so the README's
``mia report <map>/runs/*.h5`` glob picks them up: commands that take runs expand a map folder to
its runs and skip scores files with a note instead of failing on them (docs/report.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mia_core.errors import MiaError
from mia_core.formats.integrity import READ_ERRORS, NotHDF5, verify
from mia_core.progress import note

SCORES_SUFFIX = ".scores.h5"
KINDS = ("map", "run", "scores", "attack")


def file_kind(path: str | os.PathLike) -> str | None:
    """``map``, ``run``, ``scores``, ``attack`` or None (not a mia HDF5 file). A map folder is ``map``.
    A mia file whose checksum fails is :class:`~mia_core.formats.integrity.DamagedFile`, not None."""
    import h5py

    p = Path(path)
    if p.is_dir():
        p = p / "prefix_map.h5"
    try:
        verify(p, remedy_for(p))  # a damaged mia file is DamagedFile (raised), not "some other file"
    except (OSError, NotHDF5):
        return None
    try:
        with h5py.File(p, "r") as f:
            if "prefixes" in f and "suffixes" in f:
                return "map"
            if "columns" in f.attrs and "tokens" in f:
                return "run"
            if "match" in f:
                return "scores"
            if "signals" in f:
                return "attack"
    except READ_ERRORS:
        return None
    return None


def remedy_for(path: Path) -> str:
    """How to recover a damaged file, as far as its name tells what it is."""
    if path.name.endswith(SCORES_SUFFIX):
        return "score the run again with mia score"
    if path.name == "prefix_map.h5":
        return "remake the map with mia prefix"
    return "restore it from a copy, or make it again with the command that wrote it"


def map_runs(folder: Path) -> list[Path]:
    """The runs of a map folder, oldest name first (scores and journals are not runs)."""
    runs_dir = folder / "runs"
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.glob("*.h5") if not p.name.endswith(SCORES_SUFFIX))


def map_attacks(folder: Path) -> list[Path]:
    """The attack results files of a map folder (``<map>/attacks/*.h5``)."""
    attacks_dir = folder / "attacks"
    return sorted(attacks_dir.glob("*.h5")) if attacks_dir.is_dir() else []


def expand_runs(paths: Iterable[str | os.PathLike], command: str) -> list[Path]:
    """The run files that ``paths`` name: a map folder (or its ``runs/`` folder) stands for its runs;
    a scores file is skipped with a note (its run is scored or reported instead). Anything else is
    passed on unchanged, for the run reader to judge. An empty result is an error."""
    out: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            folder = p.parent if p.name == "runs" and (p.parent / "prefix_map.h5").is_file() else p
            if not (folder / "prefix_map.h5").is_file():
                raise MiaError(f"{p} is a folder but not a prefix map folder (no prefix_map.h5); give run files "
                               "or a map folder")
            found = map_runs(folder)
            if not found:
                raise MiaError(f"the map {folder} has no runs yet (make one with mia prompt or mia check)")
            out += found
        elif p.name.endswith(SCORES_SUFFIX):
            skipped.append(p.name)
        else:
            out.append(p)
    if skipped:
        note(f"{command}: skipped {len(skipped)} scores file(s) ({', '.join(skipped[:3])}"
             f"{', …' if len(skipped) > 3 else ''}): mia score writes them beside their runs; the runs are used")
    if not out:
        raise MiaError(f"{command}: no run files among the paths given (only scores files); give the runs "
                       "or the map folder")
    return out
