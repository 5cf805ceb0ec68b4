"""Illustrations of SINGD's structured Kronecker factors (SINGD paper Table 1, Figs. 5 and 8).

A random structured factor is ``K = I + s * Pi(M)`` with ``Pi`` the structure's projection
map (``STRUCTURES[name].from_dense``) and ``M`` a random symmetric matrix; the figures show
``K``, the approximate inverse Hessian factor ``K K^T`` and the approximate Hessian factor
``(K K^T)^-1`` (NumPy's inverse, for the plot only). :func:`reference_projection` is an
independent NumPy version of Table 1's maps, used to check the optim implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optim import STRUCTURES

# Options small enough to see the pattern at the illustration size (d = 12).
ILLUSTRATION_OPTIONS: dict[str, dict[str, int]] = {
    "block_diagonal": {"k": 4},
    "hierarchical": {"k1": 3, "k2": 3},
    "triu_low_rank": {"k": 3},
    "tril_low_rank": {"k": 3},
}
PRETTY = {
    "dense": "Dense",
    "diagonal": "Diagonal",
    "block_diagonal": "Block-diagonal",
    "hierarchical": "Hierarchical",
    "tril": "Lower-triangular",
    "triu": "Upper-triangular",
    "triu_low_rank": "Rank-k upper-triangular",
    "tril_low_rank": "Rank-k lower-triangular",
    "triu_toeplitz": "Upper-triangular Toeplitz",
    "tril_toeplitz": "Lower-triangular Toeplitz",
}


def random_symmetric(d: int, seed: int = 0) -> np.ndarray:
    """A seeded symmetric ``d x d`` matrix with entries of order ``1/sqrt(d)``."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((d, d))
    return (raw + raw.T) / (2.0 * np.sqrt(d))


def random_factor(name: str, d: int = 12, seed: int = 0, scale: float = 0.5, **options: Any) -> Any:
    """``K = I + scale * Pi(M)`` as an instance of ``STRUCTURES[name]``.

    Raises:
        ValueError: For an unknown structure name.
    """
    if name not in STRUCTURES:
        raise ValueError(f"name={name!r} is invalid: allowed structures are {sorted(STRUCTURES)}")
    cls = STRUCTURES[name]
    sym = torch.from_numpy(random_symmetric(d, seed))
    return cls.eye(d, dtype=torch.float64, **options) + scale * cls.from_dense(sym, **options)


def factor_matrices(factor: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, K K^T, (K K^T)^-1)`` as dense NumPy arrays."""
    k = factor.to_dense().double().numpy()
    gram = k @ k.T
    return k, gram, np.linalg.inv(gram)


def reference_projection(name: str, m: np.ndarray, **options: int) -> np.ndarray:
    """Table 1's projection map ``Pi(m)`` of a symmetric matrix, written out in NumPy.

    Args:
        name: Structure name.
        m: Symmetric ``d x d`` matrix.
        **options: ``k`` (block_diagonal, low rank), ``k1``/``k2`` (hierarchical); the
            defaults of ``STRUCTURES[name]`` otherwise.
    """
    d = m.shape[0]
    opts = dict(STRUCTURES[name].option_defaults) if name in STRUCTURES else {}
    opts.update(options)
    out = np.zeros_like(m)
    lower, upper = np.tril(m, -1), np.triu(m, 1)
    if name == "dense":
        out = m.copy()
    elif name == "diagonal":
        out = np.diag(np.diag(m))
    elif name == "block_diagonal":
        k = opts["k"]
        for start in range(0, d, k):
            block = slice(start, min(start + k, d))
            out[block, block] = m[block, block]
    elif name in ("tril", "triu"):
        out = np.diag(np.diag(m)) + 2 * (lower if name == "tril" else upper)
    elif name in ("triu_low_rank", "tril_low_rank"):
        k = min(opts["k"], d)
        out[:k, :k] = m[:k, :k]
        out[:k, k:] = 2 * m[:k, k:]
        out[k:, k:] = np.diag(np.diag(m[k:, k:]))
        if name == "tril_low_rank":
            out = out.T
    elif name == "hierarchical":
        k1, k2 = opts["k1"], opts["k2"]
        top, bottom = slice(0, k1), slice(d - k2, d)
        middle = slice(k1, d - k2)
        out[top, top] = m[top, top]
        out[top, k1:] = 2 * m[top, k1:]
        out[middle, middle] = np.diag(np.diag(m[middle, middle]))
        out[bottom, middle] = 2 * m[bottom, middle]
        out[bottom, bottom] = m[bottom, bottom]
    elif name in ("triu_toeplitz", "tril_toeplitz"):
        for j in range(d):
            b = np.mean(np.diagonal(m, offset=j))
            value = b if j == 0 else 2 * b
            index = np.arange(d - j)
            if name == "triu_toeplitz":
                out[index, index + j] = value
            else:
                out[index + j, index] = value
    else:
        raise ValueError(f"name={name!r} is invalid: allowed structures are {sorted(STRUCTURES)}")
    return out


def heatmap(ax: Axes, matrix: np.ndarray, title: str) -> None:
    """A heat map centred at zero; exact zeros are white (the sparsity pattern)."""
    bound = float(np.max(np.abs(matrix))) or 1.0
    masked = np.ma.masked_where(matrix == 0.0, matrix)
    ax.imshow(masked, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    ax.set_facecolor("white")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def structure_figure(
    names: Sequence[str],
    options: Mapping[str, Mapping[str, int]] | None = None,
    d: int = 12,
    seed: int = 0,
    title: str = "",
) -> Figure:
    """Rows = structures; columns = ``K``, ``K K^T``, ``(K K^T)^-1``."""
    options = ILLUSTRATION_OPTIONS if options is None else options
    fig = Figure(figsize=(6.6, 2.1 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 3, squeeze=False)
    for row, name in enumerate(names):
        opts = dict(options.get(name, {}))
        matrices = factor_matrices(random_factor(name, d, seed, **opts))
        label = PRETTY.get(name, name) + (
            f" ({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else ""
        )
        for col, (matrix, what) in enumerate(
            zip(matrices, ("K", "K K^T", "(K K^T)^-1"), strict=True)
        ):
            heatmap(axes[row, col], matrix, f"{label}: {what}" if col == 0 else what)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
