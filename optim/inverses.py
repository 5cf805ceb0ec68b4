"""Damped inverses of Kronecker factors: exact (eigh, Cholesky) and randomized.

KFAC needs ``(S + lambda I)^-1`` for every symmetric PSD factor ``S``. Four ways:

* :func:`eigh_inverse` and :func:`cholesky_inverse` form the dense inverse;
* :func:`rsvd` (Randomized K-FACs paper, Alg. 2, as used in Alg. 4) and
  :func:`srevd` (Alg. 3, as used in Alg. 5) return a rank-``r`` approximation
  ``S ~ V diag(d) V^T`` that :func:`apply_low_rank_inverse` applies through eq. (13)
  without ever forming a ``d x d`` inverse.

Every decomposition runs in at least float32 (:func:`compute_dtype`) and returns
its result in the dtype of its input, so bf16 factors are decomposed in float32
and cast back, as the paper's low-precision KFAC runs do.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from optim.matmul import add_matmul, matmul


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the decompositions run in: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def eigh_inverse(factor: Tensor, damping: float) -> Tensor:
    """``(S + damping I)^-1`` from the eigendecomposition of ``S``.

    Eigenvalues below zero (round-off of a PSD matrix) are clipped to zero.

    Args:
        factor: Symmetric PSD matrix ``S`` (``d x d``).
        damping: ``lambda >= 0``.

    Returns:
        The dense inverse, in ``factor``'s dtype.
    """
    values, vectors = torch.linalg.eigh(factor.to(compute_dtype(factor.dtype)))
    scale = 1.0 / (values.clamp(min=0.0) + damping)
    return matmul(vectors * scale, vectors.T).to(factor.dtype).contiguous()  # stored


def cholesky_inverse(factor: Tensor, damping: float) -> Tensor:
    """``(S + damping I)^-1`` from the Cholesky factor of ``S + damping I``.

    Falls back to :func:`eigh_inverse` (with a warning) if the damped matrix is not
    numerically positive definite, e.g. a bf16 factor with tiny damping.

    Args:
        factor: Symmetric PSD matrix ``S`` (``d x d``).
        damping: ``lambda >= 0``.

    Returns:
        The dense inverse, in ``factor``'s dtype.
    """
    damped = factor.to(compute_dtype(factor.dtype))
    damped = damped + damping * torch.eye(damped.shape[0], dtype=damped.dtype, device=damped.device)
    lower, info = torch.linalg.cholesky_ex(damped)
    if int(info) != 0:
        warnings.warn(
            "Cholesky failed (factor + damping not positive definite): using eigh",
            RuntimeWarning,
            stacklevel=2,
        )
        return eigh_inverse(factor, damping)
    return torch.cholesky_inverse(lower).to(factor.dtype)


def _product(matrix: Tensor, other: Tensor) -> Tensor:
    """``matrix @ other``, laid out column-major as LAPACK wants it (no copy in QR / LU)."""
    return (other.mT @ matrix.mT).mT


def _lu_basis(sample: Tensor) -> Tensor:
    """Well-conditioned basis ``P L`` of the range of a tall ``Y = P L U`` (partial pivoting).

    Re-normalises the intermediate power iterations at half the cost of a QR or less,
    as fbpca does (Li et al., 2017, ACM TOMS Alg. 971): ``L`` is unit lower trapezoidal
    with entries of modulus at most one, so ``P L`` keeps the span of ``Y`` (if of full
    rank) without its ill-conditioning.
    """
    lu, pivots, _ = torch.linalg.lu_factor_ex(sample)
    top = lu[: lu.shape[1]]
    top.tril_(-1)
    top.diagonal().fill_(1.0)
    # LAPACK's pivots are 1-based row swaps applied in order; ``moved`` maps row i of
    # ``L`` to its row in ``P L``.
    moved: dict[int, int] = {}
    for row, pivot in enumerate(pivots.tolist()):
        pivot -= 1
        if pivot != row:
            moved[row], moved[pivot] = moved.get(pivot, pivot), moved.get(row, row)
    if moved:
        index = torch.tensor(list(moved.items()), device=lu.device)
        rows = lu.mT  # contiguous for LAPACK's column-major ``lu``
        rows.index_copy_(1, index[:, 1], rows.index_select(1, index[:, 0]))
    return lu


def _range_basis(
    matrix: Tensor, sketch_size: int, power_iters: int, generator: torch.Generator
) -> Tensor:
    """Orthonormal ``n x k`` basis ``Q`` of the range of ``X^(q+1) Omega`` (Alg. 2, lines 3-5).

    Each power (subspace) iteration multiplies by the symmetric ``X`` once more; the
    intermediate products are re-normalised by :func:`_lu_basis`, the last one by QR.
    """
    omega = torch.randn(
        matrix.shape[1], sketch_size, generator=generator, dtype=matrix.dtype, device=matrix.device
    )
    sample = _product(matrix, omega)
    for _ in range(power_iters):
        sample = _product(matrix, _lu_basis(sample))
    return torch.linalg.qr(sample).Q


def rsvd(
    matrix: Tensor, rank: int, oversample: int, power_iters: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Randomized SVD of a symmetric PSD matrix, keeping the right factor (Alg. 2 / 4).

    ``B = Q^T X = U_B Sigma_B V_B^T``; the rank-``r`` approximation is
    ``X ~ V_B[:, :r] Sigma_B[:r] V_B[:, :r]^T`` (the ``V`` factor is the accurate one
    for a symmetric ``X``, Sec. 2.2).

    Args:
        matrix: Symmetric PSD ``X`` (``n x n``).
        rank: Target rank ``r``.
        oversample: Oversampling ``r_l``; ``r + r_l`` must not exceed ``n``.
        power_iters: Subspace iterations (``n_pwr-it``).
        generator: Source of the Gaussian test matrix ``Omega``.

    Returns:
        ``(V, d)``: ``n x r`` orthonormal columns and ``r`` descending values, in
        ``matrix``'s dtype.
    """
    x = matrix.to(compute_dtype(matrix.dtype))
    basis = _range_basis(x, _sketch_size(x, rank, oversample), power_iters, generator)
    # ``B^T = Q_B R_B`` and ``R_B^T = U_R Sigma_B W^T`` give ``B = U_R Sigma_B (Q_B W)^T``:
    # a QR and a ``k x k`` SVD instead of the costlier SVD of the ``k x n`` ``B``.
    factor, triangle = torch.linalg.qr((basis.T @ x).T)
    _, values, right_t = torch.linalg.svd(triangle.T)
    vectors = factor @ right_t[:rank].T
    return vectors.to(matrix.dtype), values[:rank].to(matrix.dtype)


