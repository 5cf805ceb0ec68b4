"""Cora citation graph (PyG ``Planetoid``, public split) from ``data.root/Cora/raw``.

torch_geometric is imported here only, so it loads when a graph dataset is built.
"""

from __future__ import annotations

from pathlib import Path

from torch_geometric.datasets import Planetoid
from torch_geometric.transforms import NormalizeFeatures

from data.bundle import DataBundle
from data.common import missing_paths
from data.errors import missing_files_error

RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
NUM_FEATURES, NUM_CLASSES = 1433, 7


def cora_raw_files(root: Path) -> list[Path]:
    """The Planetoid files PyG reads for Cora."""
    raw = Path(root) / "Cora" / "raw"
    return [raw / f"ind.cora.{suffix}" for suffix in RAW_SUFFIXES]


def load_cora(
    root: Path,
    image_size: int | None,
    channels: int | None,
    download: bool,
    augment: bool,
    seed: int,
    normalize_features: bool = True,
) -> DataBundle:
    """Build ``cora`` (2,708 nodes, 1,433 features, 7 classes; 140 / 500 / 1,000 split).

    Args:
        root: ``data.root``; PyG writes its processed cache to ``root/Cora/processed``.
        image_size: Unused (graph).
        channels: Unused (graph).
        download: Let PyG download the raw files when they are missing.
        augment: Unused (graph).
        seed: Unused (the public split is fixed).
        normalize_features: Row-normalise the bag-of-words features (as Kipf & Welling).
    """
    del image_size, channels, augment, seed
    files = cora_raw_files(root)
    missing = missing_paths(files)
    if missing and not download:
        raise missing_files_error(
            "cora",
            files[0].parent,
            missing,
            "No offline copy exists in this suite: download them where internet exists with "
            f"data.download=true (or `python -m data.fetch cora --root {root} --download`), "
            f"or copy the Planetoid files (github.com/kimiyoung/planetoid, data/) to "
            f"{files[0].parent}.",
        )
    transform = NormalizeFeatures() if normalize_features else None
    try:
        graph = Planetoid(str(root), "Cora", transform=transform)[0]
    except Exception as error:  # network errors come in many types
        if not missing:
            raise
        print(f"data.download=true: downloading Cora failed: {error}")
        raise missing_files_error(
            "cora",
            files[0].parent,
            missing_paths(files),
            "The download failed; copy the Planetoid files there.",
        ) from error
    return DataBundle(
        name="cora",
        kind="graph",
        train=None,
        test=None,
        graph=graph,
        num_classes=int(graph.y.max()) + 1,
        input_shape=(graph.num_features,),
        note=(
            f"cora: {graph.num_nodes} nodes, {int(graph.train_mask.sum())} train / "
            f"{int(graph.val_mask.sum())} val / {int(graph.test_mask.sum())} test "
            f"from {files[0].parent}"
        ),
    )
