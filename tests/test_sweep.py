"""Random search (Hydra + Optuna): search spaces, bad input, storage/resume, NaN, analysis.

Fast tests use Hydra's compose API, Optuna directly, and a toy Hydra app (a task
function of two numbers) that runs through the real sweeper, callback, sampler and
SQLite storage in a few seconds. The end-to-end sweeps of ``experiments.train`` (joblib
launcher, two processes) are ``slow``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from analysis import sweep as analysis
from experiments import sweep
from experiments.config import ConfigError, group_options
from tests.conftest import CONF_DIR, REPO, subprocess_env, tiny_overrides

SINGD_FAMILY = {"lr", "weight_decay", "damping", "lr_cov", "alpha1"}  # Table 4, SINGD column
KFAC_FAMILY = {"lr", "weight_decay", "damping", "ema"}
EXPECTED = {
    "sgd": {"lr", "weight_decay"},
    "adamw": {"lr", "weight_decay", "eps", "betas.1"},
    "ikfac": SINGD_FAMILY - {"alpha1"},  # Table 4: alpha1 tuned for SINGD only
    "kfac": KFAC_FAMILY,
    "rs_kfac": KFAC_FAMILY,
    "sre_kfac": KFAC_FAMILY,
    "seng": {"lr", "weight_decay", "damping"},
}
LINEAR = {"alpha1", "betas.1"}  # momentum-like weights: uniform, everything else log-uniform


def expected_space(optimizer: str) -> set[str]:
    """The tuned optimizer keys of an optimizer's search space."""
    return EXPECTED.get(optimizer, SINGD_FAMILY)


def compose_sweep(overrides: list[str]):
    """The multirun config of a sweep (with its ``hydra`` node), as the callback sees it."""
    from hydra import compose, initialize_config_dir

    from experiments.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def with_param(cfg: DictConfig, key: str, value: str) -> DictConfig:
    """``cfg`` with ``hydra.sweeper.params[key] = value`` (the compose API refuses sweeps)."""
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.sweeper.params[key] = value
    return cfg


# ----- search spaces ------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", group_options("optimizer"))
def test_every_optimizer_has_the_table4_search_space(optimizer: str) -> None:
    cfg = compose_sweep([f"+search={optimizer}", f"optimizer={optimizer}"])
    intervals = sweep.check_search_space(cfg)
    keys = {k.removeprefix("optimizer.") for k in intervals}
    assert keys == expected_space(optimizer)
    for key, (low, high, is_log) in intervals.items():
        assert 0 <= low < high
        assert is_log == (key.removeprefix("optimizer.") not in LINEAR), key
    if optimizer != "adamw":
        assert cfg.optimizer.momentum == 0.9  # alpha2 fixed (Table 4)
    else:
        assert cfg.optimizer.betas[0] == 0.9
    if optimizer == "ikfac":
        assert cfg.optimizer.alpha1 == 0.0
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.sampler._target_ == "experiments.sweep.ResumableRandomSampler"
    assert sweeper.sampler.seed == 0 and sweeper.direction == "minimize"
    name = f"{cfg.optimizer.name}-vgg-mnist5k-cpu"
    assert sweeper.study_name == name and cfg.hydra.sweep.dir == f"multirun/sweep/{name}"
    assert sweeper.storage == f"sqlite:///multirun/sweep/{name}/optuna.db"
    assert cfg.hydra.callbacks.random_search._target_ == "experiments.sweep.RandomSearchCallback"
    assert cfg.trainer.resume and cfg.trainer.skip_if_done


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("tag(log, interval(1e-1, 1e-4))", "low < high"),  # inverted
        ("tag(log, interval(1e-2, 1e-2))", "low < high"),  # empty
        ("interval(0.5, 0.1)", "low < high"),
        ("tag(log, interval(0.0, 1e-1))", "low > 0"),
    ],
)
def test_bad_interval_is_rejected(value: str, fragment: str) -> None:
    cfg = with_param(compose_sweep(["+search=sgd", "optimizer=sgd"]), "optimizer.lr", value)
    with pytest.raises(ConfigError, match="hydra.sweeper.params.optimizer.lr=") as info:
        sweep.check_search_space(cfg)
    assert fragment in str(info.value)


