"""Seeded synthetic classification data: images/vectors and a Cora-shaped graph.

Each class has a fixed random template (smooth for images); a sample is its class
template plus Gaussian noise, so a model can learn it and its loss goes down. The
graph variant has class-specific bag-of-words features and homophilous edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from data.bundle import DataBundle

TEMPLATE_DOWNSAMPLE = 4
GRAPH_WORDS_FROM_CLASS = 8
GRAPH_WORDS_RANDOM = 10
GRAPH_HOMOPHILY = 0.8
GRAPH_TRAIN_PER_CLASS, GRAPH_VAL, GRAPH_TEST = 20, 500, 1000


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A torch generator for independent stream ``stream`` of run seed ``seed``."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _positive_int(key: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.{key}={value!r} is not allowed; expected an integer >= {minimum}")
    return int(value)


def class_templates(input_shape: Sequence[int], num_classes: int, seed: int) -> torch.Tensor:
    """One unit-RMS template per class, ``(num_classes, *input_shape)``.

    For ``(C, H, W)`` shapes with H, W >= 4 the templates are random fields at a
    quarter of the resolution upsampled bilinearly, so convolutions and pooling
    keep the signal.
    """
    generator = seeded_generator(seed, 0)
    shape = tuple(input_shape)
    if len(shape) == 3 and min(shape[1:]) >= TEMPLATE_DOWNSAMPLE:
        low = (math.ceil(side / TEMPLATE_DOWNSAMPLE) for side in shape[1:])
        coarse = torch.randn(num_classes, shape[0], *low, generator=generator)
        templates = F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)
    else:
        templates = torch.randn(num_classes, *shape, generator=generator)
    rms = templates.flatten(1).pow(2).mean(dim=1).sqrt()
    return templates / rms.view(-1, *([1] * len(shape)))


def synthetic_split(
    templates: torch.Tensor, num_samples: int, noise: float, seed: int, stream: int
) -> TensorDataset:
    """Balanced labels in a seeded random order, samples = template + noise."""
    generator = seeded_generator(seed, stream)
    num_classes = templates.shape[0]
    labels = (torch.arange(num_samples) % num_classes)[
        torch.randperm(num_samples, generator=generator)
    ]
    inputs = templates[labels] + noise * torch.randn(
        num_samples, *templates.shape[1:], generator=generator
    )
    return TensorDataset(inputs, labels.to(torch.int64))


def make_synthetic(
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    num_train: int = 512,
    num_test: int = 128,
    noise: float = 1.0,
    seed: int = 0,
    note: str = "",
) -> DataBundle:
    """Build a synthetic classification bundle (``kind="image"``).

    Args:
        input_shape: Shape of one input, e.g. ``(3, 32, 32)`` or ``(20,)``.
        num_classes: Number of classes (>= 2).
        num_train: Training samples.
        num_test: Test samples.
        noise: Standard deviation of the noise added to the unit-RMS templates.
        seed: Seed of templates and samples (same seed -> identical data).
        note: Provenance note; a default one is written when empty.

    Returns:
        The bundle, with ``synthetic=True``.
    """
    if (
        isinstance(input_shape, (str, bytes))
        or len(input_shape) == 0
        or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
            for s in input_shape
        )
    ):
        raise ValueError(
            f"data.input_shape={input_shape!r} is not allowed; expected positive integers "
            "such as [3, 32, 32]"
        )
    num_classes = _positive_int("num_classes", num_classes, 2)
    num_train = _positive_int("num_train", num_train)
    num_test = _positive_int("num_test", num_test)
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"data.noise={noise!r} is not allowed; expected a number >= 0")
    shape = tuple(int(side) for side in input_shape)
    templates = class_templates(shape, num_classes, seed)
    return DataBundle(
        name="synthetic",
        kind="image",
        train=synthetic_split(templates, num_train, float(noise), seed, 1),
        test=synthetic_split(templates, num_test, float(noise), seed, 2),
        graph=None,
        num_classes=num_classes,
        input_shape=shape,
        synthetic=True,
        note=note
        or f"synthetic: {num_train} train / {num_test} test, shape {shape}, "
        f"{num_classes} classes, noise {noise}, seed {seed}",
    )


def load_synthetic(
    root: Path,
    image_size: int | None,
    channels: int | None,
    download: bool,
    augment: bool,
    seed: int,
    input_shape: Sequence[int] | None = None,
    num_classes: int = 10,
    num_train: int = 512,
    num_test: int = 128,
    noise: float = 1.0,
) -> DataBundle:
    """Registry loader for ``synthetic``: ``input_shape`` defaults to (channels, size, size)."""
    del root, download, augment
    if input_shape is None:
        input_shape = (channels or 3, image_size or 32, image_size or 32)
    elif (channels is not None or image_size is not None) and len(input_shape) == 3:
        wanted = (
            channels or input_shape[0],
            image_size or input_shape[1],
            image_size or input_shape[2],
        )
        if tuple(input_shape) != wanted:
            raise ValueError(
                f"data.input_shape={list(input_shape)} contradicts data.channels={channels} / "
                f"data.image_size={image_size}; give one or make them agree"
            )
    return make_synthetic(input_shape, num_classes, num_train, num_test, noise, seed)


def _graph_masks(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Planetoid-like split: 20 per class train (fewer on small graphs), then val, test."""
    num_nodes = labels.numel()
    per_class = min(GRAPH_TRAIN_PER_CLASS, max(1, num_nodes // (5 * num_classes)))
    order = torch.randperm(num_nodes, generator=generator)
    train_mask = torch.zeros(num_nodes, dtype=torch.bool)
    for label in range(num_classes):
        members = order[labels[order] == label]
        train_mask[members[:per_class]] = True
    rest = order[~train_mask[order]]
    num_val = min(GRAPH_VAL, rest.numel() // 3)
    num_test = min(GRAPH_TEST, rest.numel() - num_val)
    val_mask = torch.zeros(num_nodes, dtype=torch.bool)
    test_mask = torch.zeros(num_nodes, dtype=torch.bool)
    val_mask[rest[:num_val]] = True
    test_mask[rest[num_val : num_val + num_test]] = True
    return train_mask, val_mask, test_mask


def _homophilous_edges(
    labels: torch.Tensor, avg_degree: int, generator: torch.Generator
) -> torch.Tensor:
    """Undirected edges, a fraction GRAPH_HOMOPHILY of them within a class."""
    num_nodes = labels.numel()
    draws = max(1, avg_degree // 2)
    source = torch.arange(num_nodes).repeat_interleave(draws)
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    starts = torch.cumsum(counts, 0) - counts
    source_class = labels[source]
    offset = (torch.rand(source.numel(), generator=generator) * counts[source_class]).long()
    same_class = by_class[starts[source_class] + offset]
    anywhere = torch.randint(0, num_nodes, (source.numel(),), generator=generator)
    keep_class = torch.rand(source.numel(), generator=generator) < GRAPH_HOMOPHILY
    target = torch.where(keep_class, same_class, anywhere)
    edges = torch.cat([torch.stack([source, target]), torch.stack([target, source])], dim=1)
    edges = edges[:, edges[0] != edges[1]]
    keys = torch.unique(edges[0] * num_nodes + edges[1])
    return torch.stack([keys // num_nodes, keys % num_nodes])


def make_synthetic_graph(
    num_nodes: int = 2708,
    num_features: int = 1433,
    num_classes: int = 7,
    avg_degree: int = 4,
    normalize_features: bool = True,
    seed: int = 0,
    note: str = "",
) -> DataBundle:
    """Build a Cora-shaped synthetic graph bundle (``kind="graph"``).

    Args:
        num_nodes: Nodes (Cora: 2,708).
        num_features: Bag-of-words features (Cora: 1,433); at least ``num_classes``.
        num_classes: Classes (Cora: 7).
        avg_degree: Approximate mean degree (Cora: ~3.9).
        normalize_features: Row-normalise the features as the Cora loader does.
        seed: Seed of the whole graph.
        note: Provenance note; a default one is written when empty.

    Returns:
        The bundle with a PyG ``Data`` graph and ``synthetic=True``.
    """
    from torch_geometric.data import Data

    num_classes = _positive_int("num_classes", num_classes, 2)
    num_nodes = _positive_int("num_nodes", num_nodes, 5 * num_classes)
    num_features = _positive_int("num_features", num_features, num_classes)
    avg_degree = _positive_int("avg_degree", avg_degree, 2)
    generator = seeded_generator(seed, 3)
    labels = (torch.arange(num_nodes) % num_classes)[torch.randperm(num_nodes, generator=generator)]
    words_per_class = num_features // num_classes
    signatures = torch.randperm(num_features, generator=generator)[
        : words_per_class * num_classes
    ].view(num_classes, words_per_class)
    class_words = signatures[
        labels.unsqueeze(1),
        torch.randint(0, words_per_class, (num_nodes, GRAPH_WORDS_FROM_CLASS), generator=generator),
    ]
    random_words = torch.randint(
        0, num_features, (num_nodes, GRAPH_WORDS_RANDOM), generator=generator
    )
    features = torch.zeros(num_nodes, num_features)
    rows = torch.arange(num_nodes).unsqueeze(1)
    features[rows, class_words] = 1.0
    features[rows, random_words] = 1.0
    if normalize_features:
        features = features / features.sum(dim=1, keepdim=True).clamp_min(1.0)
    train_mask, val_mask, test_mask = _graph_masks(labels, num_classes, generator)
    graph = Data(
        x=features,
        edge_index=_homophilous_edges(labels, avg_degree, generator),
        y=labels.to(torch.int64),
    )
    graph.train_mask, graph.val_mask, graph.test_mask = train_mask, val_mask, test_mask
    return DataBundle(
        name="synthetic_graph",
        kind="graph",
        train=None,
        test=None,
        graph=graph,
        num_classes=num_classes,
        input_shape=(num_features,),
        synthetic=True,
        note=note
        or f"synthetic_graph: {num_nodes} nodes, {num_features} features, "
        f"{num_classes} classes, seed {seed}",
    )


def load_synthetic_graph(
    root: Path,
    image_size: int | None,
    channels: int | None,
    download: bool,
    augment: bool,
    seed: int,
    num_nodes: int = 2708,
    num_features: int = 1433,
    num_classes: int = 7,
    avg_degree: int = 4,
    normalize_features: bool = True,
) -> DataBundle:
    """Registry loader for ``synthetic_graph`` (Cora's shapes by default)."""
    del root, image_size, channels, download, augment
    return make_synthetic_graph(
        num_nodes, num_features, num_classes, avg_degree, normalize_features, seed
    )
