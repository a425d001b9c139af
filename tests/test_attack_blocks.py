"""`mia attack` on a prefix map scores and writes its windows a block at a time (docs/scale.md): in blocks of 3
windows it writes what the whole map scored at once in memory gives, every signal family included."""

import numpy as np
import pytest
from test_attack_cli import make_map, run
from test_attack_fakes import FakePlugin

from mia_core.attack import AttackConfig, attack
from mia_core.attack.blind import count_duplicates
from mia_core.attack.metrics import plot_points, roc_curve
from mia_core.formats.attack_results import AttackResults

SIGNALS = ["--signals", "loss,zlib,mink,minkpp,recall,ne", "--reference", "fake-ref", "--min-k-fraction", "0.2,0.5",
           "--neighbours", "3", "--bootstrap", "40", "--no-plot"]


@pytest.fixture
def fake_plugin(register_plugin) -> FakePlugin:
    return register_plugin(FakePlugin(), name="fake-attack-plugin")


def _attack_in_blocks(runner, folder, block, monkeypatch, *extra):
    monkeypatch.setattr("mia_core.attack.items.ATTACK_BLOCK", block)
    out = folder / f"attacks_{block}"
    result = run(runner, [str(folder), "--model", "fake-lm", *SIGNALS, "--out-dir", str(out), *extra])
    assert result.exit_code == 0, result.output
    return AttackResults(next(out.glob("*.h5"))), result


def test_map_attack_in_blocks_equals_the_whole_map_in_memory(runner, in_tmp, fake_plugin, monkeypatch):
    from mia_core.attack.items import load_map_items
    from mia_core.formats.prefixmap import PrefixMap

    folder = make_map(in_tmp / "Prefixes" / "fake_map")
    blocks, printed = _attack_in_blocks(runner, folder, 3, monkeypatch)
    whole, _ = _attack_in_blocks(runner, folder, 4096, monkeypatch)
    backend, reference = fake_plugin.backends["fake-lm"], fake_plugin.backends["fake-ref"]
    items, _ = load_map_items(PrefixMap(folder), backend, 512, quiet=True)
    config = AttackConfig(signals=["loss", "zlib", "mink", "minkpp", "recall", "ne", "ref"], k=[0.2, 0.5],
                          neighbours=3, n_boot=40, quiet=True, max_context=None)
    memory = attack(backend, items, config, reference, 512, is_map=True)

    assert len(blocks) == 11 and blocks.attrs["counts"]["recall_prefix_strings"] == 1  # one drawn as ReCaLL's prefix
    for name, values in memory.columns.items():
        stored = blocks.columns[name]
        assert list(stored) == list(values) if isinstance(values, list) else np.array_equal(stored, values), name
    assert set(blocks.signals) == set(memory.signals) and "blind" in blocks.signals
    for name, values in memory.signals.items():
        np.testing.assert_array_equal(blocks.signals[name], values, err_msg=name)
        np.testing.assert_array_equal(whole.signals[name], values, err_msg=name)
    for key in ("metrics", "counts", "blind", "warnings", "forward_passes_per_string", "recall_prefix_ids"):
        assert blocks.attrs[key] == memory.attrs[key] == whole.attrs[key], key
    assert "AUC" in printed.stdout


def test_blind_baseline_above_its_cap_runs_on_a_seeded_sample(runner, in_tmp, fake_plugin, monkeypatch):
    folder = make_map(in_tmp / "Prefixes" / "fake_map")
    monkeypatch.setattr("mia_core.attack.evaluate.BLIND_MAX_STRINGS", 8)
    res, result = _attack_in_blocks(runner, folder, 5, monkeypatch)
    blind = res.attrs["blind"]
    assert blind["sample"] == {"strings": 8, "of": 11, "seed": 0}
    assert "on a sample of 8 of the 11 labelled strings" in result.stderr
    assert np.isfinite(res.signals["blind"]).sum() == 8
    row = next(m for m in res.attrs["metrics"] if m["signal"] == "blind")
    assert row["n"] == 8
    # the duplicates are counted over every string, not the sample
    assert blind["duplicates"] == vars(count_duplicates(list(res.columns["text"]), list(res.columns["label"])))


def test_duplicates_by_hash_equal_a_count_of_the_texts():
    texts = ["a", " a ", "b", "b", "c", "c", "d"]
    labels = ["member", "member", "member", "member", "member", "nonmember", "nonmember"]
    d = count_duplicates(texts, labels)
    assert (d.within_members, d.within_nonmembers, d.across_classes) == (2, 0, 1)


