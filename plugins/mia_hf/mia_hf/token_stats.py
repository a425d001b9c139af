"""Teacher-forced statistics of a block of logits: log p(target), the argmax, and the mean and
standard deviation of log p(z) for z ~ p (Min-K%++), all in float32.

With z = x − max(x), e = exp(z) and S = Σe: log p = z − log S, the mean of log p is Σez/S − log S
and its variance Σez²/S − (Σez/S)² (the variance of z under p; the shift by log S drops out). So
one exp and three sums give everything, in place, without a log-softmax tensor.

On the CPU the rows are processed a few at a time in a workspace that stays in the cache: over a
262,144-token vocabulary the passes are then cheap, while whole-block temporaries (hundreds of MB,
fresh pages each time) cost more than the LM head itself (docs/models.md, "Speed on the CPU").
"""

from __future__ import annotations

import torch

# CPU workspace: this many float32 logits per pass (8 MiB: about 8 rows of a 262k vocabulary).
CACHE_ELEMENTS = 1 << 21
# argmax in two steps: amax per block of this many logits (vectorised), then argmax in one block.
ARGMAX_BLOCK = 512


def token_stats(logits: torch.Tensor, targets: torch.Tensor,
                distribution: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``logits`` [R, V] (any float dtype): log p(target) (float32), the argmax (int64,
    the first of equal maxima), and with ``distribution`` the mean and std of log p (float32), else NaN."""
    rows, vocab = logits.shape
    lp = torch.empty(rows, dtype=torch.float32, device=logits.device)
    best = torch.empty(rows, dtype=torch.int64, device=logits.device)
    mean = torch.full_like(lp, float("nan"))
    std = torch.full_like(lp, float("nan"))
    step = max(1, CACHE_ELEMENTS // max(vocab, 1)) if logits.device.type == "cpu" else rows
    step = max(1, min(step, rows))
    z = torch.empty((step, vocab), dtype=torch.float32, device=logits.device)
    e = torch.empty_like(z) if distribution else None
    for a in range(0, rows, step):
        b = min(rows, a + step)
        zz = z[:b - a]
        zz.copy_(logits[a:b])
        top = zz.amax(-1, keepdim=True)
        best[a:b] = first_argmax(zz, top)
        zz.sub_(top)
        picked = zz.gather(-1, targets[a:b, None])[:, 0]
        if e is None:
            lp[a:b] = picked - zz.exp().sum(-1).log()
            continue
        ee = e[:b - a]
        torch.exp(zz, out=ee)
        total = ee.sum(-1)
        first = ee.mul_(zz).sum(-1) / total
        second = ee.mul_(zz).sum(-1) / total
        log_total = total.log()
        lp[a:b] = picked - log_total
        mean[a:b] = first - log_total
        std[a:b] = (second - first.square()).clamp_min(0).sqrt()
    return lp, best, mean, std


def first_argmax(x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``x.argmax(-1)`` for rows [R, V] whose maxima ``top`` [R, 1] are known: the first block of
    ``ARGMAX_BLOCK`` logits holding the maximum, then the argmax inside it (a row-wide argmax is not
    vectorised on the CPU; amax is, and this is about 10x faster there)."""
    rows, vocab = x.shape
    whole = vocab - vocab % ARGMAX_BLOCK
    if whole == 0 or top.isnan().any():
        return x.argmax(-1)
    block_max = x[:, :whole].view(rows, -1, ARGMAX_BLOCK).amax(-1)
    if whole < vocab:
        block_max = torch.cat([block_max, x[:, whole:].amax(-1, keepdim=True)], dim=1)
    block = (block_max == top).to(torch.uint8).argmax(-1)  # argmax returns the first maximum
    index = block[:, None] * ARGMAX_BLOCK + torch.arange(ARGMAX_BLOCK, device=x.device)
    # the last block may be short: its indices past the end repeat the last logit, after the real ones
    inside = x.gather(-1, index.clamp_max(vocab - 1)).argmax(-1)
    return block * ARGMAX_BLOCK + inside
