"""`mia calibrate` on tiny models: the split, fine-tuning through the plugin contract, canary
exposure against a hand computation, the report, and every bad input (docs/calibrate.md)."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_models import load_tiny

from mia_core import hookimpl, registry
from mia_core.calibrate import canaries as cn
from mia_core.calibrate.split import MIN_PER_SIDE, random_split, usable_samples
from mia_core.calibrate.training import FinetuneConfig, finetune_into, remove_stale_partials
from mia_core.cli import cli
from mia_core.errors import MiaError
from mia_core.types import MEMBER, NONMEMBER, Sample

WORDS = "the a river stone light code vault seven blue green market old new quiet loud north south".split()


def _samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", f"sample number {i}", None) for i in range(n)]


def _write_dataset(folder: Path, n: int = 16, words: int = 60) -> Path:
    import random

    rng = random.Random(1)
    folder.mkdir()
    for i in range(n):
        (folder / f"s{i:02d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(words)) + ".")
    return folder


# ---------------------------------------------------------------- the split

def test_split_is_seeded_reproducible_balanced_and_disjoint():
    samples = _samples(21)
    first, again = random_split(samples, seed=7), random_split(samples, seed=7)
    assert first == again
    members = {s.id for s in first if s.label == MEMBER}
    nonmembers = {s.id for s in first if s.label == NONMEMBER}
    assert len(members) == 10 and len(nonmembers) == 11
    assert members.isdisjoint(nonmembers) and members | nonmembers == {s.id for s in samples}
    assert [s.text for s in first] == [s.text for s in samples]  # order and texts kept
    other = {s.id for s in random_split(samples, seed=8) if s.label == MEMBER}
    assert other != members


def test_split_ignores_the_dataset_labels():
    samples = [Sample(f"s{i}", f"t{i}", MEMBER) for i in range(10)]
    assert sum(s.label == MEMBER for s in random_split(samples, 0)) == 5


def test_too_small_to_split_is_refused():
    with pytest.raises(MiaError, match="too small to split"):
        random_split(_samples(2 * MIN_PER_SIDE - 1), 0, "dataset 'x'")
    assert len(random_split(_samples(2 * MIN_PER_SIDE), 0)) == 2 * MIN_PER_SIDE


def test_usable_samples_drop_empty_and_duplicate_texts():
    kept, counts = usable_samples([Sample("a", "x"), Sample("b", "  "), Sample("c", "x"), Sample("d", "y")])
    assert [s.id for s in kept] == ["a", "d"]
    assert counts == {"read": 4, "empty": 1, "duplicate": 1}


# ---------------------------------------------------------------- canaries

def test_exposure_formula_by_hand():
    # Exact: 100 secrets; 3 candidates have a lower NLL, so rank 4: log2(100) - log2(4).
    nll = np.array([0.5, 0.7, 0.9] + [5.0] * 96)
    assert cn.exposure(1.0, nll, 100, exact=True) == pytest.approx(math.log2(100) - 2)
    # Ranked first: the maximum, log2 |R|.
    assert cn.exposure(0.1, nll, 100, exact=True) == pytest.approx(math.log2(100))
    # Sampled: 9 candidates, 1 below: fraction (1 + 1) / (9 + 1), exposure log2(10) - log2(2).
    assert cn.exposure(1.0, np.array([0.5] + [3.0] * 8), 10**6, exact=False) == pytest.approx(math.log2(5))
    assert cn.exposure_ceiling(10**6, 9, exact=False) == pytest.approx(math.log2(10))


def test_exposure_counts_ties_against_the_canary():
    """Pessimistic rank: 999 candidates tied with the canary (|R| = 1000, exact) rank it 1000th,
    log2(1000) − log2(1 + 999) = 0 bits, not the maximum log2(1000) ≈ 9.97."""
    assert cn.exposure(2.0, np.full(999, 2.0), 1000, exact=True) == pytest.approx(0.0, abs=1e-12)
    # 500 tied, 499 worse: rank 501, log2(1000 / 501)
    nll = np.array([2.0] * 500 + [3.0] * 499)
    assert cn.exposure(2.0, nll, 1000, exact=True) == pytest.approx(math.log2(1000 / 501))
    # sampled: 9 candidates, 2 tied and 1 below: fraction (3 + 1) / 10, log2(10) - log2(4)
    assert cn.exposure(1.0, np.array([0.5, 1.0, 1.0] + [3.0] * 6), 10**6, exact=False) == pytest.approx(
        math.log2(10 / 4))


def test_canaries_are_seeded_and_inserted_as_often_as_said():
    made = cn.make_canaries(2, seed=3, repeats=(1, 4), digits=3)
    assert made == cn.make_canaries(2, seed=3, repeats=(1, 4), digits=3)
    assert [c.repeats for c in made] == [0, 0, 1, 1, 4, 4]
    texts = cn.training_texts(made)
    assert len(texts) == 10 and all(texts.count(c.text) == c.repeats for c in made)
    two = cn.make_canaries(1, seed=3, repeats=(), digits=2)[0]
    others, space, exact = cn.candidate_secrets(two, 2, 1000, 0)
    assert exact and space == 100 and len(others) == 99 and two.secret not in others
    others, space, exact = cn.candidate_secrets(made[0], 3, 50, 0)
    assert not exact and len(set(others)) == 50 and made[0].secret not in others


def test_canary_exposure_matches_a_hand_computation_on_a_tiny_model(tiny_llama):
    import torch

    from mia_core.calibrate.run import CalibrateConfig, _canaries

    backend = registry.backends.create(str(tiny_llama))
    canary = cn.make_canaries(1, seed=0, repeats=(), digits=2)[0]
    row = _canaries(CalibrateConfig(model=str(tiny_llama), canary_digits=2, quiet=True), backend, [canary])[0]
    model, tok = load_tiny(tiny_llama)

    secrets = [" ".join(f"{v:02d}") for v in range(100)]
    prefix = tok(canary.prefix, add_special_tokens=True)["input_ids"]
    encoded = {s: tok(canary.prefix + s, add_special_tokens=True)["input_ids"] for s in secrets}
    # The text after the last token all candidates share with the sentence alone.
    shared = min(next(i for i, (a, b) in enumerate(zip(prefix + [-1], full, strict=False)) if a != b)
                 for full in encoded.values())

    def secret_nll(secret: str) -> float:
        full = encoded[secret]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
        return -sum(float(logp[i - 1, full[i]]) for i in range(shared, len(full)))

    nll = {s: secret_nll(s) for s in secrets}
    # Candidates within float32 noise of the secret's NLL may fall either side: bound the rank.
    true = nll[canary.secret]
    others = [v for s, v in nll.items() if s != canary.secret]
    best, worst = 1 + sum(v < true - 1e-4 for v in others), 1 + sum(v < true + 1e-4 for v in others)
    assert row["exact"] and row["candidates"] == 99
    assert row["nll"] == pytest.approx(true, rel=1e-4)
    assert math.log2(100) - math.log2(worst) - 1e-9 <= row["exposure"] <= math.log2(100) - math.log2(best) + 1e-9


# ---------------------------------------------------------------- fine-tuning

def _mean_nll(path: Path, texts: list[str]) -> float:
    import torch

    model, tok = load_tiny(path)
    total = 0.0
    for text in texts:
        ids = torch.tensor([tok(text, add_special_tokens=True)["input_ids"][:64]])
        with torch.no_grad():
            total += float(model(ids, labels=ids).loss)
    return total / len(texts)


def test_finetuning_lowers_member_loss_and_leaves_a_loadable_folder(tiny_llama, tmp_path):
    members = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(4)]
    target = tmp_path / "out" / "model"
    info = finetune_into(str(tiny_llama), {}, members, target,
                         FinetuneConfig(epochs=8, learning_rate=3e-3, batch_size=2, max_tokens=64, quiet=True))
    assert info["method"] == "full" and len(info["epoch_losses"]) == 8
    assert info["epoch_losses"][-1] < info["epoch_losses"][0]
    assert _mean_nll(target, members) < _mean_nll(tiny_llama, members) - 1.0
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no temporary folder left
    backend = registry.backends.create(str(target))  # what --model FOLDER does
    assert backend.tokenizer.fingerprint == registry.backends.create(str(tiny_llama)).tokenizer.fingerprint


def test_lora_finetuning_is_merged_into_an_ordinary_folder(tiny_llama, tmp_path):
    members = ["the river stone light code vault"] * 2
    target = tmp_path / "lora"
    info = finetune_into(str(tiny_llama), {}, members, target,
                         FinetuneConfig(epochs=4, learning_rate=1e-2, batch_size=2, method="lora", lora_rank=4,
                                        quiet=True))
    assert info["method"] == "lora" and info["trainable_parameters"] < info["parameters"]
    assert not list(target.glob("adapter_*"))  # merged: no adapter files
    assert _mean_nll(target, members) < _mean_nll(tiny_llama, members)


def test_auto_method_switches_to_lora_above_the_size_limit(tiny_llama, tmp_path):
    info = finetune_into(str(tiny_llama), {}, ["a b c d"], tmp_path / "m",
                         FinetuneConfig(epochs=1, full_max_params=10, quiet=True))
    assert info["method"] == "lora"


def test_untrainable_models_are_refused(tmp_path):
    with pytest.raises(MiaError, match="GGUF file"):
        finetune_into("weights.Q4_K_M.gguf", {}, ["x"], tmp_path / "m", FinetuneConfig())
    with pytest.raises(MiaError, match="cannot be fine-tuned"):
        finetune_into("claude-API", {}, ["x"], tmp_path / "m", FinetuneConfig())
    assert not (tmp_path / "m").exists()


class _FailingTrainer:
    """A plugin whose fine-tune writes part of a model, then fails as told."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    @hookimpl
    def mia_register_backends(self, register):
        def finetune(name, options, texts, folder, config):
            (folder / "config.json").write_text("{}")
            raise self.error

        register("failing-trainer", lambda name, options: None, capabilities=["score"], finetune=finetune)


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (ValueError("the model is not serializable"), "failed: ValueError: the model is not serializable"),
    (KeyboardInterrupt(), None),
])
def test_a_failed_or_interrupted_finetune_leaves_no_model_folder(register_plugin, tmp_path, error, message):
    register_plugin(_FailingTrainer(error), name="failing-trainer")
    target = tmp_path / "model"
    with pytest.raises(MiaError if message else KeyboardInterrupt, match=message):
        finetune_into("failing-trainer", {}, ["x"], target, FinetuneConfig())
    assert list(tmp_path.iterdir()) == []


