"""``optim.gram.gram``: the blocked symmetric product equals ``x @ x.T``."""

from __future__ import annotations

import pytest
import torch

from optim.gram import gram

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("rows", [1, 4, 5, 37, 64])
@pytest.mark.parametrize("min_split_rows", [2, 4, 512])
def test_gram_equals_product_and_is_symmetric(rows: int, min_split_rows: int) -> None:
    x = torch.randn(rows, 9, generator=torch.Generator().manual_seed(rows), dtype=torch.float64)
    result = gram(x, min_split_rows)
    torch.testing.assert_close(result, x @ x.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result, result.T, rtol=1e-13, atol=0)


def test_gram_of_transposed_view_in_float32() -> None:
    base = torch.randn(300, 70, generator=torch.Generator().manual_seed(0))
    x = base.T  # non-contiguous rows, as for a factor's transpose
    result = gram(x, min_split_rows=8)
    torch.testing.assert_close(
        result, (base.double().T @ base.double()).float(), rtol=1e-5, atol=1e-4
    )
    torch.testing.assert_close(result, result.T, rtol=1e-6, atol=0)