def test_unknown_key_and_empty_space_are_rejected() -> None:
    cfg = compose_sweep(["+search=sgd", "optimizer=sgd"])
    cfg = with_param(cfg, "optimizer.nope", "interval(0.1, 1.0)")
    with pytest.raises(ConfigError, match="optimizer.nope is not a key"):
        sweep.check_search_space(cfg)
    cfg = compose_sweep(["+search=base", "optimizer=sgd"])
    with pytest.raises(ConfigError, match="at least one interval"):
        sweep.check_search_space(cfg)


def test_bad_interval_exits_2_with_one_line_and_starts_nothing(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "-m",
            "+search=sgd",
            "optimizer=sgd",
            "optimizer.lr=tag(log, interval(1e-1, 1e-4))",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: optimizer.lr=") and "low < high" in lines[0]
    assert not sweep_dir.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--optimizer=sgd", "--launcher=nope"], "hydra/launcher='nope' is invalid"),
        (["--optimizer=nope"], "optimizer='nope' is invalid"),
        (["--optimizer=sgd", "--trials=0"], "trials=0 is invalid"),
        (["--optimizer=sgd", "--model=nope"], "model='nope' is invalid"),
    ],
)
def test_driver_rejects_bad_arguments_before_starting(
    args: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("sweep started"))
    assert sweep.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]


def test_driver_builds_the_hydra_multirun(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda command: seen.append(command) or 0)
    args = ["--optimizer=kfac", "--launcher=joblib", "--jobs=3", "--trials=7", "trainer.epochs=2"]
    assert sweep.main(args) == 0
    command = seen[0]
    assert command[1:5] == ["-m", "experiments.train", "-m", "+search=kfac"]
    for item in (
        "optimizer=kfac",
        "hydra/launcher=joblib",
        "hydra.sweeper.n_trials=7",
        "sweep.parallel=3",
        "hydra.launcher.n_jobs=3",
        "trainer.epochs=2",
    ):
        assert item in command


