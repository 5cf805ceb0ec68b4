"""``optim.matmul``: products written into padded rows equal the plain products."""

from __future__ import annotations

import pytest
import torch

from optim.matmul import MIN_ALIGNED_COLS, ROW_ALIGN, add_matmul, aligned_empty, matmul


@pytest.mark.parametrize("cols", [3, MIN_ALIGNED_COLS + 1, 4 * ROW_ALIGN * 8, 577])
def test_aligned_empty_pads_only_wide_odd_rows(cols: int) -> None:
    out = aligned_empty(5, cols, torch.zeros(1, dtype=torch.float64))
    assert out.shape == (5, cols) and out.dtype == torch.float64
    padded = cols >= MIN_ALIGNED_COLS and cols % ROW_ALIGN != 0
    assert out.stride(1) == 1
    assert out.stride(0) % ROW_ALIGN == 0 if padded else out.stride(0) == cols
    assert out.is_contiguous() != padded


@pytest.mark.parametrize("shape", [(7, 5, 3), (9, 300, 577), (513, 20, 257)])
def test_matmul_and_add_matmul_equal_torch(shape: tuple[int, int, int]) -> None:
    rows, inner, cols = shape
    generator = torch.Generator().manual_seed(rows)
    a = torch.randn(rows, inner, generator=generator, dtype=torch.float64)
    b = torch.randn(inner, cols, generator=generator, dtype=torch.float64)
    base = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        add_matmul(base, a, b, -0.3), base - 0.3 * (a @ b), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(matmul(a.T.contiguous().T, b), a @ b, rtol=1e-12, atol=1e-12)


def test_products_of_tensors_that_need_gradients_keep_the_graph() -> None:
    a = torch.randn(4, 300, requires_grad=True)
    b = torch.randn(300, 301)
    matmul(a, b).sum().backward()
    torch.testing.assert_close(a.grad, b.sum(1).expand(4, 300))
    base = torch.zeros(4, 301, requires_grad=True)
    add_matmul(base, a, b, 2.0).sum().backward()
    assert base.grad is not None and torch.equal(base.grad, torch.ones(4, 301))
