"""`mia study` end to end on a tiny random model and the embedded corpus, through real `mia`
subprocesses: a config file holding every table, --limit, results.json read back against the step
files, real SIGKILLs at seeded random instants and the refusals."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

BIN = Path(sys.executable).parent

EVERY_TABLE = """
[study]
name = "every"
dataset = "corpus"
limit = 12
seed = 3

[prefix]
prefix_tokens = 16
suffix_tokens = 12
prefix_loc = "start"

[prompt]
max_length = 12
batch_size = 6

[check]
batch_size = 6

[score]
window = 50
edit_threshold = 0.2

[attack]
signals = "loss,zlib,mink"
min_k_fraction = "0.2"
bootstrap = 50
batch_size = 6
max_tokens = 64

[dataset_inference]
splits = 4
alpha = 0.1

[estimate]
t = [1, 2]
confidence = 1.96

[report]
examples = 2
"""


def mia(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "mia"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_llama) -> Path:
    """One study from a config file holding every table; returns the working folder."""
    work = tmp_path_factory.mktemp("study")
    (work / "study.toml").write_text(EVERY_TABLE, encoding="utf-8")
    result = mia(["study", "study.toml", "--model", str(tiny_llama), "-q"], work)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return work


def figures(results: dict) -> dict:
    """results.json without what legitimately differs between two runs of one study: timings,
    creation times and the environment."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if k not in ("seconds", "elapsed_s", "tokens_per_s", "created", "timings_s", "environment")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(results)


