"""The register-blocked direct kernels (cnnext/_kernels/_direct.pyx) against the naive float64 oracle.

The shapes are chosen to reach every block of the kernels: output widths below, at and above the
column blocks (8 float64 / 16 float32 columns, then a half and a quarter block, then single
columns), odd and even output heights (rows run in pairs), grad_weight's 1- to 5-wide kernels (its
"output" is the kernel), stride-1 grad_input through the full correlation on the padded
grad_output, and other strides through the scatter kernel.
"""
import numpy as np
import pytest

import cnnext.functional as F
import naive_oracle as oracle
from cnnext import ConvLayer, IdentityActivator, ReluActivator
from cnnext._kernels import _direct
from cnnext._config import force_conv_algorithm
from cnnext._validation import check_conv2d
from cnnext.functional._conv_dispatch import backward_checked
from cnnext.functional import _conv_dispatch
from helpers import assert_partial_backward, same_at_thread_counts
from naive_oracle import assert_close

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def blocked_kernels(monkeypatch):
    """These tests drive the Cython kernels: small stride-1 problems would otherwise go to the
    small-convolution C kernels on AVX2 machines (tested in test_small_direct.py)."""
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_DIRECT", False)
    _conv_dispatch._auto_algorithm.cache_clear()  # its cached choices depend on _NATIVE_DIRECT
    yield
    _conv_dispatch._auto_algorithm.cache_clear()

# (N, C, H, W, K, kh, kw, stride, padding, dilation, groups)
CASES = {
    "lenet1": (1, 1, 28, 28, 6, 5, 5, 1, 0, 1, 1),
    "lenet1_batch": (3, 1, 12, 13, 6, 5, 5, 1, 0, 1, 1),
    "width1": (2, 2, 5, 3, 3, 3, 3, 1, 0, 1, 1),
    "width_blocks": (1, 2, 7, 40, 2, 3, 3, 1, 1, 1, 1),  # Wo 40 = 16 + 16 + 8 / 5 x 8 blocks
    "width_tail": (2, 1, 6, 33, 2, 2, 3, 1, 0, 1, 1),  # Wo 31: every block size, single columns
    "odd_rows": (1, 3, 9, 11, 4, 3, 2, 1, (1, 0), 1, 1),
    "wide_kernel": (1, 2, 10, 12, 3, 1, 5, 1, (0, 2), 1, 1),
    "stride2": (2, 2, 11, 19, 3, 3, 3, 2, 1, 1, 1),
    "stride_1x3": (1, 2, 8, 25, 2, 3, 4, (1, 3), 1, 1, 1),
    "dilated": (1, 2, 12, 21, 3, 3, 3, 1, 2, (2, 3), 1),
    "crop_padding": (1, 1, 6, 7, 2, 2, 2, 1, (1, 2), 1, 1),  # padding > dilation * (k - 1) crops
    "groups3": (2, 6, 9, 17, 6, 3, 3, 1, 1, 1, 3),
    "depthwise_strided": (2, 4, 10, 10, 8, 3, 3, 2, 1, 1, 4),
    "same_even_kernel": (1, 2, 7, 9, 2, 4, 4, 1, "same", 1, 1),  # asymmetric padding
}


def _inputs(case, dtype, seed=0):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups = CASES[case]
    rng = np.random.default_rng([seed, len(case)] + [ord(ch) for ch in case])
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = oracle.conv2d(x, w, b, **params)
    gy = rng.standard_normal(y.shape).astype(dtype)
    return x, w, b, gy, params, y


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_direct_matches_oracle(case, dtype):
    x, w, b, gy, params, want = _inputs(case, dtype)
    with force_conv_algorithm("direct"):
        y = F.conv2d(x, w, b, **params)
        gx, gw, gb = F.conv2d_backward(gy, x, w, **params)
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == np.dtype(dtype)
    assert_close(y, want)
    for got, expected in zip((gx, gw, gb), oracle.conv2d_backward(gy, x, w, **params)):
        assert_close(got, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["lenet1_batch", "width_tail", "stride2", "groups3", "dilated"])
def test_direct_partial_backward(case, dtype):
    x, w, _, gy, params, _ = _inputs(case, dtype)
    want = oracle.conv2d_backward(gy, x, w, **params)
    args = [params.get(k, d) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))]
    x, w, _, g, _ = check_conv2d("t", x, w, None, *args)
    gy = np.ascontiguousarray(gy, dtype=x.dtype)
    with force_conv_algorithm("direct"):
        assert_partial_backward(backward_checked, x, w, gy, g, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["lenet1_batch", "groups3", "stride2", "width_blocks"])
def test_direct_bitwise_identical_for_1_2_3_threads(case, dtype, restore_config):
    # conftest lowers the parallel threshold to 0, so these small calls really split the planes
    x, w, b, gy, params, _ = _inputs(case, dtype)
    with force_conv_algorithm("direct"):
        same_at_thread_counts(lambda: (F.conv2d(x, w, b, **params),) + F.conv2d_backward(gy, x, w, **params),
                              (1, 2, 3))


