"""Every convolution algorithm keeps its scratch memory within set_workspace_limit (issue 13, item 3).

The peak is measured with tracemalloc, which sees numpy's array allocations: peak traced memory
during the call, minus the arrays the call returns, minus an allowance for buffers the size of
the weights (transposed or transformed weights, weight-gradient partial sums) and Python objects.
The problems are chosen so that the old behaviour exceeds the limit many times over (the direct
algorithm padded the whole batch at once, whatever the padding; im2col + GEMM always took one
whole sample's column matrix), and every result is checked against the float64 oracle
(tests/naive_oracle.py) and, when importable, PyTorch.
"""
import tracemalloc

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext._config import force_conv_algorithm
from cnnext._validation import check_conv2d
from cnnext.functional import _conv_dispatch

try:
    import torch
    import torch.nn.functional as TF
except ImportError:
    torch = None

pytestmark = pytest.mark.usefixtures("restore_config")


def peak_extra(fn, weight):
    """(result of fn(), bytes of traced memory at the peak beyond the returned arrays and an
    allowance for weight-sized buffers)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    arrays = result if isinstance(result, tuple) else (result,)
    returned = sum(a.nbytes for a in arrays if a is not None)
    return result, peak - before - returned - 8 * weight.nbytes - 64 * 1024


def algorithm_of(x, w, **args):
    g = check_conv2d("t", x, w, None, args.get("stride", 1), args.get("padding", 0),
                     args.get("dilation", 1), args.get("groups", 1))[3]
    return _conv_dispatch._algorithm(g, x.dtype)


def check_results(x, w, gy, y, grads, **args):
    oracle.assert_close(y, oracle.conv2d(x, w, **args))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, **args)):
        oracle.assert_close(got, want)
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        yt = TF.conv2d(xt, wt, **args)
        yt.backward(torch.from_numpy(gy))
        tol = oracle.tolerance(x.dtype)
        for got, want in ((y, yt), (grads[0], xt.grad), (grads[1], wt.grad)):
            want = want.detach().numpy()
            np.testing.assert_allclose(got, want, rtol=tol["rtol"] * 10,
                                       atol=tol["atol"] * 10 * max(1.0, float(np.abs(want).max())))


def run_within(limit, x, w, **args):
    """Forward and backward under ``limit``: results, each pass's peak checked against it."""
    cnnext.set_workspace_limit(limit)
    y, extra = peak_extra(lambda: F.conv2d(x, w, **args), w)
    assert extra <= limit, f"forward: {extra} bytes of workspace > limit {limit}"
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    grads, extra = peak_extra(lambda: F.conv2d_backward(gy, x, w, **args), w)
    assert extra <= limit, f"backward: {extra} bytes of workspace > limit {limit}"
    return y, gy, grads


def depthwise(C, H, W, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, 1, 3, 3)).astype(dtype)
    return x, w


