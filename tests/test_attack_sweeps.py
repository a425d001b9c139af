"""Min-K% and Min-K%++ swept over several fractions from the one forward pass, each value checked
against a direct computation (sort the per-token scores, average the lowest ⌊k·n⌋, at least one)."""

import json

import numpy as np
import pytest
from test_attack_fakes import MEMBERS, NONMEMBERS, BigramLM, FakePlugin

from mia_core.attack import AttackConfig, attack
from mia_core.attack import signals as sig
from mia_core.attack.items import Item
from mia_core.cli import cli
from mia_core.formats.attack_results import AttackResults


def direct_lowest_mean(values, k):
    values = sorted(float(v) for v in values)
    n = max(1, int(len(values) * k))
    return sum(values[:n]) / n


def test_sweep_gives_one_signal_per_fraction_from_one_pass():
    lm = BigramLM("fake", MEMBERS)
    texts = MEMBERS + NONMEMBERS
    items = [Item(f"s{i}", "member" if i < len(MEMBERS) else "nonmember", lm.tokenizer.encode_batch([t])[0], t)
             for i, t in enumerate(texts)]
    ks = [0.1, 0.25, 0.5, 1.0]
    out = attack(lm, items, AttackConfig(signals=["loss", "mink", "minkpp"], k=ks, n_boot=0, quiet=True,
                                         blind=False))
    single = BigramLM("fake", MEMBERS)
    attack(single, items, AttackConfig(signals=["loss", "mink"], n_boot=0, quiet=True, blind=False))
    assert lm.calls == single.calls and sum(lm.batches) == len(items)  # every fraction from the one pass
    names = [m.signal for m in out.metrics]
    assert names == ["loss"] + [f"mink_{k:g}" for k in ks] + [f"minkpp_{k:g}" for k in ks]
    raw = BigramLM("fake", MEMBERS).score([it.tokens for it in items], 0)
    for i, sc in enumerate(raw):
        mu, sd = np.asarray(sc.mean), np.asarray(sc.std)
        plus = [(lp - m) / s if s > 0 else 0.0 for lp, m, s in zip(sc.logprob, mu, sd, strict=True)]
        for k in ks:
            assert out.signals[f"mink_{k:g}"][i] == pytest.approx(direct_lowest_mean(sc.logprob, k))
            assert out.signals[f"minkpp_{k:g}"][i] == pytest.approx(direct_lowest_mean(plus, k))
    np.testing.assert_allclose(out.signals["mink_1"], out.signals["loss"])  # k = 1: every token
    assert out.attrs["signals"] == names and out.attrs["k"] == ks


def test_single_fraction_keeps_the_plain_names():
    assert sig.expand_signals(["loss", "mink", "minkpp"], 0.2) == ["loss", "mink", "minkpp"]
    assert sig.expand_signals(["mink"], [0.2]) == ["mink"]
    assert sig.expand_signals(["mink", "ref"], [0.1, 0.2]) == ["mink_0.1", "mink_0.2", "ref"]


@pytest.mark.parametrize("bad, message", [("0", "not in (0, 1]"), ("0.1,1.5", "1.5 is not in (0, 1]"),
                                          ("0.1,x", "'x' is not a number"), (",", "no fraction given")])
def test_bad_fractions_are_refused(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sig.parse_fractions(bad)


def test_cli_sweep_stores_and_reports_every_fraction(runner, in_tmp, register_plugin):
    register_plugin(FakePlugin(), name="fake-attack-plugin")
    result = runner.invoke(cli, ["attack", "--model", "fake-lm", "--dataset", "fake-set", "--signals", "mink,minkpp",
                                 "--min-k-fraction", "0.1,0.5", "--bootstrap", "0", "--no-plot", "--json",
                                 "--out-dir", "res"])
    assert result.exit_code == 0, result.output
    metrics = {m["signal"] for m in json.loads(result.stdout)["metrics"]}
    assert {"mink_0.1", "mink_0.5", "minkpp_0.1", "minkpp_0.5"} <= metrics
    stored = AttackResults(next((in_tmp / "res").glob("*.h5")))
    assert {"mink_0.1", "mink_0.5", "minkpp_0.1", "minkpp_0.5"} <= set(stored.signals)
    bad = runner.invoke(cli, ["attack", "--model", "fake-lm", "--dataset", "fake-set", "--min-k-fraction", "0.1,2"])
    assert bad.exit_code == 2 and "2 is not in (0, 1]" in bad.stderr and "Traceback" not in bad.output
