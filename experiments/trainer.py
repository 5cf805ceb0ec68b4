"""The training loop behind ``experiments/train.py``.

``run(cfg, run_dir)`` builds data, model and optimizer from the composed config (all
config errors surface here, before anything is written), then trains with a tqdm
progress bar, evaluates every epoch (or every ``trainer.eval_every_steps``), logs one
``metrics.jsonl`` row per evaluation, checkpoints every epoch, and writes
``summary.json``. A non-finite loss ends the run with ``status: diverged``.
"""

from __future__ import annotations

import math
import os
import random
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from experiments.config import ConfigError, validate_config
from experiments.distributed import DistContext, all_finite, init_distributed, shutdown
from experiments.loggers import NullLogger, build_logger
from experiments.optimizers import build_optimizer
from experiments.rundir import RunDirectory, environment_info, rng_state, set_rng_state
from experiments.schedules import Schedule
from experiments.spectra import SpectrumRecorder  # reproduce: factor spectra (issue 6)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Setup:
    """Everything built from the config before training starts."""

    cfg: DictConfig
    device: torch.device
    bundle: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Any = None
    test_loader: Any = None
    steps_per_epoch: int = 1
    epochs: int = 1
    dist: DistContext = field(default_factory=DistContext)
    notes: list[str] = field(default_factory=list)

    @property
    def plain_model(self) -> nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, "no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; optionally enable deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Builder keyword arguments of ``cfg.model`` (documentation keys removed)."""
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.pop("name")
    return {k: v for k, v in kwargs.items() if not k.startswith("param_count")}


