"""``A^T A`` of a stride-1 conv input from shifted products equals the im2col gram."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optim import capture as capture_module
from optim.capture import input_matrix, input_rows
from optim.conv_gram import conv_input_gram
from optim.layers import conv_padding, find_layers
from tests.test_capture import (
    batch_loss,
    conv_patch,
    reference_factors,
    squared_error,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# (kernel, dilation, padding, (H, W)): borders of every kind, maps smaller than the
# kernel's reach, even kernels, asymmetric padding and dilation, 1 x 1 kernels.
GEOMETRIES = [
    ((3, 3), (1, 1), (1, 1), (8, 8)),
    ((3, 3), (1, 1), (1, 1), (2, 2)),
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 3), (1, 1), (0, 0), (5, 4)),
    ((3, 3), (1, 1), (2, 2), (3, 3)),
    ((3, 3), (2, 2), (2, 2), (6, 6)),
    ((5, 3), (1, 2), (2, 1), (7, 6)),
    ((3, 2), (3, 1), (3, 0), (4, 3)),
    ((2, 2), (1, 1), (1, 0), (4, 5)),
    ((1, 1), (1, 1), (0, 0), (3, 3)),
    ((1, 3), (1, 1), (0, 1), (2, 9)),
]


def _conv(kernel, dilation, padding, channels: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(channels, 2, kernel, dilation=dilation, padding=padding, bias=bias).double()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("kernel", "dilation", "padding", "size"), GEOMETRIES)
def test_shift_gram_equals_im2col_gram(kernel, dilation, padding, size, bias) -> None:
    conv = _conv(kernel, dilation, padding, 3, bias)
    layer = find_layers(nn.Sequential(conv))["0"]
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = input_matrix(layer, x, "expand")
    expected = a.T @ a
    got = conv_input_gram(x, kernel, dilation, padding, bias)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_shift_gram_equals_hand_built_patches() -> None:
    """Independent of the im2col code: patches built by loops (``conv_patch``)."""
    conv = _conv((3, 3), (1, 2), (1, 2), 2, True)
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = conv(x)
    rows = [
        torch.cat([conv_patch(sample, conv, oh, ow), sample.new_ones(1)])
        for sample in x
        for oh in range(out.shape[2])
        for ow in range(out.shape[3])
    ]
    a = torch.stack(rows) / len(rows) ** 0.5
    got = conv_input_gram(x, conv.kernel_size, conv.dilation, conv_padding(conv), True)
    torch.testing.assert_close(got, a.T @ a, rtol=1e-12, atol=1e-14)


def test_bfloat16_input_gives_a_float32_gram() -> None:
    x = torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(3))
    low = x.bfloat16()
    got = conv_input_gram(low, (3, 3), (1, 1), (1, 1), True)
    assert got.dtype == torch.float32
    expected = conv_input_gram(low.double(), (3, 3), (1, 1), (1, 1), True)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        conv_input_gram(torch.randn(1, 2, 2, 2), (5, 5), (1, 1), (0, 0), False)


@pytest.mark.parametrize("stride", [1, 2])
def test_layer_rows_gram_skips_the_im2col_for_stride_one(stride, monkeypatch) -> None:
    monkeypatch.setattr(capture_module, "CONV_GRAM_MIN_CHANNELS", 4)
    conv = nn.Conv2d(4, 3, 3, stride=stride, padding=1).double()
    layer = find_layers(nn.Sequential(conv))["0"]
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    rows = input_rows(layer, x, "expand")
    gram = rows.gram()
    assert (rows._matrix is None) == (stride == 1)
    a = input_matrix(layer, x, "expand")
    torch.testing.assert_close(gram, a.T @ a, rtol=1e-12, atol=1e-14)
    assert rows.count == a.shape[0]


@pytest.mark.parametrize("bias", [True, False])
def test_kfac_conv_factors_by_shifts_equal_per_sample_reference(bias, monkeypatch) -> None:
    """KFAC's ``S_K`` (ema 1) of a stride-1 conv equals the per-sample reference."""
    from optim.kfac import KFAC

    monkeypatch.setattr(capture_module, "CONV_GRAM_MIN_CHANNELS", 1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.Tanh(), nn.Conv2d(3, 2, (3, 2), bias=bias)
    ).double()
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        out_shape = model(x).shape
    y = torch.randn(out_shape, dtype=torch.float64)
    opt = KFAC(model, lr=0.0, ema=1.0, T=1)
    locations = out_shape[2] * out_shape[3]
    batch_loss(squared_error, model(x), y, "batch", locations).backward()
    opt.step()
    for name, layer in opt.layers.items():
        ref_u, _ = reference_factors(
            model, layer.module, x, y, squared_error, "batch", "expand", locations
        )
        torch.testing.assert_close(opt.layer_state[name]["S_K"], ref_u, rtol=1e-10, atol=1e-12)
