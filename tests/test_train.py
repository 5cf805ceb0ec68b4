"""The training entrypoint end to end: runs, run directories, resume, schedules, W&B.

Runs are tiny (``scale=smoke``, models shrunk by ``tests.conftest.TINY_MODEL``) and use
one torch thread. The full (model x optimizer x precision) product is ``slow``; the
fast subset runs every optimizer config once and every model/precision pair with
SGD, KFAC and SINGD-diagonal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from experiments import train
from experiments.config import group_options
from experiments.rundir import CHECKPOINT, RunDirectory
from experiments.schedules import Schedule, piecewise
from experiments.trainer import run
from tests.conftest import (
    MACHINE_FIELDS,
    METRIC_KEYS,
    SUMMARY_KEYS,
    cli_command,
    compose_config,
    run_cli,
    subprocess_env,
    tiny_overrides,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ("vgg", "vgg16_bn", "gcn")
OPTIMIZERS = tuple(group_options("optimizer"))
PRECISIONS = ("fp32", "bf16")
REPRESENTATIVE = ("sgd", "kfac", "singd_diagonal")
FAST = {("vgg", opt, "fp32") for opt in OPTIMIZERS} | {
    (model, opt, precision)
    for model, opt, precision in itertools.product(MODELS, REPRESENTATIVE, PRECISIONS)
}
PRODUCT = [
    pytest.param(*combo, marks=() if combo in FAST else pytest.mark.slow, id="-".join(combo))
    for combo in itertools.product(MODELS, OPTIMIZERS, PRECISIONS)
]


# ----- helpers ----------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def computed_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Metrics rows without the fields that measure the machine (time, memory)."""
    return [
        {k: v for k, v in row.items() if k not in MACHINE_FIELDS} for row in read_metrics(run_dir)
    ]


def checkpoint_model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)["model"]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``root``."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_complete_run(run_dir: Path, cfg: Any, steps: int) -> None:
    """The files of a finished run hold every key of the design."""
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "ok", summary
    assert set(SUMMARY_KEYS) <= summary.keys()
    assert summary["steps"] == steps
    assert summary["seed"] == cfg.trainer.seed
    assert summary["precision"] == cfg.trainer.precision
    assert 0.0 <= summary["final_test_error"] <= 1.0
    assert summary["best_test_error"] <= summary["final_test_error"]
    assert isinstance(summary["packages"], dict) and summary["packages"]["torch"]
    assert summary["device"].startswith("cpu")
    rows = read_metrics(run_dir)
    assert rows and rows[-1]["step"] == steps
    for row in rows:
        assert set(METRIC_KEYS) <= row.keys(), row
        assert all(math.isfinite(row[k]) for k in METRIC_KEYS), row
        assert row["lr"] > 0 and row["peak_memory_bytes"] > 0
    assert rows[-1]["test_error"] == summary["final_test_error"]
    text = (run_dir / "config.yaml").read_text()
    assert "${" not in text
    assert OmegaConf.to_container(OmegaConf.create(text)) == OmegaConf.to_container(
        cfg, resolve=True
    )
    assert not (run_dir / "wandb").exists()  # logger=none
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == steps


# ----- 2-step runs of every model x optimizer x precision ----------------------------------


@pytest.mark.parametrize(("model", "optimizer", "precision"), PRODUCT)
def test_two_step_run(model: str, optimizer: str, precision: str, tmp_path: Path) -> None:
    cfg = compose_config(
        tiny_overrides(model, f"optimizer={optimizer}", f"trainer.precision={precision}")
    )
    error = run(cfg, tmp_path)
    assert_complete_run(tmp_path, cfg, steps=2)
    assert error == read_json(tmp_path / "summary.json")["final_test_error"]
    assert read_metrics(tmp_path)[-1]["optimizer_state_bytes"] > 0  # momenta at least
    if model == "gcn":  # Cora is absent: its synthetic stand-in says so
        summary = read_json(tmp_path / "summary.json")
        assert summary["synthetic_data"] is True
        assert any("synthetic" in note for note in summary["notes"])


# ----- determinism --------------------------------------------------------------------------

SHORT = [
    "data.train_subset=32",
    "trainer.epochs=2",
    "trainer.max_epochs=2",
    "trainer.max_steps=null",
]


