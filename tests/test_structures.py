"""Tests of the SINGD structured matrices (paper Table 1) against dense references.

The reference projection maps below are written out by hand with index loops
and do not call the code under test.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from optim.structures import STRUCTURES, StructuredMatrix, parse_structure
from optim.structures import toeplitz as toeplitz_module

NAMES = [
    "dense",
    "diagonal",
    "block_diagonal",
    "hierarchical",
    "tril",
    "triu",
    "triu_low_rank",
    "tril_low_rank",
    "triu_toeplitz",
    "tril_toeplitz",
]
TOEPLITZ = ("triu_toeplitz", "tril_toeplitz")
LOW_RANK = ("triu_low_rank", "tril_low_rank")

# (d, options): an uneven case (last block smaller), an even one and clamped ones.
CASES: dict[str, list[tuple[int, dict[str, int]]]] = {
    "dense": [(7, {}), (9, {})],
    "diagonal": [(7, {}), (9, {})],
    "block_diagonal": [(7, {"k": 3}), (9, {"k": 3}), (4, {})],
    "hierarchical": [
        (7, {"k1": 2, "k2": 3}),
        (9, {"k1": 3, "k2": 3}),
        (4, {"k1": 2, "k2": 3}),
        (4, {}),
    ],
    "tril": [(7, {}), (9, {}), (1, {})],
    "triu": [(7, {}), (9, {}), (1, {})],
    "triu_low_rank": [(7, {"k": 3}), (9, {}), (4, {"k": 30})],
    "tril_low_rank": [(7, {"k": 3}), (9, {}), (4, {"k": 30})],
    "triu_toeplitz": [(7, {}), (9, {}), (1, {})],
    "tril_toeplitz": [(7, {}), (9, {}), (1, {})],
}
PARAMS = [
    pytest.param(name, d, opts, id=f"{name}-d{d}-" + "-".join(f"{k}{v}" for k, v in opts.items()))
    for name in NAMES
    for d, opts in CASES[name]
]
SMALL = [pytest.param(name, CASES[name][0][0], CASES[name][0][1], id=name) for name in NAMES]
F64 = torch.float64


# ---------------------------------------------------------------- hand-written references
def clamped(name: str, d: int, opts: dict[str, int]) -> dict[str, int]:
    """The documented clamping of options to a small d."""
    if name == "block_diagonal":
        return {"k": min(opts.get("k", 30), d)}
    if name == "hierarchical":
        k1 = min(opts.get("k1", 15), d)
        return {"k1": k1, "k2": min(opts.get("k2", 15), d - k1)}
    if name in LOW_RANK:
        return {"k": min(opts.get("k", 1), d)}
    return {}


def entry_weight(name: str, i: int, j: int, d: int, opts: dict[str, int]) -> int:
    """Weight (0, 1 or 2) of input entry (i, j) in the Table 1 projection."""
    o = clamped(name, d, opts)
    if name == "dense":
        return 1
    if name == "diagonal":
        return int(i == j)
    if name == "block_diagonal":
        return int(i // o["k"] == j // o["k"])
    if name == "tril":
        return 1 if i == j else (2 if i > j else 0)
    if name == "triu":
        return 1 if i == j else (2 if i < j else 0)
    if name == "hierarchical":

        def group(index: int) -> int:
            return 0 if index < o["k1"] else (1 if index < d - o["k2"] else 2)

        gi, gj = group(i), group(j)
        if (gi, gj) in ((0, 0), (2, 2)):
            return 1
        if (gi, gj) in ((0, 1), (0, 2), (2, 1)):
            return 2
        return int(gi == gj == 1 and i == j)
    if name == "tril_low_rank":
        i, j = j, i  # transpose of the upper pattern
    k = o["k"]
    if i < k and j < k:
        return 1
    if i < k:
        return 2
    return int(i == j)


def reference_projection(name: str, m: torch.Tensor, opts: dict[str, int]) -> torch.Tensor:
    """Table 1 projection of a symmetric matrix, by explicit loops."""
    d = m.shape[0]
    out = torch.zeros_like(m)
    if name in TOEPLITZ:
        lower = name == "tril_toeplitz"
        for off in range(d):
            entries = [m[i + off, i] if lower else m[i, i + off] for i in range(d - off)]
            b = sum(entries) / (d - off)
            for i in range(d - off):
                row, col = (i + off, i) if lower else (i, i + off)
                out[row, col] = b if off == 0 else 2 * b
        return out
    for i in range(d):
        for j in range(d):
            out[i, j] = entry_weight(name, i, j, d, opts) * m[i, j]
    return out


def expected_numel(name: str, d: int, opts: dict[str, int]) -> int:
    """Free-entry counts (Table 3 memory rows)."""
    o = clamped(name, d, opts)
    if name == "dense":
        return d * d
    if name in ("diagonal", *TOEPLITZ):
        return d
    if name == "block_diagonal":
        k = o["k"]
        return (d // k) * k * k + (d % k) ** 2
    if name in ("tril", "triu"):
        return d * (d + 1) // 2
    if name == "hierarchical":
        k1, k2 = o["k1"], o["k2"]
        return k1 * k1 + k2 * k2 + k1 * (d - k1) + k2 * (d - k1 - k2) + (d - k1 - k2)
    k = o["k"]
    return k * k + k * (d - k) + (d - k)


# ---------------------------------------------------------------- helpers
def random_sym(d: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return (a + a.T).to(dtype)


def random_member(name: str, d: int, opts: dict[str, int], seed: int = 1) -> StructuredMatrix:
    """Random element of the subspace, built from random stored tensors."""
    cls = STRUCTURES[name]
    gen = torch.Generator().manual_seed(seed)
    shapes = cls.tensor_shapes(d, cls.resolve_options(d, **opts))
    tensors = {key: torch.randn(shape, generator=gen, dtype=F64) for key, shape in shapes.items()}
    return cls(d, tensors, **opts)


def randn(*shape: int, seed: int = 2, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def assert_dense(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-10) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------- registry and parsing
def test_registry_has_the_ten_structures() -> None:
    assert list(STRUCTURES) == NAMES
    names = [cls.__name__ for cls in STRUCTURES.values()]
    assert names == [
        "Dense",
        "Diagonal",
        "BlockDiagonal",
        "Hierarchical",
        "Tril",
        "Triu",
        "TriuLowRank",
        "TrilLowRank",
        "TriuToeplitz",
        "TrilToeplitz",
    ]
    assert all(issubclass(cls, StructuredMatrix) for cls in STRUCTURES.values())


def test_parse_structure_accepts_names_and_mappings() -> None:
    assert parse_structure("block_diagonal") == (STRUCTURES["block_diagonal"], {"k": 30})
    assert parse_structure("hierarchical") == (STRUCTURES["hierarchical"], {"k1": 15, "k2": 15})
    assert parse_structure("triu_low_rank")[1] == {"k": 1}
    assert parse_structure("diagonal") == (STRUCTURES["diagonal"], {})
    assert parse_structure({"name": "block_diagonal", "k": 32})[1] == {"k": 32}
    assert parse_structure({"name": "hierarchical", "k2": 4})[1] == {"k1": 15, "k2": 4}
    omegaconf = pytest.importorskip("omegaconf")
    spec = omegaconf.OmegaConf.create({"name": "block_diagonal", "k": 8})
    assert parse_structure(spec) == (STRUCTURES["block_diagonal"], {"k": 8})


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("blockdiag", ["'blockdiag'", "block_diagonal", "tril_toeplitz"]),
        ({"name": "block_diagonal", "k": 0}, ["'k'", "0", ">= 1"]),
        ({"name": "block_diagonal", "k": 2.5}, ["'k'", "2.5", ">= 1"]),
        ({"name": "hierarchical", "k1": True}, ["'k1'", "True"]),
        ({"name": "block_diagonal", "size": 3}, ["'size'", "allowed options: k"]),
        ({"name": "diagonal", "k": 3}, ["'k'", "allowed options: none"]),
        ({"k": 3}, ["'name'"]),
        (3, ["3"]),
    ],
)
def test_parse_structure_errors(spec: Any, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_structure(spec)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_classmethods_validate_options_and_inputs() -> None:
    with pytest.raises(ValueError, match="'k'"):
        STRUCTURES["block_diagonal"].eye(5, k=0)
    with pytest.raises(ValueError, match="'kk'"):
        STRUCTURES["block_diagonal"].from_dense(random_sym(5), kk=2)
    with pytest.raises(ValueError, match="square"):
        STRUCTURES["diagonal"].from_dense(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(d, n\)"):
        STRUCTURES["diagonal"].from_inner(torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        STRUCTURES["diagonal"](3, {"diag": torch.zeros(4)})
    with pytest.raises(ValueError, match="keys"):
        STRUCTURES["diagonal"](3, {"values": torch.zeros(3)})
    with pytest.raises(ValueError, match="dim"):
        STRUCTURES["diagonal"].zeros(0)


# ---------------------------------------------------------------- projections
@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_from_dense_is_table1_projection(name: str, d: int, opts: dict[str, int]) -> None:
    sym = random_sym(d)
    s = STRUCTURES[name].from_dense(sym, **opts)
    assert type(s) is STRUCTURES[name]
    assert s.dim == d and s.options == clamped(name, d, opts)
    assert_dense(s.to_dense(), reference_projection(name, sym, opts))


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_stored_entries_fill_exactly_the_subspace(name: str, d: int, opts: dict[str, int]) -> None:
    dense = random_member(name, d, opts).to_dense()
    sym = random_sym(d)
    pattern = reference_projection(name, sym, opts) != 0
    assert torch.equal(dense != 0, pattern)
    if name in TOEPLITZ:  # constant along each diagonal
        assert_dense(dense[1:, 1:], dense[:-1, :-1], tol=0)


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_numel_counts_free_entries(name: str, d: int, opts: dict[str, int]) -> None:
    s = random_member(name, d, opts)
    assert s.numel() == expected_numel(name, d, opts)
    if name not in TOEPLITZ:
        pattern = reference_projection(name, random_sym(d), opts) != 0
        assert s.numel() == int(pattern.sum())


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_from_inner_equals_projection_of_outer_product(
    name: str, d: int, opts: dict[str, int]
) -> None:
    cls = STRUCTURES[name]
    for n in (1, 5, 2 * d + 3):
        x = randn(d, n, seed=n)
        expected = reference_projection(name, x @ x.T, opts)
        assert_dense(cls.from_inner(x, **opts).to_dense(), expected)
        assert_dense(cls.from_dense(x @ x.T, **opts).to_dense(), expected)


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_gram_projection(name: str, d: int, opts: dict[str, int]) -> None:
    s = random_member(name, d, opts)
    dense = s.to_dense()
    for n in (4, 2 * d + 3):  # few and many columns (dense associates the products by cost)
        x = randn(d, n, seed=n)
        with_x = s.gram_projection(x)
        assert type(with_x) is type(s) and with_x.options == s.options
        expected = reference_projection(name, dense.T @ x @ x.T @ dense, opts)
        assert_dense(with_x.to_dense(), expected)
    assert_dense(s.gram_projection().to_dense(), reference_projection(name, dense.T @ dense, opts))


# ---------------------------------------------------------------- products
@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_structured_product_is_closed_and_exact(name: str, d: int, opts: dict[str, int]) -> None:
    s1, s2 = random_member(name, d, opts, seed=1), random_member(name, d, opts, seed=2)
    product = s1 @ s2
    assert type(product) is type(s1) and product.options == s1.options
    assert_dense(product.to_dense(), s1.to_dense() @ s2.to_dense())


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_products_with_dense_matrices(name: str, d: int, opts: dict[str, int]) -> None:
    s = random_member(name, d, opts)
    dense = s.to_dense()
    right, left, vector = randn(d, 5, seed=3), randn(6, d, seed=4), randn(d, seed=5)
    assert_dense(s @ right, dense @ right)
    assert_dense(left @ s, left @ dense)
    assert_dense(s @ vector, dense @ vector)
    assert_dense(vector @ s, vector @ dense)
    assert_dense(s @ right.T.contiguous().T, dense @ right)  # strided input
    with pytest.raises(ValueError, match="shape"):
        s @ randn(d + 1, 2)
    with pytest.raises(ValueError, match="shape"):
        randn(2, d + 1) @ s


def test_toeplitz_fft_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small d uses a dense Toeplitz matmul; force the FFT code path and compare."""
    monkeypatch.setattr(toeplitz_module, "DENSE_MAX_DIM", 0)
    for name in TOEPLITZ:
        for d in (1, 2, 7, 13):
            s1, s2 = random_member(name, d, {}, seed=1), random_member(name, d, {}, seed=2)
            d1 = s1.to_dense()
            x, m = randn(d, 3), randn(4, d)
            assert_dense((s1 @ s2).to_dense(), d1 @ s2.to_dense())
            assert_dense(s1 @ x, d1 @ x)
            assert_dense(m @ s1, m @ d1)
            assert_dense(
                STRUCTURES[name].from_inner(x).to_dense(), reference_projection(name, x @ x.T, {})
            )
            assert_dense(s1.gram_projection().to_dense(), reference_projection(name, d1.T @ d1, {}))
            assert_dense(
                s1.gram_projection(x).to_dense(),
                reference_projection(name, d1.T @ x @ x.T @ d1, {}),
            )


