"""SENG against dense damped empirical-Fisher solves built from autograd per-sample gradients."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from optim.layers import find_layers
from optim.seng import (
    SENG,
    explicit_gram,
    factored_gram,
    sample_indices,
    truncate_rank,
)

EXACT = {
    "lr": 1.0,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "damping": 0.3,
    "col_sample_size": None,
    "svd_rank": None,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscription on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ROUTES = {"explicit": {"explicit_max_numel": 10**9}, "factored": {"explicit_max_numel": 0}}


# ----- dense references -----------------------------------------------------------------
def layer_matrices(model: nn.Module) -> dict[str, Tensor]:
    """Every preconditioned layer's ``[W | b]`` as a ``d_out x d_in`` matrix (copied)."""
    out = {}
    for name, layer in find_layers(model).items():
        weight = layer.weight.detach().reshape(layer.dim_out, -1)
        if layer.bias is not None:
            weight = torch.cat([weight, layer.bias.detach()[:, None]], dim=1)
        out[name] = weight.clone()
    return out


def per_sample_gradients(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> dict[str, Tensor]:
    """``m x D`` gradients of each sample's own loss, per layer, by autograd one at a time.

    Runs on a copy without the optimizer's hooks, so nothing is recorded.
    """
    net = copy.deepcopy(model)
    for module in net.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    layers = find_layers(net)
    params = [p for layer in layers.values() for p in layer.params]
    rows: dict[str, list[Tensor]] = {name: [] for name in layers}
    for i in range(x.shape[0]):
        loss = loss_fn(net(x[i : i + 1]), y[i : i + 1])
        grads = iter(torch.autograd.grad(loss, params))
        for name, layer in layers.items():
            matrix = next(grads).reshape(layer.dim_out, -1)
            if layer.bias is not None:
                matrix = torch.cat([matrix, next(grads)[:, None]], dim=1)
            rows[name].append(matrix.reshape(-1))
    return {name: torch.stack(r) for name, r in rows.items()}


def dense_direction(samples: Tensor, fisher_scale: float, grad: Tensor, damping: float) -> Tensor:
    """``(c sum_i p_i p_i^T + lambda I)^-1 g`` with a dense ``D x D`` solve."""
    fisher = fisher_scale * samples.T @ samples
    eye = torch.eye(fisher.shape[0], dtype=fisher.dtype)
    return torch.linalg.solve(fisher + damping * eye, grad)


def check_step_is_dense_solve(model: nn.Module, x: Tensor, y: Tensor, **kwargs) -> None:
    """One SENG step (lr 1, no momentum/decay) moves every layer by the dense solve."""
    m = x.shape[0]
    opt = SENG(model, **{**EXACT, **kwargs})
    samples = per_sample_gradients(model, x, y)
    before = layer_matrices(model)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    after = layer_matrices(model)
    for name, matrix in before.items():
        grad = samples[name].mean(dim=0)
        expected = dense_direction(samples[name], 1.0 / m, grad, opt.hyper["damping"])
        torch.testing.assert_close(
            (matrix - after[name]).reshape(-1), expected, rtol=1e-9, atol=1e-11
        )


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5, bias=False)).double()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 4, 2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).double()


def data(m: int, shape: tuple[int, ...], classes: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(m, *shape, generator=generator, dtype=torch.float64),
        torch.randint(0, classes, (m,), generator=generator),
    )


# ----- exactness without sketching --------------------------------------------------------
@pytest.mark.parametrize("route", list(ROUTES))
def test_linear_step_equals_dense_damped_fisher_solve(route: str) -> None:
    x, y = data(9, (6,), 5)
    check_step_is_dense_solve(mlp(), x, y, **ROUTES[route])


@pytest.mark.parametrize(
    "route,svd_rank", [("explicit", None), ("factored", None), ("factored", 9)]
)
def test_conv_step_equals_dense_damped_fisher_solve(route: str, svd_rank: int | None) -> None:
    # Conv 1 has L = 9 positions, conv 2 L = 4: a rank-9 truncation is still exact.
    x, y = data(7, (2, 5, 5), 3)
    check_step_is_dense_solve(cnn(), x, y, svd_rank=svd_rank, **ROUTES[route])


@pytest.mark.parametrize("route", list(ROUTES))
def test_shared_weights_over_sequence_are_exact_with_expand(route: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), Mean(), nn.Linear(5, 3)).double()
    x, y = data(6, (7, 4), 3)
    check_step_is_dense_solve(model, x, y, **ROUTES[route])


class Mean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


def test_reduce_equals_expand_without_weight_sharing() -> None:
    x, y = data(9, (6,), 5)
    check_step_is_dense_solve(mlp(), x, y, kfac_approx="reduce")


