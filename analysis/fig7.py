"""SINGD paper, Fig. 7: CNNs (VGG, ConvMixer, Rep-ViT) on ImageWoof-10 and CIFAR-100 in
BFP16 and the GNN on Cora in FP32 -- test error vs epoch, one panel per (model, dataset),
one line per method, band over seeds.

    python -m analysis.fig7 --runs multirun/fig7/cpu --tag cpu

Writes ``results/figures/fig7[-tag].{png,pdf}`` and ``results/tables/fig7[-tag]-final.*``,
``fig7[-tag]-runs.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from analysis.outputs import RESULTS, Output
from analysis.report import cli, curve_report, load_runs

TITLE = "SINGD Fig. 7: CNNs (BFP16) and GNN (FP32)"


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    wandb: str | None = None,
) -> Output:
    """Build Fig. 7 from the runs found under ``runs`` (or W&B ``entity/project``)."""
    frame, metrics = load_runs(runs, wandb)
    return curve_report(
        "fig7", frame, metrics, tag=tag, out=out, title=TITLE, keys=("model", "data"), ncols=4
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    return cli(make, __doc__.splitlines()[0], "fig7", argv)


if __name__ == "__main__":
    raise SystemExit(main())
