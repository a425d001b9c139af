"""`mia prefix` on the embedded corpus with gemma-3-270m's real tokenizer.

Every stored prefix and suffix is checked against the source text re-tokenized at the
stored offset, and decoded back to a piece of the source text. The first test goes through
the whole loading path; the others reuse the session's tokenizer (loading it takes seconds).
"""

from pathlib import Path

import numpy as np
import pytest

from mia_core import registry
from mia_core.cli import cli
from mia_core.formats.prefixmap import PrefixMap

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def corpus(gemma_tokenizer) -> dict[str, tuple[str, list[int]]]:
    """Sample id → (text, tokens) of the embedded corpus."""
    samples = list(registry.datasets.create("corpus"))
    tokens = gemma_tokenizer.encode_batch([s.text for s in samples])
    return {s.id: (s.text, t) for s, t in zip(samples, tokens, strict=True)}


@pytest.fixture
def cached_tokenizer(monkeypatch, gemma_tokenizer):
    """`mia prefix --model gemma-3-270m` gets the session's already loaded tokenizer."""
    create = registry.tokenizers.create
    monkeypatch.setattr(registry.tokenizers, "create",
                        lambda name, options=None: gemma_tokenizer if name == "gemma-3-270m" else create(name, options))


def build(runner, *args: str) -> PrefixMap:
    result = runner.invoke(cli, ["prefix", "--model", "gemma-3-270m", "--dataset", "Corpus", "-q", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return PrefixMap(Path(result.stdout.strip()))


def check_map(pm: PrefixMap, corpus, tokenizer, prefix_tokens: int, suffix_tokens: int) -> None:
    prefixes, starts = pm.read("prefixes"), pm.read("prefix_start")
    ids, index = pm.read("sample_id"), pm.read("sample_index")
    order = list(corpus)
    usable = [i for i, (_, toks) in corpus.items() if len(toks) >= prefix_tokens]
    assert len(pm) == min(len(usable), pm.attrs["size"])
    windows = []
    for row, suffix in enumerate(pm.suffixes()):
        text, toks = corpus[ids[row]]
        assert order[index[row]] == ids[row]
        start = int(starts[row])
        assert prefixes[row].tolist() == toks[start:start + prefix_tokens]
        assert suffix.tolist() == toks[start + prefix_tokens:start + prefix_tokens + suffix_tokens]
        windows.append((text, prefixes[row].tolist() + suffix.tolist()))
    decoded = tokenizer.decode_batch([w for _, w in windows])
    misses = [piece for (text, _), piece in zip(windows, decoded, strict=True) if piece not in text]
    assert misses == []
    labels = {s.id: s.label for s in registry.datasets.create("corpus")}
    assert pm.read("sample_label").tolist() == [labels[i] for i in ids]
    assert pm.attrs["tokenizer"] == "gemma-3-270m" and pm.attrs["tokenizer_fingerprint"] == tokenizer.fingerprint


def test_start_map_through_the_full_loading_path(runner, in_tmp, corpus, gemma_tokenizer):
    pm = build(runner, "--prefix_tokens", "10")
    assert pm.folder.name.startswith("gemma-3-270m_Corpus_10_start_")
    check_map(pm, corpus, gemma_tokenizer, 10, 50)
    assert (pm.read("prefix_start") == 0).all() and pm.attrs["samples_read"] == len(corpus)
    # The saved dataset (CSR) is the whole corpus, tokenized.
    saved = list(pm.iter_dataset())
    assert [s[0] for s in saved] == list(corpus)
    for sample_id, text, _label, tokens in saved:
        assert text == corpus[sample_id][0] and tokens.tolist() == corpus[sample_id][1]


def test_random_location_is_checked_and_reproducible(runner, in_tmp, corpus, gemma_tokenizer, cached_tokenizer):
    first = build(runner, "--prefix_tokens", "32", "--prefix_loc", "random", "--seed", "11", "--no-save")
    check_map(first, corpus, gemma_tokenizer, 32, 50)
    again = build(runner, "--prefix-tokens", "32", "--prefix-loc", "random", "--seed", "11", "--no-save")
    for name in ("prefixes", "suffixes", "suffix_lengths", "prefix_start", "sample_id"):
        assert np.array_equal(first.read(name), again.read(name))
    other = build(runner, "--prefix_tokens", "32", "--prefix_loc", "random", "--seed", "12", "--no-save")
    assert not np.array_equal(first.read("prefix_start"), other.read("prefix_start"))
    starts = first.read("prefix_start")
    assert (starts > 0).sum() > len(starts) // 2  # really spread over the documents
    # Samples long enough for prefix + suffix always get a full suffix.
    long_enough = np.array([len(corpus[i][1]) >= 82 for i in first.read("sample_id")])
    assert (first.read("suffix_lengths")[long_enough] == 50).all()


def test_integer_location_and_crop(runner, in_tmp, corpus, gemma_tokenizer, cached_tokenizer):
    pm = build(runner, "--prefix_tokens", "16", "--prefix_loc", "400", "--suffix_tokens", "20")
    check_map(pm, corpus, gemma_tokenizer, 16, 20)
    for sample_id, start in zip(pm.read("sample_id"), pm.read("prefix_start"), strict=True):
        assert start == min(400, len(corpus[sample_id][1]) - 16)
    assert (pm.read("prefix_start") < 400).any() and (pm.read("prefix_start") == 400).any()

    cropped = build(runner, "--prefix_tokens", "16", "--size", "7", "--crop")
    check_map(cropped, corpus, gemma_tokenizer, 16, 50)
    assert len(cropped) == 7 and [s[0] for s in cropped.iter_dataset()] == list(corpus)[:7]
    whole = build(runner, "--prefix_tokens", "16", "--size", "7")
    assert len(whole) == 7 and len(list(whole.iter_dataset())) == len(corpus)
