"""Exact quantiles from spilled values (mia_core/matching/order_stats.py): order statistics found by radix
selection over temporary files equal numpy's, bit for bit, and the probabilistic-extraction summary of a run
(ProbabilityTally, values on disk) equals summarize() over the same values in memory."""

import numpy as np
import pytest

from mia_core.matching import order_stats
from mia_core.matching.order_stats import SpilledValues, interpolate, quantile_ranks
from mia_core.matching.probabilistic import P_QUANTILES, ProbabilityTally, summarize


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """p-like values over many orders of magnitude, with ties: zeros and a repeated value."""
    vals = np.concatenate([np.exp(rng.normal(-20, 15, n)).clip(0, 1), np.zeros(n // 7), np.full(n // 9, 0.25)])
    rng.shuffle(vals)
    return vals


@pytest.mark.parametrize("gather_limit", [1 << 20, 4, 0])  # gathered at once; after radix passes; every bit
def test_quantiles_from_spilled_values_equal_numpy_bit_for_bit(monkeypatch, gather_limit):
    monkeypatch.setattr(order_stats, "GATHER_LIMIT", gather_limit)
    monkeypatch.setattr(order_stats, "READ_VALUES", 1000)  # several chunks a pass
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 1001, 20000):
        vals = _values(rng, n)
        codes = rng.integers(0, 3, len(vals))
        spilled = SpilledValues()
        for at in range(0, len(vals), 777):
            spilled.add(vals[at:at + 777], codes[at:at + 777])
        groups = {None: vals, **{g: vals[codes == g] for g in range(3)}}
        ranks = {(g, q): quantile_ranks(len(x), q) for g, x in groups.items() if len(x) for q in P_QUANTILES}
        found = spilled.order_statistics(sorted({(g, r) for (g, _), (lo, hi, _) in ranks.items() for r in (lo, hi)},
                                                key=lambda w: (w[0] is not None, w)))
        spilled.close()
        for (g, q), (lo, hi, t) in ranks.items():
            assert interpolate(found[(g, lo)], found[(g, hi)], t) == float(np.quantile(groups[g], q)), (n, g, q)
            assert found[(g, lo)] == np.sort(groups[g])[lo]


class _Run:
    """The two things ProbabilityTally reads of a teacher-forced run: a logprobs column and its attributes."""

    def __init__(self, logprobs: np.ndarray) -> None:
        self.logprobs, self.attrs = logprobs, {}

    def has(self, name: str) -> bool:
        return name == "logprobs"

    def read(self, name: str, rows: slice) -> np.ndarray:
        return self.logprobs[rows]


def test_tally_of_a_run_in_blocks_equals_summarize_in_memory(monkeypatch):
    monkeypatch.setattr(order_stats, "READ_VALUES", 4096)
    monkeypatch.setattr(order_stats, "GATHER_LIMIT", 100)
    rng = np.random.default_rng(1)
    n, k = 30_000, 5
    logprobs = np.log(rng.uniform(0.001, 1, (n, k))).astype(np.float32)
    logprobs[::11, 2] = np.nan  # unscored positions: p is NaN, counted nowhere
    logprobs[::13] = 0.0  # p = 1 exactly: ties
    labels = np.where(rng.random(n) < 0.4, "member", np.where(rng.random(n) < 0.5, "nonmember", ""))
    eligible = rng.random(n) < 0.9
    tally = ProbabilityTally(_Run(logprobs), k)
    for at in range(0, n, 4096):
        rows = slice(at, min(at + 4096, n))
        tally.add(rows, eligible[rows], labels[rows])
    streamed = tally.summary(queries=(1, 10, 1000), target=0.5)
    p = np.exp(logprobs.astype(np.float64).sum(axis=1))[eligible]
    expected = summarize(p, labels[eligible], queries=(1, 10, 1000), target=0.5,
                         scheme=tally.scheme + f", first k = {k}")
    assert list(streamed) == list(expected)
    assert list(streamed["by_label"]) == list(expected["by_label"]) == ["unlabelled", "member", "nonmember"]
    for got, want in [(streamed, expected)] + [(streamed["by_label"][lab], expected["by_label"][lab])
                                              for lab in expected["by_label"]]:
        assert got["quantiles"] == want["quantiles"]  # exact order statistics, numpy's interpolation
        for name in ("rows", "max_p", "p_zero", "discoverable", "histogram"):
            assert got[name] == want[name], name
        for name in ("mean_p", "expected_extracted_per_query"):  # sums of chunk sums: the last bits may differ
            assert got[name] == pytest.approx(want[name], rel=1e-12), name


def test_a_temporary_folder_that_cannot_be_written_is_one_line(monkeypatch, tmp_path):
    import tempfile

    from mia_core.errors import MiaError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(MiaError, match="cannot write the temporary files of exact quantiles in .*missing.*TMPDIR"):
        SpilledValues()


def test_a_full_temporary_folder_is_one_line(monkeypatch, tmp_path):
    """A real tmpfs filled up to 64 KB: the values that no longer fit stop with one line naming the folder."""
    import tempfile

    from test_prompt_disk import fill, mounted

    from mia_core.errors import MiaError

    with mounted(tmp_path / "tmp", "size=1m") as folder:
        fill(folder, 64 * 1024)
        monkeypatch.setattr(tempfile, "tempdir", str(folder))
        spilled = SpilledValues()
        with pytest.raises(MiaError, match=f"cannot write the temporary files of exact quantiles in {folder} "
                                           r"\(No space left on device\).*set TMPDIR"):
            for _ in range(100):  # 12 bytes a value: 1.2 MB in all
                spilled.add(np.ones(1000), np.zeros(1000))
            list(spilled.chunks())
