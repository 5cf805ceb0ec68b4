"""Base class of the structured Kronecker factors used by SINGD.

A structured matrix stores only the free entries of a matrix subspace that is
closed under addition, scaling and matrix multiplication (SINGD paper, Sec. 3.2,
Table 1). Subclasses describe the layout of those entries; this module holds
the arithmetic that every structure shares (it acts on the stored tensors) and
the dispatch of ``@`` to the structure-specific products.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

StructuredT = TypeVar("StructuredT", bound="StructuredMatrix")


def validate_options(
    structure: str,
    defaults: Mapping[str, int],
    options: Mapping[str, Any],
    minimums: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Check user options of a structure and fill in the defaults.

    Args:
        structure: Registry name of the structure (used in error messages).
        defaults: Allowed option names with their default values.
        options: Options given by the user.
        minimums: Smallest allowed value per option (default 1).

    Returns:
        All options of the structure as plain ints.

    Raises:
        ValueError: For an unknown option name or a value that is not an
            integer >= its minimum.
    """
    minimums = minimums or {}
    allowed = ", ".join(sorted(defaults)) or "none"
    resolved = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            raise ValueError(
                f"Unknown option {key!r} for structure {structure!r}; allowed options: {allowed}."
            )
        low = minimums.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(
                f"Option {key!r} of structure {structure!r} must be an integer >= {low}, "
                f"got {value!r}."
            )
        resolved[key] = int(value)
    return resolved


class RowSource(Protocol):
    """Rows ``X`` (``n x d``) of a statistic ``X^T X``, e.g. ``optim.capture.LayerRows``."""

    count: int
    """``n``."""

    def gram(self) -> Tensor:
        """``X^T X`` in at least float32, possibly without forming ``X``."""
        ...

    def transposed(self) -> Tensor:
        """``X^T`` (``d x n``)."""
        ...

    def column_square_sums(self) -> Tensor:
        """``diag(X^T X)``, possibly without forming ``X``."""
        ...


def row_sums_of_squares(x: Tensor) -> Tensor:
    """Return ``diag(x @ x.T)`` in O(rows * cols) without forming ``x @ x.T``."""
    return x.square().sum(dim=1)  # faster than einsum on the non-contiguous (A K)^T views


def _is_scalar(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.ndim == 0
    return isinstance(value, Real)


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, Integral) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}.")
    return int(dim)


