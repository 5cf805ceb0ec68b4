"""``make bench``: iteration time, preconditioner-update time and memory per optimizer.

For each model (default: CIFAR VGG16-bn and a small ViT, batch 128) and precision
(fp32; bf16 = autocast with bf16 factors), every method trains on one fixed
synthetic batch. All methods live in one process, each with its own copy of the
model (same initial weights), and are timed *interleaved*: every round runs one
timing unit of every method, each right after a unit of the AdamW reference
(A B A C A D ...; the order rotates each round), so drift of a loaded machine
cancels in the ratios. Reported per method:

* ``iter_s``: median seconds per training iteration (forward + backward + step),
  amortised over the preconditioner schedule. ``--timing window`` (default) times
  whole windows of ``lcm(T, T_inv)`` steps (at least ``--min-window``), so update
  and non-update steps are both included; ``--timing split`` times one step of
  each kind (update / plain, and for KFAC factor-only / inverse) at a forced step
  counter and weights them by their frequency, which is the same expectation at a
  fraction of the cost. The first ``--warmup-rounds`` rounds are discarded.
* ``iter_ratio``: median over rounds of ``iter_s / iter_s(AdamW)``, where AdamW's unit
  is timed right before the method's (A B A C A D ...), so the two are back to back.
* ``update_s``: median time of a step that updates the preconditioner (for KFAC:
  factors and inverses) minus the median time of a plain step.
* ``state_bytes``: optimizer state (``state_bytes()``; for torch optimizers the
  bytes of their state tensors), measured after the timing rounds.
* ``peak_bytes`` (``--memory``): each method runs two steps (an update step and a
  plain one) in a fresh subprocess. On CUDA: ``torch.cuda.max_memory_allocated``;
  on CPU: the kernel's peak resident set size (``VmHWM``, reset through
  ``/proc/self/clear_refs`` after the imports) minus the resident size at that
  moment, i.e. model, data, activations, gradients, optimizer state and
  temporaries, not the Python/torch runtime (no tracemalloc, which would miss
  torch's allocations). RSS includes allocator slack, so CPU numbers are coarser
  than CUDA ones.

Peer comparison (``--authors``, needs the ``[bench]`` extra, ``singd==0.0.5``): the
authors' SINGD runs the same model, structure and hyperparameters, interleaved
with ours; it only trains Linear/Conv2d parameters, so a torch SGD with the same
``lr``, ``momentum`` and ``weight_decay`` updates the rest (the same plain update
ours applies). Update directions are compared over the first steps with ``lr=0``
(identical models and batches) and ``T=1``, reading the direction from the
momentum buffers (``d_t = b_t - momentum * b_{t-1}``).

Outputs: ``<out>/optimizers.md``, ``optimizers.csv``, ``optimizers_peer.csv``,
``optimizers.png``; every output names the machine (every CSV row carries the
machine description and load average of its run). ``--append`` merges a run into
an existing table (e.g. expensive methods measured in separate runs; each run keeps
its own AdamW reference row); ``--timing none`` only runs the memory probes.

Examples::

    python -m experiments.bench_optimizers                      # everything (hours on 2 CPUs)
    python -m experiments.bench_optimizers --quick --models vgg # minutes
    python -m experiments.bench_optimizers --models vgg --methods INGD IKFAC \
        --precisions fp32 --timing split --rounds 2 --append
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.bench_common import (
    BENCH_MODELS,
    MALLOC_MODES,
    PeakRSS,
    build_bench_model,
    configure_malloc,
    human_bytes,
    machine_description,
    machine_markdown,
    markdown_table,
    median,
    read_csv_rows,
    resolve_device,
    synchronize,
    tensor_bytes,
    time_call,
    torch_optimizer_state_bytes,
    write_csv,
)
from optim.structures import STRUCTURES

STRUCTURE_NAMES = tuple(STRUCTURES)  # the ten SINGD structures, registry order

AUTHORS_STRUCTURES = {
    "dense": "dense",
    "diagonal": "diagonal",
    "block_diagonal": "block30diagonal",
    "hierarchical": "hierarchical15_15",
    "tril_toeplitz": "triltoeplitz",
    "triu_toeplitz": "triutoeplitz",
}
"""Our structure name -> the authors' ``singd`` 0.0.5 name (same layout and options)."""

PRECISIONS = ("fp32", "bf16")

HYPER = {
    "lr": 1e-4,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "damping": 1e-3,
    "lr_cov": 1e-2,
    "alpha1": 0.5,
}
"""Hyperparameters shared by every method (timing does not depend on them)."""

KFAC_T_INV = 50
"""Inverse period of the KFAC rows (the Randomized K-FAC paper's TInv)."""

MEMORY_TAG = "MEMORY_PROBE "


# ----- methods -------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSpec:
    """One row of the benchmark.

    Attributes:
        label: Row name (``"SINGD-diagonal"``, ``"authors SINGD-diagonal"``, ...).
        family: ``"torch"``, ``"ours"`` or ``"authors"``.
        kind: ``"sgd"``, ``"adamw"``, ``"kfac"`` or ``"singd"``.
        options: Extra constructor options (``inverse``, ``structure``, ``kfac_like``).
        T: Preconditioner (factor) update period; ``None`` for torch optimizers.
        T_inv: KFAC inverse period.
    """

    label: str
    family: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    T: int | None = None
    T_inv: int | None = None

    @property
    def structure(self) -> str | None:
        """SINGD structure name, or ``None``."""
        return self.options.get("structure")


SENG_UPDATE_FREQ = 200


