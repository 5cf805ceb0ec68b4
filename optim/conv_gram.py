"""``U = A^T A`` of a stride-1 convolution's unfolded input, without unfolding it.

Column ``(c, i, j)`` of the im2col matrix ``A`` (see :mod:`optim.capture`) holds
channel ``c`` of the input at kernel offset ``(i, j)`` of every output location. The
block of ``U`` that pairs offsets ``(i, j)`` and ``(i', j') = (i + s, j + t)`` is
therefore a sum over input positions ``q`` of ``x_q x_{q + Delta}^T`` (``C x C``,
summed over the batch) with the shift ``Delta = (s d_h, t d_w)``, taken over the
rectangle of positions that offset ``(i, j)`` reads. All ``(k_h k_w)^2`` blocks come
from ``(2 k_h - 1)(2 k_w - 1)`` shift products, half of them by symmetry
(``Delta -> -Delta`` transposes), plus border terms: for a 3x3 kernel 13 products of
``C x C`` over the ``B H W`` positions instead of one ``9C x 9C`` gram (81 ``C x C``
blocks, or about 50 with :func:`optim.gram.gram`), and no ``9x``-sized im2col copy.

Per shift, the rows that every participating offset reads (the "band") are one
product of two zero-copy views of a channel-first, batch-innermost copy of the
input whose rows carry ``(k_w - 1) d_w`` zero columns: a shifted view then pairs
every position with its partner, or with a zero where the partner falls outside
(the padding of the convolution contributes nothing either). Each block then differs
from the band by a few border rows and columns, added or removed position by
position (one batched product of ``C x B`` by ``B x C`` per border position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from optim.gram import gram
from optim.matmul import aligned_empty


def _read_interval(
    offset: int, shift: int, size: int, out: int, dilation: int, padding: int
) -> tuple[int, int]:
    """Input coordinates ``q`` (one axis) that offset ``offset`` reads, with a valid partner.

    Offset ``i`` reads ``q = o + i d - p`` for outputs ``o`` in ``[0, out)``; the partner
    at offset ``i + shift`` is ``q + shift d``. Both must lie in ``[0, size)``.
    """
    low = max(offset * dilation - padding, 0, -shift * dilation)
    high = min(offset * dilation - padding + out, size, size - shift * dilation)
    return low, max(low, high)


def conv_input_gram(
    x: Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    with_bias: bool,
) -> Tensor:
    """``A^T A`` for the scaled im2col ``A`` of a stride-1, zero-padded convolution input.

    Equal to ``gram(A^T)`` with ``A`` from :func:`optim.capture.input_matrix`
    (``"expand"``: rows = batch x output locations, scaled by ``1/sqrt(rows)``; a bias
    column of that constant if ``with_bias``).

    Args:
        x: The input, ``[B, C, H, W]``.
        kernel_size: ``(k_h, k_w)``.
        dilation: ``(d_h, d_w)``.
        padding: ``(p_h, p_w)`` (zeros on both sides).
        with_bias: Append the bias row and column.

    Returns:
        ``U`` (``C k_h k_w (+1)`` square), in float32 (float64 for float64 inputs).
    """
    (kh, kw), (dh, dw), (ph, pw) = kernel_size, dilation, padding
    batch, channels, height, width = x.shape
    out_h, out_w = height + 2 * ph - dh * (kh - 1), width + 2 * pw - dw * (kw - 1)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"input {tuple(x.shape)} is smaller than the dilated kernel")
    dtype = torch.promote_types(x.dtype, torch.float32)
    offsets = kh * kw
    dim = channels * offsets
    out = aligned_empty(dim + int(with_bias), dim + int(with_bias), x.new_empty(0, dtype=dtype))
    blocks = out[:dim, :dim].view(channels, offsets, channels, offsets)  # [c, o, c', o']

    # [C, H + 1, W + (k_w - 1) d_w, B], scaled: zero columns on the right and one zero row
    # below, so a flat shift of a band pairs each position with its partner or a zero.
    row_len = width + (kw - 1) * dw
    scale = (batch * out_h * out_w) ** -0.5
    padded = x.new_zeros((channels, height + 1, row_len, batch), dtype=dtype)
    padded[:, :height, :width].copy_(x.permute(1, 2, 3, 0)).mul_(scale)
    flat = padded.view(channels, -1)
    size = (height, width)
    pair_blocks: dict[tuple[int, int], Tensor] = {}  # (o, o') with o <= o': the C x C block

    for s in range(kh):  # row shifts s >= 0; for s = 0, column shifts t >= 0 (symmetry)
        for t in range(-(kw - 1) if s > 0 else 0, kw):
            pairs = [
                ((i, j), (i + s, j + t))
                for i in range(kh - s)
                for j in range(max(0, -t), min(kw, kw - t))
            ]
            row_reads = {
                i: _read_interval(i, s, height, out_h, dh, ph) for i in {p[0][0] for p in pairs}
            }
            col_reads = {
                j: _read_interval(j, t, width, out_w, dw, pw) for j in {p[0][1] for p in pairs}
            }
            band = (max(r[0] for r in row_reads.values()), min(r[1] for r in row_reads.values()))
            shift_rows, shift_cols = s * dh, t * dw
            shifted = _band_product(flat, band, shift_rows * row_len + shift_cols, batch, row_len)
            corrections = _border_corrections(
                padded, pairs, row_reads, col_reads, band, (shift_rows, shift_cols), size
            )
            for index, ((i, j), (i2, j2)) in enumerate(pairs):  # i * kw + j <= i2 * kw + j2
                block = shifted if corrections is None else shifted + corrections[index]
                pair_blocks[i * kw + j, i2 * kw + j2] = block
    # offset-major writes keep the rows of U being written in cache (1.4x faster than
    # writing in shift order)
    for first in range(offsets):
        for second in range(offsets):
            block = pair_blocks[min(first, second), max(first, second)]
            blocks[:, first, :, second] = block if first <= second else block.T
    if with_bias:  # U[(c, i, j), bias] = mean over rows of the input that offset (i, j) reads
        window_sums = offset_window_sums(x.to(dtype).sum(dim=0), (kh, kw), (dh, dw), (ph, pw))
        out[:dim, dim] = window_sums.reshape(-1) * scale**2
        out[dim, :dim] = out[:dim, dim]
        out[dim, dim] = 1.0
    return out


def _band_product(
    flat: Tensor, band: tuple[int, int], shift: int, batch: int, row_len: int
) -> Tensor:
    """``sum`` over the band's rows (all columns, batch) of ``x_q x_{q + shift}^T``."""
    channels = flat.shape[0]
    start, stop = band[0] * row_len * batch, band[1] * row_len * batch
    if stop <= start:
        return flat.new_zeros(channels, channels)
    first = flat[:, start:stop]
    if shift == 0:
        return gram(first)
    second = flat[:, start + shift * batch : stop + shift * batch]
    return first @ second.T