def build(cfg: DictConfig) -> Setup:
    """Validate ``cfg`` and build data, model and optimizer (no file is written).

    Raises:
        ConfigError: For any bad value, a missing dataset, or a model that cannot take
            the dataset's input shape.
    """
    from data import DataNotFoundError, build_data, make_loader
    from models import build_model

    validate_config(cfg)
    device = resolve_device(cfg.trainer.device)
    context = init_distributed(cfg.trainer.distributed, cfg.trainer.device, cfg.trainer.batch_size)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(data_cfg, dict)
    try:
        bundle = build_data(seed=cfg.trainer.seed, **data_cfg)
    except DataNotFoundError as error:
        raise ConfigError.wrap("data.root", error) from error
    except ValueError as error:
        raise ConfigError.wrap(f"data={cfg.data.name}", error) from error
    try:
        model = build_model(
            cfg.model.name,
            num_classes=bundle.num_classes,
            input_shape=bundle.input_shape,
            **model_kwargs(cfg),
        )
    except (ValueError, TypeError) as error:
        raise ConfigError.wrap(f"model={cfg.model.name}", error) from error
    model.to(device)
    if device.type == "cuda":  # per-run peak memory, also inside a multirun process
        torch.cuda.reset_peak_memory_stats(device)
    if context.enabled:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(cfg.optimizer, model)
    setup = Setup(cfg, device, bundle, model, optimizer, dist=context)
    epochs = cfg.trainer.epochs
    if cfg.trainer.max_epochs is not None:
        epochs = min(epochs, cfg.trainer.max_epochs)
    setup.epochs = epochs
    if bundle.kind == "image":
        batch = cfg.trainer.batch_size // context.world_size

        def train_loader(epoch: int) -> Any:
            sampler = None
            if context.enabled:
                sampler = DistributedSampler(
                    bundle.train,
                    context.world_size,
                    context.rank,
                    shuffle=True,
                    seed=cfg.trainer.seed,
                    drop_last=True,
                )
                sampler.set_epoch(epoch)
            return make_loader(
                bundle.train,
                batch,
                shuffle=True,
                sampler=sampler,
                seed=cfg.trainer.seed * 100_003 + epoch,
                drop_last=len(bundle.train) > cfg.trainer.batch_size,
                num_workers=cfg.trainer.num_workers,
            )

        setup.train_loader = train_loader
        setup.test_loader = make_loader(
            bundle.test,
            cfg.trainer.eval_batch_size,
            shuffle=False,
            seed=cfg.trainer.seed,
            num_workers=cfg.trainer.num_workers,
        )
        setup.steps_per_epoch = len(setup.train_loader(0))
    if bundle.synthetic:
        setup.notes.append(bundle.note)
    return setup


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps (momenta, moments, preconditioners)."""
    if hasattr(optimizer, "state_bytes"):
        return int(optimizer.state_bytes())
    total = 0
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Trainer:
    """Runs one training job into a run directory.

    Args:
        setup: The built objects.
        run_dir: Where the run's files go.
    """

    def __init__(self, setup: Setup, run_dir: RunDirectory) -> None:
        self.s = setup
        self.cfg = setup.cfg
        self.run_dir = run_dir
        self.autocast = (
            torch.autocast(setup.device.type, dtype=torch.bfloat16)
            if self.cfg.trainer.precision == "bf16"
            else nullcontext()
        )
        self.schedule = Schedule(
            self.cfg.trainer.schedule, self.cfg.optimizer.lr, setup.steps_per_epoch, setup.epochs
        )
        self.step = 0
        self.start_epoch = 0
        self.train_time = 0.0
        self.best_error = math.inf
        self.last_eval: dict[str, Any] = {}
        self._losses: list[float] = []
        # reproduce (issue 6): save factor eigen-spectra when trainer.spectra is set
        self.spectra = SpectrumRecorder.from_config(
            self.cfg.trainer.get("spectra"), run_dir.path, setup.optimizer, setup.dist.is_main
        )

    # ----- one step / one evaluation -------------------------------------------------
    def _loss(
        self, batch: Any, train: bool, model: nn.Module | None = None
    ) -> tuple[torch.Tensor, int, int]:
        """Loss, number of errors and number of samples of a batch (or the graph)."""
        model = self.s.model if model is None else model
        smoothing = self.cfg.trainer.label_smoothing if train else 0.0
        if self.s.bundle.kind == "graph":
            graph = self.s.bundle.graph
            mask = graph.train_mask if train else graph.test_mask
            with self.autocast:
                logits = model(graph.x, graph.edge_index)
            logits, target = logits[mask].float(), graph.y[mask]
        else:
            inputs, target = (t.to(self.s.device, non_blocking=True) for t in batch)
            with self.autocast:
                logits = model(inputs)
            logits = logits.float()
        loss = F.cross_entropy(logits, target, label_smoothing=smoothing)
        errors = int((logits.argmax(dim=1) != target).sum())
        return loss, errors, int(target.numel())

    def train_step(self, batch: Any) -> float:
        """Forward, backward and optimizer step; raises :class:`Diverged` on NaN/inf."""
        self.schedule.apply(self.s.optimizer, self.step)
        self.s.model.train()
        loss, _, _ = self._loss(batch, train=True)
        if not all_finite(loss.detach(), self.s.dist):
            raise Diverged(f"loss {loss.item()} at step {self.step}")
        loss.backward()
        self.s.optimizer.step()
        self.s.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Test loss and test error."""
        self.s.model.eval()
        total_loss, total_errors, total = 0.0, 0, 0
        batches = [None] if self.s.bundle.kind == "graph" else self.s.test_loader
        for batch in batches:
            loss, errors, count = self._loss(batch, train=False, model=self.s.plain_model)
            total_loss += loss.item() * count
            total_errors += errors
            total += count
        return total_loss / max(1, total), total_errors / max(1, total)

    # ----- bookkeeping ----------------------------------------------------------------
    def _log_eval(self, epoch: float, logger: Any) -> dict[str, Any]:
        if not self.s.dist.is_main:  # rank 0 evaluates and writes for everyone
            self._losses = []
            return {}
        test_loss, test_error = self.evaluate()
        if not math.isfinite(test_loss):
            raise Diverged(f"test loss {test_loss} at step {self.step}")
        self.best_error = min(self.best_error, test_error)
        row = {
            "step": self.step,
            "epoch": round(epoch, 4),
            "train_loss": float(np.mean(self._losses)) if self._losses else None,
            "test_loss": test_loss,
            "test_error": test_error,
            "lr": self.s.optimizer.param_groups[0]["lr"],
            "time_s": self.train_time,
            "step_time_s": self.train_time / max(1, self.step),
            "peak_memory_bytes": peak_memory_bytes(self.s.device),
            "optimizer_state_bytes": optimizer_state_bytes(self.s.optimizer),
        }
        self._losses = []
        self.last_eval = row
        self.run_dir.append_metrics(row)
        logger.log(row, self.step)
        return row

    def _checkpoint(self, epoch: int) -> None:
        if not self.s.dist.is_main:
            return
        self.run_dir.save_checkpoint(
            {
                "model": self.s.plain_model.state_dict(),
                "optimizer": self.s.optimizer.state_dict(),
                "rng": rng_state(),
                "step": self.step,
                "epoch": epoch,
                "train_time_s": self.train_time,
                "best_test_error": self.best_error,
                "last_eval": self.last_eval,
            }
        )

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`_checkpoint`."""
        self.s.plain_model.load_state_dict(checkpoint["model"])
        self.s.optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"])
        self.step = checkpoint["step"]
        self.start_epoch = checkpoint["epoch"]
        self.train_time = checkpoint["train_time_s"]
        self.best_error = checkpoint["best_test_error"]
        self.last_eval = checkpoint["last_eval"]
        self.run_dir.truncate_metrics(self.step)

    # ----- the loop -------------------------------------------------------------------
    def fit(self, logger: Any) -> str:
        """Train all epochs; return the status (``ok`` or ``diverged``)."""
        cfg = self.cfg.trainer
        max_steps = cfg.max_steps
        eval_every = cfg.eval_every_steps
        steps_per_epoch = self.s.steps_per_epoch
        try:
            for epoch in range(self.start_epoch, self.s.epochs):
                batches = [None] if self.s.bundle.kind == "graph" else self.s.train_loader(epoch)
                bar = tqdm(
                    batches,
                    desc=f"epoch {epoch + 1}/{self.s.epochs}",
                    leave=False,
                    disable=None,
                    dynamic_ncols=True,
                )
                for batch in bar:
                    start = time.perf_counter()
                    loss = self.train_step(batch)
                    if self.s.device.type == "cuda":
                        torch.cuda.synchronize(self.s.device)
                    self.train_time += time.perf_counter() - start
                    if self.spectra is not None:  # reproduce (issue 6): experiments/spectra.py
                        self.spectra.after_step(self.step)
                    self._losses.append(loss)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if eval_every and self.step % eval_every == 0:
                        self._log_eval(self.step / steps_per_epoch, logger)
                    if max_steps is not None and self.step >= max_steps:
                        break
                bar.close()
                if not (eval_every and self.step % eval_every == 0):
                    self._log_eval(self.step / steps_per_epoch, logger)
                if cfg.checkpoint:
                    self._checkpoint(epoch + 1)
                if max_steps is not None and self.step >= max_steps:
                    break
        except Diverged as error:
            print(f"run diverged: {error}")
            return "diverged"
        return "ok"


def run(cfg: DictConfig, run_path: str | Path) -> float:
    """Build, train and summarise one run.

    Args:
        cfg: The composed config.
        run_path: The run directory (Hydra's output directory).

    Returns:
        The final test error (NaN for a diverged run) — the objective of sweeps.
    """
    setup = build(cfg)
    try:
        return _train(cfg, setup, RunDirectory(run_path, writable=setup.dist.is_main))
    finally:
        shutdown(setup.dist)


def _train(cfg: DictConfig, setup: Setup, run_dir: RunDirectory) -> float:
    done = run_dir.summary()
    if cfg.trainer.skip_if_done and done and done.get("status") == "ok":
        print(f"skipping finished run {run_dir.path} (summary.json status ok)")
        return float(done["final_test_error"] if done["final_test_error"] is not None else math.nan)
    checkpoint = run_dir.load_checkpoint() if cfg.trainer.resume else None
    if checkpoint is None:
        archived = run_dir.archive_previous()
        if archived is not None:
            print(f"an earlier run in {run_dir.path} was moved to {archived}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_dir.write_config(cfg)
    trainer = Trainer(setup, run_dir)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        print(f"resumed from {run_dir.path / 'checkpoint.pt'} at epoch {trainer.start_epoch}")
    for note in setup.notes:
        print(f"note: {note}")
    logger = (
        build_logger(cfg.logger, run_dir.path, cfg.run_name, resolved)
        if setup.dist.is_main
        else NullLogger()
    )
    wall_start = time.perf_counter()
    status = "failed"
    summary: dict[str, Any] = {}
    try:
        status = trainer.fit(logger)
    finally:
        final_error = trainer.last_eval.get("test_error", math.nan) if status == "ok" else math.nan
        summary = {
            "status": status,
            "final_test_error": final_error if math.isfinite(final_error) else None,  # strict JSON
            "best_test_error": trainer.best_error if math.isfinite(trainer.best_error) else None,
            "final_test_loss": trainer.last_eval.get("test_loss"),
            "steps": trainer.step,
            "epochs": trainer.step / max(1, setup.steps_per_epoch),
            "total_time_s": trainer.train_time,
            "wall_time_s": time.perf_counter() - wall_start,
            "step_time_s": trainer.train_time / max(1, trainer.step),
            "peak_memory_bytes": peak_memory_bytes(setup.device),
            "optimizer_state_bytes": optimizer_state_bytes(setup.optimizer),
            "seed": cfg.trainer.seed,
            "precision": cfg.trainer.precision,
            "optimizer": cfg.optimizer.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "data_used": setup.bundle.name,
            "synthetic_data": setup.bundle.synthetic,
            "notes": setup.notes,
            "run_name": cfg.run_name,
            **environment_info(setup.device),
        }
        run_dir.write_summary(summary)
        logger.finish(summary)
    if setup.dist.is_main:
        print(f"run {status}: final test error {final_error:.4f}; files in {run_dir.path}")
    return float(final_error)
