"""Two-layer graph convolutional network (Kipf & Welling, 2017) for node classification.

Each layer computes ``D^-1/2 (A + I) D^-1/2 X W + b`` (PyG's ``GCNConv``); the
network is dropout -> GCNConv -> ReLU -> dropout -> GCNConv, returning one row
of logits per node. The model is called as ``model(x, edge_index)``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from models.registry import register_model
from models.validation import FeatureInput, check_input_shape, resolve_options

_KIPF_WELLING = {"hidden_channels": 16, "dropout": 0.5}
GCN_PRESETS: dict[str, dict[str, Any]] = {"cora": _KIPF_WELLING, "cifar": _KIPF_WELLING}
"""``cora`` is Kipf & Welling's setting; ``cifar`` is accepted because it is the
registry's default preset (image-size presets do not apply to a GCN)."""


class GCN(nn.Module):
    """Two ``GCNConv`` layers with ReLU and dropout.

    Args:
        in_channels: Number of node features.
        hidden_channels: Width of the hidden layer.
        num_classes: Number of node classes.
        dropout: Dropout probability before each layer.
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.dropout = dropout
        self.conv1 = GCNConv(in_channels, hidden_channels)
        self.conv2 = GCNConv(hidden_channels, num_classes)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Return logits of shape ``(num_nodes, num_classes)``.

        Args:
            x: Node features, shape ``(num_nodes, in_channels)``.
            edge_index: Edges as a ``(2, num_edges)`` integer tensor.
        """
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)


@register_model("gcn")
def build_gcn(
    num_classes: int, input_shape: tuple[int, ...], preset: str = "cifar", **kwargs: Any
) -> nn.Module:
    """Kipf & Welling's two-layer GCN.

    Args:
        num_classes: Number of node classes.
        input_shape: ``(num_features,)``.
        preset: ``"cora"`` (or the registry default ``"cifar"``, same settings).
        **kwargs: ``hidden_channels`` (default 16), ``dropout`` (default 0.5).

    Returns:
        The model, called as ``model(x, edge_index)``.
    """
    options = resolve_options("gcn", preset, GCN_PRESETS, kwargs)
    (num_features,) = check_input_shape("gcn", input_shape, FeatureInput())
    if not 0.0 <= options["dropout"] < 1.0:
        raise ValueError(
            f"model.dropout={options['dropout']!r} is not allowed for model 'gcn'; "
            "allowed: 0 <= dropout < 1"
        )
    return GCN(num_features, options["hidden_channels"], num_classes, options["dropout"])
