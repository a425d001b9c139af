"""`mia attack` end to end on the fake scoring plugin (tests/test_attack_fakes.py)."""

import csv
import json
import math

import h5py
import numpy as np
import pytest
from map_fixtures import write_map
from test_attack_fakes import MEMBERS, NONMEMBERS, CharTokenizer, FakePlugin

from mia_core import hookimpl
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.formats.attack_results import AttackResults
from mia_core.formats.integrity import edit_hdf5
from mia_core.formats.names import unused_path


@pytest.fixture
def fake_plugin(register_plugin) -> FakePlugin:
    return register_plugin(FakePlugin(), name="fake-attack-plugin")


def make_map(folder, fingerprint="fake-chars-v1", prefix=12, suffix=10):
    tok = CharTokenizer()
    texts = MEMBERS[:6] + NONMEMBERS[:6]
    labels = ["member"] * 6 + ["nonmember"] * 6
    ids = tok.encode_batch(texts)
    return write_map(folder, [t[:prefix] for t in ids], [t[prefix:prefix + suffix] for t in ids],
                     suffix_tokens=suffix, tokenizer="fake-chars", fingerprint=fingerprint, labels=labels,
                     attrs={"dataset": "fake-set"}, counts={"samples_read": 12})


def run(runner, args):
    return runner.invoke(cli, ["attack", *args], catch_exceptions=False)


