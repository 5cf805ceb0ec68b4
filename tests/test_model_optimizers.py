"""Every model works with every optimizer family, through the entrypoint too.

1. KFAC and SINGD precondition exactly the ``nn.Linear``, ``groups=1`` ``nn.Conv2d``
   and PyG ``Linear`` parameters of each full-size model (cifar preset; GCN on
   Cora's shape), counted independently from ``model.modules()``; everything
   else (depthwise convs, norms, position embeddings, ...) is listed as plain.
2. ``experiments.trainer.run`` trains each shrunken model for 2 steps with SGD,
   AdamW, KFAC and SINGD-diagonal on the synthetic stand-in of CIFAR-100 (Cora
   for the GCN); the Kronecker optimizers must have recorded statistics for
   every preconditioned layer.
3. One SINGD-diagonal step with bfloat16 factors under bf16 autocast per model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from experiments.preconditioned_report import (
    MODEL_NAMES,
    main,
    parameter_kind,
    plain_kinds,
    settings,
)
from experiments.rundir import CHECKPOINT
from experiments.trainer import model_kwargs, run
from models import build_model
from optim import KFAC, SINGD
from tests.conftest import CONF_DIR, METRIC_KEYS, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = {"KFAC": KFAC, "SINGD": SINGD}
SINGD_DIAGONAL = {"structures": ("diagonal", "diagonal")}
TRAIN_OPTIMIZERS = ("sgd", "adamw", "kfac", "singd_diagonal")
CIFAR = {setting.model: setting for setting in settings() if setting.preset in ("cifar", "cora")}
MISSING_ROOT = "/nonexistent/ngdbench-test-root"

TINY_KWARGS: dict[str, dict[str, Any]] = {
    "vgg": {"width_multiplier": 0.0625, "depth": 11},
    "vgg16_bn": {"width_multiplier": 0.0625},
    "gcn": {"hidden_channels": 4},
    "convmixer": {"dim": 16, "depth": 2},
    "repvit": {"embed_dim": [16, 32, 48], "depth": [1, 1, 1]},
    "swin": {"embed_dim": 16, "depths": [2, 2, 2], "num_heads": [1, 2, 4]},
    "gcvit": {"embed_dim": 16, "depths": [2, 2, 2], "num_heads": [1, 2, 4]},
    "cct": {"embed_dim": 32, "depth": 1, "num_heads": 2, "conv_channels": 8},
    "hdvt": {"embed_dim": 32, "depth": 1, "num_heads": 2},
}
"""Builder options that shrink each model (every kind of layer is kept)."""

PLAIN_KINDS: dict[str, set[str]] = {
    "vgg": {"BatchNorm2d"},
    "vgg16_bn": {"BatchNorm2d"},
    "convmixer": {"depthwise Conv2d", "BatchNorm2d"},
    "repvit": {"depthwise Conv2d", "BatchNorm2d", "BatchNorm1d"},
    "swin": {"LayerNorm", "relative position bias (WindowAttention)"},
    "gcvit": {
        "LayerNorm",
        "LayerNorm2d",
        "depthwise Conv2d",
        "relative position bias (RelPosBias)",
    },
    "cct": {"LayerNorm", "position embedding (CCT)"},
    "hdvt": {
        "depthwise Conv2d",
        "BatchNorm2d",
        "BatchNorm1d",
        "LayerNorm",
        "Affine.alpha",
        "Affine.beta",
        "class token (HDVT)",
        "head embedding (HeadInteractedAttention)",
    },
    "gcn": {"GCNConv.bias"},  # added after aggregation, outside the PyG Linear
}
"""Kinds of parameters each model leaves to the plain update (cifar preset)."""


# ----- independent reference -----------------------------------------------------------------


def is_kronecker_layer(module: nn.Module) -> bool:
    """Linear, groups=1 Conv2d or PyG Linear: the layers KFAC and SINGD must precondition."""
    from torch_geometric.nn.dense.linear import Linear as PygLinear

    if isinstance(module, nn.Conv2d):
        return module.groups == 1
    return isinstance(module, (nn.Linear, PygLinear))


def kronecker_layer_names(model: nn.Module) -> set[str]:
    """Names of the modules that must get a preconditioner."""
    return {
        name
        for name, module in model.named_modules()
        if is_kronecker_layer(module) and module.weight.requires_grad
    }


def preconditioned_parameter_names(model: nn.Module) -> set[str]:
    """Names of the weights and biases of :func:`kronecker_layer_names` layers."""
    layers = kronecker_layer_names(model)
    return {
        f"{prefix}.{attribute}" if prefix else attribute
        for prefix, module in model.named_modules()
        if prefix in layers
        for attribute, param in module.named_parameters(recurse=False)
        if attribute in ("weight", "bias") and param.requires_grad
    }


def cifar_model(name: str, **kwargs: Any) -> nn.Module:
    """``name`` built for its cifar setting (Cora's shape for the GCN)."""
    setting = CIFAR[name]
    return build_model(name, setting.num_classes, setting.input_shape, setting.preset, **kwargs)


def param_count(name: str, preset: str) -> int:
    """The ``param_count_<preset>`` documented in ``conf/model/<name>.yaml``."""
    return OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")[f"param_count_{preset}"]


# ----- 1. describe() lists exactly the Kronecker layers ----------------------------------------


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_describe_matches_module_count(model_name: str, optimizer_name: str) -> None:
    model = cifar_model(model_name).to("meta")  # shapes suffice; no 4609^2 KFAC factors
    kwargs = SINGD_DIAGONAL if optimizer_name == "SINGD" else {}
    optimizer = OPTIMIZERS[optimizer_name](model, **kwargs)
    rows = optimizer.describe()
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == param_count(model_name, CIFAR[model_name].preset)

    names = [row["name"] for row in rows]
    assert sorted(names) == sorted(trainable)  # every trainable parameter exactly once
    for row in rows:
        assert row["numel"] == trainable[row["name"]]
    expected = preconditioned_parameter_names(model)
    assert {row["name"] for row in rows if row["preconditioned"]} == expected
    assert {row["name"] for row in rows if not row["preconditioned"]} == set(trainable) - expected
    plain_hows = [row["how"] for row in rows if not row["preconditioned"]]
    assert all(how.startswith("plain momentum/weight-decay update: ") for how in plain_hows)
    assert all(len(how) > len("plain momentum/weight-decay update: ") for how in plain_hows)
    if optimizer_name == "SINGD":
        assert all("diagonal" in row["how"] for row in rows if row["preconditioned"])

    share = sum(trainable[name] for name in expected) / sum(trainable.values())
    assert optimizer.preconditioned_fraction() == pytest.approx(share, rel=1e-12)
    assert 0.8 < share < 1.0
    assert set(plain_kinds(model, optimizer)) == PLAIN_KINDS[model_name]


def test_parameter_kind_labels() -> None:
    assert parameter_kind(nn.Conv2d(8, 8, 3, groups=8), "weight") == "depthwise Conv2d"
    assert parameter_kind(nn.Conv2d(8, 8, 3, groups=2), "weight") == "grouped Conv2d"
    assert parameter_kind(nn.LayerNorm(4), "bias") == "LayerNorm"
    assert parameter_kind(nn.GroupNorm(2, 4), "weight") == "GroupNorm"
    holder = nn.Module()
    holder.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
    assert parameter_kind(holder, "pos_embed") == "position embedding (Module)"
    assert parameter_kind(holder, "scale") == "Module.scale"


def test_report_script(tmp_path: Path) -> None:
    out = tmp_path / "preconditioned.md"
    text = main(["--models", "convmixer", "gcn", "--out", str(out)])
    assert out.read_text() == text
    lines = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in text.splitlines()
    }
    assert set(lines) >= {("convmixer", "cifar"), ("convmixer", "imagewoof"), ("gcn", "cora")}
    for preset in ("cifar", "imagewoof"):
        assert f"| {param_count('convmixer', preset):,} |" in lines[("convmixer", preset)]
    # GCN on Cora: the two PyG Linear weights (1433 x 16, 16 x 7) of 23,063 parameters
    gcn_share = f"{100 * (1433 * 16 + 16 * 7) / 23063:.2f}%"
    assert lines[("gcn", "cora")].count(f"| {gcn_share} ") == 2  # KFAC and SINGD
    assert "GCNConv.bias" in lines[("gcn", "cora")]
    assert "depthwise Conv2d" in lines[("convmixer", "imagewoof")]


