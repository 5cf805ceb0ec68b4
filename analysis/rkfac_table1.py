"""Randomized K-FACs paper, Table 1: time to 90 / 91.5 / 92 % test accuracy, time per epoch,
runs reaching 92 %, and epochs to 92 %, as mean ± std per solver.

    python -m analysis.rkfac_table1 --runs multirun/rkfac/paper --tag paper
    python -m analysis.rkfac_table1 ... --targets 0.9 0.915 0.92      # the default targets

As in the paper: times are training wall time (``time_s`` of ``metrics.jsonl``, evaluation
excluded) at the first evaluation whose accuracy exceeds the target; their statistics use
only the runs that reached it; time per epoch pools every epoch of every run; the last
target is the one counted in "Runs hit" and "N_acc>". Diverged runs count as runs that did
not reach a target; failed runs (no metrics) are left out and listed in the notes.
Writes ``results/tables/rkfac_table1[-tag].{md,csv,tex}`` and ``-runs.*``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import style
from analysis.collect import load
from analysis.curves import status_note
from analysis.outputs import RESULTS, Output, mean_std, output_name, write_table
from analysis.report import default_runs
from analysis.summaries import run_list

TARGETS = (0.90, 0.915, 0.92)


def milestones(rows: pd.DataFrame, targets: Sequence[float]) -> dict[str, float]:
    """Time and epoch of the first evaluation with accuracy ``> target``, per target (NaN if never).

    Args:
        rows: One run's metric rows (``epoch``, ``time_s``, ``test_error``).
        targets: Accuracies in (0, 1).
    """
    rows = rows.sort_values("step") if "step" in rows else rows
    accuracy = 1.0 - rows["test_error"].to_numpy(float)
    result = {}
    for target in targets:
        hit = np.flatnonzero(accuracy > target)
        result[f"time_{target}"] = float(rows["time_s"].iloc[hit[0]]) if len(hit) else np.nan
        result[f"epoch_{target}"] = float(rows["epoch"].iloc[hit[0]]) if len(hit) else np.nan
    return result


def epoch_times(rows: pd.DataFrame) -> list[float]:
    """Training seconds per epoch between consecutive evaluations (from epoch 0, time 0)."""
    rows = rows.sort_values("step") if "step" in rows else rows
    epochs = np.concatenate([[0.0], rows["epoch"].to_numpy(float)])
    times = np.concatenate([[0.0], rows["time_s"].to_numpy(float)])
    spans = np.diff(epochs)
    keep = spans > 0
    return list(np.diff(times)[keep] / spans[keep])


def _percent(target: float) -> str:
    return f"{100 * target:g}%"


def table(
    runs: pd.DataFrame, metrics: pd.DataFrame, targets: Sequence[float] = TARGETS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(numbers, display)``: one row per solver, columns as the paper's Table 1."""
    if not targets:
        raise ValueError("targets=() is invalid: give at least one accuracy in (0, 1)")
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"targets={list(targets)!r} is invalid: each must be in (0, 1)")
    last = targets[-1]
    numbers, shown = [], []
    methods = (
        sorted(runs["method"].dropna().unique(), key=lambda m: style.sort_key("method", m))
        if len(runs)
        else []
    )
    for method in methods:
        group = runs[(runs["method"] == method) & (runs["n_metrics"] > 0)]
        per_run, samples = [], []
        for run_dir in group["run_dir"]:
            rows = metrics[metrics["run_dir"] == run_dir]
            per_run.append(milestones(rows, targets))
            samples += epoch_times(rows)
        frame = pd.DataFrame(per_run)
        n = len(frame)
        hits = int(frame[f"time_{last}"].notna().sum()) if n else 0
        row = {"method": method, "runs": n, f"runs_hit_{last}": hits}
        shown_row = {"Solver": style.label("method", method)}
        for target in targets:
            times = frame[f"time_{target}"].dropna() if n else pd.Series(dtype=float)
            row[f"time_{target}_mean"] = times.mean()
            row[f"time_{target}_std"] = times.std(ddof=1)
            shown_row[f"t_acc>{_percent(target)} (s)"] = mean_std(times.tolist(), 1)
        row["epoch_time_mean"] = float(np.mean(samples)) if samples else np.nan
        row["epoch_time_std"] = float(np.std(samples, ddof=1)) if len(samples) > 1 else np.nan
        shown_row["t_epoch (s)"] = mean_std(samples, 1)
        shown_row[f"Runs hit {_percent(last)}"] = f"{hits} out of {n}"
        epochs = frame[f"epoch_{last}"].dropna() if n else pd.Series(dtype=float)
        row[f"epochs_{last}_mean"] = epochs.mean()
        row[f"epochs_{last}_std"] = epochs.std(ddof=1)
        shown_row[f"N_acc>{_percent(last)}"] = mean_std(epochs.tolist(), 1)
        numbers.append(row)
        shown.append(shown_row)
    return pd.DataFrame(numbers), pd.DataFrame(shown)


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    wandb: str | None = None,
    targets: Sequence[float] = TARGETS,
) -> Output:
    """Build Table 1 from the runs under ``runs`` (or W&B ``entity/project``)."""
    frame, metrics = load(runs, wandb)
    name = output_name("rkfac_table1", tag)
    numbers, display = table(frame, metrics, targets)
    output = Output(tables={"table1": numbers})
    synthetic = " (synthetic stand-in data)" if len(frame) and frame["synthetic"].any() else ""
    model = style.label("model", frame["model"].iloc[0]) if len(frame) else "VGG16_bn"
    data = style.label("data", frame["data"].iloc[0]) if len(frame) else "CIFAR-10"
    caption = (
        f"Randomized K-FACs Table 1: {data} {model} results{synthetic}; "
        "times in seconds, mean ± std over the runs that reached the target"
    )
    output.files += write_table(numbers, name, out, display=display, caption=caption)
    output.files += write_table(
        run_list(frame),
        f"{name}-runs",
        out,
        latex=False,
        caption="Runs of Table 1 and their status",
    )
    if frame.empty:
        output.notes.append("no runs found")
    elif status_note(frame):
        output.notes.append(status_note(frame))
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT")
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS))
    args = parser.parse_args(argv)
    output = make(
        args.runs or [default_runs("rkfac", args.tag)], args.tag, args.out, args.wandb, args.targets
    )
    for path in output.files:
        print(f"wrote {path}")
    for note in output.notes:
        print(f"note: {note}")
    return 1 if "no runs found" in output.notes else 0


if __name__ == "__main__":
    raise SystemExit(main())