def test_slurm_launcher_config() -> None:
    cfg = compose_sweep(
        ["+search=sgd", "optimizer=sgd", "hydra/launcher=slurm", "sweep.parallel=5"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.array_parallelism == 5
    assert launcher.timeout_min > 0 and "partition" in launcher


# ----- storage, sampler, resume -------------------------------------------------------
def _draw(study: optuna.Study) -> tuple[optuna.trial.Trial, dict[str, float]]:
    trial = study.ask()
    values = {
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "alpha1": trial.suggest_float("alpha1", 0.0, 0.9),
    }
    return trial, values


def test_sqlite_storage_resume_draws_what_an_uninterrupted_sweep_draws(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'new' / 'optuna.db'}"
    sweep.prepare_storage(url)  # creates the folder; optuna 2.10 + SQLAlchemy 2 work after it
    sweep.prepare_storage(url)  # idempotent
    reference = optuna.create_study(study_name="s", sampler=sweep.ResumableRandomSampler(seed=7))
    expected = []
    for _ in range(4):
        trial, values = _draw(reference)
        expected.append(values)
        reference.tell(trial, values["lr"])
    assert len({v["lr"] for v in expected}) == 4  # every trial draws new values

    study = optuna.create_study(
        study_name="s", storage=url, sampler=sweep.ResumableRandomSampler(seed=7)
    )
    got = []
    for _ in range(2):  # trial 0 completes; trial 1 is "killed" while running
        trial, values = _draw(study)
        got.append(values)
    study.tell(0, got[0]["lr"])
    assert sweep.resume_study(url, "s") == (1, 1)
    resumed = optuna.load_study(
        study_name="s", storage=url, sampler=sweep.ResumableRandomSampler(seed=7)
    )
    assert resumed.trials[1].state == optuna.trial.TrialState.FAIL
    for _ in range(3):
        trial, values = _draw(resumed)
        got.append(values)
        resumed.tell(trial, values["lr"])
    assert got[2] == got[1] == expected[1]  # the interrupted trial is re-run with its values
    assert got[3:] == expected[2:]
    assert sweep.resume_study(url, "s") == (4, 0)


def test_nan_result_becomes_a_failed_job() -> None:
    callback = sweep.RandomSearchCallback()
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": "/x"}}})
    diverged = JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan)
    callback.on_job_end(config, diverged)
    assert diverged.status == JobStatus.FAILED
    with pytest.raises(sweep.DivergedRunError, match="diverged"):
        _ = diverged.return_value
    fine = JobReturn(status=JobStatus.COMPLETED, _return_value=0.25)
    callback.on_job_end(config, fine)
    assert fine.status == JobStatus.COMPLETED and fine.return_value == 0.25


# ----- the real sweeper with a toy task -----------------------------------------------
TOY_CONFIG = """
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: random
  - _self_
x: 1.0
y: 1.0
optimizer: {name: toy, lr: 1.0}
model: {name: m}
data: {name: d}
hydra:
  sweep: {dir: "${oc.env:TOY_DIR}", subdir: "${hydra.job.num}"}
  sweeper:
    sampler: {_target_: experiments.sweep.ResumableRandomSampler, seed: 3}
    direction: minimize
    study_name: toy
    storage: sqlite:///${hydra.sweep.dir}/optuna.db
    n_trials: 6
    n_jobs: 1
    max_failure_rate: 1.0
    params:
      optimizer.lr: tag(log, interval(1e-2, 1e2))
      y: interval(0.0, 1.0)
  callbacks:
    random_search: {_target_: experiments.sweep.RandomSearchCallback}
"""
TOY_APP = """
import json, os
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="toy")
def main(cfg) -> float:
    calls = Path(os.environ["TOY_DIR"]) / "calls.txt"
    with calls.open("a") as f:
        f.write(f"{cfg.optimizer.lr} {cfg.y}\\n")
    if len(calls.read_text().splitlines()) == int(os.environ.get("TOY_KILL_AT", "0")):
        os._exit(9)  # killed while running
    value = float("nan") if cfg.optimizer.lr > 1.0 else cfg.optimizer.lr + cfg.y
    out = Path(HydraConfig.get().runtime.output_dir)
    status = "diverged" if value != value else "ok"
    (out / "summary.json").write_text(json.dumps({"status": status}))
    return value

if __name__ == "__main__":
    main()
"""


def run_toy(app: Path, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(app), "-m"],
        cwd=app.parent,
        capture_output=True,
        text=True,
        env=subprocess_env(TOY_DIR=str(out), **env),
        timeout=120,
    )


