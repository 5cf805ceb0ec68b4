"""SINGD (INGD, IKFAC, SIKFAC) against independent dense references (SINGD paper Fig. 3-4)."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optim import SINGD, STRUCTURES
from optim.singd import riemannian_step

HYPER = {
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.01,
    "damping": 0.01,
    "lr_cov": 0.1,
    "alpha1": 0.5,
}

SPARSE_STRUCTURES = [
    "diagonal",
    {"name": "block_diagonal", "k": 3},
    {"name": "hierarchical", "k1": 2, "k2": 2},
    "tril",
    "triu",
    {"name": "triu_low_rank", "k": 2},
    {"name": "tril_low_rank", "k": 2},
    "triu_toeplitz",
    "tril_toeplitz",
]
ALL_STRUCTURES = ["dense", *SPARSE_STRUCTURES]


@pytest.fixture(autouse=True)
def _single_thread():
    """These problems are tiny and overhead-bound: extra threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _name(spec: str | dict) -> str:
    return spec if isinstance(spec, str) else spec["name"]


def make_mlp(dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5)).to(dtype)


def make_batches(steps: int, batch_size: int = 16, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(batch_size, 6, generator=generator, dtype=dtype),
            torch.randint(0, 5, (batch_size,), generator=generator),
        )
        for _ in range(steps)
    ]


def train(model: nn.Module, opt: SINGD, batches) -> list[float]:
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def identity(matrix: Tensor) -> Tensor:
    return matrix


def projection(spec: str | dict) -> Callable[[Tensor], Tensor]:
    """Dense view of the structure's Table 1 projection of a symmetric matrix."""
    options = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "name"}
    cls = STRUCTURES[_name(spec)]
    return lambda sym: cls.from_dense(sym, **options).to_dense()


