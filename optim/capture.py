"""Kronecker curvature capture: layer inputs and output gradients as matrices.

Hooks on every preconditioned layer turn, on preconditioner-update steps only,

* the layer input into ``A`` (``rows x d_in``) with ``U = A^T A``, and
* the gradient w.r.t. the layer output into ``B`` (``rows x d_out``) with
  ``G = B^T B``.

Conventions (identical to the authors' ``singd`` 0.0.5; empirical Fisher):

* Bias: a constant 1 is appended to every input row.
* Weight sharing (sequence positions, convolution locations ``L``), Eschenhagen
  et al. (2023): ``"expand"`` treats every (sample, location) pair as a row;
  ``"reduce"`` averages inputs and sums output gradients over locations, one row per
  sample. Conv2d inputs are unfolded (im2col); ``"reduce"`` computes the per-sample
  patch means without materialising the unfolded tensor.
* Scaling: ``A`` is divided by ``sqrt(rows)``, so ``U`` is the mean of ``a a^T``
  over rows. For a loss that is a mean over ``m`` terms (``loss_average="batch"``:
  ``m`` = batch size; ``"batch+sequence"``: ``m`` = batch size x locations) the
  output gradients are multiplied by ``sqrt(m)``, so that
  ``G = (1/m) sum_i g_i g_i^T`` with ``g_i = m * dloss/dy_i`` the gradient of term
  ``i``'s own loss. ``loss_average=None`` (a summed loss) leaves them unscaled.
  Hence ``U`` and ``G`` do not depend on the batch size.
* Several forward/backward passes before one ``step`` (gradient accumulation) are
  combined by a batch-size-weighted mean (for ``loss_average=None`` the output side
  is summed, like the gradients; ``U`` stays a mean).

What is kept per layer is decided by the optimizer: the capture calls
``input_stat(layer, rows)`` in the forward hook and ``grad_stat(layer, rows)`` in the
backward hook, where ``rows`` is a :class:`LayerRows` that builds ``A`` (``B``) only
when asked (``rows.matrix()``) and gives ``diag(A^T A)`` without building it
(``rows.column_square_sums()``: one pass over the input; a conv input is not unfolded),
and ``A^T A`` (``rows.gram()``: for a stride-1 conv input from shifted products of the
input, :mod:`optim.conv_gram`, without the im2col).
Only the results are stored (e.g. ``A^T A`` for KFAC, a structured ``Pi(K^T A^T A K)``
for SINGD), so no activation outlives its backward pass and nothing is recorded on
other steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from optim.conv_gram import conv_input_gram, offset_window_sums
from optim.gram import gram
from optim.layers import KroneckerLayer, conv_padding

KFAC_APPROXIMATIONS = ("expand", "reduce")
LOSS_AVERAGES = ("batch", "batch+sequence", None)
CONV_GRAM_MIN_CHANNELS = 16
"""Stride-1 conv inputs with fewer channels get ``A^T A`` from the im2col matrix."""


def input_matrix(layer: KroneckerLayer, x: Tensor, kfac_approx: str) -> Tensor:
    """Layer input as the scaled matrix ``A`` with ``U = A^T A``.

    Args:
        layer: The layer.
        x: Its input, ``[B, ..., d_in]`` (linear) or ``[B, C, H, W]`` (conv2d).
        kfac_approx: ``"expand"`` or ``"reduce"``.

    Returns:
        ``A`` of shape ``rows x d_in`` (bias column included), stored column-major (the
        transpose of a contiguous tensor, so ``A^T`` is free).
    """
    x = x.detach()
    if layer.kind == "conv2d" and kfac_approx == "expand":
        return _conv_expand_matrix(layer.module, x, with_bias=layer.bias is not None)
    if layer.kind == "conv2d":
        rows = _conv_patch_means(layer.module, x)
    elif kfac_approx == "expand" or x.dim() == 2:
        rows = x.reshape(-1, x.shape[-1])
    else:
        rows = x.reshape(x.shape[0], -1, x.shape[-1]).mean(dim=1)
    scale = 1.0 / math.sqrt(rows.shape[0])
    width = rows.shape[1]
    out = rows.new_empty(width + (0 if layer.bias is None else 1), rows.shape[0])
    torch.mul(rows.T, scale, out=out[:width])  # column-major, as for conv inputs
    if layer.bias is not None:
        out[-1] = scale
    return out.T


def _conv_expand_matrix(conv: torch.nn.Conv2d, x: Tensor, with_bias: bool) -> Tensor:
    """Scaled im2col of a conv input, ``[B*L, C*kh*kw (+1)]``, written in one copy.

    The patches are strided views of the (scaled, padded) input, copied once into
    column-major storage (the result is the transpose of a contiguous
    ``[C*kh*kw (+1), B*L]`` tensor: the copy then reads input rows contiguously, about
    twice as fast as a row-major target, and ``A^T`` is free). This is several times
    faster on CPU than ``F.unfold`` followed by a transpose, a bias concatenation and a
    scaling, each a pass over the large matrix.
    """
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    ph, pw = conv_padding(conv)
    batch, channels = x.shape[0], x.shape[1]
    out_h, out_w = conv_output_size(conv, x)
    scale = 1.0 / math.sqrt(batch * out_h * out_w)
    padded = F.pad(x * scale, (pw, pw, ph, ph))  # scaling the small input scales every patch
    patches = padded.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    patches = patches[..., ::dh, ::dw][:, :, :out_h, :out_w]  # [B, C, OH, OW, kh, kw]
    width = channels * kh * kw
    out = x.new_empty(width + (1 if with_bias else 0), batch * out_h * out_w)
    target = out[:width].view(channels, kh, kw, batch, out_h, out_w)
    target.copy_(patches.permute(1, 4, 5, 0, 2, 3))
    if with_bias:
        out[-1] = scale
    return out.T


class LayerRows:
    """The scaled matrix ``A`` (or ``B``) of one layer and pass, built on demand.

    Args:
        build: Returns the matrix (``rows x d``).
        square_sums: Returns ``diag(A^T A)`` (length ``d``, float32 or wider) without
            building ``A``; ``None`` computes it from the matrix.
        count: The number of rows.
        device: Where ``A`` lives.
        gram: Returns ``A^T A`` (float32 or wider) without building ``A``; ``None``
            computes it from the matrix.
    """

    def __init__(
        self,
        build: Callable[[], Tensor],
        square_sums: Callable[[], Tensor] | None,
        count: int,
        device: torch.device,
        gram: Callable[[], Tensor] | None = None,
    ) -> None:
        self._build = build
        self._square_sums = square_sums
        self._gram = gram
        self.count = count
        self.device = device
        self._matrix: Tensor | None = None

    def matrix(self) -> Tensor:
        """``A`` (``rows x d``; may be a transposed view); built once, then cached."""
        if self._matrix is None:
            self._matrix = self._build()
        return self._matrix

    def transposed(self) -> Tensor:
        """``A^T`` (``d x rows``), contiguous (free for conv inputs and gradients)."""
        return self.matrix().T.contiguous()

    def column_square_sums(self) -> Tensor:
        """``diag(A^T A)``, accumulated in at least float32."""
        if self._matrix is None and self._square_sums is not None:
            return self._square_sums()
        return _square_sums(self.matrix(), dim=0)

    def gram(self) -> Tensor:
        """``A^T A`` in at least float32 (outside autocast); a stride-1 conv input is not
        unfolded (:mod:`optim.conv_gram`)."""
        with torch.autocast(self.device.type, enabled=False):
            if self._matrix is None and self._gram is not None:
                return self._gram()
            matrix = self.matrix()
            return gram(matrix.T.to(torch.promote_types(matrix.dtype, torch.float32)))

    def scaled(self, factor: float) -> LayerRows:
        """The rows of ``factor * A`` (e.g. to test scale invariances)."""
        return LayerRows(
            lambda: self.matrix() * factor,
            lambda: self.column_square_sums() * factor**2,
            self.count,
            self.device,
            lambda: self.gram() * factor**2,
        )


def _square_sums(x: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """Sum of squares over ``dim``, accumulated in at least float32."""
    wide = torch.promote_types(x.dtype, torch.float32)
    return torch.sum(x * x, dim=dim, dtype=wide)


def input_rows(layer: KroneckerLayer, x: Tensor, kfac_approx: str) -> LayerRows:
    """The layer input as :class:`LayerRows` of ``A`` (see :func:`input_matrix`).

    Args:
        layer: The layer.
        x: Its input.
        kfac_approx: ``"expand"`` or ``"reduce"``.

    Returns:
        The lazy rows; ``column_square_sums`` reads ``x`` once, and ``gram`` of a
        stride-1 conv input with at least :data:`CONV_GRAM_MIN_CHANNELS` channels comes
        from shifted products of ``x`` (:func:`optim.conv_gram.conv_input_gram`).
    """
    x = x.detach()
    build = lambda: input_matrix(layer, x, kfac_approx)  # noqa: E731
    bias = layer.bias is not None
    if layer.kind == "conv2d" and kfac_approx == "expand":
        conv = layer.module
        out_h, out_w = conv_output_size(conv, x)
        gram_fn = None
        if conv.stride == (1, 1) and x.shape[1] >= CONV_GRAM_MIN_CHANNELS:
            gram_fn = lambda: conv_input_gram(  # noqa: E731
                x, conv.kernel_size, conv.dilation, conv_padding(conv), bias
            )
        return LayerRows(
            build,
            lambda: _with_bias_entry(_conv_expand_square_sums(conv, x), bias),
            x.shape[0] * out_h * out_w,
            x.device,
            gram_fn,
        )
    if layer.kind == "conv2d" or (kfac_approx == "reduce" and x.dim() > 2):
        return LayerRows(build, None, x.shape[0], x.device)  # per-sample means: a small matrix
    flat = x.reshape(-1, x.shape[-1])
    return LayerRows(
        build,
        lambda: _with_bias_entry(_square_sums(flat, dim=0) / flat.shape[0], bias),
        flat.shape[0],
        x.device,
    )


def _with_bias_entry(column_square_sums: Tensor, bias: bool) -> Tensor:
    """Append the bias column's ``sum_rows (1/sqrt(rows))^2 = 1`` if there is a bias."""
    if not bias:
        return column_square_sums
    return torch.cat([column_square_sums, column_square_sums.new_ones(1)])


