"""Triangular Toeplitz structures (Table 1, row 5): d numbers, products by FFT."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor

from optim.gram import gram
from optim.structures.base import StructuredMatrix

# Odd parts m of the FFT lengths 2^a m that are used, with 2^a >= FFT_MIN_POWER_OF_TWO.
# Odd-heavy lengths are slow on CPU although 5-smooth: 512 x 9375 (= 3 * 5^5) real FFTs
# there and back take 27 ms against 9.3 ms at 10240 = 5 * 2^11 (2 threads), and
# 400 = 25 * 2^4 takes 1.8 ms against 0.9 ms at 512 for 2048 rows.
FFT_ODD_PARTS = (1, 3, 5, 9, 15, 25, 27, 45, 75)
FFT_MIN_POWER_OF_TWO = 32


@lru_cache(maxsize=256)
def _fft_length(min_length: int) -> int:
    """Smallest fast FFT length >= ``min_length``: ``2^a m`` with m in ``FFT_ODD_PARTS``.

    Lengths below ``FFT_MIN_POWER_OF_TWO`` are powers of two; longer ones need a factor
    ``2^a >= FFT_MIN_POWER_OF_TWO``.
    """
    candidates = [1 << max(min_length - 1, 0).bit_length()]
    for odd in FFT_ODD_PARTS:
        power = FFT_MIN_POWER_OF_TWO
        while odd * power < min_length:
            power *= 2
        candidates.append(odd * power)
    return min(candidates)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """FFTs run in float32/float64 (no bf16/fp16 FFT kernels on every device)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


# Up to this size a dense d x d Toeplitz matmul beats the FFT on CPU (measured
# crossover d ~ 200 for many right-hand sides); its d^2 scratch is negligible.
DENSE_MAX_DIM = 128

# Pi(S^T x x^T S) for x with n >= GRAM_FIRST_MIN_RATIO * d columns and
# d <= GRAM_FIRST_MAX_DIM forms U = x x^T by one matmul and applies S to it (measured
# on CPU: 3.5x faster than the per-column FFTs at n = 32768, d = 577; slower from d ~ 2300).
GRAM_FIRST_MAX_DIM = 1536
GRAM_FIRST_MIN_RATIO = 4

# The per-column FFT path works on chunks of columns of about this many FFT entries,
# so its temporaries stay small (a conv layer's unfolded input has ~10^5 columns).
FFT_CHUNK_ENTRIES = 1 << 22


def dense_toeplitz(coeffs: Tensor, lower: bool) -> Tensor:
    """Dense triangular Toeplitz matrix with entries a_{i-j} (lower) or a_{j-i} (upper)."""
    index = torch.arange(coeffs.shape[0], device=coeffs.device)
    offset = index.unsqueeze(1) - index.unsqueeze(0)  # row - column
    if not lower:
        offset = -offset
    values = coeffs[offset.clamp(min=0)]
    return torch.where(offset >= 0, values, torch.zeros_like(values))


def toeplitz_apply(coeffs: Tensor, x: Tensor, lower: bool) -> Tensor:
    """Multiply a triangular Toeplitz matrix with every row vector of ``x``.

    With a = ``coeffs`` and d = ``x.shape[-1]`` this returns, along the last
    dimension, ``y_i = sum_j a_j x_{i-j}`` (lower Toeplitz, a truncated
    convolution) or ``y_i = sum_j a_j x_{i+j}`` (upper Toeplitz, a truncated
    correlation), in O(d log d) per row via zero-padded real FFTs (for
    d <= ``DENSE_MAX_DIM`` by a small dense matmul, which is faster there).

    Args:
        coeffs: The d Toeplitz coefficients a_0, ..., a_{d-1}.
        x: Tensor of shape (..., d).
        lower: Whether the Toeplitz matrix is lower (else upper) triangular.

    Returns:
        Tensor of the shape of ``x`` in the promoted dtype of the inputs.
    """
    dim = x.shape[-1]
    out_dtype = torch.promote_types(coeffs.dtype, x.dtype)
    if dim <= DENSE_MAX_DIM:
        return x.to(out_dtype) @ dense_toeplitz(coeffs.to(out_dtype), lower).T
    work = _work_dtype(out_dtype)
    length = _fft_length(2 * dim - 1)
    coeffs_hat = torch.fft.rfft(coeffs.to(work), n=length)
    if not lower:
        coeffs_hat = coeffs_hat.conj()
    x_hat = torch.fft.rfft(x.to(work), n=length, dim=-1)
    return torch.fft.irfft(x_hat * coeffs_hat, n=length, dim=-1)[..., :dim].to(out_dtype)


def _coeffs_from_diagonal_sums(sums: Tensor) -> Tensor:
    """Projection coefficients [b_0, 2 b_1, ...] with b_j = sums_j / (d - j)."""
    dim = sums.shape[0]
    counts = torch.arange(dim, 0, -1, dtype=sums.dtype, device=sums.device)
    coeffs = sums * 2 / counts
    coeffs[0] = sums[0] / dim
    return coeffs


