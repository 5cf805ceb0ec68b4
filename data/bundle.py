"""The value returned by :func:`data.build_data`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """A dataset ready for training, with the facts a model factory needs.

    Attributes:
        name: The dataset actually used (``"synthetic"`` when a stand-in replaced
            the requested one).
        kind: ``"image"`` or ``"graph"``.
        train: Training split returning ``(x, y)``: ``x`` float tensor, ``y`` int64
            scalar tensor. ``None`` for graphs.
        test: Test split, same format. ``None`` for graphs.
        graph: PyG ``Data`` with ``x, edge_index, y, train_mask, val_mask,
            test_mask`` for graphs; ``None`` for images.
        num_classes: Number of classes.
        input_shape: ``(C, H, W)`` for images, ``(num_features,)`` for graphs.
        synthetic: True when synthetic data stands in for real data.
        note: Human-readable provenance, e.g. why a synthetic stand-in is used.
        requested: The dataset name that was asked for (equals ``name`` unless
            a synthetic stand-in is used).
    """

    name: str
    kind: str
    train: Dataset | None
    test: Dataset | None
    graph: Any | None
    num_classes: int
    input_shape: tuple[int, ...]
    synthetic: bool = False
    note: str = ""
    requested: str = ""

    def __post_init__(self) -> None:
        if not self.requested:
            self.requested = self.name
