"""SINGD paper, Tables 2 and 3 (iteration cost and memory) as measured by the benchmark
script: converts ``results/bench/complexity.csv`` (written by the bench script, if it has
been run) into ``results/tables/singd_tables23.{md,csv,tex}``; does nothing without it.

    python -m analysis.singd_tables23 [--csv results/bench/complexity.csv] [--out results]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.outputs import RESULTS, Output, write_table

BENCH_CSV = Path("results/bench/complexity.csv")


def make(csv: str | Path = BENCH_CSV, out: str | Path = RESULTS) -> Output:
    """Copy the measured table into Markdown/CSV/LaTeX; a note when the CSV is absent."""
    path = Path(csv)
    output = Output()
    if not path.is_file():
        output.notes.append(f"{path} not found: run the benchmark first; Tables 2-3 skipped")
        return output
    frame = pd.read_csv(path)
    output.tables["tables23"] = frame
    output.files += write_table(
        frame,
        "singd_tables23",
        out,
        caption=f"SINGD Tables 2-3 (measured): iteration cost and memory, from {path}",
    )
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(BENCH_CSV))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    output = make(args.csv, args.out)
    for path in output.files:
        print(f"wrote {path}")
    for note in output.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
