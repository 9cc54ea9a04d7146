"""Out-of-time split by cutoff: the latest cutoffs are test, the ones before them validation.

Never a random split: a random split puts a user's later cutoffs in train and earlier ones
in test, and the model would be scored on a past it has already seen the future of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from training.spine import SPINE_KEY

SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class CutoffSplit:
    """Cutoffs per split, ascending; `purged` were left out to keep label windows apart."""

    train: tuple[date, ...]
    valid: tuple[date, ...]
    test: tuple[date, ...]
    purged: tuple[date, ...] = ()

    def of(self, name: str) -> tuple[date, ...]:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def split_cutoffs(
    cutoffs: Sequence[date], *, valid_cutoffs: int = 1, test_cutoffs: int = 1, purge_days: int = 0
) -> CutoffSplit:
    """The last test_cutoffs are test, the valid_cutoffs before them validation, the rest train.

    purge_days > 0 (an embargo, usually the horizon): a validation cutoff must lie at least
    purge_days before the first test cutoff, and a train cutoff that far before the first
    validation cutoff, so no training label window reaches into a later split's period.
    """
    if valid_cutoffs < 1 or test_cutoffs < 1:
        raise ValueError("valid_cutoffs and test_cutoffs must be >= 1")
    days = sorted(set(cutoffs))
    need = valid_cutoffs + test_cutoffs + 1
    if len(days) < need:
        raise ValueError(
            f"an out-of-time split needs at least {need} labelled cutoffs "
            f"({test_cutoffs} test, {valid_cutoffs} validation, 1+ train); got {len(days)}: "
            f"{', '.join(map(str, days)) or 'none'}. Use more data, a shorter horizon or step, "
            "or fewer validation/test cutoffs."
        )
    test = days[-test_cutoffs:]
    earlier = [d for d in days[:-test_cutoffs] if d + timedelta(days=purge_days) <= test[0]]
    valid = earlier[-valid_cutoffs:]
    train = [d for d in earlier[:-valid_cutoffs] if d + timedelta(days=purge_days) <= valid[0]]
    if len(valid) < valid_cutoffs or not train:
        raise ValueError(
            f"after purging {purge_days} days between splits, {len(valid)} validation and "
            f"{len(train)} train cutoffs remain of {', '.join(map(str, days))}; "
            "use more data or purge_overlap: false"
        )
    purged = sorted(set(days) - set(test) - set(valid) - set(train))
    return CutoffSplit(tuple(train), tuple(valid), tuple(test), tuple(purged))


def split_frame(rows: pd.DataFrame, split: CutoffSplit) -> dict[str, pd.DataFrame]:
    """train / valid / test rows of a training-set frame, each sorted by (user_id, cutoff)."""
    cutoff = pd.to_datetime(rows["cutoff"]).dt.date
    out = {}
    for name in SPLITS:
        part = rows[cutoff.isin(split.of(name))]
        out[name] = part.sort_values(list(SPINE_KEY), kind="stable").reset_index(drop=True)
    return out
