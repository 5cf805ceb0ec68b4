"""Build an optimizer from ``conf/optimizer/<name>.yaml``.

``family`` picks the class (sgd, adamw, kfac, singd, seng); ``name`` is the label that
appears in run names, metrics and figures (e.g. ``rs_kfac`` is family ``kfac`` with
``inverse: rsvd``). Every other key is passed to the class as a keyword argument.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.config import ConfigError

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
_DTYPE_KEYS = ("factor_dtype", "preconditioner_dtype")


def optimizer_class(family: str) -> type[torch.optim.Optimizer]:
    """The optimizer class of a family."""
    if family == "sgd":
        return torch.optim.SGD
    if family == "adamw":
        return torch.optim.AdamW
    if family == "kfac":
        from optim import KFAC

        return KFAC
    if family == "singd":
        from optim import SINGD

        return SINGD
    if family == "seng":
        from optim.seng import SENG  # type: ignore[import-not-found]

        return SENG
    raise ConfigError(
        "optimizer.family", family, "allowed values are sgd, adamw, kfac, singd, seng"
    )


def optimizer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments of the optimizer class (``name``/``family`` removed, dtypes parsed)."""
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.pop("name", None)
    kwargs.pop("family", None)
    for key in _DTYPE_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str):
            if value not in _DTYPES:
                raise ConfigError(
                    f"optimizer.{key}", value, f"allowed values are {sorted(_DTYPES)} or null"
                )
            kwargs[key] = _DTYPES[value]
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if "structures" in kwargs and isinstance(kwargs["structures"], list):
        kwargs["structures"] = tuple(kwargs["structures"])
    return kwargs


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Construct the optimizer of ``cfg`` for ``model``.

    Args:
        cfg: The ``optimizer`` config node.
        model: The (possibly DDP-wrapped) model.

    Returns:
        The optimizer.

    Raises:
        ConfigError: For an unknown key or a value the optimizer rejects.
    """
    cls = optimizer_class(cfg.family)
    kwargs = optimizer_kwargs(cfg)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        allowed = sorted(k for k in accepted if k not in ("self", "params", "model"))
        raise ConfigError(
            f"optimizer.{unknown[0]}", kwargs[unknown[0]], f"{cls.__name__} takes {allowed}"
        )
    try:
        if cfg.family in ("sgd", "adamw"):
            return cls([p for p in model.parameters() if p.requires_grad], **kwargs)
        return cls(model, **kwargs)
    except ValueError as error:
        raise ConfigError.wrap(f"optimizer={cfg.name}", error) from error
