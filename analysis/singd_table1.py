"""SINGD paper, Table 1: the structures of the Kronecker factors and their projection maps.

    python -m analysis.singd_table1 [--out results]

For each of the ten ``optim.STRUCTURES``: the projection map of Table 1 (``Pi(m)`` of a
symmetric ``m``), the stored entries for d = 16 and d = 512 (Table 3's memory), whether
products stay in the class, and the largest difference between ``from_dense`` and an
independent NumPy version of the map (:func:`analysis.structures.reference_projection`).
Writes ``results/tables/singd_table1.{md,csv,tex}`` and ``results/figures/singd_table1.{png,pdf}``
(``m`` and ``Pi(m)`` for every structure).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from analysis.outputs import RESULTS, Output, save_figure, write_table
from analysis.structures import (
    ILLUSTRATION_OPTIONS,
    PRETTY,
    heatmap,
    random_factor,
    random_symmetric,
    reference_projection,
)
from optim import STRUCTURES

PROJECTION_MAPS = {
    "dense": "m",
    "diagonal": "Diag(m)",
    "block_diagonal": "blockdiag(M_11, ..., M_qq), blocks of size k",
    "hierarchical": "[[M11, 2 M12, 2 M13], [0, Diag(M22), 0], [0, 2 M32, M33]]",
    "tril": "m_ii on the diagonal, 2 m_ij below it",
    "triu": "m_ii on the diagonal, 2 m_ij above it",
    "triu_low_rank": "[[M11, 2 M12], [0, Diag(M22)]], M11 of size k",
    "tril_low_rank": "[[M11, 0], [2 M21, Diag(M22)]], M11 of size k",
    "triu_toeplitz": "b_0, 2 b_1, 2 b_2, ... on the diagonals above, b_j = mean of diagonal j",
    "tril_toeplitz": "b_0, 2 b_1, 2 b_2, ... on the diagonals below, b_j = mean of diagonal j",
}
MEMORY = {
    "dense": "O(d^2)",
    "diagonal": "O(d)",
    "block_diagonal": "O(kd)",
    "hierarchical": "O(kd)",
    "tril": "O(d^2)",
    "triu": "O(d^2)",
    "triu_low_rank": "O(kd)",
    "tril_low_rank": "O(kd)",
    "triu_toeplitz": "O(d)",
    "tril_toeplitz": "O(d)",
}


def table(d: int = 12, seed: int = 0) -> pd.DataFrame:
    """One row per structure (see the module docstring)."""
    rows = []
    m = random_symmetric(d, seed)
    for name, cls in STRUCTURES.items():
        opts = ILLUSTRATION_OPTIONS.get(name, {})
        ours = cls.from_dense(torch.from_numpy(m), **opts).to_dense().numpy()
        first, second = (
            random_factor(name, d, seed, **opts),
            random_factor(name, d, seed + 1, **opts),
        )
        product = first @ second
        closed = isinstance(product, cls) and np.allclose(
            product.to_dense().numpy(), first.to_dense().numpy() @ second.to_dense().numpy()
        )
        rows.append(
            {
                "structure": name,
                "options": ", ".join(f"{k}={v}" for k, v in cls.option_defaults.items()) or "-",
                "projection map": PROJECTION_MAPS.get(name, "?"),
                "stored (d=16)": cls.eye(16).numel(),
                "stored (d=512)": cls.eye(512).numel(),
                "memory": MEMORY.get(name, "?"),
                "closed under @": "yes" if closed else "no",
                f"max |Pi - reference| (d={d})": float(
                    np.max(np.abs(ours - reference_projection(name, m, **opts)))
                ),
            }
        )
    return pd.DataFrame(rows)


def projection_figure(d: int = 12, seed: int = 0) -> Figure:
    """``m`` and ``Pi(m)`` of every structure as heat maps (white = structural zero)."""
    names = list(STRUCTURES)
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    axes = fig.subplots(2, 6).ravel()
    m = random_symmetric(d, seed)
    heatmap(axes[0], m, "symmetric m")
    for ax, name in zip(axes[1:], names, strict=False):
        opts = ILLUSTRATION_OPTIONS.get(name, {})
        projected = STRUCTURES[name].from_dense(torch.from_numpy(m), **opts).to_dense().numpy()
        heatmap(ax, projected, f"{PRETTY.get(name, name)}")
    for ax in axes[1 + len(names) :]:
        ax.set_visible(False)
    fig.suptitle("SINGD Table 1: projection maps Pi(m) onto the structured subspaces", fontsize=10)
    return fig


def make(out: str | Path = RESULTS) -> Output:
    """Write the table and the projection figure."""
    frame = table()
    fig = projection_figure()
    output = Output(figure=fig, tables={"table1": frame})
    output.files += write_table(
        frame, "singd_table1", out, caption="SINGD Table 1: structures, projection maps, storage"
    )
    output.files += save_figure(fig, "singd_table1", out)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    for path in make(args.out).files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
