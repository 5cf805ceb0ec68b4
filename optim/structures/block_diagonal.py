"""Block-diagonal structure (Table 1, row 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from optim.structures.base import StructuredMatrix


class BlockDiagonal(StructuredMatrix):
    """Block-diagonal d x d matrix with dense k x k blocks.

    Layout ``Diag(A_1, ..., A_q, A_last)``: q = d // k full blocks and, if k
    does not divide d, a smaller last block of size r = d % k. Projection
    map: keep the diagonal blocks ``M_ii`` of the input.

    Options:
        k: Block size (default 30). Clamped to d, so for k >= d the matrix is
        dense.

    Stored: ``blocks`` of shape (q, k, k) and ``last`` of shape (r, r), i.e.
    q k^2 + r^2 entries.
    """

    name = "block_diagonal"
    option_defaults = {"k": 30}
    tensor_names = ("blocks", "last")

    blocks: Tensor
    last: Tensor

    @classmethod
    def _clamp_options(cls, dim: int, options: dict[str, int]) -> dict[str, int]:
        return {"k": min(options["k"], dim)}

    @classmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        k = options["k"]
        num_blocks, rest = divmod(dim, k)
        return {"blocks": (num_blocks, k, k), "last": (rest, rest)}

    @property
    def _split(self) -> int:
        """Number of rows covered by the full blocks."""
        return self.blocks.shape[0] * self.blocks.shape[1]

    @classmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        num_blocks = sym.shape[0] // k
        split = num_blocks * k
        grid = sym[:split, :split].reshape(num_blocks, k, num_blocks, k)
        blocks = grid.diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()
        return {"blocks": blocks, "last": sym[split:, split:].clone()}

    @classmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        k = options["k"]
        num_blocks = x.shape[0] // k
        split = num_blocks * k
        x_blocks = x[:split].reshape(num_blocks, k, x.shape[1])
        x_last = x[split:]
        return {"blocks": x_blocks @ x_blocks.mT, "last": x_last @ x_last.T}

    def to_dense(self) -> Tensor:
        num_blocks, k, _ = self.blocks.shape
        grid = self.blocks.new_zeros(num_blocks, k, num_blocks, k)
        grid.diagonal(dim1=0, dim2=2).copy_(self.blocks.permute(1, 2, 0))
        dense = self.blocks.new_zeros(self.dim, self.dim)
        split = self._split
        dense[:split, :split] = grid.reshape(split, split)
        dense[split:, split:] = self.last
        return dense

    def trace(self) -> Tensor:
        return self.blocks.diagonal(dim1=1, dim2=2).sum() + self.last.diagonal().sum()

    def add_identity_(self, value: float | Tensor = 1.0) -> BlockDiagonal:
        self.blocks.diagonal(dim1=1, dim2=2).add_(value)
        self.last.diagonal().add_(value)
        return self

    def _matmul_structured(self, other: BlockDiagonal) -> BlockDiagonal:
        return self._like({"blocks": self.blocks @ other.blocks, "last": self.last @ other.last})

    def _apply(self, mat: Tensor, transpose: bool) -> Tensor:
        """``S @ mat`` (or ``S.T @ mat``) for ``mat`` of shape (d, n), as one batched product."""
        blocks, last = (self.blocks.mT, self.last.T) if transpose else (self.blocks, self.last)
        num_blocks, k, _ = blocks.shape
        split = num_blocks * k
        top = blocks @ mat[:split].reshape(num_blocks, k, mat.shape[1])
        return torch.cat([top.reshape(split, -1), last @ mat[split:]])

    def _matmul_dense(self, mat: Tensor) -> Tensor:
        return self._apply(mat, transpose=False)

    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        # M @ S = (S^T M^T)^T keeps the batched product in its fast (q, k, n) layout
        return self._apply(mat.T, transpose=True).T

    def _gram_projection_inner(self, x: Tensor) -> BlockDiagonal:
        """``Pi(S^T x x^T S)``: block ``i`` is ``S_i^T (x_i x_i^T) S_i``.

        Only the diagonal blocks of ``x x^T`` are formed (``n d k`` work) and ``S^T x``
        never is, which halves the work of the generic path for ``n >> k``.
        """
        num_blocks, k, _ = self.blocks.shape
        split = num_blocks * k
        x_blocks = x[:split].reshape(num_blocks, k, x.shape[1])
        x_last = x[split:]
        inner_blocks, inner_last = x_blocks @ x_blocks.mT, x_last @ x_last.T
        return self._like(
            {
                "blocks": self.blocks.mT @ inner_blocks @ self.blocks,
                "last": self.last.T @ inner_last @ self.last,
            }
        )

    def _gram_self(self) -> BlockDiagonal:
        return self._like({"blocks": self.blocks.mT @ self.blocks, "last": self.last.T @ self.last})
