"""Simple Good-Turing against the published example and NLTK; richness estimators; fallbacks."""

import math
import warnings

import pytest

from mia_core.scoring.goodturing import (
    chao1,
    chao_extrapolation,
    estimate,
    freq_of_freqs,
    good_toulmin,
    simple_good_turing,
)

# Sampson's "prosody" data (Gale & Sampson 1995), distributed with his SGT code.
PROSODY = {1: 120, 2: 40, 3: 24, 4: 13, 5: 15, 6: 5, 7: 11, 8: 2, 9: 2, 10: 1, 12: 3, 14: 2, 15: 1, 16: 1,
           17: 3, 19: 1, 20: 3, 21: 2, 23: 3, 24: 3, 25: 3, 26: 2, 27: 2, 28: 1, 31: 2, 32: 2, 33: 1, 34: 2,
           36: 2, 41: 3, 43: 1, 45: 3, 46: 1, 47: 1, 50: 1, 71: 1, 84: 1, 101: 1, 105: 1, 121: 1, 124: 1,
           146: 1, 162: 1, 193: 1, 199: 1, 224: 1, 226: 1, 254: 1, 257: 1, 339: 1, 421: 1, 456: 1, 481: 1,
           483: 1, 1140: 1, 1256: 1, 1322: 1, 1530: 1, 2131: 1, 2395: 1, 6925: 1, 7846: 1}


def test_prosody_published_values():
    r = simple_good_turing(PROSODY)
    assert r.method == "sgt" and not r.warnings
    assert round(r.P0, 6) == 0.003883
    # The paper's r* column is the renormalized one, N·p_r.
    assert round(r.r_star_renormalized[1], 4) == 0.7628
    assert round(r.r_star_renormalized[2], 4) == 1.7064
    assert r.slope < -1
    assert math.isclose(r.P0 + sum(PROSODY[k] * p for k, p in r.p.items()), 1.0)


def _nltk_dist(table):
    from nltk.probability import FreqDist, SimpleGoodTuringProbDist

    fd = FreqDist()
    i = 0
    for count, n in table.items():
        for _ in range(n):
            fd[f"w{i}"] = count
            i += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fd, SimpleGoodTuringProbDist(fd)


@pytest.mark.parametrize("table", [
    {1: 268, 2: 112, 3: 70, 4: 41, 5: 24, 6: 14, 7: 15, 8: 14, 9: 8, 10: 11, 11: 9, 12: 6, 13: 6, 14: 1,
     15: 6, 16: 4, 17: 3, 18: 2, 20: 4, 22: 2, 25: 1, 30: 2, 40: 1, 57: 1},  # Church & Gale style bigrams
    {1: 50, 2: 20, 3: 9, 5: 4, 8: 2, 13: 1, 21: 1},
    {1: 10, 2: 8, 3: 6, 4: 5, 6: 2, 9: 1},
])
def test_agrees_with_nltk(table):
    fd, dist = _nltk_dist(table)
    ours = simple_good_turing(table)
    assert ours.method == "sgt"
    by_count = {}
    for sample, count in fd.items():
        by_count.setdefault(count, dist.prob(sample))
    for count, p in by_count.items():
        assert ours.p[count] == pytest.approx(p, rel=1e-9)
    assert ours.P0 == pytest.approx(table.get(1, 0) / fd.N())


def test_confidence_is_a_parameter():
    loose = simple_good_turing(PROSODY, confidence=100.0)
    strict = simple_good_turing(PROSODY, confidence=1e-6)
    # a huge C switches to the smoothed curve at once; a tiny C keeps Turing estimates where r+1 is seen
    assert loose.r_star[1] == pytest.approx(2 ** (loose.slope + 1))
    assert strict.r_star[1] == pytest.approx(2 * 40 / 120)


@pytest.mark.parametrize("table,reason", [
    ({}, "empty"), ({1: 7}, "singletons"), ({1: 5, 2: 2, 3: 1}, "distinct counts"),
    ({1: 1, 2: 5, 3: 9, 4: 12, 5: 20, 6: 30}, "slope"),
])
def test_degenerate_tables_fall_back_without_nan(table, reason):
    r = simple_good_turing(table)
    assert r.warnings and reason in r.warnings[0]
    values = [r.P0, *r.r_star.values(), *r.p.values()]
    assert all(math.isfinite(v) and v >= 0 for v in values)
    if table:
        assert r.P0 + sum(table[k] * p for k, p in r.p.items()) == pytest.approx(1.0)
    out = estimate(table)
    assert all(math.isfinite(pt["total"]) for pt in out["extrapolation"]["points"])


