"""Small helpers shared by the dataset loaders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

#: Seed of the fixed orderings (splits, subset orders); independent of the run seed so
#: that every run of a benchmark sees the same test set.
SPLIT_SEED = 0


def label_to_tensor(label: int) -> torch.Tensor:
    """Target transform: a class index as an int64 scalar tensor."""
    return torch.tensor(int(label), dtype=torch.int64)


def missing_paths(paths: Iterable[Path]) -> list[Path]:
    """Return the paths among ``paths`` that are not existing files."""
    return [path for path in paths if not path.is_file()]


def fixed_permutation(n: int, seed: int = SPLIT_SEED) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``n`` and ``seed``."""
    return np.random.default_rng(seed).permutation(n).tolist()


def shuffled_view(dataset: Dataset, seed: int = SPLIT_SEED) -> Subset:
    """View ``dataset`` in a fixed shuffled order.

    Used for datasets stored sorted by class (ImageFolder trees), so that taking the
    first N samples (``train_subset``) gives a class-balanced subset.
    """
    return Subset(dataset, fixed_permutation(len(dataset), seed))
