"""Registry of dataset builders (name -> :class:`DatasetEntry`), like timm's model registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.bundle import DataBundle

#: Signature of a loader: ``load(root, image_size, channels, download, augment, seed, **options)``.
Loader = Callable[..., DataBundle]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: how to load it and what shapes it has.

    Calling the entry loads the dataset; the static facts (kind, classes, default
    shape) let the factory build a synthetic stand-in of the same shape without
    reading any file.

    Attributes:
        name: Registry key (``data.name``).
        kind: ``"image"`` or ``"graph"``.
        load: The loader; raises :class:`data.DataNotFoundError` when files are missing.
        num_classes: Number of classes (``None`` when set by an option).
        default_image_size: Image side used when ``image_size`` is None (images only).
        default_channels: Channels used when ``channels`` is None (images only).
        num_features: Node-feature count (graphs only).
        options: Extra keyword options the loader accepts, with their defaults.
        description: One line for listings and error messages.
    """

    name: str
    kind: str
    load: Loader
    num_classes: int | None = None
    default_image_size: int | None = None
    default_channels: int | None = None
    num_features: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __call__(self, root: str | Path = "data_root", **kwargs: Any) -> DataBundle:
        """Load the dataset (see :func:`data.build_data` for the arguments)."""
        return self.load(root=Path(root), **kwargs)


DATASETS: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add ``entry`` to :data:`DATASETS` under ``entry.name``.

    Args:
        entry: The dataset entry.

    Returns:
        The same entry.

    Raises:
        ValueError: If the name is taken already.
    """
    if entry.name in DATASETS:
        raise ValueError(f"dataset name {entry.name!r} is registered twice")
    DATASETS[entry.name] = entry
    return entry
