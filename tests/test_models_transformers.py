"""Tests of the in-repo transformers: CCT (models/cct.py) and HDVT/DHVT (models/hdvt.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from models.cct import (
    CCT,
    ConvTokenizer,
    MultiHeadSelfAttention,
    SequencePooling,
    build_cct,
    drop_path,
)
from models.hdvt import (
    HDVT,
    DynamicAggregationFeedForward,
    HeadInteractedAttention,
    build_hdvt,
)
from models.registry import MODELS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
BUILDERS = {"cct": build_cct, "hdvt": build_hdvt}
PRESETS = {"cifar": (100, (3, 32, 32)), "imagewoof": (10, (3, 64, 64))}


def _build(name: str, preset: str, **kwargs) -> nn.Module:
    num_classes, shape = PRESETS[preset]
    torch.manual_seed(0)
    return BUILDERS[name](num_classes, shape, preset, **kwargs)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _preconditioned_fraction(model: nn.Module) -> float:
    """Share of parameters in nn.Linear and groups=1 nn.Conv2d layers."""
    covered = sum(
        p.numel()
        for module in model.modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        for p in module.parameters(recurse=False)
    )
    return covered / _num_params(model)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_registered(name: str) -> None:
    assert MODELS[name] is BUILDERS[name]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_backward(name: str, preset: str, precision: str) -> None:
    model = _build(name, preset)
    num_classes, shape = PRESETS[preset]
    images = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, num_classes - 1])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    assert logits.shape == (2, num_classes)
    assert logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_param_count_matches_config(name: str, preset: str) -> None:
    config = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert config.name == name and config.preset == "cifar"
    assert _num_params(_build(name, preset)) == config[f"param_count_{preset}"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_config_keys_build_the_model(name: str) -> None:
    """The yaml's keys go straight to the builder; param_count_* are ignored."""
    config = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"))
    builder = MODELS[config.pop("name")]
    model = builder(100, (3, 32, 32), **config)
    assert _num_params(model) == config["param_count_cifar"]


def _cct_param_formula(
    dim: int, depth: int, mlp: int, classes: int, conv_widths: list[int], kernel: int, tokens: int
) -> int:
    """Independent count: tokenizer convs, pos-embed, encoder, norm, pooling, head."""
    tokenizer = sum(
        a * b * kernel * kernel for a, b in zip(conv_widths[:-1], conv_widths[1:], strict=True)
    )
    layer = 3 * dim * dim + (dim * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim) + 4 * dim
    return (
        tokenizer + tokens * dim + depth * layer + 2 * dim + (dim + 1) + (dim * classes + classes)
    )


def test_cct_param_count_formula() -> None:
    assert _num_params(_build("cct", "cifar")) == _cct_param_formula(
        256, 7, 512, 100, [3, 256], 3, 16 * 16
    )
    assert _num_params(_build("cct", "imagewoof")) == _cct_param_formula(
        256, 7, 512, 10, [3, 64, 256], 3, 16 * 16
    )
    # The paper's CCT-7/3x1 on CIFAR-10: 3.76M parameters.
    assert round(_num_params(build_cct(10, (3, 32, 32))) / 1e6, 2) == 3.76


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_preconditioned_fraction(name: str, preset: str) -> None:
    fraction = _preconditioned_fraction(_build(name, preset))
    print(f"{name}/{preset}: {fraction:.4f} of parameters in Linear + groups=1 Conv2d")
    assert fraction > 0.95


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bad_input_shape(name: str) -> None:
    with pytest.raises(ValueError, match=rf"model\.name='{name}'.*\(1433,\).*allowed"):
        BUILDERS[name](7, (1433,))
    with pytest.raises(ValueError, match=rf"model\.name='{name}'"):
        BUILDERS[name](7, (3, 0, 32))


