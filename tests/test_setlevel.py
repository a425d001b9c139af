"""Set-level tests (docs/dataset_inference.md): the statistics against scipy and brute-force
enumeration, the null false-positive rate over seeded splits, detection by a tiny model trained to
memorize, and bad inputs as one-line errors through the real `mia` CLI in a subprocess."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_attack_groundtruth import train_until_memorized, word_texts
from tiny_models import make_tiny_llama

from mia_core.setlevel import contamination as ct
from mia_core.setlevel import dataset_inference as di

ALPHA = 0.05


def binomial_upper(k_trials: int, rate: float = ALPHA, level: float = 0.999) -> float:
    """The largest false-positive fraction a test of level ``rate`` shows in ``k_trials`` runs with
    probability ``level`` (the binomial quantile): a fraction above it rejects calibration."""
    return stats.binom.ppf(level, k_trials, rate) / k_trials


# ---------------------------------------------------------------- the statistics


def test_welch_one_sided_matches_scipy_and_the_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1.0, 17), rng.normal(0.0, 2.0, 23)
    t, p = di.welch_one_sided(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)  # Welch-Satterthwaite by hand
    t_hand = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p == pytest.approx(stats.t.sf(t_hand, df), rel=1e-10)


def reference_clip(metrics: np.ndarray, remove_frac: float = 0.05) -> np.ndarray:
    """pratyushmaini/llm_dataset_inference linear_di.remove_outliers(..., outliers="clip"), verbatim logic."""
    sorted_ids = np.argsort(metrics)
    each_side = int(len(metrics) * remove_frac / 2)
    lowest_ids, highest_ids = sorted_ids[:each_side], sorted_ids[-each_side:]
    trimmed = np.copy(metrics)
    high, low = trimmed[highest_ids[0]], trimmed[lowest_ids[-1]]
    trimmed[highest_ids] = high
    trimmed[lowest_ids] = low
    return trimmed


def test_clip_outliers_matches_the_reference_code():
    rng = np.random.default_rng(2)
    x = rng.standard_cauchy((120, 3))
    clipped = di.clip_outliers(x)
    for j in range(3):
        np.testing.assert_array_equal(clipped[:, j], reference_clip(x[:, j]))


def test_merge_is_twice_the_median_and_one_split_is_itself():
    assert di.merge_p_values([0.2]) == 0.2
    assert di.merge_p_values([0.01, 0.02, 0.5]) == pytest.approx(0.04)
    assert di.merge_p_values([0.6, 0.7]) == 1.0


def permuted_statistic(weights: np.ndarray, values: np.ndarray, order) -> float:
    """An order-sensitive statistic (a 'log-likelihood' of the values in this order)."""
    return float(weights @ values[list(order)])


def test_permutation_p_value_against_scipy_and_enumeration():
    rng = np.random.default_rng(3)
    values, weights = rng.normal(size=5), np.linspace(-1, 1, 5)
    observed = permuted_statistic(weights, values, range(5))
    every = [permuted_statistic(weights, values, p) for p in itertools.permutations(range(5))]
    exact = ct.enumerated_p_value(observed, every)
    scipy_exact = stats.permutation_test((values,), lambda v: weights @ v, permutation_type="pairings",
                                         alternative="greater", n_resamples=np.inf).pvalue
    assert exact == pytest.approx(scipy_exact, abs=1e-12)
    # Monte Carlo with many draws converges on the exact value; the observed order counts once
    draws = [permuted_statistic(weights, values, rng.permutation(5)) for _ in range(20000)]
    assert ct.permutation_p_value(observed, draws) == pytest.approx(exact, abs=0.01)
    assert ct.permutation_p_value(10.0, [1.0, 2.0, 3.0]) == 0.25  # resolution 1/(N+1)
    assert ct.permutation_p_value(2.0, [1.0, 2.0, 3.0]) == 0.75  # a tie counts against H1


def test_summed_statistic_over_shards_by_enumeration():
    """Two shards of three: the sharded permutation p-value converges on the enumeration of all 36 joint orders."""
    rng = np.random.default_rng(4)
    shards = [rng.normal(size=3), rng.normal(size=3)]
    w = np.array([1.0, 0.2, -0.7])
    canonical = np.array([permuted_statistic(w, s, range(3)) for s in shards])
    joint = [sum(permuted_statistic(w, s, o) for s, o in zip(shards, orders, strict=True))
             for orders in itertools.product(itertools.permutations(range(3)), repeat=2)]
    exact = ct.enumerated_p_value(float(canonical.sum()), joint)
    n = 20000
    orders = [ct.shard_permutations(3, n, rng) for _ in shards]
    permuted = np.array([[permuted_statistic(w, s, o) for o in shard_orders]
                         for s, shard_orders in zip(shards, orders, strict=True)])
    assert ct.summed_permutation_p_value(canonical, permuted) == pytest.approx(exact, abs=0.01)


def test_permutation_p_value_is_valid_under_exchangeability():
    """The canonical order drawn at random (H0): P(p ≤ α) ≤ α within the binomial bound, over seeded runs."""
    rng = np.random.default_rng(5)
    runs, rejected = 1000, 0
    for _ in range(runs):
        values = rng.normal(size=6)
        w = rng.normal(size=6)
        canonical = permuted_statistic(w, values, rng.permutation(6))
        draws = [permuted_statistic(w, values, rng.permutation(6)) for _ in range(19)]
        rejected += ct.permutation_p_value(canonical, draws) <= ALPHA
    assert rejected / runs <= binomial_upper(runs)


def test_sharded_t_test_against_scipy_and_oren_et_al():
    rng = np.random.default_rng(6)
    canonical, permuted = rng.normal(size=8), rng.normal(size=(8, 30))
    t, p = ct.sharded_t_test(canonical, permuted)
    diffs = canonical - permuted.mean(axis=1)
    ref = stats.ttest_1samp(diffs, 0.0, alternative="greater")
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    z_oren = np.mean(diffs) / np.std(diffs) * np.sqrt(len(diffs))  # their ddof=0: a larger |t|
    assert abs(t) == pytest.approx(abs(z_oren) * math.sqrt((len(diffs) - 1) / len(diffs)), rel=1e-12)
    assert ct.sharded_t_test(canonical[:1], permuted[:1]) is None


def test_shards_and_windows():
    assert ct.shard_sizes(10, 3) == [4, 3, 3]  # Oren et al.'s shard_counts
    assert ct.shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError, match="at least 2"):
        ct.shard_sizes(5, 3)
    for length, context, stride in ((5, 8, 4), (8, 8, 4), (9, 8, 4), (37, 8, 4), (100, 16, 5)):
        counted = []
        for start, end, first_new in ct.windows(length, context, stride):
            assert end - start <= context
            counted.extend(range(start + first_new, end))
        assert counted == list(range(length))  # every token once, in order


# ---------------------------------------------------------------- dataset inference on synthetic features


def test_dataset_inference_null_false_positive_rate_and_detection():
    rng = np.random.default_rng(7)
    runs = 200
    single = [di.dataset_inference(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), list("abcd"), splits=1,
                                   seed=s).p_value for s in range(runs)]
    merged = [di.dataset_inference(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), list("abcd"), splits=3,
                                   seed=s).p_value for s in range(runs // 2)]
    for p_values in (single, merged):
        assert np.mean(np.array(p_values) <= ALPHA) <= binomial_upper(len(p_values))
    # a single split's p-value is (close to) uniform under H0: not vacuously conservative
    assert stats.kstest(single, "uniform").pvalue > 1e-3
    shifted = rng.normal(size=(40, 4))
    shifted[:, 1] += 1.5
    result = di.dataset_inference(shifted, rng.normal(size=(40, 4)), list("abcd"), splits=5, seed=0)
    assert result.p_value < 0.01
    assert max(result.weights, key=result.weights.get) == "b"
    assert result.n_fit == (20, 20) and result.n_test == (20, 20)


def test_dataset_inference_refuses_small_sets_and_drops_constant_features():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match=f"at least {di.MIN_PER_SET} per set"):
        di.dataset_inference(rng.normal(size=(di.MIN_PER_SET - 1, 2)), rng.normal(size=(30, 2)), ["a", "b"])
    x = rng.normal(size=(30, 2))
    x[:, 0] = 1.0
    result = di.dataset_inference(x, rng.normal(size=(30, 2)), ["flat", "b"], splits=2)
    assert result.features == ["b"] and "flat" in result.dropped_features


# ---------------------------------------------------------------- a tiny model, the real backend and CLI

N_EACH = 30
N_VALIDATION = 40  # enough for a null split of the validation set alone (20 + 20)


def write_jsonl(path, texts, label=None):
    with open(path, "w") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"{path.stem}-{i}", "text": text, **({"label": label} if label else {})}) + "\n")
    return path


def mia(*args, cwd):
    """The real `mia` console script in a subprocess."""
    return subprocess.run([str(Path(sys.executable).with_name("mia")), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def one_line_error(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def memorized(tmp_path_factory):
    """A tiny Llama trained until it memorized the suspect set, one trained on a benchmark's shards in
    their canonical order, and the same architecture untrained."""
    root = tmp_path_factory.mktemp("setlevel")
    texts = word_texts(N_EACH + N_VALIDATION, seed=11)
    suspect, validation = texts[:N_EACH], texts[N_EACH:]
    benchmark = [" ".join(t.split()[:5]) + "." for t in word_texts(24, seed=12)]
    shards = [benchmark[i:i + 6] for i in range(0, 24, 6)]
    canonical_shards = ["".join(ex + "\n" for ex in shard) for shard in shards]
    trained = make_tiny_llama(root / "trained", seed=0, hidden_size=64, layers=2)
    train_until_memorized(trained, suspect, steps=40)
    ordered = make_tiny_llama(root / "ordered", seed=0, hidden_size=64, layers=2)
    train_until_memorized(ordered, canonical_shards, steps=60)
    untrained = make_tiny_llama(root / "untrained", seed=0, hidden_size=64, layers=2)
    return {"root": root, "trained": trained, "ordered": ordered, "untrained": untrained,
            "suspect": write_jsonl(root / "suspect.jsonl", suspect),
            "validation": write_jsonl(root / "validation.jsonl", validation),
            "benchmark": write_jsonl(root / "benchmark.jsonl", benchmark), "texts": texts, "benchmark_texts": benchmark}


def test_dataset_inference_detects_the_memorized_set_through_the_cli(memorized):
    root = memorized["root"]
    proc = mia("dataset-inference", "--suspect", memorized["suspect"], "--validation", memorized["validation"],
               "--model", memorized["trained"], "--signals", "loss,zlib,mink,minkpp", "--splits", "5", "-q",
               "--out-dir", root / "out", cwd=root)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    p_value = float(lines[1].split()[1])
    assert p_value < 1e-3 and "one-sided Welch t-test" in lines[1]
    assert lines[2].startswith(f"sequences: {N_EACH} suspect, {N_VALIDATION} validation; per split fitted on "
                               "15 + 20, tested on 15 + 20")
    assert any(line.startswith("blind baseline (no model") and "not separable" in line for line in lines)
    assert any(line.startswith("assumptions:") for line in lines) and "mink_0.05" in proc.stdout
    record = json.loads(next((root / "out").glob("*.json")).read_text())
    assert record["kind"] == "dataset-inference" and record["result"]["p_value"] == pytest.approx(p_value, rel=1e-2)
    assert len(record["result"]["split_p_values"]) == 5 and record["provenance"]["command"] == "dataset-inference"


def null_false_positives(features_suspect, features_validation, names, runs, seed=0):
    """Seeded random splits of one pool of strings into two pseudo-sets: H0 holds by construction."""
    pool = np.vstack([features_suspect, features_validation])
    rng = np.random.default_rng(seed)
    rejected = 0
    for run in range(runs):
        order = rng.permutation(len(pool))
        half = len(pool) // 2
        result = di.dataset_inference(pool[order[:half]], pool[order[half:]], names, splits=1, seed=run)
        rejected += result.p_value <= ALPHA
    return rejected


def test_dataset_inference_null_false_positive_rate_with_a_tiny_model(memorized):
    """Features computed once with the real backend; 150 seeded splits of data no model tells apart."""
    from mia_core import registry
    from mia_core.attack.items import load_dataset_items
    from mia_core.setlevel import run as sr
    from mia_core.types import Sample

    runs = 150
    config = sr.FeatureConfig(signals=["loss", "zlib", "mink", "minkpp"], quiet=True)
    for model, texts in ((memorized["untrained"], memorized["texts"]),  # neither half seen
                         (memorized["trained"], memorized["texts"][N_EACH:])):  # the unseen validation set only
        backend = registry.backends.create(str(model))
        items, _ = load_dataset_items([Sample(f"s{i}", t) for i, t in enumerate(texts)], backend, 512, quiet=True)
        half = len(items) // 2
        features = sr.set_features(backend, items[:half], items[half:], config)
        rejected = null_false_positives(features.suspect, features.validation, features.names, runs)
        assert rejected / runs <= binomial_upper(runs), (model.name, rejected)


def test_contamination_detects_the_canonical_order_and_is_valid_on_the_untrained_model(memorized):
    from mia_core import registry
    from mia_core.setlevel import run as sr

    root = memorized["root"]
    proc = mia("contamination", "--dataset", memorized["benchmark"], "--model", memorized["ordered"], "--shards", "4",
               "--permutations", "49", "-q", "--out-dir", root / "out", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    result = record["result"]
    assert result["p_value"] == pytest.approx(1 / 50) and result["resolution"] == pytest.approx(1 / 50)
    assert result["t_test"]["p_value"] < 0.01 and result["n_shards"] == 4 and result["shard_sizes"] == [6] * 4
    assert result["scored_tokens_per_benchmark_token"] == pytest.approx(50)  # shards fit the context: N + 1
    assert (np.array(result["canonical_logprob"])[:, None] > np.array(result["permuted_logprob"])).all()
    # H0: a seeded random "canonical" order on the untrained model, through the same code path
    backend = registry.backends.create(str(memorized["untrained"]))
    runs, rejected, level = 100, 0, 0.1  # 9 permutations: p ≤ 0.1 has probability exactly 0.1 under H0
    rng = np.random.default_rng(13)
    for run in range(runs):
        texts = [memorized["benchmark_texts"][i] for i in rng.permutation(6)]
        rejected += sr.contamination(backend, texts, 2, 9, seed=run, batch_size=64, quiet=True).p_value <= level
    assert rejected / runs <= binomial_upper(runs, level)


def test_bad_inputs_are_one_line_errors(memorized, tmp_path):
    from mia_core.formats.prefixmap import PrefixMapWriter

    model = memorized["untrained"]
    overlap = write_jsonl(tmp_path / "overlap.jsonl", memorized["texts"][N_EACH - 3:])
    error = one_line_error(mia("dataset-inference", "--suspect", memorized["suspect"], "--validation", overlap,
                               "--model", model, "-q", cwd=tmp_path))
    assert "3 string(s) are in both the suspect and the validation set as scored" in error
    small = write_jsonl(tmp_path / "small.jsonl", memorized["texts"][N_EACH:N_EACH + di.MIN_PER_SET - 1])
    error = one_line_error(mia("dataset-inference", "--suspect", memorized["suspect"], "--validation", small,
                               "--model", model, "-q", cwd=tmp_path))
    assert f"the validation set has {di.MIN_PER_SET - 1} usable string(s)" in error
    assert f"at least {di.MIN_PER_SET} per set" in error
    writer = PrefixMapWriter(tmp_path / "Prefixes" / "bare", 4, 4, {"tokenizer": "none", "tokenizer_fingerprint": "x",
                                                                    "dataset": "d"}, save_dataset=False)
    writer.add_rows(np.ones((3, 4), dtype=np.int64), [[1, 2]] * 3, [0, 1, 2], ["a", "b", "c"], [""] * 3, [0] * 3)
    writer.finish({"samples_read": 3})
    error = one_line_error(mia("dataset-inference", "--prefix_map", "bare", "--model", "no-such-model", cwd=tmp_path))
    assert "prefix map bare: no member/nonmember labels on the 3 strings: dataset inference cannot" in error
    assert "give the two sets as datasets instead (--suspect DATA --validation DATA)" in error
    error = one_line_error(mia("contamination", "--dataset", small, "--model", model, "--shards", "10", cwd=tmp_path))
    assert f"has {di.MIN_PER_SET - 1} usable example(s): 10 shard(s) need at least 20" in error
    assert not (tmp_path / "Prefixes" / "setlevel").exists()  # nothing written by a refused run


def test_order_log_likelihoods_sum_the_scored_tokens_once(memorized):
    """Whole sequences: the backend's own sum; through sliding windows: each token once, given its window."""
    from mia_core import registry
    from mia_core.setlevel import run as sr

    backend = registry.backends.create(str(memorized["ordered"]))
    seq = [t for ex in sr.example_tokens(backend, memorized["benchmark_texts"][:4]) for t in ex]
    whole = backend.score([seq], 0, distribution=False)[0].logprob
    totals, positions, passes = sr.order_log_likelihoods(backend, [seq], len(seq) + 5, 4, 8, quiet=True)
    assert totals[0] == pytest.approx(float(np.nansum(whole)), rel=1e-5) and (positions, passes) == (len(seq), 1)
    expected = 0.0
    for start, end, first_new in ct.windows(len(seq), 16, 8):
        expected += float(np.nansum(backend.score([seq[start:end]], 0, distribution=False)[0].logprob[first_new:]))
    totals, _, passes = sr.order_log_likelihoods(backend, [seq], 16, 8, 8, quiet=True)
    assert totals[0] == pytest.approx(expected, rel=1e-5) and passes == len(ct.windows(len(seq), 16, 8)) > 1


def test_a_labelled_prefix_map_takes_members_as_the_suspect_set(memorized, tmp_path):
    from mia_core.extraction.prefix import build_prefix_map

    labelled = tmp_path / "labelled.jsonl"
    with open(labelled, "w") as fh:
        for i, text in enumerate(memorized["texts"]):
            fh.write(json.dumps({"id": f"s{i}", "text": text,
                                 "label": "member" if i < N_EACH else "nonmember"}) + "\n")
    folder = build_prefix_map(str(memorized["trained"]), "files", 8, suffix_tokens=8, out=tmp_path / "Prefixes",
                              dataset_options={"path": str(labelled), "label_field": "label"}, quiet=True)
    proc = mia("dataset-inference", "--prefix_map", folder, "--model", memorized["trained"], "--signals", "loss,mink",
               "--min-k-fraction", "0.2", "--splits", "3", "-q", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert (record["result"]["n_suspect"], record["result"]["n_validation"]) == (N_EACH, N_VALIDATION)
    assert record["result"]["p_value"] < 0.01 and record["prefix_map"] == str(folder)
    assert record["results"].startswith(str(folder / "setlevel"))