class StructuredMatrix(ABC):
    """A d x d matrix from a SINGD subspace, stored by its free entries only.

    Subclasses set ``name`` (registry key), ``option_defaults`` (structure
    options with defaults), ``option_minimums`` (if an option may go below 1)
    and ``tensor_names`` (the stored tensors, which become attributes of the
    same names), and implement the abstract hooks.

    Attributes:
        dim: Side length d of the matrix.
        options: Effective structure options, after clamping to ``dim`` (for
            example a block size larger than d becomes d).
    """

    name: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, int]] = {}
    option_minimums: ClassVar[dict[str, int]] = {}
    tensor_names: ClassVar[tuple[str, ...]] = ()

    dim: int
    options: dict[str, int]

    def __init__(self, dim: int, tensors: Mapping[str, Tensor], **options: int) -> None:
        """Build a structured matrix from its stored tensors, checking their shapes.

        Args:
            dim: Side length d.
            tensors: The stored tensors by name (see ``tensor_names``).
            **options: Structure options (see the subclass docstring).

        Raises:
            ValueError: If options, tensor names, shapes, dtypes or devices do
                not fit the structure.
        """
        dim = _check_dim(dim)
        opts = self.resolve_options(dim, **options)
        shapes = self.tensor_shapes(dim, opts)
        if set(tensors) != set(shapes):
            raise ValueError(
                f"tensors of {type(self).__name__} must have the keys {sorted(shapes)}, "
                f"got {sorted(tensors)}."
            )
        reference = tensors[self.tensor_names[0]]
        for key, shape in shapes.items():
            tensor = tensors[key]
            if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape:
                got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(
                    f"tensor {key!r} of {type(self).__name__}(dim={dim}, {opts}) must have "
                    f"shape {shape}, got {got}."
                )
            if tensor.dtype != reference.dtype or tensor.device != reference.device:
                raise ValueError(
                    f"tensor {key!r} has dtype {tensor.dtype} on {tensor.device}; all tensors "
                    f"must share dtype {reference.dtype} and device {reference.device}."
                )
        self._set(dim, opts, tensors)

    # ------------------------------------------------------------------ construction
    def _set(self, dim: int, options: dict[str, int], tensors: Mapping[str, Tensor]) -> None:
        self.dim = dim
        self.options = dict(options)
        for key in self.tensor_names:
            setattr(self, key, tensors[key])

    @classmethod
    def _build(
        cls: type[StructuredT], dim: int, options: dict[str, int], tensors: Mapping[str, Tensor]
    ) -> StructuredT:
        """Fast internal constructor without validation."""
        obj = cls.__new__(cls)
        obj._set(dim, options, tensors)
        return obj

    def _like(self: StructuredT, tensors: Mapping[str, Tensor]) -> StructuredT:
        """Return a matrix of the same class, dim and options with new tensors."""
        return type(self)._build(self.dim, self.options, tensors)

    @classmethod
    def resolve_options(cls, dim: int, **options: Any) -> dict[str, int]:
        """Validate options, fill defaults and clamp them to ``dim``."""
        options = validate_options(cls.name, cls.option_defaults, options, cls.option_minimums)
        return cls._clamp_options(dim, options)

    @classmethod
    def _clamp_options(cls, dim: int, options: dict[str, int]) -> dict[str, int]:
        """Adapt options to a small ``dim`` (default: unchanged)."""
        return options

    @classmethod
    def from_dense(cls: type[StructuredT], sym: Tensor, **options: Any) -> StructuredT:
        """Project a symmetric d x d matrix onto the structure (Table 1 map).

        Args:
            sym: Symmetric d x d matrix.
            **options: Structure options.

        Returns:
            The projection, in the dtype and on the device of ``sym``.
        """
        if not isinstance(sym, Tensor) or sym.ndim != 2 or sym.shape[0] != sym.shape[1]:
            shape = tuple(sym.shape) if isinstance(sym, Tensor) else type(sym).__name__
            raise ValueError(f"sym must be a square 2-D tensor, got {shape}.")
        dim = _check_dim(sym.shape[0])
        opts = cls.resolve_options(dim, **options)
        return cls._build(dim, opts, cls._project(sym, opts))

    @classmethod
    def from_inner(cls: type[StructuredT], x: Tensor, **options: Any) -> StructuredT:
        """Project ``x @ x.T`` onto the structure without forming it (sparse classes).

        Args:
            x: Matrix of shape (d, n).
            **options: Structure options.

        Returns:
            ``from_dense(x @ x.T, **options)``.
        """
        if not isinstance(x, Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a 2-D tensor of shape (d, n), got {shape}.")
        dim = _check_dim(x.shape[0])
        opts = cls.resolve_options(dim, **options)
        return cls._build(dim, opts, cls._project_inner(x, opts))

    @classmethod
    def zeros(
        cls: type[StructuredT],
        d: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **options: Any,
    ) -> StructuredT:
        """Return the d x d zero matrix of this structure."""
        d = _check_dim(d)
        opts = cls.resolve_options(d, **options)
        tensors = {
            key: torch.zeros(shape, dtype=dtype, device=device)
            for key, shape in cls.tensor_shapes(d, opts).items()
        }
        return cls._build(d, opts, tensors)

    @classmethod
    def eye(
        cls: type[StructuredT],
        d: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **options: Any,
    ) -> StructuredT:
        """Return the d x d identity matrix of this structure."""
        return cls.zeros(d, dtype=dtype, device=device, **options).add_identity_(1.0)

    @classmethod
    def from_state_tensors(
        cls: type[StructuredT], tensors: Mapping[str, Tensor], dim: int, **options: Any
    ) -> StructuredT:
        """Rebuild a matrix saved with ``state_tensors`` (inverse of that method)."""
        return cls(dim, tensors, **options)

    # ------------------------------------------------------------------ hooks
    @classmethod
    @abstractmethod
    def tensor_shapes(cls, dim: int, options: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """Shapes of the stored tensors for resolved ``options``."""

    @classmethod
    @abstractmethod
    def _project(cls, sym: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        """Stored tensors of the projection of a symmetric matrix."""

    @classmethod
    @abstractmethod
    def _project_inner(cls, x: Tensor, options: dict[str, int]) -> dict[str, Tensor]:
        """Stored tensors of the projection of ``x @ x.T``."""

    @abstractmethod
    def to_dense(self) -> Tensor:
        """Return the matrix as a new dense d x d tensor."""

    @abstractmethod
    def trace(self) -> Tensor:
        """Return the trace as a 0-dim tensor."""

    @abstractmethod
    def add_identity_(self: StructuredT, value: float | Tensor = 1.0) -> StructuredT:
        """Add ``value * I`` in place; return ``self``."""

    def add_identity(self: StructuredT, value: float | Tensor = 1.0) -> StructuredT:
        """Return ``self + value * I`` in the same structure."""
        return self.clone().add_identity_(value)

    @abstractmethod
    def _matmul_structured(self: StructuredT, other: StructuredT) -> StructuredT:
        """Product with a matrix of the same class and options."""

    @abstractmethod
    def _matmul_dense(self, mat: Tensor) -> Tensor:
        """``self @ mat`` for a dense (d, n) tensor."""

    @abstractmethod
    def _rmatmul_dense(self, mat: Tensor) -> Tensor:
        """``mat @ self`` for a dense (n, d) tensor."""

    @abstractmethod
    def _gram_self(self: StructuredT) -> StructuredT:
        """Projection of ``self.T @ self``."""

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the stored tensors."""
        return getattr(self, self.tensor_names[0]).dtype

    @property
    def device(self) -> torch.device:
        """Device of the stored tensors."""
        return getattr(self, self.tensor_names[0]).device

    def state_tensors(self) -> dict[str, Tensor]:
        """Return the stored tensors by name (not copied), e.g. for a checkpoint."""
        return {key: getattr(self, key) for key in self.tensor_names}

    def numel(self) -> int:
        """Number of stored entries (the memory rows of the paper's Table 3)."""
        return sum(getattr(self, key).numel() for key in self.tensor_names)

    def to(
        self: StructuredT,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> StructuredT:
        """Return a copy with tensors cast to ``dtype`` and/or moved to ``device``."""
        return self._map(lambda t: t.to(dtype=dtype, device=device))

    def gram_projection(self: StructuredT, x: Tensor | None = None) -> StructuredT:
        """Project ``S.T @ x @ x.T @ S`` (or ``S.T @ S`` if ``x`` is None) onto the structure.

        SINGD uses this for H_K = Pi(K^T U K) with U = x x^T, and for Pi(K^T K)
        in the damping term; neither needs a dense d x d matrix for the sparse
        structures.

        Args:
            x: Optional matrix of shape (d, n).

        Returns:
            The projection, with this matrix's class and options.
        """
        if x is None:
            return self._gram_self()
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a 2-D tensor of shape ({self.dim}, n), got {shape}.")
        return self._gram_projection_inner(x)

    def _gram_projection_inner(self: StructuredT, x: Tensor) -> StructuredT:
        """``Pi(S^T x x^T S)`` for a checked ``x`` (default: ``S^T x``, then its projection).

        Structures override this where the projection needs less than ``S^T x``.
        """
        projected = self._rmatmul_dense(x.T).T  # S^T x
        return self._build(self.dim, self.options, self._project_inner(projected, self.options))

    def gram_projection_of_rows(self: StructuredT, rows: RowSource) -> StructuredT:
        """``Pi(S^T X^T X S)`` for rows ``X``; each structure reads only what it needs.

        Structures whose projection starts from ``U = X^T X`` for this many rows
        (:meth:`_gram_first`) take it from ``rows.gram()``, which a stride-1 conv input
        gives without its im2col (``optim.conv_gram``); the others read ``X^T``.

        Args:
            rows: The rows (``X^T`` via ``rows.transposed()``).

        Returns:
            The projection, in this matrix's dtype.
        """
        if self._gram_first(rows.count):
            return self._projection_of_gram(rows.gram())
        return self.gram_projection(rows.transposed().to(self.dtype))

    def _gram_first(self, rows: int) -> bool:
        """Whether ``Pi(S^T U S)`` is computed from ``U = X^T X`` for ``rows`` rows."""
        return False

    def _projection_of_gram(self: StructuredT, inner: Tensor) -> StructuredT:
        """``Pi(S^T U S)`` from the ``d x d`` matrix ``U`` (structures with a gram-first path)."""
        raise NotImplementedError(f"{type(self).__name__} has no gram-first projection")

    # ------------------------------------------------------------------ arithmetic
    def _map(self: StructuredT, fn: Callable[[Tensor], Tensor]) -> StructuredT:
        return self._like({key: fn(getattr(self, key)) for key in self.tensor_names})

    def _zip(
        self: StructuredT, other: StructuredT, fn: Callable[[Tensor, Tensor], Tensor]
    ) -> StructuredT:
        return self._like(
            {key: fn(getattr(self, key), getattr(other, key)) for key in self.tensor_names}
        )

    def _check_compatible(self, other: StructuredMatrix, op: str) -> None:
        if type(other) is not type(self) or other.dim != self.dim or other.options != self.options:
            raise ValueError(
                f"Cannot compute {self!r} {op} {other!r}: both operands need the same "
                "structure, dim and options."
            )

    def clone(self: StructuredT) -> StructuredT:
        """Return a copy with cloned tensors."""
        return self._map(torch.clone)

    def mul_(self: StructuredT, value: float | Tensor) -> StructuredT:
        """Scale in place by a number or 0-dim tensor; return ``self``."""
        for key in self.tensor_names:
            getattr(self, key).mul_(value)
        return self

    def add_scaled_(
        self: StructuredT, other: StructuredT, weight: float | Tensor = 1.0
    ) -> StructuredT:
        """In place ``self += weight * other`` (``weight``: a number or 0-dim tensor)."""
        self._check_compatible(other, "+")
        for key in self.tensor_names:
            mine, theirs = getattr(self, key), getattr(other, key)
            if isinstance(weight, Tensor):
                mine.addcmul_(theirs, weight)
            else:
                mine.add_(theirs, alpha=weight)
        return self

    def add_self_product(self: StructuredT, other: StructuredT, weight: float) -> StructuredT:
        """Return ``self + weight * (self @ other)`` (structures may fuse the two)."""
        return self + (self @ other) * weight

    def add_self_product_(self: StructuredT, other: StructuredT, weight: float) -> StructuredT:
        """In place ``self <- self + weight * (self @ other)``; return ``self``.

        The result is copied into the existing tensors, whose memory is already mapped
        (a fresh ``d x d`` buffer costs page faults on first touch).
        """
        result = self.add_self_product(other, weight)
        for key in self.tensor_names:
            getattr(self, key).copy_(getattr(result, key))
        return self

    def __add__(self: StructuredT, other: Any) -> StructuredT:
        if not isinstance(other, StructuredMatrix):
            return NotImplemented
        self._check_compatible(other, "+")
        return self._zip(other, torch.add)

    def __sub__(self: StructuredT, other: Any) -> StructuredT:
        if not isinstance(other, StructuredMatrix):
            return NotImplemented
        self._check_compatible(other, "-")
        return self._zip(other, torch.sub)

    def __neg__(self: StructuredT) -> StructuredT:
        return self._map(torch.neg)

    def __mul__(self: StructuredT, value: Any) -> StructuredT:
        if not _is_scalar(value):
            return NotImplemented
        return self._map(lambda t: t * value)

    __rmul__ = __mul__

    def __truediv__(self: StructuredT, value: Any) -> StructuredT:
        if not _is_scalar(value):
            return NotImplemented
        return self._map(lambda t: t / value)

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, StructuredMatrix):
            self._check_compatible(other, "@")
            return self._matmul_structured(other)
        if not isinstance(other, Tensor):
            return NotImplemented
        if other.ndim not in (1, 2) or other.shape[0] != self.dim:
            raise ValueError(
                f"{self!r} @ M needs M of shape ({self.dim},) or ({self.dim}, n), "
                f"got {tuple(other.shape)}."
            )
        if other.ndim == 1:
            return self._matmul_dense(other.unsqueeze(1)).squeeze(1)
        return self._matmul_dense(other)

    def __rmatmul__(self, other: Any) -> Any:
        if not isinstance(other, Tensor):
            return NotImplemented
        if other.ndim not in (1, 2) or other.shape[-1] != self.dim:
            raise ValueError(
                f"M @ {self!r} needs M of shape ({self.dim},) or (n, {self.dim}), "
                f"got {tuple(other.shape)}."
            )
        if other.ndim == 1:
            return self._rmatmul_dense(other.unsqueeze(0)).squeeze(0)
        return self._rmatmul_dense(other)

    def __repr__(self) -> str:
        opts = "".join(f", {key}={value}" for key, value in self.options.items())
        return f"{type(self).__name__}(dim={self.dim}{opts}, dtype={self.dtype})"