@pytest.fixture(scope="module")
def toy_sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted toy sweep and one killed at its 3rd trial, then resumed."""
    root = tmp_path_factory.mktemp("toy")
    (root / "conf").mkdir()
    (root / "conf" / "toy.yaml").write_text(textwrap.dedent(TOY_CONFIG))
    app = root / "toy.py"
    app.write_text(textwrap.dedent(TOY_APP))
    whole, killed = root / "sweeps" / "whole", root / "sweeps" / "killed"
    first = run_toy(app, whole)
    assert first.returncode == 0, first.stderr[-3000:]
    crash = run_toy(app, killed, TOY_KILL_AT="3")
    assert crash.returncode != 0
    resumed = run_toy(app, killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 of 6 trials finished, 1 interrupted" in resumed.stderr + resumed.stdout
    return {"whole": whole, "killed": killed}


def _load(path: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{path}/optuna.db").trials


def test_toy_sweep_diverged_trials_fail_and_resume_repeats_the_draws(
    toy_sweeps: dict[str, Path],
) -> None:
    whole, killed = _load(toy_sweeps["whole"]), _load(toy_sweeps["killed"])
    assert len(whole) == 6 and len(killed) == 7
    for trial in whole:
        nan = trial.params["optimizer.lr"] > 1.0
        assert trial.state.name == ("FAIL" if nan else "COMPLETE")
    assert {t.state.name for t in whole} == {"FAIL", "COMPLETE"}  # seed 3 draws both kinds
    assert killed[2].system_attrs[sweep.INTERRUPTED] and killed[2].state.name == "FAIL"
    kept = [t for t in killed if not t.system_attrs.get(sweep.INTERRUPTED)]
    assert [t.params for t in kept] == [t.params for t in whole]
    assert [t.state for t in kept] == [t.state for t in whole]
    calls = (toy_sweeps["killed"] / "calls.txt").read_text().splitlines()
    assert calls[2] == calls[3]  # the interrupted trial ran again with the same values


def test_analysis_best_trial_plot_and_tuned_file(
    toy_sweeps: dict[str, Path], tmp_path: Path
) -> None:
    frame = analysis.collect(toy_sweeps["whole"].parent)
    assert len(frame) == 13 and set(frame["sweep_dir"]) == {str(p) for p in toy_sweeps.values()}
    one = frame[frame["sweep_dir"] == str(toy_sweeps["whole"])]
    done = one[one["state"] == "COMPLETE"]
    assert set(one.loc[one["state"] == "FAIL", "status"]) == {"diverged"}
    best = analysis.best_trials(one).iloc[0]
    assert best["test_error"] == done["test_error"].min()
    assert math.isclose(best["test_error"], best["optimizer.lr"] + best["y"])
    written = analysis.write_outputs(frame, tmp_path / "out", tmp_path / "tuned")
    assert (tmp_path / "out" / "whole" / "hparams.png").stat().st_size > 1000
    tuned = OmegaConf.load(tmp_path / "tuned" / "toy_m_d.yaml")
    assert tuned.hparams.toy.lr == pytest.approx(best["optimizer.lr"], rel=1e-12)
    overrides = (tmp_path / "out" / "whole" / "best_overrides.txt").read_text().split()
    assert f"optimizer.lr={float(best['optimizer.lr'])!r}" in overrides
    assert all(path.exists() for path in written)
    assert analysis.main(["--root", str(tmp_path / "none")]) == 2


# ----- experiments.train end to end ---------------------------------------------------
@pytest.mark.slow
def test_joblib_sweep_runs_two_trials_in_parallel_processes_and_resumes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--optimizer=sgd",
        "--trials=2",
        "--jobs=2",
        "--launcher=joblib",
        "--scale=smoke",
        "--model=vgg",
        "--data=synthetic",
        *[o for o in tiny_overrides("vgg") if not o.startswith(("scale=", "model=", "data="))],
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep_dir.glob("*/summary.json"))
    assert len(runs) == 2
    starts = {}
    for run in runs:
        assert '"status": "ok"' in (run / "summary.json").read_text()
        line = next(
            li for li in (run / "train.log").read_text().splitlines() if "trial started" in li
        )
        pid, at = line.split("process ")[1].split(" at ")
        starts[int(pid)] = (float(at), (run / "summary.json").stat().st_mtime)
    assert len(starts) == 2 and os.getpid() not in starts  # two worker processes
    (s1, e1), (s2, e2) = starts.values()
    print(f"trial windows overlap: {s1 < e2 and s2 < e1}")
    trials = _study_trials(sweep_dir)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    again = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "0 trials to run" in again.stderr + again.stdout
    assert len(_study_trials(sweep_dir)) == 2


def _study_trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = "sgd-vgg-synthetic-smoke"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db").trials
