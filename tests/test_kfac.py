"""KFAC: the dense Kronecker formula, inverse variants, training, resume, reporting, errors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from optim import KFAC
from optim.kfac import INVERSES, rs_kfac, sre_kfac

F64 = torch.float64

# Tiny tensors: one intra-op thread is faster and immune to a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_linear_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = nn.Linear(3, 2).to(F64)
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    y = torch.randn(6, 2, generator=gen, dtype=F64)
    return layer, x, y


def independent_factors(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor):
    """``U``, ``G`` and the ``d_out x d_in`` gradient matrix, for a batch-mean loss."""
    out = layer(x)
    out.retain_grad()
    loss = 0.5 * (out - y).square().sum(1).mean()
    loss.backward()
    a = torch.cat([x, torch.ones(len(x), 1, dtype=F64)], 1)
    per_sample = out.grad * len(x)  # gradient of each sample's own loss
    u = a.T @ a / len(x)
    g = per_sample.T @ per_sample / len(x)
    grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1)
    return u, g, grad


def dense_kfac_direction(s_k, s_c, grad, damping):
    """``((S_K + lambda I) kron (S_C + lambda I))^-1 vec(grad)``, column-major ``vec``."""
    eye_k, eye_c = torch.eye(len(s_k), dtype=F64), torch.eye(len(s_c), dtype=F64)
    curvature = torch.kron(s_k + damping * eye_k, s_c + damping * eye_c)
    vec = grad.T.reshape(-1)  # stacks the columns of grad
    return torch.linalg.solve(curvature, vec).reshape(grad.shape[1], grad.shape[0]).T


@pytest.mark.parametrize("inverse", ["eigh", "cholesky"])
def test_two_steps_equal_dense_kronecker_formula(inverse):
    layer, x, y = tiny_linear_problem()
    ema, damping, lr = 0.3, 0.05, 0.7
    opt = KFAC(layer, lr=lr, momentum=0.0, damping=damping, ema=ema, T=1, inverse=inverse)
    s_k, s_c = torch.eye(4, dtype=F64), torch.eye(2, dtype=F64)
    for step in range(2):
        batch = slice(3 * step, 3 * step + 3)
        opt.zero_grad()
        before = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone()
        u, g, grad = independent_factors(layer, x[batch], y[batch])
        opt.step()
        s_k, s_c = (1 - ema) * s_k + ema * u, (1 - ema) * s_c + ema * g
        after = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
        expected = before - lr * dense_kfac_direction(s_k, s_c, grad, damping)
        torch.testing.assert_close(after, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.layer_state[""]["S_K"], s_k)


def step_once(inverse: str, **kwargs) -> torch.Tensor:
    layer, x, y = tiny_linear_problem(seed=1)
    opt = KFAC(layer, lr=1.0, momentum=0.0, damping=1e-3, T=1, inverse=inverse, **kwargs)
    independent_factors(layer, x, y)
    opt.step()
    return torch.cat([layer.weight, layer.bias[:, None]], 1).detach()


def test_eigh_and_cholesky_agree():
    torch.testing.assert_close(step_once("cholesky"), step_once("eigh"), rtol=1e-6, atol=1e-6)


class Wide(nn.Module):
    """One wide layer whose factors (with ema=1) have rank <= batch size = 3."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 10, bias=False)

    def forward(self, x):
        return self.fc(x)