class ReferenceINGD:
    """Fig. 4 (left; right with projections) or Fig. 3 (right), in dense float64 matrices.

    U and G come from this class's own hooks: U = (1/m) sum_i a_i a_i^T with a trailing 1,
    G = (1/m) sum_i g_i g_i^T with g_i = m * dloss/dy_i (empirical Fisher, mean loss).
    """

    def __init__(
        self,
        model: nn.Sequential,
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
        damping: float,
        lr_cov: float,
        alpha1: float,
        T: int,
        kfac_like: bool = False,
        project_k: Callable[[Tensor], Tensor] = identity,
        project_c: Callable[[Tensor], Tensor] = identity,
    ) -> None:
        self.model, self.T, self.t = model, T, 0
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.damping, self.lr_cov, self.alpha1, self.kfac_like = damping, lr_cov, alpha1, kfac_like
        self.project_k, self.project_c = project_k, project_c
        self.linears = [m for m in model if isinstance(m, nn.Linear)]
        self.state = {}
        for linear in self.linears:
            d_out, d_in = linear.weight.shape[0], linear.weight.shape[1] + 1
            eye_in, eye_out = (
                torch.eye(d_in, dtype=torch.float64),
                torch.eye(d_out, dtype=torch.float64),
            )
            self.state[linear] = {
                "K": eye_in,
                "C": eye_out,
                "m_K": 0 * eye_in,
                "m_C": 0 * eye_out,
                "buffer": None,
            }

    def _curvature(self, x: Tensor, y: Tensor) -> dict[nn.Linear, tuple[Tensor, Tensor]]:
        inputs, outputs = {}, {}

        def hook(module: nn.Module, args: tuple[Tensor], out: Tensor) -> None:
            inputs[module] = args[0]
            out.retain_grad()
            outputs[module] = out

        handles = [linear.register_forward_hook(hook) for linear in self.linears]
        F.cross_entropy(self.model(x), y).backward()
        for handle in handles:
            handle.remove()
        m = x.shape[0]
        curvature = {}
        for linear in self.linears:
            a = torch.cat([inputs[linear], torch.ones(m, 1, dtype=x.dtype)], dim=1).detach()
            g = m * outputs[linear].grad
            curvature[linear] = (a.T @ a / m, g.T @ g / m)
        return curvature

    def step(self, x: Tensor, y: Tensor) -> None:
        curvature = self._curvature(x, y)
        for linear in self.linears:
            s = self.state[linear]
            if self.t % self.T == 0:
                self._update_factors(s, *curvature[linear])
            grad = torch.cat([linear.weight.grad, linear.bias.grad[:, None]], dim=1)
            param = torch.cat([linear.weight.data, linear.bias.data[:, None]], dim=1)
            direction = s["C"] @ s["C"].T @ grad @ s["K"] @ s["K"].T + self.weight_decay * param
            buffer = direction if s["buffer"] is None else self.momentum * s["buffer"] + direction
            s["buffer"] = buffer
            param = param - self.lr * buffer
            linear.weight.data.copy_(param[:, :-1])
            linear.bias.data.copy_(param[:, -1])
            linear.weight.grad = linear.bias.grad = None
        self.t += 1

    def _update_factors(self, s: dict, u: Tensor, g: Tensor) -> None:
        k, c = s["K"], s["C"]
        d_in, d_out = k.shape[0], c.shape[0]
        if self.kfac_like:
            tr_h_c, tr_c_c, tr_h_k, tr_k_k = d_out, d_out, d_in, d_in
        else:
            tr_h_c, tr_c_c = torch.trace(c.T @ g @ c), torch.trace(c.T @ c)
            tr_h_k, tr_k_k = torch.trace(k.T @ u @ k), torch.trace(k.T @ k)
        c2, kappa2 = self.damping * tr_c_c, self.damping * tr_k_k
        step_k = self.project_k(tr_h_c * k.T @ u @ k + c2 * k.T @ k - d_out * torch.eye(d_in))
        step_c = self.project_c(tr_h_k * c.T @ g @ c + kappa2 * c.T @ c - d_in * torch.eye(d_out))
        s["m_K"] = self.alpha1 * s["m_K"] + step_k / (2 * d_out)
        s["m_C"] = self.alpha1 * s["m_C"] + step_c / (2 * d_in)
        s["K"] = k @ (torch.eye(d_in, dtype=k.dtype) - self.lr_cov * s["m_K"])
        s["C"] = c @ (torch.eye(d_out, dtype=c.dtype) - self.lr_cov * s["m_C"])


