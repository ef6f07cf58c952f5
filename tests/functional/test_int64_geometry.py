"""Geometry near the int64 limits (issue 13, item 1): never a wrong number, never a crash.

The kernels index with int64. cnnext._validation keeps every padded size, kernel size and dilated
kernel extent at most 2**60 and refuses more with a ValueError naming the argument; a stride past
the padded size (one output position) is accepted and computed exactly, as PyTorch does.

Expected values come from the oracles below, written in Python ints (no overflow possible): each
output position's taps are found from the definitions (tap i of output o reads input position
o * stride - padding + i * dilation), over small inputs, so even kernels of 2**62 taps are cheap
(the pooling oracle walks the input positions and tests whether each is a tap). Where PyTorch is
importable and accepts the arguments, it must agree too.
"""
import itertools
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext._config import force_conv_algorithm

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # the sanitizer run has no torch: the Python-int oracles still check
    torch = None

pytestmark = pytest.mark.usefixtures("restore_config")

LIMIT = 2**60  # cnnext's documented bound (cnnext._validation._INDEX_LIMIT)
HUGE = [2**31 - 1, 2**31, 2**32 + 1, 2**59, 2**60, 2**60 + 1, 2**61, 2**62, sys.maxsize]
STRIDES = [1, 2, 3] + HUGE
PADDINGS = [0, 1, 2, 2**31, 2**59 - 3, 2**60, 2**61, 2**62]
DILATIONS = [1, 2] + HUGE
MAX_OUTPUT = 256  # positions per plane the oracles compute; larger valid outputs are not run


def pair(v):
    return (v, v) if not isinstance(v, tuple) else v


# ------------------------------------------------------------------------------ conv oracle