@pytest.mark.parametrize("name", TOEPLITZ)
@pytest.mark.parametrize("d", [257, 300])
def test_toeplitz_large_dim_matches_dense(name: str, d: int) -> None:
    """Above DENSE_MAX_DIM the FFT is used; check it (also for awkward FFT lengths)."""
    assert d > toeplitz_module.DENSE_MAX_DIM
    cls = STRUCTURES[name]
    s1, s2 = random_member(name, d, {}, seed=1), random_member(name, d, {}, seed=2)
    d1 = s1.to_dense()
    x, m = randn(d, 3), randn(4, d)
    assert_dense((s1 @ s2).to_dense(), d1 @ s2.to_dense(), tol=1e-9)
    assert_dense(s1 @ x, d1 @ x, tol=1e-9)
    assert_dense(m @ s1, m @ d1, tol=1e-9)
    assert_dense(cls.from_inner(x).to_dense(), cls.from_dense(x @ x.T).to_dense(), tol=1e-9)
    assert_dense(s1.gram_projection().to_dense(), cls.from_dense(d1.T @ d1).to_dense(), tol=1e-8)
    # float32 FFT stays accurate relative to the size of the result
    x32 = x.float()
    got = cls.from_inner(x32).coeffs.double()
    want = cls.from_inner(x).coeffs
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


