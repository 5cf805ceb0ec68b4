"""Randomized K-FACs paper, Fig. 2: test accuracy and test loss of K-FAC, RS-KFAC, SRE-KFAC
(and SENG) on CIFAR-10 / VGG16_bn, against epochs and against training time; one line per
solver, band over the runs.

    python -m analysis.rkfac_fig2 --runs multirun/rkfac/paper --tag paper

Writes ``results/figures/rkfac_fig2[-tag].{png,pdf}`` (the runs are those of Table 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.collect import load
from analysis.curves import (
    SYNTHETIC_NOTE,
    add_note,
    build_curves,
    panel_title,
    plot_curves,
    status_note,
)
from analysis.outputs import RESULTS, Output, output_name, save_figure
from analysis.report import cli

TITLE = "Randomized K-FACs Fig. 2"
PANELS = (
    ("test_accuracy", "epoch", "test accuracy (%)", "epoch"),
    ("test_accuracy", "time_s", "test accuracy (%)", "training time (s)"),
    ("test_loss", "epoch", "test loss", "epoch"),
    ("test_loss", "time_s", "test loss", "training time (s)"),
)


def build_figure(runs: pd.DataFrame, metrics: pd.DataFrame) -> Figure:
    """The 2 x 2 panels (accuracy/loss against epoch/time)."""
    metrics = metrics.copy()
    if "test_error" in metrics:
        metrics["test_accuracy"] = 1.0 - metrics["test_error"]
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    model = runs["model"].dropna().iloc[0] if len(runs) else None
    data = runs["data"].dropna().iloc[0] if len(runs) else None
    synthetic = bool(runs["synthetic"].any()) if len(runs) else False
    for ax, (y, x, ylabel, xlabel) in zip(axes, PANELS, strict=True):
        scale = 100.0 if y == "test_accuracy" else 1.0
        curves = build_curves(runs, metrics, y=y, x=x, scale=scale) if len(runs) else []
        plot_curves(
            ax, curves, title=panel_title(model, data, synthetic), xlabel=xlabel, ylabel=ylabel
        )
    fig.suptitle(TITLE + (f" ({SYNTHETIC_NOTE})" if synthetic else ""), fontsize=11)
    add_note(fig, runs)
    return fig


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    wandb: str | None = None,
) -> Output:
    """Build Fig. 2 from the runs under ``runs`` (or W&B ``entity/project``)."""
    frame, metrics = load(runs, wandb)
    fig = build_figure(frame, metrics)
    output = Output(figure=fig)
    output.files += save_figure(fig, output_name("rkfac_fig2", tag), out)
    if frame.empty:
        output.notes.append("no runs found")
    elif status_note(frame):
        output.notes.append(status_note(frame))
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    return cli(make, __doc__.splitlines()[0], "rkfac", argv)


if __name__ == "__main__":
    raise SystemExit(main())
