"""Numerical and size edge cases (issue 6, item 5).

- NaN and +-inf in every op, against the float64 oracle and (when importable) PyTorch; max pooling
  propagates NaN as PyTorch does (a NaN wins its window; the last NaN in scan order is the index).
- Pooling windows that hold only -inf (and -inf padding).
- Huge float32 values: no overflow in an accumulation whose exact result fits in float32.
- Denormals are neither flushed to zero nor mangled.
- Flat indices beyond 2**31 on a memory-cheap path: a huge ``np.zeros`` input is virtual memory
  (untouched pages are the kernel's shared zero page), and strides/kernels are chosen so that the
  kernels touch only a few pages while their index arithmetic crosses 2**31. A full pass over such
  a tensor (a few seconds, still no real memory) runs only with CNNEXT_SLOW_TESTS=1.
- Kernel size 1, input size 1, stride larger than the kernel.
"""
import math
import os

import numpy as np
import pytest

import cnnext.functional as F
import naive_oracle as oracle
from helpers import PKG_PARENT, child_env
from cnnext._config import force_conv_algorithm

# numpy warns about the NaN/inf arithmetic these tests do on purpose (in the oracle and in numpy's
# parts of cnnext); the values are what is checked
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

NAN, INF = np.nan, np.inf
SLOW = os.environ.get("CNNEXT_SLOW_TESTS", "") == "1"

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # torch is only a test oracle
    torch = None


