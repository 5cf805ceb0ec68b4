"""Model registry: every architecture is built by name through :func:`build_model`.

A builder is a function ``fn(num_classes, input_shape, preset="cifar", **kwargs)``
returning an ``nn.Module``; it is registered with :func:`register_model`. Configs
(``conf/model/<name>.yaml``) pick a builder by ``name`` and pass the remaining keys
as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``fn`` as the builder for ``name`` (decorator).

    Args:
        name: Registry key used by ``model.name`` in the configs.

    Returns:
        A decorator that registers and returns the builder unchanged.
    """

    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is registered twice")
        MODELS[name] = fn
        return fn

    return decorator


def build_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    preset: str = "cifar",
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: Registry key (see ``MODELS``).
        num_classes: Number of output classes.
        input_shape: Shape of one input sample, ``(C, H, W)`` for images or
            ``(num_features,)`` for graphs.
        preset: Size preset, ``"cifar"`` (32 px) or ``"imagewoof"`` (64-128 px).
        **kwargs: Architecture options that override the preset.

    Returns:
        The model.

    Raises:
        ValueError: If ``name`` is unknown, or the model cannot take ``input_shape``.
    """
    _import_builtin_models()
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[name](
        num_classes=num_classes, input_shape=tuple(input_shape), preset=preset, **kwargs
    )


def _import_builtin_models() -> None:
    """Import the modules that register the built-in models (idempotent)."""
    import importlib
    import pkgutil

    import models

    for info in pkgutil.iter_modules(models.__path__):
        if not info.name.startswith("_") and info.name not in {"registry"}:
            importlib.import_module(f"models.{info.name}")
