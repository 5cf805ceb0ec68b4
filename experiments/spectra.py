"""Save the eigen-spectra of Kronecker factors during training.

The randomized K-FAC paper (Puiu, Sec. 3, Fig. 1) saves the eigenvalues of every EA
Kronecker factor "every 30 steps if k < 300, and every 300 steps otherwise". The trainer
calls :meth:`SpectrumRecorder.after_step` after each optimizer step when the config has a
``trainer.spectra`` node::

    trainer:
      spectra: {every_early: 30, until: 300, every_late: 300}

Step ``k`` (optimizer steps done so far) is saved when ``k % every_early == 0`` for
``k < until`` and when ``k % every_late == 0`` for ``k >= until``, as
``<run dir>/spectra/step_<k>.pt``: ``{layer: {"A": eigenvalues, "G": eigenvalues}}``, plain
CPU tensors from the optimizer's ``factor_spectra()`` (KFAC family), readable with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from experiments.config import ConfigError

SPECTRA_DIR = "spectra"
_KEYS = ("every_early", "until", "every_late")


@dataclass(frozen=True)
class SpectrumSchedule:
    """When to save: every ``every_early`` steps before ``until``, then every ``every_late``."""

    every_early: int = 30
    until: int = 300
    every_late: int = 300

    def due(self, step: int) -> bool:
        """Whether the spectra after optimizer step ``step`` (1-based count) are saved."""
        period = self.every_early if step < self.until else self.every_late
        return step > 0 and step % period == 0


def parse_schedule(node: Any) -> SpectrumSchedule:
    """Check a ``trainer.spectra`` node (mapping) and turn it into a schedule.

    Raises:
        ConfigError: For an unknown key or a value that is not a positive integer.
    """
    values = dict(node)
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"trainer.spectra.{unknown[0]}",
            values[unknown[0]],
            f"unknown key; allowed keys are {list(_KEYS)}",
        )
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"trainer.spectra.{key}", value, "must be an integer >= 1")
    return SpectrumSchedule(**values)


class SpectrumRecorder:
    """Writes ``spectra/step_<k>.pt`` files for one run.

    Args:
        schedule: When to save.
        directory: The run directory (``spectra/`` is created inside).
        optimizer: An optimizer with ``factor_spectra()``.
        enabled: False on non-zero ranks of a distributed run (nothing is written).
    """

    def __init__(
        self,
        schedule: SpectrumSchedule,
        directory: str | Path,
        optimizer: torch.optim.Optimizer,
        enabled: bool = True,
    ) -> None:
        self.schedule = schedule
        self.directory = Path(directory) / SPECTRA_DIR
        self.optimizer = optimizer
        self.enabled = enabled

    @classmethod
    def from_config(
        cls, node: Any, run_dir: str | Path, optimizer: torch.optim.Optimizer, enabled: bool = True
    ) -> SpectrumRecorder | None:
        """A recorder for a ``trainer.spectra`` node, or ``None`` when the node is absent/null.

        Raises:
            ConfigError: For a bad node or an optimizer without ``factor_spectra()``.
        """
        if node is None:
            return None
        schedule = parse_schedule(node)
        if not callable(getattr(optimizer, "factor_spectra", None)):
            raise ConfigError(
                "trainer.spectra",
                dict(node),
                f"needs an optimizer with factor_spectra() (KFAC family), "
                f"not {type(optimizer).__name__}",
            )
        return cls(schedule, run_dir, optimizer, enabled)

    def after_step(self, step: int) -> Path | None:
        """Save the spectra after optimizer step ``step`` if it is due; return the file."""
        if not self.enabled or not self.schedule.due(step):
            return None
        spectra = self.optimizer.factor_spectra()
        plain = {
            str(layer): {
                name: values.detach().float().cpu().clone() for name, values in factors.items()
            }
            for layer, factors in spectra.items()
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"step_{step}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(plain, tmp)
        tmp.replace(path)
        return path


def load_spectra(run_dir: str | Path) -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """All saved spectra of a run, ``{step: {layer: {"A": ..., "G": ...}}}``, sorted by step."""
    directory = Path(run_dir) / SPECTRA_DIR
    found = {}
    for path in directory.glob("step_*.pt"):
        step = path.stem.removeprefix("step_")
        if step.isdigit():
            found[int(step)] = torch.load(path, map_location="cpu", weights_only=True)
    return dict(sorted(found.items()))
