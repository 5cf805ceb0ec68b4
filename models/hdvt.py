"""Hybrid data-efficient vision transformer (DHVT), Lu et al. 2022.

"Bridging the gap between vision transformers and convolutional neural
networks on small datasets" (NeurIPS 2022) calls the model DHVT; this suite
calls it ``hdvt``. It is a class-token ViT without position embedding and
with three changes that give it convolutional inductive biases:

* **SOPE** (sequential overlapping patch embedding): ``log2(patch_size)``
  stages of 3x3 stride-2 conv + BatchNorm with GELU between stages, channels
  doubling up to ``embed_dim``, wrapped in learnable per-channel affine maps
  (``alpha * x + beta``) before and after.
* **DAFF** (dynamic aggregation feed-forward), in place of the MLP: on the
  patch tokens, pointwise ``fc1`` + BN + GELU, a depthwise 3x3 conv + BN +
  GELU with a shortcut, pointwise ``fc2`` + BN; the class token is not
  passed through the MLP but rescaled channel-wise by a squeeze-excitation
  of the patch output, ``cls * W_e GELU(W_c mean(patches))`` (no sigmoid,
  reduction 4, as in the authors' code).
* **HI-MHA** (head-interacted multi-head attention): each head's channel
  slice is averaged over the tokens, projected to a full-width *head token*
  (``ht_proj``, LayerNorm, GELU, plus a learned head embedding); the ``h``
  head tokens join the sequence for ordinary multi-head attention, after
  which they are averaged and added to the class token and dropped.

Presets (``preset=``; every option can be overridden by keyword):

* ``"cifar"`` -- DHVT-T for CIFAR: 32 px, patch 4 (two SOPE stages,
  8x8 = 64 patch tokens), embed 192, depth 12, 4 heads, MLP ratio 4, qkv
  bias, stochastic depth 0.1. **6,008,650** parameters for 3x32x32 inputs and
  100 classes.
* ``"imagewoof"`` -- the same DHVT-T encoder at 64 px with patch 8 (three
  SOPE stages, 8x8 = 64 patch tokens). **6,031,552** parameters for 3x64x64
  inputs and 10 classes.

All projections (``qkv``, ``proj``, ``ht_proj``, the DAFF pointwise layers,
the squeeze-excitation layers, the head) are plain ``nn.Linear`` and the SOPE
convs have ``groups=1``, so Kronecker-factored optimizers precondition them;
the DAFF pointwise layers are ``nn.Linear`` on the tokens rather than the
authors' 1x1 convs (same function, parameters and default initialisation).
Only the depthwise convs, norms, affine maps and embeddings get the plain
update.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.cct import DropPath, MultiHeadSelfAttention
from models.registry import register_model
from models.validation import ImageInput, check_input_shape, resolve_options

NAME = "hdvt"

PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "patch_size": 4,
        "qkv_bias": True,
        "se_reduction": 4,
        "dropout": 0.0,
        "attn_dropout": 0.0,
        "drop_path_rate": 0.1,
    },
    "imagewoof": {
        "embed_dim": 192,
        "depth": 12,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "patch_size": 8,
        "qkv_bias": True,
        "se_reduction": 4,
        "dropout": 0.0,
        "attn_dropout": 0.0,
        "drop_path_rate": 0.1,
    },
}

PATCH_SIZES = (2, 4, 8, 16)


class Affine(nn.Module):
    """Per-channel affine map ``alpha * x + beta`` of ``(B, C, H, W)`` features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale and shift every channel."""
        return x * self.alpha + self.beta


class SequentialOverlappingPatchEmbedding(nn.Module):
    """SOPE: affine, ``log2(patch_size)`` x (3x3 stride-2 conv + BN), GELU between, affine."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        num_stages = int(math.log2(patch_size))
        widths = [in_channels] + [embed_dim // 2 ** (num_stages - 1 - i) for i in range(num_stages)]
        layers: list[nn.Module] = []
        for stage, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if stage > 0:
                layers.append(nn.GELU())
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False))
            layers.append(nn.BatchNorm2d(c_out))
        self.pre_affine = Affine(in_channels)
        self.stages = nn.Sequential(*layers)
        self.post_affine = Affine(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to a feature map ``(B, embed_dim, H/p, W/p)``."""
        return self.post_affine(self.stages(self.pre_affine(images)))


class DynamicAggregationFeedForward(nn.Module):
    """DAFF: conv-augmented MLP on patch tokens; squeeze-excitation rescaling of the class token."""

    def __init__(self, dim: int, hidden_dim: int, se_reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.bn1 = nn.BatchNorm2d(hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.bn3 = nn.BatchNorm1d(dim)
        self.compress = nn.Linear(dim, dim // se_reduction)
        self.excitation = nn.Linear(dim // se_reduction, dim)

    def reset_pointwise(self) -> None:
        """Give ``fc1``/``fc2`` PyTorch's default init (that of the authors' 1x1 convs)."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Map ``[cls, patches]`` of shape ``(B, 1 + H W, dim)`` to the same shape.

        Args:
            x: Class token followed by the patch tokens in row-major order.
            grid: Patch grid ``(H, W)``.
        """
        cls_token, patches = x[:, :1], x[:, 1:]
        batch = patches.shape[0]
        hidden = self.fc1(patches).transpose(1, 2).reshape(batch, -1, *grid)
        hidden = F.gelu(self.bn1(hidden))
        hidden = hidden + F.gelu(self.bn2(self.dwconv(hidden)))
        out = self.fc2(hidden.flatten(2).transpose(1, 2))
        out = self.bn3(out.transpose(1, 2)).transpose(1, 2)
        weight = self.excitation(F.gelu(self.compress(out.mean(dim=1, keepdim=True))))
        return torch.cat([cls_token * weight, out], dim=1)


class HeadInteractedAttention(nn.Module):
    """HI-MHA: multi-head self-attention over the tokens plus one head token per head."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, attn_dropout: float, proj_dropout: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.ht_proj = nn.Linear(self.head_dim, dim)
        self.ht_norm = nn.LayerNorm(self.head_dim)
        self.head_embed = nn.Parameter(torch.zeros(1, num_heads, dim))
        nn.init.trunc_normal_(self.head_embed, std=0.02)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, attn_dropout, 0.0)
        self.proj_drop = nn.Dropout(proj_dropout)

    def head_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Head tokens ``(B, h, dim)`` of tokens ``(B, N, dim)``."""
        batch, tokens, dim = x.shape
        per_head = x.reshape(batch, tokens, self.num_heads, self.head_dim).mean(dim=1)
        projected = self.ht_proj(per_head).reshape(batch, self.num_heads, self.num_heads, -1)
        head_tokens = F.gelu(self.ht_norm(projected)).flatten(2)
        return head_tokens + self.head_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[cls, patches]`` of shape ``(B, N, dim)`` to the same shape."""
        tokens = x.shape[1]
        out = self.attn(torch.cat([x, self.head_tokens(x)], dim=1))
        out, head_out = out[:, :tokens], out[:, tokens:]
        cls_token = out[:, :1] + head_out.mean(dim=1, keepdim=True)
        return self.proj_drop(torch.cat([cls_token, out[:, 1:]], dim=1))


