"""Damped factor inverses: exact ones, RSVD / SREVD accuracy, eq. (13), determinism."""

from __future__ import annotations

import pytest
import torch

from optim.inverses import (
    _lu_basis,
    _range_basis,
    apply_low_rank_inverse,
    cholesky_inverse,
    eigh_inverse,
    rsvd,
    srevd,
)

DIM, RANK = 120, 12

# Tiny tensors: one intra-op thread is faster and immune to a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def decaying_psd(
    dim: int = DIM, decay: float = 0.8, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """A PSD matrix ``Q diag(decay^i) Q^T`` with a random orthogonal ``Q``; and its spectrum."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64)).Q
    spectrum = decay ** torch.arange(dim, dtype=torch.float64)
    return ((basis * spectrum) @ basis.T).to(dtype), spectrum


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("method", [eigh_inverse, cholesky_inverse])
def test_exact_inverses_match_dense_inverse(method):
    matrix, _ = decaying_psd()
    damping = 1e-2
    expected = torch.linalg.inv(matrix + damping * torch.eye(DIM, dtype=matrix.dtype))
    torch.testing.assert_close(method(matrix, damping), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", [eigh_inverse, cholesky_inverse])
def test_exact_inverses_run_in_float32_and_cast_back(method):
    matrix, _ = decaying_psd(dim=16, decay=0.5)
    damping = 0.1
    result = method(matrix.to(torch.bfloat16), damping)
    assert result.dtype == torch.bfloat16
    expected = method(matrix.to(torch.bfloat16).float(), damping).to(torch.bfloat16)
    assert torch.equal(result, expected)


def test_cholesky_falls_back_to_eigh_when_not_positive_definite():
    matrix = torch.diag(torch.tensor([1.0, -0.5, 0.2], dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="Cholesky failed"):
        result = cholesky_inverse(matrix, 0.1)
    torch.testing.assert_close(result, eigh_inverse(matrix, 0.1))


@pytest.mark.parametrize("power_iters", [1, 4])
def test_rsvd_reconstruction_close_to_optimal_truncation(power_iters):
    matrix, spectrum = decaying_psd()
    vectors, values = rsvd(matrix, RANK, 10, power_iters, generator())
    assert vectors.shape == (DIM, RANK) and values.shape == (RANK,)
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(RANK, dtype=torch.float64))
    assert torch.all(values[:-1] >= values[1:])
    error = torch.linalg.matrix_norm(matrix - (vectors * values) @ vectors.T)
    optimal = spectrum[RANK:].square().sum().sqrt()
    assert error <= 1.5 * optimal
    torch.testing.assert_close(values, spectrum[:RANK], rtol=1e-3, atol=0)


def test_srevd_reconstruction_close_to_optimal_truncation():
    matrix, spectrum = decaying_psd()
    vectors, values = srevd(matrix, RANK, 10, 2, generator())
    assert vectors.shape == (DIM, RANK) and values.shape == (RANK,)
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(RANK, dtype=torch.float64))
    assert torch.all(values[:-1] >= values[1:]) and torch.all(values >= 0)
    error = torch.linalg.matrix_norm(matrix - (vectors * values) @ vectors.T)
    optimal = spectrum[RANK:].square().sum().sqrt()
    assert error <= 1.5 * optimal


def test_srevd_has_more_projection_error_than_rsvd_without_power_iterations():
    """Sec. 2.3: for the same sketch, SREVD loses accuracy that RSVD's V factor keeps."""
    matrix, spectrum = decaying_psd(decay=0.9)
    truncated = []
    for method in (rsvd, srevd):
        vectors, values = method(matrix, RANK, 4, 0, generator(3))
        truncated.append(torch.linalg.matrix_norm(matrix - (vectors * values) @ vectors.T))
    optimal = spectrum[RANK:].square().sum().sqrt()
    assert optimal <= truncated[0] < truncated[1]