@pytest.mark.parametrize("algorithm", ["auto", "direct", "gemm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_same_padding_with_large_dilation(algorithm, dtype):
    """Issue 13's case, scaled down: depthwise 3x3, padding='same', dilation 64 on 16x16 planes.
    The direct algorithm padded every plane to 144x144 at once (20 times the input); now the
    automatic choice takes GEMM there, and a forced 'direct' pads within the limit."""
    x, w = depthwise(8, 16, 16, dtype)
    args = dict(padding="same", dilation=64, groups=8)
    limit = 256 * 1024
    old_padded_copy = x.shape[0] * 8 * 144 * 144 * x.itemsize
    assert old_padded_copy > 4 * limit
    with force_conv_algorithm(algorithm):
        y, gy, grads = run_within(limit, x, w, **args)
    check_results(x, w, gy, y, grads, **args)


def test_issue_case_picks_gemm_and_stays_small():
    """64 channels of 32x32 (256 KiB), depthwise 3x3, 'same', dilation 256: the direct algorithm's
    padded copy was 75 MiB (more than the default 64 MiB cap); GEMM needs 2.5 MiB."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 64, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 1, 3, 3)).astype(np.float32)
    args = dict(padding="same", dilation=256, groups=64)
    cnnext.set_workspace_limit(64 * 2**20)
    assert algorithm_of(x, w, **args) == "gemm"
    with force_conv_algorithm("direct"):
        assert algorithm_of(x, w, **args) == "gemm"  # one padded sample would not fit the cap
        y, extra = peak_extra(lambda: F.conv2d(x, w, **args), w)
    assert extra <= 4 * 2**20
    # only the centre tap ever reads the input
    np.testing.assert_allclose(y, x * w[:, 0, 1, 1][None, :, None, None], rtol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_pads_a_few_samples_at_a_time(dtype, threads):
    """A batch of 7, padding 2: the direct kernels pad two samples at a time under a limit of two
    padded samples; the output is bitwise the unchunked one, the gradients within tolerance."""
    cnnext.set_num_threads(threads)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 6, 12, 10)).astype(dtype)
    w = rng.standard_normal((6, 1, 3, 3)).astype(dtype)
    args = dict(padding=2, groups=6)
    gy0 = rng.standard_normal((7, 6, 14, 12)).astype(dtype)
    with force_conv_algorithm("direct"):
        cnnext.set_workspace_limit(2**30)
        y_full = F.conv2d(x, w, **args)
        g_full = F.conv2d_backward(gy0, x, w, **args)
        limit = 2 * 6 * 16 * 14 * x.itemsize
        assert algorithm_of(x, w, **args) == "direct"
        y, gy, grads = run_within(limit, x, w, **args)
        np.testing.assert_array_equal(y, y_full)
        g = F.conv2d_backward(gy0, x, w, **args)
    for got, full in zip(g, g_full):
        oracle.assert_close(got, full)
    check_results(x, w, gy, y, grads, **args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_splits_one_sample_into_bands_of_rows(dtype):
    """One sample whose column matrix (144 x 900) is 14 times the limit: im2col + GEMM runs in
    bands of output rows, results equal to the oracle and to the whole-sample computation."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 30, 30)).astype(dtype)
    w = rng.standard_normal((8, 16, 3, 3)).astype(dtype)
    args = dict(padding=1, stride=1)
    limit = 144 * 900 * x.itemsize // 14
    with force_conv_algorithm("gemm"):
        cnnext.set_workspace_limit(2**30)
        y_full = F.conv2d(x, w, **args)
        y, gy, grads = run_within(limit, x, w, **args)
    oracle.assert_close(y, y_full)
    check_results(x, w, gy, y, grads, **args)


@pytest.mark.parametrize("case", ["strided_dilated", "bias_groups", "one_row"])
def test_gemm_bands_of_rows_with_stride_dilation_groups(case):
    """Bands of rows with stride, dilation, groups, asymmetric padding and bias."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 23, 19))
    if case == "strided_dilated":
        w, b, args = rng.standard_normal((6, 4, 3, 2)), None, dict(stride=(2, 3), padding=(3, 1), dilation=(2, 3))
    elif case == "bias_groups":
        w, b, args = rng.standard_normal((6, 2, 2, 3)), rng.standard_normal(6), dict(padding="same", groups=2)
    else:
        w, b, args = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal(3), dict(stride=2, padding=2)
    limit = 1 if case == "one_row" else 4000
    cnnext.set_workspace_limit(limit)
    with force_conv_algorithm("gemm"):
        y = F.conv2d(x, w, b, **args)
        gy = rng.standard_normal(y.shape)
        grads = F.conv2d_backward(gy, x, w, **args)
    oracle.assert_close(y, oracle.conv2d(x, w, b, **args))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, **args)):
        oracle.assert_close(got, want)


def test_winograd_is_not_chosen_when_one_sample_exceeds_the_limit():
    """16 channels of 32x32: one sample's Winograd transforms take 288 KiB; under a 128 KiB limit
    the automatic choice is GEMM (in bands of rows), within the limit."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32)
    cnnext.set_workspace_limit(2**30)
    assert algorithm_of(x, w, padding=1) == "winograd"
    limit = 128 * 1024
    cnnext.set_workspace_limit(limit)
    assert algorithm_of(x, w, padding=1) == "gemm"
    y, gy, grads = run_within(limit, x, w, padding=1)
    check_results(x, w, gy, y, grads, padding=1)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_within_the_limit(threads):
    """With room for its chunks, Winograd (chosen automatically) stays within the limit too, with
    one chunk workspace per worker thread."""
    cnnext.set_num_threads(threads)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 8, 16, 16)).astype(np.float32)
    w = (rng.standard_normal((8, 8, 3, 3)) * 0.1).astype(np.float32)
    limit = 640 * 1024  # two chunk workspaces (292 KiB each: their rows are padded to 4 KiB + 64)
    cnnext.set_workspace_limit(limit)
    assert algorithm_of(x, w, padding=1) == "winograd"
    y, gy, grads = run_within(limit, x, w, padding=1)
    check_results(x, w, gy, y, grads, padding=1)


def test_small_kernels_fall_back_under_a_tiny_limit():
    """LeNet's first layer on one float64 sample (the small kernels' case): under an 8 KiB limit
    their padded copy does not fit, so the direct or GEMM path runs, within the limit."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 1, 28, 28))
    w = rng.standard_normal((6, 1, 5, 5))
    limit = 8 * 1024
    cnnext.set_workspace_limit(limit)
    assert algorithm_of(x, w, padding=2) in ("direct", "gemm")
    y, gy, grads = run_within(limit, x, w, padding=2)
    check_results(x, w, gy, y, grads, padding=2)


def test_common_case_chunks_are_unchanged():
    """Under the default limit an ordinary batch is still one chunk of whole samples."""
    x = np.zeros((8, 16, 32, 32), np.float32)
    w = np.zeros((32, 16, 3, 3), np.float32)
    g = check_conv2d("t", x, w, None, 1, 1, 1, 1)[3]
    cnnext.set_workspace_limit(64 * 2**20)
    assert _conv_dispatch._gemm_plan(g, 4) == (8, 32)