def compare_with_reference(
    steps: int,
    T: int,
    structures=("dense", "dense"),
    kfac_like: bool = False,
    project=(identity, identity),
    **overrides,
) -> tuple[SINGD, ReferenceINGD]:
    hyper = {**HYPER, **overrides}
    if kfac_like:
        hyper["alpha1"] = 0.0
    model = make_mlp()
    reference_model = copy.deepcopy(model)
    opt = SINGD(model, T=T, structures=structures, kfac_like=kfac_like, **hyper)
    reference = ReferenceINGD(
        reference_model,
        T=T,
        kfac_like=kfac_like,
        project_k=project[0],
        project_c=project[1],
        **hyper,
    )
    for x, y in make_batches(steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        reference.step(x, y)
        for p, q in zip(model.parameters(), reference_model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10)
    # with alpha1 = 0 (IKFAC) no Riemannian momentum is stored, as in the authors' code
    keys = ("K", "C") if kfac_like else ("K", "C", "m_K", "m_C")
    for name, linear in zip(("0", "2"), reference.linears, strict=True):
        assert set(opt.layer_state[name]) == set(keys)
        for key in keys:
            torch.testing.assert_close(
                opt.layer_state[name][key].to_dense(),
                reference.state[linear][key],
                rtol=0,
                atol=1e-10,
            )
    return opt, reference


# ----- exact agreement with dense references -------------------------------------------


@pytest.mark.parametrize("T", [1, 2])
def test_ingd_equals_dense_reference(T: int) -> None:
    opt, reference = compare_with_reference(steps=5, T=T)
    k = reference.state[reference.linears[0]]["K"]
    assert (k - torch.eye(k.shape[0])).abs().max() > 1e-3  # the factors really moved


def test_ikfac_equals_dense_reference() -> None:
    compare_with_reference(steps=5, T=1, kfac_like=True)


@pytest.mark.parametrize("spec", SPARSE_STRUCTURES, ids=_name)
def test_structured_singd_equals_projected_reference(spec: str | dict) -> None:
    compare_with_reference(steps=4, T=1, structures=spec, project=(projection(spec),) * 2)


def test_different_structures_for_k_and_c() -> None:
    k_spec, c_spec = {"name": "hierarchical", "k1": 2, "k2": 1}, "tril_toeplitz"
    opt, _ = compare_with_reference(
        steps=3, T=1, structures=(k_spec, c_spec), project=(projection(k_spec), projection(c_spec))
    )
    assert opt.describe()[0]["how"] == (
        "SINGD(K=hierarchical(k1=2, k2=1), C=tril_toeplitz, alpha1=0.5)"
    )


def test_sikfac_equals_projected_reference() -> None:
    spec = {"name": "block_diagonal", "k": 2}
    compare_with_reference(
        steps=4, T=2, structures=spec, kfac_like=True, project=(projection(spec),) * 2
    )


# ----- theory --------------------------------------------------------------------------


def _ikfac_error(beta1: float, steps: int = 10, damping: float = 0.1) -> float:
    """|| K K^T - (S_K + lambda I)^-1 || after ``steps`` IKFAC vs KFAC-EMA updates."""
    generator = torch.Generator().manual_seed(0)
    d = 5

    def random_psd() -> Tensor:
        x = torch.randn(d, 2 * d, generator=generator, dtype=torch.float64)
        return x @ x.T / (2 * d)

    s = random_psd()
    eigenvalues, eigenvectors = torch.linalg.eigh(s + damping * torch.eye(d, dtype=torch.float64))
    dense = STRUCTURES["dense"]
    k = dense.from_dense(eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T)
    m_k = dense.zeros(d, dtype=torch.float64)
    for _ in range(steps):
        u = random_psd()
        s = (1 - beta1) * s + beta1 * u
        k_dense = k.to_dense()
        curvature = dense.from_dense(k_dense.T @ u @ k_dense)
        k, m_k = riemannian_step(k, m_k, curvature, k.gram_projection(), 1.0, damping, 0.0, beta1)
    target = torch.linalg.inv(s + damping * torch.eye(d, dtype=torch.float64))
    k_dense = k.to_dense()
    return (k_dense @ k_dense.T - target).norm().item()


@pytest.mark.parametrize("name", ["dense", "diagonal", "block_diagonal", "triu_toeplitz"])
@pytest.mark.parametrize("alpha1", [0.0, 0.5])
def test_riemannian_step_matches_formula_with_and_without_overwrite(
    name: str, alpha1: float
) -> None:
    """``m <- alpha1 m + (w_H H + w_l G - I) / 2``, ``K <- K (I - beta1 m)`` in dense algebra."""
    cls, d = STRUCTURES[name], 7
    generator = torch.Generator().manual_seed(3)

    def member() -> object:
        sym = torch.randn(d, d, generator=generator, dtype=torch.float64)
        return cls.from_dense(sym + sym.T)

    k, m_k, curvature, gram = member(), member(), member(), member()
    dense = {key: x.to_dense() for key, x in zip("kmcg", (k, m_k, curvature, gram), strict=True)}
    w_h, w_l, lr_cov = torch.tensor(0.8, dtype=torch.float64), 0.3, 0.05
    step = 0.5 * (w_h * dense["c"] + w_l * dense["g"] - torch.eye(d, dtype=torch.float64))
    momentum = alpha1 * dense["m"] + step if alpha1 else step
    expected = (dense["k"] - lr_cov * dense["k"] @ momentum, momentum)
    new_k, new_m = riemannian_step(k, m_k, curvature, gram, w_h, w_l, alpha1, lr_cov)
    for key, x in zip("kmcg", (k, m_k, curvature, gram), strict=True):
        torch.testing.assert_close(x.to_dense(), dense[key])  # inputs untouched
    for result in (
        (new_k, new_m),
        riemannian_step(k, m_k, curvature, gram, w_h, w_l, alpha1, lr_cov, overwrite=True),
    ):
        torch.testing.assert_close(result[0].to_dense(), expected[0])
        torch.testing.assert_close(result[1].to_dense(), expected[1])
    torch.testing.assert_close(k.to_dense(), expected[0])  # overwritten in place
    if alpha1:
        torch.testing.assert_close(m_k.to_dense(), expected[1])


def test_theorem1_ikfac_tracks_kfac_to_second_order() -> None:
    # first order would give ratios ~2; the ratios approach 4 as beta1 -> 0
    errors = [_ikfac_error(beta1) for beta1 in (0.005, 0.0025, 0.00125)]
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 3.0 < coarse / fine < 5.0, errors
    assert errors[-1] > 1e-6  # K K^T did move away from its start (S_0 + lambda I)^-1


def _trajectory(kfac_like: bool, scale: float, structures="dense") -> list[Tensor]:
    model = make_mlp()
    opt = SINGD(
        model,
        T=1,
        structures=structures,
        kfac_like=kfac_like,
        **{**HYPER, "alpha1": 0.0 if kfac_like else 0.5},
    )
    input_stat, grad_stat = opt.capture.input_stat, opt.capture.grad_stat
    # (a U) x (G / a): scale A by sqrt(a) and B by 1/sqrt(a)
    opt.capture.input_stat = lambda layer, a: input_stat(layer, a.scaled(math.sqrt(scale)))
    opt.capture.grad_stat = lambda layer, b: grad_stat(layer, b.scaled(1 / math.sqrt(scale)))
    params = []
    for x, y in make_batches(6):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return params


@pytest.mark.parametrize(
    "structures",
    ["dense", {"name": "hierarchical", "k1": 2, "k2": 2}],
    ids=["INGD", "SINGD-hierarchical"],
)
def test_ingd_and_singd_invariant_to_kronecker_scale(structures) -> None:
    plain, scaled = _trajectory(False, 1.0, structures), _trajectory(False, 7.3, structures)
    for p, q in zip(plain, scaled, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)


def test_ikfac_not_invariant_to_kronecker_scale() -> None:
    plain, scaled = _trajectory(True, 1.0), _trajectory(True, 7.3)
    assert (plain[-1] - scaled[-1]).abs().max() > 1e-3


# ----- low precision, no decompositions ------------------------------------------------

_FORBIDDEN = {
    torch.linalg: [
        "inv",
        "inv_ex",
        "solve",
        "solve_ex",
        "solve_triangular",
        "cholesky",
        "cholesky_ex",
        "eig",
        "eigh",
        "eigvals",
        "eigvalsh",
        "svd",
        "svdvals",
        "qr",
        "lstsq",
        "pinv",
        "lu",
        "lu_factor",
        "lu_factor_ex",
        "lu_solve",
        "ldl_factor",
        "matrix_exp",
        "matrix_power",
        "tensorinv",
        "tensorsolve",
    ],
    torch: [
        "inverse",
        "cholesky",
        "cholesky_inverse",
        "cholesky_solve",
        "svd",
        "qr",
        "pinverse",
        "lu",
        "lu_solve",
        "triangular_solve",
        "linalg_eig",
        "geqrf",
        "lstsq",
        "svd_lowrank",
        "pca_lowrank",
        "lobpcg",
        "matrix_exp",
        "matrix_power",
    ],
}


def _forbid_linalg(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, names in _FORBIDDEN.items():
        for name in names:

            def forbidden(*args, _name=name, **kwargs):
                raise AssertionError(f"SINGD called {_name}")

            monkeypatch.setattr(module, name, forbidden, raising=False)
            monkeypatch.setattr(torch.Tensor, name, forbidden, raising=False)


def _tiny_cnn_problem() -> tuple[nn.Module, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 6, 6, generator=generator)
    teacher = torch.randn(3 * 6 * 6, 3, generator=generator)
    y = (x.flatten(1) @ teacher).argmax(dim=1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 3),
    )
    return model, x, y


@pytest.mark.parametrize("spec", ALL_STRUCTURES, ids=_name)
def test_bf16_training_without_decompositions(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_linalg(monkeypatch)
    model, x, y = _tiny_cnn_problem()
    opt = SINGD(
        model,
        lr=0.05,
        momentum=0.9,
        damping=1e-3,
        lr_cov=0.05,
        alpha1=0.5,
        T=2,
        structures=spec,
        preconditioner_dtype=torch.bfloat16,
    )
    losses = []
    for _ in range(200):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert all(p.isfinite().all() for p in model.parameters())
    for factors in opt.layer_state.values():
        for matrix in factors.values():
            assert matrix.dtype == torch.bfloat16
            assert all(t.isfinite().all() for t in matrix.state_tensors().values())
    assert sum(losses[-10:]) / 10 < 0.7 * losses[0], (losses[0], losses[-10:])


def test_linalg_guard_is_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_linalg(monkeypatch)
    with pytest.raises(AssertionError, match="inv"):
        torch.linalg.inv(torch.eye(2))
    with pytest.raises(AssertionError, match="inverse"):
        torch.eye(2).inverse()


def test_hot_path_never_densifies_diagonal_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(self):
        raise AssertionError("to_dense called")

    monkeypatch.setattr(STRUCTURES["diagonal"], "to_dense", forbidden)
    model = make_mlp()
    train(model, SINGD(model, T=2, structures="diagonal", **HYPER), make_batches(3))


# ----- state, dtypes, plain parameters -------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["dense", {"name": "hierarchical", "k1": 2, "k2": 2}, "triu_toeplitz"], ids=_name
)
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
@pytest.mark.parametrize("kfac_like", [False, True], ids=["SINGD", "SIKFAC"])
def test_state_dict_round_trip_continues_identically(spec, dtype, kfac_like: bool) -> None:
    hyper = {**HYPER, "alpha1": 0.0 if kfac_like else HYPER["alpha1"], "kfac_like": kfac_like}
    model = make_mlp(torch.float32)
    opt = SINGD(model, T=2, structures=spec, preconditioner_dtype=dtype, **hyper)
    batches = make_batches(7, dtype=torch.float32)
    train(model, opt, batches[:3])

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed_model = make_mlp(torch.float32)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = SINGD(resumed_model, T=2, structures=spec, preconditioner_dtype=dtype, **hyper)
    resumed.load_state_dict(checkpoint["opt"])
    assert resumed.step_count == 3
    assert resumed.state_bytes() == opt.state_bytes()

    train(model, opt, batches[3:])
    train(resumed_model, resumed, batches[3:])
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_tensor_keys_are_prefixed() -> None:
    model = make_mlp()
    opt = SINGD(model, T=1, structures="diagonal", **HYPER)
    train(model, opt, make_batches(1))
    layers = opt.state_dict()["layers"]
    assert set(layers) == {"0", "2"}
    assert set(layers["0"]) == {"K.diag", "C.diag", "m_K.diag", "m_C.diag"}


def test_model_double_after_construction() -> None:
    model = make_mlp(torch.float32)
    opt = SINGD(model, T=1, **HYPER)
    train(model, opt, make_batches(2, dtype=torch.float32))
    assert opt.layer_state["0"]["K"].dtype == torch.float32
    model.double()
    losses = train(model, opt, make_batches(3))
    assert all(math.isfinite(v) for v in losses)
    assert all(m.dtype == torch.float64 for f in opt.layer_state.values() for m in f.values())


def test_model_double_before_first_step_matches_float64_construction() -> None:
    model, reference_model = make_mlp(torch.float32), make_mlp(torch.float64)
    opt = SINGD(model, T=1, **HYPER)
    model.double()
    reference = SINGD(reference_model, T=1, **HYPER)
    train(model, opt, make_batches(3))
    train(reference_model, reference, make_batches(3))
    for p, q in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_plain_parameters_get_momentum_sgd_update() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)).double()
    opt = SINGD(model, T=1, **HYPER)
    norm = model[1]
    before = norm.weight.detach().clone()
    x, y = make_batches(1)[0]
    F.cross_entropy(model(x[:, :4]), y % 3).backward()
    expected = before - HYPER["lr"] * (norm.weight.grad + HYPER["weight_decay"] * before)
    opt.step()
    torch.testing.assert_close(norm.weight.detach(), expected)
    rows = {row["name"]: row for row in opt.describe()}
    assert not rows["1.weight"]["preconditioned"] and rows["0.weight"]["preconditioned"]