@pytest.mark.parametrize("optimizer", ["sgd", "kfac", "singd"])
def test_same_seed_gives_bit_identical_runs(optimizer: str, tmp_path: Path) -> None:
    overrides = tiny_overrides(
        "vgg16_bn", f"optimizer={optimizer}", "trainer.deterministic=true", *SHORT
    )
    if optimizer != "sgd":
        overrides.append("optimizer.T=3")
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "seed1"]
    for run_dir in runs[:2]:
        run(compose_config(overrides), run_dir)
    run(compose_config([*overrides, "trainer.seed=1"]), runs[2])
    assert len(read_metrics(runs[0])) == 2
    assert computed_metrics(runs[0]) == computed_metrics(runs[1])
    assert_same_tensors(checkpoint_model(runs[0]), checkpoint_model(runs[1]))
    # ...and the comparison can fail: another seed gives other numbers.
    assert computed_metrics(runs[0]) != computed_metrics(runs[2])
    other = checkpoint_model(runs[2])
    assert any(not torch.equal(v, other[k]) for k, v in checkpoint_model(runs[0]).items())


# ----- resume -----------------------------------------------------------------------------


class _Interrupt(BaseException):
    """Stands in for a kill right after a checkpoint was written."""


RESUME_OPTIMIZERS = [
    pytest.param(
        opt, marks=() if opt in ("adamw", "kfac", "ingd", "singd_diagonal") else [pytest.mark.slow]
    )
    for opt in OPTIMIZERS
]