def test_dataset_attack_prints_auc_table_and_stores_everything(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--export", "csv", "--export", "jsonl",
                          "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 empty sample" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["signal", "AUC", "95%"] and set(lines[1]) == {"-", " "}
    table = {line.split()[0]: line.split() for line in lines[2:6]}
    assert set(table) == {"loss", "zlib", "mink", "minkpp"}
    assert float(table["loss"][1]) > 0.95  # the fake LM was trained on the members
    # the fake set's members and nonmembers differ in wording: the blind baseline says so
    assert lines[6].split()[0] == "blind" and float(lines[6].split()[1]) > 0.9
    assert "warning: the split is separable without the model" in result.stdout
    h5 = next((in_tmp / "Prefixes" / "attacks").glob("fake-lm_fake-set_*.h5"))
    res = AttackResults(h5)
    assert len(res) == 40 and set(res.signals) == {"loss", "zlib", "mink", "minkpp", "blind"}
    assert res.attrs["sign_convention"] == "higher score = more likely member"
    assert res.attrs["metrics"][0]["signal"] == "loss" and res.attrs["counts"]["strings"] == 40
    np.testing.assert_allclose(res.signals["loss"], -res.columns["nll"])
    assert h5.with_name(h5.stem + "_roc.png").stat().st_size > 1000
    with open(h5.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and rows[0]["label"] == "member" and float(rows[0]["loss"]) == pytest.approx(
        res.signals["loss"][0])
    first = json.loads(h5.with_suffix(".jsonl").read_text().splitlines()[0])
    assert first["sample_id"] == "m0" and first["text"] == MEMBERS[0]


def test_json_summary_and_untrained_model_is_near_chance(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-untrained", "--json", "--signals", "loss,mink",
                          "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [m["signal"] for m in summary["metrics"]] == ["loss", "mink", "blind"]
    for m in summary["metrics"]:
        assert m["auc_low"] <= m["auc"] <= m["auc_high"]
        # 20 nonmembers resolve FPR 5% only; the others are withheld with the reason
        assert m["tpr_at_fpr"]["0.001"] is None and m["tpr_at_fpr"]["0.01"] is None
        assert m["tpr_withheld"]["0.01"] == "needs ≥ 100 non-members" and m["tpr_at_fpr"]["0.05"] is not None
        assert len(m["tpr_at_fpr_ci"]["0.05"]) == 2
    assert "strictly below" in summary["tpr_convention"]
    assert summary["blind"]["computed"] and summary["blind"]["separable"]
    assert summary["counts"]["strings"] == 40 and summary["results"].endswith(".h5")


def greedy_matched(table, prefix, suffix):
    """Greedy decoding with the bigram table, counting leading suffix tokens reproduced."""
    prev, n = prefix[-1], 0
    for tok in suffix:
        if int(np.argmax(table[prev])) != tok:
            break
        n, prev = n + 1, tok
    return n


def test_map_attack_gives_signals_and_verdicts_from_one_pass(runner, in_tmp, fake_plugin):
    folder = make_map(in_tmp / "Prefixes" / "fake_map")
    result = run(runner, ["fake_map", "--model", "fake-lm", "--batch-size", "4", "--no-plot"])
    assert result.exit_code == 0, result.output
    backend = fake_plugin.backends["fake-lm"]
    assert backend.calls == 3 and backend.batches == [4, 4, 4]  # 12 windows, one pass, nothing scored twice
    h5 = next((folder / "attacks").glob("fake-lm_*.h5"))
    res = AttackResults(h5)
    assert "extracted (teacher-forced, whole suffix)" in result.stdout
    assert list(res.columns["row"]) == list(range(12))
    assert res.columns["n_tokens"].tolist() == [22] * 12 and res.columns["n_scored"].tolist() == [22] * 12
    ids = CharTokenizer().encode_batch(MEMBERS[:6] + NONMEMBERS[:6])
    for i, t in enumerate(ids):
        expected = greedy_matched(backend.table, t[:12], t[12:22])
        assert res.columns["matched_length"][i] == expected
        assert res.columns["extracted"][i] == (expected == 10)
    assert res.columns["extracted"].any() and not res.columns["extracted"].all()
    assert res.columns["text"][0] == MEMBERS[0][:22]
    assert not list(folder.glob("attacks/*.png"))


def test_map_with_another_tokenizer_is_retokenized(runner, in_tmp, fake_plugin):
    make_map(in_tmp / "Prefixes" / "other_map", fingerprint="not-the-model's")
    result = run(runner, ["other_map", "--model", "fake-lm", "--json"])
    assert result.exit_code == 0, result.output
    assert "retokenizing" in result.stderr
    assert json.loads(result.stdout)["counts"]["strings"] == 12


def test_reference_model_with_another_tokenizer(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--reference", "fake-ref",
                          "--signals", "loss", "--json"])
    assert result.exit_code == 0, result.output
    assert "per UTF-8 byte" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["signals"] == ["loss", "ref"] and summary["reference"] == "fake-ref"
    res = AttackResults(summary["results"])
    t_bytes = np.array([len(t.encode()) for t in res.columns["text"]])
    # Same tokens for both fake models (chars): per-byte ref = (sum NLL_ref - sum NLL_target) / bytes.
    ref_lm, lm = fake_plugin.backends["fake-ref"], fake_plugin.backends["fake-lm"]
    ids = CharTokenizer().encode_batch([res.columns["text"][0]])[0]
    expected = (-ref_lm.score([ids])[0].logprob.sum() + lm.score([ids])[0].logprob.sum()) / t_bytes[0]
    assert res.signals["ref"][0] == pytest.approx(expected)
    assert res.attrs["reference_same_tokenizer"] is False or res.attrs["reference_same_tokenizer"] == 0


def test_reference_with_the_same_tokenizer_uses_mean_nll(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--reference", "fake-untrained",
                          "--signals", "loss,ref", "--json", "-q"])
    assert result.exit_code == 0, result.output
    res = AttackResults(json.loads(result.stdout)["results"])
    ref_lm = fake_plugin.backends["fake-untrained"]
    ids = CharTokenizer().encode_batch([res.columns["text"][5]])[0]
    expected = -ref_lm.score([ids])[0].logprob.mean() - res.columns["nll"][5]
    assert res.signals["ref"][5] == pytest.approx(expected)


def test_unlabelled_dataset_is_refused_with_how_to_label(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-unlabelled", "--model", "fake-lm"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "no member/nonmember labels on the 40 strings" in error[0]
    assert "--labels FILE" in error[0] and "label_field=FIELD" in error[0]
    assert fake_plugin.backends["fake-lm"].calls == 0  # refused before scoring anything
    assert not (in_tmp / "Prefixes" / "attacks").exists()


def test_unlabelled_map_is_refused_before_loading_a_model(runner, in_tmp, fake_plugin):
    folder = make_map(in_tmp / "Prefixes" / "bare_map")

    with edit_hdf5(folder / "prefix_map.h5") as f:
        f["sample_label"][:] = [b""] * len(f["sample_label"])
    result = run(runner, ["bare_map", "--model", "fake-lm"])
    assert result.exit_code == 1 and "prefix map bare_map: no member/nonmember labels" in result.stderr
    assert "mia prefix" in result.stderr and "fake-lm" not in fake_plugin.backends


def test_label_file_supplies_labels(runner, in_tmp, fake_plugin):
    labels = in_tmp / "labels.csv"
    labels.write_text("id,label\n" + "".join(f"m{i},1\n" for i in range(20)) + "".join(
        f"n{i},0\n" for i in range(20)))
    result = run(runner, ["--dataset", "fake-unlabelled", "--model", "fake-lm", "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["metrics"][0]["n_members"] == 20 and summary["metrics"][0]["auc"] > 0.95
    bad = in_tmp / "bad.csv"
    bad.write_text("id,label\nm0,maybe\n")
    result = run(runner, ["--dataset", "fake-unlabelled", "--model", "fake-lm", "--labels", str(bad)])
    assert result.exit_code == 1 and "label 'maybe'" in result.stderr


def test_one_class_labels_give_a_clear_message(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--limit", "10"])
    assert result.exit_code == 1
    assert "all 9 labelled samples are members: an AUC needs nonmembers too" in result.stderr


def test_context_limit_truncates_with_a_message(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--model-option", "context=21", "--json"])
    assert result.exit_code == 0, result.output
    assert "truncated to their first 20 tokens" in result.stderr
    res = AttackResults(json.loads(result.stdout)["results"])
    assert res.columns["n_tokens"].max() == 20 and res.columns["truncated"].all()
    assert res.columns["text"][0] == MEMBERS[0][:20]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--dataset", "fake-set", "--model", "fake-api"], 1, "cannot score token sequences"),
    (["--dataset", "fake-set", "--model", "fake-lmm"], 2, "Did you mean 'fake-lm'"),
    (["no_such_map", "--model", "fake-lm"], 1, "prefix map 'no_such_map' not found"),
    (["--model", "fake-lm"], 2, "give either a prefix MAP or --dataset"),
    (["m", "--dataset", "fake-set", "--model", "fake-lm"], 2, "give either a prefix MAP or --dataset"),
    (["--dataset", "fake-set", "--model", "fake-lm", "--signals", "loss,ref"], 2, "needs a reference model"),
    (["--dataset", "fake-set", "--model", "fake-lm", "--signals", "los"], 2, "unknown signal(s) los"),
    (["--dataset", "fake-set", "--model", "fake-lm", "--reference", "fake-api"], 1, "'fake-api' cannot score"),
    (["--dataset", "fake-empty", "--model", "fake-lm"], 1, "nothing to score: all 1 sample(s)"),
    (["--dataset", "fake-set", "--model", "fake-lm", "--k", "0"], 2, "--k"),
    (["--dataset", "fake-set", "--model", "fake-lm", "--labels", "nope.csv"], 1, "label file 'nope.csv' not found"),
])
def test_bad_input_is_one_clear_line(runner, in_tmp, fake_plugin, args, code, message):
    result = run(runner, args)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_results_are_never_overwritten(tmp_path):
    first = unused_path(tmp_path, "m_x", ".h5")
    first.write_text("taken")
    second = unused_path(tmp_path, "m_x", ".h5")
    assert second.name == "m_x_2.h5" and first.read_text() == "taken"  # the same _2, _3 as maps and runs


def test_results_file_is_plain_hdf5(runner, in_tmp, fake_plugin):
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--json", "-q", "--signals", "mink"])
    with h5py.File(json.loads(result.stdout)["results"], "r") as f:
        assert f["signals/mink"].shape == (40,) and f["label"][0] == b"member"
        assert math.isclose(f.attrs["k"], 0.2)


def test_long_map_windows_keep_their_suffix(runner, in_tmp, fake_plugin):
    make_map(in_tmp / "Prefixes" / "fake_map")
    result = run(runner, ["fake_map", "--model", "fake-lm", "--model-option", "context=16", "--json"])
    assert result.exit_code == 0, result.output
    assert "12 window(s) longer than 15 tokens lost prefix tokens on the left" in result.stderr
    res = AttackResults(json.loads(result.stdout)["results"])
    assert (res.columns["n_tokens"] == 15).all() and (res.columns["suffix_length"] == 10).all()
    assert res.columns["text"][0] == MEMBERS[0][7:22]
    assert res.columns["extracted"][0]  # the memorized first member is still extracted


def test_export_rejects_unknown_format(tmp_path):
    from mia_core.formats.attack_results import export_results

    with pytest.raises(MiaError, match="unknown export format 'xml'"):
        export_results(tmp_path / "x.h5", "xml")
    (tmp_path / "bad.h5").write_text("not hdf5")
    with pytest.raises(MiaError, match="not a readable attack results file"):
        export_results(tmp_path / "bad.h5", "csv")


class KeyedAPIPlugin:
    """An API model registered with capabilities=("generate_text",) whose factory would ask for a key."""

    @hookimpl
    def mia_register_backends(self, register):
        def factory(name, options):
            raise MiaError("needs an API key")

        register("keyed-api", factory, description="API model", capabilities=("generate_text",))


def test_api_model_is_refused_before_it_is_built(runner, in_tmp, fake_plugin, register_plugin):
    register_plugin(KeyedAPIPlugin(), name="keyed-api-plugin")
    for args in (["--model", "keyed-api"], ["--model", "fake-lm", "--reference", "keyed-api"]):
        result = run(runner, ["--dataset", "fake-set", *args])
        assert result.exit_code == 1
        assert "model 'keyed-api' cannot score token sequences (it offers: generate_text)" in result.stderr


class IIDPlugin:
    """Members and nonmembers drawn from one distribution (random letter strings), split at random; the
    model is a bigram LM trained on the members only: a real membership signal, no text difference."""

    def __init__(self) -> None:
        rng = np.random.default_rng(11)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
        texts = ["".join(rng.choice(letters, 80)) for _ in range(80)]
        self.members, self.nonmembers = texts[:40], texts[40:]

    @hookimpl
    def mia_register_backends(self, register):
        from test_attack_fakes import BigramLM

        register("fake-iid-lm", lambda name, options: BigramLM(name, self.members), description="trained on members")

    @hookimpl
    def mia_register_datasets(self, register):
        from test_attack_fakes import ListDataset

        from mia_core.types import Sample

        samples = [Sample(f"m{i}", t, "member") for i, t in enumerate(self.members)]
        samples += [Sample(f"n{i}", t, "nonmember") for i, t in enumerate(self.nonmembers)]
        register("fake-iid", lambda name, options: ListDataset(name, samples), description="i.i.d. split")


def test_blind_baseline_flags_a_separable_split_and_not_an_iid_one(runner, in_tmp, fake_plugin, register_plugin):
    register_plugin(IIDPlugin(), name="fake-iid-plugin")
    result = run(runner, ["--dataset", "fake-iid", "--model", "fake-iid-lm", "--json", "-q", "--signals", "loss"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    aucs = {m["signal"]: m["auc"] for m in summary["metrics"]}
    assert aucs["loss"] > 0.8 and aucs["blind"] < 0.6  # the model knows its members; the text alone does not
    assert not summary["blind"]["separable"] and summary["warnings"] == []
    result = run(runner, ["--dataset", "fake-set", "--model", "fake-lm", "--json", "-q", "--signals", "loss"])
    summary = json.loads(result.stdout)
    assert summary["blind"]["separable"] and "separable without the model" in summary["warnings"][0]


class NoBosLM:
    """The fake bigram LM trained on MEMBERS, seen through another tokenizer fingerprint and without BOS
    (as SmolLM2 next to Gemma): it cannot score a sequence's first token (NaN there)."""

    capabilities = frozenset({"score"})

    def __init__(self, name: str) -> None:
        from test_attack_fakes import BigramLM

        self.name = name
        self.inner = BigramLM(name, MEMBERS)
        self.tokenizer = CharTokenizer("no-bos-fingerprint")

    def describe(self) -> dict:
        return {"name": self.name, "kind": "fake", "bos_prepended": False}

    def score(self, sequences, start=0, *, distribution=True):
        out = self.inner.score(sequences, start, distribution=distribution)
        for s in out:
            if start == 0 and len(s.logprob):
                s.logprob[0] = np.nan
        return out


class NoBosPlugin:
    @hookimpl
    def mia_register_backends(self, register):
        register("fake-lm-nobos", lambda name, options: NoBosLM(name), description="no BOS")


def test_reference_without_bos_scores_the_same_bytes(runner, in_tmp, fake_plugin, register_plugin):
    """The same model as target and reference, the reference without BOS and with another tokenizer:
    both must score exactly the same span of text, so ref is 0 for every string. (Scoring the target's
    first token but not the reference's, as before, biased ref by the first token's NLL per byte.)"""
    register_plugin(NoBosPlugin(), name="fake-nobos-plugin")
    for target, reference in (("fake-lm", "fake-lm-nobos"), ("fake-lm-nobos", "fake-lm")):
        result = run(runner, ["--dataset", "fake-set", "--model", target, "--reference", reference,
                              "--signals", "loss", "--json", "-q", "--no-blind"])
        assert result.exit_code == 0, result.output
        res = AttackResults(json.loads(result.stdout)["results"])
        np.testing.assert_allclose(res.signals["ref"], 0.0, atol=1e-9)
    # the bias the old computation had: the target's first-token NLL per byte, not 0
    lm = fake_plugin.backends["fake-lm"]
    ids = CharTokenizer().encode_batch([MEMBERS[1]])[0]
    first_token_bias = -lm.score([ids])[0].logprob[0] / len(MEMBERS[1].encode())
    assert first_token_bias > 1e-3


def test_float_labels_are_member_and_nonmember(tmp_path):
    """Labels written as floats (pandas, Parquet: 1.0/0.0) or as that text are labels, not 'unlabelled'."""
    from mia_core.attack.labels import normalize_label, read_label_file

    assert [normalize_label(v) for v in (1.0, 0.0, "1.0", "0.0", " 1.0 ")] == [
        "member", "nonmember", "member", "nonmember", "member"]
    f = tmp_path / "labels.csv"
    f.write_text("id,label\na,1.0\nb,0.0\n")
    assert read_label_file(f) == {"a": "member", "b": "nonmember"}


def test_a_signal_below_chance_is_flagged(runner, in_tmp, fake_plugin, register_plugin):
    """Labels swapped on the i.i.d. split: the model's members are called nonmembers, so LOSS ranks
    them the wrong way round. Its AUC interval lies below 0.5: the table and a warning say so."""
    register_plugin(IIDPlugin(), name="fake-iid-plugin")
    swapped = in_tmp / "swapped.csv"
    swapped.write_text("id,label\n" + "".join(f"m{i},0\n" for i in range(40)) + "".join(
        f"n{i},1\n" for i in range(40)))
    args = ["--dataset", "fake-iid", "--model", "fake-iid-lm", "--signals", "loss", "--labels", str(swapped)]
    summary = json.loads(run(runner, [*args, "--json", "-q"]).stdout)
    loss = next(m for m in summary["metrics"] if m["signal"] == "loss")
    assert loss["auc_high"] < 0.5
    below = [w for w in summary["warnings"] if w.startswith("loss is below chance")]
    assert len(below) == 1 and f"[{loss['auc_low']:.3f}, {loss['auc_high']:.3f}] lies wholly below 0.5" in below[0]
    assert "over 40 members and 40 nonmembers" in below[0]
    table = run(runner, [*args, "-q"]).stdout
    loss_line = next(line for line in table.splitlines() if line.lstrip().startswith("loss"))
    assert "below chance" in loss_line
    assert "rows: 80 strings (member 40, nonmember 40)" in table