def srevd(
    matrix: Tensor, rank: int, oversample: int, power_iters: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Symmetric randomized EVD (Alg. 3): ``X ~ (Q P_C) D_C (Q P_C)^T``, ``C = Q^T X Q``.

    Args:
        matrix: Symmetric PSD ``X`` (``n x n``).
        rank: Target rank ``r``.
        oversample: Oversampling ``r_l``; ``r + r_l`` must not exceed ``n``.
        power_iters: Subspace iterations for the basis ``Q`` (as for :func:`rsvd`).
        generator: Source of the Gaussian test matrix ``Omega``.

    Returns:
        ``(U, d)``: ``n x r`` orthonormal columns and ``r`` descending eigenvalues
        (clipped at zero), in ``matrix``'s dtype.
    """
    x = matrix.to(compute_dtype(matrix.dtype))
    basis = _range_basis(x, _sketch_size(x, rank, oversample), power_iters, generator)
    small = basis.T @ x @ basis
    values, vectors = torch.linalg.eigh(0.5 * (small + small.T))
    values, vectors = values.flip(0)[:rank], vectors.flip(1)[:, :rank]
    return (basis @ vectors).to(matrix.dtype), values.clamp(min=0.0).to(matrix.dtype)


def _sketch_size(matrix: Tensor, rank: int, oversample: int) -> int:
    size = rank + oversample
    if rank < 1 or oversample < 0 or size > matrix.shape[0]:
        raise ValueError(
            f"rank={rank}, oversample={oversample} is invalid for a "
            f"{matrix.shape[0]}x{matrix.shape[0]} matrix: need rank >= 1, "
            f"oversample >= 0 and rank + oversample <= {matrix.shape[0]}"
        )
    return size


def apply_low_rank_inverse(
    vectors: Tensor, values: Tensor, damping: float, matrix: Tensor, from_right: bool = False
) -> Tensor:
    """Eq. (13): ``(V diag(d) V^T + lambda I)^-1 M`` without forming a dense inverse.

    ``(V D V^T + lambda I)^-1 = V [(D + lambda I)^-1 - I / lambda] V^T + I / lambda``;
    the bracket is computed as ``-d / (lambda (d + lambda))`` (no cancellation).

    Args:
        vectors: ``V`` (``n x r``, orthonormal columns).
        values: ``d`` (``r``, non-negative).
        damping: ``lambda > 0``.
        matrix: ``M``: ``n x m`` (left) or ``m x n`` (``from_right``).
        from_right: Compute ``M (V diag(d) V^T + lambda I)^-1`` instead.

    Returns:
        The product, shaped like ``matrix``.
    """
    wide = compute_dtype(values.dtype)
    values = values.to(wide)
    coefficients = (-values / (damping * (values + damping))).to(vectors.dtype)
    if from_right:
        return add_matmul(
            matrix, (matrix @ vectors) * coefficients, vectors.T, base_weight=1.0 / damping
        )
    return add_matmul(
        matrix, vectors, coefficients[:, None] * (vectors.T @ matrix), base_weight=1.0 / damping
    )