class _Toeplitz(StructuredMatrix):
    """Triangular Toeplitz d x d matrix stored as its d coefficients.

    Projection map of a symmetric M: b_j is the mean of the j-th off-diagonal
    of M; the result has b_0 on the diagonal and 2 b_j on off-diagonal j >= 1.
    """

    lower: ClassVar[bool]
    tensor_names = ("coeffs",)

    coeffs: Tensor

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"coeffs": (dim,)}

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        dim = sym.shape[0]
        source = sym.T if cls.lower else sym  # read sub-diagonals for the lower class
        padded = torch.cat([source, source.new_zeros(dim, dim)], dim=1).contiguous()
        # element (i, j) of this view is padded[i, i + j]: column j is the j-th super-diagonal
        diagonals = padded.as_strided((dim, dim), (2 * dim + 1, 1))
        sums = diagonals.to(_work_dtype(sym.dtype)).sum(0)
        return {"coeffs": _coeffs_from_diagonal_sums(sums).to(sym.dtype)}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        """Diagonal sums of x x^T are autocorrelations of x's columns: one FFT each."""
        dim = x.shape[0]
        if dim <= DENSE_MAX_DIM:
            return cls._project(x @ x.T, options)
        return {"coeffs": cls._autocorrelation_coeffs(x.T, lambda rows: rows, x.dtype)}

    @staticmethod
    def _autocorrelation_coeffs(
        rows: Tensor, transform: Callable[[Tensor], Tensor], dtype: torch.dtype
    ) -> Tensor:
        """Projection coefficients of ``Y^T Y`` for ``Y = transform(rows)``, chunk by chunk.

        The j-th diagonal sum of ``Y^T Y`` is the lag-j autocorrelation of ``Y``'s rows,
        summed: the inverse FFT of the summed power spectra.

        Args:
            rows: ``n x d`` (e.g. the transposed columns of ``x``).
            transform: Maps a chunk of rows (``c x d``) to the rows of ``Y`` (``c x d``).
            dtype: Dtype of the result.
        """
        dim = rows.shape[1]
        length = _fft_length(2 * dim - 1)
        chunk = max(1, FFT_CHUNK_ENTRIES // length)
        power = None
        for start in range(0, rows.shape[0], chunk):
            block = transform(rows[start : start + chunk].to(_work_dtype(rows.dtype)))
            block_hat = torch.fft.rfft(block, n=length, dim=-1)
            block_power = (block_hat.real.square() + block_hat.imag.square()).sum(0)
            power = block_power if power is None else power.add_(block_power)
        assert power is not None
        sums = torch.fft.irfft(power, n=length)[:dim]
        return _coeffs_from_diagonal_sums(sums).to(dtype)

    def _gram_projection_inner(self, x: Tensor) -> _Toeplitz:
        """``Pi(S^T x x^T S)`` without a ``d x n`` temporary.

        Many columns and moderate ``d`` (an unfolded conv input): ``U = x x^T`` by one
        matmul, then ``S^T U S`` by Toeplitz products. Otherwise ``S^T x`` and the
        autocorrelations of its columns, by FFTs over chunks of columns.
        """
        if self._gram_first(x.shape[1]):
            return self._projection_of_gram(gram(x))
        coeffs = self._autocorrelation_coeffs(
            x.T, self._rmatmul_dense, self.dtype
        )  # rows of (S^T x)^T = x^T S
        return self._like({"coeffs": coeffs})

    def _gram_first(self, rows: int) -> bool:
        """Whether ``Pi(S^T U S)`` from ``U = x x^T`` beats the per-column FFTs."""
        return self.dim <= DENSE_MAX_DIM or (
            self.dim <= GRAM_FIRST_MAX_DIM and rows >= GRAM_FIRST_MIN_RATIO * self.dim
        )

    def _projection_of_gram(self, inner: Tensor) -> _Toeplitz:
        """``Pi(S^T U S)`` by two Toeplitz products with the ``d x d`` matrix ``U``."""
        projected = self._rmatmul_dense(self._rmatmul_dense(inner).T)  # S^T U S
        return self._like(self._project(projected.to(self.dtype), self.options))

    def to_dense(self) -> Tensor:
        return dense_toeplitz(self.coeffs, self.lower)

    def trace(self) -> Tensor:
        return self.coeffs[0] * self.dim

    def add_identity_(self, value: float | Tensor = 1.0) -> _Toeplitz:
        self.coeffs[0] += value
        return self

    def _matmul_structured(self, other: _Toeplitz) -> _Toeplitz:
        # triangular Toeplitz matrices multiply like truncated polynomials
        return self._like({"coeffs": toeplitz_apply(self.coeffs, other.coeffs, lower=True)})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        return toeplitz_apply(self.coeffs, mat.T, lower=self.lower).T

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        return toeplitz_apply(self.coeffs, mat, lower=not self.lower)

    def _gram_self(self) -> _Toeplitz:
        """Off-diagonal j of S^T S sums to R_j = sum_s (d - s - j) a_s a_{s+j}.

        This holds for the upper and the lower class alike; R is a correlation of
        a with (d - t) a_t, so it costs one FFT product.
        """
        work = _work_dtype(self.dtype)
        coeffs = self.coeffs.to(work)
        weights = torch.arange(self.dim, 0, -1, dtype=work, device=coeffs.device)
        sums = toeplitz_apply(coeffs, coeffs * weights, lower=False)
        return self._like({"coeffs": _coeffs_from_diagonal_sums(sums).to(self.dtype)})


class TriuToeplitz(_Toeplitz):
    """Upper-triangular Toeplitz matrix, entry (i, i + j) = a_j (stored: ``coeffs``, d entries).

    No options. Projection map: b_j = mean of the j-th super-diagonal of the
    symmetric input; coefficients (b_0, 2 b_1, ..., 2 b_{d-1}).
    """

    name = "triu_toeplitz"
    lower = False


class TrilToeplitz(_Toeplitz):
    """Lower-triangular Toeplitz matrix, entry (i + j, i) = a_j (stored: ``coeffs``, d entries).

    No options. Projection map: b_j = mean of the j-th sub-diagonal of the
    symmetric input; coefficients (b_0, 2 b_1, ..., 2 b_{d-1}).
    """

    name = "tril_toeplitz"
    lower = True
