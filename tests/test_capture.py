"""Kronecker statistics from the capture hooks vs. an independent per-sample computation.

The reference loops over samples and locations in Python: the input vector ``a`` of
every (sample, location) pair is built by hand (explicit zero padding, stride and
dilation for convolutions), and the output gradients come from one autograd call
per sample on that sample's own loss term. With ``m`` loss terms and ``L`` the loss,
the documented factors are

* expand: ``U = mean over rows of a a^T``, ``G = m sum_rows (dL/dy)(dL/dy)^T``;
* reduce: rows are samples, ``a`` = mean over locations, ``dL/dy`` summed over them;

(``m`` = batch size, batch size x locations, or 1 for a summed loss).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optim.capture import CurvatureCapture
from optim.kfac import KFAC
from optim.layers import find_layers

DTYPE = torch.float64

# Tiny tensors: one intra-op thread is faster and immune to a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


# ----- reference ------------------------------------------------------------------------
def conv_patch(x: torch.Tensor, conv: nn.Conv2d, oh: int, ow: int) -> torch.Tensor:
    """Input vector of output location ``(oh, ow)`` of one sample ``x`` [C, H, W], loops only."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
    )
    values = []
    for c in range(x.shape[0]):
        for i in range(kh):
            for j in range(kw):
                h, w = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                inside = 0 <= h < x.shape[1] and 0 <= w < x.shape[2]
                values.append(x[c, h, w] if inside else x.new_zeros(()))
    return torch.stack(values)


def sample_rows(
    module: nn.Module, layer_in: torch.Tensor, layer_out_grad: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-location input vectors ``a`` (bias 1 appended) and output gradients of one sample."""
    inputs, grads = [], []
    if isinstance(module, nn.Conv2d):
        for oh in range(layer_out_grad.shape[1]):
            for ow in range(layer_out_grad.shape[2]):
                inputs.append(conv_patch(layer_in, module, oh, ow))
                grads.append(layer_out_grad[:, oh, ow])
    else:
        flat_in = layer_in.reshape(-1, layer_in.shape[-1])
        flat_grad = layer_out_grad.reshape(-1, layer_out_grad.shape[-1])
        for s in range(flat_in.shape[0]):
            inputs.append(flat_in[s])
            grads.append(flat_grad[s])
    if module.bias is not None:
        inputs = [torch.cat([a, a.new_ones(1)]) for a in inputs]
    return inputs, grads


def reference_factors(
    model: nn.Module,
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sample_loss,
    loss_average: str | None,
    approx: str,
    locations: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``U`` and ``G`` of ``module`` from per-sample forward passes and autograd calls.

    ``sample_loss(output, target)`` is sample ``i``'s summed loss terms; the total loss is
    their mean over the batch (``"batch"``), over batch and locations
    (``"batch+sequence"``, ``locations`` terms per sample) or their sum (``None``).
    (The capture counts each layer's own output locations, so the networks here keep
    the number of locations from layer to layer.)
    """
    batch = x.shape[0]
    rows_in, rows_grad = [], []
    for i in range(batch):
        seen = {}
        handle = module.register_forward_hook(
            lambda mod, inp, out, seen=seen: seen.update(inp=inp[0][0].detach(), out=out)
        )
        output = model(x[i : i + 1])
        handle.remove()
        weight = {"batch": 1.0 / batch, "batch+sequence": 1.0 / (batch * locations), None: 1.0}
        loss_i = weight[loss_average] * sample_loss(output, y[i : i + 1])
        (grad_out,) = torch.autograd.grad(loss_i, seen["out"])
        inputs, grads = sample_rows(module, seen["inp"], grad_out[0])
        if approx == "expand":
            rows_in += inputs
            rows_grad += grads
        else:
            rows_in.append(torch.stack(inputs).mean(0))
            rows_grad.append(torch.stack(grads).sum(0))
    terms = {"batch": batch, "batch+sequence": batch * locations, None: 1}[loss_average]
    input_factor = sum(torch.outer(a, a) for a in rows_in) / len(rows_in)
    grad_factor = terms * sum(torch.outer(g, g) for g in rows_grad)
    return input_factor, grad_factor


# ----- models and losses --------------------------------------------------------------
def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (output - target).square().sum()


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(
        output.reshape(-1, output.shape[-1]), target.reshape(-1), reduction="sum"
    )


def batch_loss(sample_loss, output, target, loss_average: str | None, locations: int):
    total = sample_loss(output, target)
    if loss_average == "batch":
        return total / output.shape[0]
    if loss_average == "batch+sequence":
        return total / (output.shape[0] * locations)
    return total


def mlp(bias: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5, bias=bias), nn.Tanh(), nn.Linear(5, 3, bias=bias))


def convnet(bias: bool) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(
            2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=bias
        ),
        nn.Tanh(),
        nn.Conv2d(3, 2, kernel_size=3, padding=1, bias=bias),  # keeps the 3 x 7 locations
    )


