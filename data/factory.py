"""``build_data``: validate the ``data.*`` settings, load a dataset, or stand in for it."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

import data.catalog  # noqa: F401  (fills the registry)
from data.bundle import DataBundle
from data.errors import DataNotFoundError
from data.registry import DATASETS, DatasetEntry
from data.synthetic import make_synthetic, make_synthetic_graph

MIN_IMAGE_SIZE = 8
ALLOWED_CHANNELS = (1, 3)
FALLBACK_TRAIN, FALLBACK_TEST = 512, 128


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _validate(
    name: str,
    image_size: int | None,
    channels: int | None,
    train_subset: int | None,
    test_subset: int | None,
    seed: int,
    options: dict[str, Any],
) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"data.name={name!r} is not a known dataset; allowed: {sorted(DATASETS)}")
    if image_size is not None and (not _is_int(image_size) or image_size < MIN_IMAGE_SIZE):
        raise ValueError(
            f"data.image_size={image_size!r} is not allowed; expected null or an integer "
            f">= {MIN_IMAGE_SIZE}"
        )
    if channels is not None and (not _is_int(channels) or channels not in ALLOWED_CHANNELS):
        raise ValueError(
            f"data.channels={channels!r} is not allowed; expected null or one of "
            f"{list(ALLOWED_CHANNELS)}"
        )
    for key, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(
                f"data.{key}={value!r} is not allowed; expected null or an integer >= 1"
            )
    if not _is_int(seed):
        raise ValueError(f"seed={seed!r} is not allowed; expected an integer")
    entry = DATASETS[name]
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        raise ValueError(
            f"data.{unknown[0]} is not an option of data.name={name!r}; its options are "
            f"{sorted(entry.options)} besides name, root, image_size, channels, download, "
            "augment, train_subset, test_subset"
        )
    return entry


def _first(dataset: Dataset | None, count: int | None) -> Dataset | None:
    if dataset is None or count is None or count >= len(dataset):
        return dataset
    return Subset(dataset, range(count))


def _stand_in(
    entry: DatasetEntry,
    error: DataNotFoundError,
    image_size: int | None,
    channels: int | None,
    train_subset: int | None,
    test_subset: int | None,
    seed: int,
) -> DataBundle:
    note = f"synthetic stand-in for {entry.name}: real files missing under {error.expected_dir}"
    if entry.kind == "graph":
        bundle = make_synthetic_graph(
            num_features=entry.num_features, num_classes=entry.num_classes, seed=seed, note=note
        )
    else:
        bundle = make_synthetic(
            input_shape=(channels, image_size, image_size),
            num_classes=entry.num_classes,
            num_train=train_subset or FALLBACK_TRAIN,
            num_test=test_subset or FALLBACK_TEST,
            seed=seed,
            note=note,
        )
    bundle.requested = entry.name
    return bundle


def build_data(
    name: str,
    root: str | Path = "data_root",
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = False,
    augment: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    synthetic_fallback: bool = False,
    **options: Any,
) -> DataBundle:
    """Build a dataset by name (see :data:`data.DATASETS`).

    Args:
        name: Registry key: ``mnist5k`` (default of the suite, offline), ``fashion_mnist``,
            ``cifar10``, ``cifar100``, ``imagewoof``, ``cora``, ``synthetic``,
            ``synthetic_graph``.
        root: Folder holding the real datasets (``data.root``).
        image_size: Output side of images; None uses the dataset's default (32; 64
            for imagewoof). Ignored by graphs.
        channels: 1 or 3; None uses 3. Ignored by graphs.
        download: Let the loader download missing files (needs internet).
        augment: Training augmentation (random crop + flip for CIFAR/ImageWoof,
            small shifts for the MNIST family). Test data are never augmented.
        train_subset: Keep the first N training samples (images only).
        test_subset: Keep the first N test samples (images only).
        seed: Seed of synthetic data (real splits are fixed, independent of it).
        synthetic_fallback: When the real files are missing, return synthetic data
            of the same shape and classes (``synthetic=True``) instead of raising.
        **options: Dataset-specific options, listed in ``DATASETS[name].options``.

    Returns:
        The :class:`data.DataBundle`.

    Raises:
        ValueError: For an unknown name or option or an invalid value (the message
            names the ``data.*`` key, the value and what is allowed).
        DataNotFoundError: When the real files are missing and
            ``synthetic_fallback`` is False (the message lists the expected paths
            and how to fetch them).
    """
    if not isinstance(root, (str, Path)) or not str(root):
        raise ValueError(f"data.root={root!r} is not allowed; expected a folder path")
    entry = _validate(name, image_size, channels, train_subset, test_subset, seed, options)
    if entry.kind == "image" and entry.default_image_size is not None:
        image_size = image_size or entry.default_image_size
        channels = channels or entry.default_channels
    try:
        bundle = entry(
            root=root,
            image_size=None if image_size is None else int(image_size),
            channels=None if channels is None else int(channels),
            download=download,
            augment=augment,
            seed=int(seed),
            **options,
        )
    except DataNotFoundError as error:
        if not synthetic_fallback:
            raise
        bundle = _stand_in(entry, error, image_size, channels, train_subset, test_subset, seed)
    if bundle.kind == "image":
        bundle.train = _first(bundle.train, train_subset)
        bundle.test = _first(bundle.test, test_subset)
    elif train_subset is not None or test_subset is not None:
        bundle.note += "; train_subset/test_subset do not apply to graphs (full graph used)"
    return bundle
