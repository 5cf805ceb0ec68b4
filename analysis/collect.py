"""Run directories (or W&B runs) -> pandas DataFrames.

    python -m analysis.collect multirun/fig1/cpu --out results/tables/fig1-runs.csv
    python -m analysis.collect --wandb ENTITY/PROJECT --out runs.csv

:func:`collect` returns two frames:

* ``runs``: one row per run -- the resolved ``config.yaml`` flattened to dotted columns
  (``optimizer.name``, ``trainer.precision``, ...), every ``summary.json`` key (``status``,
  ``final_test_error``, ...; nested ones flattened too), and short columns ``method``,
  ``model``, ``data``, ``precision``, ``seed``, ``experiment``, ``synthetic``, ``run_dir``.
  A run without ``summary.json`` (it crashed, or is still running) has ``status``
  ``failed`` and its config from Hydra's ``.hydra/config.yaml``.
* ``metrics``: one row per ``metrics.jsonl`` line with the short run columns added.

``--wandb`` (:func:`collect_wandb`) reads the same frames through ``wandb.Api()``; it needs
network access and a W&B account, so it is not covered by the offline tests.
"""

from __future__ import annotations

import argparse
import glob
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

KEY_COLUMNS = (
    "run_dir",
    "experiment",
    "method",
    "model",
    "data",
    "precision",
    "seed",
    "status",
    "synthetic",
)
_SKIP_DIRS = {".hydra", "wandb", "spectra"}


def is_run_dir(path: Path) -> bool:
    """A run directory holds ``summary.json``, ``config.yaml`` or Hydra's ``.hydra/config.yaml``."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("summary.json", "config.yaml", ".hydra/config.yaml")
    )


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories under each path (a run directory, a folder searched recursively, or a glob).

    Archived earlier runs (``previous-*`` folders inside a run directory) are skipped.
    """
    found: dict[Path, None] = {}
    for entry in paths:
        matches = [Path(p) for p in sorted(glob.glob(str(entry)))] or [Path(entry)]
        for root in matches:
            for path in _walk(root):
                found[path] = None
    return sorted(found)


def _walk(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return
    if is_run_dir(root):
        yield root
        return
    for child in sorted(root.iterdir()):
        if (
            child.is_dir()
            and child.name not in _SKIP_DIRS
            and not child.name.startswith("previous-")
        ):
            yield from _walk(child)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; lists become JSON strings (hashable columns)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            nested = flatten(value, f"{name}.")
            flat.update(nested if nested else {name: "{}"})
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (a truncated last line is ignored)."""
    file = path / "metrics.jsonl"
    rows = []
    if file.is_file():
        for line in file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_record(
    config: Mapping[str, Any], summary: Mapping[str, Any] | None, run_dir: str, n_metrics: int = 0
) -> dict[str, Any]:
    """One ``runs`` row from a config and a summary (``None``: the run did not finish)."""
    record = flatten(config)
    if summary is None:
        summary = {
            "status": "failed",
            "notes": ["no summary.json: the run crashed, was killed, or is still running"],
        }
    notes = summary.get("notes") or []
    for key, value in flatten({k: v for k, v in summary.items() if k != "notes"}).items():
        record[key] = value
    record["notes"] = "; ".join(str(n) for n in notes) if isinstance(notes, list) else str(notes)

    def pick(*keys: str) -> Any:
        for key in keys:
            if record.get(key) is not None:
                return record[key]
        return None

    record.update(
        {
            "run_dir": run_dir,
            "run_id": Path(run_dir).name,
            "experiment": pick("experiment_name"),
            "method": pick("optimizer.name", "optimizer"),
            "model": pick("model.name", "model"),
            "data": pick("data.name", "data"),
            "precision": pick("trainer.precision", "precision"),
            "seed": pick("trainer.seed", "seed"),
            "synthetic": bool(record.get("synthetic_data") or False),
            "status": record.get("status") or "failed",
            "n_metrics": n_metrics,
        }
    )
    return record


def read_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``runs`` record and the metrics rows of one run directory."""
    path = Path(path)
    config = _read_yaml(path / "config.yaml") or _read_yaml(path / ".hydra" / "config.yaml")
    summary_file = path / "summary.json"
    summary = None
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError:
            summary = None
    metrics = read_metrics(path)
    return run_record(config, summary, str(path), len(metrics)), metrics


def _frames(
    records: list[dict[str, Any]], metric_rows: list[list[dict[str, Any]]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame(records)
    rows = []
    for record, metrics in zip(records, metric_rows, strict=True):
        keys = {k: record.get(k) for k in KEY_COLUMNS}
        rows += [{**keys, **row} for row in metrics]
    metrics_frame = pd.DataFrame(rows, columns=None if rows else [*KEY_COLUMNS, "epoch", "step"])
    return runs, metrics_frame


def collect(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, metrics)`` frames of every run directory found under ``paths``."""
    records, metric_rows = [], []
    for path in find_run_dirs(paths):
        record, metrics = read_run(path)
        records.append(record)
        metric_rows.append(metrics)
    return _frames(records, metric_rows)


def collect_runs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The ``runs`` frame of :func:`collect`."""
    return collect(paths)[0]


def collect_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    """The per-row ``metrics`` frame of :func:`collect`."""
    return collect(paths)[1]


def collect_wandb(
    path: str, filters: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, metrics)`` from the W&B API, in the same layout as :func:`collect`.

    Needs network access and ``WANDB_API_KEY`` (untested offline).

    Args:
        path: ``"entity/project"``.
        filters: W&B/MongoDB-style run filters, e.g. ``{"config.experiment_name": "fig1"}``.
    """
    import wandb

    records, metric_rows = [], []
    for run in wandb.Api().runs(path, filters=filters or {}):
        raw = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        summary = {k: v for k, v in raw.items() if not str(k).startswith("_")}
        finished = "status" in summary
        record = run_record(
            dict(run.config), summary if finished else None, f"wandb:{'/'.join(run.path)}"
        )
        metrics = [
            {k: v for k, v in row.items() if not str(k).startswith("_")}
            for row in run.scan_history()
        ]
        record["n_metrics"] = len(metrics)
        records.append(record)
        metric_rows.append(metrics)
    return _frames(records, metric_rows)


def load(
    runs: Sequence[str | Path], wandb_path: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run directories, or W&B when ``wandb_path`` (``entity/project``) is given."""
    return collect_wandb(wandb_path) if wandb_path else collect(runs)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print a status count and optionally write the frames as CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["multirun", "outputs"])
    parser.add_argument("--wandb", default=None, metavar="ENTITY/PROJECT")
    parser.add_argument("--out", default=None, help="CSV of the runs frame")
    parser.add_argument("--metrics-out", default=None, help="CSV of the metrics frame")
    args = parser.parse_args(argv)
    runs, metrics = load(args.paths, args.wandb)
    if runs.empty:
        print(f"no runs found under {args.paths}")
        return 1
    counts = runs["status"].value_counts().to_dict()
    print(f"{len(runs)} runs, {len(metrics)} metric rows; status: {counts}")
    for out, frame in ((args.out, runs), (args.metrics_out, metrics)):
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(out, index=False)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