@pytest.mark.parametrize("inverse", ["rsvd", "srevd"])
def test_randomized_with_full_rank_equals_exact(inverse):
    """``rank`` >= the factors' true rank: eq. (13) reproduces exact KFAC."""
    results = {}
    for method in ("eigh", inverse):
        torch.manual_seed(0)
        model = Wide().to(F64)
        gen = torch.Generator().manual_seed(3)
        x, y = (
            torch.randn(3, 12, generator=gen, dtype=F64),
            torch.randn(3, 10, generator=gen, dtype=F64),
        )
        opt = KFAC(
            model,
            lr=1.0,
            momentum=0.0,
            damping=0.1,
            ema=1.0,
            T=1,
            inverse=method,
            rank=4,
            oversample=2,
            power_iters=2,
        )
        (0.5 * (model(x) - y).square().sum(1).mean()).backward()
        opt.step()
        results[method] = model.fc.weight.detach()
        if method != "eigh":
            assert {"V_K", "d_K", "V_C", "d_C"} <= set(opt.layer_state["fc"])
    torch.testing.assert_close(results[inverse], results["eigh"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("inverse", ["rsvd", "srevd"])
def test_small_factors_fall_back_to_exact_eigh_with_one_warning(inverse):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = step_once(inverse, rank=3, oversample=1)  # rank + oversample >= 4 and 2
    assert sum("using exact eigh" in str(w.message) for w in caught) == 1
    torch.testing.assert_close(result, step_once("eigh"), rtol=1e-12, atol=1e-12)


# ----- training on synthetic data ---------------------------------------------------------
def synthetic_batches(kind: str, steps: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    if kind == "mlp":
        teacher = torch.randn(8, 3, generator=gen)
        x = torch.randn(64, 8, generator=gen)
    else:
        teacher = torch.randn(2 * 6 * 6, 3, generator=gen)
        x = torch.randn(64, 2, 6, 6, generator=gen)
    y = (x.reshape(64, -1) @ teacher).argmax(1)
    return [
        (x[i % 4 * 16 : i % 4 * 16 + 16], y[i % 4 * 16 : i % 4 * 16 + 16]) for i in range(steps)
    ], (x, y)


def small_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 3),
    )


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("inverse", INVERSES)
def test_training_lowers_the_loss(kind, inverse):
    model = small_model(kind)
    batches, (x_all, y_all) = synthetic_batches(kind, 200)
    opt = KFAC(
        model,
        lr=0.02,
        damping=0.3,
        ema=0.1,
        T=2,
        T_inv=4,
        inverse=inverse,
        rank=6,
        oversample=3,
        power_iters=2,
    )
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        initial = loss_fn(model(x_all), y_all).item()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        final = loss_fn(model(x_all), y_all).item()
    assert final < 0.1 * initial


# ----- resume ------------------------------------------------------------------------------
def run_steps(model, opt, batches):
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("inverse", INVERSES)
def test_state_dict_round_trip_resumes_bit_identically(inverse):
    batches, _ = synthetic_batches("cnn", 14, seed=1)
    options = {
        "lr": 0.05,
        "damping": 0.1,
        "T": 2,
        "T_inv": 3,
        "inverse": inverse,
        "rank": 4,
        "oversample": 2,
        "weight_decay": 1e-3,
    }
    model = small_model("cnn")
    opt = KFAC(model, **options)
    run_steps(model, opt, batches)

    model = small_model("cnn")
    opt = KFAC(model, **options)
    run_steps(model, opt, batches[:7])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    del model, opt
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = small_model("cnn")
    resumed.load_state_dict(checkpoint["model"])
    opt = KFAC(resumed, **options)
    opt.load_state_dict(checkpoint["optim"])
    run_steps(resumed, opt, batches[7:])

    uninterrupted = small_model("cnn")
    opt = KFAC(uninterrupted, **options)
    run_steps(uninterrupted, opt, batches)
    for a, b in zip(resumed.parameters(), uninterrupted.parameters(), strict=True):
        assert torch.equal(a, b)


def test_randomized_step_leaves_global_rng_untouched():
    model = small_model("mlp")
    batches, _ = synthetic_batches("mlp", 2)
    opt = KFAC(model, T=1, inverse="rsvd", rank=4, oversample=2)
    loss = nn.CrossEntropyLoss()(model(batches[0][0]), batches[0][1])
    loss.backward()
    state = torch.get_rng_state()
    opt.step()
    assert torch.equal(torch.get_rng_state(), state)


# ----- plain parameters, reporting, dtypes --------------------------------------------------
def test_plain_parameters_are_updated_and_described():
    model = small_model("cnn")
    model.append(nn.LayerNorm(3))
    norms = {"1.weight", "1.bias", "7.weight", "7.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = KFAC(model, lr=0.1, T=1)
    batches, _ = synthetic_batches("cnn", 1)
    nn.CrossEntropyLoss()(model(batches[0][0]), batches[0][1]).backward()
    opt.step()
    for name, param in model.named_parameters():
        assert not torch.equal(param, before[name]), name
    rows = {row["name"]: row for row in opt.describe()}
    assert set(rows) == set(before)
    assert {n for n, r in rows.items() if not r["preconditioned"]} == norms
    assert "BatchNorm2d" in rows["1.weight"]["how"] and "LayerNorm" in rows["7.bias"]["how"]
    assert rows["0.weight"]["how"] == "KFAC(eigh): S_K 19x19, S_C 8x8"


def test_layer_description_of_randomized_variants():
    model = nn.Sequential(nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10))
    rows = {r["name"]: r["how"] for r in rs_kfac(model).describe()}
    assert rows["0.weight"] == "KFAC(rsvd, rank=220, exact eigh for S_C): S_K 577x577, S_C 64x64"
    rows = {r["name"]: r["how"] for r in sre_kfac(model, rank=7, oversample=2).describe()}
    assert rows["2.weight"] == "KFAC(srevd, rank=7): S_K 65x65, S_C 10x10"


def test_factor_spectra_shapes_and_order():
    model = small_model("cnn")
    opt = KFAC(model, T=1, ema=0.5)
    batches, _ = synthetic_batches("cnn", 1)
    nn.CrossEntropyLoss()(model(batches[0][0]), batches[0][1]).backward()
    opt.step()
    spectra = opt.factor_spectra()
    assert set(spectra) == {"0", "3", "6"}
    expected = {"0": (2 * 9 + 1, 8), "3": (8 * 9 + 1, 8), "6": (8 * 4 + 1, 3)}
    for name, (dim_in, dim_out) in expected.items():
        a, g = spectra[name]["A"], spectra[name]["G"]
        assert a.shape == (dim_in,) and g.shape == (dim_out,)
        assert a.dtype == g.dtype == torch.float32 and a.device.type == "cpu"
        assert torch.all(a[:-1] >= a[1:]) and torch.all(g[:-1] >= g[1:])
        assert torch.all(a > 0.49)  # 0.5 I + 0.5 U with U PSD


@pytest.mark.parametrize("inverse", ["eigh", "rsvd"])
def test_bfloat16_factors(inverse):
    model = small_model("mlp")
    opt = KFAC(model, T=1, inverse=inverse, rank=3, oversample=2, factor_dtype=torch.bfloat16)
    batches, _ = synthetic_batches("mlp", 1)
    nn.CrossEntropyLoss()(model(batches[0][0]), batches[0][1]).backward()
    opt.step()
    state = opt.layer_state["0"]
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


# ----- bad arguments -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,value",
    [
        ("lr", -1.0),
        ("damping", -1e-3),
        ("ema", 0.0),
        ("ema", 1.5),
        ("T", 0),
        ("T_inv", 0),
        ("inverse", "svd"),
        ("rank", 0),
        ("oversample", -1),
        ("power_iters", -1),
        ("kfac_approx", "full"),
        ("loss_average", "sum"),
        ("factor_dtype", torch.int32),
        ("momentum", 1.0),
        ("weight_decay", -0.1),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        KFAC(nn.Linear(2, 2), **{name: value})


def test_randomized_inverse_needs_positive_damping():
    with pytest.raises(ValueError, match="^damping="):
        KFAC(nn.Linear(2, 2), inverse="rsvd", damping=0.0)
