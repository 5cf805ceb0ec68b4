"""SENG: sketchy empirical natural gradient (Yang, Xu, Wen, Chen, Xu, 2021; arXiv 2006.05924).

Per preconditioned layer with a ``d_out x d_in`` gradient matrix ``g`` (bias as last
column), the empirical Fisher of a batch of ``m`` samples is low rank::

    F = (1/m) sum_i grad psi_i grad psi_i^T = U^T U,   U = [u_1; ...; u_m] (m x D),

with ``u_i = grad psi_i / sqrt(m)`` the scaled gradient of sample ``i``'s own loss
(``D = d_out * d_in``). Sherman-Morrison-Woodbury turns the damped solve into an
``m x m`` one::

    (F + lambda I)^-1 g = (g - U^T (lambda I + U U^T)^-1 U g) / lambda.

For Linear/Conv2d layers ``u_i = G_i A_i^T`` with ``G_i`` (``d_out x L``) the output
gradients and ``A_i`` (``d_in x L``) the (unfolded) inputs of sample ``i`` at its ``L``
positions, so ``U U^T`` and ``U g`` need no per-sample gradient where that is cheaper.
As in the paper and its reference code (``yangorwell/SENG``), a layer takes one of
two routes, fixed by its size:

* explicit (``D <= explicit_max_numel``): ``U`` is formed (``m x D``). With
  ``D > s^2`` (``s = col_sample_size``), ``U U^T`` and ``U g`` use ``s^2`` sampled
  entries of the parameter vector (the sketched regularized least-squares subproblem).
* factored (larger layers): ``G_i`` is replaced by its best rank-``p`` approximation
  (truncated SVD, ``p = svd_rank``; ``u_i ~= (G_i V_i)(A_i V_i)^T``) and, where larger
  than ``s``, ``s`` sampled rows of ``G_i`` and of ``A_i`` give
  ``(U U^T)_ij = sum_ab (G_i^T G_j)_ab (A_i^T A_j)_ab`` and ``(U g)_i =
  tr(G_i^T g A_i)`` (the inner-product trick on sketched factors).

In both routes ``U^T y`` (the step back to parameter space) is exact in the stored
``U`` / factors. Sampling is uniform without replacement; each sampled side is
rescaled by ``(size / sample) ** e``: ``e = 1/2`` (``sketch_scaling="unbiased"``)
makes the sketched ``U U^T`` and ``U g`` unbiased; ``e = 1`` (``"reference"``)
reproduces the reference code, whose estimates are larger by ``r = D / sampled``
(about ``(lambda I + r F)^-1`` on the sketched layers).

Curvature update (every ``update_freq`` steps, the first included; this step's
batch): per-sample factors, sample indices, ``K = sketched U U^T`` and
``(lambda I + K)^-1``. Reused on every step until the next update (as in the
reference code): the stored ``U`` (explicit) or rank-``p`` factors ``G_i V_i``,
``A_i V_i`` (factored), the sample indices, ``K`` and the ``m x m`` inverse; only
the current gradient ``g`` is new, so each step costs the sketched ``U g``, one
``m x m`` product and the exact ``U^T y``. A damping change (e.g. a schedule) only
re-inverts the stored ``K``. Before the first update (no statistics) the direction
is ``g / lambda``. Memory: on update steps every layer's (unfolded) inputs are held
from its forward pass until ``step``; between updates the state holds ``U`` (``m x D``)
or the factors (``m p (d_out + d_in)``) plus two ``m x m`` matrices per layer.

Deviations from ``yangorwell/SENG`` (documented): ``U^T y`` on factored layers is
exact (the reference code uses a rank-``p`` heuristic ``(sum_i sqrt|y_i| G_i)
(sum_i y_i A_i / sum_k sqrt|y_k|)^T``); BatchNorm parameters get the plain update
(the reference code also preconditions them); ``kfac_approx="reduce"`` approximates
``u_i`` by ``(sum_l g_il)(mean_l a_il)^T`` (rank one), ``"expand"`` is exact.
Under ``torch.distributed`` the per-sample factors are all-gathered (equal local
batch sizes required), so every rank holds the same preconditioner.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from optim.base import KroneckerOptimizer, check_choice, check_number, distributed_world_size
from optim.capture import LayerRows
from optim.layers import KroneckerLayer, conv_padding

SKETCH_SCALINGS = {"unbiased": 0.5, "reference": 1.0}
"""``sketch_scaling`` -> exponent ``e`` of the rescaling ``(size / sample) ** e``."""


# ----- the sketch and solve, as functions of stored tensors ------------------------------
def sample_indices(size: int, count: int | None, generator: torch.Generator) -> Tensor | None:
    """Sorted uniform sample of ``count`` of ``range(size)`` without replacement.

    Args:
        size: Number of candidates.
        count: Sample size (``None``: no sampling).
        generator: Private generator (its device is used).

    Returns:
        The indices, or ``None`` when ``count`` is ``None`` or ``>= size``.
    """
    if count is None or count >= size:
        return None
    perm = torch.randperm(size, generator=generator, device=generator.device)
    return perm[:count].sort().values


def sketch(matrix: Tensor, dim: int, index: Tensor | None, exponent: float) -> Tensor:
    """Rows/columns ``index`` along ``dim``, rescaled by ``(size / len(index)) ** exponent``."""
    if index is None:
        return matrix
    scale = (matrix.shape[dim] / index.numel()) ** exponent
    return matrix.index_select(dim, index.to(matrix.device)) * scale


def explicit_gram(u: Tensor, cols: Tensor | None, exponent: float) -> Tensor:
    """Sketched ``U U^T`` (``m x m``) from explicit per-sample gradients ``U`` (``m x D``)."""
    u_sketch = sketch(u, 1, cols, exponent)
    return u_sketch @ u_sketch.T


def explicit_project(u: Tensor, cols: Tensor | None, exponent: float, grad: Tensor) -> Tensor:
    """Sketched ``U g`` (``m``) for a ``d_out x d_in`` gradient ``g``."""
    return sketch(u, 1, cols, exponent) @ sketch(grad.reshape(-1), 0, cols, exponent)


def factored_gram(
    g_fac: Tensor, a_fac: Tensor, rows_out: Tensor | None, rows_in: Tensor | None, exponent: float
) -> Tensor:
    """Sketched ``U U^T`` with ``u_i = G_i A_i^T`` by the inner-product trick.

    Args:
        g_fac: ``G``, ``m x d_out x p``.
        a_fac: ``A``, ``m x d_in x p``.
        rows_out: Sampled rows of every ``G_i`` (``None``: all).
        rows_in: Sampled rows of every ``A_i`` (``None``: all).
        exponent: Rescaling exponent ``e``.

    Returns:
        ``K`` with ``K_ij = sum_ab (G_i^T G_j)_ab (A_i^T A_j)_ab`` on the sketched rows.
    """
    m, _, p = g_fac.shape
    g_rows = sketch(g_fac, 1, rows_out, exponent).transpose(1, 2).reshape(m * p, -1)
    a_rows = sketch(a_fac, 1, rows_in, exponent).transpose(1, 2).reshape(m * p, -1)
    products = (g_rows @ g_rows.T) * (a_rows @ a_rows.T)  # (m p) x (m p)
    return products.view(m, p, m, p).sum(dim=(1, 3))


def factored_project(
    g_fac: Tensor,
    a_fac: Tensor,
    rows_out: Tensor | None,
    rows_in: Tensor | None,
    exponent: float,
    grad: Tensor,
) -> Tensor:
    """Sketched ``(U g)_i = tr(G_i^T g A_i)`` (``m``) on the sampled rows and columns."""
    g_sketch = sketch(g_fac, 1, rows_out, exponent)
    a_sketch = sketch(a_fac, 1, rows_in, exponent)
    grad_sketch = sketch(sketch(grad, 0, rows_out, exponent), 1, rows_in, exponent)
    left = g_sketch.transpose(1, 2) @ grad_sketch  # m x p x d_in'
    return (left * a_sketch.transpose(1, 2)).sum(dim=(1, 2))


def factored_expand(g_fac: Tensor, a_fac: Tensor, coefficients: Tensor) -> Tensor:
    """Exact ``U^T y = sum_i y_i G_i A_i^T`` (``d_out x d_in``)."""
    m, d_out, p = g_fac.shape
    weighted = (g_fac * coefficients.view(m, 1, 1)).permute(1, 0, 2).reshape(d_out, m * p)
    return weighted @ a_fac.transpose(1, 2).reshape(m * p, -1)


def truncate_rank(g_fac: Tensor, a_fac: Tensor, rank: int | None) -> tuple[Tensor, Tensor]:
    """Replace every ``G_i`` by its best rank-``rank`` approximation ``P_i S_i V_i^T``.

    Returns ``(P_i S_i, A_i V_i)`` so that ``u_i ~= (P_i S_i)(A_i V_i)^T``; unchanged when
    ``rank`` is ``None`` or not below the number of positions ``L``.
    """
    if rank is None or g_fac.shape[2] <= rank:
        return g_fac, a_fac
    left, values, right_t = torch.linalg.svd(g_fac, full_matrices=False)
    g_low = left[:, :, :rank] * values[:, None, :rank]
    return g_low, a_fac @ right_t[:, :rank, :].transpose(1, 2)


def damped_inverse(gram: Tensor, damping: float) -> Tensor:
    """``(lambda I + K)^-1`` via Cholesky in float64, returned in ``gram``'s dtype."""
    matrix = gram.to(torch.float64, copy=True)
    matrix.diagonal().add_(damping)
    return torch.cholesky_inverse(torch.linalg.cholesky(matrix)).to(gram.dtype)