@pytest.mark.parametrize("optimizer", RESUME_OPTIMIZERS)
def test_resume_after_interrupt_is_bit_identical(
    optimizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: stop mid epoch 2, resume from epoch 1's checkpoint, match a straight run."""
    overrides = tiny_overrides(
        "vgg16_bn",
        f"optimizer={optimizer}",
        "trainer.batch_size=16",
        "trainer.eval_every_steps=1",
        *SHORT,
    )
    if compose_config(overrides).optimizer.get("T") is not None:
        overrides.append("optimizer.T=3")  # factor updates in both epochs, off epoch borders
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(compose_config(overrides), straight)

    append = RunDirectory.append_metrics

    def append_then_stop(self: RunDirectory, row: dict[str, Any]) -> None:
        append(self, row)
        if row["step"] == 3:  # mid epoch 2, after epoch 1's checkpoint (step 2)
            raise _Interrupt

    monkeypatch.setattr(RunDirectory, "append_metrics", append_then_stop)
    with pytest.raises(_Interrupt):
        run(compose_config(overrides), resumed)
    monkeypatch.undo()
    assert [row["step"] for row in read_metrics(resumed)] == [1, 2, 3]  # 3 must be dropped
    assert torch.load(resumed / CHECKPOINT, weights_only=True)["step"] == 2
    run(compose_config([*overrides, "trainer.resume=true"]), resumed)
    assert read_json(resumed / "summary.json")["status"] == "ok"
    assert computed_metrics(resumed) == computed_metrics(straight)
    assert_same_tensors(checkpoint_model(resumed), checkpoint_model(straight))
    assert not list(resumed.glob("previous-*"))  # resumed in place, nothing archived


RESUME_ARGS = [
    *tiny_overrides("vgg16_bn", "optimizer=ingd", "optimizer.T=3"),
    "data.train_subset=256",
    "trainer.batch_size=16",
    "trainer.epochs=3",
    "trainer.max_epochs=3",
    "trainer.max_steps=null",
    "trainer.eval_every_steps=4",
    "trainer.deterministic=true",
]


def test_resume_after_kill_in_subprocess(tmp_path: Path) -> None:
    """Kill a real run right after epoch 1's checkpoint; resuming gives the same result."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(
        cli_command([*RESUME_ARGS, f"hydra.run.dir={killed}"]),
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (killed / CHECKPOINT).exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()[1]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    epoch = torch.load(killed / CHECKPOINT, weights_only=True)["epoch"]
    assert epoch < 3, "the run finished before the kill; it must be slower for this test"
    assert not (killed / "summary.json").exists()

    resumed = run_cli([*RESUME_ARGS, f"hydra.run.dir={killed}", "trainer.resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch {epoch}" in resumed.stdout
    cfg = compose_config(RESUME_ARGS)
    run(cfg, straight)  # the uninterrupted reference, in this process
    assert read_json(killed / "summary.json")["status"] == "ok"
    assert computed_metrics(killed) == computed_metrics(straight)
    assert [row["step"] for row in read_metrics(killed)] == list(range(4, 49, 4))
    assert_same_tensors(checkpoint_model(killed), checkpoint_model(straight))


# ----- divergence -------------------------------------------------------------------------


def test_divergence_ends_with_status_diverged(tmp_path: Path) -> None:
    cfg = compose_config(tiny_overrides("vgg", "optimizer=sgd", "optimizer.lr=1e6"))
    assert math.isnan(run(cfg, tmp_path))
    summary = read_json(tmp_path / "summary.json")
    assert summary["status"] == "diverged"
    assert summary["final_test_error"] is None  # strict JSON: null, not NaN
    assert set(SUMMARY_KEYS) <= summary.keys()


def test_divergence_exits_with_code_zero_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = tiny_overrides("vgg", "optimizer=sgd", "optimizer.lr=1e30", f"hydra.run.dir={tmp_path}")
    monkeypatch.setattr(sys, "argv", ["train", *args])
    train.cli()  # returns (exit code 0) rather than raising SystemExit
    assert read_json(tmp_path / "summary.json")["status"] == "diverged"


# ----- W&B ------------------------------------------------------------------------------------

SECRET = "secret-0123456789abcdef0123456789abcdef01234567"


def test_wandb_offline_run_and_no_secret_anywhere(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        [*tiny_overrides("vgg"), "logger=wandb", f"hydra.run.dir={run_dir}"],
        tmp_path,
        WANDB_API_KEY=SECRET,
    )
    assert result.returncode == 0, result.stderr
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run"
    assert read_json(run_dir / "summary.json")["status"] == "ok"
    assert SECRET not in result.stdout + result.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert "WANDB_API_KEY" not in (run_dir / "config.yaml").read_text()


# ----- schedules ------------------------------------------------------------------------------


def schedule(name: str, **options: Any) -> Any:
    cfg = {"name": name, "warmup_epochs": 0, "step_epochs": 2, "gamma": 0.1, "table": None}
    cfg.update(options)
    return OmegaConf.create(cfg)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        # base lr 0.1, 10 steps per epoch, 5 epochs = 50 steps
        ("cosine", {}, {0: 0.1, 25: 0.05, 50: 0.0, 100: 0.0}),
        # cosine after 1 warm-up epoch over the remaining 40 steps; warm-up multiplies
        ("cosine", {"warmup_epochs": 1}, {0: 0.01, 4: 0.05, 10: 0.1, 30: 0.05}),
        ("step", {}, {0: 0.1, 19: 0.1, 20: 0.01, 39: 0.01, 40: 0.001}),
        ("constant", {}, {0: 0.1, 49: 0.1}),
        (
            "piecewise",
            {"table": [[3, 0.01], [0, 0.2], [1, 0.05]]},  # unsorted on purpose
            {0: 0.2, 9: 0.2, 10: 0.05, 29: 0.05, 30: 0.01, 49: 0.01},
        ),
    ],
)
def test_schedule_values(name: str, options: dict[str, Any], expected: dict[int, float]) -> None:
    sched = Schedule(schedule(name, **options), base_lr=0.1, steps_per_epoch=10, epochs=5)
    for step, lr in expected.items():
        assert sched.lr(step) == pytest.approx(lr, abs=1e-12), step


def test_cosine_quarter_point() -> None:
    sched = Schedule(schedule("cosine"), base_lr=2.0, steps_per_epoch=4, epochs=2)
    assert sched.lr(2) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_hyper_tables_set_param_group_keys() -> None:
    tables = {"damping": [[0, 0.1], [2, 0.05]], "T_inv": [[0, 10], [1, 50]]}
    sched = Schedule(schedule("constant", hyper_tables=tables), 0.3, steps_per_epoch=5, epochs=4)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.SGD(
        [{"params": params}, {"params": [torch.nn.Parameter(torch.ones(1))]}]
    )
    for step, damping, t_inv in [(0, 0.1, 10), (4, 0.1, 10), (5, 0.1, 50), (10, 0.05, 50)]:
        assert sched.apply(optimizer, step) == 0.3
        for group in optimizer.param_groups:
            assert (group["lr"], group["damping"], group["T_inv"]) == (0.3, damping, t_inv)
    assert piecewise([[5, "b"], [0, "a"]], 4) == "a"


def test_schedule_reaches_the_optimizer_in_a_run(tmp_path: Path) -> None:
    cfg = compose_config(
        tiny_overrides(
            "vgg",
            "optimizer=kfac",
            "optimizer.lr=0.4",
            "trainer.schedule.name=step",
            "trainer.schedule.step_epochs=1",
            "trainer.schedule.gamma=0.5",
            "+trainer.schedule.hyper_tables.damping=[[0,0.1],[1,0.02]]",
            "trainer.batch_size=32",
            *SHORT,
        )
    )
    run(cfg, tmp_path)
    # 32 samples / 32 per batch: 1 step per epoch; the lr logged is that of the last step.
    assert [row["lr"] for row in read_metrics(tmp_path)] == [0.4, 0.2]
    groups = torch.load(tmp_path / CHECKPOINT, weights_only=True)["optimizer"]["param_groups"]
    assert {group["damping"] for group in groups} == {0.02}


# ----- the run directory ---------------------------------------------------------------------


def test_hydra_places_the_same_config_in_the_same_directory() -> None:
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    dirs = []
    for extra in ([], [], ["trainer.resume=true"], ["optimizer.lr=0.2"]):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=["scale=smoke", *extra], return_hydra_config=True)
        dirs.append(OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"])
    assert dirs[0] == dirs[1] == dirs[2] != dirs[3]
    assert dirs[0].startswith("outputs/default/sgd-vgg-mnist5k-fp32-s0-")


def test_rerun_archives_previous_and_skip_if_done(tmp_path: Path) -> None:
    overrides = tiny_overrides("vgg")
    run(compose_config(overrides), tmp_path)
    first = snapshot(tmp_path)
    run(compose_config(overrides), tmp_path)  # no resume: the earlier run is moved aside
    (previous,) = tmp_path.glob("previous-*")
    assert snapshot(previous) == first  # nothing lost
    assert read_json(tmp_path / "summary.json")["status"] == "ok"
    assert len(read_metrics(tmp_path)) == len(read_metrics(previous))

    before = snapshot(tmp_path)
    error = run(compose_config([*overrides, "trainer.skip_if_done=true"]), tmp_path)
    assert error == read_json(tmp_path / "summary.json")["final_test_error"]
    assert snapshot(tmp_path) == before  # skipped: not a byte written

    summary = read_json(tmp_path / "summary.json")
    summary["status"] = "failed"  # an unfinished run is not skipped
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    run(compose_config([*overrides, "trainer.skip_if_done=true"]), tmp_path)
    assert read_json(tmp_path / "summary.json")["status"] == "ok"
    assert len(list(tmp_path.glob("previous-*"))) == 2


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    cfg = compose_config(tiny_overrides("vgg", "trainer.resume=true"))
    run(cfg, tmp_path)
    assert_complete_run(tmp_path, cfg, steps=2)


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path: Path) -> None:
    run(compose_config(tiny_overrides("vgg", "optimizer=kfac")), tmp_path)
    state = RunDirectory(tmp_path).load_checkpoint()
    assert state is not None
    assert {"model", "optimizer", "rng", "step", "epoch"} <= state.keys()
    # A checkpoint that pickles code is refused, not executed.
    torch.save({"model": {}, "evil": _Interrupt}, tmp_path / CHECKPOINT)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        RunDirectory(tmp_path).load_checkpoint()


def test_archiving_twice_within_a_second_keeps_both(tmp_path: Path) -> None:
    run_dir = RunDirectory(tmp_path)
    archived = []
    for text in ("first", "second", "third"):
        (tmp_path / "summary.json").write_text(json.dumps({"status": text}))
        archived.append(run_dir.archive_previous())
    assert len(set(archived)) == 3
    assert [read_json(path / "summary.json")["status"] for path in archived] == [
        "first",
        "second",
        "third",
    ]
    assert run_dir.archive_previous() is None  # nothing left to archive
