"""Which layers get a Kronecker-factored preconditioner, and their matrix views.

A preconditioned layer computes ``y = W a (+ b)`` with one weight matrix shared over
batch and, possibly, sequence positions or convolution locations:

* ``torch.nn.Linear`` (inputs ``[B, ..., d_in]``),
* ``torch.nn.Conv2d`` with ``groups=1`` and zero padding (inputs unfolded, im2col),
* PyG's ``Linear`` (``torch_geometric.nn.dense.linear.Linear``, e.g. inside
  ``GCNConv``), detected by class name so that ``optim`` imports only torch.

The weight gradient is viewed as a ``d_out x d_in`` matrix, with the bias gradient
appended as a last column, matching the trailing constant 1 appended to the inputs.
Every other trainable parameter gets the plain momentum/weight-decay update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter


@dataclass
class KroneckerLayer:
    """A layer whose weight (and bias) share one Kronecker-factored preconditioner.

    Attributes:
        name: Module name inside the model (the key of all per-layer state).
        module: The module itself.
        kind: ``"linear"``, ``"conv2d"`` or ``"pyg_linear"``.
        weight: The weight parameter.
        bias: The bias parameter, or ``None`` (also when it is frozen).
    """

    name: str
    module: nn.Module
    kind: str
    weight: nn.Parameter
    bias: nn.Parameter | None

    @property
    def dim_in(self) -> int:
        """Input dimension ``d_i`` of the factor ``U`` (bias column included)."""
        return self.weight[0].numel() + (1 if self.bias is not None else 0)

    @property
    def dim_out(self) -> int:
        """Output dimension ``d_o`` of the factor ``G``."""
        return self.weight.shape[0]

    @property
    def params(self) -> list[nn.Parameter]:
        """The parameters this preconditioner acts on."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def grad_matrix(self) -> Tensor | None:
        """Return the gradient as a ``d_out x d_in`` matrix (bias as last column).

        Returns:
            The matrix, or ``None`` when the weight has no gradient this step.
        """
        if self.weight.grad is None:
            return None
        grad = self.weight.grad.reshape(self.dim_out, -1)
        if self.bias is not None:
            bias_grad = self.bias.grad
            if bias_grad is None:
                bias_grad = torch.zeros_like(self.bias)
            grad = torch.cat([grad, bias_grad.reshape(-1, 1)], dim=1)
        return grad

    def split(self, matrix: Tensor) -> list[Tensor]:
        """Split a ``d_out x d_in`` matrix into tensors shaped like ``params``."""
        if self.bias is None:
            return [matrix.reshape_as(self.weight)]
        return [matrix[:, :-1].reshape_as(self.weight), matrix[:, -1].reshape_as(self.bias)]


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` gets no Kronecker preconditioner (``None`` if it does).

    Args:
        module: Any module that owns parameters directly.

    Returns:
        A short reason, or ``None`` for a supported layer.
    """
    if isinstance(module, nn.Linear) or _is_pyg_linear(module):
        return None
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"Conv2d with groups={module.groups} (depthwise/grouped)"
        if module.padding_mode != "zeros":
            return f"Conv2d with padding_mode={module.padding_mode!r}"
        if isinstance(module.padding, str) and module.padding != "valid":
            if any((d * (k - 1)) % 2 for d, k in zip(module.dilation, module.kernel_size)):
                return "Conv2d with asymmetric 'same' padding"
        return None
    return f"{type(module).__name__} is not a Linear/Conv2d layer"


def _is_pyg_linear(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ == "Linear" and cls.__module__.startswith("torch_geometric")


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.Linear):
        return "linear"
    return "pyg_linear"


def find_layers(model: nn.Module) -> dict[str, KroneckerLayer]:
    """Find the supported layers of ``model`` with a trainable weight.

    Args:
        model: The network (unwrapped from DDP/DataParallel).

    Returns:
        Module name -> layer, in module order.
    """
    layers: dict[str, KroneckerLayer] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or isinstance(weight, UninitializedParameter):
            continue
        if not weight.requires_grad or unsupported_reason(module) is not None:
            continue
        bias = getattr(module, "bias", None)
        if not isinstance(bias, nn.Parameter) or not bias.requires_grad:
            bias = None
        layers[name] = KroneckerLayer(name, module, _kind(module), weight, bias)
    return layers


def conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    """Integer padding of a zero-padded convolution (resolves ``'valid'``/``'same'``)."""
    if module.padding == "valid":
        return (0, 0)
    if module.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return tuple(module.padding)