def make_case(kind: str, bias: bool):
    """Model, inputs, targets, per-sample loss and loss locations of one test case."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "linear":
        model = mlp(bias)
        x = torch.randn(5, 4, generator=gen)
        y = torch.randint(0, 3, (5,), generator=gen)
        return model.to(DTYPE), x.to(DTYPE), y, cross_entropy, 1
    if kind == "sequence":
        model = mlp(bias)
        x = torch.randn(3, 4, 4, generator=gen)
        y = torch.randint(0, 3, (3, 4), generator=gen)
        return model.to(DTYPE), x.to(DTYPE), y, cross_entropy, 4
    model = convnet(bias).to(DTYPE)
    x = torch.randn(3, 2, 6, 5, generator=gen, dtype=DTYPE)
    with torch.no_grad():
        out_shape = model(x).shape
    y = torch.randn(out_shape, generator=gen, dtype=DTYPE)
    return model, x, y, squared_error, out_shape[2] * out_shape[3]


def _gram(layer, rows):
    return rows.matrix().T @ rows.matrix()


def captured_factors(
    model, x, y, sample_loss, loss_average, approx, locations, passes=1, stat=_gram
):
    layers = find_layers(model)
    capture = CurvatureCapture(layers, approx, loss_average, stat, stat, lambda: True)
    for chunk_x, chunk_y in zip(x.chunk(passes), y.chunk(passes), strict=True):
        batch_loss(sample_loss, model(chunk_x), chunk_y, loss_average, locations).backward()
    capture.remove()
    return {name: capture.pop(name) for name in layers}


CASES = [
    (kind, approx) for kind in ("linear", "sequence", "conv") for approx in ("expand", "reduce")
]


@pytest.mark.parametrize("loss_average", ["batch", "batch+sequence", None])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,approx", CASES)
def test_factors_match_per_sample_reference(kind, approx, bias, loss_average):
    model, x, y, sample_loss, locations = make_case(kind, bias)
    factors = captured_factors(model, x, y, sample_loss, loss_average, approx, locations)
    assert set(factors) == {"0", "2"}
    for name, (input_factor, grad_factor) in factors.items():
        module = model.get_submodule(name)
        ref_u, ref_g = reference_factors(
            model, module, x, y, sample_loss, loss_average, approx, locations
        )
        torch.testing.assert_close(input_factor, ref_u, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_factor, ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_average", ["batch", "batch+sequence", None])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind,approx", CASES)
def test_column_square_sums_equal_factor_diagonals(kind, approx, bias, loss_average):
    """``diag(A^T A)`` without the matrix (conv: window sums of ``x^2``) = the factor diagonal."""
    model, x, y, sample_loss, locations = make_case(kind, bias)
    args = (model, x, y, sample_loss, loss_average, approx, locations)
    factors = captured_factors(*args)

    def diagonal_only(layer, rows):
        diagonal = rows.column_square_sums()
        if approx == "expand":  # answered without building the (large) rows
            assert rows._matrix is None
        return diagonal

    diagonals = captured_factors(*args, stat=diagonal_only)
    for name, (input_factor, grad_factor) in factors.items():
        torch.testing.assert_close(diagonals[name][0], input_factor.diagonal(), rtol=1e-10, atol=0)
        torch.testing.assert_close(diagonals[name][1], grad_factor.diagonal(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("loss_average", ["batch", None])
@pytest.mark.parametrize("kind,approx", [("sequence", "expand"), ("conv", "reduce")])
def test_gradient_accumulation_matches_one_big_batch(kind, approx, loss_average):
    """Two half-batch passes (each loss over its own half) combine to the full-batch factors."""
    model, x, y, sample_loss, locations = make_case(kind, True)
    x, y = torch.cat([x, x.flip(0)]), torch.cat([y, y.flip(0)])
    whole = captured_factors(model, x, y, sample_loss, loss_average, approx, locations)
    halves = captured_factors(model, x, y, sample_loss, loss_average, approx, locations, passes=2)
    for name in whole:
        for full, accumulated in zip(whole[name], halves[name], strict=True):
            torch.testing.assert_close(accumulated, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,approx", [("linear", "expand"), ("conv", "expand")])
def test_kfac_factors_with_ema_one_equal_reference(kind, approx):
    model, x, y, sample_loss, locations = make_case(kind, True)
    opt = KFAC(model, lr=0.0, ema=1.0, T=1, kfac_approx=approx)
    batch_loss(sample_loss, model(x), y, "batch", locations).backward()
    opt.step()
    for name, layer in opt.layers.items():
        ref_u, ref_g = reference_factors(
            model, layer.module, x, y, sample_loss, "batch", approx, locations
        )
        torch.testing.assert_close(opt.layer_state[name]["S_K"], ref_u, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(opt.layer_state[name]["S_C"], ref_g, rtol=1e-10, atol=1e-12)


def test_statistics_recorded_only_on_update_steps_and_with_grad():
    model, x, y, sample_loss, locations = make_case("linear", True)
    opt = KFAC(model, lr=1e-2, ema=0.5, T=3)
    recorded = []
    for step in range(7):
        if step == 3:
            with torch.no_grad():
                model(x)  # an evaluation pass on an update step records nothing
            recorded.append(opt.capture.has_stats("0"))
        opt.zero_grad()
        before = opt.layer_state["0"]["S_K"].clone()
        batch_loss(sample_loss, model(x), y, "batch", locations).backward()
        has_stats = opt.capture.has_stats("0")
        opt.step()
        changed = not torch.equal(before, opt.layer_state["0"]["S_K"])
        recorded.append((step, has_stats, changed))
    assert recorded == [
        (0, True, True),
        (1, False, False),
        (2, False, False),
        False,
        (3, True, True),
        (4, False, False),
        (5, False, False),
        (6, True, True),
    ]
