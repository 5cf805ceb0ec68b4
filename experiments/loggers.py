"""Experiment loggers: ``none`` (run directory only) and ``wandb``.

W&B runs offline by default (files under ``<run_dir>/wandb``; ``wandb sync`` uploads
them later). ``mode: online`` without network must not hang: ``wandb.init`` gets a
bounded timeout and falls back to offline with a warning. ``finish`` is called at the
end of every run, so Hydra multiruns start each job with a fresh W&B run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


class NullLogger:
    """Logs nothing beyond the run directory."""

    def log(self, row: dict[str, Any], step: int) -> None:
        """Ignore ``row``."""

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Nothing to close."""


class WandbLogger:
    """Weights & Biases logger.

    Args:
        cfg: ``logger`` config node.
        run_dir: Run directory (W&B writes into ``run_dir/wandb``).
        run_name: Display name.
        config: Resolved config as a plain dict.
    """

    def __init__(
        self, cfg: DictConfig, run_dir: Path, run_name: str, config: dict[str, Any]
    ) -> None:
        import wandb

        self._wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(
            project=cfg.project,
            entity=cfg.entity,
            name=run_name,
            dir=str(run_dir),
            config=config,
            tags=list(cfg.tags or []),
            reinit="finish_previous",
        )
        try:
            self.run = wandb.init(
                mode=cfg.mode, settings=wandb.Settings(init_timeout=cfg.init_timeout_s), **kwargs
            )
        except Exception as error:  # noqa: BLE001 - any failure to reach the server
            if cfg.mode != "online":
                raise
            warnings.warn(
                f"wandb online init failed ({error}); logging offline instead", stacklevel=2
            )
            self.run = wandb.init(mode="offline", **kwargs)

    def log(self, row: dict[str, Any], step: int) -> None:
        """Log one metrics row."""
        self.run.log({k: v for k, v in row.items() if v is not None}, step=step)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Write the summary and close the run."""
        if summary:
            for key, value in summary.items():
                if isinstance(value, (int, float, str, bool)) or value is None:
                    self.run.summary[key] = value
        self.run.finish()


def build_logger(cfg: DictConfig, run_dir: Path, run_name: str, config: dict[str, Any]):
    """The logger of ``cfg.name``."""
    if cfg.name == "wandb":
        return WandbLogger(cfg, run_dir, run_name, config)
    return NullLogger()