def differences(a, b, path: str = "") -> list[str]:
    """The leaf paths where two JSON values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_config_file_with_every_table(study, tiny_llama):
    folder = study / "studies" / "every"
    results = json.loads((folder / "results.json").read_text())
    assert results["schema_version"] == 1
    config = results["configuration"]
    assert config["prefix"]["prefix_tokens"] == 16 and config["attack"]["bootstrap"] == 50
    assert config["estimate"]["t"] == [1.0, 2.0] and config["study"]["model"] == str(tiny_llama)
    assert {s: results["steps"][s]["status"] for s in results["steps"]} == {
        "prefix": "done", "generate": "done", "check": "done", "score": "done", "attack": "done",
        "dataset_inference": "skipped", "estimate": results["steps"]["estimate"]["status"], "report": "done"}
    # 6 members and 6 non-members under --limit 12: below the test's minimum, withheld with the reason
    assert results["dataset_inference"]["withheld"].startswith("dataset inference withheld: the suspect set has 6 "
                                                               "usable string(s): dataset inference needs at least 20")
    if results["steps"]["estimate"]["status"] == "skipped":  # withheld with its reason, never a failure
        assert results["estimate"]["withheld"].startswith("estimates withheld: ")
    env = results["environment"]
    assert env["device"] == "cpu" and env["mia_version"] and "git_commit" in env and "torch" in env["libraries"]
    assert set(results["timings_s"]) == set(results["steps"])
    assert (folder / "report.html").is_file() and "<h2>Attack 1" in (folder / "report.html").read_text()


def test_limit_is_balanced_over_labels(study):
    rows = [json.loads(line) for line in (study / "studies/every/samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert sorted(r["label"] for r in rows) == ["member"] * 6 + ["nonmember"] * 6


def test_results_equal_the_step_files(study):
    folder = study / "studies" / "every"
    results = json.loads((folder / "results.json").read_text())
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    for run in ("generate", "check"):
        summary = results["extraction"][run]
        with h5py.File(folder / f"map/runs/{run}.scores.h5") as f:
            exact = f["match/exact"][()].astype(bool)
            matched = f["match/matched_length"][()]
            eligible = f["match/eligible"][()].astype(bool)
        assert summary["extraction"]["count"] == int(exact[eligible].sum())
        assert summary["extraction"]["n"] == int(eligible.sum())
        assert summary["mean_matched_length"] == pytest.approx(float(matched[eligible].mean()))
        assert [s[run]["score_matched_length"] for s in samples] == [int(m) for m in matched]
    with h5py.File(folder / "map/attacks/attack.h5") as f:
        signals = {name: ds[()] for name, ds in f["signals"].items()}
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in f["sample_id"][()]]
    by_id = {s["id"]: s for s in samples}
    for name, values in signals.items():
        for sample_id, value in zip(ids, values, strict=True):
            assert by_id[sample_id]["signals"][name] == (pytest.approx(float(value)) if np.isfinite(value) else None)
    from mia_core.attack.metrics import evaluate_signal

    labels = [by_id[i]["label"] for i in ids]
    for m in results["attack"]["metrics"]:
        if m["signal"] == "blind":
            continue
        again = evaluate_signal(m["signal"], labels, signals[m["signal"]], 50, 3)
        assert m["auc"] == pytest.approx(again.auc) and m["n_members"] == again.n_members == 6
    if (folder / "samples.parquet").is_file():
        import pyarrow.parquet as pq

        assert pq.read_table(folder / "samples.parquet").num_rows == 12


def test_refusals(study, tiny_llama):
    def one_line_error(result, *words):
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, lines
        for word in words:
            assert word in lines[0], lines[0]

    again = mia(["study", "study.toml", "--model", str(tiny_llama), "-q"], study)
    one_line_error(again, "studies/every already exists", "--resume")
    (study / "unknown.toml").write_text('[prefix]\nprefix_tokenz = 8\n')
    one_line_error(mia(["study", "unknown.toml"], study), "unknown key 'prefix_tokenz' in [prefix]",
                   "did you mean 'prefix_tokens'")
    (study / "wrong.toml").write_text('[prefix]\nprefix_tokens = "eight"\n')
    one_line_error(mia(["study", "wrong.toml"], study), "[prefix] prefix_tokens must be an integer",
                   "mia prefix --prefix_tokens")
    changed = EVERY_TABLE.replace("max_length = 12", "max_length = 10")
    (study / "changed.toml").write_text(changed)
    one_line_error(mia(["study", "changed.toml", "--model", str(tiny_llama), "--resume", "-q"], study),
                   "[prompt] max_length was 12, now 10", "--force-step generate")
    before = json.loads((study / "studies/every/results.json").read_text())
    resumed = mia(["study", "study.toml", "--model", str(tiny_llama), "--resume"], study)  # every step kept
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("before with the same configuration; kept") == 8  # all 8 steps
    assert differences(figures(json.loads((study / "studies/every/results.json").read_text())), figures(before)) == []
    forced = mia(["study", "changed.toml", "--model", str(tiny_llama), "--resume", "--force-step", "generate"], study)
    assert forced.returncode == 0, forced.stderr
    # prefix, check, attack and dataset_inference do not depend on the generation
    assert forced.stderr.count("before with the same configuration; kept") == 4
    redone = json.loads((study / "studies/every/results.json").read_text())
    assert redone["configuration"]["prompt"]["max_length"] == 10 and redone["extraction"]["generate"]["k"] == 10
    assert redone["extraction"]["check"] == before["extraction"]["check"]
    assert redone["attack"]["metrics"] == before["attack"]["metrics"]


def test_killed_at_random_instants_resumes_to_the_same_results(tmp_path, tiny_llama):
    args = ["study", "--model", str(tiny_llama), "--dataset", "corpus", "--limit", "8", "--name", "k", "-q"]
    whole = tmp_path / "whole"
    whole.mkdir()
    started = time.perf_counter()
    assert mia(args, whole).returncode == 0
    duration = time.perf_counter() - started  # the kills fall inside a study, however fast this machine is
    expected = figures(json.loads((whole / "studies/k/results.json").read_text()))
    killed = tmp_path / "killed"
    killed.mkdir()
    rng = random.Random(26)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    kills = 0
    for attempt in range(4):
        command = [str(BIN / "mia"), *args] + (["--resume"] if attempt else [])
        proc = subprocess.Popen(command, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.1, 0.8) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    final = mia(args + ["--resume"], killed)
    assert final.returncode == 0, final.stderr
    got = figures(json.loads((killed / "studies/k/results.json").read_text().replace(str(killed), str(whole))))
    assert differences(got, expected) == []


def test_docs_list_every_configuration_key():
    """docs/study.md's schema table names every key of the schema with its command-line spelling."""
    from mia_core.study.config import SCHEMA

    doc = (Path(__file__).resolve().parent.parent / "docs" / "study.md").read_text(encoding="utf-8")
    for table, keys in SCHEMA.items():
        for name, key in keys.items():
            assert f"| `[{table}]` | `{name}` |" in doc and f"`{key.flag}`" in doc, (table, name)


