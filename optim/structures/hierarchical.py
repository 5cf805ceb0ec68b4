"""Hierarchical structure (Table 1, row 3)."""

from __future__ import annotations

import torch
from torch import Tensor

from optim.structures.base import StructuredMatrix, row_sums_of_squares


class Hierarchical(StructuredMatrix):
    """Hierarchical d x d matrix ``[[A11, A12, A13], [0, A22, 0], [0, A32, A33]]``.

    A11 is dense k1 x k1, A22 is diagonal of size m = d - k1 - k2 and A33 is
    dense k2 x k2; the strips A12, A13, A32 are dense. Projection map of a
    symmetric M: ``[[M11, 2 M12, 2 M13], [0, Diag(M22), 0], [0, 2 M32, M33]]``.

    Options:
        k1: Size of the dense top-left block (default 15).
        k2: Size of the dense bottom-right block (default 15; 0 allowed).
        For small d they are clamped: k1 -> min(k1, d), then
        k2 -> min(k2, d - k1), so the diagonal middle may be empty.

    Stored: ``top`` = [A11, A12, A13] of shape (k1, d), ``middle`` = diagonal
    of A22 of shape (m,), ``bottom`` = [A32, A33] of shape (k2, m + k2); in
    total k1 d + m + k2 (m + k2) entries.
    """

    name = "hierarchical"
    option_defaults = {"k1": 15, "k2": 15}
    option_minimums = {"k2": 0}  # k2 = 0 is the triu_low_rank layout
    tensor_names = ("top", "middle", "bottom")

    top: Tensor
    middle: Tensor
    bottom: Tensor

    @classmethod
    def _clamp_options(cls, dim: int, options: dict[str, int]) -> dict[str, int]:
        k1 = min(options["k1"], dim)
        return {"k1": k1, "k2": min(options["k2"], dim - k1)}

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        k1, k2 = options["k1"], options["k2"]
        middle = dim - k1 - k2
        return {"top": (k1, dim), "middle": (middle,), "bottom": (k2, middle + k2)}

    @property
    def _sizes(self) -> tuple[int, int, int]:
        """Sizes (k1, m, k2) of the three row/column groups."""
        return self.top.shape[0], self.middle.shape[0], self.bottom.shape[0]

    @staticmethod
    def _double_columns(mat: Tensor, start: int, stop: int) -> Tensor:
        """Return ``mat`` with columns ``start:stop`` multiplied by 2 (in place)."""
        mat[:, start:stop] *= 2
        return mat

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k1, k2 = options["k1"], options["k2"]
        split = sym.shape[0] - k2
        top = cls._double_columns(sym[:k1].clone(), k1, sym.shape[0])
        bottom = cls._double_columns(sym[split:, k1:].clone(), 0, split - k1)
        return {"top": top, "middle": sym.diagonal()[k1:split].clone(), "bottom": bottom}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k1, k2 = options["k1"], options["k2"]
        split = x.shape[0] - k2
        top = cls._double_columns(x[:k1] @ x.T, k1, x.shape[0])
        bottom = cls._double_columns(x[split:] @ x[k1:].T, 0, split - k1)
        return {"top": top, "middle": row_sums_of_squares(x[k1:split]), "bottom": bottom}

    def to_dense(self) -> Tensor:
        k1, m, _ = self._sizes
        dense = self.top.new_zeros(self.dim, self.dim)
        dense[:k1] = self.top
        dense[k1 : k1 + m, k1 : k1 + m] = torch.diag(self.middle)
        dense[k1 + m :, k1:] = self.bottom
        return dense

    def trace(self) -> Tensor:
        k1, m, _ = self._sizes
        return (
            self.top[:, :k1].diagonal().sum()
            + self.middle.sum()
            + self.bottom[:, m:].diagonal().sum()
        )

    def add_identity_(self, value: float | Tensor = 1.0) -> Hierarchical:
        k1, m, _ = self._sizes
        self.top[:, :k1].diagonal().add_(value)
        self.bottom[:, m:].diagonal().add_(value)
        self.middle.add_(value)
        return self

    def _matmul_structured(self, other: Hierarchical) -> Hierarchical:
        _, m, _ = self._sizes
        a32, a33 = self.bottom[:, :m], self.bottom[:, m:]
        b32, b33 = other.bottom[:, :m], other.bottom[:, m:]
        bottom = torch.cat([a32 * other.middle + a33 @ b32, a33 @ b33], dim=1)
        return self._like(
            {
                "top": other._rmatmul_dense(self.top),  # rows [A11 A12 A13] times other
                "middle": self.middle * other.middle,
                "bottom": bottom,
            }
        )

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        k1, m, _ = self._sizes
        return torch.cat(
            [
                self.top @ mat,
                self.middle.unsqueeze(1) * mat[k1 : k1 + m],
                self.bottom @ mat[k1:],
            ]
        )

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        k1, m, _ = self._sizes
        out = mat[:, :k1] @ self.top
        out[:, k1 : k1 + m] += mat[:, k1 : k1 + m] * self.middle
        out[:, k1:].addmm_(mat[:, k1 + m :], self.bottom)
        return out

    def _gram_projection_inner(self, x: Tensor) -> Hierarchical:
        """``Pi(S^T U S)`` for ``U = x x^T``, from the rows of ``U`` in groups 1 and 3.

        The projection reads the rows of ``S^T U S`` in groups 1 and 3, which need only
        ``P = x_{1,3} x^T`` (``(k1 + k2) d n`` work), and the diagonal of its middle block,
        which needs ``P`` and ``diag(U_22)`` (one pass over ``x_2``). Neither ``U`` nor
        ``S^T x`` is formed.
        """
        k1, m, k2 = self._sizes
        split = k1 + m
        a11, a12, a13 = self.top[:, :k1], self.top[:, k1:split], self.top[:, split:]
        a32, a33 = self.bottom[:, :m], self.bottom[:, m:]
        rows_1, rows_3 = x[:k1] @ x.T, x[split:] @ x.T  # P: rows of U in groups 1, 3
        u11, u12, u13 = rows_1[:, :k1], rows_1[:, k1:split], rows_1[:, split:]
        u32, u33 = rows_3[:, k1:split], rows_3[:, split:]
        # rows 1 and 3 of U S, then of S^T (U S)
        us_1, us_3 = self._rmatmul_dense(rows_1), self._rmatmul_dense(rows_3)
        top = self._double_columns(a11.T @ us_1, k1, self.dim)
        bottom = self._double_columns(a13.T @ us_1[:, k1:] + a33.T @ us_3[:, k1:], 0, m)
        # diag of s_2^T U s_2 with s_2 = E_1 A12 + E_2 D + E_3 A32 (E_g: rows of group g)
        middle = (
            (a12 * (u11 @ a12)).sum(0)
            + self.middle.square() * row_sums_of_squares(x[k1:split])
            + (a32 * (u33 @ a32)).sum(0)
            + 2 * self.middle * ((a12 * u12).sum(0) + (a32 * u32).sum(0))
            + 2 * (a12 * (u13 @ a32)).sum(0)
        )
        return self._like({"top": top, "middle": middle, "bottom": bottom})

    def _gram_self(self) -> Hierarchical:
        """Projection of S^T S, built from the column groups of S."""
        k1, m, _ = self._sizes
        a11, a12, a13 = self.top[:, :k1], self.top[:, k1 : k1 + m], self.top[:, k1 + m :]
        a32, a33 = self.bottom[:, :m], self.bottom[:, m:]
        top = self._double_columns(a11.T @ self.top, k1, self.dim)
        bottom = self._double_columns(a13.T @ self.top[:, k1:] + a33.T @ self.bottom, 0, m)
        middle = a12.square().sum(0) + self.middle.square() + a32.square().sum(0)
        return self._like({"top": top, "middle": middle, "bottom": bottom})
