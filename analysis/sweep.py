"""Random-search results: best trial per (method, model, data), plots, tuned override files.

    python -m analysis.sweep [--root multirun/sweep] [--out results/sweeps] [--tuned conf/tuned]

Reads every sweep directory under ``--root`` (written by ``make sweep``: ``multirun.yaml``,
``optuna.db`` and one run directory per trial), and writes

- ``<out>/trials.csv`` (every trial of every sweep) and ``<out>/best.csv`` (the best
  completed trial of each sweep: method, model, data, scale);
- ``<out>/<sweep>/hparams.png``: final test error against each tuned hyperparameter
  (log x-axis for log-uniform ones; failed/diverged trials as crosses on the top edge);
- ``<out>/<sweep>/best_overrides.txt``: the best values as command-line overrides;
- ``<tuned>/<optimizer>_<model>_<data>.yaml``: the best values as ``hparams.<optimizer>``
  for experiment grids (from the most faithful scale swept: paper, then cpu, then smoke).

A grid includes a tuned file in its defaults list (``- /tuned/singd_vgg_cifar100``) or
on the command line (``+tuned=singd_vgg_cifar100``) and reads every optimizer key as
``${oc.select:'hparams.${optimizer.name}.lr',<default>}``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

SCALE_ORDER = ("paper", "cpu", "smoke")  # most faithful first
_KEYS = ["optimizer", "model", "data", "scale"]


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` that returns ``default`` when the value cannot be resolved."""
    try:
        return OmegaConf.select(cfg, key, default=default)
    except Exception:  # an interpolation that needs a resolver or runtime value
        return default


def find_sweeps(root: str | Path) -> list[Path]:
    """Sweep directories under ``root``: those holding a ``multirun.yaml`` and ``optuna.db``."""
    root = Path(root)
    found = {p.parent for p in root.rglob("multirun.yaml") if (p.parent / "optuna.db").exists()}
    return sorted(found)


def _run_dirs(sweep_dir: Path, keys: Sequence[str]) -> dict[tuple, Path]:
    """Map the tuned values of each trial's run directory (its overrides) to the directory."""
    runs: dict[tuple, Path] = {}
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        values = {}
        for item in OmegaConf.load(overrides_file):
            key, _, value = str(item).partition("=")
            values[key] = value
        try:
            runs[tuple(float(values[k]) for k in keys)] = overrides_file.parent.parent
        except (KeyError, ValueError):
            continue
    return runs


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per trial of a sweep directory.

    Args:
        sweep_dir: A directory written by ``make sweep``.

    Returns:
        Columns ``optimizer, model, data, scale, study, trial, state, status,
        test_error, run_dir, sweep_dir`` and one column per tuned key (e.g.
        ``optimizer.lr``); ``status`` is the run's ``summary.json`` status, or
        ``interrupted``/``missing``.
    """
    import optuna

    from experiments.sweep import INTERRUPTED, prepare_storage

    sweep_dir = Path(sweep_dir)
    cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
    scale = _select(cfg, "hydra.runtime.choices.scale")
    info = {
        "optimizer": _select(cfg, "optimizer.name"),
        "model": _select(cfg, "model.name"),
        "data": _select(cfg, "data.name"),
        "scale": scale,
    }
    default_study = f"{info['optimizer']}-{info['model']}-{info['data']}-{scale}"
    study_name = _select(cfg, "hydra.sweeper.study_name", default_study)
    storage = _select(cfg, "hydra.sweeper.storage", None)
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    prepare_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    runs = _run_dirs(sweep_dir, keys)
    rows = []
    for trial in trials:
        run_dir = runs.get(tuple(trial.params.get(k, math.nan) for k in keys))
        status = "missing"
        if trial.system_attrs.get(INTERRUPTED):
            status = "interrupted"
        elif run_dir is not None and (run_dir / "summary.json").exists():
            status = pd.read_json(run_dir / "summary.json", typ="series").get("status", "missing")
        rows.append(
            {
                **info,
                "study": study_name,
                "trial": trial.number,
                "state": trial.state.name,
                "status": status,
                "test_error": trial.value if trial.value is not None else math.nan,
                **{k: trial.params.get(k, math.nan) for k in keys},
                "log_params": ",".join(
                    k
                    for k in keys
                    if k in trial.distributions
                    and isinstance(
                        trial.distributions[k],
                        (
                            optuna.distributions.LogUniformDistribution,
                            optuna.distributions.IntLogUniformDistribution,
                        ),
                    )
                ),
                "run_dir": str(run_dir) if run_dir is not None else None,
                "sweep_dir": str(sweep_dir),
            }
        )
    return pd.DataFrame(rows)


def collect(root: str | Path) -> pd.DataFrame:
    """Every trial of every sweep under ``root`` (empty frame when there is none)."""
    frames = [load_sweep(path) for path in find_sweeps(root)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tuned_keys(frame: pd.DataFrame) -> list[str]:
    """The tuned hyperparameters (columns named like ``optimizer.lr``)."""
    return [c for c in frame.columns if "." in c and c not in ("run_dir", "sweep_dir")]


def best_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The completed trial with the lowest final test error of each sweep (method, model,
    data, scale and sweep directory)."""
    done = frame[(frame["state"] == "COMPLETE") & frame["test_error"].notna()]
    if done.empty:
        return done
    index = done.groupby([*_KEYS, "sweep_dir"], dropna=False)["test_error"].idxmin()
    return done.loc[index.values].reset_index(drop=True)


