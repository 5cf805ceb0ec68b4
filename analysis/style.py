"""Names, colours and orderings shared by every figure and table (as the papers label them)."""

from __future__ import annotations

METHOD_LABELS: dict[str, str] = {
    "kfac": "KFAC",
    "rs_kfac": "RS-KFAC",
    "sre_kfac": "SRE-KFAC",
    "seng": "SENG",
    "ikfac": "IKFAC",
    "ingd": "INGD",
    "singd": "SINGD",
    "singd_diagonal": "SINGD-Diag",
    "singd_block_diagonal": "SINGD-BlockDiag",
    "singd_hierarchical": "SINGD-Hier",
    "singd_tril": "SINGD-Tril",
    "singd_triu": "SINGD-Triu",
    "singd_tril_low_rank": "SINGD-TrilLowRank",
    "singd_triu_low_rank": "SINGD-TriuLowRank",
    "singd_tril_toeplitz": "SINGD-TrilToeplitz",
    "singd_triu_toeplitz": "SINGD-TriuToeplitz",
    "adamw": "AdamW",
    "sgd": "SGD",
}
METHOD_ORDER = list(METHOD_LABELS)

MODEL_LABELS: dict[str, str] = {
    "vgg": "VGG",
    "vgg16_bn": "VGG16_bn",
    "convmixer": "ConvMixer",
    "repvit": "Rep-ViT",
    "cct": "Compact-ViT",
    "swin": "Swin-ViT",
    "gcvit": "GC-ViT",
    "hdvt": "HDVT",
    "gcn": "GNN",
}
MODEL_ORDER = list(MODEL_LABELS)

DATA_LABELS: dict[str, str] = {
    "cifar100": "CIFAR-100",
    "cifar10": "CIFAR-10",
    "imagewoof": "ImageWoof-10",
    "cora": "Cora",
    "mnist5k": "MNIST-5k",
    "fashion_mnist": "Fashion-MNIST",
    "synthetic": "synthetic",
}
DATA_ORDER = list(DATA_LABELS)

PRECISION_LABELS = {"fp32": "FP32", "bf16": "BFP16"}

_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
)
_FIXED_COLORS = {
    "kfac": "#d62728",
    "ikfac": "#ff7f0e",
    "ingd": "#2ca02c",
    "singd_diagonal": "#1f77b4",
    "singd_block_diagonal": "#9467bd",
    "singd_hierarchical": "#17becf",
    "adamw": "#7f7f7f",
    "sgd": "#8c564b",
    "rs_kfac": "#1f77b4",
    "sre_kfac": "#2ca02c",
    "seng": "#9467bd",
}


def label(kind: str, name: str) -> str:
    """Display name of a method, model, dataset or precision (the name itself if unknown).

    Args:
        kind: ``"method"``, ``"model"``, ``"data"`` or ``"precision"``.
        name: The config name, e.g. ``"singd_diagonal"``.
    """
    tables = {
        "method": METHOD_LABELS,
        "model": MODEL_LABELS,
        "data": DATA_LABELS,
        "precision": PRECISION_LABELS,
    }
    if kind not in tables:
        raise ValueError(f"kind={kind!r} is invalid: allowed values are {sorted(tables)}")
    return tables[kind].get(str(name), str(name))


def color(method: str) -> str:
    """A fixed colour per method (stable across figures)."""
    if method in _FIXED_COLORS:
        return _FIXED_COLORS[method]
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else sum(map(ord, method))
    return _PALETTE[index % len(_PALETTE)]


def sort_key(kind: str, name: str) -> tuple[int, str]:
    """Paper order for methods, models and datasets; unknown names last, alphabetically."""
    orders = {
        "method": METHOD_ORDER,
        "model": MODEL_ORDER,
        "data": DATA_ORDER,
        "precision": list(PRECISION_LABELS),
    }
    order = orders.get(kind, [])
    return (order.index(name) if name in order else len(order), str(name))
