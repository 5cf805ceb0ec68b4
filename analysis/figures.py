"""Rebuild every figure and table from the runs that exist (``make figures``); trains nothing.

    python -m analysis.figures [--runs-root multirun] [--out results]

For each experiment folder ``<runs-root>/<experiment>/`` (fig1, fig6, fig7, rkfac,
rkfac_spectrum) and each of its tag folders (``smoke``, ``cpu``, ``cpu-fashion_mnist``, ...,
as written by ``make reproduce-*``), the matching scripts run with that tag; run directories
directly inside an experiment folder (a plain ``-m`` run) are analysed without a tag. The
SINGD structure illustrations (Table 1, Figs. 5 and 8) and, when the benchmark CSV exists,
Tables 2-3 are rebuilt too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from analysis import (
    fig1,
    fig6,
    fig7,
    rkfac_fig2,
    rkfac_spectrum,
    rkfac_table1,
    singd_fig5,
    singd_fig8,
    singd_table1,
    singd_tables23,
)
from analysis.collect import is_run_dir
from analysis.outputs import RESULTS, Output

SCRIPTS: dict[str, tuple[Callable[..., Output], ...]] = {
    "fig1": (fig1.make,),
    "fig6": (fig6.make,),
    "fig7": (fig7.make,),
    "rkfac": (rkfac_table1.make, rkfac_fig2.make),
    "rkfac_spectrum": (rkfac_spectrum.make,),
}


def run_groups(experiment_dir: Path) -> list[tuple[str | None, list[Path]]]:
    """``(tag, paths)`` per tag folder, plus ``(None, run dirs)`` for runs directly inside."""
    if not experiment_dir.is_dir():
        return []
    children = sorted(p for p in experiment_dir.iterdir() if p.is_dir())
    direct = [p for p in children if is_run_dir(p)]
    groups: list[tuple[str | None, list[Path]]] = [(None, direct)] if direct else []
    groups += [(p.name, [p]) for p in children if not is_run_dir(p) and not p.name.startswith(".")]
    return groups


def rebuild(
    runs_root: str | Path = "multirun", out: str | Path = RESULTS, static: bool = True
) -> list[Output]:
    """Run every script on every run group found; return their outputs."""
    outputs = []
    if static:
        outputs += [
            singd_table1.make(out=out),
            singd_fig5.make(out=out),
            singd_fig8.make(out=out),
            singd_tables23.make(out=out),
        ]
    for experiment, scripts in SCRIPTS.items():
        for tag, paths in run_groups(Path(runs_root) / experiment):
            for script in scripts:
                outputs.append(script(paths, tag=tag, out=out))
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-root", default="multirun")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    for output in rebuild(args.runs_root, args.out):
        for path in output.files:
            print(f"wrote {path}")
        for note in output.notes:
            print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