# ---------------------------------------------------------------- linear-space arithmetic
@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_arithmetic_matches_dense(name: str, d: int, opts: dict[str, int]) -> None:
    s1, s2 = random_member(name, d, opts, seed=1), random_member(name, d, opts, seed=2)
    d1, d2 = s1.to_dense(), s2.to_dense()
    assert_dense((s1 + s2).to_dense(), d1 + d2)
    assert_dense((s1 - s2).to_dense(), d1 - d2)
    assert_dense((2.5 * s1).to_dense(), 2.5 * d1)
    assert_dense((s1 * -0.5).to_dense(), -0.5 * d1)
    assert_dense((torch.tensor(3.0, dtype=F64) * s1).to_dense(), 3.0 * d1)
    assert_dense((s1 * torch.tensor(3.0, dtype=F64)).to_dense(), 3.0 * d1)
    assert_dense((s1 / 4).to_dense(), d1 / 4)
    assert_dense((-s1).to_dense(), -d1)
    eye = torch.eye(d, dtype=F64)
    assert_dense(s1.add_identity(0.7).to_dense(), d1 + 0.7 * eye)
    assert_dense(s1.add_identity(torch.tensor(0.7, dtype=F64)).to_dense(), d1 + 0.7 * eye)
    assert_dense(s1.to_dense(), d1)  # operands are not modified in place
    assert s1.trace().ndim == 0
    torch.testing.assert_close(s1.trace(), d1.trace())
    for result in (s1 + s2, 2.0 * s1, s1.add_identity(1.0)):
        assert type(result) is type(s1) and result.options == s1.options


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_in_place_arithmetic_matches_dense(name: str, d: int, opts: dict[str, int]) -> None:
    s1, s2 = random_member(name, d, opts, seed=1), random_member(name, d, opts, seed=2)
    d1, d2 = s1.to_dense(), s2.to_dense()
    eye = torch.eye(d, dtype=F64)
    copy = s1.clone()
    assert copy.add_identity_(0.7) is copy
    assert_dense(copy.to_dense(), d1 + 0.7 * eye)
    assert_dense(s1.to_dense(), d1)  # clone() copied the tensors
    assert copy.mul_(-2.0) is copy
    assert_dense(copy.to_dense(), -2.0 * (d1 + 0.7 * eye))
    copy.mul_(torch.tensor(0.5, dtype=F64)).add_scaled_(s2, 3.0)
    assert_dense(copy.to_dense(), -(d1 + 0.7 * eye) + 3.0 * d2)
    copy.add_scaled_(s2, torch.tensor(-1.5, dtype=F64)).add_identity_(torch.tensor(0.7, dtype=F64))
    assert_dense(copy.to_dense(), -d1 + 1.5 * d2)
    assert_dense(s2.to_dense(), d2)  # the added operand is not modified
    result = s1.add_self_product(s2, -0.25)
    assert type(result) is type(s1) and result.options == s1.options
    assert_dense(result.to_dense(), d1 - 0.25 * d1 @ d2)
    assert_dense(s1.to_dense(), d1)
    assert s1.add_self_product_(s2, -0.25) is s1
    assert_dense(s1.to_dense(), d1 - 0.25 * d1 @ d2)