def method_specs(T: int = 10, t_inv: int = KFAC_T_INV) -> list[MethodSpec]:
    """Every benchmark row, ours and the authors', in table order.

    Args:
        T: Update period of the Kronecker methods (the ``T=1`` row stays ``T=1``).
        t_inv: KFAC inverse period.

    Returns:
        The specs.
    """
    specs = [MethodSpec("SGD", "torch", "sgd"), MethodSpec("AdamW", "torch", "adamw")]
    for label, inverse in (("KFAC", "eigh"), ("RS-KFAC", "rsvd"), ("SRE-KFAC", "srevd")):
        specs.append(MethodSpec(label, "ours", "kfac", {"inverse": inverse}, T, max(t_inv, T)))
    # SENG (randomized K-FAC paper's baseline): its footnote-10 curvature period of 200 steps.
    specs.append(MethodSpec("SENG", "ours", "seng", {}, SENG_UPDATE_FREQ))
    specs.append(MethodSpec("IKFAC", "ours", "singd", {"structure": "dense", "kfac_like": True}, T))
    specs.append(MethodSpec("INGD", "ours", "singd", {"structure": "dense"}, T))
    for name in STRUCTURE_NAMES[1:]:
        specs.append(MethodSpec(f"SINGD-{name}", "ours", "singd", {"structure": name}, T))
    specs.append(MethodSpec("SINGD-diagonal T=1", "ours", "singd", {"structure": "diagonal"}, 1))
    for name in AUTHORS_STRUCTURES:
        label = "INGD" if name == "dense" else f"SINGD-{name}"
        specs.append(MethodSpec(f"authors {label}", "authors", "singd", {"structure": name}, T))
    specs.append(
        MethodSpec(
            "authors IKFAC", "authors", "singd", {"structure": "dense", "kfac_like": True}, T
        )
    )
    specs.append(
        MethodSpec("authors SINGD-diagonal T=1", "authors", "singd", {"structure": "diagonal"}, 1)
    )
    return specs


METHOD_GROUPS = {
    "baselines": ["SGD", "AdamW"],
    "kfac-variants": ["KFAC", "RS-KFAC", "SRE-KFAC", "SENG"],
    "targets": [
        "AdamW",
        "SINGD-diagonal",
        "SINGD-diagonal T=1",
        "SINGD-block_diagonal",
        "SINGD-hierarchical",
        "SINGD-triu_toeplitz",
        "INGD",
        "IKFAC",
        "KFAC",
        "RS-KFAC",
        "SRE-KFAC",
    ],
}
"""Named groups accepted by ``--methods`` besides ``all``, ``ours``, ``authors``."""


def select_methods(
    requested: Sequence[str], specs: Sequence[MethodSpec], with_authors: bool
) -> list[MethodSpec]:
    """Resolve ``--methods`` (labels and group names) into specs, AdamW always included.

    With ``with_authors`` the authors' row of every selected SINGD/INGD/IKFAC row that
    the authors ship is added (``authors <label>``), unless ``requested`` names
    authors' rows itself (then exactly those are run).

    Args:
        requested: Labels (case-insensitive) or group names (``all``, ``ours``,
            ``authors``, ``baselines``, ``kfac-variants``, ``targets``).
        specs: All specs.
        with_authors: Add the authors' counterparts.

    Returns:
        Specs in table order.
    """
    by_label = {spec.label.lower(): spec for spec in specs}
    chosen: set[str] = {"adamw"}
    for item in requested:
        key = item.strip().lower()
        if not key:
            continue
        if key == "all":
            chosen.update(by_label)
        elif key in ("ours", "authors"):
            chosen.update(label for label, spec in by_label.items() if spec.family == key)
        elif key in METHOD_GROUPS:
            chosen.update(label.lower() for label in METHOD_GROUPS[key])
        elif key in by_label:
            chosen.add(key)
        else:
            allowed = sorted(
                {s.label for s in specs} | set(METHOD_GROUPS) | {"all", "ours", "authors"}
            )
            raise ValueError(f"--methods entry {item!r} is invalid: allowed values are {allowed}")
    explicit = any(item.strip().lower().startswith("authors ") for item in requested)
    if with_authors and not explicit:
        chosen.update(
            f"authors {label}" for label in list(chosen) if f"authors {label}" in by_label
        )
    if not with_authors:
        chosen = {label for label in chosen if by_label[label].family != "authors"}
    return [spec for spec in specs if spec.label.lower() in chosen]


def authors_available() -> bool:
    """Whether the authors' ``singd`` package (the ``[bench]`` extra) is importable."""
    return importlib.util.find_spec("singd") is not None


# ----- optimizers behind one interface --------------------------------------------------
class AuthorsSINGD:
    """The authors' ``singd.optim.optimizer.SINGD`` plus a torch SGD for the other parameters.

    Args:
        model: The network.
        structure: Our structure name (a key of :data:`AUTHORS_STRUCTURES`).
        kfac_like: IKFAC update.
        T: Update period.
        dtype: Preconditioner dtype (``None``: the weight dtype).
        hyper: ``lr``, ``momentum``, ``weight_decay``, ``damping``, ``lr_cov``, ``alpha1``.
    """

    def __init__(
        self,
        model: nn.Module,
        structure: str,
        kfac_like: bool,
        T: int,
        dtype: torch.dtype | None,
        hyper: dict[str, float],
    ) -> None:
        from singd.optim.optimizer import SINGD as Official

        self.main = Official(
            model,
            lr=hyper["lr"],
            momentum=hyper["momentum"],
            damping=hyper["damping"],
            alpha1=0.0 if kfac_like else hyper["alpha1"],
            weight_decay=hyper["weight_decay"],
            T=T,
            lr_cov=hyper["lr_cov"],
            structures=(AUTHORS_STRUCTURES[structure],) * 2,
            kfac_approx="expand",
            kfac_like=kfac_like,
            preconditioner_dtype=(dtype, dtype),
            warn_unsupported=False,
        )
        covered = {id(p) for group in self.main.param_groups for p in group["params"]}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in covered]
        self.rest = (
            torch.optim.SGD(
                rest, lr=hyper["lr"], momentum=hyper["momentum"], weight_decay=hyper["weight_decay"]
            )
            if rest
            else None
        )

    @property
    def step_count(self) -> int:
        """The authors' step counter."""
        return self.main.steps

    @step_count.setter
    def step_count(self, value: int) -> None:
        # Their backward hooks read the grad scale of step - 1 (1.0 without a scaler).
        self.main.steps = value
        self.main._grad_scales = {value - 1: 1.0}

    def step(self) -> None:
        """One step of both optimizers."""
        self.main.step()
        if self.rest is not None:
            self.rest.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        self.main.zero_grad(set_to_none=set_to_none)
        if self.rest is not None:
            self.rest.zero_grad(set_to_none=set_to_none)

    def state_bytes(self) -> int:
        """Bytes of ``K``, ``C``, ``m_K``, ``m_C`` and every momentum buffer."""
        total = torch_optimizer_state_bytes(self.main)
        if self.rest is not None:
            total += torch_optimizer_state_bytes(self.rest)
        for store in (self.main.Ks, self.main.Cs, self.main.m_Ks, self.main.m_Cs):
            for matrix in store.values():
                total += tensor_bytes(t for _, t in matrix.named_tensors())
        return total


