"""Config composition and bad-input handling of the training entrypoint.

Every ``conf/`` file must compose and validate; every kind of bad input must stop the
entrypoint before training with exit code 2 and one stderr line naming the key and the
value, and must leave no run directory behind nor touch an earlier run's files.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from experiments import train
from experiments.config import (
    GROUPS,
    ConfigError,
    check_group_overrides,
    config_hash,
    group_options,
    validate_config,
)
from experiments.trainer import run
from tests.conftest import CONF_DIR, cli_command, compose_config, subprocess_env, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")

DEFAULTS_GROUPS = ("data", "model", "optimizer", "trainer", "logger", "scale", "experiment")
BASE = ["scale=smoke", "data=synthetic", "trainer.device=cpu"]


def _all_group_files() -> list[tuple[str, str]]:
    """``(group, option)`` of every file under ``conf/<group>/`` (nested groups included)."""
    found = []
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and not group.startswith("hydra"):  # hydra/*: Hydra's own groups
            found.append((group, path.stem))
    return found


def _override(group: str, option: str) -> str:
    """The command-line override selecting ``option`` of ``group``."""
    return f"{group}={option}" if group in DEFAULTS_GROUPS else f"+{group}={option}"


def _first_job(overrides: list[str]) -> list[str]:
    """Overrides of the first job of the sweep these overrides define (``hydra.sweeper.params``).

    Experiments are grids: e.g. ``optimizer.lr: ${reproduce.lr.${optimizer.family}}`` only
    resolves for the optimizers the grid sweeps. Search distributions (``interval(...)``)
    keep the config's values.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    plain = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    assert isinstance(plain, dict)
    return [
        f"{key}={str(value).split(',')[0].strip()}"
        for key, value in plain.items()
        if "(" not in str(value)
    ]


# ----- every file of every group composes ----------------------------------------------


def test_every_default_group_has_options() -> None:
    for group in ("data", "model", "optimizer", "trainer", "logger", "scale"):
        assert group_options(group), group
    assert {"sgd", "adamw", "kfac", "rs_kfac", "sre_kfac", "ikfac", "ingd", "singd"} <= set(
        group_options("optimizer")
    )
    assert {"smoke", "cpu", "paper"} <= set(group_options("scale"))
    assert {"none", "wandb"} <= set(group_options("logger"))


@pytest.mark.parametrize(("group", "option"), _all_group_files())
def test_group_option_composes_and_validates(group: str, option: str) -> None:
    selection = [_override(group, option)]
    cfg = compose_config([*selection, *_first_job(selection)])
    plain = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert isinstance(plain, dict)
    validate_config(cfg)
    if group in ("data", "model", "optimizer", "logger"):
        assert cfg[group].name == option
    assert cfg.run_name.startswith(f"{cfg.optimizer.name}-{cfg.model.name}-{cfg.data.name}-")


def test_scale_sets_its_values() -> None:
    smoke = compose_config(["scale=smoke"])
    assert smoke.trainer.max_steps == 2 and smoke.data.synthetic_fallback is True
    cpu = compose_config(["scale=cpu"])
    assert cpu.trainer.max_steps is None and cpu.data.synthetic_fallback is False
    paper = compose_config(["scale=paper"])
    assert paper.trainer.max_epochs is None and paper.data.train_subset is None


def test_optimizer_presets_match_design() -> None:
    ikfac = compose_config(["optimizer=ikfac"]).optimizer
    assert (ikfac.family, ikfac.kfac_like, ikfac.alpha1) == ("singd", True, 0.0)
    assert list(compose_config(["optimizer=ingd"]).optimizer.structures) == ["dense", "dense"]
    assert compose_config(["optimizer=rs_kfac"]).optimizer.inverse == "rsvd"
    assert compose_config(["optimizer=sre_kfac"]).optimizer.inverse == "srevd"
    diagonal = compose_config(["optimizer=singd_diagonal"]).optimizer
    assert list(diagonal.structures) == ["diagonal", "diagonal"]


# ----- the run name (-> run directory) --------------------------------------------------


def test_run_name_is_deterministic_and_covers_the_config() -> None:
    name = compose_config(BASE).run_name
    assert compose_config(BASE).run_name == name
    for change in ("optimizer.lr=0.01", "trainer.seed=1", "model.depth=11", "data.train_subset=10"):
        assert compose_config([*BASE, change]).run_name != name, change
    # Keys that do not change what a run computes keep the directory (resume relies on it).
    for same in ("trainer.resume=true", "trainer.skip_if_done=true", "trainer.num_workers=1"):
        assert compose_config([*BASE, same]).run_name == name, same