# ----- per-pass rows kept by the capture --------------------------------------------------
class _Chunks:
    """Per-pass row blocks of one side, combinable by the capture's running mean/sum.

    The capture combines passes as ``old * w_old + new * w_new`` (batch-size weights) or
    ``old + new``; here ``*`` records the weight and ``+`` concatenates, so that the
    samples of all passes end up side by side.
    """

    def __init__(self, blocks: list[tuple[Tensor, float]]) -> None:
        self.blocks = blocks

    def __mul__(self, weight: float) -> _Chunks:
        return _Chunks([(block, w * weight) for block, w in self.blocks])

    __rmul__ = __mul__

    def __add__(self, other: _Chunks) -> _Chunks:
        return _Chunks(self.blocks + other.blocks)


class SENG(KroneckerOptimizer):
    """Sketchy empirical natural gradient (SENG) with the shared momentum/weight decay.

    Every step: ``direction = (F + lambda I)^-1 g`` per layer from the stored sketch
    (module docstring), then ``m <- momentum m + direction + weight_decay w``,
    ``w <- w - lr m`` (the reference code's SGD after preconditioning). Other trainable
    parameters get the same update with ``direction = g``.

    Args:
        model: The network (Linear, Conv2d and PyG Linear layers are preconditioned).
        lr: Learning rate ``alpha`` (step size).
        momentum: Momentum of the update direction.
        weight_decay: Coupled weight decay (added to the preconditioned direction).
        damping: Damping ``lambda > 0`` of ``F + lambda I``.
        update_freq: Curvature update period (``curvature_update_freq``); the stored
            sketch is reused in between.
        col_sample_size: Sketch size ``s``: explicit layers sample ``s^2`` parameter
            entries, factored layers ``s`` rows of each factor (``fim_col_sample_size``);
            ``None`` disables sketching.
        svd_rank: Rank ``p`` of the per-sample output-gradient factor on factored
            layers (16 in the reference code); ``None`` keeps all ``L`` positions.
        explicit_max_numel: Layers with ``d_out * d_in`` up to this form ``U``
            explicitly (``im_size_threshold``; 700000 in the reference CIFAR script).
        sketch_scaling: ``"unbiased"`` (sampled sides rescaled by ``sqrt(size/sample)``)
            or ``"reference"`` (by ``size/sample``, as the reference code).
        kfac_approx: ``"expand"`` (exact per-sample gradients over positions) or
            ``"reduce"`` (rank-one approximation per sample).
        loss_average: ``"batch"``, ``"batch+sequence"`` (per-sample loss = its
            positions' mean) or ``None`` (summed loss: ``F = sum_i grad psi_i grad psi_i^T``).
        seed: Seed of the private sketching generators (seeded by seed, layer, step).
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-2,
        damping: float = 2.0,
        update_freq: int = 200,
        col_sample_size: int | None = 128,
        svd_rank: int | None = 16,
        explicit_max_numel: int = 700_000,
        sketch_scaling: str = "unbiased",
        kfac_approx: str = "expand",
        loss_average: str | None = "batch",
        seed: int = 0,
    ) -> None:
        check_number("damping", damping, 0.0, low_open=True)
        check_number("update_freq", update_freq, 1, integer=True)
        if col_sample_size is not None:
            check_number("col_sample_size", col_sample_size, 1, integer=True)
        if svd_rank is not None:
            check_number("svd_rank", svd_rank, 1, integer=True)
        check_number("explicit_max_numel", explicit_max_numel, 0, integer=True)
        check_choice("sketch_scaling", sketch_scaling, list(SKETCH_SCALINGS))
        check_number("seed", seed, 0, integer=True)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "damping": damping,
            "T": update_freq,
        }
        super().__init__(model, defaults, kfac_approx, loss_average)
        self.col_sample_size = col_sample_size
        self.svd_rank = svd_rank
        self.explicit_max_numel = explicit_max_numel
        self.sketch_scaling = sketch_scaling
        self.seed = seed
        self._exponent = SKETCH_SCALINGS[sketch_scaling]
        self._layer_index = {name: index for index, name in enumerate(self.layers)}
        self._shapes: dict[str, tuple[int, int]] = {}
        self._shape_handles = [
            layer.module.register_forward_pre_hook(self._shape_hook(layer))
            for layer in self.layers.values()
        ]

    # ----- the step -------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Update the sketches (on update steps), then precondition and update.

        Args:
            closure: Optional callable that recomputes the loss (forward and backward).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = self._evaluate_closure(closure)
        if self._is_update_step():
            for name, (g_fac, a_fac) in self._pop_samples().items():
                self._update_curvature(self.layers[name], g_fac, a_fac)
        self._update_all_params()  # preconditioned layers, then the plain parameters
        self.step_count += 1
        return loss

    def _pop_samples(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per-sample factors ``G`` (``m x d_out x L``), ``A`` (``m x d_in x L``) per layer."""
        samples = {}
        for name in self.layers:
            pair = self.capture.pop(name)
            if pair is None:
                continue
            inputs, grads = pair
            g_blocks, a_blocks = [], []
            for (a_rows, _), (b_rows, weight) in zip(inputs.blocks, grads.blocks, strict=True):
                # Each pass's u_i carry 1/sqrt(m_pass); sqrt(m_pass / m_total) rescales them.
                g_blocks.append(b_rows.reshape(*a_rows.shape[:2], -1) * math.sqrt(weight))
                a_blocks.append(a_rows)
            g_fac = torch.cat(g_blocks).transpose(1, 2)
            a_fac = torch.cat(a_blocks).transpose(1, 2)
            samples[name] = self._gather(g_fac, a_fac)
        return samples

    def _update_curvature(self, layer: KroneckerLayer, g_fac: Tensor, a_fac: Tensor) -> None:
        """New sketch of ``U`` and ``(lambda I + K)^-1`` from this step's samples."""
        generator = self._generator(self._layer_index[layer.name], g_fac.device)
        count, exponent = self.col_sample_size, self._exponent
        if self._is_explicit(layer):
            u = torch.bmm(g_fac, a_fac.transpose(1, 2)).reshape(g_fac.shape[0], -1)
            cols = sample_indices(u.shape[1], None if count is None else count**2, generator)
            state = {"U": u, "gram": explicit_gram(u, cols, exponent)}
            if cols is not None:
                state["cols"] = cols
        else:
            g_fac, a_fac = truncate_rank(g_fac, a_fac, self.svd_rank)
            rows_out = sample_indices(g_fac.shape[1], count, generator)
            rows_in = sample_indices(a_fac.shape[1], count, generator)
            state = {
                "G": g_fac.contiguous(),
                "A": a_fac.contiguous(),
                "gram": factored_gram(g_fac, a_fac, rows_out, rows_in, exponent),
            }
            if rows_out is not None:
                state["rows_out"] = rows_out
            if rows_in is not None:
                state["rows_in"] = rows_in
        damping = self.hyper["damping"]
        state["damping"] = torch.tensor(float(damping), dtype=torch.float64)
        state["inverse"] = damped_inverse(state["gram"], damping)
        self.layer_state[layer.name] = state

    def _precondition(self, layer: KroneckerLayer, grad: Tensor) -> Tensor:
        """``(g - U^T (lambda I + K)^-1 (sketched U g)) / lambda`` with the stored sketch."""
        damping = self.hyper["damping"]
        state = self.layer_state.get(layer.name)
        if state is None:
            return grad / damping
        if float(state["damping"]) != float(damping):
            state["damping"] = torch.tensor(float(damping), dtype=torch.float64)
            state["inverse"] = damped_inverse(state["gram"], damping)
        grad = grad.to(state["gram"].dtype)
        exponent = self._exponent
        if "U" in state:
            u = state["U"]
            coefficients = state["inverse"] @ explicit_project(u, state.get("cols"), exponent, grad)
            correction = (u.T @ coefficients).view_as(grad)
        else:
            g_fac, a_fac = state["G"], state["A"]
            projected = factored_project(
                g_fac, a_fac, state.get("rows_out"), state.get("rows_in"), exponent, grad
            )
            correction = factored_expand(g_fac, a_fac, state["inverse"] @ projected)
        return (grad - correction) / damping

    # ----- statistics (called by the capture hooks) -----------------------------------
    def _shape_hook(self, layer: KroneckerLayer) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            if torch.is_grad_enabled() and self._is_update_step():
                self._shapes[layer.name] = (inputs[0].shape[0], _positions(layer, inputs[0]))

        return hook

    def _input_stat(self, layer: KroneckerLayer, rows: LayerRows) -> _Chunks:
        """Unscaled inputs per sample, ``m x rows/m x d_in`` (``1/sqrt(L)`` for batch+sequence)."""
        a = rows.matrix()
        batch_size, positions = self._shapes[layer.name]
        scale = math.sqrt(a.shape[0])  # undo the capture's 1/sqrt(rows)
        if self.hyper["loss_average"] == "batch+sequence":
            scale /= math.sqrt(positions)  # psi_i = mean of sample i's position losses
        with torch.autocast(a.device.type, enabled=False):
            rows = a.to(self._dtype(layer)).reshape(batch_size, -1, a.shape[1]) * scale
        return _Chunks([(rows, 1.0)])

    def _grad_stat(self, layer: KroneckerLayer, rows: LayerRows) -> _Chunks:
        """Output gradients ``B`` (already ``sqrt(m)`` times the mean loss's)."""
        return _Chunks([(rows.matrix().to(self._dtype(layer)), 1.0)])

    def _load_layer_state_tensors(self, name: str, tensors: dict[str, Tensor]) -> None:
        # The damping stays on the CPU: comparing it every step needs no device sync.
        self.layer_state[name] = {**tensors, "damping": tensors["damping"].cpu()}

    # ----- helpers --------------------------------------------------------------------
    def _dtype(self, layer: KroneckerLayer) -> torch.dtype:
        return torch.promote_types(layer.weight.dtype, torch.float32)

    def _is_explicit(self, layer: KroneckerLayer) -> bool:
        return layer.dim_out * layer.dim_in <= self.explicit_max_numel

    def _generator(self, layer_index: int, device: torch.device) -> torch.Generator:
        """Private generator from (seed, layer index, step): resumable, global RNG untouched."""
        mixed = ((self.seed * 1_000_003 + layer_index) * 1_000_000_007 + self.step_count) % 2**63
        return torch.Generator(device=device).manual_seed(mixed)

    def _gather(self, g_fac: Tensor, a_fac: Tensor) -> tuple[Tensor, Tensor]:
        """All-gather the samples of every data-parallel rank (same preconditioner everywhere)."""
        world = distributed_world_size()
        if world == 1:
            return g_fac, a_fac
        sizes = [torch.zeros(1, dtype=torch.long, device=g_fac.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([g_fac.shape[0]], device=g_fac.device))
        if len({int(size) for size in sizes}) != 1:
            raise RuntimeError(
                f"SENG needs equal per-rank batch sizes on update steps, got "
                f"{[int(size) for size in sizes]}"
            )
        gathered = []
        for factor in (g_fac.contiguous(), a_fac.contiguous()):
            parts = [torch.empty_like(factor) for _ in range(world)]
            dist.all_gather(parts, factor)
            gathered.append(torch.cat(parts))
        if self.hyper["loss_average"] is not None:  # u_i = grad psi_i / sqrt(m_total)
            gathered[0] /= math.sqrt(world)
        return gathered[0], gathered[1]

    def _layer_description(self, layer: KroneckerLayer) -> str:
        count, numel = self.col_sample_size, layer.dim_out * layer.dim_in
        if self._is_explicit(layer):
            if count is None or count**2 >= numel:
                return f"SENG(explicit U, {numel} entries, no sketch)"
            return f"SENG(explicit U, sketch {count**2}/{numel} entries, {self.sketch_scaling})"
        rows_out = layer.dim_out if count is None else min(count, layer.dim_out)
        rows_in = layer.dim_in if count is None else min(count, layer.dim_in)
        return (
            f"SENG(factored, rank<={self.svd_rank}, sketch rows {rows_out}/{layer.dim_out} "
            f"x {rows_in}/{layer.dim_in}, {self.sketch_scaling})"
        )


def _positions(layer: KroneckerLayer, x: Tensor) -> int:
    """Positions ``L`` per sample sharing the weight (sequence length, conv locations)."""
    if layer.kind != "conv2d":
        return x.numel() // (x.shape[0] * x.shape[-1]) if x.dim() > 2 else 1
    conv = layer.module
    padding = conv_padding(conv)
    sizes = [
        (x.shape[2 + i] + 2 * padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1)
        // conv.stride[i]
        + 1
        for i in range(2)
    ]
    return sizes[0] * sizes[1]
