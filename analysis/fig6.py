"""SINGD paper, Fig. 6: transformers (Compact-ViT, Swin, GC-ViT, HDVT) on CIFAR-100 and
ImageWoof-10 in BFP16 -- test error vs epoch, one panel per (model, dataset), one line per
method, band over seeds.

    python -m analysis.fig6 --runs multirun/fig6/cpu --tag cpu

Writes ``results/figures/fig6[-tag].{png,pdf}`` and ``results/tables/fig6[-tag]-final.*``,
``fig6[-tag]-runs.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from analysis.outputs import RESULTS, Output
from analysis.report import cli, curve_report, load_runs

TITLE = "SINGD Fig. 6: transformers, BFP16"


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    wandb: str | None = None,
) -> Output:
    """Build Fig. 6 from the runs found under ``runs`` (or W&B ``entity/project``)."""
    frame, metrics = load_runs(runs, wandb)
    return curve_report(
        "fig6", frame, metrics, tag=tag, out=out, title=TITLE, keys=("model", "data"), ncols=4
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    return cli(make, __doc__.splitlines()[0], "fig6", argv)


if __name__ == "__main__":
    raise SystemExit(main())