def test_dataset_inference_runs_on_the_attacks_signals(tmp_path, tiny_llama):
    """With 20 strings of each label the study tests the set on the attack's stored signals (no more
    forward passes): its p-value equals dataset inference recomputed from the attack's results file, and
    the report shows it."""
    from mia_core.formats.attack_results import AttackResults
    from mia_core.setlevel import dataset_inference as di

    (tmp_path / "di.toml").write_text(
        '[study]\nname = "di"\nlimit = 40\n[prefix]\nprefix_tokens = 8\nsuffix_tokens = 8\n'
        '[prompt]\nenabled = false\n[attack]\nsignals = "loss,zlib,mink"\nbootstrap = 0\nmax_tokens = 32\n'
        '[dataset_inference]\nsplits = 3\n[estimate]\nenabled = false\n', encoding="utf-8")
    result = mia(["study", "di.toml", "--model", str(tiny_llama), "-q"], tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "studies" / "di"
    results = json.loads((folder / "results.json").read_text())
    assert results["steps"]["dataset_inference"]["status"] == "done"
    found = results["dataset_inference"]["result"]
    attack = AttackResults(folder / "map/attacks/attack.h5")
    labels = np.array([str(v) for v in attack.columns["label"]])
    names = [n for n in attack.signals if n != "blind"]
    matrix = np.column_stack([attack.signals[n] for n in names])
    complete = np.isfinite(matrix).all(axis=1)
    again = di.dataset_inference(matrix[complete & (labels == "member")], matrix[complete & (labels == "nonmember")],
                                 names, 3, seed=0)
    assert found["p_value"] == pytest.approx(again.p_value) and found["n_suspect"] == found["n_validation"] == 20
    assert set(found["weights"]) == set(names)
    assert "Dataset inference (Maini et al. 2024)" in (folder / "report.html").read_text()


def test_the_report_shows_the_figures_of_results_json(study):
    """The numbers a reader sees in report.html are the ones results.json holds: each run's rates (with
    their n and interval) and each signal's AUC."""
    import html as html_lib

    from mia_core.formatting import format_rate

    folder = study / "studies" / "every"
    results = json.loads((folder / "results.json").read_text())
    page = html_lib.unescape((folder / "report.html").read_text())
    for run in ("generate", "check"):
        summary = results["extraction"][run]
        for rate in ("extraction", "approximate"):
            assert format_rate(summary[rate]) in page, (run, rate)
        assert summary["approximate"]["criterion"] in page
    for metric in results["attack"]["metrics"]:
        assert f"<td>{metric['auc']:.3f}</td>" in page, metric["signal"]


SMALL = ('[study]\nname = "small"\nlimit = 8\n[prefix]\nprefix_tokens = 8\nsuffix_tokens = 8\n'
         '[attack]\nsignals = "loss,zlib"\nbootstrap = 0\nmax_tokens = 32\n[dataset_inference]\nenabled = false\n')


@pytest.mark.parametrize(("table", "line", "words"), [
    ("prefix", 'prefix_loc = "middle"', ["[prefix] prefix_loc", "--prefix_loc"]),
    ("attack", 'signals = "loss,lossy"', ["[attack] signals", "lossy", "--signals"]),
    ("attack", 'signals = "loss,ref"', ["[attack] signals", "needs a reference model", "[attack] reference"]),
    ("attack", 'min_k_fraction = "0.2,1.5"', ["[attack] min_k_fraction", "mia attack --min-k-fraction"]),
    ("prompt", "temperature = 1.0\ntop_p = 1.5", ["[prompt] top_p", "--top_p"]),
])
def test_a_bad_value_is_one_line_before_anything_runs(tmp_path, table, line, words):
    """Values the steps parse (a location, signal names, fractions, sampling) are parsed with the
    configuration: a bad one is refused before the study folder exists, not after the paid steps."""
    (tmp_path / "bad.toml").write_text(f"[{table}]\n{line}\n", encoding="utf-8")
    result = mia(["study", "bad.toml", "--model", "gemma-3-270m"], tmp_path, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: study configuration: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "studies").exists()


def test_resumed_from_another_folder_and_after_a_failed_forced_step(tmp_path, tiny_llama):
    """--root names where the study is, so --resume works from any working folder and results.json
    finds its files there; a forced step that fails is redone on the next --resume (with the steps
    after it), never kept half-done, and the study ends as it was."""
    root, first, elsewhere = tmp_path / "root", tmp_path / "first", tmp_path / "elsewhere"
    for folder in (first, elsewhere):
        folder.mkdir()
        (folder / "small.toml").write_text(SMALL, encoding="utf-8")
    base = ["study", "small.toml", "--model", str(tiny_llama), "--root", str(root)]
    done = mia(base + ["-q"], first)
    assert done.returncode == 0, done.stderr
    assert "generate: exact extraction of the first 8 tokens " in done.stdout and "AUC " in done.stdout
    before = figures(json.loads((root / "small/results.json").read_text()))
    resumed = mia(base + ["--resume"], elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("before with the same configuration; kept") == 8
    assert differences(figures(json.loads((root / "small/results.json").read_text())), before) == []

    (elsewhere / "not-an-index").mkdir()
    (elsewhere / "broken.toml").write_text(SMALL + '[score]\nindex = "not-an-index"\n', encoding="utf-8")
    broken = mia(["study", "broken.toml", "--model", str(tiny_llama), "--root", str(root), "--resume",
                  "--force-step", "score", "-q"], elsewhere)
    lines = broken.stderr.strip().splitlines()
    assert broken.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), broken.stderr
    state = json.loads((root / "small/study.json").read_text())
    assert state["steps"].get("score", {}).get("status") != "done"
    fixed = mia(base + ["--resume"], elsewhere)
    assert fixed.returncode == 0, fixed.stderr
    # prefix, generate, check, attack and the disabled dataset_inference kept; score, estimate, report redone
    assert fixed.stderr.count("before with the same configuration; kept") == 5, fixed.stderr
    assert differences(figures(json.loads((root / "small/results.json").read_text())), before) == []


def test_limit_on_unlabelled_data_takes_the_first_samples(tmp_path, tiny_llama):
    """Data without labels cannot be drawn balanced: --limit takes the first N usable samples and
    says so, and the attack is skipped with its reason."""
    words = "the quick brown fox jumps over a lazy dog while seven wise owls watch from an old oak".split()
    rng = random.Random(5)
    (tmp_path / "plain.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": " ".join(rng.choices(words, k=40))}) + "\n" for i in range(10)),
        encoding="utf-8")
    result = mia(["study", "--model", str(tiny_llama), "--dataset", "plain.jsonl", "--limit", "4", "--name", "u"],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fewer than two labels: the first 4 usable samples, not a balanced draw" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "studies/u/samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1", "d2", "d3"]
    results = json.loads((tmp_path / "studies/u/results.json").read_text())
    assert results["steps"]["attack"]["status"] == "skipped" and "label" in results["steps"]["attack"]["reason"]
