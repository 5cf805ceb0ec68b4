"""The reproduce grids (conf/experiment/), the make targets (reproduce.mk) and the spectra hook."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import CONF_DIR, ConfigError, register_resolvers, validate_config
from experiments.optimizers import build_optimizer
from experiments.schedules import piecewise
from experiments.spectra import SpectrumRecorder, SpectrumSchedule, parse_schedule

ROOT = Path(__file__).resolve().parents[1]
register_resolvers()

KFAC_FAMILY = {"kfac", "rs_kfac", "sre_kfac"}
SINGD_FAMILY = {"ikfac", "ingd", "singd_diagonal", "singd_block_diagonal", "singd_hierarchical"}


def composed(*overrides: str, hydra: bool = False):
    """The config of ``experiments.train`` for these overrides (resolved unless ``hydra``)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)
    return cfg


def sweep_params(experiment: str) -> dict[str, list[str]]:
    """The experiment's ``hydra.sweeper.params`` as ``{key: [values]}``."""
    params = composed(f"experiment={experiment}", hydra=True).hydra.sweeper.params
    return {key: str(value).split(",") for key, value in params.items()}


def method_files() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment" / "method").glob("*.yaml"))


# ----- grids ---------------------------------------------------------------------------
def test_fig1_grid_is_the_papers() -> None:
    params = sweep_params("fig1")
    assert set(params["+experiment/method"]) == {
        "kfac",
        "ikfac",
        "ingd",
        "singd_diagonal",
        "adamw",
        "sgd",
    }
    assert params["trainer.precision"] == ["fp32", "bf16"]
    cfg = composed("experiment=fig1", "+experiment/method=kfac")
    assert (cfg.model.name, cfg.data.name, cfg.experiment_name) == ("vgg", "cifar100", "fig1")
    assert cfg.trainer.schedule.name == "step" and cfg.trainer.schedule.step_epochs == 40
    assert cfg.optimizer.momentum == 0.9


def test_fig6_and_fig7_grids() -> None:
    fig6 = sweep_params("fig6")
    assert set(fig6["model"]) == {"cct", "swin", "gcvit", "hdvt"}
    assert set(fig6["data"]) == {"cifar100", "imagewoof"}
    assert set(fig6["+experiment/method"]) == {
        "adamw",
        "ikfac",
        "ingd",
        "singd_diagonal",
        "singd_block_diagonal",
        "singd_hierarchical",
    }
    assert composed("experiment=fig6", "+experiment/method=adamw").trainer.precision == "bf16"
    for name, schedule, sgd in (
        ("fig7_vgg", "step", True),
        ("fig7_convmixer", "step", True),
        ("fig7_repvit", "cosine", False),
    ):
        params = sweep_params(name)
        assert ("sgd" in params["+experiment/method"]) is sgd
        assert set(params["data"]) == {"imagewoof", "cifar100"}
        cfg = composed(f"experiment={name}", "+experiment/method=adamw")
        assert (cfg.experiment_name, cfg.trainer.precision, cfg.trainer.schedule.name) == (
            "fig7",
            "bf16",
            schedule,
        )
    gcn = composed("experiment=fig7_gcn", "+experiment/method=kfac")
    assert (gcn.model.name, gcn.data.name, gcn.trainer.precision, gcn.trainer.schedule.name) == (
        "gcn",
        "cora",
        "fp32",
        "constant",
    )
    assert "kfac" in sweep_params("fig7_gcn")["+experiment/method"]


def test_model_preset_follows_the_dataset() -> None:
    assert (
        composed("experiment=fig6", "+experiment/method=adamw", "data=imagewoof").model.preset
        == "imagewoof"
    )
    assert (
        composed("experiment=fig6", "+experiment/method=adamw", "data=cifar100").model.preset
        == "cifar"
    )
    override = composed("experiment=fig1", "+experiment/method=sgd", "data=fashion_mnist")
    assert (override.data.name, override.model.preset) == ("fashion_mnist", "cifar")


