"""Diagonal structure: d numbers, the projection keeps the diagonal."""

from __future__ import annotations

import torch
from torch import Tensor

from optim.structures.base import RowSource, StructuredMatrix, row_sums_of_squares


class Diagonal(StructuredMatrix):
    """Diagonal d x d matrix (stored: ``diag``, d entries; no options).

    Projection map (Table 1, block size 1): ``Diag(M)``.
    """

    name = "diagonal"
    tensor_names = ("diag",)

    diag: Tensor

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"diag": (dim,)}

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        return {"diag": sym.diagonal().clone()}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        return {"diag": row_sums_of_squares(x)}

    def to_dense(self) -> Tensor:
        return torch.diag(self.diag)

    def trace(self) -> Tensor:
        return self.diag.sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> Diagonal:
        self.diag.add_(value)
        return self

    def _matmul_structured(self, other: Diagonal) -> Diagonal:
        return self._like({"diag": self.diag * other.diag})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        return self.diag.unsqueeze(1) * mat

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        return mat * self.diag

    def _gram_projection_inner(self, x: Tensor) -> Diagonal:
        """``Diag(S^T x x^T S) = diag(S)^2 * rowsumsq(x)``: one pass over ``x``, no ``S^T x``."""
        return self._like({"diag": self.diag.square() * row_sums_of_squares(x)})

    def gram_projection_of_rows(self, rows: RowSource) -> Diagonal:
        """``Diag(S^T X^T X S) = diag(S)^2 * diag(X^T X)``: reads only the column square sums.

        For a conv layer's rows these come without unfolding its input.
        """
        gram_diagonal = rows.column_square_sums()
        diag = self.diag.to(torch.promote_types(self.dtype, gram_diagonal.dtype))
        return self._like({"diag": (diag.square() * gram_diagonal).to(self.dtype)})

    def _gram_self(self) -> Diagonal:
        return self._like({"diag": self.diag.square()})
