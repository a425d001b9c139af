"""HFCausalLM on tiny random Llama/Gemma models: generation, scoring, sampling, errors."""

import numpy as np
import pytest
import torch
from mia_hf.backend import HFCausalLM
from tiny_models import make_tiny_gemma, make_tiny_llama

from mia_core import registry
from mia_core.errors import BackendOutOfMemory, MiaError
from mia_core.types import Sampling, capabilities

TEXTS = ["Hello world, this is", "We the People of the", "Beautiful is better than ugly.", "Errors should never"]


@pytest.fixture(scope="module", params=["llama", "gemma"])
def tiny(request, tmp_path_factory):
    """(backend, tokenizer, prefixes of 4 tokens) for a tiny model loaded by its folder path."""
    make = make_tiny_llama if request.param == "llama" else make_tiny_gemma
    path = str(make(tmp_path_factory.mktemp(request.param) / "model", seed=1))
    tok = registry.tokenizers.create(path)
    backend = registry.backends.create(path, {"device": "cpu"})
    prefixes = [ids[:4] for ids in tok.encode_batch(TEXTS)]
    return backend, tok, prefixes


def test_describe_and_bos(tiny):
    backend, tok, _ = tiny
    info = backend.describe()
    assert info["bos_prepended"] is True and backend.bos_prepended
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["max_context"] == 256 and info["parameters"] > 0
    assert info["source"].startswith("path:") and info["tokenizer_fingerprint"] == tok.fingerprint
    assert capabilities(backend) == {"generate", "score"}  # inferred from its methods: no generate_text


def test_batched_greedy_equals_single(tiny):
    backend, _, prefixes = tiny
    batched = backend.generate(prefixes, 12, Sampling())
    single = [backend.generate([p], 12, Sampling())[0] for p in prefixes]
    assert batched == single
    assert all(len(row) == 12 for row in batched)  # random tiny models rarely emit EOS
    assert len({tuple(r) for r in batched}) > 1  # outputs depend on the prefix


def test_unequal_lengths_left_padded(tiny):
    backend, tok, _ = tiny
    prefixes = [ids[:n] for ids, n in zip(tok.encode_batch(TEXTS), (2, 5, 7, 3), strict=True)]
    batched = backend.generate(prefixes, 10, Sampling())
    assert batched == [backend.generate([p], 10, Sampling())[0] for p in prefixes]


def test_bos_is_prepended_to_generation(tiny):
    backend, tok, prefixes = tiny
    manual = backend.model.generate(
        input_ids=torch.tensor([[tok.bos_id, *prefixes[0]]]), max_new_tokens=6, do_sample=False
    )[0, 5:].tolist()
    assert backend.generate(prefixes[:1], 6, Sampling()) == [manual]


def test_score_argmax_reproduces_greedy(tiny):
    """Teacher-forced along the greedy output, the argmax is that output (docs/architecture.md, definitions)."""
    backend, _, prefixes = tiny
    greedy = backend.generate(prefixes, 10, Sampling())
    scores = backend.score([p + g for p, g in zip(prefixes, greedy, strict=True)], start=4)
    for g, s in zip(greedy, scores, strict=True):
        assert s.argmax.tolist() == g
        assert np.all(s.logprob <= 0) and np.all(np.isfinite(s.logprob))


def test_score_matches_full_forward(tiny):
    """The LM head only at the scored positions gives forward()'s log-probabilities, and
    mean/std are the moments of log p under the model's own distribution."""
    backend, tok, _ = tiny
    seqs = [ids[:9] for ids in tok.encode_batch(TEXTS)]
    seqs[1] = seqs[1][:6]  # unequal lengths in one batch
    scores = backend.score(seqs, start=[0, 2, 5, 6])
    for seq, st, s in zip(seqs, [0, 2, 5, 6], scores, strict=True):
        with torch.no_grad():
            logits = backend.model(torch.tensor([[tok.bos_id, *seq]])).logits[0].double()
        logp = torch.log_softmax(logits, -1)[st:len(seq)]
        target = torch.tensor(seq[st:])
        np.testing.assert_allclose(s.logprob, logp.gather(1, target[:, None])[:, 0].numpy(), atol=1e-4)
        assert s.argmax.tolist() == logp.argmax(-1).tolist()
        p = logp.exp()
        mean = (p * logp).sum(-1)
        std = ((p * (logp - mean[:, None]) ** 2).sum(-1)).sqrt()
        np.testing.assert_allclose(s.mean, mean.numpy(), atol=1e-4)
        np.testing.assert_allclose(s.std, std.numpy(), atol=1e-4)
        assert len(s.logprob) == len(seq) - st


def test_score_without_distribution_skips_only_mean_and_std(tiny):
    """distribution=False (no Min-K%++ needed) keeps log p and argmax, and leaves mean/std NaN."""
    backend, tok, _ = tiny
    seqs = [ids[:9] for ids in tok.encode_batch(TEXTS)]
    full = backend.score(seqs, start=2)
    lean = backend.score(seqs, start=2, distribution=False)
    for f, s in zip(full, lean, strict=True):
        np.testing.assert_allclose(s.logprob, f.logprob, atol=1e-5)
        assert s.argmax.tolist() == f.argmax.tolist()
        assert np.isnan(s.mean).all() and np.isnan(s.std).all()