def conv_output_size(conv: torch.nn.Conv2d, x: Tensor) -> tuple[int, int]:
    """Spatial size ``(H_out, W_out)`` of ``conv`` applied to ``x``."""
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    ph, pw = conv_padding(conv)
    out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return out_h, out_w


def _window_sums(conv: torch.nn.Conv2d, image: Tensor) -> Tensor:
    """:func:`optim.conv_gram.offset_window_sums` with the geometry of ``conv``."""
    return offset_window_sums(
        image, conv.kernel_size, conv.dilation, conv_padding(conv), conv.stride
    )


def _conv_expand_square_sums(conv: torch.nn.Conv2d, x: Tensor) -> Tensor:
    """``diag(A^T A)`` of the scaled im2col ``A`` (bias column excluded) without unfolding.

    Column ``(c, i, j)`` of ``A`` holds the input of channel ``c`` at kernel offset
    ``(i, j)`` of every output location, so its sum of squares is a strided window sum
    of the batch-summed ``x^2``: ``C x H x W`` work instead of ``B L C kh kw``.
    """
    out_h, out_w = conv_output_size(conv, x)
    sums = _window_sums(conv, _square_sums(x, dim=0))  # [C, kh*kw]
    return sums.reshape(-1) / (x.shape[0] * out_h * out_w)


