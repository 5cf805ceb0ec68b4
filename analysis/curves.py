"""Metric-vs-epoch panels: one line per method, a band over seeds, diverged/failed runs marked.

Runs of one method are aligned on their evaluation epochs; the line is the mean over the
runs that reached that epoch and the band spans their minimum and maximum. A diverged
run (``status: diverged``) gets an ``x`` at the epoch it diverged, at its last logged
value, and its method's legend entry says ``(diverged)`` (``(diverged k/n)`` when only
some seeds diverged). A failed run (crashed, no ``summary.json``) draws nothing; the
legend says ``(failed ...)`` and :func:`status_note` lists it under the figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import style

SYNTHETIC_NOTE = "synthetic stand-in"


@dataclass
class Curve:
    """The aggregated line of one method in one panel."""

    method: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_runs: int
    n_diverged: int = 0
    n_failed: int = 0
    diverged_points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Legend text: the method's name plus ``(diverged ...)``/``(failed ...)``."""
        text = style.label("method", self.method)
        for count, word in ((self.n_diverged, "diverged"), (self.n_failed, "failed")):
            if count:
                text += f" ({word})" if count == self.n_runs else f" ({word} {count}/{self.n_runs})"
        return text


def build_curves(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    y: str = "test_error",
    x: str = "epoch",
    scale: float = 100.0,
) -> list[Curve]:
    """One :class:`Curve` per method of ``runs`` (in paper order).

    Args:
        runs: Rows of :func:`analysis.collect.collect` for one panel.
        metrics: Their metric rows (extra rows of other runs are ignored).
        y: Metric column (``test_error``, ``test_loss``, ``test_accuracy``).
        x: ``epoch``, or a column averaged per evaluation epoch (``time_s``).
        scale: Multiplies ``y`` (100 -> percent).
    """
    metrics = metrics[metrics["run_dir"].isin(runs["run_dir"])] if len(metrics) else metrics
    curves = []
    for method in sorted(
        runs["method"].dropna().unique(), key=lambda m: style.sort_key("method", m)
    ):
        group = runs[runs["method"] == method]
        rows = metrics[metrics["run_dir"].isin(group["run_dir"])] if len(metrics) else metrics
        if len(rows) and y in rows:
            rows = rows[list(dict.fromkeys(["run_dir", "epoch", x, y]))].dropna(subset=[y]).copy()
            rows["_epoch"] = rows["epoch"].astype(float).round(4)
            stats = (
                rows.groupby("_epoch")
                .agg(x=(x, "mean"), mean=(y, "mean"), low=(y, "min"), high=(y, "max"))
                .sort_index()
            )
        else:
            stats = pd.DataFrame(columns=["x", "mean", "low", "high"])
        curve = Curve(
            method,
            stats["x"].to_numpy(float),
            stats["mean"].to_numpy(float) * scale,
            stats["low"].to_numpy(float) * scale,
            stats["high"].to_numpy(float) * scale,
            n_runs=len(group),
            n_failed=int((group["status"] == "failed").sum()),
        )
        for _, run in group[group["status"] == "diverged"].iterrows():
            curve.n_diverged += 1
            own = rows[rows["run_dir"] == run["run_dir"]] if len(rows) else rows
            last_y = float(own[y].iloc[-1]) * scale if len(own) else math.nan
            if x == "epoch":
                at = float(run.get("epochs") or (own["epoch"].iloc[-1] if len(own) else 0.0))
            else:
                at = float(own[x].iloc[-1]) if len(own) else 0.0
            curve.diverged_points.append((at, last_y))
        curves.append(curve)
    return curves


def plot_curves(
    ax: Axes,
    curves: Sequence[Curve],
    *,
    title: str,
    xlabel: str = "epoch",
    ylabel: str = "test error (%)",
    log_x: bool = False,
) -> None:
    """Draw the curves (mean line, min-max band, ``x`` at divergence) and a legend on ``ax``."""
    finite = [v for c in curves for v in c.high if np.isfinite(v)]
    top = max(finite) if finite else 100.0
    for curve in curves:
        color = style.color(curve.method)
        if len(curve.x):
            ax.plot(
                curve.x,
                curve.mean,
                color=color,
                label=curve.label,
                lw=1.6,
                marker="o" if len(curve.x) < 8 else None,
                ms=3,
            )
            if curve.n_runs - curve.n_failed > 1:
                ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.2, lw=0)
        else:
            ax.plot([], [], color=color, label=curve.label, lw=1.6, ls=":")
        for at, value in curve.diverged_points:
            ax.plot(
                [at],
                [value if np.isfinite(value) else top],
                marker="x",
                ms=9,
                mew=2,
                color=color,
                ls="none",
            )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="best")


