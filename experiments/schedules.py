"""Learning-rate schedules of the papers and per-epoch hyperparameter tables.

Stateless: the value at a step is a function of (step, epoch), so a resumed run
reproduces it without saving scheduler state.

* ``cosine``: ``lr * 0.5 (1 + cos(pi t / total))`` over all steps (after warm-up).
* ``step``: ``lr * gamma ** (epoch // step_epochs)`` (SINGD paper: VGG, ConvMixer).
* ``constant``: ``lr`` (GCN).
* ``poly``: ``lr * (1 - t / poly_epochs) ** poly_power`` with ``t`` the fractional epoch
  after the step (SENG's reference "exp" scheme: ``poly_epochs=75, poly_power=6``).
* ``piecewise``: a table ``[[epoch, lr], ...]``, the last entry whose epoch <= the
  current one wins (the randomized K-FAC paper's lr schedule).
* ``hyper_tables``: the same piecewise rule for any other optimizer hyperparameter
  (``damping``, ``T_inv``, ``rank``, ``oversample`` in the randomized K-FAC paper).
Linear warm-up over ``warmup_epochs`` multiplies any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf


def piecewise(table: Sequence[Sequence[float]], epoch: int) -> Any:
    """Value of a ``[[epoch, value], ...]`` table at ``epoch`` (last start <= epoch)."""
    rows = sorted((int(row[0]), row[1]) for row in table)
    value = rows[0][1]
    for start, row_value in rows:
        if start <= epoch:
            value = row_value
    return value


class Schedule:
    """Sets ``lr`` (and tabled hyperparameters) on the optimizer's param groups.

    Args:
        cfg: ``trainer.schedule`` node.
        base_lr: ``optimizer.lr``.
        steps_per_epoch: Optimizer steps in one epoch.
        epochs: Number of epochs of the run.
    """

    def __init__(self, cfg: DictConfig, base_lr: float, steps_per_epoch: int, epochs: int) -> None:
        self.cfg = cfg
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * epochs
        tables = cfg.get("hyper_tables") or {}
        self.hyper_tables = OmegaConf.to_container(tables, resolve=True) if tables else {}

    def lr(self, step: int) -> float:
        """Learning rate at optimizer step ``step`` (0-based)."""
        epoch = step // self.steps_per_epoch
        name = self.cfg.name
        warmup_steps = self.cfg.warmup_epochs * self.steps_per_epoch
        if name == "cosine":
            span = max(1, self.total_steps - warmup_steps)
            progress = min(1.0, max(0, step - warmup_steps) / span)
            value = self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        elif name == "step":
            value = self.base_lr * self.cfg.gamma ** (epoch // self.cfg.step_epochs)
        elif name == "poly":
            progress = min(1.0, (step + 1) / self.steps_per_epoch / self.cfg.poly_epochs)
            value = self.base_lr * (1.0 - progress) ** self.cfg.poly_power
        elif name == "piecewise":
            value = float(piecewise(self.cfg.table, epoch))
        else:
            value = self.base_lr
        if warmup_steps and step < warmup_steps:
            value *= (step + 1) / warmup_steps
        return value

    def apply(self, optimizer: Any, step: int) -> float:
        """Write this step's values into every param group; return the lr."""
        lr = self.lr(step)
        epoch = step // self.steps_per_epoch
        for group in optimizer.param_groups:
            group["lr"] = lr
            for key, table in self.hyper_tables.items():
                group[key] = piecewise(table, epoch)
        return lr
