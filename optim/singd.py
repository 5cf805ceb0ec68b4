"""SINGD: structured inverse-free natural gradient descent (Lin, Dangel et al., 2024).

One optimizer covers the inverse-free family of the SINGD paper:

* INGD (Fig. 4 left): dense Kronecker factors ``K`` (``d_i x d_i``) and ``C``
  (``d_o x d_o``) with Riemannian momentum ``alpha1``, adaptive curvature and damping.
* SINGD (Fig. 4 right): the same with structured factors (Table 1), whose momenta
  are kept in the structure by the subspace projection ``Pi``.
* IKFAC (Fig. 3 right, eq. 10) and SIKFAC: ``kfac_like=True`` replaces the traces
  ``Tr(H_C)``, ``Tr(C^T C)`` by ``d_o`` (and ``Tr(H_K)``, ``Tr(K^T K)`` by ``d_i``),
  with ``alpha1 = 0``; ``K K^T`` then tracks KFAC's ``(S_K + lambda I)^-1``
  (Theorem 1).

The preconditioned gradient is ``C C^T grad K K^T``; nothing is inverted or
decomposed, so factors and momenta may live in bfloat16 (``preconditioner_dtype``).
Conventions follow the authors' ``singd`` 0.0.5 (see ``optim.capture``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from optim.base import KroneckerOptimizer, check_number
from optim.capture import LayerRows
from optim.layers import KroneckerLayer
from optim.structures import parse_structure
from optim.structures.base import StructuredMatrix
from optim.structures.diagonal import Diagonal

PRECONDITIONER_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}
"""Names accepted for ``preconditioner_dtype`` (e.g. from a Hydra config)."""


def riemannian_step(
    factor: StructuredMatrix,
    momentum: StructuredMatrix | None,
    curvature: StructuredMatrix,
    gram: StructuredMatrix,
    curvature_weight: float | Tensor,
    damping_weight: float | Tensor,
    alpha1: float,
    lr_cov: float,
    overwrite: bool = False,
) -> tuple[StructuredMatrix, StructuredMatrix]:
    """One update of a Kronecker factor and its Riemannian momentum (Fig. 3-4, line 1).

    For ``K`` (and likewise ``C``)::

        m_K <- alpha1 m_K + 1/2 (w_H H_K + w_lambda Pi(K^T K) - I)
        K   <- K (I - lr_cov m_K)

    with ``w_H = Tr(H_C) / d_o`` and ``w_lambda = lambda Tr(C^T C) / d_o`` (INGD,
    SINGD) or ``w_H = 1``, ``w_lambda = lambda`` (IKFAC, SIKFAC). ``Pi`` is linear
    and maps ``I`` to ``I``, so projecting the sum equals summing the projections.

    Args:
        factor: ``K``.
        momentum: ``m_K`` (``None`` stands for zero, e.g. when ``alpha1 = 0``).
        curvature: ``H_K = Pi(K^T U K)``, computed with the current ``K``.
        gram: ``Pi(K^T K)``.
        curvature_weight: ``w_H``.
        damping_weight: ``w_lambda``.
        alpha1: Riemannian momentum.
        lr_cov: Preconditioner learning rate ``beta1``.
        overwrite: Update ``factor`` and ``momentum`` in place and use ``curvature``
            and ``gram`` as workspace (the caller owns all four); saves every
            ``d x d`` allocation but one for dense factors.

    Returns:
        The new ``(K, m_K)``, in the structure of ``factor``.
    """
    if not overwrite:
        curvature, gram = curvature.clone(), gram.clone()
        momentum = None if momentum is None else momentum.clone()
    step = curvature.mul_(0.5 * curvature_weight).add_scaled_(gram, 0.5 * damping_weight)
    step.add_identity_(-0.5)
    if alpha1 != 0.0 and momentum is not None:
        step = momentum.mul_(alpha1).add_scaled_(step)
    if overwrite:
        return factor.add_self_product_(step, -lr_cov), step
    return factor.add_self_product(step, -lr_cov), step


def parse_structures(
    structures: Any,
) -> tuple[tuple[type, dict[str, Any]], tuple[type, dict[str, Any]]]:
    """Resolve ``structures`` into ``((class, options) for K, (class, options) for C)``.

    Args:
        structures: A structure spec (name or mapping ``{"name": ..., **options}``)
            for both factors, or a pair ``(spec for K, spec for C)``.

    Returns:
        The two ``(class, options)`` pairs.
    """
    if isinstance(structures, (str, Mapping)):
        structures = (structures, structures)
    if not isinstance(structures, Sequence) or len(structures) != 2:
        raise ValueError(
            f"structures={structures!r} is invalid: allowed values are a structure name, a "
            "mapping {'name': ..., **options}, or a pair (for K, for C) of those"
        )
    try:
        return parse_structure(structures[0]), parse_structure(structures[1])
    except ValueError as error:
        raise ValueError(f"structures={structures!r} is invalid: {error}") from error


def resolve_dtype(preconditioner_dtype: Any) -> torch.dtype | None:
    """Turn ``preconditioner_dtype`` (``None``, a floating dtype or its name) into a dtype."""
    if preconditioner_dtype is None:
        return None
    if isinstance(preconditioner_dtype, str) and preconditioner_dtype in PRECONDITIONER_DTYPES:
        return PRECONDITIONER_DTYPES[preconditioner_dtype]
    if isinstance(preconditioner_dtype, torch.dtype) and preconditioner_dtype.is_floating_point:
        return preconditioner_dtype
    raise ValueError(
        f"preconditioner_dtype={preconditioner_dtype!r} is invalid: allowed values are None, a "
        f"floating torch.dtype or one of {list(PRECONDITIONER_DTYPES)}"
    )


def _describe_structure(cls: type, options: dict[str, Any], dim: int) -> str:
    resolved = cls.resolve_options(dim, **options)
    if not resolved:
        return cls.name
    return f"{cls.name}({', '.join(f'{k}={v}' for k, v in resolved.items())})"


def _reject(kwargs: Mapping[str, Any], fixed: Sequence[str], method: str, hint: str) -> None:
    for key in fixed:
        if key in kwargs:
            raise ValueError(
                f"{key}={kwargs[key]!r} is invalid for {method}, which fixes it; {hint}"
            )


class SINGD(KroneckerOptimizer):
    """Structured inverse-free natural gradient descent (INGD, IKFAC, SIKFAC, SINGD).

    Per preconditioned layer, factors ``K`` (input side) and ``C`` (output side) and
    their Riemannian momenta start at ``K = C = I``, ``m_K = m_C = 0`` (the momenta
    are stored only while ``alpha1 != 0``, as in the authors' code). On steps with
    ``step_count % T == 0`` the forward/backward hooks record
    ``H_K = Pi_K(K^T U K)`` and ``H_C = Pi_C(C^T G C)``; ``step`` then updates both
    momenta from the old factors, then both factors, then preconditions every
    gradient as ``C C^T grad K K^T``, followed by the coupled weight decay, momentum
    and learning-rate update shared with KFAC.

    Args:
        model: The network (Linear, Conv2d and PyG Linear layers are preconditioned).
        lr: Learning rate ``beta2``.
        momentum: Momentum ``alpha2`` of the parameter update.
        weight_decay: Coupled weight decay ``gamma``.
        damping: Damping ``lambda``.
        lr_cov: Preconditioner learning rate ``beta1``.
        alpha1: Riemannian momentum, in ``[0, 1)`` (forced to 0 with ``kfac_like``).
        T: Preconditioner update period.
        structures: Structure of ``K`` and ``C``: a name (``optim.STRUCTURES``) or
            mapping ``{"name": ..., **options}`` for both, or a pair ``(K, C)``.
        kfac_like: IKFAC/SIKFAC update (eq. 10) instead of INGD/SINGD.
        kfac_approx: ``"expand"`` or ``"reduce"`` for weight-shared layers.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None`` (summed loss).
        preconditioner_dtype: Dtype of factors and momenta (a floating dtype or its
            name); ``None`` follows each layer's weight dtype.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        damping: float = 1e-3,
        lr_cov: float = 1e-2,
        alpha1: float = 0.5,
        T: int = 10,
        structures: Any = ("dense", "dense"),
        kfac_like: bool = False,
        kfac_approx: str = "expand",
        loss_average: str | None = "batch",
        preconditioner_dtype: torch.dtype | str | None = None,
    ) -> None:
        check_number("damping", damping, 0.0)
        check_number("lr_cov", lr_cov, 0.0)
        check_number("alpha1", alpha1, 0.0, 1.0, high_open=True)
        if not isinstance(kfac_like, bool):
            raise ValueError(
                f"kfac_like={kfac_like!r} is invalid: allowed values are [True, False]"
            )
        if kfac_like and alpha1 != 0.0:
            warnings.warn(
                f"kfac_like=True uses no Riemannian momentum: alpha1={alpha1} is replaced by 0",
                stacklevel=2,
            )
            alpha1 = 0.0
        self.structures = parse_structures(structures)
        self.preconditioner_dtype = resolve_dtype(preconditioner_dtype)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "T": T,
            "damping": damping,
            "lr_cov": lr_cov,
            "alpha1": alpha1,
            "kfac_like": kfac_like,
        }
        super().__init__(model, defaults, kfac_approx, loss_average)

    # ----- presets ----------------------------------------------------------------------
    @classmethod
    def ingd(cls, model: nn.Module, **kwargs: Any) -> SINGD:
        """INGD (Lin et al., 2023): dense ``K`` and ``C`` (Fig. 4 left).

        Args:
            model: The network.
            **kwargs: Any other ``SINGD`` argument except ``structures``, ``kfac_like``.
        """
        _reject(kwargs, ("structures", "kfac_like"), "INGD", "use SINGD(...) instead")
        return cls(model, structures="dense", kfac_like=False, **kwargs)

    @classmethod
    def ikfac(cls, model: nn.Module, **kwargs: Any) -> SINGD:
        """IKFAC: dense factors, ``kfac_like=True``, ``alpha1=0`` (Fig. 3 right).

        Args:
            model: The network.
            **kwargs: Any other ``SINGD`` argument except ``structures``,
                ``kfac_like``, ``alpha1``.
        """
        _reject(
            kwargs,
            ("structures", "kfac_like", "alpha1"),
            "IKFAC",
            "use SINGD.sikfac(...) for structured factors",
        )
        return cls(model, structures="dense", kfac_like=True, alpha1=0.0, **kwargs)

    @classmethod
    def sikfac(cls, model: nn.Module, structures: Any, **kwargs: Any) -> SINGD:
        """SIKFAC: IKFAC with structured factors (``kfac_like=True``, ``alpha1=0``).

        Args:
            model: The network.
            structures: As for ``SINGD``.
            **kwargs: Any other ``SINGD`` argument except ``kfac_like``, ``alpha1``.
        """
        _reject(kwargs, ("kfac_like", "alpha1"), "SIKFAC", "use SINGD(...) instead")
        return cls(model, structures=structures, kfac_like=True, alpha1=0.0, **kwargs)

    # ----- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Update the preconditioners (on update steps), then every parameter.

        Args:
            closure: Optional callable that recomputes the loss (forward and backward).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = self._evaluate_closure(closure)
        if self._is_update_step():
            for name, (h_k, h_c) in self._pop_statistics().items():
                self._update_preconditioner(self.layers[name], h_k, h_c)
        self._update_all_params()  # preconditioned layers, then the plain parameters
        self.step_count += 1
        return loss

    def _pop_statistics(self) -> dict[str, tuple[StructuredMatrix, StructuredMatrix]]:
        """This step's ``(H_K, H_C)`` per layer, averaged over data-parallel ranks."""
        statistics = {}
        for name in self.layers:
            pair = self.capture.pop(name)
            if pair is not None:
                statistics[name] = pair
        self._all_reduce(
            [
                tensor
                for pair in statistics.values()
                for stat in pair
                for tensor in stat.state_tensors().values()
            ]
        )
        return statistics

    def _update_preconditioner(
        self, layer: KroneckerLayer, h_k: StructuredMatrix, h_c: StructuredMatrix
    ) -> None:
        """Fig. 4 (right), line 1: both momenta from the old ``K``, ``C``, then both factors."""
        group, factors = self.hyper, self._factors(layer)
        k, c = factors["K"], factors["C"]
        h_k, h_c = h_k.to(k.dtype, k.device), h_c.to(c.dtype, c.device)
        k_gram, c_gram = k.gram_projection(), c.gram_projection()
        damping = group["damping"]
        if group["kfac_like"]:
            k_weights = c_weights = (1.0, damping)
        else:
            d_in, d_out = k.dim, c.dim
            k_weights = (_scalar(h_c.trace()) / d_out, damping * _scalar(c_gram.trace()) / d_out)
            c_weights = (_scalar(h_k.trace()) / d_in, damping * _scalar(k_gram.trace()) / d_in)
        alpha1, lr_cov = group["alpha1"], group["lr_cov"]
        # the statistics, grams and momenta are this step's own: update them in place
        factors["K"], m_k = riemannian_step(
            k, factors.pop("m_K", None), h_k, k_gram, *k_weights, alpha1, lr_cov, overwrite=True
        )
        factors["C"], m_c = riemannian_step(
            c, factors.pop("m_C", None), h_c, c_gram, *c_weights, alpha1, lr_cov, overwrite=True
        )
        if alpha1 != 0.0:
            factors["m_K"], factors["m_C"] = m_k, m_c

    def _precondition(self, layer: KroneckerLayer, grad: Tensor) -> Tensor:
        """``C C^T grad K K^T`` with two structured products per factor."""
        factors = self._factors(layer)
        k, c = factors["K"], factors["C"]
        grad = grad.to(k.dtype)
        if isinstance(k, Diagonal) and isinstance(c, Diagonal):  # two passes instead of four
            return (grad * k.diag.square()).mul_(c.diag.square().unsqueeze(1))
        grad_kk_t = k @ (grad @ k).T  # (grad K K^T)^T, d_i x d_o
        return c @ (grad_kk_t @ c).T  # C C^T grad K K^T, d_o x d_i

    # ----- statistics (called by the capture hooks) -------------------------------------
    def _input_stat(self, layer: KroneckerLayer, rows: LayerRows) -> StructuredMatrix:
        """``H_K = Pi_K(K^T A^T A K)`` with the current ``K``, in the factor dtype."""
        return _curvature(self._factors(layer)["K"], rows)

    def _grad_stat(self, layer: KroneckerLayer, rows: LayerRows) -> StructuredMatrix:
        """``H_C = Pi_C(C^T B^T B C)`` with the current ``C``, in the factor dtype."""
        return _curvature(self._factors(layer)["C"], rows)

    # ----- per-layer state --------------------------------------------------------------
    def _factors(self, layer: KroneckerLayer) -> dict[str, StructuredMatrix]:
        """``K``, ``C`` (and ``m_K``, ``m_C``) of ``layer``: created lazily, cast if needed."""
        dtype = self.preconditioner_dtype or layer.weight.dtype
        device = layer.weight.device
        factors = self.layer_state.get(layer.name)
        if factors is None:
            (k_cls, k_opts), (c_cls, c_opts) = self.structures
            factors = {
                "K": k_cls.eye(layer.dim_in, dtype=dtype, device=device, **k_opts),
                "C": c_cls.eye(layer.dim_out, dtype=dtype, device=device, **c_opts),
            }
            if self.hyper["alpha1"] != 0.0:
                factors["m_K"] = k_cls.zeros(layer.dim_in, dtype=dtype, device=device, **k_opts)
                factors["m_C"] = c_cls.zeros(layer.dim_out, dtype=dtype, device=device, **c_opts)
            self.layer_state[layer.name] = factors
        elif factors["K"].dtype != dtype or factors["K"].device != device:
            factors = {key: matrix.to(dtype, device) for key, matrix in factors.items()}
            self.layer_state[layer.name] = factors
        return factors

    def _layer_state_tensors(self, name: str) -> dict[str, Tensor]:
        """Stored tensors of ``K``, ``C``, ``m_K``, ``m_C`` as ``"K.<tensor>"`` etc."""
        return {
            f"{key}.{part}": tensor
            for key, matrix in self.layer_state[name].items()
            for part, tensor in matrix.state_tensors().items()
        }

    def _load_layer_state_tensors(self, name: str, tensors: dict[str, Tensor]) -> None:
        """Rebuild the structured matrices saved by :meth:`_layer_state_tensors`."""
        layer = self.layers[name]
        (k_cls, k_opts), (c_cls, c_opts) = self.structures
        specs = {
            "K": (k_cls, k_opts, layer.dim_in),
            "m_K": (k_cls, k_opts, layer.dim_in),
            "C": (c_cls, c_opts, layer.dim_out),
            "m_C": (c_cls, c_opts, layer.dim_out),
        }
        grouped: dict[str, dict[str, Tensor]] = {}
        for key, tensor in tensors.items():
            matrix, _, part = key.partition(".")
            if matrix not in specs:
                raise ValueError(
                    f"state_dict entry {key!r} of layer {name!r} is invalid: allowed prefixes "
                    f"are {list(specs)}"
                )
            grouped.setdefault(matrix, {})[part] = tensor
        self.layer_state[name] = {
            matrix: specs[matrix][0].from_state_tensors(parts, specs[matrix][2], **specs[matrix][1])
            for matrix, parts in grouped.items()
        }

    def _layer_description(self, layer: KroneckerLayer) -> str:
        (k_cls, k_opts), (c_cls, c_opts) = self.structures
        k_text = _describe_structure(k_cls, k_opts, layer.dim_in)
        c_text = _describe_structure(c_cls, c_opts, layer.dim_out)
        dense = k_text == c_text == "dense"
        alpha1 = self.hyper["alpha1"]
        if self.hyper["kfac_like"]:
            return "IKFAC" if dense else f"SIKFAC(K={k_text}, C={c_text})"
        if dense:
            return f"INGD(alpha1={alpha1})"
        return f"SINGD(K={k_text}, C={c_text}, alpha1={alpha1})"


def _curvature(factor: StructuredMatrix, rows: LayerRows) -> StructuredMatrix:
    """``Pi(S^T X^T X S)`` for the rows ``X``, in the factor dtype, outside autocast."""
    with torch.autocast(factor.device.type, enabled=False):
        return factor.gram_projection_of_rows(rows)


def _scalar(trace: Tensor) -> Tensor:
    """A trace in at least float32 (exact scalars for bfloat16 factors)."""
    return trace.to(torch.promote_types(trace.dtype, torch.float32))