def test_auto_picks_direct_for_thin_problems():
    def algorithm(shape_x, shape_w, dtype=np.float64, **kw):
        x, w = np.zeros(shape_x, dtype), np.zeros(shape_w, dtype)
        return _conv_dispatch._algorithm(check_conv2d("t", x, w, None, kw.get("stride", 1),
                                                   kw.get("padding", 0), 1,
                                                   kw.get("groups", 1))[3], x.dtype)

    # LeNet conv1, one sample: direct, by the small-convolution kernels where the CPU has AVX2
    small = "small" if _conv_dispatch._NATIVE_DIRECT else "direct"
    assert algorithm((1, 1, 28, 28), (6, 1, 5, 5)) == small
    assert algorithm((64, 1, 28, 28), (6, 1, 5, 5)) == "direct"  # ... and a batch (threaded kernels)
    with force_conv_algorithm("direct"):
        assert algorithm((1, 1, 28, 28), (6, 1, 5, 5), np.float32) == small
        assert algorithm((1, 1, 28, 28), (6, 1, 5, 5), stride=2) == "direct"  # stride 1 only
    # float32: OpenBLAS's GEMM is twice as fast as in float64, and wins
    assert algorithm((64, 1, 28, 28), (6, 1, 5, 5), np.float32) == "gemm"
    assert algorithm((2, 16, 8, 8), (16, 1, 3, 3), np.float32, padding=1, groups=16) == "direct"
    assert algorithm((1, 6, 12, 12), (16, 6, 5, 5)) == "gemm"  # LeNet conv2: 16 filters, 150 taps
    assert algorithm((1, 3, 32, 32), (8, 3, 5, 5)) == "gemm"  # 75 taps
    assert algorithm((2, 16, 8, 8), (16, 1, 3, 3), padding=1, groups=16) == "direct"  # depthwise
    with force_conv_algorithm("gemm"):
        assert algorithm((1, 1, 28, 28), (6, 1, 5, 5)) == "gemm"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("top, bottom, left, right", [(0, 0, 0, 0), (2, 1, 3, 0), (4, 4, 4, 4),
                                                      (-1, 2, 1, -2), (-2, -1, -3, -1)])
def test_pad_planes(top, bottom, left, right, dtype):
    a = np.random.default_rng(3).standard_normal((2, 3, 5, 6)).astype(dtype)
    got = _conv_dispatch._pad_planes(a, top, bottom, left, right)
    want = np.pad(a, [(0, 0), (0, 0), (max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))])
    want = want[:, :, max(-top, 0): want.shape[2] - max(-bottom, 0),
                max(-left, 0): want.shape[3] - max(-right, 0)]
    assert got.flags.c_contiguous and got.dtype == a.dtype
    np.testing.assert_array_equal(got, want)


def test_grad_weight_kernel_without_bias_leaves_it_alone():
    x, w, _, gy, params, _ = _inputs("lenet1_batch", np.float64)
    gw = np.empty_like(w)
    gb = np.full(w.shape[0], 7.0)
    _direct.direct_grad_weight(gy, x, gw, gb, False, 1, 1, 1, 1, 1, 1)
    assert_close(gw, oracle.conv2d_backward(gy, x, w, **params)[1])
    assert (gb == 7.0).all()


# ---------------------------------------------------------------------------- ConvLayer on top


def _relu(a):
    return np.maximum(a, 0)


@pytest.mark.parametrize("shape", [(28, 28, 1, 5, 5, 6, 0, 1),  # the learn_dl benchmark's layer
                                   (9, 7, 2, 3, 3, 4, 1, 1),
                                   (11, 10, 2, 3, 2, 3, 2, 2)])
@pytest.mark.parametrize("batch", [None, 3])
def test_conv_layer_matches_oracle(shape, batch):
    rng = np.random.default_rng(7)
    W, H, C, kw, kh, K, zp, stride = shape
    layer = ConvLayer(W, H, C, kw, kh, K, zp, stride, ReluActivator(), 0.01)
    layer._weights[...] = rng.standard_normal(layer._weights.shape)
    layer._bias[...] = rng.standard_normal(K)
    lead = () if batch is None else (batch,)
    x = rng.standard_normal(lead + (C, H, W))
    sens = rng.standard_normal(lead + (K, layer.output_height, layer.output_width))
    grad_views = [f.weights_grad for f in layer.filters]
    params = dict(stride=stride, padding=zp)
    for _ in range(2):  # a second call reuses the cached geometry and algorithm
        layer.forward(x)
        layer.backward(x, sens, IdentityActivator())
        assert_close(layer.output_array, _relu(oracle.conv2d(x, layer._weights, layer._bias,
                                                             **params)))
        egx, egw, egb = oracle.conv2d_backward(sens, x, layer._weights, **params)
        assert_close(layer.delta_array, egx)
        for k, f in enumerate(layer.filters):
            assert_close(f.weights_grad, egw[k])
            assert_close(f.bias_grad, egb[k])
            # the gradients are written in place: references taken earlier see them
            np.testing.assert_array_equal(grad_views[k], f.weights_grad)
        old_output, old_delta = layer.output_array, layer.delta_array
        x = x * 0.5
        sens = sens[..., ::-1].copy()
        # results of the previous call are not overwritten by the next one
        keep_output, keep_delta = old_output.copy(), old_delta.copy()
        layer.forward(x)
        layer.backward(x, sens, IdentityActivator())
        np.testing.assert_array_equal(old_output, keep_output)
        np.testing.assert_array_equal(old_delta, keep_delta)