def _with_specials(shape, dtype, seed=0, specials=(NAN, INF, -INF), rate=0.15):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = rng.random(shape) < rate
    x[mask] = rng.choice(np.array(specials), size=int(mask.sum()))
    return x.astype(dtype)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _same_with_nan(actual, expected, dtype):
    """Exact NaN/inf pattern, finite values within the dtype's tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg="NaN positions")
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg="+inf positions")
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg="-inf positions")
    fin = np.isfinite(expected)
    oracle.assert_close(actual[fin].astype(dtype), expected[fin], dtype=dtype)


DTYPES = [np.float32, np.float64]

# ------------------------------------------------------------------------------------ NaN / inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("where", ["input", "grad_output"])
def test_conv2d_nan_inf(dtype, algorithm, where):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((4, 2, 3, 3)) + 3.0).astype(dtype)  # no zero weight: no 0 * inf
    if where == "input":
        x = _with_specials((2, 4, 7, 6), dtype)
        args = dict(stride=(1, 2), padding=1, groups=2)
    else:
        # No padding here: with an infinite grad_output, an implicit zero of the padding times inf
        # is NaN in im2col's GEMM, the direct kernels and the oracle, but the strided direct
        # grad_input never multiplies by the padding; that choice is outside what cnnext promises
        # (see docs/README_guarantees.md).
        x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
        args = dict(stride=(1, 2), padding=0, groups=2)
    with force_conv_algorithm(algorithm):
        y = F.conv2d(x, w, **args)
        gy = _with_specials(y.shape, dtype, seed=2) if where == "grad_output" else np.ones_like(y)
        gx, gw, gb = F.conv2d_backward(gy, x, w, **args)
    _same_with_nan(y, oracle.conv2d(x, w, **args), dtype)
    egx, egw, egb = oracle.conv2d_backward(gy, x, w, **args)
    _same_with_nan(gx, egx, dtype)
    _same_with_nan(gw, egw, dtype)
    _same_with_nan(gb, egb, dtype)
    if torch is not None and where == "input":
        ty = TF.conv2d(_t(x), _t(w), **args).numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [(2, 2, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False), ((2, 3), (1, 2), (1, 0), 1, False)],
                         ids=["2x2s2_fastpath", "3x3s2_pad_ceil", "3x3_dilated", "nonsquare"])
def test_max_pool2d_propagates_nan_like_pytorch(dtype, params):
    k, s, p, d, ceil = params
    x = _with_specials((2, 3, 8, 7), dtype, seed=3, rate=0.25)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ey, eidx = oracle.max_pool2d(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, ey.astype(dtype))  # assert_array_equal treats NaN == NaN
    np.testing.assert_array_equal(idx, eidx)
    assert np.isnan(y).any()
    gy = np.arange(y.size, dtype=dtype).reshape(y.shape)
    oracle.assert_close(F.max_pool2d_backward(gy, idx, x.shape), oracle.max_pool2d_backward(gy, eidx, x.shape))
    if torch is not None:
        ty, tidx = TF.max_pool2d(_t(x), k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


def test_max_pool2d_nan_rules_by_hand():
    # NaN wins over everything, even +inf; with several NaNs, the last in scan order is the index
    x = np.array([[[[1.0, NAN], [INF, NAN]]]])
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 3
    x = np.array([[[[NAN, 5.0], [INF, 1.0]]]])
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 0
    x = np.array([[[[1.0, INF], [INF, 1.0]]]])  # ties between +inf: the first
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert y[0, 0, 0, 0] == INF and idx[0, 0, 0, 0] == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_nan_inf(dtype, count_include_pad):
    x = _with_specials((2, 2, 7, 8), dtype, seed=4)
    args = (3, 2, 1, True, count_include_pad)
    y = F.avg_pool2d(x, *args)
    _same_with_nan(y, oracle.avg_pool2d(x, *args), dtype)
    gy = _with_specials(y.shape, dtype, seed=5)
    _same_with_nan(F.avg_pool2d_backward(gy, x.shape, *args), oracle.avg_pool2d_backward(gy, x.shape, *args), dtype)
    if torch is not None:
        ty = TF.avg_pool2d(_t(x), 3, 2, 1, True, count_include_pad).numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ty))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ty))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_nan_inf(dtype):
    x = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0], dtype=dtype)
    r = F.relu(x)
    assert np.isnan(r[0]) and r[1] == INF and r[2] == 0 and r[3] == 0
    s = F.sigmoid(x)
    assert np.isnan(s[0]) and s[1] == 1 and s[2] == 0 and s[3] == 0.5
    t = F.tanh(x)
    assert np.isnan(t[0]) and t[1] == 1 and t[2] == -1
    assert F.relu_derivative(r)[0] == 0  # NaN > 0 is False, as in PyTorch's relu backward
    np.testing.assert_array_equal(F.sigmoid_derivative(s)[1:3], [0, 0])
    np.testing.assert_array_equal(F.tanh_derivative(t)[1:3], [0, 0])
    if torch is not None:
        np.testing.assert_allclose(s, torch.sigmoid(_t(x)).numpy(), rtol=1e-6)
        np.testing.assert_array_equal(r, torch.relu(_t(x)).numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_losses_nan_inf(dtype):
    rng = np.random.default_rng(6)
    x = _with_specials((5, 4), dtype, seed=7, rate=0.2)
    w = (rng.standard_normal((3, 4)) + 3).astype(dtype)
    y = F.linear(x, w)
    _same_with_nan(y, x.astype(np.float64) @ w.astype(np.float64).T, dtype)
    logits = np.array([[0.0, 1.0, 2.0], [NAN, 0.0, 0.0], [INF, 0.0, 0.0], [-INF, 0.0, 0.0]], dtype=dtype)
    losses = F.cross_entropy(logits, np.array([0, 1, 1, 1]), reduction="none")
    assert np.isfinite(losses[0]) and np.isnan(losses[1])
    assert losses[3] == pytest.approx(math.log(2), rel=1e-6)  # exp(-inf) = 0: an -inf logit is fine
    assert np.isnan(F.mse_loss(np.array([NAN, 1.0], dtype=dtype), np.zeros(2, dtype)))
    assert F.mse_loss(np.array([INF, 1.0], dtype=dtype), np.zeros(2, dtype)) == INF
    if torch is not None:
        tl = TF.cross_entropy(_t(logits), torch.tensor([0, 1, 1, 1]), reduction="none").numpy()
        np.testing.assert_array_equal(np.isnan(losses), np.isnan(tl))


# ------------------------------------------------------------------------------------ -inf windows

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [(2, 2, 0, False), (3, 2, 1, True), (3, 1, 1, False)],
                         ids=["2x2s2_fastpath", "3x3s2_pad_ceil", "3x3s1_pad"])
def test_max_pool2d_all_minus_inf_windows(dtype, params):
    k, s, p, ceil = params
    x = np.full((1, 2, 6, 5), -INF, dtype=dtype)
    x[0, 1, 4:, 3:] = 1.0  # one corner finite in the second plane
    y, idx = F.max_pool2d(x, k, s, p, 1, ceil, return_indices=True)
    ey, eidx = oracle.max_pool2d(x, k, s, p, 1, ceil)
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(idx, eidx)  # an all -inf window points at its first real element
    assert (y[0, 0] == -INF).all()
    assert ((idx >= 0) & (idx < 30)).all()
    gy = np.ones(y.shape, dtype=dtype)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    oracle.assert_close(gx, oracle.max_pool2d_backward(gy, eidx, x.shape))
    assert gx.sum() == y.size  # nothing lost, nothing written outside
    if torch is not None:
        ty, tidx = TF.max_pool2d(_t(x), k, s, p, 1, ceil, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


# ------------------------------------------------------------------------------------ huge values

BIG = np.float32(3.0e38)  # float32 max is 3.4e38: the sum of two overflows, their mean does not


def test_float32_avg_pool2d_does_not_overflow_when_the_mean_fits():
    x = np.full((1, 1, 4, 4), BIG, dtype=np.float32)
    x[0, 0, 1, 1] = np.float32(2.0e38)
    y = F.avg_pool2d(x, 2, 1)
    ey = oracle.avg_pool2d(x, 2, 1)
    assert np.isfinite(ey).all() and (np.abs(ey) < np.finfo(np.float32).max).all()
    assert np.isfinite(y).all(), f"float32 avg_pool2d overflowed: {y}"
    oracle.assert_close(y, ey)


def test_float32_conv2d_and_linear_huge_values_without_overflow():
    # 27 same-sign terms of 1e37: every partial sum, in any order, stays below the 2.7e38 total
    x = np.full((2, 3, 5, 5), 1e37, dtype=np.float32)
    w = np.ones((2, 3, 3, 3), dtype=np.float32)
    for algorithm in ("gemm", "direct"):
        with force_conv_algorithm(algorithm):
            y = F.conv2d(x, w)
            gx, gw, gb = F.conv2d_backward(np.full(y.shape, 1e37, np.float32), np.ones_like(x), w)
        assert np.isfinite(y).all() and np.isfinite(gx).all() and np.isfinite(gw).all()
        oracle.assert_close(y, oracle.conv2d(x, w))
    y = F.linear(np.full((2, 30), 1e37, np.float32), np.ones((3, 30), np.float32))
    np.testing.assert_allclose(y, 3e38, rtol=1e-5)


def _winograd_sized(rng, scale_x, scale_w=0.01):
    """A float32 problem that the automatic choice gives to Winograd (3x3, 8 channels, 16x16)."""
    from cnnext._validation import check_conv2d
    from cnnext.functional import _conv_dispatch
    x = (rng.standard_normal((1, 8, 16, 16)) * scale_x).astype(np.float32)
    w = (rng.standard_normal((8, 8, 3, 3)) * scale_w).astype(np.float32)
    assert _conv_dispatch._algorithm(check_conv2d("t", x, w, None, 1, 1, 1, 1)[3], x.dtype) == "winograd"
    return x, w


def test_automatic_winograd_never_turns_a_finite_result_into_nan():
    """Issue 13, item 4: float32 inputs of magnitude 1e37 overflow Winograd's transforms (NaN in
    every output) where im2col + GEMM is finite. The automatic choice gives GEMM's finite result,
    for the output, grad_input and grad_weight alike; a forced 'winograd' computes as it does."""
    rng = np.random.default_rng(11)
    x, w = _winograd_sized(rng, 1e37)
    gy = (rng.standard_normal((1, 8, 16, 16)) * 1e37).astype(np.float32)
    gy_small = (rng.standard_normal((1, 8, 16, 16)) * 1e-2).astype(np.float32)
    with force_conv_algorithm("winograd"):
        assert not np.isfinite(F.conv2d(x, w, padding=1)).any()
        gx_w, _, _ = F.conv2d_backward(gy, x, w, padding=1)
        _, gw_w, _ = F.conv2d_backward(gy_small, x, w, padding=1)
        assert not np.isfinite(gx_w).all() and not np.isfinite(gw_w).all()
    y = F.conv2d(x, w, padding=1)
    gx, _, _ = F.conv2d_backward(gy, x, w, padding=1)  # grad_input: gy 1e37 times small weights
    _, gw, gb = F.conv2d_backward(gy_small, x, w, padding=1)  # grad_weight: x 1e37 times 1e-2
    ey = oracle.conv2d(x, w, padding=1)
    egx, _, _ = oracle.conv2d_backward(gy, x, w, padding=1)
    _, egw, egb = oracle.conv2d_backward(gy_small, x, w, padding=1)
    for got, want in ((y, ey), (gx, egx), (gw, egw), (gb, egb)):
        assert np.isfinite(want).all() and (np.abs(want) < np.finfo(np.float32).max).all()
        assert np.isfinite(got).all()
        oracle.assert_close(got, want)
    with force_conv_algorithm("gemm"):
        np.testing.assert_array_equal(y, F.conv2d(x, w, padding=1))
    if torch is not None:
        np.testing.assert_allclose(y, TF.conv2d(_t(x), _t(w), padding=1).numpy(), rtol=1e-4,
                                   atol=1e-5 * float(np.abs(ey).max()))


def test_automatic_winograd_keeps_gemm_nan_positions():
    """One NaN in the input: Winograd would spread it over its whole 4x4 output tile; the
    automatic choice gives NaN exactly where GEMM (and PyTorch) do, finite values elsewhere."""
    rng = np.random.default_rng(12)
    x, w = _winograd_sized(rng, 1.0, 1.0)
    x[0, 3, 5, 6] = NAN
    x[0, 2, 0, 0] = INF
    y = F.conv2d(x, w, padding=1)
    gy = np.ones_like(y)
    gy[0, 1, 7, 7] = NAN
    gx, gw, _ = F.conv2d_backward(gy, x, w, padding=1)
    with force_conv_algorithm("gemm"):
        ey = F.conv2d(x, w, padding=1)
        egx, egw, _ = F.conv2d_backward(gy, x, w, padding=1)
    _same_with_nan(y, oracle.conv2d(x, w, padding=1), np.float32)
    for got, want in ((y, ey), (gx, egx), (gw, egw)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isfinite(y).sum() > 0.9 * y.size  # only the windows over the NaN and inf
    if torch is not None:
        np.testing.assert_array_equal(np.isnan(y), np.isnan(TF.conv2d(_t(x), _t(w), padding=1).numpy()))


def test_automatic_winograd_is_winograd_on_ordinary_values():
    """The overflow check does not change the common case: bitwise the forced Winograd result."""
    rng = np.random.default_rng(13)
    x, w = _winograd_sized(rng, 1.0)
    gy = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    y = F.conv2d(x, w, padding=1)
    gx, gw, _ = F.conv2d_backward(gy, x, w, padding=1)
    with force_conv_algorithm("winograd"):
        np.testing.assert_array_equal(y, F.conv2d(x, w, padding=1))
        wgx, wgw, _ = F.conv2d_backward(gy, x, w, padding=1)
    np.testing.assert_array_equal(gx, wgx)
    np.testing.assert_array_equal(gw, wgw)


def test_float32_loss_means_do_not_overflow_when_the_mean_fits():
    x = np.full(10, 1e19, dtype=np.float32)  # each square 1e38 fits; their sum does not; the mean does
    got = F.mse_loss(x, np.zeros_like(x))
    assert np.isfinite(got), f"float32 mse_loss overflowed: {got}"
    assert got == pytest.approx(1e38, rel=1e-6)
    logits = np.array([[1e38, -1e38]] * 4, dtype=np.float32)  # each loss 2e38 fits
    got = F.cross_entropy(logits, np.ones(4, dtype=np.int64))
    assert np.isfinite(got), f"float32 cross_entropy overflowed: {got}"
    assert got == pytest.approx(2e38, rel=1e-6)


def test_float32_softmax_and_sigmoid_of_huge_logits():
    z = np.array([[1e30, 0.0, -1e30]], dtype=np.float32)
    np.testing.assert_array_equal(F.softmax(z), [[1.0, 0.0, 0.0]])
    assert np.isfinite(F.log_softmax(z)[0, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow warning either
        np.testing.assert_array_equal(F.sigmoid(np.array([-1e30, 1e30], np.float32)), [0.0, 1.0])


# ------------------------------------------------------------------------------------ denormals

@pytest.mark.parametrize("dtype", DTYPES)
def test_denormals_are_kept_exactly(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = (np.arange(1, 1 + 2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * tiny).astype(dtype)
    assert (x != 0).all() and (np.abs(x) < np.finfo(dtype).tiny).any()
    # 1x1 conv with weight 1 and the identity-like paths are exact: a flush-to-zero build would fail
    w = np.eye(3, dtype=dtype).reshape(3, 3, 1, 1)
    for algorithm in ("gemm", "direct"):
        with force_conv_algorithm(algorithm):
            np.testing.assert_array_equal(F.conv2d(x, w), x)
            np.testing.assert_array_equal(F.conv2d(x, w, stride=2), x[:, :, ::2, ::2])
            gx, gw, gb = F.conv2d_backward(x, x, w)
            np.testing.assert_array_equal(gx, x)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    ey, eidx = oracle.max_pool2d(x, 2)
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(F.max_pool2d_backward(y, idx, x.shape),
                                  oracle.max_pool2d_backward(y, eidx, x.shape).astype(dtype))
    same = np.full((1, 1, 4, 4), 7 * tiny, dtype=dtype)  # 4 * 7 tiny is exact, / 4 is exact
    np.testing.assert_array_equal(F.avg_pool2d(same, 2), np.full((1, 1, 2, 2), 7 * tiny, dtype))
    assert F.relu(np.array([tiny, -tiny], dtype))[0] == tiny


# ------------------------------------------------------------------------------------ > 2**31

# (H - 1) * W > 2**31 and H * W > 2**31: 8.6 GB of float32 in virtual memory only
BIG_H, BIG_W = 2**16 + 1, 2**15 + 1


def _huge_zeros(shape, dtype=np.float32):
    try:
        return np.zeros(shape, dtype=dtype)  # calloc'd: pages become resident only when touched
    except (MemoryError, ValueError) as exc:
        pytest.skip(f"cannot reserve {np.prod(shape) * np.dtype(dtype).itemsize / 2**30:.1f} GiB of "
                    f"virtual memory here ({exc})")


@pytest.fixture(scope="module")
def huge_input():
    x = _huge_zeros((1, 1, BIG_H, BIG_W))
    assert (BIG_H - 1) * BIG_W > 2**31
    # the four corners, the last one at flat index (H - 1) * W + W - 1 > 2**31
    for i, (h, w) in enumerate([(0, 0), (0, BIG_W - 1), (BIG_H - 1, 0), (BIG_H - 1, BIG_W - 1)]):
        x[0, 0, h, w] = i + 1.0
    return x


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
def test_conv2d_index_beyond_2_31_touching_few_pages(huge_input, algorithm):
    x = huge_input
    w = np.full((1, 1, 1, 1), 2.0, dtype=np.float32)
    stride = (BIG_H - 1, BIG_W - 1)  # outputs at the four corners only
    with force_conv_algorithm(algorithm):
        y = F.conv2d(x, w, stride=stride)
        np.testing.assert_array_equal(y, [[[[2.0, 4.0], [6.0, 8.0]]]])
        gy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
        gx, gw, gb = F.conv2d_backward(gy, x, w, stride=stride)
    assert gx.shape == x.shape
    flat = gx.reshape(-1)
    last = (BIG_H - 1) * BIG_W + BIG_W - 1
    assert last > 2**31
    for pos, want in [(0, 2.0), (BIG_W - 1, 4.0), ((BIG_H - 1) * BIG_W, 6.0), (last, 8.0)]:
        assert flat[pos] == want
        assert flat[pos - 1] == 0 if pos else True
    assert gw[0, 0, 0, 0] == 1 * 1 + 2 * 2 + 3 * 3 + 4 * 4
    # int32 index arithmetic would wrap the last position to a negative or small offset
    assert flat[last % 2**31] == 0 and flat[last - 2**31] == 0


def test_max_pool2d_indices_beyond_2_31_touching_few_pages(huge_input):
    x = huge_input
    stride = (BIG_H - 1, BIG_W - 1)
    y, idx = F.max_pool2d(x, 1, stride, return_indices=True)
    last = (BIG_H - 1) * BIG_W + BIG_W - 1
    np.testing.assert_array_equal(y, [[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(idx, [[[[0, BIG_W - 1], [(BIG_H - 1) * BIG_W, last]]]])
    assert idx.dtype == np.int64 and idx.max() > 2**31
    gx = F.max_pool2d_backward(y * 10, idx, x.shape)
    flat = gx.reshape(-1)
    assert flat[last] == 40.0 and flat[(BIG_H - 1) * BIG_W] == 30.0 and flat[last - 2**31] == 0
    # an index one past the plane is refused, also up there
    bad = idx.copy()
    bad[0, 0, 1, 1] = BIG_H * BIG_W
    with pytest.raises(ValueError, match="max_pool2d_backward: 1 indices lie outside"):
        F.max_pool2d_backward(y, bad, x.shape)


@pytest.mark.skipif(not SLOW, reason="full pass over 2**31 elements (10-30 s, still no real "
                                     "memory): set CNNEXT_SLOW_TESTS=1 to run it")
def test_global_pools_over_more_than_2_31_elements(huge_input):
    x = huge_input
    y, idx = F.max_pool2d(x, (BIG_H, BIG_W), return_indices=True)
    assert y[0, 0, 0, 0] == 4.0 and idx[0, 0, 0, 0] == BIG_H * BIG_W - 1
    a = F.avg_pool2d(x, (BIG_H, BIG_W))
    assert a[0, 0, 0, 0] == pytest.approx(10.0 / (BIG_H * BIG_W), rel=1e-3)


def test_max_pool2d_with_huge_padding_returns():
    """A kernel of 2**40 with padding 2**39 on a 6x6 input is valid (PyTorch's rules) and has one
    output: it must come back at once, not walk the padding one step at a time. Run in a child
    process so that a hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    code = ("import numpy as np, cnnext.functional as F\n"
            "x = np.arange(36.0).reshape(1, 1, 6, 6)\n"
            "y, i = F.max_pool2d(x, 2**40, padding=2**39, return_indices=True)\n"
            "print(y.ravel().tolist(), i.ravel().tolist())\n")
    try:
        # cwd: the directory holding the cnnext under test ("python -c" puts the working
        # directory first on sys.path; a repository root would shadow an installed cnnext)
        out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                             timeout=30, cwd=PKG_PARENT)
    except subprocess.TimeoutExpired:
        pytest.fail("max_pool2d(kernel_size=2**40, padding=2**39) did not return within 30 s")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[35.0]", "[35]"]  # the window covers the whole input


