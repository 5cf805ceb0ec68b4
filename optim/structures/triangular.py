"""Lower- and upper-triangular structures (Table 1, row 1)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor

from optim.structures.base import StructuredMatrix


@lru_cache(maxsize=64)
def _packing(dim: int, upper: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row-major flat indices of the triangle and the positions of its diagonal in it."""
    rows, cols = (torch.triu_indices if upper else torch.tril_indices)(dim, dim, device=device)
    flat = rows * dim + cols
    diagonal = torch.nonzero(rows == cols).squeeze(1)
    return flat, diagonal


class _Triangular(StructuredMatrix):
    """Triangular d x d matrix stored as the d (d + 1) / 2 entries of its triangle.

    Projection map: keep the diagonal of the symmetric input and double its
    strictly lower (``Tril``) or strictly upper (``Triu``) part. Products
    unpack to a dense triangle: these structures have O(d^2) entries anyway.
    """

    upper: ClassVar[bool]
    tensor_names = ("values",)

    values: Tensor

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"values": (dim * (dim + 1) // 2,)}

    @classmethod
    def _pack(cls, mat: Tensor) -> Tensor:
        flat, _ = _packing(mat.shape[0], cls.upper, mat.device)
        return mat.reshape(-1)[flat]

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        flat, diagonal = _packing(sym.shape[0], cls.upper, sym.device)
        values = sym.reshape(-1)[flat] * 2
        values[diagonal] = sym.diagonal()
        return {"values": values}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        return cls._project(x @ x.T, options)

    def to_dense(self) -> Tensor:
        flat, _ = _packing(self.dim, self.upper, self.values.device)
        dense = self.values.new_zeros(self.dim * self.dim)
        dense[flat] = self.values
        return dense.reshape(self.dim, self.dim)

    def trace(self) -> Tensor:
        _, diagonal = _packing(self.dim, self.upper, self.values.device)
        return self.values[diagonal].sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> _Triangular:
        _, diagonal = _packing(self.dim, self.upper, self.values.device)
        self.values[diagonal] += value
        return self

    def _matmul_structured(self, other: _Triangular) -> _Triangular:
        return self._like({"values": self._pack(self.to_dense() @ other.to_dense())})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        return self.to_dense() @ mat

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        return mat @ self.to_dense()

    def _gram_self(self) -> _Triangular:
        dense = self.to_dense()
        return self._like(self._project(dense.T @ dense, self.options))


class Tril(_Triangular):
    """Lower-triangular d x d matrix (stored: ``values``, d(d+1)/2 entries; no options).

    Projection map: ``[[m11, 0, ...], [2 m21, m22, ...], ...]`` (strictly lower
    part doubled, diagonal kept).
    """

    name = "tril"
    upper = False


class Triu(_Triangular):
    """Upper-triangular d x d matrix (stored: ``values``, d(d+1)/2 entries; no options).

    Projection map: strictly upper part doubled, diagonal kept.
    """

    name = "triu"
    upper = True
