"""The run directory: ``config.yaml``, ``metrics.jsonl``, ``summary.json``, checkpoints.

Checkpoints hold only tensors and plain Python values (model, optimizer, RNG states,
step, epoch) and are read with ``torch.load(weights_only=True)``: resuming never
unpickles code. Secrets (``WANDB_API_KEY`` and anything else in the environment) are
never written: the saved config is the Hydra config, which reads nothing from the
environment except ``data.root``'s optional ``NGD_DATA_ROOT``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "torch-geometric",
    "hydra-core",
    "wandb",
    "numpy",
    "ngdbench",
)
_RUN_FILES = (CHECKPOINT, SUMMARY, METRICS, CONFIG)


class RunDirectory:
    """Reads and writes the files of one run.

    Args:
        path: The directory (Hydra's output directory).
        writable: False on data-parallel ranks other than 0: every write is skipped.
    """

    def __init__(self, path: str | Path, writable: bool = True) -> None:
        self.path = Path(path)
        self.writable = writable
        if writable:
            self.path.mkdir(parents=True, exist_ok=True)

    def has_run(self) -> bool:
        """Whether an earlier run already wrote its files here."""
        return any((self.path / name).exists() for name in _RUN_FILES)

    def archive_previous(self) -> Path | None:
        """Move an earlier run's files into ``previous-<time>/`` (nothing is lost)."""
        if not self.writable or not self.has_run():
            return None
        stamp = f"previous-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        target, count = self.path / stamp, 1
        while target.exists():  # archived twice within a second by this process
            target, count = self.path / f"{stamp}-{count}", count + 1
        target.mkdir()
        for name in (*_RUN_FILES, "wandb"):
            if (self.path / name).exists():
                shutil.move(str(self.path / name), str(target / name))
        return target

    def summary(self) -> dict[str, Any] | None:
        """The saved summary, if any."""
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None

    def write_config(self, cfg: DictConfig) -> None:
        """Write the resolved config."""
        if not self.writable:
            return
        (self.path / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        if not self.writable:
            return
        with open(self.path / METRICS, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All rows of ``metrics.jsonl``."""
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_step: int) -> None:
        """Drop rows logged after ``last_step`` (written after the last checkpoint)."""
        if not self.writable:
            return
        rows = [row for row in self.read_metrics() if row["step"] <= last_step]
        (self.path / METRICS).write_text("".join(json.dumps(row) + "\n" for row in rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        if not self.writable:
            return
        tmp = self.path / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(self.path / SUMMARY)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save atomically (a kill mid-write leaves the previous checkpoint intact)."""
        if not self.writable:
            return
        tmp = self.path / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path / CHECKPOINT)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint (tensors and plain values only), or ``None``."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def environment_info(device: torch.device) -> dict[str, Any]:
    """Git commit and dirty flag, package versions, device description."""
    root = Path(__file__).resolve().parent.parent
    commit, dirty = None, None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({torch.get_num_threads()} threads)"
    return {"git_commit": commit, "git_dirty": dirty, "packages": packages, "device": device_name}