def grad_rows(
    layer: KroneckerLayer, grad: Tensor, kfac_approx: str, loss_average: str | None
) -> LayerRows:
    """The output gradient as :class:`LayerRows` of ``B`` (see :func:`grad_output_matrix`).

    Args:
        layer: The layer.
        grad: Gradient w.r.t. its output.
        kfac_approx: ``"expand"`` or ``"reduce"``.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None``.

    Returns:
        The lazy rows; for ``"expand"``, ``column_square_sums`` reads ``grad`` once
        (no transposed copy of a conv gradient).
    """
    grad = grad.detach()
    build = lambda: grad_output_matrix(layer, grad, kfac_approx, loss_average)  # noqa: E731
    batch_size = grad.shape[0]
    if kfac_approx != "expand":
        return LayerRows(build, None, batch_size, grad.device)
    if layer.kind == "conv2d":
        locations, sum_dims = grad.shape[2] * grad.shape[3], (0, 2, 3)
    else:
        locations, sum_dims = (
            grad.numel() // (batch_size * grad.shape[-1]),
            tuple(range(grad.dim() - 1)),
        )
    factor = _grad_scale(batch_size, locations, loss_average) ** 2
    return LayerRows(
        build,
        lambda: _square_sums(grad, dim=sum_dims) * factor,
        batch_size * locations,
        grad.device,
    )


def _grad_scale(batch_size: int, locations: int, loss_average: str | None) -> float:
    """Factor ``sqrt(m)`` applied to output gradients (1 for a summed loss)."""
    if loss_average is None:
        return 1.0
    return math.sqrt(batch_size * (locations if loss_average == "batch+sequence" else 1))


