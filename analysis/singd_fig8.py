"""SINGD paper, Fig. 8: rank-one triangular factors K (``triu_low_rank``/``tril_low_rank``
with k = 1) impose a low-rank-plus-diagonal structure on K K^T or on its inverse.

    python -m analysis.singd_fig8 [--out results]

Writes ``results/figures/singd_fig8.{png,pdf}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analysis.outputs import RESULTS, Output, save_figure
from analysis.structures import structure_figure

TITLE = "SINGD Fig. 8: rank-one triangular K, K K^T and (K K^T)^-1"
NAMES = ("triu_low_rank", "tril_low_rank")


def make(out: str | Path = RESULTS, d: int = 12, seed: int = 0) -> Output:
    """Write the figure."""
    fig = structure_figure(
        NAMES, options={name: {"k": 1} for name in NAMES}, d=d, seed=seed, title=TITLE
    )
    return Output(figure=fig, files=save_figure(fig, "singd_fig8", out))


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