def test_hdvt_needs_whole_patches() -> None:
    with pytest.raises(ValueError, match=r"model\.name='hdvt'.*\(3, 30, 30\).*multiples of 4"):
        build_hdvt(100, (3, 30, 30))
    with pytest.raises(ValueError, match=r"\(3, 60, 60\).*multiples of 8"):
        build_hdvt(10, (3, 60, 60), "imagewoof")
    with pytest.raises(ValueError, match="patch_size"):
        build_hdvt(10, (3, 48, 48), patch_size=3)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bad_preset_and_options(name: str) -> None:
    with pytest.raises(ValueError, match=r"imagenet.*\['cifar', 'imagewoof'\]"):
        BUILDERS[name](10, (3, 32, 32), "imagenet")
    with pytest.raises(ValueError, match=r"model\.width=.*allowed.*embed_dim"):
        BUILDERS[name](10, (3, 32, 32), width=3)
    with pytest.raises(ValueError, match="num_heads"):
        BUILDERS[name](10, (3, 32, 32), embed_dim=64, num_heads=3)
    with pytest.raises(ValueError, match="num_classes"):
        BUILDERS[name](0, (3, 32, 32))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_kwargs_override_preset(name: str) -> None:
    model = BUILDERS[name](
        10,
        (1, 16, 16),
        "cifar",
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=1.0,
        param_count_cifar=-1,
        param_count_imagewoof=-1,
    )
    assert len(model.blocks) == 2
    assert model.head.in_features == 64
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 10)


def _reference_attention(
    x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, heads: int
) -> torch.Tensor:
    """Explicit softmax(Q K^T / sqrt(d)) V, one head at a time."""
    dim = x.shape[-1]
    head_dim = dim // heads
    query, key, value = qkv(x).split(dim, dim=-1)
    outputs = []
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        scores = query[..., part] @ key[..., part].transpose(-1, -2) / math.sqrt(head_dim)
        outputs.append(torch.softmax(scores, dim=-1) @ value[..., part])
    return proj(torch.cat(outputs, dim=-1))


def test_attention_matches_explicit_reference() -> None:
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(24, 3, qkv_bias=True, attn_dropout=0.5).eval()
    x = torch.randn(2, 7, 24)
    expected = _reference_attention(x, attention.qkv, attention.proj, 3)
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


def test_head_interacted_attention_matches_explicit_reference() -> None:
    torch.manual_seed(0)
    dim, heads, tokens = 24, 4, 10
    attention = HeadInteractedAttention(dim, heads, True, 0.0, 0.0).eval()
    x = torch.randn(2, tokens, dim)
    # Head tokens: head h's channel slice averaged over tokens, projected to
    # dim, LayerNorm + GELU per head-sized chunk, plus the head embedding.
    head_dim = dim // heads
    head_tokens = []
    for h in range(heads):
        mean_slice = x[:, :, h * head_dim : (h + 1) * head_dim].mean(dim=1)
        chunks = attention.ht_proj(mean_slice).split(head_dim, dim=-1)
        normed = [
            F.gelu(F.layer_norm(c, (head_dim,), attention.ht_norm.weight, attention.ht_norm.bias))
            for c in chunks
        ]
        head_tokens.append(torch.cat(normed, dim=-1) + attention.head_embed[0, h])
    full = torch.cat([x, torch.stack(head_tokens, dim=1)], dim=1)
    out = _reference_attention(full, attention.attn.qkv, attention.attn.proj, heads)
    expected = out[:, :tokens].clone()
    expected[:, 0] += out[:, tokens:].mean(dim=1)
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


