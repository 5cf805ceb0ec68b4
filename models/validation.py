"""Build-time checks shared by the model builders.

A model that cannot take the dataset's input shape, an unknown preset or an
unknown option fails here with a ``ValueError`` before any training starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PARAM_COUNT_PREFIX = "param_count_"
"""Config keys starting with this prefix document parameter counts; builders ignore them."""


@dataclass(frozen=True)
class ImageInput:
    """An image model takes ``(C, H, W)`` inputs with these properties.

    Attributes:
        multiple_of: ``H`` and ``W`` must be multiples of this.
        min_size: ``H`` and ``W`` must be at least this.
        reason: Why, in a few words (shown in the error message).
    """

    multiple_of: int = 1
    min_size: int = 1
    reason: str = ""

    def describe(self) -> str:
        """Say in words which shapes are allowed."""
        rule = f"(C, H, W) with H and W multiples of {self.multiple_of}"
        if self.min_size > self.multiple_of:
            rule += f" and at least {self.min_size}"
        return rule + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class FeatureInput:
    """A node-classification model takes ``(num_features,)`` inputs."""

    def describe(self) -> str:
        """Say in words which shapes are allowed."""
        return "(num_features,) for node features of a graph"


def input_shape_error(name: str, input_shape: Sequence[int], allowed: str) -> ValueError:
    """Build the error raised when ``name`` cannot take ``input_shape``.

    Args:
        name: Registry name of the model.
        input_shape: The rejected shape of one sample.
        allowed: What the model accepts, in words.

    Returns:
        The ``ValueError`` to raise.
    """
    return ValueError(
        f"model.name={name!r} cannot take input_shape={tuple(input_shape)}; allowed: {allowed}"
    )


def check_input_shape(
    name: str, input_shape: Sequence[int], requirements: ImageInput | FeatureInput
) -> tuple[int, ...]:
    """Check that the model ``name`` can take samples of shape ``input_shape``.

    Args:
        name: Registry name of the model (used in the message).
        input_shape: Shape of one sample, ``(C, H, W)`` or ``(num_features,)``.
        requirements: What the model accepts.

    Returns:
        ``input_shape`` as a tuple of ints.

    Raises:
        ValueError: If the shape has the wrong rank, a non-positive entry, or
            breaks ``requirements``.
    """
    shape = tuple(int(size) for size in input_shape)
    expected_rank = 3 if isinstance(requirements, ImageInput) else 1
    if len(shape) != expected_rank or any(size <= 0 for size in shape):
        raise input_shape_error(name, shape, requirements.describe())
    if isinstance(requirements, ImageInput):
        for size in shape[1:]:
            if size % requirements.multiple_of or size < requirements.min_size:
                raise input_shape_error(name, shape, requirements.describe())
    return shape


def resolve_options(
    name: str,
    preset: str,
    presets: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Merge a model's preset defaults with the caller's overrides.

    Keys starting with ``param_count_`` (documentation in the configs) are
    dropped.

    Args:
        name: Registry name of the model.
        preset: Preset to start from.
        presets: Preset name -> architecture options; every preset lists every option.
        overrides: Options that replace the preset's values.

    Returns:
        The options to build the model with.

    Raises:
        ValueError: If ``preset`` or an override key is unknown.
    """
    if preset not in presets:
        raise ValueError(
            f"model.preset={preset!r} is unknown for model {name!r}; allowed: {sorted(presets)}"
        )
    options = dict(presets[preset])
    for key, value in overrides.items():
        if key.startswith(PARAM_COUNT_PREFIX):
            continue
        if key not in options:
            raise ValueError(
                f"model.{key}={value!r} is not an option of model {name!r}; "
                f"allowed: {sorted(options)}"
            )
        options[key] = value
    return options