# ----- presets and arguments -----------------------------------------------------------


def test_presets() -> None:
    model = make_mlp()
    ingd = SINGD.ingd(model, lr=0.1)
    assert ingd.describe()[0]["how"] == "INGD(alpha1=0.5)"
    ikfac = SINGD.ikfac(model, lr=0.1)
    assert ikfac.hyper["kfac_like"] and ikfac.hyper["alpha1"] == 0.0
    assert ikfac.describe()[0]["how"] == "IKFAC"
    sikfac = SINGD.sikfac(model, structures=("diagonal", {"name": "block_diagonal", "k": 30}))
    assert sikfac.describe()[0]["how"] == "SIKFAC(K=diagonal, C=block_diagonal(k=7))"
    with pytest.raises(ValueError, match="alpha1"):
        SINGD.ikfac(model, alpha1=0.5)
    with pytest.raises(ValueError, match="structures"):
        SINGD.ingd(model, structures="diagonal")


def test_kfac_like_with_alpha1_warns_and_uses_zero() -> None:
    with pytest.warns(UserWarning, match="alpha1"):
        opt = SINGD(make_mlp(), kfac_like=True, alpha1=0.5)
    assert opt.hyper["alpha1"] == 0.0


@pytest.mark.parametrize(
    "value, dtype",
    [("bfloat16", torch.bfloat16), ("float16", torch.float16), (torch.float32, torch.float32)],
)
def test_preconditioner_dtype(value, dtype) -> None:
    model = make_mlp(torch.float32)
    opt = SINGD(model, T=1, preconditioner_dtype=value, **HYPER)
    train(model, opt, make_batches(1, dtype=torch.float32))
    assert all(m.dtype == dtype for f in opt.layer_state.values() for m in f.values())


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"structures": "nope"}, "structures"),
        ({"structures": {"name": "block_diagonal", "k": 0}}, "structures"),
        ({"structures": ("dense",)}, "structures"),
        ({"structures": 3}, "structures"),
        ({"alpha1": 1.0}, "alpha1"),
        ({"alpha1": -0.1}, "alpha1"),
        ({"lr_cov": -1e-3}, "lr_cov"),
        ({"damping": -1.0}, "damping"),
        ({"lr": -0.1}, "lr"),
        ({"T": 0}, "T"),
        ({"T": 1.5}, "T"),
        ({"kfac_like": "yes"}, "kfac_like"),
        ({"preconditioner_dtype": torch.int32}, "preconditioner_dtype"),
        ({"preconditioner_dtype": "bf17"}, "preconditioner_dtype"),
        ({"kfac_approx": "shrink"}, "kfac_approx"),
    ],
)
def test_bad_arguments(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}="):
        SINGD(make_mlp(), **kwargs)
