"""Dense structure: no sparsity, the identity projection (INGD / IKFAC)."""

from __future__ import annotations

from torch import Tensor

from optim.gram import gram
from optim.matmul import add_matmul, matmul
from optim.structures.base import StructuredMatrix


class Dense(StructuredMatrix):
    """Dense d x d matrix (stored: ``mat``, d^2 entries; no options).

    The projection map is the identity, so SINGD with dense factors is INGD.
    """

    name = "dense"
    tensor_names = ("mat",)

    mat: Tensor

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {"mat": (dim, dim)}

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        return {"mat": sym.clone()}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        return {"mat": x @ x.T}

    def to_dense(self) -> Tensor:
        return self.mat.clone()

    def trace(self) -> Tensor:
        return self.mat.diagonal().sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> Dense:
        self.mat.diagonal().add_(value)
        return self

    def _matmul_structured(self, other: Dense) -> Dense:
        return self._like({"mat": matmul(self.mat, other.mat)})

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        return matmul(self.mat, mat)

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        return matmul(mat, self.mat)

    def add_self_product(self, other: Dense, weight: float) -> Dense:
        """``S + weight S other`` as one fused product."""
        self._check_compatible(other, "@")
        return self._like({"mat": add_matmul(self.mat, self.mat, other.mat, weight)})

    def _gram_projection_inner(self, x: Tensor) -> Dense:
        """``S^T x x^T S``, associating the products by cost.

        For ``n > 2 d`` columns, ``S^T (x x^T) S`` (``n d^2 + 2 d^3``) is cheaper than
        ``(S^T x)(S^T x)^T`` (``2 n d^2``); e.g. the unfolded input of an early conv layer.
        """
        if self._gram_first(x.shape[1]):
            return self._projection_of_gram(gram(x))
        return self._like({"mat": gram(matmul(self.mat.T, x))})

    def _gram_first(self, rows: int) -> bool:
        return rows > 2 * self.dim

    def _projection_of_gram(self, inner: Tensor) -> Dense:
        """``S^T U S`` for a ``d x d`` matrix ``U``."""
        inner = inner.to(self.dtype)
        return self._like({"mat": matmul(matmul(self.mat.T, inner), self.mat)})

    def _gram_self(self) -> Dense:
        return self._like({"mat": gram(self.mat.T)})
