"""Config checks for the training entrypoint: one clear line, exit code 2, before training.

Everything a user can get wrong in ``conf/`` or on the command line is checked here,
after Hydra composed the config and before any data is loaded or file is written:
:func:`check_group_overrides` runs on the raw command line (Hydra's own message for an
unknown group option is several lines and exits 1), :func:`validate_config` on the
composed config. Both raise :class:`ConfigError`, whose message names the key, the
bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("data", "model", "optimizer", "trainer", "logger", "scale", "experiment", "search")
OPTIMIZER_FAMILIES = ("sgd", "adamw", "kfac", "singd", "seng")
# Keys that do not change what a run computes (excluded from the run-directory hash).
_NOT_IDENTITY = {"resume", "skip_if_done", "num_workers", "eval_batch_size"}


class ConfigError(ValueError):
    """A bad config value: ``key=value is invalid: allowed ...``."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is invalid: {allowed}")
        self.key = key

    @classmethod
    def wrap(cls, prefix: str, error: Exception) -> ConfigError:
        """A ConfigError carrying another error's message, prefixed by the config node."""
        wrapped = cls.__new__(cls)
        ValueError.__init__(wrapped, f"{prefix}: {error}")
        wrapped.key = prefix
        return wrapped


def group_options(group: str) -> list[str]:
    """Names of the options of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_overrides(argv: Sequence[str]) -> None:
    """Check ``group=option`` command-line overrides against the files in ``conf/``.

    Args:
        argv: Command-line arguments (without the program name).

    Raises:
        ConfigError: For an unknown option of a known group.
    """
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "," in value or value in ("null", ""):
            continue
        if value not in group_options(key):
            raise ConfigError(key, value, f"allowed options are {group_options(key)}")


def config_hash(*nodes: Any) -> str:
    """Short stable hash of config nodes (the ``ngd_hash`` resolver).

    Args:
        *nodes: Config nodes (DictConfig, ListConfig or plain values).

    Returns:
        Eight hex digits.
    """
    plain = [_plain(node) for node in nodes]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k not in _NOT_IDENTITY}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def register_resolvers() -> None:
    """Register the OmegaConf resolvers used by ``conf/`` (idempotent)."""
    if not OmegaConf.has_resolver("ngd_hash"):
        OmegaConf.register_new_resolver("ngd_hash", config_hash)


def _number(
    cfg: DictConfig,
    key: str,
    low: float,
    *,
    integer: bool = False,
    low_open: bool = False,
    high: float | None = None,
    optional: bool = False,
) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    bound = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if (
        isinstance(value, bool)
        or not ok_type
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(key, value, f"must be {kind} {bound}")
    if (value <= low if low_open else value < low) or (high is not None and value > high):
        raise ConfigError(key, value, f"must be {kind} {bound}")


def _choice(cfg: DictConfig, key: str, allowed: Sequence[Any]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {list(allowed)}")


def validate_config(cfg: DictConfig) -> None:
    """Check every value the entrypoint uses; raise :class:`ConfigError` on the first bad one.

    Args:
        cfg: The composed config.
    """
    _choice(cfg, "trainer.precision", ["fp32", "bf16"])
    _choice(cfg, "trainer.device", ["auto", "cpu", "cuda"])
    _number(cfg, "trainer.epochs", 1, integer=True)
    _number(cfg, "trainer.max_epochs", 1, integer=True, optional=True)
    _number(cfg, "trainer.max_steps", 1, integer=True, optional=True)
    _number(cfg, "trainer.batch_size", 1, integer=True)
    _number(cfg, "trainer.eval_batch_size", 1, integer=True)
    _number(cfg, "trainer.eval_every_steps", 1, integer=True, optional=True)
    _number(cfg, "trainer.seed", 0, integer=True)
    _number(cfg, "trainer.num_workers", 0, integer=True)
    _number(cfg, "trainer.label_smoothing", 0.0, high=1.0)
    _choice(cfg, "trainer.schedule.name", ["cosine", "step", "constant", "piecewise", "poly"])
    _number(cfg, "trainer.schedule.poly_epochs", 0.0, low_open=True)
    _number(cfg, "trainer.schedule.poly_power", 0.0)
    _number(cfg, "trainer.schedule.warmup_epochs", 0, integer=True)
    _number(cfg, "trainer.schedule.step_epochs", 1, integer=True)
    _number(cfg, "trainer.schedule.gamma", 0.0, low_open=True)
    if cfg.trainer.schedule.name == "piecewise" and not cfg.trainer.schedule.table:
        raise ConfigError(
            "trainer.schedule.table", None, "schedule 'piecewise' needs a table [[epoch, lr], ...]"
        )
    for key in ("deterministic", "resume", "skip_if_done", "distributed", "checkpoint"):
        _choice(cfg, f"trainer.{key}", [True, False])
    _choice(cfg, "logger.name", ["none", "wandb"])
    if cfg.logger.name == "wandb":
        _choice(cfg, "logger.mode", ["offline", "online", "disabled"])
    _choice(cfg, "optimizer.family", OPTIMIZER_FAMILIES)
    _number(cfg, "optimizer.lr", 0.0)
    if OmegaConf.select(cfg, "optimizer.weight_decay") is not None:
        _number(cfg, "optimizer.weight_decay", 0.0)
    if OmegaConf.select(cfg, "optimizer.momentum") is not None:
        _number(cfg, "optimizer.momentum", 0.0, high=1.0)
    if OmegaConf.select(cfg, "optimizer.damping") is not None:
        _number(cfg, "optimizer.damping", 0.0)
    if OmegaConf.select(cfg, "optimizer.T") is not None:
        _number(cfg, "optimizer.T", 1, integer=True)
    if not isinstance(cfg.data.name, str):
        raise ConfigError("data.name", cfg.data.name, "must be a dataset name")
    if not isinstance(cfg.model.name, str):
        raise ConfigError("model.name", cfg.model.name, "must be a model name")
