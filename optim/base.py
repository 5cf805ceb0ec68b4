"""Machinery shared by the Kronecker-factored optimizers (``KFAC``, ``SINGD``).

:class:`KroneckerOptimizer` finds the preconditioned layers, installs the curvature
capture, applies the momentum/weight-decay step (Fig. 3-4 of the SINGD paper,
lines 2-3: ``m <- momentum * m + direction + weight_decay * w``,
``w <- w - lr * m``) to preconditioned and plain parameters alike, lists which
parameter got what (:meth:`describe`), all-reduces statistics under
``torch.distributed`` and saves every buffer as plain tensors in ``state_dict``.
Subclasses implement the statistics and the preconditioner and keep their
``step`` readable top to bottom.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from optim.capture import KFAC_APPROXIMATIONS, LOSS_AVERAGES, CurvatureCapture, LayerRows
from optim.layers import KroneckerLayer, find_layers, unsupported_reason


def check_number(
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` lies in the interval.

    Args:
        name: Argument name used in the message.
        value: The value to check.
        low: Lower bound.
        high: Upper bound (``None``: unbounded).
        low_open: Exclude ``low``.
        high_open: Exclude ``high``.
        integer: Require an ``int``.
    """
    left = "(" if low_open else "["
    right = ")" if high_open or high is None else "]"
    allowed = f"{left}{low}, {'inf' if high is None else high}{right}"
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not is_number:
        raise ValueError(f"{name}={value!r} is invalid: must be {kind} in {allowed}")
    ok = (value > low if low_open else value >= low) and (
        high is None or (value < high if high_open else value <= high)
    )
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: must be in {allowed}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed values are {list(allowed)}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside ``DistributedDataParallel``/``DataParallel`` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def distributed_world_size() -> int:
    """Number of processes in the default group (1 without ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class KroneckerOptimizer(Optimizer):
    """Base class: layer discovery, capture, parameter update, state handling.

    Args:
        model: The network; its supported layers are preconditioned, every other
            trainable parameter gets the plain update.
        defaults: Hyperparameters of the single parameter group (must contain
            ``lr``, ``momentum``, ``weight_decay`` and ``T``).
        kfac_approx: ``"expand"`` or ``"reduce"`` for weight-shared layers.
        loss_average: ``"batch"``, ``"batch+sequence"`` or ``None``.
    """

    def __init__(
        self, model: nn.Module, defaults: dict[str, Any], kfac_approx: str, loss_average: str | None
    ) -> None:
        check_number("lr", defaults["lr"], 0.0)
        check_number("momentum", defaults["momentum"], 0.0, 1.0, high_open=True)
        check_number("weight_decay", defaults["weight_decay"], 0.0)
        check_number("T", defaults["T"], 1, integer=True)
        check_choice("kfac_approx", kfac_approx, KFAC_APPROXIMATIONS)
        check_choice("loss_average", loss_average, LOSS_AVERAGES)
        net = unwrap_model(model)
        self.layers: dict[str, KroneckerLayer] = find_layers(net)
        self._param_names = {id(p): n for n, p in net.named_parameters()}
        params = list({id(p): p for p in net.parameters() if p.requires_grad}.values())
        if not params:
            raise ValueError("model has no trainable parameters")
        super().__init__(
            params, {**defaults, "kfac_approx": kfac_approx, "loss_average": loss_average}
        )
        preconditioned = {id(p) for layer in self.layers.values() for p in layer.params}
        self.plain_params = [p for p in params if id(p) not in preconditioned]
        self._plain_reasons = self._explain_plain(net, preconditioned)
        self.step_count = 0
        self.layer_state: dict[str, dict[str, Any]] = {}
        self.capture = CurvatureCapture(
            self.layers,
            kfac_approx,
            loss_average,
            self._input_stat,
            self._grad_stat,
            self._is_update_step,
        )

    # ----- hooks for subclasses ---------------------------------------------------------
    def _input_stat(self, layer: KroneckerLayer, rows: LayerRows) -> Any:
        """Statistic kept from the rows of ``A`` on an update step."""
        raise NotImplementedError

    def _grad_stat(self, layer: KroneckerLayer, rows: LayerRows) -> Any:
        """Statistic kept from the rows of ``B`` on an update step."""
        raise NotImplementedError

    def _layer_state_tensors(self, name: str) -> dict[str, Tensor]:
        """Plain tensors that fully describe layer ``name``'s preconditioner."""
        return dict(self.layer_state.get(name, {}))

    def _load_layer_state_tensors(self, name: str, tensors: dict[str, Tensor]) -> None:
        self.layer_state[name] = dict(tensors)

    def _layer_description(self, layer: KroneckerLayer) -> str:
        return type(self).__name__

    # ----- shared pieces of step() ------------------------------------------------------
    @property
    def hyper(self) -> dict[str, Any]:
        """The (single) parameter group: current hyperparameters, as schedulers set them."""
        return self.param_groups[0]

    def _is_update_step(self) -> bool:
        return self.step_count % self.hyper["T"] == 0

    def _apply_update(self, param: nn.Parameter, direction: Tensor) -> None:
        """``m <- momentum m + direction + weight_decay w``; ``w <- w - lr m``."""
        group = self.hyper
        direction = direction.to(param.dtype)
        weight_decay = group["weight_decay"]
        if group["momentum"] != 0.0:
            state = self.state[param]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = direction.clone()
            else:
                buffer.mul_(group["momentum"]).add_(direction)
            if weight_decay != 0.0:
                buffer.add_(param, alpha=weight_decay)
            direction = buffer
        elif weight_decay != 0.0:
            direction = direction.add(param, alpha=weight_decay)
        param.add_(direction, alpha=-group["lr"])

    def _update_layer(self, layer: KroneckerLayer, direction: Tensor) -> None:
        """Apply the update with a ``d_out x d_in`` preconditioned direction."""
        for param, part in zip(layer.params, layer.split(direction)):
            self._apply_update(param, part)

    @staticmethod
    def _evaluate_closure(closure: Any) -> Any:
        """Run ``closure`` (forward and backward) with gradients enabled, if given."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _precondition(self, layer: KroneckerLayer, grad: Tensor) -> Tensor:
        """The preconditioned ``d_out x d_in`` direction of one layer (subclasses)."""
        raise NotImplementedError

    def _update_all_params(self) -> None:
        """Precondition and update every layer with a gradient, then the plain parameters."""
        for layer in self.layers.values():
            grad = layer.grad_matrix()
            if grad is not None:
                self._update_layer(layer, self._precondition(layer, grad))
        self._update_plain_params()

    def _update_plain_params(self) -> None:
        """The same update, unpreconditioned, for every other parameter."""
        for param in self.plain_params:
            if param.grad is not None:
                self._apply_update(param, param.grad)

    def _all_reduce(self, tensors: list[Tensor]) -> None:
        """Average (or sum, for a summed loss) statistics over data-parallel ranks."""
        world = distributed_world_size()
        if world == 1 or not tensors:
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for tensor in tensors:  # one flat all-reduce per dtype (bf16 sums in float32)
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for dtype, group in by_dtype.items():
            wire = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
            flat = torch.cat([t.reshape(-1).to(wire) for t in group])
            dist.all_reduce(flat)
            if self.hyper["loss_average"] is not None:
                flat /= world
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    # ----- reporting --------------------------------------------------------------------
    def _explain_plain(self, net: nn.Module, preconditioned: set[int]) -> dict[int, str]:
        reasons: dict[int, str] = {}
        for module in net.modules():
            for param in module.parameters(recurse=False):
                if id(param) in preconditioned or not param.requires_grad:
                    continue
                why = unsupported_reason(module)
                if why is None:
                    why = f"{type(module).__name__} parameter outside weight/bias"
                reasons.setdefault(id(param), why)
        return reasons

    def describe(self) -> list[dict[str, Any]]:
        """Which parameter is updated how.

        Returns:
            One dict per trainable parameter: ``name``, ``shape``, ``numel``,
            ``preconditioned`` (bool), ``how`` (preconditioner or the reason for the
            plain momentum/weight-decay update).
        """
        rows = []
        for layer in self.layers.values():
            for param in layer.params:
                rows.append(self._describe_row(param, True, self._layer_description(layer)))
        for param in self.plain_params:
            how = "plain momentum/weight-decay update: " + self._plain_reasons.get(id(param), "")
            rows.append(self._describe_row(param, False, how))
        return rows

    def _describe_row(self, param: nn.Parameter, preconditioned: bool, how: str) -> dict[str, Any]:
        return {
            "name": self._param_names.get(id(param), "?"),
            "shape": tuple(param.shape),
            "numel": param.numel(),
            "preconditioned": preconditioned,
            "how": how,
        }

    def preconditioned_fraction(self) -> float:
        """Fraction of trainable parameter entries that are preconditioned."""
        rows = self.describe()
        return sum(r["numel"] for r in rows if r["preconditioned"]) / sum(r["numel"] for r in rows)

    # ----- checkpointing ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Standard optimizer state plus every preconditioner buffer, as plain tensors."""
        state = super().state_dict()
        state["step_count"] = self.step_count
        state["layers"] = {name: self._layer_state_tensors(name) for name in self.layer_state}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (also after ``weights_only`` loading)."""
        state_dict = dict(state_dict)
        step_count = state_dict.pop("step_count", 0)
        layers = state_dict.pop("layers", {})
        super().load_state_dict(state_dict)
        unknown = set(layers) - set(self.layers)
        if unknown:
            raise ValueError(f"state_dict has preconditioners for unknown layers {sorted(unknown)}")
        self.step_count = int(step_count)
        self.layer_state = {}
        for name, tensors in layers.items():
            device = self.layers[name].weight.device
            self._load_layer_state_tensors(name, {k: v.to(device) for k, v in tensors.items()})
        self.capture.clear()

    def state_tensors(self) -> Iterator[Tensor]:
        """Every tensor the optimizer keeps (momentum buffers and preconditioners)."""
        for state in self.state.values():
            yield from (v for v in state.values() if isinstance(v, Tensor))
        for name in self.layer_state:
            yield from self._layer_state_tensors(name).values()

    def state_bytes(self) -> int:
        """Exact bytes of :meth:`state_tensors`."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors())