def build_optimizer(
    spec: MethodSpec, model: nn.Module, precision: str, hyper: dict[str, float] | None = None
) -> Any:
    """The optimizer of ``spec`` for ``model`` (bf16: bf16 factors).

    Args:
        spec: The method.
        model: The network.
        precision: ``"fp32"`` or ``"bf16"``.
        hyper: Hyperparameters (default :data:`HYPER`).

    Returns:
        An object with ``step()``, ``zero_grad()`` (and ``state_bytes()`` for
        Kronecker methods).
    """
    hyper = dict(HYPER if hyper is None else hyper)
    low = torch.bfloat16 if precision == "bf16" else None
    common = {
        "lr": hyper["lr"],
        "momentum": hyper["momentum"],
        "weight_decay": hyper["weight_decay"],
    }
    if spec.kind == "sgd":
        return torch.optim.SGD(model.parameters(), **common)
    if spec.kind == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=hyper["lr"], weight_decay=hyper["weight_decay"]
        )
    kfac_like = bool(spec.options.get("kfac_like", False))
    if spec.family == "authors":
        return AuthorsSINGD(model, spec.structure, kfac_like, spec.T, low, hyper)
    from optim import KFAC, SINGD

    if spec.kind == "seng":
        from optim.seng import SENG

        return SENG(model, **common, damping=2.0, update_freq=spec.T, col_sample_size=128)
    if spec.kind == "kfac":
        return KFAC(
            model,
            **common,
            damping=hyper["damping"],
            T=spec.T,
            T_inv=spec.T_inv,
            inverse=spec.options["inverse"],
            factor_dtype=low,
        )
    return SINGD(
        model,
        **common,
        damping=hyper["damping"],
        lr_cov=hyper["lr_cov"],
        alpha1=0.0 if kfac_like else hyper["alpha1"],
        T=spec.T,
        structures=spec.structure,
        kfac_like=kfac_like,
        preconditioner_dtype=low,
    )


def optimizer_state_bytes(optimizer: Any) -> int:
    """``state_bytes()`` where offered, else the bytes of a torch optimizer's state."""
    if hasattr(optimizer, "state_bytes"):
        return int(optimizer.state_bytes())
    return torch_optimizer_state_bytes(optimizer)


def phase_of(spec: MethodSpec, step: int) -> str:
    """What step ``step`` does: ``plain``, ``update`` (SINGD) or ``factors``/``inverse`` (KFAC)."""
    if spec.T is None or step % spec.T != 0:
        return "plain"
    if spec.kind == "kfac":
        return "inverse" if step % spec.T_inv == 0 else "factors"
    return "update"


def schedule_period(spec: MethodSpec) -> int:
    """Steps after which the preconditioner schedule repeats (1 for torch optimizers)."""
    if spec.T is None:
        return 1
    return math.lcm(spec.T, spec.T_inv or 1)


def phase_weights(spec: MethodSpec) -> dict[str, tuple[int, float]]:
    """``{phase: (a step index with that phase, fraction of steps with it)}``."""
    period = schedule_period(spec)
    weights: dict[str, tuple[int, float]] = {}
    for step in range(period):
        phase = phase_of(spec, step)
        first, share = weights.get(phase, (step, 0.0))
        weights[phase] = (first, share + 1.0 / period)
    return weights


