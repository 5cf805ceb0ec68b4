"""SINGD paper, Fig. 5: structured Kronecker factors K, their self-outer product K K^T
(approximate inverse Hessian factor) and its inverse (approximate Hessian factor), for every
structure of ``optim.STRUCTURES`` (random K = I + s Pi(M), d = 12).

    python -m analysis.singd_fig5 [--out results]

Writes ``results/figures/singd_fig5.{png,pdf}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analysis.outputs import RESULTS, Output, save_figure
from analysis.structures import structure_figure
from optim import STRUCTURES

TITLE = "SINGD Fig. 5: K, K K^T and (K K^T)^-1 per structure"


def make(out: str | Path = RESULTS, d: int = 12, seed: int = 0) -> Output:
    """Write the figure."""
    fig = structure_figure(list(STRUCTURES), d=d, seed=seed, title=TITLE)
    return Output(figure=fig, files=save_figure(fig, "singd_fig5", out))


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