def conv_geometry(shape, wshape, stride, padding, dilation):
    """(Ho, Wo, (pt, pb, pl, pr), over) from the definitions, Ho/Wo None when PyTorch's rules
    refuse the geometry; ``over`` names what exceeds 2**60 (None if nothing)."""
    H, W = shape[2:]
    kh, kw = wshape[2:]
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        ph, pw = pair(padding)
        pads = (ph, ph, pw, pw)
    over = None
    for size, k, d, p in ((H, kh, dh, pads[0] + pads[1]), (W, kw, dw, pads[2] + pads[3])):
        if k > 1 and d * (k - 1) + 1 > LIMIT:
            over = over or "dilation"
        if size + p > LIMIT:
            over = over or "padding"
    outs = []
    for size, k, s, d, p in ((H, kh, sh, dh, pads[0] + pads[1]), (W, kw, sw, dw, pads[2] + pads[3])):
        ext = d * (k - 1) + 1
        outs.append((size + p - ext) // s + 1 if ext <= size + p else None)
    return outs[0], outs[1], pads, over


def taps(o, s, p, d, k, size):
    """(tap, input position) of output position o that lie inside [0, size)."""
    return [(i, o * s - p + i * d) for i in range(k) if 0 <= o * s - p + i * d < size]


def conv_oracle(x, w, gy, stride, padding, dilation):
    """y, grad_input, grad_weight (float64) by summation over the in-range taps."""
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    Ho, Wo, (pt, _, pl, _), _ = conv_geometry(x.shape, w.shape, stride, padding, dilation)
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    x, w, gy = (np.asarray(a, dtype=np.float64) for a in (x, w, gy))
    y = np.zeros((N, K, Ho, Wo))
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for oh in range(Ho):
        for ki, ih in taps(oh, sh, pt, dh, kh, H):
            for ow in range(Wo):
                for kj, iw in taps(ow, sw, pl, dw, kw, W):
                    y[:, :, oh, ow] += x[:, :, ih, iw] @ w[:, :, ki, kj].T
                    gx[:, :, ih, iw] += gy[:, :, oh, ow] @ w[:, :, ki, kj]
                    gw[:, :, ki, kj] += gy[:, :, oh, ow].T @ x[:, :, ih, iw]
    return y, gx, gw


def torch_conv(x, w, gy, stride, padding, dilation):
    """PyTorch's (y, grad_input, grad_weight), or None when it refuses the arguments."""
    H, W = x.shape[2:]
    big = [H + 2 * pair(padding)[0], W + 2 * pair(padding)[1]]
    big += [d * (k - 1) + 1 for d, k in zip(pair(dilation), w.shape[2:])]
    if torch is None or max(big) >= 2**31:
        return None  # PyTorch 2.13 gets the output size wrong (often 0) from padded sizes of 2**31
    # PyTorch 2.13's float32 conv2d dies of SIGFPE (the whole process) on large strides, the
    # forward pass at stride 2**60 with a 2x2 kernel, the backward already at (3, 2**20) with a
    # 1x1 kernel; its float64 backward from stride 2**31. So the reference runs in float64 (the
    # values are small integers: exact either way), and only its forward pass beyond 2**31.
    grads = max(pair(stride) + pair(dilation)) < 2**31
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=grads)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=grads)
    try:
        y = TF.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation)
        if grads:
            y.backward(torch.tensor(gy, dtype=torch.float64))
    except (RuntimeError, ValueError, OverflowError):
        return None
    if not grads:
        return (y.detach().numpy(),)
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def run_conv_case(x, w, stride, padding, dilation, algorithms, tally):
    Ho, Wo, _, over = conv_geometry(x.shape, w.shape, stride, padding, dilation)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    if over is not None or Ho is None or Wo is None or Ho < 1 or Wo < 1:
        for algorithm in algorithms:
            with force_conv_algorithm(algorithm):
                with pytest.raises(ValueError, match=over) as info:
                    F.conv2d(x, w, **args)
            if over is not None:
                assert "2**60" in str(info.value)
        tally["refused"] += 1
        return
    if Ho * Wo > MAX_OUTPUT:
        tally["too large to run"] += 1
        return
    gy = np.arange(1, x.shape[0] * w.shape[0] * Ho * Wo + 1, dtype=x.dtype).reshape(
        x.shape[0], w.shape[0], Ho, Wo) % 7 - 3
    want = conv_oracle(x, w, gy, stride, padding, dilation)
    for algorithm in algorithms:
        with force_conv_algorithm(algorithm):
            y = F.conv2d(x, w, **args)
            gx, gw, _ = F.conv2d_backward(gy, x, w, **args)
        for got, exp, what in zip((y, gx, gw), want, ("output", "grad_input", "grad_weight")):
            # small integers: every sum is exact in float32 and float64
            np.testing.assert_array_equal(got, exp, err_msg=f"{what}, {algorithm}, {args}")
    ref = torch_conv(x, w, gy, stride, padding, dilation)
    if ref is not None:
        for got, exp in zip(want, ref):
            np.testing.assert_array_equal(got, exp, err_msg=f"oracle vs torch, {args}")
        tally["also checked with torch"] += 1
    tally["computed"] += 1


def conv_inputs(kernel, dtype):
    rng = np.random.default_rng(sum(kernel))
    x = rng.integers(-3, 4, size=(2, 2, 5, 4)).astype(dtype)
    w = rng.integers(-3, 4, size=(3, 2) + kernel).astype(dtype)
    return x, w


# float64's automatic choice is the direct algorithm for these thin problems (where its padded
# copy fits the workspace cap and is no larger than im2col's columns, else GEMM)
ALGORITHMS = {np.dtype(np.float32): ["auto", "gemm", "direct"],
              np.dtype(np.float64): ["auto", "gemm", "direct"]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 3), (3, 1)])
def test_conv2d_sweep_of_huge_stride_padding_dilation(kernel, dtype):
    """Every combination of huge and small stride, padding and dilation along each axis: the
    result equals the Python-int oracle (and PyTorch where it accepts), or a ValueError is raised
    because the geometry is invalid or exceeds 2**60; never a wrong number."""
    cnnext.set_num_threads(1)  # thousands of tiny calls: no parallel region for each
    x, w = conv_inputs(kernel, dtype)
    tally = {"computed": 0, "refused": 0, "too large to run": 0, "also checked with torch": 0}
    for axis, fixed in ((0, (2, 1, 1)), (1, (3, 0, 1))):
        for spd in itertools.product(STRIDES, PADDINGS, DILATIONS):
            stride, padding, dilation = ((v, f) if axis == 0 else (f, v) for v, f in zip(spd, fixed))
            run_conv_case(x, w, stride, padding, dilation, ALGORITHMS[np.dtype(dtype)], tally)
    assert tally["computed"] >= 60 and tally["refused"] >= 60, tally
    assert tally["also checked with torch"] >= (40 if torch is not None else 0), tally