class Runner:
    """One method training its own model copy on a fixed batch.

    Args:
        spec: The method.
        model: Its model (already on the device).
        batch: ``(inputs, labels)`` on the device.
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        device: The device.
        hyper: Hyperparameters (default :data:`HYPER`).
    """

    def __init__(
        self,
        spec: MethodSpec,
        model: nn.Module,
        batch: tuple[Tensor, Tensor],
        precision: str,
        device: torch.device,
        hyper: dict[str, float] | None = None,
    ) -> None:
        self.spec, self.model, self.batch = spec, model, batch
        self.precision, self.device = precision, device
        self.optimizer = build_optimizer(spec, model, precision, hyper)
        self._plain_steps = 0

    @property
    def step_count(self) -> int:
        """The optimizer's step counter (a local count for torch optimizers)."""
        return getattr(self.optimizer, "step_count", self._plain_steps)

    @step_count.setter
    def step_count(self, value: int) -> None:
        if hasattr(self.optimizer, "step_count"):
            self.optimizer.step_count = value
        self._plain_steps = value

    def train_step(self) -> None:
        """Forward, backward, optimizer step, zero grad."""
        inputs, labels = self.batch
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            loss = F.cross_entropy(self.model(inputs), labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._plain_steps += 1

    def timed_step(self) -> tuple[str, float]:
        """``(phase, seconds)`` of one synchronised training step."""
        phase = phase_of(self.spec, self.step_count)
        return phase, time_call(self.train_step, self.device)

    def state_bytes(self) -> int:
        """Optimizer state bytes."""
        return optimizer_state_bytes(self.optimizer)


def make_batch(
    batch_size: int, image_size: int, device: torch.device, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A fixed synthetic CIFAR-shaped batch (inputs, labels)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    return inputs.to(device), labels.to(device)


# ----- interleaved timing ---------------------------------------------------------------
@dataclass
class Timings:
    """Per-method measurements of the timed rounds.

    ``reference[label]`` holds the AdamW iteration time measured right before each of
    ``label``'s units (A B A C A D ...), so ``iteration[label][i] / reference[label][i]``
    is a ratio of two measurements taken back to back.
    """

    iteration: dict[str, list[float]] = field(default_factory=dict)
    phases: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    reference: dict[str, list[float]] = field(default_factory=dict)

    def add(self, label: str, iteration: float, phases: dict[str, float]) -> None:
        """Record one timing unit of ``label``."""
        self.iteration.setdefault(label, []).append(iteration)
        for phase, seconds in phases.items():
            self.phases.setdefault(label, {}).setdefault(phase, []).append(seconds)


def time_unit(runner: Runner, timing: str, min_window: int) -> tuple[float, dict[str, float]]:
    """One timing unit of ``runner``: ``(seconds per iteration, {phase: step seconds})``.

    ``window``: ``lcm(T, T_inv)`` steps (repeated to at least ``min_window``) from a
    step counter that is a multiple of the period, timed step by step and summed.
    ``split``: one step per phase at a forced step counter, weighted by frequency.
    """
    spec = runner.spec
    weights = phase_weights(spec)
    if timing == "split":
        seconds = {}
        for phase, (step, _) in weights.items():
            runner.step_count = step
            seconds[phase] = runner.timed_step()[1]
        return sum(seconds[p] * share for p, (_, share) in weights.items()), seconds
    period = schedule_period(spec)
    length = period * max(1, math.ceil(min_window / period))
    start = runner.step_count
    runner.step_count = start + (-start) % period
    per_phase: dict[str, list[float]] = {}
    total = 0.0
    for _ in range(length):
        phase, seconds = runner.timed_step()
        per_phase.setdefault(phase, []).append(seconds)
        total += seconds
    return total / length, {phase: median(values) for phase, values in per_phase.items()}


def run_rounds(
    runners: Sequence[Runner],
    rounds: int,
    warmup_rounds: int,
    timing: str,
    min_window: int,
    log: Callable[[str], None] = print,
) -> Timings:
    """Time every runner ``rounds`` times, interleaved, after ``warmup_rounds`` rounds.

    Within a round every method's unit follows a unit of the AdamW reference
    (A B A C A D ...), and the order of the methods rotates by one per round.
    """
    reference = next(r for r in runners if r.spec.label == "AdamW")
    others = [r for r in runners if r is not reference]
    timings = Timings()
    for index in range(warmup_rounds + rounds):
        shift = index % max(1, len(others))
        for runner in others[shift:] + others[:shift] or [None]:
            base = time_unit(reference, timing, min_window)
            if runner is not None:
                measured = time_unit(runner, timing, min_window)
            if index < warmup_rounds:
                continue
            timings.add("AdamW", *base)
            if runner is not None:
                timings.add(runner.spec.label, *measured)
                timings.reference.setdefault(runner.spec.label, []).append(base[0])
        tag = "warm-up" if index < warmup_rounds else "timed"
        log(f"  round {index + 1}/{warmup_rounds + rounds} ({tag}) done")
    return timings


def summarize(runners: Sequence[Runner], timings: Timings) -> list[dict[str, Any]]:
    """Rows with median times, ratios to the adjacent AdamW unit, and state bytes."""
    adamw_state = next(r.state_bytes() for r in runners if r.spec.label == "AdamW")
    rows = []
    for runner in runners:
        spec, label = runner.spec, runner.spec.label
        iterations = timings.iteration[label]
        phases = timings.phases.get(label, {})
        update_phase = phase_of(spec, 0)
        update = (
            median(phases.get(update_phase, [])) - median(phases.get("plain", []))
            if update_phase != "plain"
            else math.nan
        )
        factors = (
            median(phases.get("factors", [])) - median(phases.get("plain", []))
            if "factors" in phases
            else math.nan
        )
        state = runner.state_bytes()
        rows.append(
            {
                "method": label,
                "family": spec.family,
                "structure": spec.structure or "",
                "T": spec.T or "",
                "T_inv": spec.T_inv or "",
                "iter_s": median(iterations),
                "iter_ratio": median(
                    t / a for t, a in zip(iterations, timings.reference.get(label, iterations))
                ),
                "update_s": update,
                "kfac_factor_step_s": factors,
                "plain_step_s": median(phases.get("plain", [])),
                "state_bytes": state,
                "state_ratio": state / adamw_state if adamw_state else math.nan,
                "rounds": len(iterations),
            }
        )
    return rows


# ----- memory probes (fresh subprocess per method) --------------------------------------
def memory_probe(
    spec: MethodSpec,
    model_name: str,
    batch_size: int,
    precision: str,
    device: torch.device,
    image_size: int = 32,
) -> dict[str, int]:
    """Peak memory of two training steps (an update step, then a plain one), in-process.

    Meant to run in a fresh process (see module docstring for the definition).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss = PeakRSS()
    torch.manual_seed(0)
    model = build_bench_model(model_name, image_size=image_size).to(device)
    runner = Runner(spec, model, make_batch(batch_size, image_size, device), precision, device)
    for _ in range(2):
        runner.train_step()
    synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = rss.peak_bytes()
    return {"peak_bytes": int(peak), "state_bytes": runner.state_bytes()}


def run_memory_probe(
    spec: MethodSpec, args: argparse.Namespace, model_name: str, precision: str
) -> dict[str, int]:
    """Run :func:`memory_probe` in a fresh subprocess; its result (``{}`` on failure)."""
    command = [sys.executable, "-m", "experiments.bench_optimizers", "--memory-probe", spec.label]
    command += ["--models", model_name, "--batch", str(args.batch), "--precisions", precision]
    command += ["--T", str(args.T), "--T-inv", str(args.T_inv), "--device", args.device]
    command += ["--image-size", str(args.image_size), "--malloc", args.malloc]
    if args.threads:
        command += ["--threads", str(args.threads)]
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(command, capture_output=True, text=True, cwd=repo, check=False)
    for line in result.stdout.splitlines():
        if line.startswith(MEMORY_TAG):
            return json.loads(line[len(MEMORY_TAG) :])
    print(f"  memory probe of {spec.label} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
    return {}


# ----- peer comparison: update directions ----------------------------------------------
def compare_directions(
    model_name: str,
    spec: MethodSpec,
    steps: int,
    batch_size: int,
    device: torch.device,
    image_size: int = 32,
) -> list[float]:
    """Max relative difference of our and the authors' update directions per step.

    Both optimizers start from identical models, see identical batches (a new one
    each step), use ``T=1`` and ``lr=0`` (models stay identical) with
    ``momentum=0.5`` and no weight decay, in float32. The direction of step ``t`` is
    ``b_t - 0.5 b_{t-1}`` from each parameter's momentum buffer; the relative
    difference ``||d_ours - d_authors|| / ||d_authors||`` is maximised over the
    preconditioned parameters.

    Returns:
        One value per step.
    """
    hyper = {**HYPER, "lr": 0.0, "momentum": 0.5, "weight_decay": 0.0, "lr_cov": 0.1}
    torch.manual_seed(0)
    ours_model = build_bench_model(model_name, image_size=image_size).to(device)
    their_model = copy.deepcopy(ours_model)
    like = MethodSpec(spec.label, "ours", "singd", spec.options, 1)
    ours = build_optimizer(like, ours_model, "fp32", hyper)
    theirs = build_optimizer(
        MethodSpec(spec.label, "authors", "singd", spec.options, 1), their_model, "fp32", hyper
    )
    names = [row["name"] for row in ours.describe() if row["preconditioned"]]
    ours_params = dict(ours_model.named_parameters())
    their_params = dict(their_model.named_parameters())
    previous: dict[str, tuple[Tensor, Tensor]] = {}
    differences = []
    for step in range(steps):
        inputs, labels = make_batch(batch_size, image_size, device, seed=100 + step)
        for model, optimizer in ((ours_model, ours), (their_model, theirs)):
            torch.manual_seed(step)
            F.cross_entropy(model(inputs), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        worst = 0.0
        for name in names:
            mine = ours.state[ours_params[name]]["momentum_buffer"].clone()
            their = theirs.main.state[their_params[name]]["momentum_buffer"].clone()
            old_mine, old_their = previous.get(name, (torch.zeros_like(mine),) * 2)
            direction_mine = mine - hyper["momentum"] * old_mine
            direction_their = their - hyper["momentum"] * old_their
            scale = direction_their.norm().clamp_min(1e-30)
            worst = max(worst, float((direction_mine - direction_their).norm() / scale))
            previous[name] = (mine, their)
        differences.append(worst)
    return differences


# ----- reporting -----------------------------------------------------------------------
TARGETS = [
    # (description, model, method label, published, target ratio to AdamW)
    ("SINGD-diagonal", "vgg", "SINGD-diagonal", "1.09 (authors)", 1.03),
    ("SINGD-diagonal", "vit", "SINGD-diagonal", "1.03 (authors)", 1.02),
    ("SINGD-diagonal T=1", "vgg", "SINGD-diagonal T=1", "2.42 (authors)", 1.6),
    ("SINGD-diagonal T=1", "vit", "SINGD-diagonal T=1", "1.15 (authors)", 1.10),
    ("SINGD block (k=30)", "vgg", "SINGD-block_diagonal", "1.47 (authors)", 1.2),
    ("SINGD hierarchical (15,15)", "vgg", "SINGD-hierarchical", "1.54 (authors)", 1.2),
    ("SINGD triu-Toeplitz", "vgg", "SINGD-triu_toeplitz", "~106 (authors)", 1.2),
    ("SINGD triu-Toeplitz", "vit", "SINGD-triu_toeplitz", "7.5 (authors)", 1.05),
    ("INGD (dense)", "vgg", "INGD", "4.19 (authors)", 2.5),
    ("IKFAC", "vgg", "IKFAC", "4.35 (authors)", 2.5),
    ("KFAC eigh (T_inv=50)", "vgg", "KFAC", "3.87 (R-KFACs)", 2.0),
    ("RS-KFAC", "vgg", "RS-KFAC", "1.89 (R-KFACs)", 1.3),
    ("SRE-KFAC", "vgg", "SRE-KFAC", "1.79 (R-KFACs)", 1.3),
]


def _prefer_batch(rows: Sequence[dict[str, Any]], batch: int = 128) -> dict[tuple, dict]:
    """``(model, precision, method) -> row``, preferring rows measured at ``batch``."""
    lookup: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["precision"], row["method"])
        if key not in lookup or (row.get("batch") == batch and lookup[key].get("batch") != batch):
            lookup[key] = row
    return lookup


def _met(value: Any, limit: float) -> str:
    if not _finite(value):
        return "-"
    return "yes" if value <= limit else "NO"


def target_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DESIGN performance targets next to the measured fp32 values (batch 128 preferred)."""
    lookup = _prefer_batch(rows)
    table = []
    for description, model, label, published, target in TARGETS:
        row = lookup.get((model, "fp32", label))
        if row is None:
            continue
        table.append(
            {
                "target": f"{description}, {model}",
                "batch": row.get("batch"),
                "published": published,
                "target_ratio": f"<= {target}",
                "measured": row.get("iter_ratio"),
                "met": _met(row.get("iter_ratio"), target),
            }
        )
    for (model, precision, label), row in lookup.items():
        if precision != "fp32":
            continue
        if label == "SINGD-diagonal":
            table.append(
                {
                    "target": f"SINGD-diagonal state bytes / AdamW's, {model}",
                    "batch": row.get("batch"),
                    "published": "-",
                    "target_ratio": "<= 0.5",
                    "measured": row.get("state_ratio"),
                    "met": _met(row.get("state_ratio"), 0.5),
                }
            )
        if label == "KFAC" and model == "vgg":
            for key, what in (
                ("kfac_factor_step_s", "factor-update step overhead (s)"),
                ("update_s", "factor+inverse step overhead (s)"),
            ):
                table.append(
                    {
                        "target": f"KFAC {what}, vgg",
                        "batch": row.get("batch"),
                        "published": "~9 s (R-KFACs)",
                        "target_ratio": "<= 2 s",
                        "measured": row.get(key),
                        "met": _met(row.get(key), 2.0),
                    }
                )
    return table


def peer_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours / authors per structure, paired only within one run (one process, one AdamW
    reference): iteration time, state bytes, directions."""
    lookup = {
        (r["model"], r["precision"], r.get("batch"), r.get("run"), r["method"]): r for r in rows
    }
    table = []
    for (model, precision, batch, run, label), theirs in lookup.items():
        if not label.startswith("authors "):
            continue
        ours = lookup.get((model, precision, batch, run, label[len("authors ") :]))
        if ours is None:
            continue
        table.append(
            {
                "model": model,
                "precision": precision,
                "batch": batch,
                "method": ours["method"],
                "iter_ours_over_authors": _ratio(ours.get("iter_ratio"), theirs.get("iter_ratio")),
                "iter_ratio_ours": ours.get("iter_ratio"),
                "iter_ratio_authors": theirs.get("iter_ratio"),
                "update_ours_over_authors": _ratio(ours.get("update_s"), theirs.get("update_s")),
                "peak_ours_over_authors": _ratio(ours.get("peak_bytes"), theirs.get("peak_bytes")),
                "state_ours_over_authors": _ratio(
                    ours.get("state_bytes"), theirs.get("state_bytes")
                ),
                "direction_max_rel_diff": ours.get("direction_max_rel_diff", math.nan),
                "direction_per_step": ours.get("direction_per_step", ""),
                "direction_note": DIRECTION_NOTES.get(ours["method"], ""),
            }
        )
    return table


def _ratio(numerator: Any, denominator: Any) -> float:
    try:
        return float(numerator) / float(denominator)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


DIRECTION_NOTES = {
    "SINGD-block_diagonal": (
        "authors' block30diagonal treats K as symmetric (from_inner() returns Pi(K K^T), "
        "rmatmat returns K X instead of K^T X); K is not symmetric after its first update, "
        "so directions agree at step 1 and differ from step 2 on; ours computes "
        "Pi(K^T K) and K^T X as defined"
    ),
}
"""Known convention differences that make a direction comparison not like-for-like."""

NOT_COMPARABLE = (
    "Not compared with the authors (their package does not ship these): SINGD-tril, "
    "SINGD-triu, SINGD-triu_low_rank, SINGD-tril_low_rank, block/hierarchical with other "
    "options than k=30 / (15, 15); KFAC, RS-KFAC, SRE-KFAC (not part of `singd`). Update "
    "directions are compared in fp32 only: in bf16 the two implementations round at "
    "different places (e.g. they cast the gradient to the factor dtype per factor), so a "
    "difference there is not a defect. The authors' optimizer trains only Linear/Conv2d "
    "parameters; a torch SGD with the same lr/momentum/weight decay updates the rest."
)


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Horizontal bars of the iteration-time ratio to AdamW, one panel per model/precision/batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if _finite(r.get("iter_ratio"))]
    panels = sorted({(r["model"], r["precision"], r.get("batch")) for r in timed}, key=str)
    if not panels:
        return
    tallest = max(sum(1 for r in timed if _panel(r) == p) for p in panels)
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), max(3.0, 0.28 * tallest)), squeeze=False
    )
    colours = {"torch": "tab:gray", "ours": "tab:blue", "authors": "tab:orange"}
    for axis, panel in zip(axes[0], panels):
        subset = [r for r in timed if _panel(r) == panel]
        axis.barh(
            range(len(subset)),
            [r["iter_ratio"] for r in subset],
            color=[colours.get(r["family"], "tab:green") for r in subset],
        )
        axis.set_yticks(range(len(subset)), [r["method"] for r in subset], fontsize=7)
        axis.invert_yaxis()
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("iteration time / AdamW (log)")
        axis.set_title(f"{panel[0]}, {panel[1]}, batch {panel[2]}", fontsize=9)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _panel(row: dict[str, Any]) -> tuple:
    return row["model"], row["precision"], row.get("batch")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


RESULT_COLUMNS = [
    "model",
    "precision",
    "batch",
    "method",
    "T",
    "timing",
    "iter_s",
    "iter_ratio",
    "update_s",
    "state",
    "state_ratio",
    "peak",
    "peak_ratio",
    "rounds",
    "load",
    "run",
]


def write_report(
    out: Path,
    rows: list[dict[str, Any]],
    machine: dict[str, str],
    settings: dict[str, Any],
    notes: list[str],
) -> None:
    """``optimizers.md``, ``optimizers.csv``, ``optimizers_peer.csv`` and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    peers, targets = peer_rows(rows), target_rows(rows)
    write_csv(rows, out / "optimizers.csv")
    if peers:
        write_csv(peers, out / "optimizers_peer.csv")
    display = [
        {
            **r,
            "state": human_bytes(r.get("state_bytes", math.nan)),
            "peak": human_bytes(r.get("peak_bytes", math.nan)),
            "load": str(r.get("machine_load_average_1_5_15min", "")).split(",")[0],
            "run": str(r.get("run") or "")[11:16],
        }
        for r in rows
    ]
    lines = [
        "# Optimizer benchmark: time and memory relative to AdamW",
        "",
        "## Machine (last run; every CSV row carries its own machine_* columns)",
        "",
        machine_markdown(machine),
        "",
        "## Settings of the last run",
        "",
        "\n".join(f"- {k}: {v}" for k, v in settings.items()),
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in notes],
        "",
        "## Results",
        "",
        "`iter_ratio`: median over rounds of the per-round ratio to AdamW (same run); "
        "`update_s`: update step minus plain step (s); `load`: 1-min load average at the start "
        "of the run; `run`: its start time (each run has its own AdamW reference).",
        "",
        markdown_table(display, RESULT_COLUMNS),
        "",
    ]
    if targets:
        lines += [
            "## DESIGN performance targets (fp32)",
            "",
            markdown_table(
                targets, ["target", "batch", "published", "target_ratio", "measured", "met"]
            ),
            "",
        ]
    if peers:
        lines += [
            "## Peer comparison with the authors' `singd` 0.0.5",
            "",
            markdown_table(
                peers,
                [
                    "model",
                    "precision",
                    "batch",
                    "method",
                    "iter_ours_over_authors",
                    "iter_ratio_ours",
                    "iter_ratio_authors",
                    "update_ours_over_authors",
                    "state_ours_over_authors",
                    "peak_ours_over_authors",
                    "direction_max_rel_diff",
                    "direction_per_step",
                ],
            ),
            "",
            NOT_COMPARABLE,
            "",
            *[f"- {label}: {note}" for label, note in DIRECTION_NOTES.items()],
            "",
        ]
    lines += ["![iteration time ratios](optimizers.png)", ""]
    (out / "optimizers.md").write_text("\n".join(lines), encoding="utf-8")
    plot(
        rows,
        out / "optimizers.png",
        f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}",
    )