@pytest.mark.parametrize("method", [rsvd, srevd])
@pytest.mark.parametrize("from_right", [False, True])
def test_eq13_matches_exact_inverse_of_truncation_plus_damping(method, from_right):
    matrix, _ = decaying_psd()
    damping = 1e-3
    vectors, values = method(matrix, RANK, 10, 4, generator())
    truncated = (vectors * values) @ vectors.T
    dense_inverse = torch.linalg.inv(truncated + damping * torch.eye(DIM, dtype=torch.float64))
    other = torch.randn(DIM, 7, generator=generator(1), dtype=torch.float64)
    other = other.T if from_right else other
    expected = other @ dense_inverse if from_right else dense_inverse @ other
    result = apply_low_rank_inverse(vectors, values, damping, other, from_right=from_right)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


@pytest.mark.parametrize("method", [rsvd, srevd])
def test_eq13_approximates_damped_inverse_of_full_matrix(method):
    """Each dropped mode ``s_i`` changes its inverse by a relative ``s_i / lambda`` at most."""
    matrix, spectrum = decaying_psd(decay=0.5)
    damping = 1e-2
    vectors, values = method(matrix.float(), RANK, 10, 4, generator())
    other = torch.randn(DIM, 5, generator=generator(2))
    result = apply_low_rank_inverse(vectors, values, damping, other)
    expected = eigh_inverse(matrix, damping).float() @ other
    bound = 1.5 * spectrum[RANK].item() / damping
    assert torch.linalg.norm(result - expected) <= bound * torch.linalg.norm(expected)
    trivial = torch.linalg.norm(other / damping - expected)  # keeping no mode at all
    assert torch.linalg.norm(result - expected) <= 0.1 * trivial


@pytest.mark.parametrize("shape", [(50, 7), (31, 31), (64, 1)])
def test_lu_basis_is_p_times_l_and_spans_the_sample(shape):
    rows, cols = shape
    gen = generator(4)
    sample = torch.randn(rows, rows, generator=gen, dtype=torch.float64) @ torch.randn(
        rows, cols, generator=gen, dtype=torch.float64
    )
    lu, pivots = torch.linalg.lu_factor(sample)
    permutation, lower, _ = torch.lu_unpack(lu, pivots)
    basis = _lu_basis(sample)
    torch.testing.assert_close(basis, permutation @ lower, rtol=0, atol=0)
    projector = basis @ torch.linalg.pinv(basis)
    torch.testing.assert_close(projector @ sample, sample)


def test_lu_basis_tames_ill_conditioning_and_rank_deficiency():
    """``P L`` has unit diagonal and entries <= 1: full rank, well conditioned."""
    matrix, _ = decaying_psd(decay=0.5)
    omega = torch.randn(DIM, 20, generator=generator(5), dtype=torch.float64)
    for sample in (matrix @ omega, matrix[:, :3] @ omega[:3]):  # condition ~1e5; rank 3
        basis = _lu_basis(sample)
        singular = torch.linalg.svdvals(basis)
        assert singular[0] / singular[-1] < 1e3 < torch.linalg.cond(sample)
        assert basis.abs().max() <= 1.0


def qr_range_basis(matrix, sketch_size, power_iters, gen):
    """Alg. 2, lines 3-5, with a Householder QR after every product (reference)."""
    omega = torch.randn(matrix.shape[1], sketch_size, generator=gen, dtype=matrix.dtype)
    basis = torch.linalg.qr(matrix @ omega).Q
    for _ in range(power_iters):
        basis = torch.linalg.qr(matrix @ basis).Q
    return basis


@pytest.mark.parametrize("power_iters", [0, 1, 4])
def test_range_basis_spans_the_power_iterate_like_qr_iterations(power_iters):
    """LU-normalised iterations give an orthonormal ``Q`` with the span of ``X^(q+1) Omega``."""
    matrix, _ = decaying_psd(decay=0.9)
    basis = _range_basis(matrix, 20, power_iters, generator(6))
    reference = qr_range_basis(matrix, 20, power_iters, generator(6))
    torch.testing.assert_close(basis.T @ basis, torch.eye(20, dtype=torch.float64))
    torch.testing.assert_close(basis @ basis.T, reference @ reference.T, rtol=0, atol=1e-8)


