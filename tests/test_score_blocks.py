"""`mia score` and the check's summary count a run one block of rows at a time (issue #27: memory independent
of the run's size): every figure, and the scores file, equal those of the same run counted in one block."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from scoring_fixtures import FP, make_docs, make_map

from mia_core.extraction.check import summarize
from mia_core.formats.runs import RunWriter, open_run
from mia_core.formats.scores import scores_path
from mia_core.matching import tokens
from mia_core.scoring.summary import format_summary, score_run

PREFIX, SUFFIX, ROWS = 10, 20, 700


def _run(folder: Path, name: str, method: str, rng: np.random.Generator) -> Path:
    """ROWS rows over the map's rows (each row many times), generations from exact to unrelated, some requests
    failed, a teacher-forced run with the true tokens' log-probabilities (probabilistic extraction)."""
    pmap_suffixes = open_run_map_suffixes(folder)
    rows = rng.integers(0, len(pmap_suffixes), ROWS)
    generations = []
    for row in rows:
        true = pmap_suffixes[row]
        cut = int(rng.integers(0, len(true) + 1))
        generations.append(np.r_[true[:cut], rng.integers(0, 500, SUFFIX - cut)].astype(int))
    columns = {"matched_length": ("int32", None), "logprobs": ("float32", "max_length")} \
        if method == "teacher-forced" else {"error": ("str", None)}
    w = RunWriter.create(folder / "runs" / name, {"model": "toy", "method": method, "prefix_map": str(folder),
                                                    "tokenizer": "toy", "tokenizer_fingerprint": FP,
                                                    "temperature": 0.0}, SUFFIX, columns=columns)
    data = {"tokens": [g.tolist() for g in generations], "prefix_row": rows.tolist(), "text": [""] * ROWS}
    if method == "teacher-forced":
        data["logprobs"] = [(-rng.exponential(0.05, SUFFIX)).tolist() for _ in range(ROWS)]
    else:
        data["error"] = ["" if rng.random() > 0.1 else "overloaded" for _ in range(ROWS)]
    w.append(data)
    w.finish()
    w.close()
    return folder / "runs" / name


def open_run_map_suffixes(folder: Path) -> list[np.ndarray]:
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(folder)
    suffixes, lengths = pmap.read("suffixes"), pmap.read("suffix_lengths")
    return [s[:n] for s, n in zip(suffixes, lengths, strict=True)]


@pytest.fixture
def runs(tmp_path):
    docs = make_docs(40, 1300, seed=3)
    starts = [(0, 50, 500, 1200)[i % 4] + (i % 3) for i in range(40)]  # every prefix-start bucket
    docs[5] = docs[5][:starts[5] + PREFIX + 8]  # a suffix shorter than k: not eligible
    folder = make_map(tmp_path / "map", docs, prefix=PREFIX, suffix=SUFFIX, starts=starts)
    rng = np.random.default_rng(7)
    return _run(folder, "api.h5", "generate", rng), _run(folder, "tf.h5", "teacher-forced", rng)


def _scores_file(run_path: Path) -> dict[str, np.ndarray]:
    with h5py.File(scores_path(run_path), "r") as f:
        return {name: ds[()] for name, ds in f["match"].items()}


@pytest.mark.parametrize("which", [0, 1], ids=["api-with-failed-rows", "teacher-forced-with-p"])
def test_summary_counted_in_blocks_equals_one_block(runs, monkeypatch, which):
    run_path = runs[which]
    assert len(open_run(run_path)) > tokens.SCORE_ROWS // 100  # the default block holds the whole run
    whole, whole_check = score_run(run_path), summarize(open_run(run_path))
    whole_file = _scores_file(run_path)
    monkeypatch.setattr(tokens, "SCORE_ROWS", 64)  # 11 blocks, the last one short
    sliced, sliced_check = score_run(run_path), summarize(open_run(run_path))
    assert sliced == whole and sliced_check == whole_check
    assert format_summary(sliced) == format_summary(whole)
    sliced_file = _scores_file(run_path)
    assert sliced_file.keys() == whole_file.keys()
    for name, values in whole_file.items():
        assert values.dtype == sliced_file[name].dtype and np.array_equal(values, sliced_file[name]), name
    # the data exercise what the blocks count: failed rows or p, short suffixes, extractions, every bucket
    assert whole["extraction"]["count"] > 0 and whole["skipped_short_suffix"] > 0
    assert len(whole["by_prefix_start"]) == 4 and len(whole["by_label"]) == 2
    assert (whole["failed"] > 0) if which == 0 else (whole["probabilistic"]["rows"] > 0)


def test_summary_figures_equal_their_definitions(runs):
    """The block-by-block counts against the per-row scores computed directly: each group's rates and means
    over its eligible rows (the per-position mean exact, from the agreeing positions), the matched lengths'
    median and histogram, the Pythia count."""
    run_path = runs[0]
    run = open_run(run_path)
    s = score_run(run_path, save=False)
    k = s["k"]
    scores = tokens.score_run_matches(run, k)
    failed = run.failed_rows()
    labels = run.labels()
    eligible = scores.eligible & ~failed
    matched = scores.matched_length[eligible]
    assert s["eligible"] == eligible.sum() and s["failed"] == failed.sum()
    assert s["extraction"]["count"] == (scores.exact & eligible).sum()
    assert s["mean_matched_length"] == matched.mean()
    agreeing = sum(int(np.sum(t[:k][:len(g)] == g[:len(t[:k])])) for t, g, el
                   in zip(run.suffixes(), run.tokens(), eligible, strict=True) if el)
    assert s["position_agreement"] == agreeing / (k * eligible.sum())  # exact: the positions that agree
    assert s["position_agreement"] == pytest.approx(float(scores.agreement[eligible].mean()), abs=1e-6)
    assert s["matched_length"]["median"] == np.median(matched) and s["matched_length"]["max"] == matched.max()
    assert [s["matched_length"]["histogram"][str(i)] for i in range(k + 1)] == np.bincount(matched, minlength=k + 1
                                                                                           ).tolist()
    assert s["memorized_pythia"] == (scores.agreement[eligible] == 1).sum()
    for label in ("member", "nonmember"):
        group = s["by_label"][label]
        el = eligible & (labels == label)
        assert group["eligible"] == el.sum() and group["mean_matched_length"] == scores.matched_length[el].mean()
        assert group["extraction"]["count"] == (scores.exact & el).sum()


def test_probabilities_counted_in_blocks_equal_their_definition(runs, monkeypatch):
    """The p of each eligible row, gathered block by block with a one-byte label code and summarised in place
    (its quantiles partition it), give what the p of every row and each row's label give, value for value."""
    from mia_core.matching import probabilistic

    run_path = runs[1]
    run = open_run(run_path)
    monkeypatch.setattr(tokens, "SCORE_ROWS", 64)
    monkeypatch.setattr(probabilistic, "DISCOVERY_CHUNK", 50)
    got = summarize(run)["probabilistic"]
    k = got["scheme"].rsplit("first k = ", 1)[1]
    scores = tokens.score_run_matches(run, int(k))
    eligible = scores.eligible & ~run.failed_rows()
    logprobs = run.read("logprobs")
    p = np.array([probabilistic.suffix_probability(logprobs[i][:int(k)]) for i in np.flatnonzero(eligible)])
    want = probabilistic.summarize(p, run.labels()[eligible], scheme=got["scheme"].rsplit(", first k", 1)[0]
                                   + f", first k = {k}")
    assert got == want and got["rows"] == eligible.sum() > 100 and set(got["by_label"]) == {"member", "nonmember"}
