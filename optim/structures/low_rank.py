"""Rank-k triangular structures (Table 1, row 4; Fig. 8) and their transposes."""

from __future__ import annotations

import torch
from torch import Tensor

from optim.structures.base import StructuredMatrix, row_sums_of_squares


class TriuLowRank(StructuredMatrix):
    """Upper rank-k triangular d x d matrix ``[[A11, A12], [0, D22]]``.

    A11 is dense k x k, A12 is dense k x (d - k) and D22 is diagonal. Projection
    map of a symmetric M: ``[[M11, 2 M12], [0, Diag(M22)]]``.

    Options:
        k: Size of the dense block (default 1). Clamped to d (for k >= d the
        matrix is dense).

    Stored: ``top`` = [A11, A12] of shape (k, d) and ``diag`` = diagonal of D22
    of shape (d - k,); k d + d - k entries.
    """

    name = "triu_low_rank"
    option_defaults = {"k": 1}
    tensor_names = ("top", "diag")

    top: Tensor
    diag: Tensor

    @classmethod
    def _clamp_options(cls, dim: int, options: dict[str, int]) -> dict[str, int]:
        return {"k": min(options["k"], dim)}

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"top": (options["k"], dim), "diag": (dim - options["k"],)}

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        top = sym[:k].clone()
        top[:, k:] *= 2
        return {"top": top, "diag": sym.diagonal()[k:].clone()}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        top = x[:k] @ x.T
        top[:, k:] *= 2
        return {"top": top, "diag": row_sums_of_squares(x[k:])}

    def to_dense(self) -> Tensor:
        k = self.top.shape[0]
        dense = self.top.new_zeros(self.dim, self.dim)
        dense[:k] = self.top
        dense[k:, k:] = torch.diag(self.diag)
        return dense

    def trace(self) -> Tensor:
        k = self.top.shape[0]
        return self.top[:, :k].diagonal().sum() + self.diag.sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> TriuLowRank:
        k = self.top.shape[0]
        self.top[:, :k].diagonal().add_(value)
        self.diag.add_(value)
        return self

    def _matmul_structured(self, other: TriuLowRank) -> TriuLowRank:
        return self._like({"top": other._rmatmul_dense(self.top), "diag": self.diag * other.diag})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        k = self.top.shape[0]
        return torch.cat([self.top @ mat, self.diag.unsqueeze(1) * mat[k:]])

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        k = self.top.shape[0]
        out = mat[:, :k] @ self.top
        out[:, k:] += mat[:, k:] * self.diag
        return out

    def _gram_self(self) -> TriuLowRank:
        """Projection of S^T S = [[A11^T A11, A11^T A12], [., A12^T A12 + D22^2]]."""
        k = self.top.shape[0]
        top = self.top[:, :k].T @ self.top
        top[:, k:] *= 2
        diag = self.top[:, k:].square().sum(0) + self.diag.square()
        return self._like({"top": top, "diag": diag})


class TrilLowRank(StructuredMatrix):
    """Lower rank-k triangular d x d matrix ``[[A11, 0], [A21, D22]]`` (``TriuLowRank`` transposed).

    Projection map of a symmetric M: ``[[M11, 0], [2 M21, Diag(M22)]]``.

    Options:
        k: Size of the dense block (default 1). Clamped to d.

    Stored: ``left`` = [A11; A21] of shape (d, k) and ``diag`` = diagonal of
    D22 of shape (d - k,); k d + d - k entries.
    """

    name = "tril_low_rank"
    option_defaults = {"k": 1}
    tensor_names = ("left", "diag")

    left: Tensor
    diag: Tensor

    @classmethod
    def _clamp_options(cls, dim: int, options: dict[str, int]) -> dict[str, int]:
        return {"k": min(options["k"], dim)}

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"left": (dim, options["k"]), "diag": (dim - options["k"],)}

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        left = sym[:, :k].clone()
        left[k:] *= 2
        return {"left": left, "diag": sym.diagonal()[k:].clone()}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        left = x @ x[:k].T
        left[k:] *= 2
        return {"left": left, "diag": row_sums_of_squares(x[k:])}

    def to_dense(self) -> Tensor:
        k = self.left.shape[1]
        dense = self.left.new_zeros(self.dim, self.dim)
        dense[:, :k] = self.left
        dense[k:, k:] = torch.diag(self.diag)
        return dense

    def trace(self) -> Tensor:
        k = self.left.shape[1]
        return self.left[:k].diagonal().sum() + self.diag.sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> TrilLowRank:
        k = self.left.shape[1]
        self.left[:k].diagonal().add_(value)
        self.diag.add_(value)
        return self

    def _matmul_structured(self, other: TrilLowRank) -> TrilLowRank:
        return self._like({"left": self._matmul_dense(other.left), "diag": self.diag * other.diag})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        k = self.left.shape[1]
        out = self.left @ mat[:k]
        out[k:] += self.diag.unsqueeze(1) * mat[k:]
        return out

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        k = self.left.shape[1]
        return torch.cat([mat @ self.left, mat[:, k:] * self.diag], dim=1)

    def _gram_self(self) -> TrilLowRank:
        """Projection of S^T S = [[A11^T A11 + A21^T A21, A21^T D22], [D22 A21, D22^2]]."""
        k = self.left.shape[1]
        dense_block = self.left.T @ self.left
        strip = 2 * self.diag.unsqueeze(1) * self.left[k:]
        return self._like({"left": torch.cat([dense_block, strip]), "diag": self.diag.square()})
