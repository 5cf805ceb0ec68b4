"""Compact Convolutional Transformer (CCT), Hassani et al. 2021.

"Escaping the big data paradigm with compact transformers" (arXiv:2104.05704):
a convolutional tokenizer (conv -> ReLU -> max-pool blocks) turns the image
into a short token sequence, a small transformer encoder mixes the tokens and
*sequence pooling* (an attention-weighted average of the output tokens,
softmax over a learned score per token) replaces the class token.

Presets (``preset=``; every option can be overridden by keyword):

* ``"cifar"`` -- CCT-7/3x1, the paper's CIFAR model: one 3x3 conv (stride 1)
  + max-pool, 32 px -> 16x16 = 256 tokens, 7 encoder layers, 4 heads,
  embed 256, MLP ratio 2, learnable position embedding, attention dropout
  0.1, stochastic depth 0.1. **3,783,269** parameters for 3x32x32 inputs and
  100 classes (the paper's 3.76M is the 10-class count, 3,760,139).
* ``"imagewoof"`` -- CCT-7/3x2: two 3x3 conv blocks (64 intermediate
  channels), 64 px -> 16x16 = 256 tokens, same encoder. **3,902,411**
  parameters for 3x64x64 inputs and 10 classes. The paper's 7x7 tokenizer
  (CCT-7/7x2) uses stride-2 convs meant for 224 px images; at 64 px it would
  leave only 4x4 = 16 tokens, so the 3x3 tokenizer is used here
  (``kernel_size=7`` restores it).

Attention is written with plain ``nn.Linear`` layers (``qkv`` and ``proj``)
and :func:`torch.nn.functional.scaled_dot_product_attention`, so Kronecker-
factored optimizers precondition every projection; the tokenizer convs have
``groups=1``. The encoder layer is the standard pre-norm layer
``x + MHSA(LN(x))``, ``x + MLP(LN(x))``; the authors' code instead
normalises the residual stream before the MLP (same parameter count).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model
from models.validation import ImageInput, check_input_shape, resolve_options

NAME = "cct"

POSITIONAL_EMBEDDINGS = ("learnable", "sine", "none")

PRESETS: dict[str, dict[str, Any]] = {
    "cifar": {
        "embed_dim": 256,
        "depth": 7,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "kernel_size": 3,
        "n_conv_layers": 1,
        "conv_channels": 64,
        "positional_embedding": "learnable",
        "dropout": 0.0,
        "attn_dropout": 0.1,
        "drop_path_rate": 0.1,
    },
    "imagewoof": {
        "embed_dim": 256,
        "depth": 7,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "kernel_size": 3,
        "n_conv_layers": 2,
        "conv_channels": 64,
        "positional_embedding": "learnable",
        "dropout": 0.0,
        "attn_dropout": 0.1,
        "drop_path_rate": 0.1,
    },
}


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole residual branch per sample.

    Args:
        x: Branch output, batch first.
        drop_prob: Probability of dropping a sample's branch.
        training: Only drop in training mode.

    Returns:
        ``x`` with dropped samples zeroed and kept ones scaled by ``1 / (1 - drop_prob)``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    return x * keep / keep_prob


class DropPath(nn.Module):
    """Module wrapper of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the branch of each sample with probability ``drop_prob`` (training only)."""
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.Linear`` projections.

    ``softmax(Q K^T / sqrt(d_head)) V`` per head, with ``[Q, K, V] = x W_qkv``
    and output projection ``W_proj``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = False,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dropout = float(attn_dropout)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` with shape ``(B, N, dim)``."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Two-layer GELU perceptron applied to every token."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(..., dim)`` to ``(..., dim)``."""
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        attn_dropout: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, False, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map tokens ``(B, N, dim)`` to ``(B, N, dim)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvTokenizer(nn.Module):
    """``n_conv_layers`` blocks of conv -> ReLU -> max-pool(3, stride 2), then flatten.

    As in the paper's code, a ``k x k`` conv has stride ``max(1, k // 2 - 1)``
    (1 for k=3, 2 for k=7) and padding ``max(1, k // 2)``; convs have no bias.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        kernel_size: int,
        n_conv_layers: int,
        conv_channels: int,
    ) -> None:
        super().__init__()
        self.stride = max(1, kernel_size // 2 - 1)
        self.padding = max(1, kernel_size // 2)
        self.kernel_size = kernel_size
        self.n_conv_layers = n_conv_layers
        stride, padding = self.stride, self.padding
        widths = [in_channels] + [conv_channels] * (n_conv_layers - 1) + [embed_dim]
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False),
                    nn.ReLU(),
                    nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
                )
                for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to tokens ``(B, H' W', embed_dim)``."""
        return self.blocks(images).flatten(2).transpose(1, 2)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(H', W')`` of an ``H x W`` image."""
        sizes = [height, width]
        for _ in range(self.n_conv_layers):
            sizes = [(s + 2 * self.padding - self.kernel_size) // self.stride + 1 for s in sizes]
            sizes = [(s + 2 - 3) // 2 + 1 for s in sizes]
        return sizes[0], sizes[1]


class SequencePooling(nn.Module):
    """Attention pooling: ``z = softmax(x w)^T x`` with one learned score per token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Pooling weights ``(B, N)`` of tokens ``(B, N, dim)``; each row sums to one."""
        return F.softmax(self.score(x).squeeze(-1), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool tokens ``(B, N, dim)`` into ``(B, dim)``."""
        return torch.einsum("bn,bnd->bd", self.weights(x), x)


