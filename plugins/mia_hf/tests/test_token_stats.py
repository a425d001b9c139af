"""mia_hf.token_stats against a float64 log-softmax computed the textbook way."""

import pytest
import torch
from mia_hf import token_stats as ts


def reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    mean = (p * logp).sum(-1)
    std = ((p * (logp - mean[:, None]).square()).sum(-1)).sqrt()
    first_max = torch.tensor([int((row == row.max()).nonzero()[0]) for row in logits.double()])
    return logp.gather(-1, targets[:, None])[:, 0], first_max, mean, std


def sample_logits(rows: int, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    torch.manual_seed(vocab)
    x = torch.randn(rows, vocab) * 4
    x[1, :] = 1.5  # a uniform row: variance 0, every token tied for the maximum
    x[2, vocab // 2] = x[2, vocab - 1] = 60.0  # a tie: the first index wins
    x[3, vocab - 1] = 60.0  # the maximum in the last (short) argmax block
    return x.to(dtype)


@pytest.mark.parametrize("vocab", [7, 300, 512, 50_257, 262_144])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_statistics_equal_float64_reference(vocab: int, dtype: torch.dtype) -> None:
    rows = 20
    logits = sample_logits(rows, vocab, dtype)
    targets = torch.randint(0, vocab, (rows,))
    lp, best, mean, std = ts.token_stats(logits, targets)
    ref_lp, ref_best, ref_mean, ref_std = reference(logits, targets)
    assert lp.dtype == mean.dtype == std.dtype == torch.float32 and best.dtype == torch.int64
    assert torch.equal(best, ref_best)
    assert torch.allclose(lp.double(), ref_lp, atol=1e-5)
    assert torch.allclose(mean.double(), ref_mean, atol=1e-5)
    assert torch.allclose(std.double(), ref_std, atol=1e-5)
    assert std[1] == pytest.approx(0.0, abs=1e-3)


def test_workspace_smaller_than_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows processed a few at a time (the CPU workspace) give the same numbers as all at once."""
    logits = sample_logits(37, 1000, torch.float32)
    targets = torch.randint(0, 1000, (37,))
    whole = ts.token_stats(logits, targets)
    monkeypatch.setattr(ts, "CACHE_ELEMENTS", 3 * 1000)
    for a, b in zip(whole, ts.token_stats(logits, targets), strict=True):
        assert torch.equal(a, b)


def test_without_distribution_the_moments_are_nan() -> None:
    logits = sample_logits(5, 300, torch.float32)
    targets = torch.randint(0, 300, (5,))
    lp, best, mean, std = ts.token_stats(logits, targets, distribution=False)
    full = ts.token_stats(logits, targets)
    assert torch.allclose(lp, full[0], atol=1e-6) and torch.equal(best, full[1])
    assert mean.isnan().all() and std.isnan().all()


def test_first_argmax_equals_torch_argmax() -> None:
    x = torch.randint(0, 50, (64, 1537)).float()  # many ties
    assert torch.equal(ts.first_argmax(x, x.amax(-1, keepdim=True)), x.argmax(-1))
