"""CIFAR-style VGG with batch norm (Simonyan & Zisserman, 2014).

``vgg`` is the standard CIFAR VGG: 3x3 conv + BatchNorm + ReLU blocks, five
2x2 max-pools, then a single ``Linear`` classifier. ``vgg16_bn`` is the
variant of the Randomized K-FAC paper (Puiu, footnote 9): VGG16-bn features,
an extra 512 -> 512 ``Linear`` + ReLU + Dropout(0.5), then the classifier.
An adaptive average pool before the classifier lets both take any image side
that is a multiple of 32 (1 x 1 feature maps at 32 px). ReLUs are not in-place,
so that optimizers may hook the outputs of the conv and linear layers.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.registry import register_model
from models.validation import ImageInput, check_input_shape, resolve_options

MAX_POOL = "M"
LAYOUTS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}
"""Depth -> conv output channels, ``"M"`` for a 2x2 max-pool (configurations A, B, D, E)."""

IMAGE_INPUT = ImageInput(multiple_of=32, min_size=32, reason="five 2x2 max-pools")

VGG_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {"depth": 16, "width_multiplier": 1.0},
    "imagewoof": {"depth": 16, "width_multiplier": 1.0},
}
VGG16_BN_PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {"width_multiplier": 1.0, "dropout": 0.5},
    "imagewoof": {"width_multiplier": 1.0, "dropout": 0.5},
}


def scaled_width(channels: int, width_multiplier: float) -> int:
    """Number of channels after scaling by ``width_multiplier`` (at least 1)."""
    return max(1, round(channels * width_multiplier))


def make_features(
    in_channels: int, depth: int, width_multiplier: float
) -> tuple[nn.Sequential, int]:
    """Build the conv/BN/ReLU/max-pool feature extractor.

    Args:
        in_channels: Channels of the input image.
        depth: Number of weight layers of the full VGG (11, 13, 16 or 19).
        width_multiplier: Scale of every conv's output channels.

    Returns:
        The feature extractor and its number of output channels.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in LAYOUTS[depth]:
        if entry == MAX_POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = scaled_width(int(entry), width_multiplier)
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
        channels = out_channels
    return nn.Sequential(*layers), channels


class VGG(nn.Module):
    """VGG feature extractor, global average pool, then a classifier head.

    Args:
        features: Conv feature extractor.
        classifier: Head mapping pooled features to logits.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        """Return logits of shape ``(batch, num_classes)`` for images ``x``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``depth`` or ``width_multiplier`` is not allowed."""
    if options.get("depth", 16) not in LAYOUTS:
        raise ValueError(
            f"model.depth={options['depth']!r} is not allowed for model {name!r}; "
            f"allowed: {sorted(LAYOUTS)}"
        )
    if not options["width_multiplier"] > 0:
        raise ValueError(
            f"model.width_multiplier={options['width_multiplier']!r} is not allowed for "
            f"model {name!r}; allowed: a positive number"
        )


@register_model("vgg")
def build_vgg(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """CIFAR VGG-bn with a single ``Linear`` classifier.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` multiples of 32.
        preset: ``"cifar"`` or ``"imagewoof"`` (same architecture; sizes adapt).
        **kwargs: ``depth`` (11, 13, 16, 19; default 16), ``width_multiplier`` (default 1.0).

    Returns:
        The model.
    """
    options = resolve_options("vgg", preset, VGG_PRESETS, kwargs)
    check_options("vgg", options)
    in_channels, _, _ = check_input_shape("vgg", input_shape, IMAGE_INPUT)
    features, channels = make_features(in_channels, options["depth"], options["width_multiplier"])
    return VGG(features, nn.Linear(channels, num_classes))


@register_model("vgg16_bn")
def build_vgg16_bn(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """VGG16-bn with the Randomized K-FAC paper's extra 512 -> 512 hidden layer.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` with ``H`` and ``W`` multiples of 32.
        preset: ``"cifar"`` or ``"imagewoof"`` (same architecture; sizes adapt).
        **kwargs: ``width_multiplier`` (default 1.0), ``dropout`` (default 0.5).

    Returns:
        The model.
    """
    options = resolve_options("vgg16_bn", preset, VGG16_BN_PRESETS, kwargs)
    check_options("vgg16_bn", options)
    if not 0.0 <= options["dropout"] < 1.0:
        raise ValueError(
            f"model.dropout={options['dropout']!r} is not allowed for model 'vgg16_bn'; "
            "allowed: 0 <= dropout < 1"
        )
    in_channels, _, _ = check_input_shape("vgg16_bn", input_shape, IMAGE_INPUT)
    features, channels = make_features(in_channels, 16, options["width_multiplier"])
    classifier = nn.Sequential(
        nn.Linear(channels, channels),
        nn.ReLU(),
        nn.Dropout(options["dropout"]),
        nn.Linear(channels, num_classes),
    )
    return VGG(features, classifier)