def grad_output_matrix(
    layer: KroneckerLayer, grad: Tensor, kfac_approx: str, loss_average: str | None
) -> Tensor:
    """Output gradient as the scaled matrix ``B`` with ``G = B^T B``.

    Args:
        layer: The layer.
        grad: Gradient w.r.t. its output, ``[B, ..., d_out]`` or ``[B, C, H, W]``.
        kfac_approx: ``"expand"`` or ``"reduce"``.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None`` (see module doc).

    Returns:
        ``B`` of shape ``rows x d_out``, stored column-major (``B^T`` is free).
    """
    grad = grad.detach()
    if layer.kind == "conv2d":
        grad = grad.flatten(start_dim=2).transpose(1, 2)  # [B, locations, C_out]
    else:
        grad = grad.reshape(grad.shape[0], -1, grad.shape[-1])  # [B, positions, d_out]
    batch_size, locations = grad.shape[0], grad.shape[1]
    if kfac_approx == "expand":
        columns = grad.permute(2, 0, 1)  # [d_out, B, locations]: reads conv maps contiguously
    else:
        columns = grad.sum(dim=1).T  # [d_out, B]
    out = grad.new_empty(columns.shape)  # column-major storage: B^T is free, one copy
    torch.mul(columns, _grad_scale(batch_size, locations, loss_average), out=out)
    return out.reshape(out.shape[0], -1).T


def _conv_patch_means(conv: torch.nn.Conv2d, x: Tensor) -> Tensor:
    """Per-sample mean over output locations of the unfolded input (``"reduce"``).

    Each kernel offset's mean is that of one strided window of the padded input, so
    nothing is unfolded. Returns ``[B, C*kh*kw]`` in unfold order.
    """
    out_h, out_w = conv_output_size(conv, x)
    return _window_sums(conv, x).reshape(x.shape[0], -1) / (out_h * out_w)


class _RunningMean:
    """Batch-size-weighted mean (or sum) of statistics over forward/backward passes."""

    def __init__(self, average: bool) -> None:
        self.average = average
        self.value: Any = None
        self.count = 0

    def add(self, value: Any, count: int) -> None:
        if self.value is None:
            self.value, self.count = value, count
            return
        if self.average:
            old = self.count / (self.count + count)
            self.value = self.value * old + value * (1.0 - old)
        else:
            self.value = self.value + value
        self.count += count


class CurvatureCapture:
    """Forward and backward hooks that record Kronecker statistics per layer.

    Args:
        layers: The layers to hook (name -> layer).
        kfac_approx: ``"expand"`` or ``"reduce"``.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None``.
        input_stat: Maps ``(layer, rows of A)`` (:class:`LayerRows`) to the statistic
            kept for the input side.
        grad_stat: Maps ``(layer, rows of B)`` to the statistic kept for the output side.
        is_active: Called in every forward pass; statistics are recorded only when it
            returns True (the optimizer's update steps) and gradients are enabled.
    """

    def __init__(
        self,
        layers: dict[str, KroneckerLayer],
        kfac_approx: str,
        loss_average: str | None,
        input_stat: Callable[[KroneckerLayer, LayerRows], Any],
        grad_stat: Callable[[KroneckerLayer, LayerRows], Any],
        is_active: Callable[[], bool],
    ) -> None:
        self.layers = layers
        self.kfac_approx = kfac_approx
        self.loss_average = loss_average
        self.input_stat = input_stat
        self.grad_stat = grad_stat
        self.is_active = is_active
        self._inputs: dict[str, _RunningMean] = {}
        self._grads: dict[str, _RunningMean] = {}
        self._handles = [
            layer.module.register_forward_hook(self._make_hook(layer)) for layer in layers.values()
        ]

    def _make_hook(self, layer: KroneckerLayer) -> Callable[..., None]:
        def forward_hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], output: Any) -> None:
            if not (
                torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad
            ):
                return
            if not self.is_active():
                return
            batch_size = inputs[0].shape[0]
            input_value = self.input_stat(layer, input_rows(layer, inputs[0], self.kfac_approx))

            def backward_hook(grad: Tensor) -> None:
                b = grad_rows(layer, grad, self.kfac_approx, self.loss_average)
                # U is a mean over rows in every pass; G is a sum for a summed loss.
                average = self.loss_average is not None
                self._inputs.setdefault(layer.name, _RunningMean(True)).add(input_value, batch_size)
                self._grads.setdefault(layer.name, _RunningMean(average)).add(
                    self.grad_stat(layer, b), batch_size
                )

            output.register_hook(backward_hook)

        return forward_hook

    def has_stats(self, name: str) -> bool:
        """Whether statistics of layer ``name`` were recorded since the last ``pop``."""
        return name in self._inputs and name in self._grads

    def pop(self, name: str) -> tuple[Any, Any] | None:
        """Return and forget the recorded (input, output-gradient) statistics.

        Args:
            name: Layer name.

        Returns:
            The pair, or ``None`` if nothing was recorded.
        """
        if not self.has_stats(name):
            self._inputs.pop(name, None)
            self._grads.pop(name, None)
            return None
        return self._inputs.pop(name).value, self._grads.pop(name).value

    def clear(self) -> None:
        """Forget every recorded statistic."""
        self._inputs.clear()
        self._grads.clear()

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