def test_in_place_add_rejects_another_structure() -> None:
    dense, diagonal = STRUCTURES["dense"].eye(3), STRUCTURES["diagonal"].eye(3)
    with pytest.raises(ValueError, match="same structure"):
        dense.add_scaled_(diagonal)


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_eye_and_zeros(name: str, d: int, opts: dict[str, int]) -> None:
    cls = STRUCTURES[name]
    for dtype in (torch.float32, torch.bfloat16):
        eye, zeros = cls.eye(d, dtype=dtype, **opts), cls.zeros(d, dtype=dtype, **opts)
        assert eye.dtype == zeros.dtype == dtype
        assert torch.equal(eye.to_dense(), torch.eye(d, dtype=dtype))
        assert torch.equal(zeros.to_dense(), torch.zeros(d, d, dtype=dtype))
        assert eye.numel() == expected_numel(name, d, opts)
        assert eye.trace().item() == d


def test_mixing_structures_or_options_is_an_error() -> None:
    block3 = STRUCTURES["block_diagonal"].eye(7, k=3)
    block2 = STRUCTURES["block_diagonal"].eye(7, k=2)
    diag = STRUCTURES["diagonal"].eye(7)
    for bad in (lambda: block3 + block2, lambda: block3 @ block2, lambda: block3 - diag):
        with pytest.raises(ValueError, match="same structure"):
            bad()
    with pytest.raises(ValueError):
        STRUCTURES["diagonal"].eye(5) + diag
    with pytest.raises(TypeError):
        block3 * block3  # type: ignore[operator]


