"""Small-dataset configurations of timm models: ConvMixer, RepViT, Swin and GC-ViT.

Each builder instantiates the timm model class with ``img_size``/``in_chans``
from ``input_shape`` (timm's named variants fix some options, e.g. ConvMixer's
``dim``, so the classes are built directly; weights are never downloaded).
Presets:

- ``cifar`` (3 x 32 x 32): ConvMixer-256/8 with kernel 5, patch 2 (Trockman &
  Kolter's CIFAR setting); RepViT with three stages (64, 128, 256) so that the
  last feature map is 2 x 2; Swin with patch 2, window 4, depths (2, 6, 4), heads
  (3, 6, 12), MLP ratio 2 (Lee et al., 2021, "Vision Transformer for Small-Size
  Datasets"); GC-ViT with three stages, depths (2, 2, 6), windows of side <= 4.
- ``imagewoof`` (3 x 64 x 64, also 128 x 128): ConvMixer-256/8 with kernel 7,
  patch 4; RepViT-M0.9 widths (48, 96, 192, 384); the same Swin with patch 4;
  GC-ViT-XXTiny (depths (2, 2, 6, 2)) with windows of side <= 8.

Options given as keyword arguments override the preset's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from models.registry import register_model
from models.validation import ImageInput, check_input_shape, input_shape_error, resolve_options

CONVMIXER_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {"dim": 256, "depth": 8, "kernel_size": 5, "patch_size": 2, "drop_rate": 0.0},
    "imagewoof": {"dim": 256, "depth": 8, "kernel_size": 7, "patch_size": 4, "drop_rate": 0.0},
}
REPVIT_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {"embed_dim": (64, 128, 256), "depth": (2, 2, 14), "mlp_ratio": 2},
    "imagewoof": {"embed_dim": (48, 96, 192, 384), "depth": (2, 2, 14, 2), "mlp_ratio": 2},
}
_SWIN_SMALL = {
    "embed_dim": 96,
    "depths": (2, 6, 4),
    "num_heads": (3, 6, 12),
    "window_size": 4,
    "mlp_ratio": 2.0,
    "drop_path_rate": 0.1,
}
SWIN_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {**_SWIN_SMALL, "patch_size": 2},
    "imagewoof": {**_SWIN_SMALL, "patch_size": 4},
}
GCVIT_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {
        "embed_dim": 64,
        "depths": (2, 2, 6),
        "num_heads": (2, 4, 8),
        "window_size": 4,
        "mlp_ratio": 3.0,
        "drop_path_rate": 0.0,
    },
    "imagewoof": {
        "embed_dim": 64,
        "depths": (2, 2, 6, 2),
        "num_heads": (2, 4, 8, 16),
        "window_size": 8,
        "mlp_ratio": 3.0,
        "drop_path_rate": 0.0,
    },
}


def import_timm_models() -> Any:
    """Import ``timm.models`` (after making torchvision importable)."""
    from data.torchvision_compat import import_torchvision

    import_torchvision()
    import timm.models

    return timm.models


def as_int_tuple(values: int | Sequence[int]) -> tuple[int, ...]:
    """Turn a config list (possibly an OmegaConf ``ListConfig``) into a tuple of ints."""
    if isinstance(values, int):
        return (values,)
    return tuple(int(value) for value in values)


def check_one_entry_per_stage(name: str, **per_stage: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless the per-stage options have equal lengths."""
    if len({len(values) for values in per_stage.values()}) > 1:
        described = " and ".join(f"model.{key}={values}" for key, values in per_stage.items())
        raise ValueError(
            f"{described} must have the same length (one entry per stage) for model {name!r}"
        )