@pytest.mark.parametrize("loss_average", ["batch+sequence", None])
def test_loss_averages_define_the_per_sample_loss(loss_average: str | None) -> None:
    """batch+sequence: psi_i = mean of sample i's token losses; None: F = sum_i p_i p_i^T."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = data(5, (6, 4), 3)
    y = torch.randint(0, 3, (5, 6), generator=torch.Generator().manual_seed(2))
    reduction = "sum" if loss_average is None else "mean"

    def loss_fn(out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out.reshape(-1, 3), target.reshape(-1), reduction=reduction)

    opt = SENG(model, **{**EXACT, "loss_average": loss_average})
    samples = per_sample_gradients(model, x, y, loss_fn)
    before = layer_matrices(model)
    loss_fn(model(x), y).backward()
    opt.step()
    after = layer_matrices(model)
    scale = 1.0 if loss_average is None else 1.0 / 5
    for name, matrix in before.items():
        grad = samples[name].sum(dim=0) * scale
        expected = dense_direction(samples[name], scale, grad, EXACT["damping"])
        torch.testing.assert_close((matrix - after[name]).reshape(-1), expected)


def test_curvature_is_reused_until_the_next_update_and_damping_change_reinverts() -> None:
    """Steps 1, 2 use F from step 0's batch and parameters; step 3 recomputes it."""
    model = mlp()
    batches = [data(8, (6,), 5, seed=s) for s in range(4)]
    opt = SENG(model, **{**EXACT, "update_freq": 3})
    fisher_samples = None
    for step, (x, y) in enumerate(batches):
        samples = per_sample_gradients(model, x, y)
        if step % 3 == 0:
            fisher_samples = samples
        if step == 2:
            opt.param_groups[0]["damping"] = 0.7  # re-inverts the stored K
        before = layer_matrices(model)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        after = layer_matrices(model)
        for name, matrix in before.items():
            grad = samples[name].mean(dim=0)
            expected = dense_direction(fisher_samples[name], 1 / 8, grad, opt.hyper["damping"])
            torch.testing.assert_close((matrix - after[name]).reshape(-1), expected)


def test_direction_before_any_statistics_is_gradient_over_damping() -> None:
    model = mlp()
    opt = SENG(model, **EXACT)
    x, y = data(4, (6,), 5)
    opt.step_count = 1  # not an update step: nothing recorded
    before = layer_matrices(model)
    F.cross_entropy(model(x), y).backward()
    grads = {name: layer.grad_matrix().clone() for name, layer in opt.layers.items()}
    opt.step()
    for name, matrix in layer_matrices(model).items():
        torch.testing.assert_close(before[name] - matrix, grads[name] / EXACT["damping"])


# ----- sketching --------------------------------------------------------------------------
@pytest.mark.parametrize("scaling,exponent", [("unbiased", 0.5), ("reference", 1.0)])
def test_sketched_explicit_route_matches_formula(scaling: str, exponent: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 9)).double()  # D = 9 * 13 = 117 > 5^2 sampled entries
    x, y = data(6, (12,), 9)
    opt = SENG(model, **{**EXACT, "col_sample_size": 5, "sketch_scaling": scaling})
    samples = per_sample_gradients(model, x, y)
    before = layer_matrices(model)["0"].reshape(-1)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    cols = opt.layer_state["0"]["cols"]
    assert cols.numel() == 25
    u = samples["0"] / 6**0.5
    grad = samples["0"].mean(dim=0)
    scale = (117 / 25) ** exponent
    u_sketch, grad_sketch = u[:, cols] * scale, grad[cols] * scale
    gram = u_sketch @ u_sketch.T + EXACT["damping"] * torch.eye(6, dtype=torch.float64)
    expected = (grad - u.T @ torch.linalg.solve(gram, u_sketch @ grad_sketch)) / EXACT["damping"]
    torch.testing.assert_close(before - layer_matrices(model)["0"].reshape(-1), expected)


@pytest.mark.parametrize("scaling,exponent", [("unbiased", 0.5), ("reference", 1.0)])
def test_sketched_factored_route_matches_formula(scaling: str, exponent: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(11, 10)).double()
    x, y = data(6, (11,), 10)
    opt = SENG(
        model, **{**EXACT, "col_sample_size": 4, "explicit_max_numel": 0, "sketch_scaling": scaling}
    )
    samples = per_sample_gradients(model, x, y)
    before = layer_matrices(model)["0"]
    F.cross_entropy(model(x), y).backward()
    opt.step()
    rows_out, rows_in = opt.layer_state["0"]["rows_out"], opt.layer_state["0"]["rows_in"]
    u = samples["0"].reshape(6, 10, 12) / 6**0.5
    grad = samples["0"].mean(dim=0).reshape(10, 12)
    scale = ((10 / 4) * (12 / 4)) ** exponent
    u_sketch = u[:, rows_out][:, :, rows_in].reshape(6, -1) * scale
    grad_sketch = grad[rows_out][:, rows_in].reshape(-1) * scale
    gram = u_sketch @ u_sketch.T + EXACT["damping"] * torch.eye(6, dtype=torch.float64)
    coefficients = torch.linalg.solve(gram, u_sketch @ grad_sketch)
    expected = (grad - (u.reshape(6, -1).T @ coefficients).reshape(10, 12)) / EXACT["damping"]
    torch.testing.assert_close(before - layer_matrices(model)["0"], expected)