def test_score_batched_equals_single(tiny):
    backend, tok, _ = tiny
    seqs = [ids[:n] for ids, n in zip(tok.encode_batch(TEXTS), (3, 8, 5, 7), strict=True)]
    batched = backend.score(seqs, 1)
    for seq, b in zip(seqs, batched, strict=True):
        one = backend.score([seq], 1)[0]
        np.testing.assert_allclose(b.logprob, one.logprob, atol=1e-5)
        assert b.argmax.tolist() == one.argmax.tolist()


def test_score_without_bos_has_no_first_prediction(tiny):
    backend, tok, prefixes = tiny
    plain = HFCausalLM("plain", backend.model, tok, add_bos=False)
    s = plain.score([prefixes[0]], 0)[0]
    assert np.isnan(s.logprob[0]) and s.argmax[0] == -1 and np.all(np.isfinite(s.logprob[1:]))
    assert plain.describe()["bos_prepended"] is False


def test_sampling_reproducible_with_seed(tiny):
    backend, _, prefixes = tiny
    hot = Sampling(temperature=1.5, top_k=100, top_p=0.95, seed=7)
    first = backend.generate(prefixes, 12, hot)
    assert backend.generate(prefixes, 12, hot) == first
    assert backend.generate(prefixes, 12, Sampling(temperature=1.5, top_k=100, top_p=0.95, seed=8)) != first
    assert first != backend.generate(prefixes, 12, Sampling())
    plain = Sampling(temperature=0.7, seed=1)  # no top-k/top-p: the whole distribution
    assert backend.generate(prefixes, 6, plain) == backend.generate(prefixes, 6, plain)


def test_stops_at_eos_without_returning_it(tiny):
    backend, tok, prefixes = tiny
    greedy = backend.generate(prefixes[:1], 10, Sampling())[0]
    stop = greedy[3]
    tok_copy = type(tok).__new__(type(tok))
    tok_copy.__dict__.update(tok.__dict__, eos_id=stop)
    cut = HFCausalLM("eos", backend.model, tok_copy).generate(prefixes[:1], 10, Sampling())[0]
    assert cut == greedy[: greedy.index(stop)]
    assert stop not in cut


def test_out_of_memory_maps_to_backend_error(tiny, monkeypatch):
    backend, _, prefixes = tiny

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(backend.model, "generate", boom)
    with pytest.raises(BackendOutOfMemory, match="batch of 4"):
        backend.generate(prefixes, 5, Sampling())
    monkeypatch.setattr(backend.model.base_model, "forward", boom)
    with pytest.raises(BackendOutOfMemory):
        backend.score(prefixes, 1)
    monkeypatch.setattr(backend.model.base_model, "forward", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(BackendOutOfMemory):
        backend.score(prefixes, 1)


def test_bad_inputs_are_clear_errors(tiny):
    backend, _, prefixes = tiny
    with pytest.raises(MiaError, match="context"):
        backend.generate([prefixes[0]], 300, Sampling())
    with pytest.raises(MiaError, match="context"):
        backend.score([list(range(5)) * 60], 0)
    with pytest.raises(MiaError, match="token ids"):
        backend.generate([[5, 400_000]], 3, Sampling())
    with pytest.raises(MiaError, match="token ids"):
        backend.score([[5, -1, 7]], 0)
    with pytest.raises(MiaError, match="positive"):
        backend.generate(prefixes, 0, Sampling())
    with pytest.raises(MiaError, match="start"):
        backend.score([prefixes[0]], 9)
    assert backend.generate([], 5, Sampling()) == [] and backend.score([], 0) == []


def test_backend_options(tmp_path):
    path = str(make_tiny_llama(tmp_path / "m"))
    with pytest.raises(MiaError, match="unknown option"):
        registry.backends.create(path, {"devic": "cpu"})
    with pytest.raises(MiaError, match="unknown dtype"):
        registry.backends.create(path, {"dtype": "float8"})
    with pytest.raises(MiaError, match="device"):
        registry.backends.create(path, {"device": "tpu9"})
    with pytest.raises(MiaError, match="threads"):
        registry.backends.create(path, {"threads": "many"})
    before = torch.get_num_threads()
    try:
        registry.backends.create(path, {"threads": "1"})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    bf16 = registry.backends.create(path, {"device": "cpu", "dtype": "bf16", "add_bos": "false"})
    assert bf16.describe()["dtype"] == "bfloat16" and bf16.bos_prepended is False
    assert len(bf16.generate([[5, 6, 7]], 4, Sampling())[0]) <= 4


def test_device_and_dtype_resolution():
    from mia_hf.backend import resolve_device, resolve_dtype

    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype(None, torch.device("mps")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("FP16", torch.device("cpu")) == torch.float16
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(MiaError, match="CUDA is not available"):
            resolve_device("cuda")


def test_generation_reports_progress_every_step(tiny):
    """The prompt loop's bar moves within a batch: the backend reports after every decoding step
    (rows that produced EOS count whole, the others by steps done), adding up to the batch."""
    backend, _, prefixes = tiny
    calls: list[tuple[float, int]] = []
    backend.on_rows_done = lambda rows, tokens: calls.append((rows, tokens))
    try:
        out = backend.generate(prefixes, 6, Sampling())
    finally:
        backend.on_rows_done = None
    assert len(calls) >= max(len(t) for t in out)  # one report per decoding step
    assert all(rows >= 0 for rows, _ in calls)
    assert sum(rows for rows, _ in calls) == pytest.approx(len(prefixes))
    assert backend.generate(prefixes, 6, Sampling()) == out  # reporting changes nothing