# ---------------------------------------------------------------- state, dtype, device
@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_state_tensors_round_trip(name: str, d: int, opts: dict[str, int]) -> None:
    s = random_member(name, d, opts)
    buffer = io.BytesIO()
    torch.save({"tensors": s.state_tensors(), "dim": s.dim, "options": s.options}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = STRUCTURES[name].from_state_tensors(
        saved["tensors"], saved["dim"], **saved["options"]
    )
    assert type(restored) is type(s) and restored.options == s.options
    assert torch.equal(restored.to_dense(), s.to_dense())
    assert all(isinstance(t, torch.Tensor) for t in s.state_tensors().values())
    assert sum(t.numel() for t in s.state_tensors().values()) == s.numel()
    as32 = s.to(dtype=torch.float32)
    assert as32.dtype == torch.float32 and as32.device == s.device
    assert_dense(as32.to_dense(), s.to_dense().float(), tol=1e-6)


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, tol: float = 0.05) -> None:
    assert actual.dtype == torch.bfloat16
    scale = expected.abs().max().clamp(min=1.0)
    assert (actual.float() - expected.float()).abs().max() <= tol * scale


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_bfloat16_everywhere(name: str, d: int, opts: dict[str, int]) -> None:
    """Every operation runs in bf16, keeps bf16 and agrees with float64 loosely."""
    cls = STRUCTURES[name]
    s64, t64 = random_member(name, d, opts, seed=1), random_member(name, d, opts, seed=2)
    s, t = s64.to(dtype=torch.bfloat16), t64.to(dtype=torch.bfloat16)
    x64, m64 = randn(d, 3), randn(4, d)
    x, m = x64.bfloat16(), m64.bfloat16()
    sym = random_sym(d).bfloat16()
    pairs = [
        (cls.from_dense(sym, **opts), cls.from_dense(sym.double(), **opts)),
        (cls.from_inner(x, **opts), cls.from_inner(x64, **opts)),
        (s @ t, s64 @ t64),
        (s + t, s64 + t64),
        (s - t, s64 - t64),
        (0.5 * s, 0.5 * s64),
        (-s, -s64),
        (s.add_identity(1.0), s64.add_identity(1.0)),
        (s.gram_projection(x), s64.gram_projection(x64)),
        (s.gram_projection(), s64.gram_projection()),
        (cls.eye(d, dtype=torch.bfloat16, **opts), cls.eye(d, dtype=F64, **opts)),
    ]
    for low, high in pairs:
        assert type(low) is cls and low.dtype == torch.bfloat16
        assert all(v.dtype == torch.bfloat16 for v in low.state_tensors().values())
        assert_rel(low.to_dense(), high.to_dense())
    assert_rel(s @ x, s64 @ x64)
    assert_rel(m @ s, m64 @ s64)
    assert_rel(s.trace(), s64.trace())