@pytest.mark.parametrize(
    "method",
    [
        "kfac",
        "rs_kfac",
        "sre_kfac",
        "ikfac",
        "ingd",
        "singd_diagonal",
        "singd_block_diagonal",
        "singd_hierarchical",
        "adamw",
        "sgd",
    ],
)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_method_files_build_and_keep_bf16_factors(method: str, precision: str) -> None:
    cfg = composed(
        "experiment=fig1", f"+experiment/method={method}", f"trainer.precision={precision}"
    )
    validate_config(cfg)
    assert cfg.optimizer.name == method
    key = (
        "factor_dtype"
        if method in KFAC_FAMILY
        else "preconditioner_dtype"
        if method in SINGD_FAMILY
        else None
    )
    if key is None:
        assert "factor_dtype" not in cfg.optimizer and "preconditioner_dtype" not in cfg.optimizer
    else:
        assert cfg.optimizer[key] == ("bfloat16" if precision == "bf16" else None)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = build_optimizer(cfg.optimizer, model)
    assert isinstance(optimizer, torch.optim.Optimizer)


def test_every_method_file_is_a_known_optimizer() -> None:
    optimizers = {p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml")}
    assert set(method_files()) <= optimizers
    swept = set()
    for experiment in (
        "fig1",
        "fig6",
        "fig7_vgg",
        "fig7_convmixer",
        "fig7_repvit",
        "fig7_gcn",
        "rkfac_table1",
    ):
        swept |= set(sweep_params(experiment)["+experiment/method"])
    assert swept <= set(method_files())


# ----- randomized K-FAC protocol (Sec. 5) ----------------------------------------------------
def _indicator(epoch: int, start: int) -> float:
    return 1.0 if epoch >= start else 0.0


def test_rkfac_schedules_are_the_papers_formulas() -> None:
    cfg = composed("experiment=rkfac_table1", "+experiment/method=rs_kfac")
    assert (cfg.model.name, cfg.data.name, cfg.trainer.batch_size, cfg.trainer.epochs) == (
        "vgg16_bn",
        "cifar10",
        256,
        50,
    )
    opt = cfg.optimizer
    assert (opt.momentum, opt.weight_decay, opt.T, opt.ema, opt.power_iters) == (
        0.0,
        7e-4,
        10,
        0.05,
        4,
    )
    schedule = cfg.trainer.schedule
    tables = OmegaConf.to_container(schedule.hyper_tables)
    assert schedule.name == "piecewise"
    for epoch in range(50):

        def i(start: int, epoch: int = epoch) -> float:
            return _indicator(epoch, start)

        lr = (
            0.3
            - 0.1 * i(2)
            - 0.1 * i(3)
            - 0.07 * i(13)
            - 0.02 * i(18)
            - 0.007 * i(27)
            - 0.002 * i(40)
        )
        assert math.isclose(piecewise(schedule.table, epoch), lr, abs_tol=1e-12)
        assert piecewise(tables["T_inv"], epoch) == 50 - 20 * i(20)
        assert math.isclose(piecewise(tables["damping"], epoch), 0.1 - 0.05 * i(25) - 0.04 * i(35))
        assert piecewise(tables["rank"], epoch) == 220 + 10 * i(15)
        assert piecewise(tables["oversample"], epoch) == 10 + i(22) + i(30)
    assert set(sweep_params("rkfac_table1")["trainer.seed"]) == {str(s) for s in range(10)}


def test_rkfac_seng_keeps_its_own_protocol_and_fig2_is_the_same_grid() -> None:
    seng = composed("experiment=rkfac_table1", "+experiment/method=seng")
    assert (seng.optimizer.weight_decay, seng.optimizer.momentum, seng.optimizer.damping) == (
        1e-2,
        0.9,
        2.0,
    )
    assert seng.trainer.schedule.name == "poly" and not seng.trainer.schedule.hyper_tables
    fig2 = composed("experiment=rkfac_fig2", "+experiment/method=kfac")
    table1 = composed("experiment=rkfac_table1", "+experiment/method=kfac")
    assert fig2.run_name == table1.run_name and fig2.experiment_name == "rkfac"


def test_rkfac_spectrum_protocol() -> None:
    cfg = composed("experiment=rkfac_spectrum")
    assert (cfg.optimizer.name, cfg.optimizer.T, cfg.optimizer.T_inv, cfg.trainer.epochs) == (
        "kfac",
        30,
        30,
        70,
    )
    schedule = parse_schedule(cfg.trainer.spectra)
    assert schedule == SpectrumSchedule(every_early=30, until=300, every_late=300)


# ----- the spectra hook ----------------------------------------------------------------------
def test_spectrum_schedule_saves_every_30_then_every_300() -> None:
    schedule = SpectrumSchedule(30, 300, 300)
    due = [k for k in range(1, 1001) if schedule.due(k)]
    assert due == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 600, 900]