def test_range_basis_float32_ill_conditioned_matches_float64_reference():
    """Spectrum ``i^-2`` (condition ~1e4 per product) in float32, 4 power iterations."""
    gen = generator(7)
    dim, sketch = 300, 30
    orthogonal = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64)).Q
    spectrum = torch.arange(1, dim + 1, dtype=torch.float64).pow(-2.0)
    matrix = (orthogonal * spectrum) @ orthogonal.T
    basis = _range_basis(matrix.float(), sketch, 4, generator(8))
    reference = qr_range_basis(matrix, sketch, 4, generator(8))
    torch.testing.assert_close(basis.T @ basis, torch.eye(sketch), rtol=0, atol=1e-5)
    # The leading eigenvectors lie in the float32 basis as well as in the float64 one.
    top = orthogonal[:, :10]
    for candidate in (basis.double(), reference):
        assert torch.linalg.norm(top - candidate @ (candidate.T @ top)) < 1e-3


def test_rsvd_is_the_right_singular_factor_of_b():
    """Alg. 2: ``(V, d)`` are the leading right singular pairs of ``B = Q^T X``."""
    matrix, _ = decaying_psd(decay=0.9)
    vectors, values = rsvd(matrix, RANK, 10, 2, generator(9))
    basis = _range_basis(matrix, RANK + 10, 2, generator(9))
    _, expected_values, right_t = torch.linalg.svd(basis.T @ matrix, full_matrices=False)
    expected = right_t[:RANK].T
    torch.testing.assert_close(values, expected_values[:RANK])
    # Same vectors up to sign: compare the rank-one projectors column by column.
    torch.testing.assert_close(vectors.abs().sum(0), expected.abs().sum(0))
    torch.testing.assert_close((vectors.T @ expected).abs(), torch.eye(RANK, dtype=torch.float64))


@pytest.mark.parametrize("method", [rsvd, srevd])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exactly_low_rank_matrix_is_recovered(method, dtype):
    """Rank 5 < ``r``: exact top eigenpairs, zero values beyond, still orthonormal ``V``."""
    gen = generator(10)
    factor = torch.randn(DIM, 5, generator=gen, dtype=torch.float64)
    matrix = factor @ factor.T
    vectors, values = method(matrix.to(dtype), RANK, 5, 2, generator(11))
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(
        vectors.T @ vectors, torch.eye(RANK, dtype=dtype), rtol=0, atol=100 * eps
    )
    exact = torch.linalg.eigvalsh(matrix).flip(0)[:5]
    torch.testing.assert_close(values[:5].double(), exact, rtol=100 * eps, atol=0)
    assert torch.all(values[5:].abs() <= 100 * eps * exact[0])
    error = torch.linalg.matrix_norm(matrix - ((vectors * values) @ vectors.T).double())
    assert error <= 100 * eps * torch.linalg.matrix_norm(matrix)


@pytest.mark.parametrize("method", [rsvd, srevd])
def test_same_seed_same_result_other_seed_differs(method):
    matrix, _ = decaying_psd(decay=0.95)
    first = method(matrix, RANK, 5, 1, generator(7))
    second = method(matrix, RANK, 5, 1, generator(7))
    third = method(matrix, RANK, 5, 1, generator(8))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[1], third[1])


@pytest.mark.parametrize("method", [rsvd, srevd])
def test_low_precision_input_is_decomposed_in_float32(method):
    matrix, _ = decaying_psd(dim=40, decay=0.7)
    low = matrix.to(torch.bfloat16)
    vectors, values = method(low, 5, 5, 2, generator())
    assert vectors.dtype == values.dtype == torch.bfloat16
    ref_vectors, ref_values = method(low.float(), 5, 5, 2, generator())
    assert torch.equal(vectors, ref_vectors.to(torch.bfloat16))
    assert torch.equal(values, ref_values.to(torch.bfloat16))


@pytest.mark.parametrize("rank,oversample", [(0, 2), (5, -1), (100, 30)])
def test_bad_sketch_size_raises(rank, oversample):
    matrix, _ = decaying_psd()
    with pytest.raises(ValueError, match="oversample"):
        rsvd(matrix, rank, oversample, 1, generator())
