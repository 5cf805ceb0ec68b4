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


def check_batch_split(global_batch: int, world_size: int) -> None:
    """Raise :class:`ConfigError` unless ``global_batch`` splits evenly over the processes.

    Args:
        global_batch: ``trainer.batch_size``.
        world_size: Number of processes (torchrun's ``--nproc_per_node`` x nodes).
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError("nproc_per_node", world_size, "must be an integer >= 1")
    if global_batch % world_size or global_batch < world_size:
        raise ConfigError(
            "trainer.batch_size",
            global_batch,
            f"must be a multiple of nproc_per_node={world_size} and >= it",
        )


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
    check_batch_split(global_batch, context.world_size)
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


def check_launch(nproc: int, overrides: list[str]) -> None:
    """Check a data-parallel launch before torchrun starts any process.

    Args:
        nproc: ``--nproc_per_node``.
        overrides: The training command line (Hydra overrides).

    Raises:
        ConfigError: When the global batch cannot be split over ``nproc`` processes.
            A bad config exits with code 2 and one line, as ``experiments.train`` does.
    """
    from hydra import compose, initialize_config_dir

    from experiments.config import CONF_DIR
    from experiments.train import precheck

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError("nproc_per_node", nproc, "must be an integer >= 1")
    precheck(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    check_batch_split(int(cfg.trainer.batch_size), nproc)


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.distributed --nproc N [overrides]`` (``make train-ddp``).

    Returns:
        0 when ``torchrun --nproc_per_node=N -m experiments.train [overrides]`` can
        start, 2 (with one line on stderr) when it cannot.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Check a torchrun launch of experiments.train.")
    parser.add_argument("--nproc", type=int, required=True, help="torchrun --nproc_per_node")
    args, overrides = parser.parse_known_args(argv)
    try:
        check_launch(args.nproc, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