def panel_title(model: str | None, data: str | None, synthetic: bool, extra: str = "") -> str:
    """``"VGG on CIFAR-100"`` (+ extra) + ``"(synthetic stand-in)"`` when the data was synthetic."""
    parts = []
    if model:
        parts.append(style.label("model", model))
    if data:
        parts.append(("on " if model else "") + style.label("data", data))
    title = " ".join(parts)
    if extra:
        title = f"{title}, {extra}" if title else extra
    if synthetic:
        title += f" ({SYNTHETIC_NOTE})"
    return title


def describe_run(run: pd.Series) -> str:
    """``"KFAC, VGG/CIFAR-100, BFP16, seed 0"`` for notes."""
    parts = [style.label("method", str(run.get("method")))]
    if run.get("model") is not None:
        parts.append(
            f"{style.label('model', str(run['model']))}/{style.label('data', str(run.get('data')))}"
        )
    if run.get("precision") is not None:
        parts.append(style.label("precision", str(run["precision"])))
    parts.append(f"seed {run.get('seed')}")
    return ", ".join(parts)


def status_note(runs: pd.DataFrame) -> str:
    """One line naming every diverged and failed run ("" when all finished)."""
    parts = []
    for status in ("diverged", "failed"):
        chosen = runs[runs["status"] == status]
        if len(chosen):
            names = "; ".join(describe_run(run) for _, run in chosen.iterrows())
            parts.append(f"{status} ({len(chosen)}): {names}")
    return " | ".join(parts)


def add_note(fig: Figure, runs: pd.DataFrame) -> str:
    """Write :func:`status_note` under the figure; return it."""
    note = status_note(runs)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, ha="left", va="top", wrap=True)
    return note


def panels(runs: pd.DataFrame, keys: Sequence[str] = ("model", "data")) -> list[tuple]:
    """The distinct values of ``keys`` in paper order (one panel each)."""
    if runs.empty:
        return []
    combos = runs[list(keys)].drop_duplicates().itertuples(index=False, name=None)
    kinds = [
        "model"
        if k == "model"
        else "data"
        if k == "data"
        else "precision"
        if k == "precision"
        else "method"
        for k in keys
    ]
    return sorted(
        combos,
        key=lambda c: [style.sort_key(kind, str(v)) for kind, v in zip(kinds, c, strict=True)],
    )


def select(runs: pd.DataFrame, **values: object) -> pd.DataFrame:
    """Rows of ``runs`` whose columns equal ``values``."""
    mask = pd.Series(True, index=runs.index)
    for key, value in values.items():
        mask &= runs[key] == value
    return runs[mask]


def curve_figure(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    keys: Sequence[str] = ("model", "data"),
    ncols: int = 4,
    title: str = "",
    y: str = "test_error",
) -> Figure:
    """A grid of test-error panels, one per distinct value of ``keys`` (paper order).

    Panels whose runs used synthetic data say so in their titles; diverged and failed runs
    are marked (see the module docstring) and listed under the figure.
    """
    combos = panels(runs, keys) or [tuple(None for _ in keys)]
    ncols = max(1, min(ncols, len(combos)))
    nrows = math.ceil(len(combos) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, combo in zip(axes, combos, strict=False):
        chosen = select(runs, **dict(zip(keys, combo, strict=True))) if not runs.empty else runs
        values = dict(zip(keys, combo, strict=True))
        extra = style.label("precision", values["precision"]) if values.get("precision") else ""
        synthetic = bool(chosen["synthetic"].any()) if len(chosen) else False
        plot_curves(
            ax,
            build_curves(chosen, metrics, y=y) if len(chosen) else [],
            title=panel_title(values.get("model"), values.get("data"), synthetic, extra),
        )
    for ax in axes[len(combos) :]:
        ax.set_visible(False)
    if runs.empty:
        axes[0].text(
            0.5, 0.5, "no runs found", ha="center", va="center", transform=axes[0].transAxes
        )
    synthetic_any = bool(runs["synthetic"].any()) if len(runs) else False
    if title:
        fig.suptitle(title + (f" ({SYNTHETIC_NOTE})" if synthetic_any else ""), fontsize=11)
    add_note(fig, runs)
    return fig
