"""Byte-flip fuzzing of every file kind mia reads, through the real ``mia`` commands that read it.

Used by tests/test_fuzz_files.py (a few trials per kind, in the suite) and bench/fuzz_files.py
(hundreds per kind). One set of undamaged files is built once (a map, a run left unfinished for
``mia prompt --resume``, its scores, an attack results file, a corpus index); each trial copies
them to the same folder, damages one file with seeded byte flips (or a truncation, or a zeroed
range) and runs each command that reads it in a child process (forked from a process that has
already imported mia, so a trial costs milliseconds, not an interpreter start) with a time limit.

The verdict of one command on a damaged file is one of:

- ``refused``: exit 1 and exactly one line on stderr, ``Error: ...``, no traceback;
- ``same``: exit status, stdout and stderr (and the files it writes) equal to the undamaged run's;
- anything else is a failure: a hang (killed at the limit), a traceback, another exit status, or a
  success with different output ("exit 0 with different numbers").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import select
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

KINDS = ("map", "run", "scores", "attack", "index")
MAP, RUN, INDEX = "Prefixes/fz", "Prefixes/fz/runs/r.h5", "index"
SCORES = "Prefixes/fz/runs/r.scores.h5"

# What each kind's damaged file is, and the commands that read it (run in the trial folder).
TARGETS: dict[str, str] = {"map": f"{MAP}/prefix_map.h5", "run": RUN, "scores": SCORES, "attack": "attack.h5",
                           "index": f"{INDEX}/shards/00000/table.bin"}
COMMANDS: dict[str, list[list[str]]] = {
    "map": [["show", MAP], ["score", RUN], ["prompt", "--resume", RUN, "-q"]],
    "run": [["show", RUN], ["score", RUN], ["export", RUN], ["prompt", "--resume", RUN, "-q"]],
    # mia report scores the runs afresh but reads the scores files for its estimates
    "scores": [["show", SCORES], ["export", RUN], ["estimate", RUN], ["report", RUN, "--out", "out.md"]],
    "attack": [["show", "attack.h5"], ["report", "attack.h5", "--out", "out.md"]],
    "index": [["score", RUN, "--index", INDEX, "--window", "10", "--no-save"]],
}
# The index kind damages each of its files in turn (trial i: file i mod len).
INDEX_FILES = ("shards/00000/tokens.bin", "shards/00000/table.bin", "shards/00000/doc_offsets.npy",
               "shards/00000/doc_ids.json", "shards/00000/windows.10.hash", "index.json")
OUTPUTS = ("out.md",)  # files a command writes whose content is part of its result


def build_fixtures(fixtures: Path, work: Path) -> None:
    """The undamaged files, made by the real writers (in this process) in ``work`` (where the trials will
    read them: runs record their map's absolute path) and then moved to ``fixtures``."""
    from test_prompt_fakes import FakeTokenizer, make_fake_map

    from mia_core.cli import cli
    from mia_core.formats.corpus_index.shard_writer import build_index
    from mia_core.formats.prefixmap import PrefixMap

    register_fakes()
    work.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        make_fake_map(Path(MAP), n=9)
        _run_cli(cli, ["prompt", "--prefix_map", MAP, "--model", "fake-lm", "--out", "full.h5", "-q",
                       "--temperature", "1", "--seed", "3", "--num_strings", "18"])
        _unfinished_copy(Path("full.h5"), Path(RUN), rows=12)  # what --resume continues
        Path("full.h5").unlink()
        _run_cli(cli, ["score", RUN])
        _run_cli(cli, ["attack", MAP, "--model", "fake-lm", "--no-plot", "--bootstrap", "10", "--out-dir", "att",
                       "-q"])
        shutil.move(str(next(Path("att").glob("*.h5"))), "attack.h5")
        shutil.rmtree("att")
        tok = FakeTokenizer("fake-tok-a")
        pmap = PrefixMap(MAP)
        docs = [list(p) + list(s) for p, s in zip(pmap.read("prefixes"), pmap.suffixes(), strict=True)] * 8
        build_index(INDEX, docs, tok.name, tok.fingerprint, 64, {"dataset": "fake"}, windows=(10,))
    finally:
        os.chdir(cwd)
    shutil.move(str(work), str(fixtures))


def register_fakes() -> object | None:
    """The fake token model (tests/test_prompt_fakes.py) in this process's plugin manager (the trials'
    children inherit it): `mia prompt --resume` needs the run's model. Returns the plugin if it was
    registered now (a test unregisters it with :func:`unregister_fakes`), None if it already was."""
    from test_prompt_fakes import FakePlugin

    from mia_core import registry
    from mia_core.plugins import load_plugins, pm

    load_plugins()
    if any(isinstance(p, FakePlugin) for p in pm.get_plugins()):
        return None
    plugin = FakePlugin()
    pm.register(plugin, name="fuzz-fakes")
    registry.refresh()
    return plugin


def unregister_fakes(plugin: object | None) -> None:
    from mia_core import registry
    from mia_core.plugins import pm

    if plugin is not None:
        pm.unregister(plugin)
        registry.refresh()


def warm_imports() -> None:
    """Import what the commands import lazily, once, in the parent: every forked trial starts warm."""
    import importlib

    for name in ("mia_core.extraction.prompt", "mia_core.scoring.summary", "mia_core.report",
                 "mia_core.scoring.tables", "mia_core.scoring.plots", "mia_core.inspection.show",
                 "mia_core.inspection.export", "mia_core.scoring.goodturing", "mia_core.extraction.check",
                 "mia_core.formats.corpus_index.reader", "matplotlib.pyplot", "sacrebleu"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _unfinished_copy(full: Path, out: Path, rows: int) -> None:
    """A run as a writer killed after its first ``rows`` rows leaves it (same options, same rows)."""
    from mia_core.extraction.merge import WRITER_KEYS
    from mia_core.formats.runs import STANDARD_COLUMNS, RunWriter, open_run

    run = open_run(full)
    attrs = {k: v for k, v in run.attrs.items() if k not in WRITER_KEYS}
    declared = {k: tuple(v) for k, v in run.attrs["columns"].items() if k not in STANDARD_COLUMNS}
    static = {name: run.read(name) for name in run.datasets if name not in run.columns}
    with RunWriter.create(out, attrs, int(run.attrs["max_length"]), declared, static) as writer:
        writer.append({name: list(run.read(name, slice(0, rows))) for name in run.columns},
                      elapsed_s=0.0, generated_tokens=int(run.read("lengths", slice(0, rows)).sum()))


def _run_cli(cli: Callable, args: list[str]) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli(args, prog_name="mia", standalone_mode=True)
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"mia {' '.join(args)} failed while building the fuzz fixtures") from None


@dataclass
class Outcome:
    code: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    files: dict[str, str] = field(default_factory=dict)

    def key(self) -> tuple:
        return (self.code, self.stdout, self.stderr, tuple(sorted(self.files.items())))


def run_forked(args: list[str], folder: Path, limit_s: float) -> Outcome:
    """``mia ARGS`` in a forked child (cwd ``folder``), killed after ``limit_s`` seconds."""
    from mia_core.formats import integrity

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the real command line, as `mia ARGS` would run it
        try:
            os.chdir(folder)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            # new streams on the pipes (a test runner's captured sys.stdout writes elsewhere)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            integrity._verified.clear()  # nothing the parent checked is trusted
            from mia_core.cli import cli

            try:
                cli(args, prog_name="mia", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 99
        os._exit(code)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + limit_s
    open_fds = [out_r, err_r]
    code: int | None = None
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select(open_fds, [], [], remaining)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)
    _, status = os.waitpid(pid, 0)
    for fd in (out_r, err_r):
        os.close(fd)
    if not open_fds:
        code = os.waitstatus_to_exitcode(status)
    files = {}
    for name in OUTPUTS:
        path = folder / name
        if path.is_file():  # a report says when it was made: that line aside, the same numbers
            text = "\n".join(line for line in path.read_text(errors="replace").splitlines()
                             if not line.startswith("Generated "))
            files[name] = hashlib.sha256(text.encode()).hexdigest()
    return Outcome(code, b"".join(chunks[out_r]).decode(errors="replace"),
                   b"".join(chunks[err_r]).decode(errors="replace"), files)


def damage(path: Path, rng: random.Random) -> str:
    """Damage ``path`` in place; returns what was done (flips, a truncation or a zeroed range)."""
    data = bytearray(path.read_bytes())
    mode = rng.random()
    if mode < 0.1 and len(data) > 1:
        cut = rng.randrange(1, len(data))
        path.write_bytes(bytes(data[:cut]))
        return f"truncated to {cut} bytes"
    if mode < 0.2:
        start = rng.randrange(len(data))
        length = rng.randint(1, 256)
        data[start:start + length] = bytes(len(data[start:start + length]))
        path.write_bytes(bytes(data))
        return f"zeroed {length} bytes at {start}"
    flips = rng.randint(1, 20)
    for _ in range(flips):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"{flips} bit flips"


def verdict(outcome: Outcome, baseline: Outcome) -> str:
    if outcome.code is None:
        return "hang"
    if outcome.key() == baseline.key():
        return "same"
    lines = outcome.stderr.strip().splitlines()
    if outcome.code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in outcome.stderr:
        return "refused"
    if outcome.code == 0:
        return "different result"
    return f"exit {outcome.code} with {len(lines)} stderr line(s)"


@dataclass
class Report:
    trials: int = 0
    runs: int = 0
    seconds: float = 0.0
    verdicts: Counter = field(default_factory=Counter)
    same_after: Counter = field(default_factory=Counter)  # which damages left a command's result unchanged
    failures: list[str] = field(default_factory=list)


def fuzz(kind: str, trials: int, fixtures: Path, work: Path, seed: int = 0, limit_s: float = 20.0) -> Report:
    """``trials`` damaged copies of ``kind``'s file, each read by every command of that kind."""
    register_fakes()
    warm_imports()
    report = Report()
    t0 = time.perf_counter()
    baselines = {}
    for args in COMMANDS[kind]:
        fresh_copy(fixtures, work)
        baselines[tuple(args)] = run_forked(args, work, limit_s)
        if baselines[tuple(args)].code != 0:
            raise RuntimeError(f"undamaged baseline of mia {' '.join(args)} failed: {baselines[tuple(args)]}")
    for trial in range(trials):
        rng = random.Random(f"{kind}-{seed}-{trial}")
        target = TARGETS[kind] if kind != "index" else f"{INDEX}/{INDEX_FILES[trial % len(INDEX_FILES)]}"
        for args in COMMANDS[kind]:
            fresh_copy(fixtures, work)
            what = damage(work / target, random.Random(rng.random()))
            outcome = run_forked(args, work, limit_s)
            result = verdict(outcome, baselines[tuple(args)])
            report.verdicts[result] += 1
            if result == "same":
                report.same_after[what.split()[0] if what[0].isalpha() else "bit flips"] += 1
            report.runs += 1
            if result not in ("same", "refused"):
                report.failures.append(f"{kind} trial {trial} ({target}: {what}) mia {' '.join(args)}: {result}\n"
                                       f"  stdout: {outcome.stdout[-500:]!r}\n  stderr: {outcome.stderr[-1500:]!r}")
        report.trials += 1
    report.seconds = time.perf_counter() - t0
    return report


def fresh_copy(fixtures: Path, work: Path) -> None:
    """The undamaged files at ``work`` (copied, not linked: new inodes and times every trial)."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(fixtures, work, copy_function=shutil.copy)