def test_good_toulmin_and_efron_thisted():
    table = {1: 30, 2: 10, 3: 5, 4: 2}
    half = good_toulmin(table, 0.5)
    assert half["new"] == pytest.approx(-sum((-0.5) ** r * n for r, n in table.items()))
    assert good_toulmin(table, 1)["new"] == pytest.approx(30 - 10 + 5 - 2)
    prev = 0.0
    for t in (1.5, 2, 5, 10):
        u = good_toulmin(table, t)
        assert u["method"].startswith("efron-thisted") and math.isfinite(u["new"]) and u["new"] >= 0
        assert u["new"] >= prev - 1e-9  # more generations never give fewer new items here
        prev = u["new"]


def test_chao1():
    """Chao1 = S_obs + (T − 1)/T · f1²/(2 f2), T = N = Σ r f_r for a table (Chao et al. 2014)."""
    c = chao1({1: 10, 2: 5, 3: 1})
    n = 10 + 2 * 5 + 3
    assert c["observed"] == 16 and c["total_lower_bound"] == pytest.approx(16 + (n - 1) / n * 100 / 10)
    c0 = chao1({1: 4, 3: 1})  # f2 = 0: the bias-corrected (T − 1)/T · f1 (f1 − 1)/2, T = 7
    assert c0["total_lower_bound"] == pytest.approx(5 + 6 / 7 * 6) and "f2 = 0" in c0["formula"]
    assert "lower bound" in c["label"]
    assert chao1({1: 9, 2: 2}, units=40)["total_lower_bound"] == pytest.approx(11 + 39 / 40 * 81 / 4)


@pytest.mark.parametrize("table, expected", [
    ({1: 3, 2: 1}, 4 + 4 / 5 * 9 / 2),  # the table: S_obs 4, N 5, f1 3, f2 1 -> 7.6
    ({1: 7}, 7 + 6 / 7 * 7 * 6 / 2),  # all singletons: S_obs 7, N 7, f2 = 0 -> 25
])
def test_chao1_is_the_limit_of_the_extrapolation(table, expected):
    """The bound the table prints is the curve's own limit, and the curve never passes it."""
    assert chao1(table)["total_lower_bound"] == pytest.approx(expected)
    distinct = sum(table.values())
    assert distinct + chao_extrapolation(table, 1e6)["new"] == pytest.approx(expected)
    assert distinct + chao_extrapolation(table, 10)["new"] <= expected + 1e-12


def test_freq_of_freqs():
    assert freq_of_freqs([1, 1, 2, 5, 0]) == {1: 2, 2: 1, 5: 1}


@pytest.mark.parametrize("table", [{1: 9, 2: 2, 3: 1}, {1: 1, 2: 5}, {1: 30, 2: 10, 3: 5, 4: 2}, PROSODY, {1: 4}])
def test_extrapolation_never_decreases_and_is_continuous_at_1(table):
    """The curve never decreases in t, has no step at t = 1, and tends to its f0."""
    ts = [i / 100 for i in range(0, 2001)]
    news = [chao_extrapolation(table, t)["new"] for t in ts]
    assert all(b >= a - 1e-12 for a, b in zip(news, news[1:], strict=False))
    at1 = chao_extrapolation(table, 1.0)["new"]
    assert abs(chao_extrapolation(table, 1.0 + 1e-6)["new"] - at1) < 1e-3
    assert abs(chao_extrapolation(table, 1.0 - 1e-6)["new"] - at1) < 1e-3
    assert news[-1] <= chao_extrapolation(table, 1e6)["f0"] + 1e-9


def test_extrapolation_by_hand():
    """Chao et al. 2014 eq. 9 computed by hand: f1 = 9, f2 = 2, f3 = 1, n = 16 observations."""
    n, f1, f2 = 9 + 4 + 3, 9, 2
    f0 = (n - 1) / n * f1 * f1 / (2 * f2)
    for t in (0.5, 1, 2, 10):
        expected = f0 * (1 - (1 - f1 / (n * f0 + f1)) ** (t * n))
        assert chao_extrapolation({1: 9, 2: 2, 3: 1}, t)["new"] == pytest.approx(expected)
    # with T sampling units (incidence data), T replaces n
    assert chao_extrapolation({1: 9, 2: 2, 3: 1}, 1, units=40)["new"] == pytest.approx(
        (39 / 40 * 81 / 4) * (1 - (1 - 9 / (40 * 39 / 40 * 81 / 4 + 9)) ** 40))
    # small t: the same slope as Good–Toulmin (t n1 / n new items per unit of t at t → 0)
    assert chao_extrapolation({1: 9, 2: 2, 3: 1}, 1e-4)["new"] / 1e-4 == pytest.approx(
        good_toulmin({1: 9, 2: 2, 3: 1}, 1e-4)["new"] / 1e-4, rel=0.1)
    out = estimate({1: 9, 2: 2, 3: 1}, ts=(0.5, 2))
    assert out["extrapolation"]["points"][0]["good_toulmin"] == pytest.approx(0.5 * 9 - 0.25 * 2 + 0.125)
    assert out["extrapolation"]["points"][1]["good_toulmin"] is None