@register_model("convmixer")
def build_convmixer(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """ConvMixer (Trockman & Kolter): patch embedding, then depthwise/pointwise conv blocks.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` multiples of ``patch_size``.
        preset: ``"cifar"`` or ``"imagewoof"``.
        **kwargs: ``dim``, ``depth``, ``kernel_size``, ``patch_size``, ``drop_rate``.

    Returns:
        The model.
    """
    options = resolve_options("convmixer", preset, CONVMIXER_PRESETS, kwargs)
    patch_size = int(options["patch_size"])
    requirement = ImageInput(multiple_of=patch_size, reason=f"patch_size={patch_size}")
    in_channels, _, _ = check_input_shape("convmixer", input_shape, requirement)
    timm_models = import_timm_models()
    return timm_models.convmixer.ConvMixer(
        dim=int(options["dim"]),
        depth=int(options["depth"]),
        kernel_size=int(options["kernel_size"]),
        patch_size=patch_size,
        in_chans=in_channels,
        num_classes=num_classes,
        drop_rate=float(options["drop_rate"]),
    )


@register_model("repvit")
def build_repvit(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """RepViT (Wang et al.): a mobile CNN with ViT-style token/channel mixers.

    The stem downsamples by 4 and every stage after the first by 2; the
    distillation head is off.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` multiples of ``4 * 2**(stages - 1)``.
        preset: ``"cifar"`` or ``"imagewoof"``.
        **kwargs: ``embed_dim`` and ``depth`` (one entry per stage), ``mlp_ratio`` (an int).

    Returns:
        The model.
    """
    options = resolve_options("repvit", preset, REPVIT_PRESETS, kwargs)
    embed_dim, depth = as_int_tuple(options["embed_dim"]), as_int_tuple(options["depth"])
    check_one_entry_per_stage("repvit", embed_dim=embed_dim, depth=depth)
    reduction = 4 * 2 ** (len(depth) - 1)
    requirement = ImageInput(
        multiple_of=reduction, reason=f"stem stride 4, then {len(depth) - 1} stride-2 stages"
    )
    in_channels, height, width = check_input_shape("repvit", input_shape, requirement)
    timm_models = import_timm_models()
    return timm_models.repvit.RepVit(
        in_chans=in_channels,
        img_size=(height, width),
        embed_dim=embed_dim,
        depth=depth,
        mlp_ratio=int(options["mlp_ratio"]),
        num_classes=num_classes,
        distillation=False,
    )


@register_model("swin")
def build_swin(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """Swin Transformer (Liu et al.) with shifted-window attention.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)``; each stage's token grid (``side / patch_size``
            halved per stage) must be a multiple of ``window_size`` or at most it.
        preset: ``"cifar"`` or ``"imagewoof"``.
        **kwargs: ``patch_size``, ``embed_dim``, ``depths``, ``num_heads``,
            ``window_size``, ``mlp_ratio``, ``drop_path_rate``.

    Returns:
        The model.
    """
    options = resolve_options("swin", preset, SWIN_PRESETS, kwargs)
    depths, num_heads = as_int_tuple(options["depths"]), as_int_tuple(options["num_heads"])
    check_one_entry_per_stage("swin", depths=depths, num_heads=num_heads)
    patch_size, window = int(options["patch_size"]), int(options["window_size"])
    merges = len(depths) - 1
    requirement = ImageInput(
        multiple_of=patch_size * 2**merges, reason=f"patch_size={patch_size}, {merges} merges"
    )
    in_channels, height, width = check_input_shape("swin", input_shape, requirement)
    grids = [
        side // patch_size // 2**stage for side in (height, width) for stage in range(merges + 1)
    ]
    if not all(grid <= window or grid % window == 0 for grid in grids):
        raise input_shape_error(
            "swin",
            input_shape,
            f"{requirement.describe()}, and each stage's token grid a multiple of "
            f"window_size={window} or at most {window}",
        )
    timm_models = import_timm_models()
    return timm_models.swin_transformer.SwinTransformer(
        img_size=(height, width),
        patch_size=patch_size,
        in_chans=in_channels,
        num_classes=num_classes,
        embed_dim=int(options["embed_dim"]),
        depths=depths,
        num_heads=num_heads,
        window_size=window,
        mlp_ratio=float(options["mlp_ratio"]),
        drop_path_rate=float(options["drop_path_rate"]),
    )


def is_power_of_two(value: int) -> bool:
    """Whether ``value`` is 1, 2, 4, 8, ..."""
    return value > 0 and value & (value - 1) == 0


@register_model("gcvit")
def build_gcvit(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """Global Context ViT (Hatamizadeh et al.): local window attention plus global queries.

    The stem downsamples by 4 and every stage after the first by 2. Stage ``i``
    uses windows of side ``min(window_size, feature side)``; its global query is
    the feature map max-pooled to the window, so ``feature side / window side``
    must be a power of two.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` multiples of ``4 * 2**(stages - 1)``.
        preset: ``"cifar"`` or ``"imagewoof"``.
        **kwargs: ``embed_dim``, ``depths``, ``num_heads``, ``window_size`` (largest
            window side), ``mlp_ratio``, ``drop_path_rate``.

    Returns:
        The model.
    """
    options = resolve_options("gcvit", preset, GCVIT_PRESETS, kwargs)
    depths, num_heads = as_int_tuple(options["depths"]), as_int_tuple(options["num_heads"])
    check_one_entry_per_stage("gcvit", depths=depths, num_heads=num_heads)
    window = int(options["window_size"])
    reduction = 4 * 2 ** (len(depths) - 1)
    requirement = ImageInput(
        multiple_of=reduction, reason=f"stem stride 4, then {len(depths) - 1} stride-2 stages"
    )
    in_channels, height, width = check_input_shape("gcvit", input_shape, requirement)
    grids = [(height // 4 // 2**stage, width // 4 // 2**stage) for stage in range(len(depths))]
    stage_windows = []
    for rows, cols in grids:
        win_rows, win_cols = min(window, rows), min(window, cols)
        pooling = rows // win_rows  # the global query max-pools by this factor
        if rows % win_rows or cols % win_cols or cols // win_cols != pooling:
            pooling = 0
        if not is_power_of_two(pooling):
            raise input_shape_error(
                "gcvit",
                input_shape,
                f"{requirement.describe()}, and in each stage feature side / min(window_size="
                f"{window}, feature side) the same power of 2 for H and W",
            )
        stage_windows.append((win_rows, win_cols))
    timm_models = import_timm_models()
    return timm_models.gcvit.GlobalContextVit(
        in_chans=in_channels,
        num_classes=num_classes,
        img_size=(height, width),
        window_size=tuple(stage_windows),
        embed_dim=int(options["embed_dim"]),
        depths=depths,
        num_heads=num_heads,
        mlp_ratio=float(options["mlp_ratio"]),
        drop_path_rate=float(options["drop_path_rate"]),
    )