def _border_corrections(
    padded: Tensor,
    pairs: list[tuple[tuple[int, int], tuple[int, int]]],
    row_reads: dict[int, tuple[int, int]],
    col_reads: dict[int, tuple[int, int]],
    band: tuple[int, int],
    shift: tuple[int, int],
    size: tuple[int, int],
) -> Tensor | None:
    """Per offset pair: its rectangle's sum minus the band's, from per-position products.

    The band covers rows ``band`` and every column with a valid partner; the pair's
    rectangle ``rows(i) x cols(j)`` contains ``band x cols(j)``, so the difference is
    the rectangle's indicator minus the band's, nonzero on a few border positions.

    Returns:
        ``[pairs, C, C]``, or ``None`` when every rectangle equals the band.
    """
    height, width = size
    shift_rows, shift_cols = shift
    band_mask = torch.zeros(height, width)
    band_mask[band[0] : band[1], max(0, -shift_cols) : min(width, width - shift_cols)] = 1.0
    weights = band_mask.repeat(len(pairs), 1, 1).neg_()  # [pairs, H, W]
    for index, ((i, j), _) in enumerate(pairs):
        (row_low, row_high), (col_low, col_high) = row_reads[i], col_reads[j]
        weights[index, row_low:row_high, col_low:col_high] += 1.0
    rows, cols = weights.abs().sum(dim=0).nonzero(as_tuple=True)  # small, on the CPU
    if len(rows) == 0:
        return None
    weights = weights[:, rows, cols]  # [pairs, positions]
    device = padded.device
    rows, cols = rows.to(device), cols.to(device)
    first = padded[:, rows, cols].permute(1, 0, 2)  # [positions, C, B]
    second = padded[:, rows + shift_rows, cols + shift_cols].permute(1, 2, 0)  # [pos, B, C]
    products = torch.bmm(first, second)  # [positions, C, C]
    weights = weights.to(device=device, dtype=products.dtype)
    channels = products.shape[1]
    return (weights @ products.view(len(rows), -1)).view(len(pairs), channels, channels)


def offset_window_sums(
    image: Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
) -> Tensor:
    """Per kernel offset ``(i, j)`` (unfold order), the sum of ``image`` over what it reads.

    Offset ``(i, j)`` of a zero-padded convolution reads one strided window of the
    padded input (one position per output location), so the sums over the rows of the
    im2col matrix of anything that depends only on the input position (``x``, ``x^2``)
    are window sums: no unfolding.

    Args:
        image: ``[..., H, W]``.
        kernel_size: ``(k_h, k_w)``.
        dilation: ``(d_h, d_w)``.
        padding: ``(p_h, p_w)``.
        stride: ``(s_h, s_w)``.

    Returns:
        ``[..., k_h k_w]``.
    """
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    out_h = (image.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (image.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = F.pad(image, (pw, pw, ph, ph))
    sums = [
        padded[
            ...,
            i * dh : i * dh + sh * (out_h - 1) + 1 : sh,
            j * dw : j * dw + sw * (out_w - 1) + 1 : sw,
        ].sum(dim=(-2, -1))
        for i in range(kh)
        for j in range(kw)
    ]
    return torch.stack(sums, dim=-1)