# ----- 2. 2-step runs through the entrypoint ---------------------------------------------------


def override_value(value: Any) -> str:
    """A Python value as a Hydra override value (lists as ``[a,b]``)."""
    if isinstance(value, list):
        return "[" + ",".join(str(item) for item in value) + "]"
    return str(value)


def smoke_overrides(model: str, *extra: str) -> list[str]:
    """``scale=smoke`` run of the tiny ``model`` on CIFAR-100's (or Cora's) synthetic stand-in."""
    data = "cora" if model == "gcn" else "cifar100"
    return [
        "scale=smoke",
        f"model={model}",
        *(f"++model.{key}={override_value(value)}" for key, value in TINY_KWARGS[model].items()),
        f"data={data}",
        f"data.root={MISSING_ROOT}",
        "trainer.device=cpu",
        "logger=none",
        *extra,
    ]


def run_two_steps(overrides: list[str], run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Compose and run; check the summary and metrics; return the config and checkpoint."""
    cfg = compose_config(overrides)
    error = run(cfg, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok", summary
    assert summary["steps"] == 2
    assert summary["synthetic_data"] is True and summary["data_used"] != cfg.data.name
    assert 0.0 <= error == summary["final_test_error"] <= 1.0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] == 2
    for row in rows:
        assert all(math.isfinite(row[key]) for key in METRIC_KEYS), row
        assert row["optimizer_state_bytes"] > 0
    return cfg, torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)


def moved_off_identity(family: str, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether a layer's factors left their start (``S = I`` for KFAC, ``K = C = I`` for SINGD)."""
    if family == "kfac":
        return not any(
            torch.equal(tensors[key], torch.eye(len(tensors[key]))) for key in ("S_K", "S_C")
        )
    return not any(torch.all(tensors[key] == 1) for key in ("K.diag", "C.diag"))


@pytest.mark.parametrize("optimizer", TRAIN_OPTIMIZERS)
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_two_step_run(model: str, optimizer: str, tmp_path: Path) -> None:
    cfg, checkpoint = run_two_steps(smoke_overrides(model, f"optimizer={optimizer}"), tmp_path)
    state = checkpoint["optimizer"]
    if optimizer in ("sgd", "adamw"):
        assert "layers" not in state
        return
    setting = CIFAR[model]
    built = build_model(model, setting.num_classes, setting.input_shape, **model_kwargs(cfg))
    layers = state["layers"]
    assert set(layers) == kronecker_layer_names(built)
    family = cfg.optimizer.family
    stuck = [name for name, tensors in layers.items() if not moved_off_identity(family, tensors)]
    assert not stuck, f"no curvature statistics recorded for {stuck}"
    for tensors in layers.values():
        assert all(torch.isfinite(tensor).all() for tensor in tensors.values())


# ----- 3. bf16 factors under bf16 autocast -----------------------------------------------------


def random_batch(model: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Model inputs and integer targets of a small random batch (a random graph for the GCN)."""
    generator = torch.Generator().manual_seed(0)
    setting = CIFAR[model]
    if model == "gcn":
        nodes = 12
        x = torch.randn(nodes, *setting.input_shape, generator=generator)
        edge_index = torch.randint(nodes, (2, 40), generator=generator)
        return (x, edge_index), torch.randint(setting.num_classes, (nodes,), generator=generator)
    images = torch.randn(4, *setting.input_shape, generator=generator)
    return (images,), torch.randint(setting.num_classes, (4,), generator=generator)


def statistics_recorded(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether SINGD's Riemannian momenta ``m_K``, ``m_C`` (zero at start) were updated.

    bf16 factors are checked through the momenta: a first step changes ``K = I`` by
    ``lr_cov * m_K``, which rounds away where it is below half a bf16 ulp at 1 (2**-8).
    """
    return all(tensors[key].any() for key in ("m_K.diag", "m_C.diag"))


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_bf16_singd_step(model_name: str) -> None:
    torch.manual_seed(0)
    model = cifar_model(model_name, **TINY_KWARGS[model_name]).train()
    optimizer = SINGD(model, lr=0.05, T=1, preconditioner_dtype=torch.bfloat16, **SINGD_DIAGONAL)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    layer_names = kronecker_layer_names(model)
    output_dtypes: dict[str, torch.dtype] = {}

    def record_dtype(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            output_dtypes[name] = output.dtype

        return hook

    handles = [
        module.register_forward_hook(record_dtype(name))
        for name, module in model.named_modules()
        if name in layer_names
    ]
    inputs, target = random_batch(model_name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(*inputs)
    for handle in handles:
        handle.remove()
    loss = F.cross_entropy(logits.float(), target)
    loss.backward()
    optimizer.step()

    assert set(output_dtypes) == layer_names
    assert set(output_dtypes.values()) == {torch.bfloat16}  # autocast reached every layer
    assert torch.isfinite(loss)
    layers = optimizer.state_dict()["layers"]
    assert set(layers) == layer_names
    for name, tensors in layers.items():
        assert all(t.dtype == torch.bfloat16 and torch.isfinite(t).all() for t in tensors.values())
        assert statistics_recorded(tensors), f"{name}: no curvature statistics recorded"
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and torch.isfinite(param).all(), name
        if param.grad is not None and param.grad.any():
            assert not torch.equal(param, before[name]), f"{name} was not updated"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_bf16_entrypoint_run(model: str, tmp_path: Path) -> None:
    overrides = smoke_overrides(
        model,
        "optimizer=singd_diagonal",
        "optimizer.preconditioner_dtype=bfloat16",
        "trainer.precision=bf16",
    )
    _, checkpoint = run_two_steps(overrides, tmp_path)
    layers = checkpoint["optimizer"]["layers"]
    assert layers
    for tensors in layers.values():
        assert all(t.dtype == torch.bfloat16 and torch.isfinite(t).all() for t in tensors.values())
        assert statistics_recorded(tensors)
