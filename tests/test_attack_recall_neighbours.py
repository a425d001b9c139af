"""ReCaLL and the neighbourhood attack against direct computations with the fake bigram model."""

import json
import math
import re

import numpy as np
import pytest
from test_attack_fakes import MEMBERS, NONMEMBERS, BigramLM, FakePlugin

from mia_core.attack import AttackConfig, attack
from mia_core.attack.items import Item
from mia_core.attack.neighbours import neighbours, word_pool
from mia_core.cli import cli
from mia_core.errors import MiaError


def make_items(lm):
    texts = MEMBERS + NONMEMBERS
    return [Item(f"s{i}", "member" if i < len(MEMBERS) else "nonmember", lm.tokenizer.encode_batch([t])[0], t)
            for i, t in enumerate(texts)]


def mean_logprob(lm, ids, start=0):
    return float(np.mean(lm.score([ids], start)[0].logprob))


def test_recall_with_a_given_prefix_is_the_ratio_of_log_likelihoods():
    lm = BigramLM("fake", MEMBERS)
    items = make_items(lm)
    prefix = "some text the model never saw"
    out = attack(lm, items, AttackConfig(signals=["loss", "recall"], recall_prefix=prefix, n_boot=0, quiet=True,
                                         blind=False))
    p_ids = lm.tokenizer.encode_batch([prefix + "\n\n"])[0]
    for i, it in enumerate(items):
        expected = mean_logprob(lm, p_ids + it.tokens, len(p_ids)) / mean_logprob(lm, it.tokens)
        assert out.signals["recall"][i] == pytest.approx(expected)
    assert out.attrs["forward_passes_per_string"] == {"target": 1.0, "recall": 1.0}
    assert len(out.signals["recall"]) == len(items)  # a given prefix excludes nothing


def test_recall_draws_its_prefix_from_the_non_members_and_leaves_them_out():
    lm = BigramLM("fake", MEMBERS)
    items = make_items(lm)
    config = AttackConfig(signals=["recall"], recall_shots=2, seed=3, n_boot=0, quiet=True, blind=False)
    out = attack(lm, items, config)
    ids = out.attrs["recall_prefix_ids"]
    assert len(ids) == 2 and all(i.startswith("s") and int(i[1:]) >= len(MEMBERS) for i in ids)
    assert not set(ids) & set(out.columns["sample_id"]) and out.counts["strings"] == len(items) - 2
    assert out.attrs["recall_prefix"] == "\n\n".join(items[int(i[1:])].text for i in ids)
    again = attack(BigramLM("fake", MEMBERS), make_items(lm), config)
    assert again.attrs["recall_prefix_ids"] == ids  # seeded
    few = [it for it in items if it.label == "member"] + [items[-1]]
    with pytest.raises(MiaError, match="--recall-prefix"):
        attack(lm, few, AttackConfig(signals=["recall"], n_boot=0, quiet=True, blind=False))


def test_neighbours_replace_a_tenth_of_the_words_deterministically():
    text = "the quick brown fox, jumps over the lazy dog; again and again and again!"
    pool = word_pool([text, "alpha beta gamma delta"])
    words = re.findall(r"\w+", text)
    got = neighbours(text, pool, 5, seed=0, index=7)
    assert got == neighbours(text, pool, 5, seed=0, index=7) and got != neighbours(text, pool, 5, seed=1, index=7)
    for n in got:
        new = re.findall(r"\w+", n)
        assert len(new) == len(words) and re.sub(r"\w+", "W", n) == re.sub(r"\w+", "W", text)  # layout kept
        assert sum(a != b for a, b in zip(words, new, strict=True)) == math.ceil(0.1 * len(words))
        assert set(new) <= set(pool)
    assert neighbours("!!", pool, 3, 0, 0) == [] and neighbours("a b", ["a", "a"], 3, 0, 0) == []


def test_neighbourhood_signal_is_mean_neighbour_loss_minus_loss():
    lm = BigramLM("fake", MEMBERS)
    items = make_items(lm)
    out = attack(lm, items, AttackConfig(signals=["ne"], neighbours=4, n_boot=0, quiet=True, blind=False))
    pool = word_pool([it.text for it in items])
    for i, it in enumerate(items):
        texts = neighbours(it.text, pool, 4, 0, i)
        nbr = [-mean_logprob(lm, ids) for ids in lm.tokenizer.encode_batch(texts)]
        expected = np.mean(nbr) - (-mean_logprob(lm, it.tokens)) if texts else np.nan
        np.testing.assert_allclose(out.signals["ne"][i], expected)
    assert out.attrs["forward_passes_per_string"]["ne"] == pytest.approx(
        sum(len(neighbours(it.text, pool, 4, 0, i)) for i, it in enumerate(items)) / len(items))
    assert out.metrics[0].auc > 0.9  # members sit below their neighbours under a model trained on them


def test_cli_recall_and_ne_report_their_cost(runner, in_tmp, register_plugin):
    register_plugin(FakePlugin(), name="fake-attack-plugin")
    args = ["attack", "--model", "fake-lm", "--dataset", "fake-set", "--signals", "loss,recall,ne", "--neighbours",
            "3", "--bootstrap", "0", "--no-plot", "--out-dir", "res"]
    table = runner.invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "forward passes per string: target 1, recall 1, ne 3 (total 5" in table.stdout
    as_json = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert {"recall", "ne"} <= {m["signal"] for m in as_json["metrics"]}
    assert len(as_json["recall_prefix_ids"]) == 1
    empty = runner.invoke(cli, [*args, "--recall-prefix", " "])
    assert empty.exit_code == 2 and "the prefix is empty" in empty.stderr
