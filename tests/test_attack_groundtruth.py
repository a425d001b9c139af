"""Ground truth for `mia attack`: a tiny Llama trained on a member set until it has memorized
it must separate members from held-out nonmembers (AUC near 1), and the same architecture
randomly initialised must not (AUC near 0.5). Everything goes through the real CLI path with
the real HF backend (registry name = the model folder)."""

import json

import numpy as np
import pytest
from tiny_models import load_tiny, make_tiny_llama, training_text

from mia_core import registry
from mia_core.cli import cli
from mia_core.formats.attack_results import AttackResults
from mia_core.types import Sampling

N_EACH = 32


def word_texts(n: int, seed: int = 0) -> list[str]:
    """Sentences of 12 random words: members and nonmembers come from the same distribution,
    so only memorization can tell them apart."""
    words = sorted({w.strip(".,!*-").lower() for w in training_text().split()
                    if w.isascii() and w.strip(".,!*-").isalpha()})
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=12)) + "." for _ in range(n)]


def train_until_memorized(path, members: list[str], steps: int = 40) -> float:
    """Full-batch AdamW on the members; returns the final training loss (nats/token)."""
    import torch

    model, tok = load_tiny(path)
    enc = [tok(t)["input_ids"] for t in members]  # with BOS, as the backend scores
    width = max(len(e) for e in enc)
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, :len(e)] = torch.tensor(e)
        mask[i, :len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return loss.item()


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("ground_truth")
    texts = word_texts(2 * N_EACH)
    members, nonmembers = texts[:N_EACH], texts[N_EACH:]
    data = root / "samples.jsonl"
    with open(data, "w") as fh:
        for label, group in (("member", members), ("nonmember", nonmembers)):
            for i, text in enumerate(group):
                fh.write(json.dumps({"id": f"{label}-{i}", "text": text, "label": label}) + "\n")
    trained = make_tiny_llama(root / "trained", seed=0, hidden_size=64, layers=2)
    final_loss = train_until_memorized(trained, members)
    untrained = make_tiny_llama(root / "untrained", seed=0, hidden_size=64, layers=2)
    return {"root": root, "data": data, "trained": trained, "untrained": untrained, "loss": final_loss,
            "members": members}


def attack_json(runner, *args):
    result = runner.invoke(cli, ["attack", *args, "--json", "-q", "--bootstrap", "200"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return summary, {m["signal"]: m for m in summary["metrics"]}


def dataset_args(gt):
    return ["--dataset", "files", "--dataset-option", f"path={gt['data']}", "--dataset-option", "label_field=label"]


def test_memorized_members_are_found_and_untrained_model_is_at_chance(runner, in_tmp, ground_truth):
    gt = ground_truth
    assert gt["loss"] < 0.3  # memorized: the members' tokens are nearly certain after training
    summary, trained = attack_json(runner, *dataset_args(gt), "--model", str(gt["trained"]),
                                   "--reference", str(gt["untrained"]))
    assert summary["counts"]["strings"] == 2 * N_EACH
    for signal in ("loss", "mink", "minkpp", "zlib", "ref"):
        assert trained[signal]["auc"] >= 0.95, (signal, trained[signal])
        assert trained[signal]["n_members"] == trained[signal]["n_nonmembers"] == N_EACH
    assert trained["loss"]["tpr_at_fpr"]["0.05"] >= 0.9
    _, untrained = attack_json(runner, *dataset_args(gt), "--model", str(gt["untrained"]))
    for signal in ("loss", "mink"):
        assert abs(untrained[signal]["auc"] - 0.5) <= 0.2, (signal, untrained[signal])
        assert untrained[signal]["auc_low"] < 0.5 < untrained[signal]["auc_high"]


def test_map_verdicts_match_greedy_generation(runner, in_tmp, ground_truth):
    gt = ground_truth
    made = runner.invoke(cli, ["prefix", "--model", str(gt["trained"]), *dataset_args(gt), "--prefix_tokens", "6",
                               "--suffix_tokens", "12", "--no-save", "-q"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    folder = next((in_tmp / "Prefixes").iterdir())
    summary, metrics = attack_json(runner, folder.name, "--model", str(gt["trained"]), "--signals", "loss,mink")
    assert metrics["loss"]["auc"] >= 0.95
    res = AttackResults(summary["results"])
    members = res.columns["label"] == "member"
    assert res.columns["extracted"][members].mean() >= 0.8  # memorized suffixes come back greedily
    assert res.columns["extracted"][~members].sum() == 0
    # The teacher-forced verdict of the attack's single pass equals real greedy decoding.
    backend = registry.backends.create(str(gt["trained"]))
    from mia_core.formats.prefixmap import PrefixMap

    pmap = PrefixMap(folder)
    prefixes, suffixes = pmap.read("prefixes"), pmap.suffixes()
    generated = backend.generate([list(p) for p in prefixes], 12, Sampling())
    for i, (gen, true) in enumerate(zip(generated, suffixes, strict=True)):
        matched = 0
        while matched < min(len(gen), len(true)) and gen[matched] == true[matched]:
            matched += 1
        assert res.columns["matched_length"][i] == matched, i