def sinusoidal_embedding(num_tokens: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position embedding of shape ``(1, num_tokens, dim)``.

    Entry ``(p, i)`` is ``sin`` (even ``i``) or ``cos`` (odd ``i``) of
    ``p / 10000^(2 floor(i/2) / dim)``.
    """
    position = torch.arange(num_tokens, dtype=torch.float64)[:, None]
    channel = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = position / torch.pow(10000.0, 2 * torch.div(channel, 2, rounding_mode="floor") / dim)
    table = torch.where(channel.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


class CCT(nn.Module):
    """Compact Convolutional Transformer: tokenizer, encoder, sequence pooling, linear head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        kernel_size: int,
        n_conv_layers: int,
        conv_channels: int,
        positional_embedding: str,
        dropout: float,
        attn_dropout: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.tokenizer = ConvTokenizer(
            input_shape[0], embed_dim, kernel_size, n_conv_layers, conv_channels
        )
        grid = self.tokenizer.grid_size(input_shape[1], input_shape[2])
        self.num_tokens = grid[0] * grid[1]
        self.pos_embed: nn.Parameter | None = None
        if positional_embedding == "learnable":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.2)
        elif positional_embedding == "sine":
            self.register_buffer(
                "sine_embed", sinusoidal_embedding(self.num_tokens, embed_dim), persistent=False
            )
        self.positional_embedding = positional_embedding
        self.dropout = nn.Dropout(dropout)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            EncoderLayer(embed_dim, num_heads, mlp_ratio, dropout, attn_dropout, rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.pool = SequencePooling(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_linear_and_norm()

    def _init_linear_and_norm(self) -> None:
        """Truncated-normal (std 0.02) Linear weights, zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Encoded, normalised tokens ``(B, N, embed_dim)`` (input of sequence pooling)."""
        x = self.tokenizer(images)
        if self.positional_embedding != "none" and x.shape[1] != self.num_tokens:
            raise ValueError(
                f"images of shape {tuple(images.shape[1:])} give {x.shape[1]} tokens; this CCT "
                f"was built for {self.num_tokens} tokens (its build-time input_shape)"
            )
        if self.pos_embed is not None:
            x = x + self.pos_embed
        elif self.positional_embedding == "sine":
            x = x + self.sine_embed
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, C, H, W)`` to logits ``(B, num_classes)``."""
        return self.head(self.pool(self.forward_tokens(images)))


@register_model(NAME)
def build_cct(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> CCT:
    """Build a CCT from a preset (see the module docstring) and keyword overrides.

    Args:
        num_classes: Number of output classes.
        input_shape: ``(C, H, W)`` of one image.
        preset: ``"cifar"`` (CCT-7/3x1) or ``"imagewoof"`` (CCT-7/3x2).
        **kwargs: Overrides of the preset options: ``embed_dim``, ``depth``,
            ``num_heads``, ``mlp_ratio``, ``kernel_size``, ``n_conv_layers``,
            ``conv_channels``, ``positional_embedding`` (``learnable``,
            ``sine``, ``none``), ``dropout``, ``attn_dropout``,
            ``drop_path_rate``. ``param_count_*`` keys are ignored.

    Returns:
        The model.

    Raises:
        ValueError: On an unknown preset or option, a bad option value, or an
            input shape that is not ``(C, H, W)``.
    """
    options = resolve_options(NAME, preset, PRESETS, kwargs)
    shape = check_input_shape(NAME, input_shape, ImageInput(reason="any positive H and W"))
    _check_options(num_classes, options)
    return CCT(num_classes, shape, **options)


def _check_options(num_classes: int, options: dict[str, Any]) -> None:
    """Reject option values the architecture cannot be built with."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    for key in ("embed_dim", "depth", "num_heads", "n_conv_layers", "conv_channels"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise ValueError(f"model.{key}={options[key]!r} must be a positive int")
    if options["embed_dim"] % options["num_heads"]:
        raise ValueError(
            f"model.embed_dim={options['embed_dim']} must be divisible by "
            f"model.num_heads={options['num_heads']}"
        )
    kernel_size = options["kernel_size"]
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"model.kernel_size={kernel_size!r}; allowed: odd ints >= 3")
    if options["positional_embedding"] not in POSITIONAL_EMBEDDINGS:
        raise ValueError(
            f"model.positional_embedding={options['positional_embedding']!r}; "
            f"allowed: {list(POSITIONAL_EMBEDDINGS)}"
        )
    if not math.isfinite(options["mlp_ratio"]) or options["mlp_ratio"] <= 0:
        raise ValueError(f"model.mlp_ratio={options['mlp_ratio']!r} must be positive")
    for key in ("dropout", "attn_dropout", "drop_path_rate"):
        if not 0.0 <= options[key] < 1.0:
            raise ValueError(f"model.{key}={options[key]!r} must be in [0, 1)")
