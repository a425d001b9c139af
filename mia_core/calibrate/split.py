"""The randomized split of a calibration: a seeded random half of the samples are members."""

import random
from collections.abc import Iterable, Sequence

from mia_core.errors import MiaError
from mia_core.types import MEMBER, NONMEMBER, Sample

MIN_PER_SIDE = 4


def usable_samples(samples: Iterable[Sample]) -> tuple[list[Sample], dict[str, int]]:
    """Samples with text, each text once: a duplicate drawn on both sides would be a member and a
    non-member at once. Returns the samples in dataset order and what was dropped."""
    kept: list[Sample] = []
    seen: set[str] = set()
    counts = {"read": 0, "empty": 0, "duplicate": 0}
    for sample in samples:
        counts["read"] += 1
        if not sample.text or not sample.text.strip():
            counts["empty"] += 1
        elif sample.text in seen:
            counts["duplicate"] += 1
        else:
            seen.add(sample.text)
            kept.append(sample)
    return kept, counts


def random_split(samples: Sequence[Sample], seed: int, dataset: str = "the dataset") -> list[Sample]:
    """The samples relabelled by a seeded draw: ``len // 2`` members, the rest non-members.

    The draw depends only on the seed and the number of samples (a permutation of their
    positions), so the same dataset and seed give the same split on every platform. The
    dataset's own labels are ignored: here membership is what the fine-tune makes it.
    """
    n = len(samples)
    if n < 2 * MIN_PER_SIDE:
        raise MiaError(f"{dataset} has {n} usable sample(s): too small to split into at least {MIN_PER_SIDE} "
                       f"members and {MIN_PER_SIDE} non-members (need {2 * MIN_PER_SIDE})")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    members = set(order[: n // 2])
    return [Sample(s.id, s.text, MEMBER if i in members else NONMEMBER) for i, s in enumerate(samples)]