def plot_sweep(frame: pd.DataFrame, path: str | Path) -> Path:
    """Final test error against each tuned hyperparameter of one sweep.

    Args:
        frame: The trials of one sweep (:func:`load_sweep`).
        path: The image file to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in tuned_keys(frame) if frame[k].notna().any()]
    log_keys = set(",".join(frame["log_params"].fillna("")).split(","))
    done = frame[frame["state"] == "COMPLETE"]
    failed = frame[(frame["state"] != "COMPLETE") & (frame["status"] != "interrupted")]
    best = best_trials(frame)
    top = max(1.0, float(done["test_error"].max()) if not done.empty else 1.0)
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 3.0))
    axes = list(axes) if len(keys) > 1 else [axes]
    for axis, key in zip(axes, keys):
        axis.scatter(done[key], done["test_error"], s=18, label="completed")
        if not failed.empty:
            axis.scatter(
                failed[key],
                [top] * len(failed),
                marker="x",
                color="tab:red",
                s=22,
                label="diverged/failed",
            )
        if not best.empty:
            axis.scatter(
                best[key],
                best["test_error"],
                marker="*",
                color="tab:orange",
                s=90,
                label="best",
                zorder=3,
            )
        if key in log_keys:
            axis.set_xscale("log")
        axis.set_ylim(0.0, 1.05 * top)
        axis.tick_params(axis="x", which="both", labelsize=7, labelrotation=30)
        axis.set_xlabel(key.removeprefix("optimizer."))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("final test error")
    axes[0].legend(fontsize=7)
    first = frame.iloc[0]
    best_text = f"best {best['test_error'].iloc[0]:.4f}" if not best.empty else "no trial completed"
    fig.suptitle(
        f"{first['optimizer']} on {first['model']}/{first['data']} ({first['scale']}): "
        f"{len(frame)} trials, {len(failed)} diverged/failed, {best_text}",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def overrides_of(best: pd.Series) -> list[str]:
    """The best values as Hydra command-line overrides (``optimizer.lr=...``)."""
    return [f"{k}={float(best[k])!r}" for k in tuned_keys(best.to_frame().T) if pd.notna(best[k])]


def tuned_config(best: pd.Series, n_trials: int, n_failed: int) -> str:
    """Text of ``conf/tuned/<optimizer>_<model>_<data>.yaml`` for one best trial.

    Optimizer keys go to ``hparams.<optimizer>.<key>`` (a list entry such as
    ``optimizer.betas.1`` writes the whole list, its other entries from the run's
    config); other tuned keys are listed in a comment.
    """
    name = best["optimizer"]
    optimizer = OmegaConf.create({})
    base = None
    sweep_cfg = Path(best["sweep_dir"]) / "multirun.yaml"
    if best.get("run_dir") and (Path(best["run_dir"]) / "config.yaml").exists():
        base = OmegaConf.load(Path(best["run_dir"]) / "config.yaml").get("optimizer")
    elif sweep_cfg.exists():
        base = OmegaConf.load(sweep_cfg).get("optimizer")
    others = []
    for key in tuned_keys(best.to_frame().T):
        value = best[key]
        if pd.isna(value):
            continue
        if not key.startswith("optimizer."):
            others.append(f"{key}={float(value)!r}")
            continue
        path = key.removeprefix("optimizer.")
        top = path.split(".")[0]
        if top not in optimizer:
            optimizer[top] = _select(base, top) if base is not None and "." in path else None
        if "." in path:
            OmegaConf.update(optimizer, path, float(value), merge=True)
        else:
            optimizer[top] = float(value)
    body = OmegaConf.to_yaml(OmegaConf.create({"hparams": {name: optimizer}}))
    header = [
        "# @package _global_",
        f"# Tuned by random search (analysis/sweep.py): best of {n_trials} trials "
        f"({n_failed} diverged/failed)",
        f"# of study {best['study']} at scale={best['scale']}: trial {best['trial']}, "
        f"final test error {best['test_error']:.4f}.",
        f"# Sweep: {best['sweep_dir']}",
        "# Grids read hparams.<optimizer>.<key>; include with `- /tuned/<this file>` in a",
        "# defaults list or `+tuned=<this file>` on the command line. A single run:",
        f"#   python -m experiments.train optimizer={name} model={best['model']} "
        f"data={best['data']} " + " ".join(overrides_of(best)),
    ]
    if others:
        header.append(f"# Also tuned (not written below): {' '.join(others)}")
    return "\n".join(header) + "\n" + body


def write_outputs(frame: pd.DataFrame, out: str | Path, tuned_dir: str | Path | None) -> list[Path]:
    """Write the CSVs, one plot and override list per sweep, and the tuned files.

    Returns:
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "trials.csv", out / "best.csv"]
    frame.to_csv(written[0], index=False)
    best = best_trials(frame)
    best.to_csv(written[1], index=False)
    for sweep_dir, trials in frame.groupby("sweep_dir"):
        folder = out / Path(str(sweep_dir)).name
        written.append(plot_sweep(trials, folder / "hparams.png"))
        winner = best_trials(trials)
        if not winner.empty:
            target = folder / "best_overrides.txt"
            target.write_text(" ".join(overrides_of(winner.iloc[0])) + "\n")
            written.append(target)
    if tuned_dir is not None and not best.empty:
        rank = {scale: i for i, scale in enumerate(SCALE_ORDER)}
        best = best.assign(_rank=best["scale"].map(lambda s: rank.get(s, len(rank))))
        for (name, model, data), group in best.groupby(["optimizer", "model", "data"]):
            chosen = group.sort_values(["_rank", "test_error"]).iloc[0]
            trials = frame[frame["sweep_dir"] == chosen["sweep_dir"]]
            failed = int(
                ((trials["state"] != "COMPLETE") & (trials["status"] != "interrupted")).sum()
            )
            target = Path(tuned_dir) / f"{name}_{model}_{data}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(tuned_config(chosen, len(trials), failed))
            written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: summarise every sweep under ``--root``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="multirun/sweep", help="where the sweep dirs are")
    parser.add_argument("--out", default="results/sweeps", help="CSVs and plots go here")
    parser.add_argument("--tuned", default="conf/tuned", help="tuned override files go here")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: --root={args.root!r} is invalid: not a directory", file=sys.stderr)
        return 2
    frame = collect(args.root)
    if frame.empty:
        print(
            f"error: --root={args.root!r} is invalid: no sweep (multirun.yaml + optuna.db) in it",
            file=sys.stderr,
        )
        return 2
    written = write_outputs(frame, args.out, args.tuned)
    best = best_trials(frame)
    columns = [*_KEYS, "trial", "test_error"]
    print(best[columns].to_string(index=False) if not best.empty else "no trial completed")
    print(
        f"wrote {len(written)} files to {args.out}" + (f" and {args.tuned}" if args.tuned else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
