"""Matrix products that write into rows padded to an aligned stride (CPU).

Kronecker factors of layers with a bias have odd sides (e.g. ``d = 4609``: 4608
unfolded inputs plus the bias column). On the CPU BLAS behind PyTorch, a product
whose output rows have such a length is about 1.35x slower than the same product
writing into rows padded to a multiple of 16 entries (2 threads: ``4609^3`` in
1.39 s against 1.01 s; ``512 x 4609 x 4609`` in 0.16 s against 0.12 s). The
functions here allocate the padded buffer and return the ``rows x cols`` view of
it, so the padding never shows; callers that store a result long-term make it
contiguous.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROW_ALIGN = 16
"""Output rows are padded to a multiple of this many entries."""

MIN_ALIGNED_COLS = 256
"""Narrower outputs are allocated as they are (no measurable gain below this)."""


def aligned_empty(rows: int, cols: int, like: Tensor) -> Tensor:
    """An uninitialised ``rows x cols`` tensor whose row stride is a multiple of 16.

    Args:
        rows: Number of rows.
        cols: Number of columns.
        like: Gives dtype and device.

    Returns:
        A view of a padded buffer on CPU; a plain tensor elsewhere or when ``cols``
        is already aligned or small.
    """
    if like.device.type != "cpu" or cols % ROW_ALIGN == 0 or cols < MIN_ALIGNED_COLS:
        return like.new_empty(rows, cols)
    stride = -(-cols // ROW_ALIGN) * ROW_ALIGN
    return like.new_empty(rows, stride)[:, :cols]


def _needs_autograd(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for 2-D tensors, written into aligned rows.

    Args:
        a: ``m x k``.
        b: ``k x n`` (same dtype and device).

    Returns:
        ``a @ b`` (possibly a view of a padded buffer).
    """
    if _needs_autograd(a, b):
        return a @ b
    out = aligned_empty(a.shape[0], b.shape[1], a)
    return torch.mm(a, b, out=out)


def add_matmul(
    base: Tensor, a: Tensor, b: Tensor, weight: float = 1.0, base_weight: float = 1.0
) -> Tensor:
    """``base_weight * base + weight * (a @ b)`` in one fused product, into aligned rows.

    Args:
        base: ``m x n``.
        a: ``m x k``.
        b: ``k x n``.
        weight: A Python number.
        base_weight: A Python number.

    Returns:
        The sum (possibly a view of a padded buffer).
    """
    if _needs_autograd(base, a, b):
        return torch.addmm(base, a, b, alpha=weight, beta=base_weight)
    out = aligned_empty(a.shape[0], b.shape[1], a)
    return torch.addmm(base, a, b, alpha=weight, beta=base_weight, out=out)
