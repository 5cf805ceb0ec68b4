"""Tests of VGG, VGG16_bn, GCN and the timm-backed models (vgg.py, gcn.py, timm_models.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from models import build_model
from models.validation import FeatureInput, ImageInput, check_input_shape, resolve_options

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
IMAGE_MODELS = ["vgg", "vgg16_bn", "convmixer", "repvit", "swin", "gcvit"]
PRESETS = {"cifar": (100, (3, 32, 32)), "imagewoof": (10, (3, 64, 64))}
CASES = [(name, preset) for name in IMAGE_MODELS for preset in PRESETS]


def load_config(name: str) -> dict[str, Any]:
    """The model's config as Hydra would pass it (lists stay ``ListConfig``)."""
    return dict(OmegaConf.load(CONF_DIR / f"{name}.yaml"))


def build_from_config(name: str, preset: str) -> nn.Module:
    """Build ``name`` from its config with ``model.preset`` overridden."""
    num_classes, shape = PRESETS[preset]
    config = {**load_config(name), "preset": preset}
    torch.manual_seed(0)
    return build_model(num_classes=num_classes, input_shape=shape, **config)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_gradients(model: nn.Module) -> None:
    """Every parameter got a finite gradient, and the gradient is not all zero."""
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert [name for name, grad in grads.items() if grad is None] == []
    assert all(torch.isfinite(grad).all() for grad in grads.values())
    assert any(grad.abs().sum() > 0 for grad in grads.values())


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_param_count_matches_config(name: str, preset: str) -> None:
    model = build_from_config(name, preset)
    assert num_params(model) == load_config(name)[f"param_count_{preset}"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(("name", "preset"), CASES)
def test_forward_backward(name: str, preset: str, precision: str) -> None:
    num_classes, shape = PRESETS[preset]
    model = build_from_config(name, preset)
    images = torch.randn(2, *shape)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1]))
    assert logits.shape == (2, num_classes)
    assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    assert torch.isfinite(loss)
    loss.backward()
    check_gradients(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_imagewoof_preset_at_128px(name: str) -> None:
    model = build_model(name, 10, (3, 128, 128), preset="imagewoof")
    model(torch.randn(2, 3, 128, 128)).sum().backward()
    check_gradients(model)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_convolutions_are_dense_or_depthwise(name: str) -> None:
    model = build_from_config(name, "cifar")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert module.groups in (1, module.in_channels)


def vgg_reference_count(layout: list[int], in_channels: int, head: list[int]) -> int:
    """Closed-form count: per entry a 3x3 conv with bias and a BN (scale, shift); then Linears."""
    count, channels = 0, in_channels
    for out in layout:
        count += 9 * channels * out + out + 2 * out
        channels = out
    widths = [channels, *head]
    return count + sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


VGG_CONVS = {
    11: [64, 128, 256, 256, 512, 512, 512, 512],
    13: [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
    16: [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    19: [64, 64, 128, 128, *[256] * 4, *[512] * 8],
}


@pytest.mark.parametrize("depth", sorted(VGG_CONVS))
def test_vgg_depths_match_closed_form_count(depth: int) -> None:
    model = build_model("vgg", 10, (1, 32, 32), depth=depth)
    assert num_params(model) == vgg_reference_count(VGG_CONVS[depth], 1, [10])
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_vgg_width_multiplier_scales_every_layer() -> None:
    model = build_model("vgg", 100, (3, 32, 32), width_multiplier=0.25)
    layout = [max(1, round(c * 0.25)) for c in VGG_CONVS[16]]
    assert num_params(model) == vgg_reference_count(layout, 3, [100])


def test_vgg16_bn_matches_torchvision_features_and_paper_head() -> None:
    from data.torchvision_compat import import_torchvision

    reference = import_torchvision().models.vgg16_bn(weights=None).features
    model = build_model("vgg16_bn", 10, (3, 32, 32))
    ours = [tuple(p.shape) for p in model.features.parameters()]
    assert ours == [tuple(p.shape) for p in reference.parameters()]
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 10)]
    dropout = [m for m in model.classifier.modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropout] == [0.5]


def test_swin_and_gcvit_window_sizes_per_stage() -> None:
    swin = build_model("swin", 100, (3, 32, 32))
    assert [stage.blocks[0].window_size for stage in swin.layers] == [(4, 4)] * 3
    assert [any(block.shift_size) for block in swin.layers[0].blocks] == [False, True]
    gcvit = build_model("gcvit", 10, (3, 64, 64), preset="imagewoof")
    windows = [stage.blocks[0].window_size for stage in gcvit.stages]
    assert windows == [(8, 8), (8, 8), (4, 4), (2, 2)]


def dense_gcn_reference(
    model: nn.Module, x: torch.Tensor, edge_index: torch.Tensor
) -> torch.Tensor:
    """Kipf & Welling's forward pass with the dense normalized adjacency D^-1/2 (A + I) D^-1/2."""
    num_nodes = x.shape[0]
    adjacency = torch.eye(num_nodes)
    adjacency[edge_index[1], edge_index[0]] = 1.0
    inv_sqrt_degree = adjacency.sum(1).rsqrt()
    propagate = inv_sqrt_degree[:, None] * adjacency * inv_sqrt_degree[None, :]
    conv1, conv2 = model.conv1, model.conv2
    hidden = torch.relu(propagate @ conv1.lin(x) + conv1.bias)
    return propagate @ conv2.lin(hidden) + conv2.bias


def random_graph(num_nodes: int, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random undirected graph without self loops or repeated edges."""
    generator = torch.Generator().manual_seed(0)
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=generator) < 0.3, diagonal=1)
    edges = upper.nonzero().T
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)
    return torch.randn(num_nodes, num_features, generator=generator), edge_index


def test_gcn_matches_dense_reference_and_config() -> None:
    config = load_config("gcn")
    model = build_model(num_classes=7, input_shape=(1433,), **config)
    assert num_params(model) == config["param_count_cora"]
    small = build_model("gcn", 3, (5,)).eval()
    x, edge_index = random_graph(12, 5)
    torch.testing.assert_close(small(x, edge_index), dense_gcn_reference(small, x, edge_index))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gcn_forward_backward(precision: str) -> None:
    torch.manual_seed(0)
    model = build_model("gcn", 4, (6,), preset="cora")
    x, edge_index = random_graph(20, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(x, edge_index)
    assert logits.shape == (20, 4)
    nn.functional.cross_entropy(logits.float(), torch.arange(20) % 4).backward()
    check_gradients(model)


def test_gcn_dropout_only_in_training() -> None:
    model = build_model("gcn", 3, (5,), dropout=0.5)
    x, edge_index = random_graph(10, 5)
    torch.manual_seed(1)
    first = model(x, edge_index)
    assert not torch.equal(first, model(x, edge_index))
    model.eval()
    torch.testing.assert_close(model(x, edge_index), model(x, edge_index))


@pytest.mark.parametrize(
    ("name", "shape", "preset", "kwargs", "allowed"),
    [
        ("vgg", (3, 16, 16), "cifar", {}, "multiples of 32"),
        ("vgg16_bn", (3, 48, 48), "cifar", {}, "multiples of 32"),
        ("vgg", (1433,), "cifar", {}, "(C, H, W)"),
        ("convmixer", (3, 33, 33), "cifar", {}, "multiples of 2"),
        ("repvit", (3, 24, 24), "cifar", {}, "multiples of 16"),
        ("swin", (3, 36, 36), "cifar", {}, "multiples of 8"),
        ("swin", (3, 32, 32), "cifar", {"window_size": 3}, "window_size=3"),
        ("gcvit", (3, 96, 96), "imagewoof", {}, "power of 2"),
        ("gcvit", (3, 64, 32), "cifar", {}, "power of 2"),
        ("gcvit", (3, 32), "cifar", {}, "(C, H, W)"),
        ("gcn", (3, 32, 32), "cifar", {}, "(num_features,)"),
    ],
)
def test_bad_input_shape_names_model_shape_and_rule(
    name: str, shape: tuple[int, ...], preset: str, kwargs: dict[str, Any], allowed: str
) -> None:
    with pytest.raises(ValueError) as error:
        build_model(name, 10, shape, preset=preset, **kwargs)
    message = str(error.value)
    assert f"model.name={name!r}" in message
    assert str(shape) in message
    assert allowed in message


def test_unknown_name_lists_models() -> None:
    with pytest.raises(ValueError, match=r"model.name='vgg17' is unknown; allowed: .*'vgg16_bn'"):
        build_model("vgg17", 10, (3, 32, 32))


@pytest.mark.parametrize("name", [*IMAGE_MODELS, "gcn"])
def test_unknown_preset_lists_presets(name: str) -> None:
    shape = (5,) if name == "gcn" else (3, 32, 32)
    with pytest.raises(ValueError, match=r"model.preset='imagenet' is unknown .*allowed: \["):
        build_model(name, 10, shape, preset="imagenet")


def test_unknown_option_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"model.dpth=16 is not an option .*'depth'"):
        build_model("vgg", 10, (3, 32, 32), dpth=16)
    with pytest.raises(ValueError, match=r"model.depth=17 .*\[11, 13, 16, 19\]"):
        build_model("vgg", 10, (3, 32, 32), depth=17)
    with pytest.raises(ValueError, match=r"model.dropout=1.0"):
        build_model("vgg16_bn", 10, (3, 32, 32), dropout=1.0)
    with pytest.raises(ValueError, match=r"model.embed_dim=\(32, 64\) and .* same length"):
        build_model("repvit", 10, (3, 32, 32), embed_dim=[32, 64], depth=[1, 1, 1])
    with pytest.raises(ValueError, match=r"model.depths=\(2, 2\) and .* same length"):
        build_model("swin", 10, (3, 32, 32), depths=[2, 2])


def test_param_count_keys_are_ignored_and_overrides_apply() -> None:
    presets = {"cifar": {"depth": 16}}
    options = resolve_options("m", "cifar", presets, {"param_count_cifar": 1, "depth": 11})
    assert options == {"depth": 11}
    assert presets == {"cifar": {"depth": 16}}


def test_check_input_shape_returns_ints() -> None:
    assert check_input_shape("m", [3, 64, 32], ImageInput(multiple_of=32)) == (3, 64, 32)
    assert check_input_shape("m", (7,), FeatureInput()) == (7,)
    with pytest.raises(ValueError, match=r"input_shape=\(3, 0, 32\)"):
        check_input_shape("m", (3, 0, 32), ImageInput())
