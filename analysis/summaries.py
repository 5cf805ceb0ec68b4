"""Tables every figure script writes: final/best test error per method and the run list."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis import style
from analysis.outputs import mean_std

_KINDS = {"model": "model", "data": "data", "precision": "precision", "method": "method"}


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as floats (NaN where missing, all NaN when the column is absent)."""
    if column not in frame:
        return pd.Series(float("nan"), index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def final_table(
    runs: pd.DataFrame, keys: Sequence[str] = ("model", "data", "precision")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final and best test error (percent) per ``keys`` + method, over seeds.

    Returns:
        ``(numbers, display)``: numeric columns (mean, std, counts) for CSV, and
        ``mean ± std`` strings with paper names for Markdown/LaTeX. Means use the runs that
        finished (``status: ok``); diverged and failed runs are counted.
    """
    group_keys = [*keys, "method"]
    rows, shown = [], []
    if runs.empty:
        return pd.DataFrame(rows), pd.DataFrame(shown)
    order = runs[group_keys].drop_duplicates().itertuples(index=False, name=None)
    combos = sorted(
        order,
        key=lambda c: [
            style.sort_key(_KINDS.get(k, k), str(v)) for k, v in zip(group_keys, c, strict=True)
        ],
    )
    for combo in combos:
        mask = pd.Series(True, index=runs.index)
        for key, value in zip(group_keys, combo, strict=True):
            mask &= runs[key] == value
        group = runs[mask]
        ok = group[group["status"] == "ok"]
        final = numeric(ok, "final_test_error") * 100
        best = numeric(group, "best_test_error") * 100
        counts = {s: int((group["status"] == s).sum()) for s in ("ok", "diverged", "failed")}
        row = dict(zip(group_keys, combo, strict=True))
        row.update(
            runs=len(group),
            **counts,
            final_mean=final.mean(),
            final_std=final.std(ddof=1),
            best_mean=best.mean(),
            best_std=best.std(ddof=1),
            synthetic=bool(group["synthetic"].any()),
        )
        rows.append(row)
        label = {
            k.capitalize(): style.label(_KINDS.get(k, k), str(v)) if k in _KINDS else v
            for k, v in zip(group_keys, combo, strict=True)
        }
        label.update(
            {
                "Runs (ok/diverged/failed)": "/".join(
                    str(counts[s]) for s in ("ok", "diverged", "failed")
                ),
                "Final test error (%)": mean_std(final.dropna().tolist()),
                "Best test error (%)": mean_std(best.dropna().tolist()),
                "Data used": "synthetic stand-in" if row["synthetic"] else "real",
            }
        )
        shown.append(label)
    return pd.DataFrame(rows), pd.DataFrame(shown)


def run_list(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run with its status, errors, data used and notes (CSV next to each figure)."""
    columns = [
        "experiment",
        "method",
        "model",
        "data",
        "precision",
        "seed",
        "status",
        "final_test_error",
        "best_test_error",
        "epochs",
        "total_time_s",
        "synthetic",
        "notes",
        "run_dir",
    ]
    return runs.reindex(columns=columns)
