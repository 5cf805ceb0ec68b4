"""KFAC (SINGD paper, Fig. 3 left) with exact or randomized factor inverses.

Per preconditioned layer with a ``d_out x d_in`` gradient matrix ``grad``:

* every ``T`` steps (the first included), with this step's (all-reduced)
  statistics ``U = A^T A`` and ``G = B^T B``:
  ``S_K <- (1 - ema) S_K + ema U`` and ``S_C <- (1 - ema) S_C + ema G``
  (``S_K = S_C = I`` at the start);
* every ``T_inv`` steps (default ``T``; after the factors on a shared step): the
  inverse representations of ``S_K + lambda I`` and ``S_C + lambda I``;
* every step: ``direction = (S_C + lambda I)^-1 grad (S_K + lambda I)^-1``, then
  the shared momentum/weight-decay update.

``inverse`` selects how the damped inverses are obtained (:mod:`optim.inverses`):
``"eigh"`` / ``"cholesky"`` store dense inverses; ``"rsvd"`` (RS-KFAC) and
``"srevd"`` (SRE-KFAC) store a rank-``rank`` pair ``(V, d)`` and apply eq. (13) of
the Randomized K-FACs paper. A factor with ``rank + oversample >= dim`` is inverted
exactly (eigh) instead, with one warning per optimizer.

Factors are kept in ``factor_dtype`` (default: the weight dtype); statistics and
decompositions run in at least float32 and are cast back to ``factor_dtype``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from optim.base import KroneckerOptimizer, check_choice, check_number
from optim.capture import LayerRows
from optim.inverses import (
    apply_low_rank_inverse,
    cholesky_inverse,
    compute_dtype,
    eigh_inverse,
    rsvd,
    srevd,
)
from optim.layers import KroneckerLayer
from optim.matmul import matmul

INVERSES = ("eigh", "cholesky", "rsvd", "srevd")
RANDOMIZED_INVERSES = {"rsvd": rsvd, "srevd": srevd}
DENSE_INVERSES = {"eigh": eigh_inverse, "cholesky": cholesky_inverse}
# Per factor side: the EMA factor and the keys of its inverse representation.
SIDES = {"K": "S_K", "C": "S_C"}
_INVERSE_KEYS = ("inv_", "V_", "d_")


class KFAC(KroneckerOptimizer):
    """Kronecker-factored approximate curvature with a choice of damped inverse.

    Args:
        model: The network (DDP/DataParallel wrappers are unwrapped).
        lr: Learning rate ``beta_2``.
        momentum: Momentum ``alpha_2`` of the update direction.
        weight_decay: Coupled weight decay ``gamma``.
        damping: ``lambda`` added to both factors before inversion.
        ema: EMA weight ``beta_1`` of new statistics, in ``(0, 1]``.
        T: Factor update period (statistics are recorded on these steps only).
        T_inv: Inverse recomputation period (default ``T``).
        inverse: ``"eigh"``, ``"cholesky"``, ``"rsvd"`` (RS-KFAC) or ``"srevd"``
            (SRE-KFAC).
        rank: Target rank ``r`` of the randomized inverses.
        oversample: Oversampling ``r_l`` of the randomized inverses.
        power_iters: Subspace iterations of the randomized inverses.
        kfac_approx: ``"expand"`` or ``"reduce"`` for weight-shared layers.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None`` (summed loss).
        factor_dtype: Storage dtype of factors and inverses (``None``: weight dtype),
            e.g. ``torch.bfloat16``.
        seed: Seed of the private generators of the randomized inverses.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        damping: float = 1e-3,
        ema: float = 0.05,
        T: int = 10,
        T_inv: int | None = None,
        inverse: str = "eigh",
        rank: int = 220,
        oversample: int = 10,
        power_iters: int = 4,
        kfac_approx: str = "expand",
        loss_average: str | None = "batch",
        factor_dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("inverse", inverse, INVERSES)
        check_number("damping", damping, 0.0, low_open=inverse in RANDOMIZED_INVERSES)
        check_number("ema", ema, 0.0, 1.0, low_open=True)
        check_number("T", T, 1, integer=True)
        T_inv = T if T_inv is None else T_inv
        check_number("T_inv", T_inv, 1, integer=True)
        check_number("rank", rank, 1, integer=True)
        check_number("oversample", oversample, 0, integer=True)
        check_number("power_iters", power_iters, 0, integer=True)
        check_number("seed", seed, 0, integer=True)
        if factor_dtype is not None and not (
            isinstance(factor_dtype, torch.dtype) and factor_dtype.is_floating_point
        ):
            raise ValueError(
                f"factor_dtype={factor_dtype!r} is invalid: allowed values are None "
                "or a floating torch.dtype (e.g. torch.bfloat16)"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "damping": damping,
            "ema": ema,
            "T": T,
            "T_inv": T_inv,
            "rank": rank,
            "oversample": oversample,
            "power_iters": power_iters,
        }
        super().__init__(model, defaults, kfac_approx, loss_average)
        self.inverse = inverse
        self.factor_dtype = factor_dtype
        self.seed = seed
        self._warned_exact = False
        for layer in self.layers.values():
            dtype = layer.weight.dtype if factor_dtype is None else factor_dtype
            eye = {"device": layer.weight.device, "dtype": dtype}
            self.layer_state[layer.name] = {
                "S_K": torch.eye(layer.dim_in, **eye),
                "S_C": torch.eye(layer.dim_out, **eye),
            }

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One KFAC step (Fig. 3 left) for every layer, then the plain parameters.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None``.
        """
        loss = self._evaluate_closure(closure)
        if self._is_update_step():
            self._update_factors()  # S <- (1 - ema) S + ema * statistic
        if self.step_count % self.hyper["T_inv"] == 0:
            self._update_inverses()  # (S + lambda I)^-1, or its rank-r (V, d)
        self._update_all_params()  # preconditioned layers, then the plain parameters
        self.step_count += 1
        return loss

    # ----- statistics (called by the capture hooks) ---------------------------------
    def _input_stat(self, layer: KroneckerLayer, rows: LayerRows) -> Tensor:
        return rows.gram()  # U = A^T A, at least float32 (a conv input is not unfolded)

    def _grad_stat(self, layer: KroneckerLayer, rows: LayerRows) -> Tensor:
        return rows.gram()

    # ----- pieces of step() ---------------------------------------------------------
    def _update_factors(self) -> None:
        """Exponential moving average of the (all-reduced) statistics of this step."""
        stats = {name: self.capture.pop(name) for name in self.layers}
        stats = {name: pair for name, pair in stats.items() if pair is not None}
        self._all_reduce([tensor for pair in stats.values() for tensor in pair])
        ema = self.hyper["ema"]
        for name, (input_stat, grad_stat) in stats.items():
            state = self.layer_state[name]
            _ema_update(state["S_K"], input_stat, ema)
            _ema_update(state["S_C"], grad_stat, ema)

    def _update_inverses(self) -> None:
        """Recompute the inverse representation of both damped factors of every layer."""
        exact = []
        for index, layer in enumerate(self.layers.values()):
            state = self.layer_state[layer.name]
            generator = self._generator(index, layer.weight.device)
            for side, factor_key in SIDES.items():
                for prefix in _INVERSE_KEYS:
                    state.pop(prefix + side, None)
                factor = state[factor_key]
                inverse = self._invert(factor, generator)
                state.update({prefix + side: tensor for prefix, tensor in inverse.items()})
                if generator is not None and "inv_" in inverse:
                    exact.append(f"{layer.name}.{factor_key} ({factor.shape[0]})")
        if exact and not self._warned_exact:
            self._warned_exact = True
            warnings.warn(
                f"KFAC({self.inverse}): rank + oversample = "
                f"{self.hyper['rank'] + self.hyper['oversample']} >= factor dimension, "
                f"using exact eigh for {', '.join(exact)}",
                stacklevel=3,
            )

    def _invert(self, factor: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        """``{"inv_": (S + lambda I)^-1}`` or the rank-r pair ``{"V_": V, "d_": d}``."""
        group = self.hyper
        if not self._is_randomized(factor.shape[0]):
            return {
                "inv_": DENSE_INVERSES.get(self.inverse, eigh_inverse)(factor, group["damping"])
            }
        decompose = RANDOMIZED_INVERSES[self.inverse]
        vectors, values = decompose(
            factor, group["rank"], group["oversample"], group["power_iters"], generator
        )
        return {"V_": vectors, "d_": values}

    def _precondition(self, layer: KroneckerLayer, grad: Tensor) -> Tensor:
        """``(S_C + lambda I)^-1 grad (S_K + lambda I)^-1`` from the stored inverses."""
        state = self.layer_state[layer.name]
        damping = self.hyper["damping"]
        matrix = grad.to(state["S_K"].dtype)
        matrix = _apply_inverse(state, "K", matrix, damping, from_right=True)
        return _apply_inverse(state, "C", matrix, damping, from_right=False)

    def _is_randomized(self, dim: int) -> bool:
        return (
            self.inverse in RANDOMIZED_INVERSES
            and self.hyper["rank"] + self.hyper["oversample"] < dim
        )

    def _generator(self, layer_index: int, device: torch.device) -> torch.Generator | None:
        """Generator seeded from (seed, layer index, step): resumable, global RNG untouched."""
        if self.inverse not in RANDOMIZED_INVERSES:
            return None
        mixed = ((self.seed * 1_000_003 + layer_index) * 1_000_000_007 + self.step_count) % 2**63
        return torch.Generator(device=device).manual_seed(mixed)

    # ----- reporting ----------------------------------------------------------------
    def factor_spectra(self) -> dict[str, dict[str, Tensor]]:
        """Eigenvalues of the current EMA factors.

        Returns:
            ``{layer_name: {"A": eig(S_K), "G": eig(S_C)}}``, descending, float32, CPU.
        """
        spectra = {}
        for name, state in self.layer_state.items():
            spectra[name] = {
                label: _eigenvalues(state[key]) for label, key in (("A", "S_K"), ("G", "S_C"))
            }
        return spectra

    def _layer_description(self, layer: KroneckerLayer) -> str:
        method = self.inverse
        if self.inverse in RANDOMIZED_INVERSES:
            method += f", rank={self.hyper['rank']}"
            exact = [
                key
                for key, dim in (("S_K", layer.dim_in), ("S_C", layer.dim_out))
                if not self._is_randomized(dim)
            ]
            if exact:
                method += f", exact eigh for {'/'.join(exact)}"
        return (
            f"KFAC({method}): S_K {layer.dim_in}x{layer.dim_in}, "
            f"S_C {layer.dim_out}x{layer.dim_out}"
        )


def _ema_update(factor: Tensor, statistic: Tensor, ema: float) -> None:
    """In place ``factor <- (1 - ema) factor + ema statistic`` (exact at ``ema = 1``)."""
    if factor.dtype == statistic.dtype:
        factor.lerp_(statistic, ema)
    else:
        factor.copy_(factor.to(statistic.dtype).lerp_(statistic, ema))


def _apply_inverse(
    state: dict[str, Tensor], side: str, matrix: Tensor, damping: float, from_right: bool
) -> Tensor:
    """Multiply by ``(S + lambda I)^-1``: a dense inverse or eq. (13) from ``(V, d)``."""
    inverse = state.get("inv_" + side)
    if inverse is not None:
        return matmul(matrix, inverse) if from_right else matmul(inverse, matrix)
    return apply_low_rank_inverse(
        state["V_" + side], state["d_" + side], damping, matrix, from_right=from_right
    )


def _eigenvalues(factor: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(factor.to(compute_dtype(factor.dtype))).flip(0).float().cpu()


def rs_kfac(model: nn.Module, **kwargs: Any) -> KFAC:
    """RS-KFAC preset: ``KFAC(model, inverse="rsvd", **kwargs)``."""
    return KFAC(model, inverse="rsvd", **kwargs)


def sre_kfac(model: nn.Module, **kwargs: Any) -> KFAC:
    """SRE-KFAC preset: ``KFAC(model, inverse="srevd", **kwargs)``."""
    return KFAC(model, inverse="srevd", **kwargs)
