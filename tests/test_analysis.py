"""Analysis scripts on run directories generated here by the real entrypoint at scale=smoke.

The module fixture trains (tiny VGG, synthetic stand-in data, 2 steps per run):
* a Fig. 1 grid in FP32: SGD and SINGD-diagonal x seeds 0, 1 (4 runs);
* two broken BFP16 runs: AdamW with lr 1e30 (diverges) and IKFAC whose per-epoch table sets
  T = 0 (fails with ZeroDivisionError during its first step);
* one K-FAC run of ``experiment=rkfac_spectrum`` that saves factor spectra every step.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import fig1, figures, rkfac_spectrum, rkfac_table1
from analysis.collect import collect, collect_wandb, find_run_dirs
from analysis.curves import build_curves, curve_figure
from analysis.outputs import latex_table, markdown_table, mean_std
from analysis.rkfac_spectrum import prop31_modes, prop31_r_eps
from analysis.structures import (
    factor_matrices,
    random_factor,
    random_symmetric,
    reference_projection,
)
from experiments.spectra import load_spectra
from optim import STRUCTURES

ROOT = Path(__file__).resolve().parents[1]
TINY = ("scale=smoke", "model.width_multiplier=0.0625", "trainer.batch_size=8", "trainer.seed=0")


def train(*overrides: str) -> subprocess.CompletedProcess:
    """``python -m experiments.train -m ...`` in the repository."""
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", "-m", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    grid = train(
        "experiment=fig1",
        *TINY,
        "model.depth=11",
        "+experiment/method=sgd,singd_diagonal",
        "trainer.precision=fp32",
        "trainer.seed=0,1",
        "trainer.checkpoint=false",
        f"hydra.sweep.dir={root}/fig1/smoke",
    )
    assert grid.returncode == 0, grid.stderr[-3000:]
    broken = train(
        "experiment=fig1",
        *TINY,
        "model.depth=11",
        "+experiment/method=adamw,ikfac",
        "trainer.precision=bf16",
        "optimizer.lr=1e30",
        "+trainer.schedule.hyper_tables.T=[[0,0]]",
        f"hydra.sweep.dir={root}/fig1/smoke",
    )
    assert broken.returncode != 0 and "ZeroDivisionError" in broken.stderr  # the IKFAC run failed
    spectrum = train(
        "experiment=rkfac_spectrum",
        *TINY,
        "optimizer.T=1",
        "optimizer.T_inv=1",
        "trainer.spectra.every_early=1",
        f"hydra.sweep.dir={root}/rkfac_spectrum/smoke",
    )
    assert spectrum.returncode == 0, spectrum.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def fig1_frames(runs_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return collect([runs_root / "fig1" / "smoke"])


# ----- Prop. 3.1 -----------------------------------------------------------------------------
def test_prop31_paper_examples() -> None:
    assert prop31_r_eps(0.03, 0.1, 0.95) == 114
    assert prop31_modes(0.03, 0.1, 0.95, 256) == 29184  # Sec. 3
    assert prop31_modes(0.03, 0.1, 0.5, 256) == 2304  # Sec. 4.3, rho = 0.5
    assert prop31_modes(0.03, 0.1, 0.95, 256, d_M=4096) == 4096


def test_prop31_exact_powers_and_bad_input() -> None:
    # alpha eps = rho^5 exactly: r_eps = 5, and rho^r_eps <= alpha eps holds with equality.
    assert prop31_r_eps(0.125, 0.25, 0.5) == 5
    # r_eps is the smallest r with rho^r <= alpha eps (the proof's Eq. 8-10).
    for rho in np.linspace(0.3, 0.99, 24):
        for eps, alpha in ((0.5, 0.2), (0.03, 0.1), (1 / 33, 0.9)):
            r_eps = prop31_r_eps(eps, alpha, float(rho))
            assert rho**r_eps <= alpha * eps * (1 + 1e-9) and rho ** (r_eps - 1) > alpha * eps
    for bad in ({"eps": 0.0}, {"alpha": 1.0}, {"rho": 1.5}, {"n_M": 0}, {"n_M": 2.5}):
        args = {"eps": 0.03, "alpha": 0.1, "rho": 0.95, "n_M": 256, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            prop31_modes(**args)


# ----- SINGD structures (Table 1, Figs. 5, 8) ------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("d", [7, 12])
def test_table1_projection_maps_match_an_independent_version(name: str, d: int) -> None:
    options = {
        "block_diagonal": {"k": 3},
        "hierarchical": {"k1": 2, "k2": 3},
        "triu_low_rank": {"k": 2},
        "tril_low_rank": {"k": 2},
    }.get(name, {})
    m = random_symmetric(d, seed=d)
    ours = STRUCTURES[name].from_dense(torch.from_numpy(m), **options).to_dense().numpy()
    np.testing.assert_allclose(ours, reference_projection(name, m, **options), atol=1e-12)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_fig5_matrices(name: str) -> None:
    options = {"block_diagonal": {"k": 4}, "hierarchical": {"k1": 3, "k2": 3}}.get(name, {})
    k, gram, inverse = factor_matrices(random_factor(name, 12, seed=3, **options))
    pattern = reference_projection(name, np.ones((12, 12)), **options) != 0
    assert not np.any(k[~pattern]), "K has entries outside its structure"
    np.testing.assert_allclose(gram, k @ k.T)
    np.testing.assert_allclose(gram @ inverse, np.eye(12), atol=1e-9)


def test_table_writers() -> None:
    frame = pd.DataFrame({"method": ["a_b", "c"], "error (%)": [1.5, float("nan")]})
    md = markdown_table(frame).splitlines()
    assert md[0] == "| method | error (%) |" and md[3] == "| c | -- |" and len(md) == 4
    tex = latex_table(frame, caption="50% of x_y")
    assert r"a\_b" in tex and r"50\% of x\_y" in tex and r"error (\%)" in tex
    assert mean_std([1.0, 3.0]) == "2.00 ± 1.41" and mean_std([]) == "--"


# ----- collect ---------------------------------------------------------------------------------
def test_collect_reads_every_generated_run(runs_root: Path, fig1_frames) -> None:
    runs, metrics = fig1_frames
    directories = find_run_dirs([runs_root / "fig1" / "smoke"])
    assert len(runs) == len(directories) == 6
    counts = runs["status"].value_counts().to_dict()
    assert counts == {"ok": 4, "diverged": 1, "failed": 1}
    assert set(runs["method"]) == {"sgd", "singd_diagonal", "adamw", "ikfac"}
    assert runs.loc[runs["method"] == "ikfac", "status"].item() == "failed"
    assert runs.loc[runs["method"] == "adamw", "status"].item() == "diverged"
    assert {
        "optimizer.lr",
        "trainer.precision",
        "model.width_multiplier",
        "final_test_error",
    } <= set(runs)
    assert runs["synthetic"].all()
    lines = sum(
        len((Path(d) / "metrics.jsonl").read_text().splitlines())
        for d in directories
        if (Path(d) / "metrics.jsonl").exists()
    )
    assert len(metrics) == lines and {"test_error", "time_s", "method", "seed"} <= set(metrics)


def test_curves_are_mean_and_range_over_seeds(fig1_frames) -> None:
    runs, metrics = fig1_frames
    chosen = runs[(runs["precision"] == "fp32") & (runs["method"] == "sgd")]
    (curve,) = build_curves(chosen, metrics)
    per_seed = [
        [
            json.loads(line)["test_error"]
            for line in (Path(d) / "metrics.jsonl").read_text().splitlines()
        ]
        for d in chosen["run_dir"]
    ]
    values = np.array(per_seed) * 100
    np.testing.assert_allclose(curve.mean, values.mean(axis=0))
    np.testing.assert_allclose(curve.low, values.min(axis=0))
    np.testing.assert_allclose(curve.high, values.max(axis=0))
    assert curve.label == "SGD" and curve.n_runs == 2


# ----- figures ---------------------------------------------------------------------------------
def test_fig1_with_a_failed_and_a_diverged_run(runs_root: Path, tmp_path: Path) -> None:
    output = fig1.make([runs_root / "fig1" / "smoke"], tag="smoke", out=tmp_path)
    for name in (
        "figures/fig1-smoke.png",
        "figures/fig1-smoke.pdf",
        "tables/fig1-smoke-final.md",
        "tables/fig1-smoke-final.tex",
        "tables/fig1-smoke-memory.csv",
        "tables/fig1-smoke-runs.csv",
    ):
        assert (tmp_path / name).is_file(), name
    fp32, bf16, memory = output.figure.axes[:3]
    assert "FP32" in fp32.get_title() and "BFP16" in bf16.get_title()
    assert "synthetic stand-in" in fp32.get_title()
    assert [t.get_text() for t in fp32.get_legend().get_texts()] == ["SINGD-Diag", "SGD"]
    labels = [t.get_text() for t in bf16.get_legend().get_texts()]
    assert labels == ["IKFAC (failed)", "AdamW (diverged)"]  # paper order, status in the legend
    assert any(line.get_marker() == "x" for line in bf16.get_lines())  # the divergence point
    figure_text = " ".join(t.get_text() for t in output.figure.texts)
    assert "diverged (1): AdamW" in figure_text and "failed (1): IKFAC" in figure_text
    final = output.tables["final"]
    assert len(final) == 4  # FP32: SGD, SINGD-Diag; BFP16: IKFAC, AdamW
    sgd = final[(final["method"] == "sgd") & (final["precision"] == "fp32")].iloc[0]
    assert sgd["ok"] == 2 and sgd["runs"] == 2
    table = output.tables["memory"].set_index(["method", "precision"])
    assert table.loc[("adamw", "bf16"), "ratio_to_adamw"] == 1.0
    assert ("ikfac", "bf16") not in table.index  # a failed run has no memory to show
    assert "dashed" in memory.get_title()
    assert any(line.get_linestyle() == "--" for line in memory.get_lines())


def test_curve_grid_has_one_panel_per_combination(fig1_frames) -> None:
    runs, metrics = fig1_frames
    fig = curve_figure(runs, metrics, keys=("model", "data", "precision"), title="grid")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    assert "synthetic stand-in" in fig._suptitle.get_text()


def test_rkfac_table1_matches_an_independent_computation(runs_root: Path, tmp_path: Path) -> None:
    targets = (1e-6, 0.5)
    output = rkfac_table1.make(
        [runs_root / "fig1" / "smoke"], tag="t", out=tmp_path, targets=targets
    )
    table = output.tables["table1"].set_index("method")
    for method in ("sgd", "singd_diagonal"):  # two seeds each
        times, epochs, per_epoch = [], [], []
        for path in sorted((runs_root / "fig1" / "smoke").glob(f"{method}-*")):
            rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
            hit = next((r for r in rows if 1 - r["test_error"] > targets[0]), None)
            if hit is not None:
                times.append(hit["time_s"])
            last = next((r for r in rows if 1 - r["test_error"] > targets[1]), None)
            if last is not None:
                epochs.append(last["epoch"])
            previous = (0.0, 0.0)
            for r in rows:
                per_epoch.append((r["time_s"] - previous[1]) / (r["epoch"] - previous[0]))
                previous = (r["epoch"], r["time_s"])
        row = table.loc[method]
        assert row["runs"] == 2
        expected = np.mean(times) if times else math.nan
        assert (
            math.isnan(expected) and math.isnan(row[f"time_{targets[0]}_mean"])
        ) or math.isclose(row[f"time_{targets[0]}_mean"], expected)
        assert row[f"runs_hit_{targets[1]}"] == len(epochs)
        assert math.isclose(row["epoch_time_mean"], np.mean(per_epoch))
    shown = (tmp_path / "tables" / "rkfac_table1-t.md").read_text()
    assert "out of 2" in shown and "t_acc>50% (s)" in shown


def test_saved_spectra_are_the_eigenvalues_of_the_checkpointed_factors(runs_root: Path) -> None:
    (run,) = find_run_dirs([runs_root / "rkfac_spectrum" / "smoke"])
    spectra = load_spectra(run)
    assert sorted(spectra) == [1, 2]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 2
    layers = checkpoint["optimizer"]["layers"]
    assert list(spectra[2]) == list(layers)
    for name, factors in layers.items():
        for label, key in (("A", "S_K"), ("G", "S_C")):
            expected = torch.linalg.eigvalsh(factors[key].double()).flip(0)
            saved = spectra[2][name][label].double()
            torch.testing.assert_close(
                torch.sort(saved, descending=True).values, expected, rtol=1e-4, atol=1e-5
            )


def test_rkfac_spectrum_figure_and_decay_table(runs_root: Path, tmp_path: Path) -> None:
    output = rkfac_spectrum.make(
        [runs_root / "rkfac_spectrum" / "smoke"], tag="smoke", out=tmp_path
    )
    assert (tmp_path / "figures" / "rkfac_fig1-smoke.png").is_file()
    assert (tmp_path / "tables" / "rkfac_prop31.md").read_text().count("29184") == 1
    panels = [ax for ax in output.figure.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4  # layers 7 and 11, factors A and G
    assert panels[0].get_title().startswith("layer 7") and panels[2].get_title().startswith(
        "layer 11"
    )
    assert len(panels[0].get_lines()) == 3  # two steps + the eps * lambda_max line
    decay = output.tables["decay"]
    spectra = load_spectra(find_run_dirs([runs_root / "rkfac_spectrum" / "smoke"])[0])[2]
    for _, row in decay.iterrows():
        values = spectra[row["layer"]][row["factor"]].double().numpy()
        assert row["modes_above_eps"] == int(np.sum(values >= values.max() / 33))
        assert row["prop31_bound"] == min(114 * 8, len(values))  # rho 0.95, n_M = batch size 8


def test_figures_rebuilds_from_existing_runs(runs_root: Path, tmp_path: Path) -> None:
    outputs = figures.rebuild(runs_root, tmp_path)
    names = {p.name for output in outputs for p in output.files}
    for name in (
        "fig1-smoke.png",
        "rkfac_fig1-smoke.png",
        "singd_fig5.pdf",
        "singd_fig8.png",
        "singd_table1.tex",
        "rkfac_prop31.csv",
    ):
        assert name in names, name


@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["figures.ipynb", "spectra.ipynb"])
def test_notebooks_execute(
    notebook: str, runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NGD_RUNS_ROOT", str(runs_root))
    monkeypatch.setenv("NGD_RESULTS_DIR", str(tmp_path))
    path = ROOT / "analysis" / "notebooks" / notebook
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    assert any((tmp_path / "figures").glob("*.png"))
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors and os.environ["NGD_RUNS_ROOT"] == str(runs_root)


def test_collect_wandb_maps_runs_like_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """The W&B path with a stand-in for ``wandb.Api`` (the real API needs network access)."""
    import wandb

    class FakeRun:
        path = ["me", "ngdbench", "abc123"]
        config = {
            "optimizer": {"name": "kfac"},
            "model": {"name": "vgg"},
            "data": {"name": "cifar100"},
            "trainer": {"precision": "bf16", "seed": 3},
            "experiment_name": "fig1",
        }
        summary = {"status": "diverged", "epochs": 2.5, "_runtime": 1.0, "synthetic_data": False}

        def scan_history(self) -> list[dict]:
            return [
                {"epoch": 1.0, "test_error": 0.5, "_step": 1},
                {"epoch": 2.0, "test_error": 0.4},
            ]

    class FakeApi:
        def runs(self, path: str, filters: dict) -> list[FakeRun]:
            assert path == "me/ngdbench" and filters == {}
            return [FakeRun()]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs, metrics = collect_wandb("me/ngdbench")
    row = runs.iloc[0]
    assert (row["method"], row["precision"], row["seed"], row["status"]) == (
        "kfac",
        "bf16",
        3,
        "diverged",
    )
    assert row["run_dir"] == "wandb:me/ngdbench/abc123" and "_runtime" not in runs
    assert list(metrics["test_error"]) == [0.5, 0.4] and "_step" not in metrics
