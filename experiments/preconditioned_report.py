"""Which share of each model's parameters KFAC and SINGD precondition.

    python -m experiments.preconditioned_report [--out results/preconditioned.md]

Both optimizers precondition ``nn.Linear``, ``groups=1`` ``nn.Conv2d`` and PyG's
``Linear`` (inside ``GCNConv``); every other trainable parameter gets the plain
momentum/weight-decay update. For every model at the ``cifar`` (100 classes,
3 x 32 x 32) and ``imagewoof`` (10 classes, 3 x 64 x 64) presets, and the GCN on
Cora's shape (1433 features, 7 classes), this script builds KFAC and
SINGD (diagonal factors), reads their ``describe()`` and prints a Markdown table
of the preconditioned fraction and of the parameter kinds left to the plain
update, which it also writes to ``--out``.

Models are moved to the meta device before the optimizers are built: layer
discovery needs only shapes, and KFAC's dense identity factors (4609 x 4609 for
a VGG conv) are then never allocated.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from models import build_model

MODEL_NAMES = ("vgg", "vgg16_bn", "convmixer", "repvit", "swin", "gcvit", "cct", "hdvt", "gcn")
IMAGE_PRESETS: dict[str, tuple[int, tuple[int, ...]]] = {
    "cifar": (100, (3, 32, 32)),
    "imagewoof": (10, (3, 64, 64)),
}
"""Preset -> (number of classes, input shape) of the image models."""
GRAPH_SETTING = ("cora", 7, (1433,))
"""(preset, number of classes, input shape) of the GCN: Cora's node features."""
OPTIMIZER_NAMES = ("KFAC", "SINGD")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "preconditioned.md"

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
PARAMETER_LABELS = {
    "pos_embed": "position embedding",
    "relative_position_bias_table": "relative position bias",
    "cls_token": "class token",
    "head_embed": "head embedding",
}
"""Readable labels of parameters that belong to no layer type (by attribute name)."""


@dataclass(frozen=True)
class Setting:
    """One model at one preset."""

    model: str
    preset: str
    num_classes: int
    input_shape: tuple[int, ...]


@dataclass
class ReportRow:
    """The measurements of one :class:`Setting`.

    Attributes:
        setting: The model and preset.
        num_params: Trainable parameter entries.
        fractions: Optimizer name -> preconditioned fraction of ``num_params``.
        plain: Optimizer name -> {parameter kind: entries with the plain update}.
    """

    setting: Setting
    num_params: int
    fractions: dict[str, float]
    plain: dict[str, dict[str, int]]


def settings(model_names: Sequence[str] = MODEL_NAMES) -> list[Setting]:
    """Every (model, preset) the report covers: images at both presets, the GCN on Cora."""
    rows = []
    for name in model_names:
        if name == "gcn":
            rows.append(Setting(name, *GRAPH_SETTING))
            continue
        for preset, (num_classes, shape) in IMAGE_PRESETS.items():
            rows.append(Setting(name, preset, num_classes, shape))
    return rows


def build_optimizers(model: nn.Module) -> dict[str, Any]:
    """KFAC and SINGD with diagonal factors (default hyperparameters) for ``model``."""
    from optim import KFAC, SINGD

    return {
        "KFAC": KFAC(model),
        "SINGD": SINGD(model, structures=("diagonal", "diagonal")),
    }


def is_pyg_linear(module: nn.Module) -> bool:
    """Whether ``module`` is PyG's ``Linear`` (as used inside ``GCNConv``)."""
    cls = type(module)
    return cls.__name__ == "Linear" and cls.__module__.startswith("torch_geometric")


def parameter_kind(module: nn.Module, attribute: str) -> str:
    """A short label of what kind of parameter ``module.<attribute>`` is.

    Args:
        module: The module that owns the parameter directly.
        attribute: The parameter's attribute name in ``module``.

    Returns:
        E.g. ``"Linear"``, ``"depthwise Conv2d"``, ``"LayerNorm"``,
        ``"position embedding (CCT)"`` or ``"GCNConv.bias"``.
    """
    owner = type(module).__name__
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        depthwise = module.groups == module.in_channels
        return f"{'depthwise' if depthwise else 'grouped'} {owner}"
    if isinstance(module, (nn.Linear, nn.Conv2d) + NORM_TYPES) or "Norm" in owner:
        return owner
    if is_pyg_linear(module):
        return "PyG Linear"
    label = PARAMETER_LABELS.get(attribute)
    return f"{label} ({owner})" if label else f"{owner}.{attribute}"