# ---------------------------------------------------------------- no dense d x d for sparse classes
class _LargestTensor(TorchDispatchMode):
    """Record the largest tensor any aten operation creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


SPARSE = {
    "diagonal": {},
    "block_diagonal": {},
    "hierarchical": {},
    "triu_low_rank": {"k": 4},
    "tril_low_rank": {"k": 4},
    "triu_toeplitz": {},
    "tril_toeplitz": {},
}


@pytest.mark.parametrize("name", list(SPARSE))
def test_sparse_structures_never_form_dense_matrices(name: str) -> None:
    d, n = 4096, 8
    cls, opts = STRUCTURES[name], SPARSE[name]
    x, right, left = randn(d, n, dtype=torch.float32), randn(d, 3, seed=3), randn(3, d, seed=4)
    right, left = right.float(), left.float()
    with _LargestTensor() as mode:
        s = cls.from_inner(x, **opts)
        t = s.add_identity(1.0)
        results = [
            s @ t,
            s + t,
            0.5 * s,
            s.gram_projection(),
            s.gram_projection(x),
            cls.eye(d, **opts),
        ]
        products = [s @ right, left @ s, s.trace()]
    assert mode.largest <= d * d // 64, f"an intermediate had {mode.largest} entries"
    for matrix in [s, t, *results]:
        assert matrix.numel() <= 64 * d
        for tensor in matrix.state_tensors().values():
            assert tensor.numel() <= 64 * d
    assert products[0].shape == (d, 3) and products[1].shape == (3, d)
    # spot-check the large products against a few rows/columns built from unit vectors
    idx = torch.tensor([0, 1, 17, d // 2, d - 2, d - 1])
    unit = torch.zeros(d, len(idx))
    unit[idx, torch.arange(len(idx))] = 1.0
    columns = s @ unit  # S[:, idx]
    rows = unit.T @ s  # S[idx, :]
    torch.testing.assert_close(right.T @ rows.T, (s @ right)[idx].T, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(left @ columns, (left @ s)[:, idx], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", TOEPLITZ)
@pytest.mark.parametrize("columns", [3, 11, 4 * 257])
def test_toeplitz_gram_projection_paths_match_dense(
    name: str, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pi(S^T x x^T S) by chunked FFTs (few columns) or by x x^T first (many columns)."""
    d = 257
    monkeypatch.setattr(toeplitz_module, "FFT_CHUNK_ENTRIES", 4 * 1024)  # chunks of 7 columns
    s = random_member(name, d, {}, seed=1)
    dense = s.to_dense()
    x = randn(d, columns, seed=columns)
    expected = reference_projection(name, dense.T @ x @ x.T @ dense, {})
    assert_dense(s.gram_projection(x).to_dense(), expected, tol=1e-9)
    assert_dense(
        STRUCTURES[name].from_inner(x).to_dense(), reference_projection(name, x @ x.T, {}), tol=1e-9
    )


