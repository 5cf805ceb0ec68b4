"""Structured Kronecker factors of SINGD (paper Sec. 3.2, Table 1, Fig. 5 and 8).

Every class stores only the free entries of its subspace and supports the
projection maps (``from_dense``, ``from_inner``, ``gram_projection``), closed
products, products with dense matrices and the linear-space arithmetic.
"""

from optim.structures.base import StructuredMatrix
from optim.structures.block_diagonal import BlockDiagonal
from optim.structures.dense import Dense
from optim.structures.diagonal import Diagonal
from optim.structures.hierarchical import Hierarchical
from optim.structures.low_rank import TrilLowRank, TriuLowRank
from optim.structures.registry import STRUCTURES, parse_structure
from optim.structures.toeplitz import TrilToeplitz, TriuToeplitz
from optim.structures.triangular import Tril, Triu

__all__ = [
    "STRUCTURES",
    "BlockDiagonal",
    "Dense",
    "Diagonal",
    "Hierarchical",
    "StructuredMatrix",
    "Tril",
    "TrilLowRank",
    "TrilToeplitz",
    "Triu",
    "TriuLowRank",
    "TriuToeplitz",
    "parse_structure",
]