def parameter_kinds(model: nn.Module) -> dict[str, str]:
    """Parameter name (as in ``model.named_parameters()``) -> :func:`parameter_kind`."""
    kinds: dict[str, str] = {}
    for prefix, module in model.named_modules():
        for attribute, _ in module.named_parameters(recurse=False):
            name = f"{prefix}.{attribute}" if prefix else attribute
            kinds.setdefault(name, parameter_kind(module, attribute))
    return kinds


def plain_kinds(model: nn.Module, optimizer: Any) -> dict[str, int]:
    """Parameter kind -> entries that ``optimizer`` updates without a preconditioner.

    Args:
        model: The model ``optimizer`` was built for.
        optimizer: A KFAC or SINGD instance (anything with ``describe()``).

    Returns:
        The kinds, largest first.
    """
    kinds = parameter_kinds(model)
    counts: dict[str, int] = {}
    for row in optimizer.describe():
        if not row["preconditioned"]:
            kind = kinds[row["name"]]
            counts[kind] = counts.get(kind, 0) + row["numel"]
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def measure(setting: Setting) -> ReportRow:
    """Build the model of ``setting`` (on the meta device) and both optimizers."""
    model = build_model(
        setting.model, setting.num_classes, setting.input_shape, preset=setting.preset
    )
    model.to("meta")
    optimizers = build_optimizers(model)
    return ReportRow(
        setting=setting,
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        fractions={name: opt.preconditioned_fraction() for name, opt in optimizers.items()},
        plain={name: plain_kinds(model, opt) for name, opt in optimizers.items()},
    )


def describe_kinds(kinds: dict[str, int], num_params: int) -> str:
    """``"kind (share %), ..."`` of the plainly updated parameter kinds."""
    if not kinds:
        return "none"
    return ", ".join(f"{kind} ({percent(count / num_params)})" for kind, count in kinds.items())


def percent(share: float) -> str:
    """``share`` as a percentage with two decimals (``"<0.01%"`` for tiny nonzero shares)."""
    if 0.0 < share < 5e-5:
        return "<0.01%"
    return f"{100 * share:.2f}%"


def markdown_table(rows: Sequence[ReportRow]) -> str:
    """The report as a Markdown table (one line per model and preset)."""
    lines = [
        "| model | preset | input | classes | parameters | KFAC | SINGD "
        "| plain update (share of parameters) |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        setting = row.setting
        kinds = {describe_kinds(row.plain[name], row.num_params) for name in OPTIMIZER_NAMES}
        plain = (
            kinds.pop()
            if len(kinds) == 1
            else "; ".join(
                f"{name}: {describe_kinds(row.plain[name], row.num_params)}"
                for name in OPTIMIZER_NAMES
            )
        )
        shape = "x".join(str(side) for side in setting.input_shape)
        lines.append(
            f"| {setting.model} | {setting.preset} | {shape} | {setting.num_classes} "
            f"| {row.num_params:,} | {percent(row.fractions['KFAC'])} "
            f"| {percent(row.fractions['SINGD'])} | {plain} |"
        )
    return "\n".join(lines) + "\n"


def report(rows: Sequence[ReportRow]) -> str:
    """The Markdown document: a short explanation, then the table."""
    return (
        "# Preconditioned fraction of parameters\n\n"
        "Share of trainable parameter entries that KFAC and SINGD (diagonal factors) "
        "precondition: `nn.Linear`, `groups=1` `nn.Conv2d` and PyG `Linear` layers. "
        "Every other parameter gets the same momentum/weight-decay update without a "
        "preconditioner. Generated by `python -m experiments.preconditioned_report`.\n\n"
        + markdown_table(rows)
    )


def main(argv: Sequence[str] | None = None) -> str:
    """Measure every setting, print the report and write it to ``--out``.

    Args:
        argv: Command-line arguments (``--out``, ``--models``); ``None`` reads ``sys.argv``.

    Returns:
        The report text.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write")
    parser.add_argument(
        "--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES, metavar="MODEL"
    )
    args = parser.parse_args(argv)
    text = report([measure(setting) for setting in settings(args.models)])
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