class _Rows:
    """Rows ``X`` given as ``X^T``, like ``optim.capture.LayerRows``."""

    def __init__(self, x_t: torch.Tensor) -> None:
        self.x_t = x_t
        self.count = x_t.shape[1]

    def gram(self) -> torch.Tensor:
        return self.x_t @ self.x_t.T

    def transposed(self) -> torch.Tensor:
        return self.x_t

    def column_square_sums(self) -> torch.Tensor:
        return self.x_t.square().sum(1)


@pytest.mark.parametrize(("name", "d", "opts"), PARAMS)
def test_gram_projection_of_rows_equals_gram_projection(
    name: str, d: int, opts: dict[str, int]
) -> None:
    """Every structure (diagonal: from the column square sums only) gives Pi(S^T X^T X S)."""
    s = random_member(name, d, opts)
    dense = s.to_dense()
    for columns in (7, 2 * d + 1):  # dense: S^T x, or S^T (x x^T) S for many rows
        x = randn(d, columns)
        expected = reference_projection(name, dense.T @ x @ x.T @ dense, opts)
        assert_dense(s.gram_projection_of_rows(_Rows(x)).to_dense(), expected)


def test_fft_lengths_are_fast_and_short() -> None:
    for min_length in range(1, 20_000, 7):
        length = toeplitz_module._fft_length(min_length)
        assert length >= min_length
        power = length & -length  # largest power of two dividing the length
        if length < toeplitz_module.FFT_MIN_POWER_OF_TWO:
            assert length == power
        else:
            assert length // power in toeplitz_module.FFT_ODD_PARTS
            assert power >= toeplitz_module.FFT_MIN_POWER_OF_TWO
        # every odd part is available from 75 * 32 on; below, at most the next power of two
        limit = 1.125 if min_length >= 75 * toeplitz_module.FFT_MIN_POWER_OF_TWO else 2.0
        assert length <= limit * min_length
    assert toeplitz_module._fft_length(9217) == 9600  # not the slow 9375 = 3 * 5^5