def test_unbiased_sketches_average_to_the_exact_gram() -> None:
    generator = torch.Generator().manual_seed(0)
    m, d_out, d_in, p = 3, 6, 8, 2
    g_fac = torch.randn(m, d_out, p, generator=generator, dtype=torch.float64)
    a_fac = torch.randn(m, d_in, p, generator=generator, dtype=torch.float64)
    u = torch.bmm(g_fac, a_fac.transpose(1, 2)).reshape(m, -1)
    exact = u @ u.T
    torch.testing.assert_close(factored_gram(g_fac, a_fac, None, None, 0.5), exact)
    draws = 4000
    explicit = sum(explicit_gram(u, sample_indices(48, 12, generator), 0.5) for _ in range(draws))
    factored = sum(
        factored_gram(
            g_fac,
            a_fac,
            sample_indices(d_out, 3, generator),
            sample_indices(d_in, 4, generator),
            0.5,
        )
        for _ in range(draws)
    )
    for mean in (explicit / draws, factored / draws):
        assert (mean - exact).norm() < 0.05 * exact.norm()


def test_reference_scaling_is_unbiased_times_ratio() -> None:
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    cols = sample_indices(40, 10, generator)
    torch.testing.assert_close(explicit_gram(u, cols, 1.0), 4.0 * explicit_gram(u, cols, 0.5))


def test_truncate_rank_is_best_low_rank_approximation_of_output_factor() -> None:
    generator = torch.Generator().manual_seed(0)
    g_fac = torch.randn(4, 5, 9, generator=generator, dtype=torch.float64)
    a_fac = torch.randn(4, 7, 9, generator=generator, dtype=torch.float64)
    assert truncate_rank(g_fac, a_fac, 9)[0] is g_fac
    g_low, a_low = truncate_rank(g_fac, a_fac, 2)
    assert g_low.shape == (4, 5, 2) and a_low.shape == (4, 7, 2)
    left, values, right_t = torch.linalg.svd(g_fac, full_matrices=False)
    best = left[:, :, :2] @ torch.diag_embed(values[:, :2]) @ right_t[:, :2, :]
    torch.testing.assert_close(g_low @ a_low.transpose(1, 2), best @ a_fac.transpose(1, 2))


def test_sample_indices() -> None:
    generator = torch.Generator().manual_seed(0)
    index = sample_indices(50, 7, generator)
    assert index.numel() == 7 and index.unique().numel() == 7 and bool((index.diff() > 0).all())
    assert sample_indices(5, 7, generator) is None and sample_indices(5, None, generator) is None


