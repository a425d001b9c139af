"""`mia attack` with the real gemma-3-270m on a small subset of the embedded corpus.

The CLI runs unchanged; only the model loading is shared with the session's gemma_backend
fixture (loaded once for the whole suite)."""

import json
from pathlib import Path

import numpy as np
import pytest

from mia_core import registry
from mia_core.cli import cli
from mia_core.formats.attack_results import AttackResults


@pytest.fixture
def shared_gemma(monkeypatch, gemma_backend):
    original = registry.backends.create

    def create(name, options=None):
        return gemma_backend if name == "gemma-3-270m" else original(name, options)

    monkeypatch.setattr(registry.backends, "create", create)
    return gemma_backend


@pytest.mark.real_model
def test_attack_on_the_corpus_prints_the_auc_table(runner, in_tmp, shared_gemma):
    result = runner.invoke(cli, ["attack", "--dataset", "corpus", "--model", "gemma-3-270m", "--limit", "8",
                                 "--max-tokens", "32", "--bootstrap", "200"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("signal  AUC")
    rows = {line.split()[0]: line.split() for line in lines[2:6]}  # header, rule, rows
    assert set(rows) == {"loss", "zlib", "mink", "minkpp"}
    assert all(row[-2:] == ["4", "4"] for row in rows.values())  # members, nonmembers
    # Licenses and founding documents are far likelier under gemma than the generated controls.
    assert float(rows["loss"][1]) >= 0.75
    res = AttackResults(next((in_tmp / "Prefixes" / "attacks").glob("gemma-3-270m_corpus_*.h5")))
    assert res.columns["truncated"].all() and (res.columns["n_scored"] == 32).all()
    assert np.isfinite(res.signals["minkpp"]).all()


@pytest.mark.real_model
def test_attack_on_a_gemma_prefix_map(runner, in_tmp, shared_gemma):
    made = runner.invoke(cli, ["prefix", "--model", "gemma-3-270m", "--dataset", "corpus", "--size", "4",
                               "--prefix_tokens", "16", "--suffix_tokens", "12", "--no-save", "-q"],
                         catch_exceptions=False)
    assert made.exit_code == 0, made.output
    folder = next((in_tmp / "Prefixes").iterdir())
    result = runner.invoke(cli, ["attack", folder.name, "--model", "gemma-3-270m", "--json", "-q"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    res = AttackResults(summary["results"])
    assert Path(summary["results"]).resolve().parent == (folder / "attacks").resolve()
    assert len(res) == 4 and (res.columns["n_tokens"] == 28).all()
    matched, lengths = res.columns["matched_length"], res.columns["suffix_length"]
    assert ((0 <= matched) & (matched <= lengths)).all()
    assert np.array_equal(res.columns["extracted"], matched == lengths)