def merge_rows(
    old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], specs: Sequence[MethodSpec]
) -> list[dict[str, Any]]:
    """``old`` rows not re-measured in ``new`` plus ``new``, sorted for the tables.

    A row is identified by model, precision, batch and method; AdamW (the reference
    of every run) also by its ``run``, and an old run's AdamW row is kept while any
    row of that run remains.
    """

    def key(row: dict[str, Any]) -> tuple:
        run = row.get("run") if row["method"] == "AdamW" else None
        return row["model"], row["precision"], row.get("batch"), row["method"], run

    if new and all(r.get("timing") == "none" for r in new):
        return _merge_memory(old, new, specs)
    fresh = {key(r) for r in new}
    kept = [r for r in old if key(r) not in fresh]
    runs = {r.get("run") for r in kept if r["method"] != "AdamW"}
    kept = [r for r in kept if r["method"] != "AdamW" or r.get("run") in runs]
    return _sorted_rows(kept + list(new), specs)


MEMORY_FIELDS = ("peak_bytes", "peak_ratio", "state_bytes", "state_ratio")


def _merge_memory(
    old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], specs: Sequence[MethodSpec]
) -> list[dict[str, Any]]:
    """A memory-only run (``--timing none``) fills the memory columns of existing rows."""
    merged = [dict(r) for r in old]
    for row in new:
        same = [
            r
            for r in merged
            if (r["model"], r["precision"], r.get("batch"), r["method"])
            == (row["model"], row["precision"], row.get("batch"), row["method"])
        ]
        for target in same:
            target.update({k: row[k] for k in MEMORY_FIELDS if k in row})
        if not same:
            merged.append(dict(row))
    return _sorted_rows(merged, specs)


