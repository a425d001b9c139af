"""``studies/NAME/study.json``: each step's recorded configuration, status, outputs and timing.

A step whose recorded configuration equals the current one is done (skipped) or interrupted
(resumed); one whose configuration differs is refused in one line naming the key, unless forced.
Written atomically after every change, so a kill leaves the last state whole."""

import json
from pathlib import Path
from typing import Any

from mia_core.errors import MiaError
from mia_core.formats.safeio import write_atomically

STATE_FILE = "study.json"
STEPS = ("prefix", "generate", "check", "score", "attack", "dataset_inference", "estimate", "report")
DEPENDS = {"prefix": (), "generate": ("prefix",), "check": ("prefix",), "score": ("generate", "check"),
           "attack": ("prefix",), "dataset_inference": ("attack",), "estimate": ("score",),
           "report": ("score", "attack", "dataset_inference", "estimate")}
# The configuration keys each step depends on: (table, key); a change of one is a changed step.
STEP_KEYS = {
    "prefix": [("study", k) for k in ("model", "dataset", "dataset_options", "limit", "seed")] + [("prefix", "*")],
    "generate": [("study", "model"), ("study", "model_options"), ("prompt", "*")],
    "check": [("study", "model"), ("study", "model_options"), ("check", "*")],
    "score": [("score", "*")],
    "attack": [("study", "model"), ("study", "model_options"), ("study", "seed"), ("attack", "*")],
    "dataset_inference": [("study", "seed"), ("dataset_inference", "*")],
    "estimate": [("estimate", "*")],
    "report": [("report", "*"), ("score", "index"), ("score", "window")],
}


def step_config(step: str, config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The part of ``config`` that ``step`` depends on, as ``{"table.key": value}``."""
    out: dict[str, Any] = {}
    for table, key in STEP_KEYS[step]:
        keys = config[table] if key == "*" else {key: config[table][key]}
        out.update({f"{table}.{k}": v for k, v in keys.items()})
    return out


def downstream(steps: set[str]) -> set[str]:
    """``steps`` and every step that depends on one of them, transitively."""
    out = set(steps)
    changed = True
    while changed:
        changed = False
        for step, needs in DEPENDS.items():
            if step not in out and out.intersection(needs):
                out.add(step)
                changed = True
    return out


class StudyState:
    """The state file of one study folder."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder, self.data = folder, data

    @classmethod
    def create(cls, folder: Path, config: dict[str, Any]) -> "StudyState":
        state = cls(folder, {"schema_version": 1, "config": config, "steps": {}})
        state.save()
        return state

    @classmethod
    def load(cls, folder: Path) -> "StudyState":
        path = folder / STATE_FILE
        try:
            return cls(folder, json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MiaError(f"{folder} is not a study folder (no {STATE_FILE}); give another --name") from None
        except (OSError, ValueError) as exc:
            raise MiaError(f"{path} cannot be read ({exc}); move the study folder aside and start again") from None

    def save(self) -> None:
        text = json.dumps(self.data, indent=2, sort_keys=True, default=str)
        write_atomically(self.folder / STATE_FILE, text.encode("utf-8"))

    def step(self, name: str) -> dict[str, Any] | None:
        return self.data["steps"].get(name)

    def start(self, name: str, config: dict[str, Any], outputs: dict[str, Any] | None = None) -> None:
        self.data["steps"][name] = {"config": config, "status": "running", "outputs": outputs or {}, "seconds": 0.0}
        self.save()

    def finish(self, name: str, status: str, seconds: float, outputs: dict[str, Any] | None = None,
               reason: str | None = None) -> None:
        entry = self.data["steps"].setdefault(name, {"config": {}, "outputs": {}})
        entry.update(status=status, seconds=round(seconds, 3), reason=reason)
        entry["outputs"].update(outputs or {})
        self.save()

    def forget(self, name: str) -> None:
        self.data["steps"].pop(name, None)

    def changed_key(self, name: str, current: dict[str, Any]) -> tuple[str, Any, Any] | None:
        """The first key whose recorded value differs from ``current`` (key, recorded, now), or None."""
        entry = self.step(name)
        if entry is None:
            return None
        recorded = entry["config"]
        for key in sorted(set(recorded) | set(current)):
            if json.dumps(recorded.get(key), sort_keys=True) != json.dumps(current.get(key), sort_keys=True):
                return key, recorded.get(key), current.get(key)
        return None
