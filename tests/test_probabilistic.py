"""Probabilistic extraction (Hayes et al. 2024): the backend's sampled log-probabilities against
transformers' own logits warpers, p against a Monte-Carlo estimate from real sampling, and the
(n, p)-discoverable figures of `mia score`/`mia check` against a direct computation."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from tiny_models import windows_map

from mia_core.matching import probabilistic as pe
from mia_core.types import Sampling, scores_sampling

SCHEME = Sampling(temperature=0.7, top_k=3, top_p=0.8, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_llama_backend, tmp_path_factory):
    _, backend, ids = tiny_llama_backend
    return tmp_path_factory.mktemp("maps"), backend, ids


def _map_of(tiny, name: str, n: int, plen: int, slen: int, step: int, greedy_row: int):
    """A map of ``n`` windows of the training text, ``step`` tokens apart; row ``greedy_row``'s suffix
    is the model's own greedy continuation (a row with a sizeable p). Returns (folder, prefixes, suffixes)."""
    root, backend, ids = tiny
    starts = [step * i for i in range(n)]
    prefixes = [ids[a:a + plen] for a in starts]
    suffixes = [ids[a + plen:a + plen + slen] for a in starts]
    suffixes[greedy_row] = backend.generate([prefixes[greedy_row]], slen)[0]
    folder = windows_map(root / name, backend, ids, starts, plen, slen, ["member", "nonmember"] * (n // 2), suffixes)
    return folder, prefixes, suffixes


def test_discovery_probability_and_queries_needed():
    p = np.array([0.0, 1e-12, 0.01, 0.5, 1.0])
    for n in (1, 10, 1000):
        exact = [float(1 - (1 - Fraction(float(x))) ** n) for x in p]  # exact rational arithmetic
        np.testing.assert_allclose(pe.discovery_probability(p, n), exact, rtol=1e-9, atol=0)
    assert pe.discovery_probability(1e-12, 1000) == pytest.approx(1e-9, rel=1e-6)  # 1 - (1 - p)^n loses it
    for x in (0.01, 0.3, 0.9):
        n = pe.queries_needed(x, 0.9)
        assert 1 - (1 - x) ** n >= 0.9 > 1 - (1 - x) ** (n - 1)
    assert pe.queries_needed(0.0) == math.inf
    assert pe.suffix_probability([math.log(0.5), math.log(0.25)]) == pytest.approx(0.125)
    assert pe.suffix_probability([math.log(0.5), -math.inf]) == 0.0
    assert math.isnan(pe.suffix_probability([math.nan, 0.0]))


def test_summarize_counts_discoverable_rows():
    p = np.array([0.5, 0.01, 0.0, np.nan, 0.3])
    s = pe.summarize(p, ["member", "member", "nonmember", "member", "nonmember"], queries=(1, 10, 1000), target=0.9)
    assert s["rows"] == 4 and s["p_zero"] == 1
    # n=1: none reaches 0.9; n=10: 0.5 and 0.3 (1-0.7^10 = 0.97); n=1000: also 0.01
    assert s["discoverable"] == {"1": 0, "10": 2, "1000": 3}
    assert s["by_label"]["member"]["rows"] == 2 and s["by_label"]["nonmember"]["discoverable"]["10"] == 1
    assert "n=10: 2 (50.0%)" in pe.format_summary(s)


def test_sampled_logprob_matches_transformers_warpers(tiny):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    _, backend, ids = tiny
    seqs = [ids[:12], ids[20:32]]
    scores = backend.score(seqs, 4, distribution=False, sampling=SCHEME)
    for seq, sc in zip(seqs, scores, strict=True):
        full = torch.tensor([[backend.tokenizer.bos_id] + list(seq)]) if backend.bos_prepended else torch.tensor([seq])
        with torch.inference_mode():
            logits = backend.model(input_ids=full).logits[0].double()
        off = 1 if backend.bos_prepended else 0
        expected = []
        for j in range(4, len(seq)):
            row = logits[j + off - 1][None]
            for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(3), TopPLogitsWarper(0.8)):
                row = warper(None, row)
            expected.append(torch.log_softmax(row, -1)[0, seq[j]].item())
        np.testing.assert_allclose(sc.sampled_logprob, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.isinf(sc.sampled_logprob), np.isinf(expected))
    assert scores_sampling(backend)
    assert backend.score(seqs, 4)[0].sampled_logprob is None  # no scheme, no extra work


def test_p_equals_monte_carlo_estimate_from_real_sampling(tiny):
    """Draw 4000 continuations with the backend's own sampler: the share that reproduces the
    suffix must lie in the 99.9% Wilson interval around p (seeded, so not flaky)."""
    _, backend, ids = tiny
    prefix = ids[:6]
    suffix = backend.generate([prefix], 4)[0]  # the greedy path: a suffix with a sizeable p
    p = pe.probabilities(backend, [prefix], [suffix], SCHEME)[0]
    assert 0.005 < p < 1
    draws, hits = 4000, 0
    for start in range(0, draws, 1000):
        out = backend.generate([prefix] * 1000, len(suffix), Sampling(0.7, 3, 0.8, seed=start))
        hits += sum(list(o) == list(suffix) for o in out)
    z = 3.29
    phat = hits / draws
    centre = (phat + z * z / (2 * draws)) / (1 + z * z / draws)
    half = z * math.sqrt(phat * (1 - phat) / draws + z * z / (4 * draws * draws)) / (1 + z * z / draws)
    assert centre - half <= p <= centre + half, (p, phat, hits)


def test_score_and_check_report_p_of_a_teacher_forced_run(tiny, tiny_llama):
    from mia_core.extraction.check import format_summary as check_format
    from mia_core.extraction.check import summarize
    from mia_core.extraction.prompt import prompt
    from mia_core.formats.runs import open_run
    from mia_core.scoring.summary import format_summary, score_run

    root, backend, ids = tiny
    n, plen, slen = 8, 6, 4
    folder, prefixes, suffixes = _map_of(tiny, "map", n, plen, slen, step=5, greedy_row=0)
    prompt(folder, str(tiny_llama), backend=backend, out=root / "tf.h5", method="teacher-forced",
           max_length=slen, quiet=True)
    raw = [sc.logprob for sc in backend.score([list(p) + list(s) for p, s in zip(prefixes, suffixes, strict=True)],
                                              plen, distribution=False)]
    expected = np.exp([r.astype(np.float64).sum() for r in raw])
    summary = score_run(root / "tf.h5", save=False)
    prob = summary["probabilistic"]
    assert prob["rows"] == n and "temperature 1" in prob["scheme"]
    assert prob["mean_p"] == pytest.approx(expected.mean(), rel=1e-4)
    assert prob["max_p"] == pytest.approx(expected.max(), rel=1e-4)
    for q, value in prob["discoverable"].items():
        assert value == int((1 - (1 - expected) ** int(q) >= pe.DEFAULT_TARGET).sum())
    assert "probabilistic extraction" in format_summary(summary)
    checked = summarize(open_run(root / "tf.h5"))
    assert checked["probabilistic"]["discoverable"] == prob["discoverable"]
    assert "(n, p)-discoverable" in check_format(checked)


def test_a_backend_without_sampled_scores_is_refused_in_one_line():
    from test_attack_fakes import BigramLM

    from mia_core.errors import MiaError

    with pytest.raises(MiaError, match="cannot score under a sampling scheme"):
        pe.probabilities(BigramLM("fake"), [[1, 2]], [[3]], SCHEME)
    assert not scores_sampling(BigramLM("fake"))


def test_greedy_scheme_is_refused_by_the_backend(tiny):
    from mia_core.errors import MiaError

    _, backend, ids = tiny
    with pytest.raises(MiaError, match="temperature > 0"):
        backend.score([ids[:6]], 2, sampling=Sampling(temperature=0.0))


def test_attack_on_a_map_gives_p_of_every_suffix_from_its_one_pass(tiny, tiny_llama, runner, tmp_path):
    from mia_core.attack import AttackConfig, attack
    from mia_core.attack.items import load_map_items
    from mia_core.formats.prefixmap import PrefixMap

    root, backend, ids = tiny
    n = 6
    folder, prefixes, suffixes = _map_of(tiny, "map_attack", n, 5, 3, step=4, greedy_row=1)
    items, _ = load_map_items(PrefixMap(folder), backend, None, quiet=True)
    out = attack(backend, items, AttackConfig(signals=["loss"], sampling=SCHEME, n_boot=0, quiet=True, blind=False),
                 is_map=True)
    expected = pe.probabilities(backend, prefixes, suffixes, SCHEME)
    np.testing.assert_allclose(out.columns["extraction_p"], expected, rtol=1e-6)
    assert out.attrs["probabilistic"]["rows"] == n and out.attrs["probabilistic"]["max_p"] == pytest.approx(
        expected.max(), rel=1e-6)
    from mia_core.cli import cli

    result = runner.invoke(cli, ["attack", str(root / "map_attack"), "--model", str(tiny_llama), "--signals",
                                 "loss", "--sampling", "temperature=0.7", "--sampling", "top_k=3", "--sampling",
                                 "top_p=0.8", "--bootstrap", "0", "--no-plot", "--no-blind", "-q",
                                 "--out-dir", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    assert "probabilistic extraction (temperature 0.7, top-k 3, top-p 0.8, whole suffix" in result.stdout
    assert f"max {expected.max():.3g}" in result.stdout


@pytest.mark.parametrize("option, message", [("temperature=0", "temperature > 0"), ("top_q=1", "unknown key"),
                                             ("top_k=x", "not a number")])
def test_bad_sampling_option_is_one_line(runner, in_tmp, option, message):
    from test_attack_cli import make_map

    from mia_core.cli import cli

    make_map(in_tmp / "Prefixes" / "m")
    result = runner.invoke(cli, ["attack", "m", "--model", "fake-lm", "--sampling", option])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_check_records_p_under_the_given_scheme_and_score_counts_the_chosen_n_and_target(tiny, tiny_llama, runner,
                                                                                       tmp_path):
    """`mia check --temperature/--top_k/--top_p` stores log q of the true tokens under that scheme;
    `mia score --queries --target` counts the (n, target)-discoverable rows from it."""
    import json

    from mia_core.cli import cli
    from mia_core.formats.runs import open_run

    root, backend, ids = tiny
    folder, prefixes, suffixes = _map_of(tiny, "map_check", 6, 5, 3, step=7, greedy_row=2)
    out = tmp_path / "tf_scheme.h5"
    result = runner.invoke(cli, ["check", "--prefix_map", str(folder), "--model", str(tiny_llama), "--temperature",
                                 "0.7", "--top_k", "3", "--top_p", "0.8", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    run = open_run(out)
    assert run.has("sampled_logprobs") and run.attrs["temperature"] == pytest.approx(0.7)
    expected = pe.probabilities(backend, prefixes, suffixes, SCHEME)
    scored = runner.invoke(cli, ["score", str(out), "--queries", "1,5", "--target", "0.5", "--no-save", "--json"])
    assert scored.exit_code == 0, scored.output + scored.stderr
    prob = json.loads(scored.stdout)["probabilistic"]
    assert "temperature 0.7, top-k 3, top-p 0.8" in prob["scheme"] and prob["target"] == 0.5
    assert prob["mean_p"] == pytest.approx(expected.mean(), rel=1e-5)
    assert prob["discoverable"] == {q: int((1 - (1 - expected) ** int(q) >= 0.5).sum()) for q in ("1", "5")}
    # the greedy verdicts are those of a plain check
    plain = runner.invoke(cli, ["check", "--prefix_map", str(folder), "--model", str(tiny_llama), "--out",
                                str(tmp_path / "tf_plain.h5"), "-q"])
    assert plain.exit_code == 0 and not open_run(tmp_path / "tf_plain.h5").has("sampled_logprobs")
    assert [t.tolist() for t in open_run(tmp_path / "tf_plain.h5").tokens()] == [t.tolist() for t in run.tokens()]


def test_check_with_a_scheme_on_a_model_without_sampled_scores_is_one_line(register_plugin, runner, in_tmp):
    from test_attack_cli import make_map
    from test_attack_fakes import FakePlugin

    from mia_core.cli import cli

    register_plugin(FakePlugin(), name="fake-check-plugin")
    make_map(in_tmp / "Prefixes" / "m")
    result = runner.invoke(cli, ["check", "--prefix_map", "m", "--model", "fake-lm", "--temperature", "0.7"])
    assert result.exit_code == 1 and "cannot score under a sampling scheme" in result.stderr
    assert "Traceback" not in result.output and not list((in_tmp / "Prefixes" / "m").glob("runs/*.h5"))
    bad = runner.invoke(cli, ["score", "x.h5", "--queries", "0,10"])
    assert bad.exit_code == 2 and "positive integers" in bad.stderr
