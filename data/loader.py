"""``make_loader``: a DataLoader whose batch order is fixed by a seed."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed.

    torch derives each worker's seed from the loader's generator, so with a seeded
    generator the workers' random augmentations repeat from run to run.
    """
    del worker_id
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
    sampler: Sampler | None = None,
) -> DataLoader:
    """Build a DataLoader whose shuffling and worker seeds follow ``seed``.

    Args:
        dataset: Map-style dataset.
        batch_size: Samples per batch (>= 1).
        shuffle: Shuffle each epoch (ignored when ``sampler`` is given: a
            ``DistributedSampler`` shuffles itself; call its ``set_epoch``).
        seed: Seed of the loader's ``torch.Generator`` (same seed -> same batches).
        drop_last: Drop the last incomplete batch.
        num_workers: Worker processes (0 loads in the main process).
        sampler: Optional sampler, e.g. ``torch.utils.data.DistributedSampler``.

    Returns:
        The DataLoader.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; expected an integer >= 1")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers={num_workers!r} is not allowed; expected an integer >= 0")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=bool(shuffle) and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,
    )