# ----- training, state, configuration ------------------------------------------------------
class SmallNet(nn.Module):
    """Conv (factored route at the test's threshold) + Linear layers, all larger than s = 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8 * 6 * 6)
        self.fc1 = nn.Linear(8 * 6 * 6, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(torch.relu(self.conv(x)).flatten(1))
        return self.fc2(torch.tanh(self.fc1(h)))


def synthetic(steps: int, batch_size: int = 32) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(3)
    teacher = torch.randn(3 * 6 * 6, 4, generator=generator)
    batches = []
    for _ in range(steps):
        x = torch.randn(batch_size, 3, 6, 6, generator=generator)
        batches.append((x, (x.flatten(1) @ teacher).argmax(dim=1)))
    return batches


SKETCHED = {
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "damping": 2.0,
    "update_freq": 10,
    "col_sample_size": 4,
    "svd_rank": 8,
    "explicit_max_numel": 100,
}


def train(model: nn.Module, opt: SENG, batches: list[tuple[Tensor, Tensor]]) -> list[float]:
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("scaling,col_sample_size", [("unbiased", 4), ("reference", 8)])
def test_loss_decreases_with_sketching(scaling: str, col_sample_size: int) -> None:
    torch.manual_seed(0)
    model = SmallNet()
    opt = SENG(model, **{**SKETCHED, "col_sample_size": col_sample_size}, sketch_scaling=scaling)
    routes = {row["name"]: row["how"] for row in opt.describe()}
    assert "factored" in routes["conv.weight"] and "explicit" in routes["fc2.weight"]
    assert "factored" in routes["fc1.weight"] and "plain" in routes["norm.weight"]
    losses = train(model, opt, synthetic(200))
    assert "rows_in" in opt.layer_state["conv"] and "cols" in opt.layer_state["fc2"]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)


def test_state_dict_round_trip_continues_identically_and_global_rng_untouched() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    opt = SENG(model, **{**SKETCHED, "update_freq": 3})
    batches = synthetic(12)
    rng = torch.get_rng_state()
    train(model, opt, batches[:7])
    assert torch.equal(rng, torch.get_rng_state())
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = SmallNet()
    resumed.load_state_dict(saved["model"])
    resumed_opt = SENG(resumed, **{**SKETCHED, "update_freq": 3})
    resumed_opt.load_state_dict(saved["opt"])
    train(model, opt, batches[7:])
    train(resumed, resumed_opt, batches[7:])  # steps 9 (update, new sketch) included
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed_opt.state_bytes() == opt.state_bytes() > 0


def test_sketch_depends_on_seed() -> None:
    states = []
    for seed in (0, 1):
        torch.manual_seed(0)
        model = SmallNet()
        opt = SENG(model, **SKETCHED, seed=seed)
        train(model, opt, synthetic(1))
        states.append(opt.layer_state["fc2"]["cols"])
    assert not torch.equal(states[0], states[1])


def test_gradient_accumulation_concatenates_samples() -> None:
    model = mlp()
    twin = copy.deepcopy(model)
    x, y = data(8, (6,), 5)
    opt = SENG(model, **EXACT)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    twin_opt = SENG(twin, **EXACT)
    for part in (slice(0, 3), slice(3, 8)):  # unequal passes, each its own batch mean
        F.cross_entropy(twin(x[part]), y[part]).backward()
    twin_opt.step()
    for name, state in opt.layer_state.items():
        torch.testing.assert_close(twin_opt.layer_state[name]["gram"], state["gram"])


def test_plain_parameters_get_plain_update() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    opt = SENG(model, **{**SKETCHED, "momentum": 0.0, "weight_decay": 0.0})
    x, y = synthetic(1)[0]
    F.cross_entropy(model(x), y).backward()
    weight, grad = model.norm.weight.detach().clone(), model.norm.weight.grad.clone()
    opt.step()
    torch.testing.assert_close(model.norm.weight.detach(), weight - opt.hyper["lr"] * grad)


def test_bfloat16_autocast_step_is_finite() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    opt = SENG(model, **SKETCHED)
    x, y = synthetic(1)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.layer_state["conv"]["gram"].dtype == torch.float32


def test_config_builds_seng() -> None:
    from experiments.optimizers import build_optimizer

    cfg = OmegaConf.load("conf/optimizer/seng.yaml")
    opt = build_optimizer(cfg, SmallNet())
    assert isinstance(opt, SENG)
    assert opt.hyper["lr"] == 0.05 and opt.hyper["damping"] == 2.0 and opt.hyper["T"] == 200
    assert opt.hyper["weight_decay"] == 1e-2 and opt.col_sample_size == 128
    assert opt.sketch_scaling == "reference"


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"damping": 0.0}, "damping"),
        ({"update_freq": 0}, "update_freq"),
        ({"update_freq": 2.5}, "update_freq"),
        ({"col_sample_size": 0}, "col_sample_size"),
        ({"svd_rank": 0}, "svd_rank"),
        ({"explicit_max_numel": -1}, "explicit_max_numel"),
        ({"sketch_scaling": "biased"}, "sketch_scaling"),
        ({"kfac_approx": "mean"}, "kfac_approx"),
        ({"loss_average": "sum"}, "loss_average"),
        ({"seed": -1}, "seed"),
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_bad_arguments(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        SENG(mlp(), **kwargs)


def _data_parallel_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = nn.parallel.DistributedDataParallel(mlp())
    opt = SENG(model, **EXACT)
    x, y = data(8, (6,), 5)
    part = slice(4 * rank, 4 * rank + 4)
    F.cross_entropy(model(x[part]), y[part]).backward()
    opt.step()
    if rank == 0:
        torch.save(layer_matrices(model.module), out_file)
    dist.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_gathers_samples_into_the_full_batch_preconditioner(tmp_path) -> None:
    """Two gloo ranks with 4 samples each take the single-process 8-sample step."""
    out_file = str(tmp_path / "params.pt")
    torch.multiprocessing.spawn(
        _data_parallel_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2
    )
    model = mlp()
    opt = SENG(model, **EXACT)
    x, y = data(8, (6,), 5)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    distributed = torch.load(out_file, weights_only=True)
    for name, matrix in layer_matrices(model).items():
        torch.testing.assert_close(distributed[name], matrix)
