"""Shared fixtures of the training-entrypoint tests (``test_train.py``, ``test_config.py``).

``compose(overrides)`` builds the config exactly as ``python -m experiments.train``
would (resolvers registered, Hydra's runtime config set so ``${hydra:...}`` resolves,
the ``hydra`` node removed); ``tiny_overrides(model)`` makes a model small enough for
2-step CPU runs; ``run_cli(args, ...)`` runs the entrypoint in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"

# Builder keyword arguments that shrink each model (see models/vgg.py, models/gcn.py).
TINY_MODEL = {
    "vgg": ["model.width_multiplier=0.0625", "model.depth=11"],
    "vgg16_bn": ["model.width_multiplier=0.0625"],
    "gcn": ["model.hidden_channels=4"],
}
# Data each model trains on in the 2-step runs: synthetic images, or Cora's synthetic
# stand-in (a root without Cora files falls back at scale=smoke).
SMOKE_DATA = {
    "vgg": ["data=synthetic"],
    "vgg16_bn": ["data=synthetic"],
    "gcn": ["data=cora", "data.root=/nonexistent/ngdbench-test-root"],
}
METRIC_KEYS = (
    "step",
    "epoch",
    "train_loss",
    "test_loss",
    "test_error",
    "lr",
    "time_s",
    "peak_memory_bytes",
    "optimizer_state_bytes",
)
SUMMARY_KEYS = (
    "status",
    "final_test_error",
    "best_test_error",
    "total_time_s",
    "git_commit",
    "git_dirty",
    "packages",
    "device",
    "seed",
)
# Metrics fields that measure the machine rather than the computation.
MACHINE_FIELDS = ("time_s", "step_time_s", "peak_memory_bytes")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/train.yaml`` as the entrypoint does.

    Args:
        overrides: Command-line style overrides.

    Returns:
        The config without its ``hydra`` node (``HydraConfig`` is set, so
        ``${hydra:runtime.choices...}`` interpolations resolve).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from experiments.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def tiny_overrides(model: str, *extra: str) -> list[str]:
    """Overrides for a 2-step ``scale=smoke`` CPU run of a tiny ``model``."""
    return [
        "scale=smoke",
        f"model={model}",
        *TINY_MODEL[model],
        *SMOKE_DATA[model],
        "trainer.device=cpu",
        "logger=none",
        *extra,
    ]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment of an entrypoint subprocess: one thread, the repo importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        HYDRA_FULL_ERROR="0",
    )
    env.pop("WANDB_API_KEY", None)
    env.update(extra)
    return env


def cli_command(args: Sequence[str]) -> list[str]:
    """``python -m experiments.train <args>``."""
    return [sys.executable, "-m", "experiments.train", *args]


def run_cli(
    args: Sequence[str], cwd: Path | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the entrypoint in a subprocess and wait for it."""
    return subprocess.run(
        cli_command(args),
        cwd=cwd or REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def compose() -> Callable[..., DictConfig]:
    """``compose(overrides)`` -> the composed config (see :func:`compose_config`)."""
    return compose_config


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread (fast tiny runs on a busy machine); restore global flags."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    now = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if now != (deterministic, warn_only):  # the first call costs seconds: only when changed
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
