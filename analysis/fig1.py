"""SINGD paper, Fig. 1: VGG on CIFAR-100 -- test error vs epoch in FP32 (left) and BFP16
(center), one line per method with a band over seeds, and memory per method (right) with
AdamW's level dashed.

    python -m analysis.fig1 --runs multirun/fig1/cpu --tag cpu

Memory: peak GPU memory when every run ran on CUDA; on CPU the process's peak RSS is shared by
all runs of a multirun, so the bars show the optimizer state instead (the title says which).
Writes ``results/figures/fig1[-tag].{png,pdf}`` and ``results/tables/fig1[-tag]-final.*``,
``-memory.*`` and ``-runs.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import style
from analysis.curves import (
    SYNTHETIC_NOTE,
    add_note,
    build_curves,
    panel_title,
    plot_curves,
    status_note,
)
from analysis.outputs import RESULTS, Output, output_name, save_figure, write_table
from analysis.report import cli, load_runs, write_run_tables
from analysis.summaries import numeric

TITLE = "SINGD Fig. 1"
MIB = 2.0**20
PRECISIONS = ("fp32", "bf16")


def memory_metric(runs: pd.DataFrame) -> tuple[str, str]:
    """``(column, axis label)``: peak memory on CUDA, optimizer state otherwise."""
    devices = runs.get("device", pd.Series(dtype=str)).dropna().astype(str)
    on_gpu = len(devices) > 0 and not devices.str.startswith("cpu").any()
    if on_gpu and "peak_memory_bytes" in runs:
        return "peak_memory_bytes", "peak GPU memory (MiB)"
    return "optimizer_state_bytes", "optimizer state (MiB)"


def memory_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean peak memory and optimizer state (MiB) per method and precision, with the chosen
    metric's ratio to AdamW's in the same precision."""
    metric, _ = memory_metric(runs)
    rows = []
    measured = runs[runs["status"] != "failed"]
    for (method, precision), group in measured.groupby(["method", "precision"]):
        rows.append(
            {
                "method": method,
                "precision": precision,
                "runs": len(group),
                "peak_memory_mib": numeric(group, "peak_memory_bytes").mean() / MIB,
                "optimizer_state_mib": numeric(group, "optimizer_state_bytes").mean() / MIB,
                "metric": metric,
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["method", "precision", "runs", "peak_memory_mib", "optimizer_state_mib", "metric"],
    )
    column = "peak_memory_mib" if metric == "peak_memory_bytes" else "optimizer_state_mib"
    adamw = table[table["method"] == "adamw"].set_index("precision")[column]
    table["ratio_to_adamw"] = [
        row[column] / adamw[row["precision"]]
        if row["precision"] in adamw and adamw[row["precision"]]
        else np.nan
        for _, row in table.iterrows()
    ]
    order = table.apply(
        lambda r: (
            style.sort_key("method", r["method"]),
            style.sort_key("precision", r["precision"]),
        ),
        axis=1,
    )
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")] if len(table) else table


def plot_memory(ax: Axes, table: pd.DataFrame, ylabel: str) -> None:
    """Grouped bars (one group per method, one bar per precision); AdamW's level dashed."""
    column = "peak_memory_mib" if ylabel.startswith("peak") else "optimizer_state_mib"
    methods = list(dict.fromkeys(table["method"]))
    precisions = [p for p in PRECISIONS if p in set(table["precision"])]
    width = 0.8 / max(1, len(precisions))
    shades = {"fp32": 1.0, "bf16": 0.55}
    for j, precision in enumerate(precisions):
        rows = table[table["precision"] == precision].set_index("method")
        values = [rows[column].get(m, np.nan) for m in methods]
        positions = np.arange(len(methods)) + (j - (len(precisions) - 1) / 2) * width
        ax.bar(
            positions,
            values,
            width,
            color=[style.color(m) for m in methods],
            alpha=shades.get(precision, 0.8),
            edgecolor="black",
            lw=0.5,
            label=style.label("precision", precision),
            hatch=None if precision == "fp32" else "//",
        )
        if "adamw" in rows.index and np.isfinite(rows.loc["adamw", column]):
            ax.axhline(
                rows.loc["adamw", column],
                ls="--",
                color="black",
                lw=1,
                alpha=1.0 if precision == "fp32" else 0.5,
            )
    ax.set_xticks(
        np.arange(len(methods)),
        [style.label("method", m) for m in methods],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel(ylabel)
    ax.set_title("Memory (dashed: AdamW)", fontsize=10)
    if precisions:
        ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def build_figure(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """The three panels; returns the figure and the memory table."""
    fig = Figure(figsize=(13.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    model = runs["model"].dropna().iloc[0] if len(runs) else None
    data = runs["data"].dropna().iloc[0] if len(runs) else None
    for ax, precision in zip(axes[:2], PRECISIONS, strict=True):
        chosen = runs[runs["precision"] == precision] if len(runs) else runs
        synthetic = bool(chosen["synthetic"].any()) if len(chosen) else False
        curves = build_curves(chosen, metrics) if len(chosen) else []
        plot_curves(
            ax,
            curves,
            title=panel_title(model, data, synthetic, style.label("precision", precision)),
        )
        if not len(chosen):
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    table = (
        memory_table(runs)
        if len(runs)
        else memory_table(pd.DataFrame(columns=["method", "precision", "status"]))
    )
    _, ylabel = memory_metric(runs)
    plot_memory(axes[2], table, ylabel)
    synthetic_any = bool(runs["synthetic"].any()) if len(runs) else False
    fig.suptitle(TITLE + (f" ({SYNTHETIC_NOTE})" if synthetic_any else ""), fontsize=11)
    add_note(fig, runs)
    return fig, table


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    wandb: str | None = None,
) -> Output:
    """Build Fig. 1 and its tables from the runs under ``runs`` (or W&B ``entity/project``)."""
    frame, metrics = load_runs(runs, wandb)
    name = output_name("fig1", tag)
    fig, table = build_figure(frame, metrics)
    output = Output(figure=fig)
    output.files += save_figure(fig, name, out)
    output.tables["memory"] = table
    display = table.assign(
        method=table["method"].map(lambda m: style.label("method", m)),
        precision=table["precision"].map(lambda p: style.label("precision", p)),
    )
    output.files += write_table(
        table,
        f"{name}-memory",
        out,
        display=display.round(3),
        caption="SINGD Fig. 1 (right): memory per method",
    )
    write_run_tables(
        output,
        frame,
        name,
        out,
        ("model", "data", "precision"),
        "SINGD Fig. 1: test error at the end and best",
    )
    if frame.empty:
        output.notes.append("no runs found")
    elif status_note(frame):
        output.notes.append(status_note(frame))
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    return cli(make, __doc__.splitlines()[0], "fig1", argv)


if __name__ == "__main__":
    raise SystemExit(main())
