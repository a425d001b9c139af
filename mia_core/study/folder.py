"""One study: its request (a resolved configuration and how to run it) and its folder's layout."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mia_core.study.state import StudyState


@dataclass(frozen=True)
class StudyRequest:
    """A resolved configuration (``config.resolve``) and how to run it."""

    config: dict[str, dict[str, Any]]
    root: Path = Path("studies")
    resume: bool = False
    force_steps: tuple[str, ...] = ()
    yes: bool = False
    confirm: Callable[[str], bool] | None = None
    quiet: bool = False


@dataclass
class Study:
    request: StudyRequest
    folder: Path
    state: StudyState

    @property
    def config(self) -> dict[str, dict[str, Any]]:
        return self.request.config

    @property
    def map(self) -> Path:
        return self.folder / "map"

    def run(self, method: str) -> Path:
        return self.map / "runs" / f"{method}.h5"

    @property
    def attack_file(self) -> Path:
        return self.map / "attacks" / "attack.h5"

    def done_runs(self) -> list[Path]:
        return [self.run(s) for s in ("generate", "check") if (self.state.step(s) or {}).get("status") == "done"]
