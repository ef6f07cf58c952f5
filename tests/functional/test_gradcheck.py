"""Central-difference gradient checks (float64) of conv2d and both pools.

The loss is L = sum(f(x) * r) for a fixed random r, so dL/d(output) = r is what the backward functions
receive; each partial derivative of L is then estimated as (L(x + eps) - L(x - eps)) / (2 eps).
"""
import numpy as np
import pytest

import cnnext.functional as F
from helpers import numerical_gradient, rng_for
from naive_oracle import CONV_CASES

RTOL, ATOL = 1e-6, 1e-7


def check(analytic, numeric):
    assert analytic.shape == numeric.shape
    scale = max(1.0, float(np.abs(numeric).max()))
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL * scale)


def test_numerical_gradient_helper_itself():
    a = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(numerical_gradient(lambda: float(np.sum(a ** 3)), a), 3 * a ** 2,
                               rtol=1e-8)


@pytest.mark.parametrize("case_id", ["basic3x3", "stride21_pad10_nonsquare", "dilation21",
                                     "groups2_stride2", "depthwise_mult2_dilated", "pointwise",
                                     "1x1_stride2", "same_even_asym", "kernel_gt_input_padded"])
def test_conv2d_gradcheck(case_id):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups, _ = CONV_CASES[case_id]
    rng = rng_for("gradcheck", case_id)
    N = 1  # keeps the number of perturbations small; batching is covered by the oracle tests
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, kh, kw))
    b = rng.standard_normal(K)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    r = rng.standard_normal(F.conv2d(x, w, b, **params).shape)

    def loss():
        return float(np.sum(F.conv2d(x, w, b, **params) * r))

    gx, gw, gb = F.conv2d_backward(r, x, w, **params)
    check(gx, numerical_gradient(loss, x))
    check(gw, numerical_gradient(loss, w))
    check(gb, numerical_gradient(loss, b))


def distinct_values(rng, shape):
    """Values without ties (a scaled permutation, gaps of 0.1 >> the 1e-6 step): max pooling is differentiable."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - 10.0) * 0.1


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True),
], ids=["2x2", "2x2_ceil", "3x3s2p1", "3x3s1_overlap", "mixed"])
def test_max_pool2d_gradcheck(kw):
    rng = rng_for("gradcheck-max", repr(kw))
    x = distinct_values(rng, (2, 2, 5, 5))
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(F.max_pool2d(x, **kw) * r))

    check(F.max_pool2d_backward(r, idx, x.shape), numerical_gradient(loss, x))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True),
], ids=["2x2", "2x2_ceil", "3x3s2p1", "3x3s1p1", "mixed_ceil"])
def test_avg_pool2d_gradcheck(kw, count_include_pad):
    rng = rng_for("gradcheck-avg", repr(kw), count_include_pad)
    x = rng.standard_normal((2, 2, 5, 5))
    kw = dict(kw, count_include_pad=count_include_pad)
    r = rng.standard_normal(F.avg_pool2d(x, **kw).shape)

    def loss():
        return float(np.sum(F.avg_pool2d(x, **kw) * r))

    check(F.avg_pool2d_backward(r, x.shape, **kw), numerical_gradient(loss, x))