def test_conv2d_stride_maxsize_gives_one_output_pixel():
    """Issue 13's reproduction: 16 channels of a 2x2 window of ones, one output pixel = 64
    (it was 0: ceil_div overflowed in the index helpers)."""
    x = np.ones((1, 16, 5, 5), np.float32)
    w = np.ones((16, 16, 2, 2), np.float32)
    for algorithm in ("auto", "gemm", "direct", "winograd"):
        with force_conv_algorithm(algorithm):
            y = F.conv2d(x, w, stride=sys.maxsize)
            gx, gw, gb = F.conv2d_backward(np.ones((1, 16, 1, 1), np.float32), x, w,
                                           stride=sys.maxsize)
        assert y.shape == (1, 16, 1, 1) and (y == 64).all()
        want_gx = np.zeros((1, 16, 5, 5), np.float32)
        want_gx[:, :, :2, :2] = 16  # each input of the window feeds the 16 filters
        np.testing.assert_array_equal(gx, want_gx)
        assert (gw == 1).all() and (gb == 1).all()


@pytest.mark.parametrize("stride", [2**62, sys.maxsize])
def test_conv2d_padding_2_62_is_refused_naming_padding(stride):
    """padding=2**62 (PyTorch refuses it too): a ValueError naming padding, not a zero output."""
    x = np.ones((1, 16, 5, 5), np.float32)
    w = np.ones((16, 16, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: the padded input size .*padding.*2\*\*60"):
        F.conv2d(x, w, padding=2**62, stride=stride)
    with pytest.raises(ValueError, match=r"conv2d_backward: the padded input size"):
        F.conv2d_backward(np.ones((1, 16, 1, 1), np.float32), x, w, padding=2**62, stride=stride)


@pytest.mark.parametrize("dilation", [2**30, 2**59 - 1, 2**60, sys.maxsize])
def test_conv2d_same_padding_with_huge_dilation(dilation):
    """padding='same' with a dilation past the input: only the centre tap ever reads the input
    (the output is x times that tap), or a ValueError when the padded size exceeds 2**60."""
    x, w = conv_inputs((3, 3), np.float64)
    if dilation * 2 + 5 > LIMIT:
        with pytest.raises(ValueError, match="2\\*\\*60"):
            F.conv2d(x, w, padding="same", dilation=dilation)
        return
    want = np.einsum("nchw,kc->nkhw", x, w[:, :, 1, 1])
    for algorithm in ("auto", "gemm", "direct"):
        with force_conv_algorithm(algorithm):
            np.testing.assert_array_equal(F.conv2d(x, w, padding="same", dilation=dilation), want)


def test_kernel_1_takes_any_dilation():
    """A 1x1 kernel reads one tap whatever the dilation: sys.maxsize is as good as 1."""
    x, w = conv_inputs((1, 1), np.float64)
    want = np.einsum("nchw,kc->nkhw", x, w[:, :, 0, 0])
    for algorithm in ("auto", "gemm", "direct"):
        with force_conv_algorithm(algorithm):
            np.testing.assert_array_equal(F.conv2d(x, w, dilation=sys.maxsize), want)
            np.testing.assert_array_equal(
                F.conv2d(x, w, dilation=(sys.maxsize, 2**62), stride=sys.maxsize),
                want[:, :, :1, :1])


# ------------------------------------------------------------------------------ pool oracle

def window(o, s, p, d, k, size):
    """Input positions of window o inside [0, size), in scan order (walks the input, not the
    taps: k may be 2**62)."""
    start = o * s - p
    return [i for i in range(size) if (i - start) % d == 0 and 0 <= (i - start) // d < k]


def pool_case(H, W, k, s, p, d, ceil_mode):
    """((Ho, Wo), rows per output row, cols per output column, over) or None when invalid."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (k, s, p, d))
    over = None
    for size, kk, pp, dd in ((H, kh, ph, dh), (W, kw, pw, dw)):
        if kk > LIMIT or (kk > 1 and dd * (kk - 1) + 1 > LIMIT) or size + 2 * pp > LIMIT:
            over = "2\\*\\*60"
    Ho, Wo = (oracle.pool_output_size(H, kh, sh, ph, dh, ceil_mode),
              oracle.pool_output_size(W, kw, sw, pw, dw, ceil_mode))
    if over is None and (Ho < 1 or Wo < 1):
        return None
    if over is not None or Ho * Wo > MAX_OUTPUT:
        return (Ho, Wo), None, None, over
    rows = [window(o, sh, ph, dh, kh, H) for o in range(Ho)]
    cols = [window(o, sw, pw, dw, kw, W) for o in range(Wo)]
    if not all(rows) or not all(cols):
        return None  # some window covers only padding: cnnext refuses it
    return (Ho, Wo), rows, cols, None


def max_pool_oracle(x, rows, cols):
    N, C, H, W = x.shape
    y = np.empty((N, C, len(rows), len(cols)))
    idx = np.empty(y.shape, dtype=np.int64)
    for oh, r in enumerate(rows):
        for ow, c in enumerate(cols):
            flat = np.array([ih * W + iw for ih in r for iw in c])
            vals = x.reshape(N, C, H * W)[:, :, flat]  # no ties, no NaN: the maximum is unique
            idx[:, :, oh, ow] = flat[vals.argmax(axis=2)]
            y[:, :, oh, ow] = vals.max(axis=2)
    return y, idx


def avg_divisors(H, W, k, s, p, count_include_pad, Ho, Wo):
    """PyTorch's divisors, in Python ints: the window clipped to the padded input, or the count
    of its real elements."""
    (kh, kw), (sh, sw), (ph, pw) = map(pair, (k, s, p))
    out = np.empty((Ho, Wo))
    for oh, ow, _, _, n in oracle.avg_pool_windows(H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, count_include_pad):
        out[oh, ow] = float(n)  # exact for powers of two; the quotient is what matters
    return out


def torch_pool_ok(*params):
    # PyTorch takes int32 pooling sizes, and walks a negative window start up to 0 one dilation
    # step at a time: only moderate paddings are compared (the oracle checks the rest).
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, params)
    return (torch is not None and max(kh, kw, sh, sw, dh, dw) < 2**31
            and ph <= 4096 * dh and pw <= 4096 * dw)


POOL_KERNELS = [1, 2, 3, 5, 2**31, 2**40, 2**60, 2**60 + 1, 2**62, sys.maxsize]


def pool_grid():
    """(kernel_size, stride, padding, dilation) pairs: the sweep along one axis, (2, 2, 0, 1)
    along the other; paddings 0, 1, a third and a half of the kernel."""
    for k, s, d in itertools.product(POOL_KERNELS, STRIDES, DILATIONS):
        for p in sorted({0, 1, k // 3, k // 2}):
            if p <= k // 2:
                yield (k, 2), (s, 2), (p, 0), (d, 1)
                yield (2, k), (2, s), (0, p), (1, d)


def runnable(case, tally, refuse):
    """((Ho, Wo), rows, cols) of a pool_case the oracle computes, else None: a case validation must
    refuse is checked by ``refuse(match)`` (``match``: what exceeds 2**60, or None), one with more
    than MAX_OUTPUT outputs is skipped; ``tally`` counts both."""
    if case is None or case[3] is not None:
        refuse(case[3] if case else None)
        tally["refused"] += 1
        return None
    if case[1] is None:
        tally["too large to run"] += 1
        return None
    return case[:3]


def run_max_pool_case(x, k, s, p, d, ceil_mode, tally):
    H, W = x.shape[2:]
    case = pool_case(H, W, k, s, p, d, ceil_mode)
    args = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)

    def refuse(match):
        with pytest.raises(ValueError, match=match):
            F.max_pool2d(x, **args)

    run = runnable(case, tally, refuse)
    if run is None:
        return
    _, rows, cols = run
    y, idx = F.max_pool2d(x, return_indices=True, **args)
    want_y, want_idx = max_pool_oracle(x, rows, cols)
    np.testing.assert_array_equal(y, want_y, err_msg=str(args))
    np.testing.assert_array_equal(idx, want_idx, err_msg=str(args))
    g = np.arange(y.size, dtype=np.float64).reshape(y.shape) - 3
    planes = x.shape[0] * x.shape[1]
    want_gx = np.zeros(x.shape)
    np.add.at(want_gx.reshape(planes, H * W), (np.arange(planes)[:, None], idx.reshape(planes, -1)),
              g.reshape(planes, -1))
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx, x.shape), want_gx)
    if torch_pool_ok(k, s, p, d):
        ty, ti = TF.max_pool2d(torch.tensor(x), return_indices=True, **args)
        np.testing.assert_array_equal(ty.numpy(), want_y, err_msg=str(args))
        np.testing.assert_array_equal(ti.numpy(), want_idx, err_msg=str(args))
        tally["also checked with torch"] += 1
    tally["computed"] += 1


def run_avg_pool_case(x, k, s, p, ceil_mode, count_include_pad, tally):
    H, W = x.shape[2:]
    case = pool_case(H, W, k, s, p, 1, ceil_mode)
    args = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil_mode,
                count_include_pad=count_include_pad)

    def refuse(match):
        with pytest.raises(ValueError, match=match):
            F.avg_pool2d(x, **args)
        with pytest.raises(ValueError, match=match):
            F.avg_pool2d_backward(np.ones(x.shape[:2] + (1, 1)), x.shape, **args)

    run = runnable(case, tally, refuse)
    if run is None:
        return
    (Ho, Wo), rows, cols = run
    div = avg_divisors(H, W, k, s, p, count_include_pad, Ho, Wo)
    want = np.empty(x.shape[:2] + (Ho, Wo))
    g = np.arange(want.size, dtype=np.float64).reshape(want.shape) - 3
    want_gx = np.zeros(x.shape)
    for oh, r in enumerate(rows):
        for ow, c in enumerate(cols):
            want[:, :, oh, ow] = x[:, :, r][:, :, :, c].sum(axis=(2, 3)) / div[oh, ow]
            want_gx[:, :, r[0]:r[-1] + 1, c[0]:c[-1] + 1] += (g[:, :, oh, ow] / div[oh, ow])[..., None, None]
    np.testing.assert_allclose(F.avg_pool2d(x, **args), want, rtol=1e-13, atol=0, err_msg=str(args))
    np.testing.assert_allclose(F.avg_pool2d_backward(g, x.shape, **args), want_gx, rtol=1e-13,
                               atol=1e-300, err_msg=str(args))
    if torch_pool_ok(k, s, p, 1):
        ref = TF.avg_pool2d(torch.tensor(x), **args).numpy()
        np.testing.assert_allclose(ref, want, rtol=1e-13, atol=0, err_msg=str(args))
        tally["also checked with torch"] += 1
    tally["computed"] += 1


def new_tally():
    return {"computed": 0, "refused": 0, "too large to run": 0, "also checked with torch": 0}


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool2d_sweep_of_huge_kernel_stride_padding_dilation(ceil_mode):
    cnnext.set_num_threads(1)  # thousands of tiny calls: no parallel region for each
    x = np.random.default_rng(7).standard_normal((1, 2, 5, 4))
    tally = new_tally()
    for k, s, p, d in pool_grid():
        run_max_pool_case(x, k, s, p, d, ceil_mode, tally)
    assert tally["computed"] >= 50 and tally["refused"] >= 50, tally


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool2d_sweep_of_huge_kernel_stride_padding(ceil_mode, count_include_pad):
    cnnext.set_num_threads(1)  # thousands of tiny calls: no parallel region for each
    x = np.random.default_rng(8).standard_normal((1, 2, 5, 4))
    tally = new_tally()
    for k, s, p in dict.fromkeys((k, s, p) for k, s, p, _ in pool_grid()):
        run_avg_pool_case(x, k, s, p, ceil_mode, count_include_pad, tally)
    assert tally["computed"] >= 30 and tally["refused"] >= 30, tally


# ------------------------------------------------------------------------------ properties
# Random values near the int64 limits, with the example counts of tests/test_properties.py's
# profiles (CNNEXT_HYPOTHESIS_PROFILE=ci|long|dev, CNNEXT_HYPOTHESIS_EXAMPLES=n).

def _examples():
    n = os.environ.get("CNNEXT_HYPOTHESIS_EXAMPLES", "").strip()
    if n:
        return int(n)
    profile = os.environ.get("CNNEXT_HYPOTHESIS_PROFILE", "ci").strip().lower() or "ci"
    return {"ci": 200, "long": 5000, "dev": 50}[profile]


PROPERTY = settings(max_examples=_examples(), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def sizes(low=1):
    """Ints from small to sys.maxsize, weighted towards the edges where arithmetic overflows."""
    edges = [2**31, 2**32, 2**59, 2**60, 2**61, 2**62, sys.maxsize]
    return st.one_of(st.integers(low, 6),
                     st.sampled_from(edges).flatmap(lambda e: st.integers(max(low, e - 6), min(sys.maxsize, e + 6))),
                     st.integers(low, sys.maxsize))


@PROPERTY
@given(kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)), stride=st.tuples(sizes(), sizes()),
       padding=st.tuples(sizes(0), sizes(0)), dilation=st.tuples(sizes(), sizes()),
       dtype=st.sampled_from([np.float32, np.float64]),
       algorithm=st.sampled_from(["auto", "gemm", "direct"]))
def test_conv2d_property_near_int64_limits(kernel, stride, padding, dilation, dtype, algorithm):
    cnnext.set_num_threads(1)
    x, w = conv_inputs(kernel, dtype)
    run_conv_case(x, w, stride, padding, dilation, [algorithm], new_tally())


@PROPERTY
@given(k=st.tuples(sizes(), sizes()), s=st.tuples(sizes(), sizes()), d=st.tuples(sizes(), sizes()),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), ceil_mode=st.booleans(),
       count_include_pad=st.booleans())
def test_pool2d_property_near_int64_limits(k, s, d, pad, ceil_mode, count_include_pad):
    # padding: none, one, a third or half the kernel (pooling allows at most half)
    p = tuple(min((0, 1, kk // 3, kk // 2)[i], kk // 2) for kk, i in zip(k, pad))
    cnnext.set_num_threads(1)
    x = np.random.default_rng(9).standard_normal((1, 2, 5, 4))
    tally = new_tally()
    run_max_pool_case(x, k, s, p, d, ceil_mode, tally)
    run_avg_pool_case(x, k, s, p, ceil_mode, count_include_pad, tally)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool2d_divisor_does_not_overflow(dtype):
    """Issue 13's reproduction: a 2**32 window with padding 2**31 over one element. Each of the
    four windows spans 2**32 rows and columns of the padded input: divisor 2**64 (it overflowed
    int64 to 0, and the output was 0.0)."""
    x = np.full((1, 1, 1, 1), .5, dtype=dtype)
    y = F.avg_pool2d(x, 2**32, 1, 2**31)
    assert y.shape == (1, 1, 2, 2) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 2.0**-65, dtype=dtype))
    np.testing.assert_array_equal(F.avg_pool2d(x, 2**32, 1, 2**31, count_include_pad=False),
                                  np.full((1, 1, 2, 2), .5, dtype=dtype))
    gx = F.avg_pool2d_backward(np.ones((1, 1, 2, 2), dtype=dtype), x.shape, 2**32, 1, 2**31)
    np.testing.assert_array_equal(gx, np.full((1, 1, 1, 1), 4 * 2.0**-64, dtype=dtype))


def test_pool_stride_maxsize():
    """One window whatever the stride past the input: sys.maxsize is as good as the input size."""
    x = np.arange(20.0).reshape(1, 1, 5, 4)
    y, i = F.max_pool2d(x, 3, stride=sys.maxsize, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 10.0 and i[0, 0, 0, 0] == 10
    y, i = F.max_pool2d(x, 3, stride=sys.maxsize, ceil_mode=True, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == 10.0
    assert F.avg_pool2d(x, 2, stride=sys.maxsize)[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4


def test_pool_validation_with_empty_batch_and_huge_planes_returns():
    """An avg_pool2d_backward input_shape with no samples but planes of 2**59 rows is checked
    arithmetically (a loop over the windows in the padding would take 2**58 steps)."""
    args = dict(kernel_size=(4, 1), stride=(2, 1), padding=(1, 0))
    gx = F.avg_pool2d_backward(np.ones((0, 1, 2**58, 1)), (0, 1, 2**59, 1), **args)
    assert gx.shape == (0, 1, 2**59, 1)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: the padded input size along the height"):
        F.avg_pool2d_backward(np.ones((0, 1, 2**59, 1)), (0, 1, 2**60, 1), **args)
