"""The shared body of the test-error figure scripts (Figs. 6, 7, rkfac Fig. 2) and their CLI."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from analysis.collect import load
from analysis.curves import curve_figure, status_note
from analysis.outputs import RESULTS, Output, output_name, save_figure, standard_parser, write_table
from analysis.summaries import final_table, run_list


def write_run_tables(
    output: Output,
    runs: pd.DataFrame,
    stem: str,
    out: str | Path,
    keys: Sequence[str],
    caption: str,
) -> None:
    """Write ``<stem>-final`` (errors per method) and ``<stem>-runs`` (status of every run)."""
    numbers, display = final_table(runs, keys)
    output.tables["final"] = numbers
    output.files += write_table(numbers, f"{stem}-final", out, display=display, caption=caption)
    listing = run_list(runs)
    output.tables["runs"] = listing
    output.files += write_table(
        listing, f"{stem}-runs", out, latex=False, caption=f"Runs of {stem} and their status"
    )


def curve_report(
    stem: str,
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    tag: str | None,
    out: str | Path = RESULTS,
    title: str,
    keys: Sequence[str] = ("model", "data"),
    ncols: int = 4,
) -> Output:
    """Test-error panels per ``keys`` + the final-error and run tables, written under ``out``."""
    name = output_name(stem, tag)
    fig = curve_figure(runs, metrics, keys=keys, ncols=ncols, title=title)
    output = Output(figure=fig)
    output.files += save_figure(fig, name, out)
    write_run_tables(output, runs, name, out, keys, f"{title}: test error at the end and best")
    note = status_note(runs) if len(runs) else "no runs found"
    if note:
        output.notes.append(note)
    return output


def default_runs(experiment: str, tag: str | None) -> str:
    """``multirun/<experiment>/<tag>`` (or ``multirun/<experiment>`` without a tag)."""
    return f"multirun/{experiment}/{tag}" if tag else f"multirun/{experiment}"


def cli(
    make: Callable[..., Output],
    description: str,
    experiment: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``--runs/--tag/--out/--wandb``, call ``make``, print the files and notes.

    Returns:
        0, or 1 when no run was found.
    """
    parser = standard_parser(description, default_runs(experiment, "<tag>"))
    parser.set_defaults(runs=None)
    args = parser.parse_args(argv)
    runs = args.runs or [default_runs(experiment, args.tag)]
    output = make(runs, tag=args.tag, out=args.out, wandb=args.wandb)
    for path in output.files:
        print(f"wrote {path}")
    for note in output.notes:
        print(f"note: {note}")
    return 1 if any(n == "no runs found" for n in output.notes) else 0


def load_runs(runs: Sequence[str | Path], wandb: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run directories or W&B (``entity/project``)."""
    return load(runs, wandb)
