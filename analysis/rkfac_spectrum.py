"""Randomized K-FACs paper, Sec. 3: Fig. 1 (eigen-spectra of the EA Kronecker factors) and
the Proposition 3.1 bound.

    python -m analysis.rkfac_spectrum --runs multirun/rkfac_spectrum/paper --tag paper
    python -m analysis.rkfac_spectrum ... --layers 7 11    # 1-based layer positions

Fig. 1: for each chosen layer (default: the 7th and 11th preconditioned layers, as in the
paper, or all when there are fewer), the sorted eigenvalues of the forward factor A and the
backward factor G, one line per saved step (colour = step), log scale; the dashed line is
``eps * lambda_max`` of the last step (eps = 1/33: "1.5 orders of magnitude").
Prop. 3.1: at most ``min(r_eps n_M, d_M)`` eigenvalues of an EA factor exceed ``eps lambda_max``,
``r_eps = ceil(log(alpha eps) / log(rho))``.
Writes ``results/figures/rkfac_fig1[-tag].{png,pdf}``, ``results/tables/rkfac_fig1[-tag]-decay.*``
(modes above ``eps lambda_max`` per layer vs the bound) and ``results/tables/rkfac_prop31.*``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis.collect import find_run_dirs
from analysis.curves import SYNTHETIC_NOTE
from analysis.outputs import RESULTS, Output, output_name, save_figure, write_table
from analysis.report import default_runs
from experiments.spectra import load_spectra

EPS = 1.0 / 33.0
PAPER_LAYERS = (7, 11)
Spectra = dict[int, dict[str, dict[str, torch.Tensor]]]


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name}={value!r} is invalid: must be a number in (0, 1)")


def prop31_r_eps(eps: float, alpha: float, rho: float) -> int:
    """``r_eps = ceil(log(alpha eps) / log(rho))`` of Proposition 3.1 (Eq. 7).

    The number of EA steps after which older contributions are below ``alpha eps sigma_M^2``.

    Raises:
        ValueError: If ``eps``, ``alpha`` or ``rho`` is not in (0, 1).
    """
    for name, value in (("eps", eps), ("alpha", alpha), ("rho", rho)):
        _check_unit(name, value)
    ratio = math.log(alpha * eps) / math.log(rho)
    return math.ceil(ratio - 1e-9 * abs(ratio))  # an exact integer ratio stays itself


def prop31_modes(eps: float, alpha: float, rho: float, n_M: int, d_M: int | None = None) -> int:
    """Proposition 3.1: at most ``r_eps n_M`` eigenvalues exceed ``eps lambda_max`` (``min`` with
    ``d_M`` when the factor size is given).

    Args:
        eps: Tolerance in (0, 1) (the paper uses 0.03 ~ 1/33).
        alpha: Assumed ``lambda_M >= alpha sigma_M^2``, in (0, 1).
        rho: EA decay in (0, 1) (the paper's 0.95; ``1 - optimizer.ema``).
        n_M: Columns of each ``M_i`` (the batch size for FC layers), >= 1.
        d_M: Factor size; ``None`` for the bound alone.

    Returns:
        ``r_eps n_M`` (or ``min(r_eps n_M, d_M)``); the paper's example
        ``prop31_modes(0.03, 0.1, 0.95, 256) == 29184``.
    """
    if isinstance(n_M, bool) or not isinstance(n_M, int) or n_M < 1:
        raise ValueError(f"n_M={n_M!r} is invalid: must be an integer >= 1")
    if d_M is not None and (isinstance(d_M, bool) or not isinstance(d_M, int) or d_M < 1):
        raise ValueError(f"d_M={d_M!r} is invalid: must be an integer >= 1 or None")
    modes = prop31_r_eps(eps, alpha, rho) * n_M
    return modes if d_M is None else min(modes, d_M)


def prop31_table() -> pd.DataFrame:
    """The paper's two worked examples (Sec. 3 and Sec. 4.3)."""
    rows = []
    for rho in (0.95, 0.5):
        rows.append(
            {
                "eps": 0.03,
                "alpha": 0.1,
                "rho": rho,
                "n_M": 256,
                "r_eps": prop31_r_eps(0.03, 0.1, rho),
                "modes_bound": prop31_modes(0.03, 0.1, rho, 256),
            }
        )
    return pd.DataFrame(rows)


def spectrum_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories under ``paths`` that hold saved spectra."""
    return [p for p in find_run_dirs(paths) if any((p / "spectra").glob("step_*.pt"))]


def pick_layers(names: Sequence[str], layers: Sequence[int] | None) -> list[str]:
    """Layer names at 1-based positions ``layers`` (default 7 and 11, else all)."""
    if layers is None:
        layers = PAPER_LAYERS if len(names) >= max(PAPER_LAYERS) else range(1, len(names) + 1)
    bad = [i for i in layers if not 1 <= i <= len(names)]
    if bad:
        raise ValueError(
            f"layers={list(layers)!r} is invalid: positions must be in 1..{len(names)}"
        )
    return [names[i - 1] for i in layers]


def _sorted(values: torch.Tensor) -> np.ndarray:
    return np.sort(values.double().numpy())[::-1]


def plot_spectra(
    spectra: Spectra, layers: Sequence[str], title: str = "", eps: float = EPS
) -> Figure:
    """Rows = layers, columns = factors A and G; one line per step, log scale."""
    steps = list(spectra)
    names = list(spectra[steps[-1]]) if steps else []
    fig = Figure(figsize=(10, 3.2 * max(1, len(layers))), layout="constrained")
    axes = fig.subplots(max(1, len(layers)), 2, squeeze=False)
    norm = LogNorm(vmin=max(1, min(steps)), vmax=max(2, max(steps))) if steps else None
    cmap = "viridis"
    for row, layer in enumerate(layers):
        position = names.index(layer) + 1 if layer in names else "?"
        for col, factor in enumerate(("A", "G")):
            ax = axes[row, col]
            for step in steps:
                values = spectra[step].get(layer, {}).get(factor)
                if values is None:
                    continue
                curve = _sorted(values)
                ax.plot(
                    np.arange(1, len(curve) + 1),
                    np.clip(curve, 1e-30, None),
                    lw=1,
                    color=colormaps[cmap](norm(max(step, 1))),
                )
            last = spectra[steps[-1]].get(layer, {}).get(factor) if steps else None
            if last is not None and len(last):
                ax.axhline(eps * float(last.max()), ls="--", color="grey", lw=1)
                dim = len(last)
            else:
                dim = 0
            ax.set_yscale("log")
            ax.set_xlabel("eigenvalue index")
            ax.set_ylabel("eigenvalue")
            side = "A (forward)" if factor == "A" else "G (backward)"
            ax.set_title(
                f"layer {position} ({layer}): {side}, d={dim}",
                fontsize=9,
            )
            ax.grid(alpha=0.3)
    if steps:
        fig.colorbar(
            ScalarMappable(norm=norm, cmap=colormaps[cmap]), ax=axes, label="step k", shrink=0.8
        )
    else:
        axes[0, 0].text(
            0.5, 0.5, "no spectra found", ha="center", va="center", transform=axes[0, 0].transAxes
        )
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def decay_table(spectra: Spectra, eps: float, alpha: float, rho: float, n_M: int) -> pd.DataFrame:
    """At the last saved step: per layer and factor, the size, ``lambda_max``, the number of
    eigenvalues ``>= eps lambda_max`` and the Prop. 3.1 bound ``min(r_eps n_M, d_M)``."""
    if not spectra:
        return pd.DataFrame()
    step = max(spectra)
    rows = []
    for position, (layer, factors) in enumerate(spectra[step].items(), start=1):
        for factor, values in factors.items():
            values = values.double()
            top = float(values.max()) if len(values) else math.nan
            rows.append(
                {
                    "step": step,
                    "position": position,
                    "layer": layer,
                    "factor": factor,
                    "d_M": len(values),
                    "lambda_max": top,
                    "modes_above_eps": int((values >= eps * top).sum()),
                    "prop31_bound": prop31_modes(eps, alpha, rho, n_M, len(values)),
                }
            )
    return pd.DataFrame(rows)


def _config(run: Path) -> dict:
    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def make(
    runs: Sequence[str | Path],
    tag: str | None = None,
    out: str | Path = RESULTS,
    layers: Sequence[int] | None = None,
    alpha: float = 0.1,
    eps: float = EPS,
) -> Output:
    """Fig. 1 and the decay table for the first spectrum run found, plus the Prop. 3.1 table."""
    output = Output()
    prop = prop31_table()
    output.tables["prop31"] = prop
    output.files += write_table(
        prop,
        "rkfac_prop31",
        out,
        caption="Randomized K-FACs Prop. 3.1: modes above eps*lambda_max, bound r_eps*n_M",
    )
    found = spectrum_runs(runs)
    if not found:
        output.notes.append("no runs found")
        return output
    if len(found) > 1:
        output.notes.append(f"{len(found)} spectrum runs found; using {found[0]}")
    run = found[0]
    spectra = load_spectra(run)
    config = _config(run)
    rho = 1.0 - float(config.get("optimizer", {}).get("ema", 0.05))
    n_M = int(config.get("trainer", {}).get("batch_size", 256))
    summary_file = run / "summary.json"
    synthetic = summary_file.is_file() and '"synthetic_data": true' in summary_file.read_text()
    names = list(spectra[max(spectra)])
    chosen = pick_layers(names, layers)
    title = "Randomized K-FACs Fig. 1: K-factor eigen-spectra" + (
        f" ({SYNTHETIC_NOTE})" if synthetic else ""
    )
    fig = plot_spectra(spectra, chosen, title, eps)
    output.figure = fig
    name = output_name("rkfac_fig1", tag)
    output.files += save_figure(fig, name, out)
    decay = decay_table(spectra, eps, alpha, rho, n_M)
    output.tables["decay"] = decay
    output.files += write_table(
        decay,
        f"{name}-decay",
        out,
        display=decay.round(6),
        caption=f"Eigenvalues >= eps*lambda_max (eps={eps:.4g}) at step "
        f"{max(spectra)} vs Prop. 3.1 (alpha={alpha}, rho={rho:.3g}, "
        f"n_M = batch size {n_M}; conv layers have more columns)",
    )
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=None,
        help="1-based layer positions (default 7 11, as in the paper)",
    )
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args(argv)
    output = make(
        args.runs or [default_runs("rkfac_spectrum", args.tag)],
        args.tag,
        args.out,
        args.layers,
        args.alpha,
    )
    for path in output.files:
        print(f"wrote {path}")
    for note in output.notes:
        print(f"note: {note}")
    return 1 if "no runs found" in output.notes else 0


if __name__ == "__main__":
    raise SystemExit(main())