class HDVTBlock(nn.Module):
    """``x + HI-MHA(LN(x))`` then ``x + DAFF(LN(x))``, with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        se_reduction: int,
        dropout: float,
        attn_dropout: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = HeadInteractedAttention(dim, num_heads, qkv_bias, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = DynamicAggregationFeedForward(dim, int(dim * mlp_ratio), se_reduction)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Map ``[cls, patches]`` ``(B, 1 + H W, dim)`` on an ``H x W`` grid to the same shape."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.ffn(self.norm2(x), grid))


class HDVT(nn.Module):
    """DHVT: SOPE patch embedding, class token, HI-MHA/DAFF blocks, LayerNorm, linear head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        patch_size: int,
        qkv_bias: bool,
        se_reduction: int,
        dropout: float,
        attn_dropout: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = SequentialOverlappingPatchEmbedding(
            input_shape[0], embed_dim, patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dropout = nn.Dropout(dropout)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            HDVTBlock(
                embed_dim, num_heads, mlp_ratio, qkv_bias, se_reduction, dropout, attn_dropout, rate
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Authors' init: trunc-normal (std 0.02) Linear and class token, unit norms.

        The DAFF pointwise layers keep PyTorch's default (they are 1x1 convs there).
        """
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            block.ffn.reset_pointwise()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to logits ``(B, num_classes)``."""
        features = self.patch_embed(images)
        grid = (features.shape[2], features.shape[3])
        patches = features.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, grid)
        return self.head(self.norm(x)[:, 0])


@register_model(NAME)
def build_hdvt(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> HDVT:
    """Build an HDVT (DHVT) from a preset (see the module docstring) and keyword overrides.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` of one image; ``H`` and ``W`` must be
            multiples of ``patch_size``.
        preset: ``"cifar"`` (patch 4) or ``"imagewoof"`` (patch 8).
        **kwargs: Overrides of the preset options: ``embed_dim``, ``depth``,
            ``num_heads``, ``mlp_ratio``, ``patch_size`` (2, 4, 8 or 16),
            ``qkv_bias``, ``se_reduction``, ``dropout``, ``attn_dropout``,
            ``drop_path_rate``. ``param_count_*`` keys are ignored.

    Returns:
        The model.

    Raises:
        ValueError: On an unknown preset or option, a bad option value, or an
            input shape the patch embedding cannot take.
    """
    options = resolve_options(NAME, preset, PRESETS, kwargs)
    _check_options(num_classes, options)
    patch_size = options["patch_size"]
    requirement = ImageInput(
        multiple_of=patch_size, reason=f"SOPE patch_size={patch_size} needs whole patches"
    )
    shape = check_input_shape(NAME, input_shape, requirement)
    return HDVT(num_classes, shape, **options)


def _check_options(num_classes: int, options: dict[str, Any]) -> None:
    """Reject option values the architecture cannot be built with."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    for key in ("embed_dim", "depth", "num_heads", "se_reduction"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise ValueError(f"model.{key}={options[key]!r} must be a positive int")
    if options["patch_size"] not in PATCH_SIZES:
        raise ValueError(
            f"model.patch_size={options['patch_size']!r}; allowed: {list(PATCH_SIZES)}"
        )
    embed_dim, num_heads = options["embed_dim"], options["num_heads"]
    stages = int(math.log2(options["patch_size"]))
    if embed_dim % num_heads or embed_dim % 2 ** (stages - 1):
        raise ValueError(
            f"model.embed_dim={embed_dim} must be divisible by model.num_heads={num_heads} and by "
            f"2**(SOPE stages - 1)={2 ** (stages - 1)}"
        )
    if embed_dim < options["se_reduction"]:
        raise ValueError(
            f"model.se_reduction={options['se_reduction']} must not exceed embed_dim={embed_dim}"
        )
    if not math.isfinite(options["mlp_ratio"]) or options["mlp_ratio"] <= 0:
        raise ValueError(f"model.mlp_ratio={options['mlp_ratio']!r} must be positive")
    for key in ("dropout", "attn_dropout", "drop_path_rate"):
        if not 0.0 <= options[key] < 1.0:
            raise ValueError(f"model.{key}={options[key]!r} must be in [0, 1)")