def test_a_long_roc_curve_keeps_the_points_a_plot_needs():
    rng = np.random.default_rng(0)
    y = rng.random(200_000) < 0.5
    scores = rng.normal(size=len(y)) + 0.3 * y
    fpr, tpr, _ = roc_curve(y, scores)
    shown_fpr, shown_tpr = plot_points(fpr, tpr, grid=500)
    assert len(shown_fpr) <= 4 * 500 + 2 < len(fpr)
    assert (shown_fpr[0], shown_tpr[0], shown_fpr[-1], shown_tpr[-1]) == (fpr[0], tpr[0], fpr[-1], tpr[-1])
    # the step curve through the kept points stays within a grid cell of the full one, at every full point
    at = np.searchsorted(shown_fpr, fpr, side="right") - 1
    assert np.max(tpr - shown_tpr[at]) <= 2 / 500
    assert len(plot_points(fpr[:100], tpr[:100])[0]) == 100  # a short curve is kept whole


def _pairs(keys, flags, size=1000):
    def pairs():
        for at in range(0, len(keys), size):
            yield keys[at:at + size], flags[at:at + size]
    return pairs


@pytest.mark.parametrize("shape", ["ties", "dense", "spread"])
def test_streamed_metrics_equal_scikit_learn_and_delong_by_brute_force(shape, monkeypatch):
    from scipy.stats import norm

    from mia_core.attack import outofcore
    from mia_core.attack.metrics import roc_auc, tpr_at_fpr

    monkeypatch.setattr(outofcore, "SORT_VALUES", 512)  # many sorted runs, and buckets that must be split again
    rng = np.random.default_rng(3)
    y = rng.random(20_000) < 0.3
    scores = {"ties": np.round(rng.normal(size=len(y)) + 0.4 * y, 1),  # runs of one key larger than a sort
              "dense": 1.0 + 1e-12 * (rng.integers(0, 5000, len(y)) + 800 * y),  # one leading-bits bucket
              "spread": rng.standard_cauchy(len(y)) + y}[shape]
    scores[:3], scores[3:6] = -0.0, 0.0
    figures = outofcore.streamed_metrics(_pairs(outofcore.sort_keys(scores), y), int(y.sum()), int((~y).sum()),
                                         (0.001, 0.01, 0.05), 0.95, 500)
    assert figures["auc"] == pytest.approx(roc_auc(y, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, scores)
    for t in (0.001, 0.01, 0.05):
        assert figures["tpr"][t] == tpr_at_fpr(fpr, tpr, t, int((~y).sum()))
    # DeLong: each member's share of nonmembers below it and each nonmember's of members above (ties one half)
    members, nonmembers = np.sort(scores[y]), np.sort(scores[~y])
    v10 = (np.searchsorted(nonmembers, members) + np.searchsorted(nonmembers, members, "right")) / 2 / len(nonmembers)
    v01 = (2 * len(members) - np.searchsorted(members, nonmembers) - np.searchsorted(members, nonmembers, "right")) \
        / 2 / len(members)
    half = norm.ppf(0.975) * np.sqrt(v10.var(ddof=1) / len(members) + v01.var(ddof=1) / len(nonmembers))
    assert figures["low"] == pytest.approx(v10.mean() - half, abs=1e-12)
    assert figures["high"] == pytest.approx(v10.mean() + half, abs=1e-12)
    shown_fpr, shown_tpr = figures["fpr_points"], figures["tpr_points"]
    assert (shown_fpr[0], shown_tpr[0], shown_fpr[-1], shown_tpr[-1]) == (0, 0, 1, 1)
    at = np.searchsorted(shown_fpr, fpr, side="right") - 1
    assert np.max(tpr - shown_tpr[at]) <= 2 / 500


def test_streamed_duplicates_equal_the_count_in_memory(monkeypatch):
    from mia_core.attack import outofcore
    from mia_core.attack.blind import duplicate_counts

    monkeypatch.setattr(outofcore, "SORT_VALUES", 256)
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 3000, 10_000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    codes = rng.integers(-1, 2, len(keys)).astype(np.int8)
    d = duplicate_counts(keys, codes)
    assert outofcore.streamed_duplicates(_pairs(keys, codes)) == (d.within_members, d.within_nonmembers,
                                                                  d.across_classes)


def test_map_attack_past_the_in_memory_limit_streams_its_figures(runner, in_tmp, fake_plugin, monkeypatch):
    folder = make_map(in_tmp / "Prefixes" / "fake_map")
    memory, _ = _attack_in_blocks(runner, folder, 5, monkeypatch)
    monkeypatch.setattr("mia_core.attack.outofcore.IN_MEMORY_STRINGS", 4)
    monkeypatch.setattr("mia_core.attack.outofcore.SORT_VALUES", 3)
    streamed, printed = _attack_in_blocks(runner, folder, 4, monkeypatch)
    for name in memory.signals:
        np.testing.assert_array_equal(streamed.signals[name], memory.signals[name])
    for a, b in zip(memory.attrs["metrics"], streamed.attrs["metrics"], strict=True):
        assert a["signal"] == b["signal"] and a["auc"] == pytest.approx(b["auc"], abs=1e-12)
        assert (a["n"], a["n_members"], a["n_nonmembers"], a["n_missing"]) == \
            (b["n"], b["n_members"], b["n_nonmembers"], b["n_missing"])
        if b["signal"] != "blind":  # the blind baseline scores at most 10 000 strings: always in memory
            assert b["interval"].startswith("DeLong") and b["tpr_at_fpr_ci"] == {"0.001": None, "0.01": None,
                                                                                 "0.05": None}
    assert streamed.attrs["blind"]["duplicates"] == memory.attrs["blind"]["duplicates"]
    assert "loss: DeLong (normal approximation" in printed.stdout
    # mia report reads the same file a slice at a time, with the same class counts and a ROC plot
    from mia_core.report.sections import attack_sections

    section = attack_sections([streamed.path], in_tmp)[0]
    (_, heads, rows), = section.tables
    stored = {m["signal"]: m for m in streamed.attrs["metrics"]}
    for row in rows:
        name = row[0].split(" ")[0]
        assert row[1] == f"{stored[name]['auc']:.3f}" and row[-2:] == [str(stored[name]["n_members"]),
                                                                       str(stored[name]["n_nonmembers"])]
    assert section.images


def test_dataset_attack_in_blocks_equals_the_samples_in_memory(runner, in_tmp, fake_plugin, monkeypatch):
    from mia_core.attack.items import load_dataset_items
    from mia_core.registry import datasets

    monkeypatch.setattr("mia_core.attack.items.ATTACK_BLOCK", 5)
    monkeypatch.setattr("mia_core.attack.items.ENCODE_BATCH", 3)  # 39 samples: blocks of 6, then 3
    args = ["--dataset", "fake-set", "--model", "fake-lm", "--signals", "loss,zlib,minkpp,recall,ne", "--neighbours",
            "2", "--bootstrap", "30", "--no-plot", "--out-dir", "res"]
    result = run(runner, args)
    assert result.exit_code == 0, result.output
    assert "skipped 1 empty sample(s)" in result.stderr  # said once, from the first reading
    streamed = AttackResults(next((in_tmp / "res").glob("*.h5")))
    backend = fake_plugin.backends["fake-lm"]
    items, _ = load_dataset_items(datasets.create("fake-set", {}), backend, 512, quiet=True)
    memory = attack(backend, items, AttackConfig(signals=["loss", "zlib", "minkpp", "recall", "ne"], neighbours=2,
                                                 n_boot=30, quiet=True))
    for name, values in memory.signals.items():
        np.testing.assert_array_equal(streamed.signals[name], values, err_msg=name)
    assert list(streamed.columns["sample_id"]) == memory.columns["sample_id"]
    for key in ("metrics", "counts", "blind", "recall_prefix_ids"):
        assert streamed.attrs[key] == memory.attrs[key], key


def test_a_dataset_that_reads_differently_the_second_time_is_one_line(runner, in_tmp, fake_plugin, register_plugin):
    from test_attack_fakes import MEMBERS, NONMEMBERS

    from mia_core import hookimpl
    from mia_core.types import Sample

    class Shrinking:  # a stream that gives fewer samples each time it is read
        name, length = "shrinking", None

        def __init__(self) -> None:
            self.reads = 0

        def __iter__(self):
            self.reads += 1
            texts = [(t, "member") for t in MEMBERS] + [(t, "nonmember") for t in NONMEMBERS]
            return iter([Sample(f"s{i}", t, lab) for i, (t, lab) in enumerate(texts[:len(texts) - self.reads])])

    class Plugin:
        @hookimpl
        def mia_register_datasets(self, register):
            register("shrinking", lambda name, options: Shrinking(), description="changes")

    register_plugin(Plugin(), name="shrinking-plugin")
    result = run(runner, ["--dataset", "shrinking", "--model", "fake-lm", "--no-plot", "--bootstrap", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "gave 38 samples on its second reading and 39 on its first" in result.stderr
    assert not list((in_tmp / "Prefixes" / "attacks").glob("*.h5"))  # no results file, whole or partial