def test_config_hash_ignores_key_order_and_resume() -> None:
    a = OmegaConf.create({"x": 1, "y": {"z": [1, 2]}, "resume": False})
    b = OmegaConf.create({"y": {"z": [1, 2]}, "x": 1, "resume": True})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(OmegaConf.create({"x": 2, "y": {"z": [1, 2]}}))
    assert len(config_hash(a)) == 8


# ----- check_group_overrides / validate_config --------------------------------------------


@pytest.mark.parametrize("group", ["optimizer", "model", "data", "logger", "scale", "trainer"])
def test_unknown_group_option_is_rejected(group: str) -> None:
    with pytest.raises(ConfigError, match=rf"{group}='foo' is invalid: allowed options are"):
        check_group_overrides(["scale=smoke", f"{group}=foo"])


def test_group_overrides_pass_for_known_options_and_sweeps() -> None:
    check_group_overrides(["optimizer=kfac", "model=vgg", "trainer.lr=1", "optimizer=sgd,adamw"])
    assert set(GROUPS) >= set(DEFAULTS_GROUPS)


BAD_VALUES = [
    ("optimizer.lr=-1", "optimizer.lr", "-1"),
    ("optimizer.lr=nan", "optimizer.lr", "nan"),
    ("optimizer.momentum=1.5", "optimizer.momentum", "1.5"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay", "-0.1"),
    ("optimizer=kfac optimizer.damping=-1", "optimizer.damping", "-1"),
    ("optimizer=singd optimizer.T=0", "optimizer.T", "0"),
    ("trainer.batch_size=0", "trainer.batch_size", "0"),
    ("trainer.batch_size=2.5", "trainer.batch_size", "2.5"),
    ("trainer.eval_batch_size=0", "trainer.eval_batch_size", "0"),
    ("trainer.epochs=0", "trainer.epochs", "0"),
    ("trainer.max_steps=0", "trainer.max_steps", "0"),
    ("trainer.seed=-1", "trainer.seed", "-1"),
    ("trainer.num_workers=-1", "trainer.num_workers", "-1"),
    ("trainer.precision=fp16", "trainer.precision", "fp16"),
    ("trainer.device=tpu", "trainer.device", "tpu"),
    ("trainer.deterministic=maybe", "trainer.deterministic", "maybe"),
    ("trainer.label_smoothing=1.5", "trainer.label_smoothing", "1.5"),
    ("trainer.label_smoothing=-0.1", "trainer.label_smoothing", "-0.1"),
    ("trainer.schedule.name=linear", "trainer.schedule.name", "linear"),
    ("trainer.schedule.name=piecewise", "trainer.schedule.table", "None"),
    ("trainer.schedule.gamma=0", "trainer.schedule.gamma", "0"),
    ("logger.mode=foo", "logger.mode", "foo"),
]


@pytest.mark.parametrize(("override", "key", "value"), BAD_VALUES)
def test_validate_config_names_key_and_value(override: str, key: str, value: str) -> None:
    extra = ["logger=wandb"] if override.startswith("logger.") else []
    cfg = compose_config([*BASE, *extra, *override.split()])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith(f"{key}=") and value in message
    assert "\n" not in message


def test_validate_config_accepts_the_defaults() -> None:
    validate_config(compose_config([]))
    validate_config(
        compose_config(
            ["trainer.schedule.name=piecewise", "trainer.schedule.table=[[0,0.1],[5,0.01]]"]
        )
    )


# ----- build-time errors: raised before anything is written ------------------------------

BUILD_ERRORS = [
    (["model=gcn"], "model=gcn", "(3, 32, 32)"),
    (["data.image_size=16"], "model=vgg", "(3, 16, 16)"),
    (["optimizer=kfac", "optimizer.inverse=qr"], "optimizer=kfac", "qr"),
    (["optimizer=singd", "optimizer.structures=[foo,foo]"], "optimizer=singd", "foo"),
    (["optimizer=singd", "optimizer.alpha1=1.5"], "optimizer=singd", "1.5"),
    (["optimizer=kfac", "optimizer.factor_dtype=int8"], "optimizer.factor_dtype", "int8"),
    (["+optimizer.nesterov_typo=true"], "optimizer.nesterov_typo", "True"),
    (["data.channels=2"], "data=synthetic", "2"),
    (["data=cifar10", "scale=cpu", "data.root=/nonexistent/ngd"], "data.root", "data_batch_1"),
]


@pytest.mark.parametrize(("overrides", "key", "value"), BUILD_ERRORS)
def test_build_errors_write_nothing(
    overrides: list[str], key: str, value: str, tmp_path: Path
) -> None:
    model = (
        ["model.width_multiplier=0.0625", "model.depth=11"] if "model=gcn" not in overrides else []
    )
    cfg = compose_config([*BASE, *model, *overrides])
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run(cfg, run_dir)
    assert str(info.value).startswith(key) and value in str(info.value)
    assert not run_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_a_config_error(tmp_path: Path) -> None:
    cfg = compose_config([*BASE, "trainer.device=cuda"])
    with pytest.raises(ConfigError, match="trainer.device='cuda' is invalid"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----- the command line, in process: precheck + Hydra main --------------------------------

CLI_ERRORS = [
    (["optimizer=foo"], "optimizer='foo'"),
    (["model=foo"], "model='foo'"),
    (["data=foo"], "data='foo'"),
    (["logger=foo"], "logger='foo'"),
    (["trainer.foo=1"], "trainer.foo='1'"),
    (["foo=1"], "foo='1'"),
    (["model=gcn", "model.depth=11"], "model.depth='11'"),
    (["optimizer.lr=-1"], "optimizer.lr=-1"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.epochs=0"], "trainer.epochs=0"),
    (["trainer.precision=fp16"], "trainer.precision='fp16'"),
    (["trainer.schedule.name=linear"], "trainer.schedule.name='linear'"),
    (["trainer.schedule.name=piecewise"], "trainer.schedule.table=None"),
    (["trainer.label_smoothing=1.5"], "trainer.label_smoothing=1.5"),
    (["logger=wandb", "logger.mode=foo"], "logger.mode='foo'"),
    (["model=gcn"], "(3, 32, 32)"),
    (["data.image_size=16"], "(3, 16, 16)"),
    (["data=cifar10", "scale=cpu", "data.root=/nonexistent/ngd"], "data_batch_1"),
    (["optimizer=kfac", "optimizer.inverse=qr"], "inverse='qr'"),
    (["optimizer=singd", "optimizer.structures=[foo,foo]"], "'foo'"),
    (["optimizer=singd", "optimizer.alpha1=1.5"], "alpha1=1.5"),
]
if not torch.cuda.is_available():
    CLI_ERRORS.append((["trainer.device=cuda"], "trainer.device='cuda'"))


@pytest.mark.parametrize(("args", "expected"), CLI_ERRORS)
def test_cli_rejects_bad_input_in_process(
    args: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    argv = [*BASE, "model.width_multiplier=0.0625", *args, f"hydra.run.dir={run_dir}"]
    if any(a.startswith("model=") for a in args):
        argv.remove("model.width_multiplier=0.0625")
    monkeypatch.setattr(sys, "argv", ["train", *argv])
    with pytest.raises(SystemExit) as info:
        train.cli()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not run_dir.exists()


def test_precheck_passes_a_good_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    train.precheck([*BASE, "optimizer=kfac", "optimizer.lr=0.1", "hydra.run.dir=/tmp/x"])
    train.precheck(["-m", "optimizer=sgd,adamw"])  # multiruns are left to Hydra
    assert capsys.readouterr().err == ""


# ----- the command line, real subprocesses: other runs stay untouched ---------------------


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


SUBPROCESS_ERRORS = [
    (["optimizer=foo"], "optimizer='foo'"),
    (["optimizer.lr=-1"], "optimizer.lr=-1"),
    # Outside the run hash: this config maps onto the finished run's own directory.
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size=0"),
    (["model=gcn"], "(3, 32, 32)"),
    (["data=cifar10", "scale=cpu", "data.root=/nonexistent/ngd"], "data_batch_1"),
]


def test_cli_subprocess_errors_touch_no_run_directory(
    tmp_path: Path, compose: Callable[..., DictConfig]
) -> None:
    """Exit code 2, one stderr line, nothing written into a finished run's directory."""
    base = tiny_overrides("vgg")
    cfg = compose(base)
    finished = tmp_path / "outputs" / cfg.experiment_name / cfg.run_name  # Hydra's default
    run(cfg, finished)
    assert (finished / "summary.json").exists()
    before = _snapshot(tmp_path)
    procs = []
    for args, _ in SUBPROCESS_ERRORS:
        argv = [a for a in base if not (a.startswith("model.") and "model=gcn" in args)]
        procs.append(
            subprocess.Popen(
                cli_command([*argv, *args]),
                cwd=tmp_path,
                env=subprocess_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc, (args, expected) in zip(procs, SUBPROCESS_ERRORS, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (args, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert expected in err, (args, err)
    assert _snapshot(tmp_path) == before
    assert [p.name for p in (tmp_path / "outputs" / cfg.experiment_name).iterdir()] == [
        cfg.run_name
    ]
