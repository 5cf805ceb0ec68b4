"""Data-parallel training: 2 gloo processes equal 1 process with the same global batch.

``torch.multiprocessing.spawn`` starts two CPU ranks that train a small CNN (Conv2d and
Linear layers, no BatchNorm) wrapped in ``DistributedDataParallel`` for 5 steps with
SINGD-diagonal, SINGD-dense (INGD) and KFAC, preconditioners updated every step
(``T=1``). Each rank sees half of every global batch; KFAC/SINGD average their Kronecker
statistics over the ranks. The parameters must equal those of one process that sees
the whole batch, and both ranks must hold the same optimizer state. A second test runs
``torchrun ... -m experiments.train trainer.distributed=true`` on a tiny config, then
resumes it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tests.conftest import REPO, subprocess_env, tiny_overrides

GLOBAL_BATCH = 8
STEPS = 5
WORLD = 2
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "singd_diagonal": {"structures": ("diagonal", "diagonal")},
    "singd_dense": {"structures": ("dense", "dense")},
    "kfac": {},
}
HYPER = {
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-3,
    "damping": 1e-2,
    "T": 1,
    "loss_average": "batch",
}


def make_model() -> nn.Module:
    """A small CNN: every layer preconditioned (Conv2d, Linear), no BatchNorm."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 6),
        nn.Tanh(),
        nn.Linear(6, 4),
    )


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    from optim import KFAC, SINGD

    if name == "kfac":
        return KFAC(model, ema=0.1, **HYPER, **OPTIMIZERS[name])
    return SINGD(model, lr_cov=0.1, alpha1=0.5, **HYPER, **OPTIMIZERS[name])


def batches() -> Iterator[tuple[Tensor, Tensor]]:
    """The global batches (the same in every process)."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        inputs = torch.randn(GLOBAL_BATCH, 2, 4, 4, generator=generator)
        yield inputs, torch.randint(0, 4, (GLOBAL_BATCH,), generator=generator)


def flat_tensors(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """Every tensor in a nested state dict, by its path."""
    if torch.is_tensor(obj):
        return {prefix: obj.detach().clone()}
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, (list, tuple))
        else []
    )
    found: dict[str, Tensor] = {}
    for key, value in items:
        found.update(flat_tensors(value, f"{prefix}/{key}"))
    return found


def train(name: str, rank: int, world: int) -> dict[str, dict[str, Tensor]]:
    """5 steps; this rank trains on its contiguous shard of every global batch."""
    model = make_model()
    net: nn.Module = DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(name, net)
    shard = GLOBAL_BATCH // world
    for inputs, targets in batches():
        part = slice(rank * shard, (rank + 1) * shard)
        loss = F.cross_entropy(net(inputs[part]), targets[part])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "state": flat_tensors(optimizer.state_dict()),
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        results = {name: train(name, rank, world) for name in OPTIMIZERS}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What both ranks of the 2-process run hold after 5 steps."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_two_ranks_equal_one_rank_with_the_same_global_batch(
    name: str, two_ranks: list[dict[str, Any]]
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(name, 0, 1)
    finally:
        torch.set_num_threads(threads)
    start = dict(make_model().named_parameters())
    rank0, rank1 = two_ranks[0][name], two_ranks[1][name]
    for key, value in single["params"].items():
        assert not torch.allclose(value, start[key]), f"{key} did not move"
        torch.testing.assert_close(rank0["params"][key], value, rtol=0, atol=1e-5, msg=key)
    assert rank0["state"].keys() == rank1["state"].keys() == single["state"].keys()
    assert any("layers" in key for key in single["state"])  # Kronecker factors are compared
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), f"ranks differ in {key}"
        torch.testing.assert_close(value, single["state"][key], rtol=1e-5, atol=1e-5, msg=key)


def test_torchrun_train_two_processes_then_resume(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    run_dir = tmp_path / "run"
    base = [
        *tiny_overrides("vgg"),
        "optimizer=singd_diagonal",
        "optimizer.T=1",
        "trainer.distributed=true",
        "trainer.max_steps=null",
        "data.train_subset=32",  # 4 global batches of 8 (4 samples per rank) per epoch
        f"hydra.run.dir={run_dir}",
    ]

    def launch(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [
            str(torchrun),
            "--standalone",
            f"--nproc_per_node={WORLD}",
            "-m",
            "experiments.train",
            *base,
            *extra,
        ]
        return subprocess.run(
            command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
        )

    first = launch("trainer.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 4
    second = launch("trainer.epochs=2", "trainer.resume=true")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 8
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [4, 8]


def test_launch_check_rejects_more_processes_than_the_global_batch() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.distributed",
            "--nproc",
            "4",
            *tiny_overrides("vgg"),
            "trainer.batch_size=2",
            "trainer.distributed=true",
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: trainer.batch_size=2 is invalid: must be a multiple of nproc_per_node=4 and >= it"
    ]
