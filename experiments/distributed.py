"""Data-parallel training under ``torchrun`` (``trainer.distributed=true``).

``torchrun --nproc_per_node=N -m experiments.train trainer.distributed=true ...``
starts N processes; each joins the default process group (gloo on CPU, nccl on
CUDA), trains a ``DistributedDataParallel`` replica on its ``DistributedSampler``
shard with ``trainer.batch_size / N`` samples per step (the global batch stays
``trainer.batch_size``). Only rank 0 evaluates, logs, checkpoints and writes the run
directory; every rank resumes from the same checkpoint. KFAC/SINGD average their
Kronecker statistics over ranks inside the optimizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from experiments.config import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether training is data-parallel."""
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, logs and writes."""
        return self.rank == 0


def init_distributed(enabled: bool, device_name: str, global_batch: int) -> DistContext:
    """Join the process group started by ``torchrun`` (no-op unless ``enabled``).

    Args:
        enabled: ``trainer.distributed``.
        device_name: ``trainer.device`` (``cuda`` selects nccl).
        global_batch: ``trainer.batch_size``, split evenly over the processes.

    Returns:
        This process's context.

    Raises:
        ConfigError: Without torchrun's environment, or when the global batch cannot be
            split over the processes.
    """
    if not enabled:
        return DistContext()
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if k not in os.environ
    ]
    if missing:
        raise ConfigError(
            "trainer.distributed",
            True,
            f"needs torchrun's environment (missing {missing}); start with "
            "`torchrun --nproc_per_node=N -m experiments.train trainer.distributed=true`",
        )
    context = DistContext(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    )
    if global_batch % context.world_size or global_batch < context.world_size:
        raise ConfigError(
            "trainer.batch_size",
            global_batch,
            f"must be a multiple of nproc_per_node={context.world_size} and >= it",
        )
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    return context


def all_finite(value: torch.Tensor, context: DistContext) -> bool:
    """Whether ``value`` is finite on every rank (so all ranks stop together)."""
    flag = torch.tensor(1.0 if bool(torch.isfinite(value).all()) else 0.0, device=value.device)
    if context.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def shutdown(context: DistContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