def _sorted_rows(
    rows: Sequence[dict[str, Any]], specs: Sequence[MethodSpec]
) -> list[dict[str, Any]]:
    order = {spec.label: index for index, spec in enumerate(specs)}
    return sorted(
        rows,
        key=lambda r: (
            r["model"],
            r["precision"],
            str(r.get("batch")),
            order.get(r["method"], 99),
            str(r.get("run")),
        ),
    )


def rerender_report(out: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Write the report of ``out/optimizers.csv`` again (e.g. after a change of the tables).

    The machine block is the newest run's ``machine_*`` columns; returns the rows.
    """
    path = out / "optimizers.csv"
    if not path.exists():
        raise ValueError(f"--report-only is invalid: {path} does not exist")
    rows = read_csv_rows(path)
    newest = max(rows, key=lambda r: str(r.get("run")))
    machine = {
        key[len("machine_") :]: str(value)
        for key, value in newest.items()
        if key.startswith("machine_")
    }
    settings = {"report": "re-rendered from optimizers.csv (--report-only); no new measurement"}
    write_report(out, rows, machine, settings, notes)
    print(f"wrote {out / 'optimizers.md'}", flush=True)
    return rows


# ----- command line --------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["vgg", "vit"], choices=BENCH_MODELS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["all"],
        help="labels or groups: all, ours, authors, baselines, kfac-variants, targets",
    )
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--T", type=int, default=10, help="update period (the T=1 row stays 1)")
    parser.add_argument("--T-inv", type=int, default=KFAC_T_INV, help="KFAC inverse period")
    parser.add_argument(
        "--timing",
        choices=("window", "split", "none"),
        default="window",
        help="none: memory probes only",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds")
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument(
        "--min-window", type=int, default=10, help="window mode: at least this many steps"
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak memory per method in a fresh subprocess",
    )
    parser.add_argument(
        "--authors",
        choices=("auto", "on", "off"),
        default="auto",
        help="peer comparison with singd==0.0.5 (auto: if installed)",
    )
    parser.add_argument("--direction-steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--malloc",
        choices=MALLOC_MODES,
        default="default",
        help="heap: glibc keeps freed memory, so large tensors are not page-faulted in "
        "again every step (bench_common.configure_malloc)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing <out>/optimizers.csv (rows re-measured here replace "
        "the old ones) instead of starting a new table",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batch 32, the 'targets' methods, fp32, split timing, 3 rounds, "
        "no memory probes, 2 direction steps",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-render <out>/optimizers.md, the peer CSV and the plot from "
        "<out>/optimizers.csv, measuring nothing",
    )
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.methods, args.precisions = 32, ["targets"], ["fp32"]
        args.timing, args.rounds, args.memory, args.direction_steps = "split", 3, False, 2
    for name in ("batch", "T", "T_inv", "rounds", "min_window", "image_size"):
        if getattr(args, name) < 1:
            raise ValueError(
                f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: "
                "must be an integer >= 1"
            )
    if args.warmup_rounds < 0 or args.direction_steps < 0:
        raise ValueError("--warmup-rounds and --direction-steps must be >= 0")
    if args.timing == "none" and not args.memory:
        raise ValueError("--timing=none is invalid without --memory: nothing would be measured")
    return args


def bench_model(
    model_name: str,
    precision: str,
    specs: Sequence[MethodSpec],
    args: argparse.Namespace,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Interleaved timing (and memory probes) of every spec on one model and precision."""
    print(f"== {model_name}, {precision}, batch {args.batch}: {len(specs)} methods", flush=True)
    stamp = {f"machine_{k}": v for k, v in machine_description(device).items()}
    if args.timing == "none":
        rows = [
            {"method": s.label, "family": s.family, "structure": s.structure or "", "T": s.T or ""}
            for s in specs
        ]
    else:
        torch.manual_seed(0)
        template = build_bench_model(model_name, image_size=args.image_size)
        batch = make_batch(args.batch, args.image_size, device)
        runners = [
            Runner(spec, copy.deepcopy(template).to(device), batch, precision, device)
            for spec in specs
        ]
        timings = run_rounds(
            runners,
            args.rounds,
            args.warmup_rounds,
            args.timing,
            args.min_window,
            log=lambda text: print(text, flush=True),
        )
        rows = summarize(runners, timings)
        del runners
    rows = [
        {
            "model": model_name,
            "precision": precision,
            "batch": args.batch,
            **row,
            "timing": args.timing,
            "run": args.run_id,
            **stamp,
        }
        for row in rows
    ]
    if args.memory:
        for row, spec in zip(rows, specs):
            probe = run_memory_probe(spec, args, model_name, precision)
            row["peak_bytes"] = probe.get("peak_bytes", math.nan)
            row.setdefault("state_bytes", probe.get("state_bytes", math.nan))
        reference = next(r for r in rows if r["method"] == "AdamW")
        for row in rows:
            row["peak_ratio"] = _ratio(row["peak_bytes"], reference["peak_bytes"])
            row["state_ratio"] = _ratio(row["state_bytes"], reference["state_bytes"])
    return rows


def add_directions(
    rows: list[dict[str, Any]],
    specs: Sequence[MethodSpec],
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """Compare our and the authors' update directions (fp32) and store them in our rows."""
    for model_name in args.models:
        for spec in specs:
            if spec.family != "ours" or spec.kind != "singd" or spec.T != args.T:
                continue
            if spec.structure not in AUTHORS_STRUCTURES:
                continue
            diffs = compare_directions(
                model_name,
                spec,
                args.direction_steps,
                min(args.batch, 32),
                device,
                args.image_size,
            )
            print(
                f"  direction {model_name} {spec.label}: max rel diff per step "
                + ", ".join(f"{d:.2e}" for d in diffs),
                flush=True,
            )
            for row in rows:
                if (row["model"], row["precision"], row["method"]) == (
                    model_name,
                    "fp32",
                    spec.label,
                ):
                    row["direction_max_rel_diff"] = max(diffs)
                    row["direction_per_step"] = " ".join(f"{d:.1e}" for d in diffs)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark and write the outputs; returns this run's result rows."""
    args = parse_args(argv)
    configure_malloc(args.malloc)
    args.run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    specs = method_specs(args.T, args.T_inv)
    if args.memory_probe is not None:
        spec = next(s for s in specs if s.label == args.memory_probe)
        result = memory_probe(
            spec, args.models[0], args.batch, args.precisions[0], device, args.image_size
        )
        print(MEMORY_TAG + json.dumps(result), flush=True)
        return []
    notes = [
        "Ratios are medians over rounds of the ratio to an AdamW unit timed right before "
        "(A B A C ...) in the same process; a loaded machine still adds noise (see the load "
        "column).",
    ]
    if args.report_only:
        return rerender_report(args.out, notes)
    with_authors = args.authors != "off" and authors_available()
    if args.authors == "on" and not with_authors:
        raise ValueError(
            "--authors=on needs the [bench] extra: pip install -c constraints.txt 'singd==0.0.5'"
        )
    if args.authors != "off" and not with_authors:
        message = (
            "peer comparison skipped: the authors' package is not installed "
            "(pip install -c constraints.txt -e '.[bench]' installs singd==0.0.5)"
        )
        print(message)
        notes.append(message)
    selected = select_methods(args.methods, specs, with_authors)
    machine = machine_description(device)
    print("machine: " + "; ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
    rows: list[dict[str, Any]] = []
    for model_name in args.models:
        for precision in args.precisions:
            rows += bench_model(model_name, precision, selected, args, device)
    if with_authors and args.direction_steps and "fp32" in args.precisions:
        add_directions(rows, selected, args, device)
    settings = {
        "models": ", ".join(args.models),
        "batch": args.batch,
        "precisions": ", ".join(args.precisions),
        "T": args.T,
        "KFAC T_inv": args.T_inv,
        "timing": args.timing,
        "rounds": args.rounds,
        "warm-up rounds": args.warmup_rounds,
        "memory probes": args.memory,
        "direction batch": min(args.batch, 32),
        "hyperparameters": HYPER,
    }
    table = rows
    if args.append and (args.out / "optimizers.csv").exists():
        table = merge_rows(read_csv_rows(args.out / "optimizers.csv"), rows, specs)
    write_report(args.out, table, machine, settings, notes)
    print(f"wrote {args.out / 'optimizers.md'}", flush=True)
    return rows


if __name__ == "__main__":
    main()