# ------------------------------------------------------------------------------------ tiny sizes

@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_1_input_1_stride_larger_than_kernel(dtype):
    rng = np.random.default_rng(8)
    cases = [
        # (x shape, w shape, stride, padding)
        ((2, 3, 1, 1), (4, 3, 1, 1), 1, 0),  # input 1x1, kernel 1x1
        ((2, 3, 1, 1), (4, 3, 1, 1), 5, 0),  # stride > input
        ((2, 3, 1, 1), (4, 3, 3, 3), 1, 1),  # 1x1 input padded to 3x3
        ((1, 2, 9, 7), (3, 2, 2, 2), (4, 3), 0),  # stride > kernel
        ((1, 2, 9, 7), (3, 2, 1, 1), (3, 5), 2),  # 1x1 kernel, stride > kernel, padding
        ((1, 1, 1, 6), (2, 1, 1, 3), (1, 4), 0),  # a single row
    ]
    for xs, ws, stride, padding in cases:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        for algorithm in ("gemm", "direct"):
            with force_conv_algorithm(algorithm):
                y = F.conv2d(x, w, stride=stride, padding=padding)
                gy = rng.standard_normal(y.shape).astype(dtype)
                gx, gw, gb = F.conv2d_backward(gy, x, w, stride=stride, padding=padding)
            oracle.assert_close(y, oracle.conv2d(x, w, stride=stride, padding=padding))
            for got, want in zip((gx, gw, gb), oracle.conv2d_backward(gy, x, w, stride=stride, padding=padding)):
                oracle.assert_close(got, want)
            if torch is not None:
                oracle.assert_close(y, TF.conv2d(_t(x), _t(w), stride=stride, padding=padding).numpy())
    pools = [((2, 3, 1, 1), 1, 1, 0), ((2, 3, 1, 1), 1, 4, 0), ((1, 2, 9, 7), 2, (4, 3), 0),
             ((1, 2, 9, 7), 1, 3, 0), ((1, 1, 1, 1), 3, 1, 1), ((1, 1, 2, 2), 3, 3, 1)]
    for xs, k, s, p in pools:
        x = rng.standard_normal(xs).astype(dtype)
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        ey, eidx = oracle.max_pool2d(x, k, s, p)
        np.testing.assert_array_equal(y, ey.astype(dtype))
        np.testing.assert_array_equal(idx, eidx)
        for cip in (True, False):
            oracle.assert_close(F.avg_pool2d(x, k, s, p, count_include_pad=cip), oracle.avg_pool2d(x, k, s, p, False, cip))
            gy = np.ones(ey.shape, dtype=dtype)
            oracle.assert_close(F.avg_pool2d_backward(gy, xs, k, s, p, count_include_pad=cip),
                                oracle.avg_pool2d_backward(gy, xs, k, s, p, False, cip))
        if torch is not None:
            ty, tidx = TF.max_pool2d(_t(x), k, s, p, return_indices=True)
            np.testing.assert_array_equal(y, ty.numpy())
            np.testing.assert_array_equal(idx, tidx.numpy())