def test_daff_matches_pointwise_conv_reference() -> None:
    """DAFF with nn.Linear pointwise layers equals the authors' 1x1-conv formulation."""
    torch.manual_seed(0)
    dim, hidden, grid = 16, 32, (3, 4)
    ffn = DynamicAggregationFeedForward(dim, hidden, 4).train()
    x = torch.randn(5, 1 + grid[0] * grid[1], dim)
    cls_token, patches = x[:, :1], x[:, 1:]
    feature = patches.transpose(1, 2).reshape(5, dim, *grid)
    conv1 = F.conv2d(feature, ffn.fc1.weight[:, :, None, None], ffn.fc1.bias)
    h = F.gelu(F.batch_norm(conv1, None, None, ffn.bn1.weight, ffn.bn1.bias, training=True))
    h = h + F.gelu(
        F.batch_norm(ffn.dwconv(h), None, None, ffn.bn2.weight, ffn.bn2.bias, training=True)
    )
    conv3 = F.conv2d(h, ffn.fc2.weight[:, :, None, None], ffn.fc2.bias)
    out = F.batch_norm(conv3, None, None, ffn.bn3.weight, ffn.bn3.bias, training=True)
    squeeze = out.mean(dim=(2, 3))
    weight = ffn.excitation(F.gelu(ffn.compress(squeeze)))
    expected = torch.cat([cls_token * weight[:, None], out.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(ffn(x, grid), expected, rtol=1e-5, atol=1e-5)


def test_daff_class_token_is_only_rescaled() -> None:
    torch.manual_seed(0)
    ffn = DynamicAggregationFeedForward(16, 32, 4).eval()
    x = torch.randn(2, 1 + 9, 16)
    y = x.clone()
    y[:, 0] = torch.randn(2, 16)
    out_x, out_y = ffn(x, (3, 3)), ffn(y, (3, 3))
    torch.testing.assert_close(out_x[:, 1:], out_y[:, 1:])
    # Same channel weights, so the class-token outputs have the inputs' ratio.
    torch.testing.assert_close(out_x[:, 0] * y[:, 0], out_y[:, 0] * x[:, 0])


def test_sequence_pooling_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    model = _build("cct", "cifar").eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = model.forward_tokens(images)
    weights = model.pool.weights(tokens)
    assert weights.shape == (3, 256)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    pooled = sum(weights[:, n, None] * tokens[:, n] for n in range(tokens.shape[1]))
    torch.testing.assert_close(model.pool(tokens), pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(images), model.head(pooled), rtol=1e-5, atol=1e-6)


def test_sequence_pooling_follows_scores() -> None:
    pool = SequencePooling(2)
    with torch.no_grad():
        pool.score.weight.copy_(torch.tensor([[1.0, 0.0]]))
        pool.score.bias.zero_()
    tokens = torch.tensor([[[0.0, 1.0], [math.log(3.0), 5.0]]])
    torch.testing.assert_close(pool.weights(tokens), torch.tensor([[0.25, 0.75]]))


@pytest.mark.parametrize("kernel, layers", [(3, 1), (3, 2), (7, 2)])
@pytest.mark.parametrize("height, width", [(32, 32), (64, 48), (33, 17)])
def test_tokenizer_grid_size(kernel: int, layers: int, height: int, width: int) -> None:
    tokenizer = ConvTokenizer(3, 8, kernel, layers, 4)
    tokens = tokenizer(torch.zeros(1, 3, height, width))
    grid = tokenizer.grid_size(height, width)
    assert tokens.shape == (1, grid[0] * grid[1], 8)


def test_cct_tokens_and_positional_embeddings() -> None:
    assert _build("cct", "cifar").num_tokens == 16 * 16
    assert _build("cct", "imagewoof").num_tokens == 16 * 16
    sine = build_cct(10, (3, 32, 32), positional_embedding="sine")
    learnable = build_cct(10, (3, 32, 32))
    assert _num_params(learnable) - _num_params(sine) == 256 * 256
    positions = torch.arange(256, dtype=torch.float64)
    torch.testing.assert_close(sine.sine_embed[0, :, 0], torch.sin(positions).float())
    torch.testing.assert_close(sine.sine_embed[0, :, 1], torch.cos(positions).float())
    expected = torch.cos(positions / 10000 ** (2 / 256)).float()
    torch.testing.assert_close(sine.sine_embed[0, :, 3], expected)
    with pytest.raises(ValueError, match="positional_embedding"):
        build_cct(10, (3, 32, 32), positional_embedding="rope")
    with pytest.raises(ValueError, match="built for 256 tokens"):
        learnable(torch.zeros(1, 3, 64, 64))
    free = build_cct(10, (3, 32, 32), positional_embedding="none")
    assert free(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_hdvt_patch_embedding_stages() -> None:
    for preset, stages in (("cifar", 2), ("imagewoof", 3)):
        model = _build("hdvt", preset)
        assert isinstance(model, HDVT)
        convs = [m for m in model.patch_embed.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == stages
        assert all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs)
        assert convs[-1].out_channels == 192
        _, shape = PRESETS[preset]
        features = model.patch_embed(torch.zeros(2, *shape))
        assert features.shape == (2, 192, 8, 8)


def test_drop_path() -> None:
    x = torch.ones(1000, 3)
    assert drop_path(x, 0.3, training=False) is x
    out = drop_path(x, 0.25, training=True)
    kept = out[:, 0] != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    assert (out[~kept] == 0).all()
    assert 0.65 < kept.float().mean() < 0.85


def test_eval_mode_is_deterministic() -> None:
    for model in (_build("cct", "cifar"), _build("hdvt", "cifar")):
        model.eval()
        images = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(model(images), model(images))
    assert isinstance(_build("cct", "cifar"), CCT)
