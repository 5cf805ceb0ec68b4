"""Name -> class registry of the SINGD structures and parsing of structure specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optim.structures.base import StructuredMatrix, validate_options
from optim.structures.block_diagonal import BlockDiagonal
from optim.structures.dense import Dense
from optim.structures.diagonal import Diagonal
from optim.structures.hierarchical import Hierarchical
from optim.structures.low_rank import TrilLowRank, TriuLowRank
from optim.structures.toeplitz import TrilToeplitz, TriuToeplitz
from optim.structures.triangular import Tril, Triu

STRUCTURES: dict[str, type[StructuredMatrix]] = {
    cls.name: cls
    for cls in (
        Dense,
        Diagonal,
        BlockDiagonal,
        Hierarchical,
        Tril,
        Triu,
        TriuLowRank,
        TrilLowRank,
        TriuToeplitz,
        TrilToeplitz,
    )
}


def parse_structure(spec: str | Mapping[str, Any]) -> tuple[type[StructuredMatrix], dict[str, int]]:
    """Turn a structure spec into its class and validated options.

    Args:
        spec: A registry name such as ``"block_diagonal"`` (default options) or
            a mapping such as ``{"name": "block_diagonal", "k": 32}`` (a dict or
            an OmegaConf ``DictConfig``).

    Returns:
        The class and all of its options (defaults filled in, not yet clamped
        to a dimension).

    Raises:
        ValueError: For an unknown name, an unknown option or a bad option value.
    """
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"structure spec {dict(spec)!r} has no 'name' key.")
        name = spec["name"]
        options = {key: value for key, value in spec.items() if key != "name"}
    else:
        raise ValueError(
            f"structure spec must be a name or a mapping with a 'name' key, got {spec!r}."
        )
    if name not in STRUCTURES:
        raise ValueError(
            f"Unknown structure name {name!r}; allowed: {', '.join(sorted(STRUCTURES))}."
        )
    cls = STRUCTURES[name]
    return cls, validate_options(name, cls.option_defaults, options, cls.option_minimums)
