"""Writing figures (PNG + PDF) and tables (Markdown + CSV + LaTeX) under ``results/``.

Figures go to ``<out>/figures/<name>.{png,pdf}``, tables to ``<out>/tables/<name>.{md,csv,tex}``.
Markdown and LaTeX are written here (no ``tabulate``/``jinja2`` needed).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

RESULTS = Path("results")


@dataclass
class Output:
    """What an analysis script produced: files, the figure (for inspection) and tables."""

    files: list[Path] = field(default_factory=list)
    figure: Figure | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def output_name(stem: str, tag: str | None) -> str:
    """``stem`` or ``stem-tag`` (tag = scale and dataset override, e.g. ``cpu-fashion_mnist``)."""
    return f"{stem}-{tag}" if tag else stem


def save_figure(fig: Figure, name: str, out: str | Path = RESULTS) -> list[Path]:
    """Save ``fig`` as ``<out>/figures/<name>.png`` and ``.pdf``; return both paths."""
    directory = Path(out) / "figures"
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None, bbox_inches="tight")
    return paths


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "--"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (index dropped)."""
    header = [str(c) for c in df.columns]
    rows = [[_cell(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; ``±`` becomes ``$\\pm$``."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$")


def latex_table(df: pd.DataFrame, caption: str = "") -> str:
    """A ``table``/``tabular`` environment (booktabs rules) for ``df``."""
    spec = "l" * len(df.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_cell(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    name: str,
    out: str | Path = RESULTS,
    *,
    display: pd.DataFrame | None = None,
    caption: str = "",
    latex: bool = True,
) -> list[Path]:
    """Write ``<out>/tables/<name>.csv`` (``df``, full precision) and ``.md``/``.tex``.

    Args:
        df: The numbers (CSV).
        name: File stem.
        out: Results directory.
        display: Formatted version for Markdown/LaTeX (e.g. ``mean ± std`` strings);
            default ``df``.
        caption: Caption (Markdown: a line above the table; LaTeX: ``\\caption``).
        latex: Also write LaTeX.
    """
    directory = Path(out) / "tables"
    directory.mkdir(parents=True, exist_ok=True)
    shown = df if display is None else display
    paths = [directory / f"{name}.csv", directory / f"{name}.md"]
    df.to_csv(paths[0], index=False)
    text = (f"{caption}\n\n" if caption else "") + markdown_table(shown)
    paths[1].write_text(text)
    if latex:
        paths.append(directory / f"{name}.tex")
        paths[2].write_text(latex_table(shown, caption))
    return paths


def mean_std(values: Sequence[float], digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std`` of the finite values (``--`` when there are none; std 0 for one value)."""
    series = pd.Series(values, dtype=float).dropna() * scale
    if series.empty:
        return "--"
    std = float(series.std(ddof=1)) if len(series) > 1 else 0.0
    return f"{series.mean():.{digits}f} ± {std:.{digits}f}"


def standard_parser(description: str, default_runs: str) -> argparse.ArgumentParser:
    """The command line every figure/table script shares: ``--runs``, ``--tag``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--runs",
        nargs="+",
        default=[default_runs],
        help=f"run directories, folders holding them, or globs (default {default_runs})",
    )
    parser.add_argument(
        "--tag",
        default=None,
        help="suffix of the output names, e.g. the scale and dataset (smoke, cpu-fashion_mnist)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="results directory (default results)")
    parser.add_argument(
        "--wandb",
        default=None,
        metavar="ENTITY/PROJECT",
        help="read the runs from the W&B API instead of run directories",
    )
    return parser
