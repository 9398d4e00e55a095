"""Transfer networks of SML (paper 3.2): shapes, sizes, equivalence with a Conv2d reference, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sml_sim.models.transfer import (
    CNNTransfer,
    MLPTransfer,
    WeightedSumTransfer,
    apply_in_chunks,
    build_transfer,
    first_layer_filters,
    transfer_flops_per_row,
)

D = 16  # small rows keep the tests fast; the size formulas are checked at d = 64 too


def rows(n=7, d=D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_cnn_params(d, n1=10, n2=5, conv_layers=2, fc_size=512, use_conv=True, use_fc=True, **_):
    conv, channels = 0, 3
    for k in range(conv_layers if use_conv else 0):
        out = n1 if k == 0 else n2
        conv += out * channels  # F_k: out filters of size channels x 1, no bias
        channels = out
    flat = channels * d
    if use_fc:
        return conv + (flat * fc_size + fc_size) + (fc_size * d + d)  # W_f, b1, W_o, b2
    return conv + flat * d + d


def expected_cnn_macs(d, n1=10, n2=5, conv_layers=2, fc_size=512, use_conv=True, use_fc=True, **_):
    macs, channels = 0, 3
    for k in range(conv_layers if use_conv else 0):
        out = n1 if k == 0 else n2
        macs += out * channels * d  # each filter is applied at the d columns
        channels = out
    flat = channels * d
    return macs + (flat * fc_size + fc_size * d if use_fc else flat * d)


def reference_cnn(m: CNNTransfer, w_prev, w_hat):
    """The paper's picture, built from nn.Conv2d: H0 is a one-channel 3 x d image, F1 are n1 filters
    of size 3 x 1, each further layer sees the previous output as a one-channel (C x d) image."""
    other = w_hat.detach() if m.detach_product else w_hat
    w_dot = w_prev * other / (w_prev.norm(dim=1, keepdim=True) + m.eps)
    x = torch.stack([w_prev, w_hat, w_dot], dim=1).unsqueeze(1)  # [B, 1, 3, d]
    for weight in m.conv:
        out, channels = weight.shape
        conv = nn.Conv2d(1, out, kernel_size=(channels, 1), bias=False).to(weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight.view(out, 1, channels, 1))
        x = F.gelu(conv(x)).transpose(1, 2)  # [B, out, 1, d] -> [B, 1, out, d]
    h = x.flatten(1)  # channel-major flatten
    if m.fc is not None:
        h = F.gelu(F.linear(h, m.fc.weight, m.fc.bias))
    return F.linear(h, m.out.weight, m.out.bias)


@pytest.mark.parametrize("params", [
    {},
    {"use_conv": False},
    {"use_fc": False},
    {"use_conv": False, "use_fc": False},
    {"conv_layers": 1},
    {"conv_layers": 3, "n1": 4, "n2": 6},
    {"fc_size": 32, "detach_product": False},
])
def test_cnn_shapes_params_and_conv2d_equivalence(params):
    torch.manual_seed(1)
    m = CNNTransfer(D, **params).double()
    w_prev, w_hat = rows(dtype=torch.float64)
    out = m(w_prev, w_hat)
    assert out.shape == (7, D) and out.dtype == torch.float64
    assert n_params(m) == expected_cnn_params(D, **params)
    assert transfer_flops_per_row(m) == expected_cnn_macs(D, **params)
    assert torch.allclose(out, reference_cnn(m, w_prev, w_hat), rtol=1e-10, atol=1e-12)


def test_default_cnn_size_at_d64():
    m = CNNTransfer(64)
    # 30 + 50 + (320*512 + 512) + (512*64 + 64): the ~197k of the paper's network
    assert n_params(m) == expected_cnn_params(64) == 197_264
    assert [tuple(w.shape) for w in m.conv] == [(10, 3), (5, 10)]
    assert transfer_flops_per_row(m) == 10 * 3 * 64 + 5 * 10 * 64 + 320 * 512 + 512 * 64
    w_prev, w_hat = rows(3000, 64)
    assert m(w_prev, w_hat).shape == (3000, 64)


def test_conv_init_matches_conv2d_default():
    torch.manual_seed(0)
    m = CNNTransfer(D, n1=200, n2=300)
    for weight in m.conv:
        bound = 1 / math.sqrt(weight.shape[1])  # nn.Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound


def test_gradients_and_detached_product():
    w_prev, w_hat = rows()
    for detach in (True, False):
        torch.manual_seed(2)
        m = CNNTransfer(D, fc_size=32, detach_product=detach)
        wh = w_hat.clone().requires_grad_()
        m(w_prev, wh).square().sum().backward()
        assert wh.grad.abs().sum() > 0
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())

        # Zero the filters' weight on the w_hat row: the only path left to w_hat is the product row.
        with torch.no_grad():
            m.conv[0][:, 1] = 0
        wh = w_hat.clone().requires_grad_()
        m(w_prev, wh).square().sum().backward()
        if detach:
            assert torch.count_nonzero(wh.grad) == 0
        else:
            assert wh.grad.abs().sum() > 0


def test_gradient_matches_reference():
    torch.manual_seed(3)
    m = CNNTransfer(D, fc_size=24).double()
    w_prev, w_hat = rows(dtype=torch.float64)
    wh1, wh2 = w_hat.clone().requires_grad_(), w_hat.clone().requires_grad_()
    (g1,) = torch.autograd.grad(m(w_prev, wh1).sin().sum(), wh1)
    (g2,) = torch.autograd.grad(reference_cnn(m, w_prev, wh2).sin().sum(), wh2)
    assert torch.allclose(g1, g2, rtol=1e-10, atol=1e-12)


def test_weighted_sum():
    w_prev, w_hat = rows()
    fixed = WeightedSumTransfer(D, alpha=0.3)
    assert n_params(fixed) == 0
    assert torch.equal(fixed(w_prev, w_hat), 0.3 * w_prev + (1 - 0.3) * w_hat)
    assert transfer_flops_per_row(fixed) == 2 * D

    learned = WeightedSumTransfer(D, alpha=0.3, learn_alpha=True)
    assert learned.alpha == pytest.approx(0.3)
    assert torch.allclose(learned(w_prev, w_hat), 0.3 * w_prev + 0.7 * w_hat, atol=1e-6)
    learned(w_prev, w_hat).sum().backward()
    assert learned.logit.grad is not None and learned.logit.grad != 0
    with pytest.raises(ValueError):
        WeightedSumTransfer(D, alpha=1.0, learn_alpha=True)


def test_mlp():
    m = MLPTransfer(D, hidden=40)
    w_prev, w_hat = rows()
    assert m(w_prev, w_hat).shape == (7, D)
    assert n_params(m) == (2 * D * 40 + 40) + (40 * D + D)
    assert transfer_flops_per_row(m) == 2 * D * 40 + 40 * D


def test_first_layer_filters():
    f = first_layer_filters(CNNTransfer(D, n1=7))
    assert isinstance(f, np.ndarray) and f.shape == (7, 3)
    assert first_layer_filters(CNNTransfer(D, conv_layers=1)).shape == (10, 3)
    assert first_layer_filters(CNNTransfer(D, use_conv=False)) is None
    assert first_layer_filters(WeightedSumTransfer(D)) is None
    assert first_layer_filters(MLPTransfer(D)) is None


def test_build_transfer():
    assert isinstance(build_transfer("cnn", D, n1=4, use_fc=False), CNNTransfer)
    assert build_transfer("weighted-sum", D, alpha=0.2).alpha == pytest.approx(0.2)
    assert build_transfer("mlp", D, hidden=8).hidden == 8
    with pytest.raises(ValueError, match="unknown transfer kind"):
        build_transfer("gru", D)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_transfer("cnn", D, hidden=8)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_transfer("weighted-sum", D, n1=3)


def test_bad_inputs():
    m = CNNTransfer(D)
    with pytest.raises(ValueError):
        m(torch.zeros(3, D), torch.zeros(3, D + 1))
    with pytest.raises(ValueError):
        m(torch.zeros(3, D + 1), torch.zeros(3, D + 1))
    with pytest.raises(ValueError):
        CNNTransfer(D, conv_layers=0)


def test_apply_in_chunks_matches_one_pass():
    torch.manual_seed(4)
    m = CNNTransfer(D, fc_size=32)
    w_prev, w_hat = rows(1001)
    whole = m(w_prev, w_hat)
    chunked = apply_in_chunks(m, w_prev, w_hat, chunk=128)
    assert not chunked.requires_grad
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert apply_in_chunks(m, w_prev[:0], w_hat[:0]).shape == (0, D)