def test_not_enough_disk_space_is_refused_before_training(tiny_llama, tmp_path, monkeypatch):
    import shutil

    from mia_core.calibrate import training

    monkeypatch.setattr(training.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(MiaError, match="not enough disk space"):
        finetune_into(str(tiny_llama), {}, ["a b"], tmp_path / "model", FinetuneConfig(quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_calibration_leaves_only_a_hidden_partial_that_the_next_run_removes(tiny_llama, tmp_path):
    data = _write_dataset(tmp_path / "data")
    out = tmp_path / "cal"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mia")), "calibrate", "--model", str(tiny_llama),
                             "--dataset", str(data), "--epochs", "100000", "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob("*/.model.partial-*/")):
            time.sleep(0.2)
        assert list(out.glob("*/.model.partial-*")), "the fine-tune never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    folder = next(out.iterdir())
    assert not (folder / "model").exists()
    assert remove_stale_partials(folder) and not list(folder.glob(".model*"))


# ---------------------------------------------------------------- the command

def test_calibrate_end_to_end_on_a_tiny_model(tiny_llama, runner, in_tmp):
    data = _write_dataset(in_tmp / "data")
    result = runner.invoke(cli, ["calibrate", "--model", str(tiny_llama), "--dataset", str(data), "--epochs", "10",
                                 "--lr", "3e-3", "--canaries", "1", "--canary-digits", "2", "--canary-repeats", "1,8",
                                 "--max-tokens", "64", "--prefix-tokens", "16", "--suffix-tokens", "16",
                                 "--bootstrap", "50", "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    assert "8 members, 8 non-members" in out and "base model (control" in out
    folder = next(Path("Calibrations").iterdir())
    report = json.loads((folder / "report.json").read_text())
    tuned = {m["signal"]: m for m in report["results"]["fine-tuned"]["attack"]["metrics"]}
    base = {m["signal"]: m for m in report["results"]["base"]["attack"]["metrics"]}
    signals = {"loss", "zlib", "mink", "minkpp"}
    assert set(tuned) - {"blind"} == signals | {"ref"} and set(base) - {"blind"} == signals  # + blind where offered
    assert tuned["loss"]["auc"] > 0.9 and tuned["loss"]["n_members"] == 8
    assert tuned["loss"]["auc"] > base["loss"]["auc"]
    by_label = report["results"]["fine-tuned"]["extraction"]["by_label"]
    assert by_label["member"]["mean_matched_length"] > by_label["nonmember"]["mean_matched_length"]
    canaries = report["results"]["fine-tuned"]["canaries"]
    assert [c["repeats"] for c in canaries] == [0, 1, 8]
    assert canaries[2]["exposure"] > canaries[0]["exposure"]
    assert (folder / "canaries.png").stat().st_size > 0 and (folder / "report.md").is_file()
    split = [json.loads(line) for line in (folder / "split.jsonl").read_text().splitlines()]
    assert sum(r["label"] == "member" for r in split) == 8
    # The fine-tuned folder is an ordinary model: mia attack takes it as --model, with the split's labels.
    attack = runner.invoke(cli, ["attack", "--dataset", str(folder / "split.jsonl"), "--dataset-option",
                                 "label_field=label", "--model", str(folder / "model"), "--max-tokens", "64",
                                 "--bootstrap", "0", "--no-plot", "-q"])
    assert attack.exit_code == 0, attack.output + attack.stderr
    assert "loss" in attack.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "claude-API"], "cannot be fine-tuned"),
    (["--model", "x.gguf"], "GGUF file"),
    (["--prefix-tokens", "100", "--suffix-tokens", "100"], "exceed the 64 trained tokens"),
    (["--canary-repeats", "0,2"], "--canary-repeats"),
])
def test_calibrate_bad_inputs_get_one_line_and_no_folder(tiny_llama, runner, in_tmp, args, message):
    full = ["calibrate", "--model", str(tiny_llama), *args] if args[0] != "--model" else ["calibrate", *args]
    result = runner.invoke(cli, full)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not Path("Calibrations").exists()


def test_calibrate_refuses_a_dataset_too_small_to_split(tiny_llama, runner, in_tmp):
    data = _write_dataset(in_tmp / "data", n=7)
    result = runner.invoke(cli, ["calibrate", "--model", str(tiny_llama), "--dataset", str(data)])
    assert result.exit_code == 1
    assert "7 usable sample(s): too small to split" in result.stderr
    assert not Path("Calibrations").exists()