def test_spectra_config_errors() -> None:
    with pytest.raises(ConfigError, match="every_early"):
        parse_schedule({"every_early": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_schedule({"every": 3})
    sgd = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="factor_spectra"):
        SpectrumRecorder.from_config({"every_early": 1}, "unused", sgd)
    assert SpectrumRecorder.from_config(None, "unused", sgd) is None


def test_recorder_writes_the_optimizers_spectra(tmp_path: Path) -> None:
    class Fake(torch.optim.SGD):
        def factor_spectra(self) -> dict:
            return {"fc": {"A": torch.tensor([3.0, 1.0]), "G": torch.tensor([2.0])}}

    recorder = SpectrumRecorder(
        SpectrumSchedule(2, 4, 4), tmp_path, Fake(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    )
    written = [recorder.after_step(k) for k in range(1, 9)]
    assert [p.name for p in written if p is not None] == ["step_2.pt", "step_4.pt", "step_8.pt"]
    saved = torch.load(tmp_path / "spectra" / "step_8.pt", weights_only=True)
    assert torch.equal(saved["fc"]["A"], torch.tensor([3.0, 1.0]))


# ----- make targets --------------------------------------------------------------------------
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``make`` in the repository, never reinstalling the venv (``-o`` its stamp)."""
    return subprocess.run(
        ["make", "-o", ".venv/.installed", f"PY={sys.executable}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_make
def test_make_targets_run_the_grid_with_resume_then_the_analysis() -> None:
    dry = make("-n", "reproduce-fig1", "SCALE=smoke", "DATA=fashion_mnist", "LAUNCHER=joblib")
    assert dry.returncode == 0, dry.stderr
    text = dry.stdout
    for piece in (
        "-m scale=smoke",
        "hydra/launcher=joblib",
        "trainer.resume=true",
        "trainer.skip_if_done=true",
        "experiment=fig1",
        "hydra.sweep.dir=multirun/fig1/smoke-fashion_mnist",
        "data=fashion_mnist",
        "trainer.seed=0 ",
        "model.width_multiplier=0.0625",
        "trainer.batch_size=8",
        "analysis.fig1 --runs multirun/fig1/smoke-fashion_mnist --tag smoke-fashion_mnist",
    ):
        assert piece in text, piece
    paper = make("-n", "reproduce-rkfac", "SCALE=paper").stdout
    assert "trainer.seed=0,1,2,3,4,5,6,7,8,9" in paper and "optimizer.T=30" in paper
    assert "trainer.batch_size" not in paper
    fig7 = make("-n", "reproduce-fig7", "SCALE=cpu", "DATA=fashion_mnist").stdout
    gcn_line = next(line for line in fig7.splitlines() if "fig7_gcn" in line)
    assert (
        "data=" not in gcn_line
        and fig7.count("hydra.sweep.dir=multirun/fig7/cpu-fashion_mnist") == 4
    )
    for target in ("reproduce-fig6", "reproduce-tables", "figures"):
        assert make("-n", target).returncode == 0


@needs_make
def test_make_rejects_an_unknown_scale() -> None:
    result = make("reproduce-fig1", "SCALE=huge")
    assert result.returncode != 0
    assert "SCALE=huge is invalid" in result.stderr


@needs_make
@pytest.mark.slow
def test_make_reproduce_fig1_smoke_end_to_end(tmp_path: Path) -> None:
    start = time.perf_counter()
    result = make(
        "reproduce-fig1",
        "SCALE=smoke",
        f"RUNS_ROOT={tmp_path / 'runs'}",
        f"RESULTS_DIR={tmp_path / 'results'}",
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 180, f"make reproduce-fig1 SCALE=smoke took {elapsed:.0f} s"
    runs = list((tmp_path / "runs" / "fig1" / "smoke").glob("*/summary.json"))
    assert len(runs) == 12  # 6 methods x 2 precisions x 1 seed
    for suffix in (
        "figures/fig1-smoke.png",
        "figures/fig1-smoke.pdf",
        "tables/fig1-smoke-final.md",
        "tables/fig1-smoke-memory.tex",
        "tables/fig1-smoke-runs.csv",
    ):
        assert (tmp_path / "results" / suffix).is_file(), suffix
    again = make(
        "reproduce-fig1",
        "SCALE=smoke",
        f"RUNS_ROOT={tmp_path / 'runs'}",
        f"RESULTS_DIR={tmp_path / 'results'}",
        timeout=600,
    )
    assert again.returncode == 0 and again.stdout.count("skipping finished run") == 12
