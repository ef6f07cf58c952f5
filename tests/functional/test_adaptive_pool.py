"""cnnext.functional adaptive_avg_pool2d / adaptive_max_pool2d and their backward functions, against
PyTorch and against naive loops written here from the definitions.

The naive oracle: output (i, j) pools input rows floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1 and columns
floor(j*W/Wo) .. ceil((j+1)*W/Wo) - 1 (computed with exact integer arithmetic); average is the mean of
that bin, max scans it row by row and takes an element that is greater or NaN (index h*W + w);
backward spreads each gradient over its bin (average) or adds it at the index (max). torch is an
oracle only: its tests skip without it.
"""
import importlib.machinery
import zlib

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from naive_oracle import assert_close

DTYPES = [np.float32, np.float64]
# (input shape, output_size): odd and prime sizes, overlapping bins, outputs larger than the
# input, None entries, global pooling, unbatched input
CASES = [
    ((2, 3, 5, 7), (3, 2)),
    ((2, 3, 5, 7), (None, 4)),
    ((2, 3, 5, 7), (2, None)),
    ((1, 2, 4, 4), 9),
    ((1, 2, 3, 5), (7, 8)),
    ((3, 5, 7), 1),
    ((2, 2, 6, 6), (3, 3)),
    ((2, 3, 8, 8), 1),
    ((1, 1, 1, 1), (2, 3)),
    ((2, 3, 13, 11), (5, 4)),
    ((4, 3, 11), (1, 11)),
    ((2, 1, 7, 9), (7, 9)),
]
IDS = [f"{s}->{o}" for s, o in CASES]
TORCH_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def torch_or_skip():
    return pytest.importorskip("torch")


def close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               **TORCH_TOL[dtype])


def sizes(shape, output_size):
    H, W = shape[-2:]
    if not isinstance(output_size, tuple):
        output_size = (output_size, output_size)
    return tuple(s if o is None else o for o, s in zip(output_size, (H, W)))


def bins(size, out):
    """[(start, end)] of the out bins over size, from integer floor/ceil."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def naive_avg(x, Ho, Wo):
    x = np.asarray(x, np.float64)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    y = np.zeros(lead + (Ho, Wo))
    for p in np.ndindex(lead):
        for i, (hs, he) in enumerate(bins(H, Ho)):
            for j, (ws, we) in enumerate(bins(W, Wo)):
                vals = [x[p + (h, w)] for h in range(hs, he) for w in range(ws, we)]
                y[p + (i, j)] = sum(vals) / len(vals)
    return y


def naive_avg_backward(gy, H, W):
    gy = np.asarray(gy, np.float64)
    lead, (Ho, Wo) = gy.shape[:-2], gy.shape[-2:]
    gx = np.zeros(lead + (H, W))
    for p in np.ndindex(lead):
        for i, (hs, he) in enumerate(bins(H, Ho)):
            for j, (ws, we) in enumerate(bins(W, Wo)):
                area = (he - hs) * (we - ws)
                for h in range(hs, he):
                    for w in range(ws, we):
                        gx[p + (h, w)] += gy[p + (i, j)] / area
    return gx


def naive_max(x, Ho, Wo):
    x = np.asarray(x, np.float64)
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    y = np.zeros(lead + (Ho, Wo))
    idx = np.zeros(lead + (Ho, Wo), dtype=np.int64)
    for p in np.ndindex(lead):
        for i, (hs, he) in enumerate(bins(H, Ho)):
            for j, (ws, we) in enumerate(bins(W, Wo)):
                best, at = -np.inf, hs * W + ws
                for h in range(hs, he):
                    for w in range(ws, we):
                        v = x[p + (h, w)]
                        if v > best or np.isnan(v):
                            best, at = v, h * W + w
                y[p + (i, j)], idx[p + (i, j)] = best, at
    return y, idx


def naive_max_backward(gy, idx, H, W):
    gy = np.asarray(gy, np.float64)
    lead = gy.shape[:-2]
    gx = np.zeros(lead + (H * W,))
    for p in np.ndindex(gy.shape):
        gx[p[:-2] + (idx[p],)] += gy[p]
    return gx.reshape(lead + (H, W))


def data(shape, dtype, key, ties=False):
    rng = rng_for(shape, np.dtype(dtype).name, key)
    if ties:  # few distinct values: the first-maximum rule decides
        return rng.integers(-2, 3, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------------------------
# naive oracle


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", CASES, ids=IDS)
def test_adaptive_avg_pool2d_matches_naive_oracle(shape, output_size, dtype):
    x = data(shape, dtype, "avg")
    Ho, Wo = sizes(shape, output_size)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert y.dtype == dtype and y.shape == shape[:-2] + (Ho, Wo)
    assert_close(y, naive_avg(x, Ho, Wo))
    gy = data(y.shape, dtype, "avg-gy")
    gx = F.adaptive_avg_pool2d_backward(gy, shape)
    assert gx.dtype == dtype and gx.shape == shape
    assert_close(gx, naive_avg_backward(gy, *shape[-2:]))


@pytest.mark.parametrize("dtype", DTYPES + [np.int64])
@pytest.mark.parametrize("shape, output_size", CASES, ids=IDS)
def test_adaptive_max_pool2d_matches_naive_oracle(shape, output_size, dtype):
    x = data(shape, dtype, "max", ties=dtype == np.int64)
    Ho, Wo = sizes(shape, output_size)
    y, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    ny, nidx = naive_max(x, Ho, Wo)
    assert y.dtype == (np.float64 if dtype == np.int64 else dtype) and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ny)
    np.testing.assert_array_equal(idx, nidx)
    np.testing.assert_array_equal(F.adaptive_max_pool2d(x, output_size), y)
    gy = data(y.shape, np.float64, "max-gy")
    gx = F.adaptive_max_pool2d_backward(gy, idx, shape)
    assert_close(gx, naive_max_backward(gy, idx, *shape[-2:]))


def test_adaptive_max_pool2d_nan_and_inf():
    x = np.full((1, 1, 4, 6), -np.inf)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 2, 4] = 3.0
    x[0, 0, 3, 5] = np.nan
    y, idx = F.adaptive_max_pool2d(x, (2, 2), return_indices=True)
    ny, nidx = naive_max(x, 2, 2)
    np.testing.assert_array_equal(y, ny)  # NaN where a bin holds one, -inf for an all -inf bin
    np.testing.assert_array_equal(idx, nidx)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == -np.inf and idx[0, 0, 0, 1] == 3
    assert np.isnan(y[0, 0, 1, 1]) and idx[0, 0, 1, 1] == 3 * 6 + 5  # the last NaN


def test_adaptive_avg_pool2d_float32_sums_in_double():
    x = np.full((1, 1, 8, 8), 3e37, dtype=np.float32)  # the bin's float32 sum would overflow
    y = F.adaptive_avg_pool2d(x, 1)
    np.testing.assert_allclose(y, 3e37, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# torch


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", CASES, ids=IDS)
def test_adaptive_avg_pool2d_matches_torch(shape, output_size, dtype):
    torch = torch_or_skip()
    x = data(shape, dtype, "torch-avg")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.adaptive_avg_pool2d(tx, output_size)
    y = F.adaptive_avg_pool2d(x, output_size)
    assert y.shape == tuple(ty.shape)
    close(y, ty.detach().numpy(), dtype)
    gy = data(y.shape, dtype, "torch-avg-gy")
    ty.backward(torch.tensor(gy))
    close(F.adaptive_avg_pool2d_backward(gy, shape), tx.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape, output_size", CASES, ids=IDS)
def test_adaptive_max_pool2d_matches_torch(shape, output_size, dtype, ties):
    torch = torch_or_skip()
    x = data(shape, dtype, "torch-max", ties=ties)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = torch.nn.functional.adaptive_max_pool2d(tx, output_size, return_indices=True)
    y, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gy = data(y.shape, dtype, "torch-max-gy")
    ty.backward(torch.tensor(gy))
    close(F.adaptive_max_pool2d_backward(gy, idx, shape), tx.grad.numpy(), dtype)


def test_zero_output_size_and_empty_batch_match_torch():
    torch = torch_or_skip()
    x = data((2, 3, 5, 7), np.float64, "zero")
    for output_size in [(0, 2), 0]:
        y = F.adaptive_avg_pool2d(x, output_size)
        assert y.shape == tuple(torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), output_size).shape)
        np.testing.assert_array_equal(F.adaptive_avg_pool2d_backward(y, x.shape), 0)
        y, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
        np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(y, idx, x.shape), 0)
    empty = np.zeros((0, 3, 5, 7))
    assert F.adaptive_avg_pool2d(empty, (3, 2)).shape == (0, 3, 3, 2)
    assert F.adaptive_max_pool2d(empty, (3, 2)).shape == (0, 3, 3, 2)
    assert F.adaptive_avg_pool2d(np.zeros((2, 0, 5, 7)), 2).shape == (2, 0, 2, 2)


# ----------------------------------------------------------------------------------------------
# threads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", [((3, 5, 13, 11), (5, 4)), ((4, 3, 8, 8), 1),
                                                ((2, 3, 5, 7), (9, 9))])
def test_thread_counts_bitwise_identical(shape, output_size, dtype, restore_config):
    x = data(shape, dtype, "threads")
    out = []
    for n in (1, 2):
        cnnext.set_num_threads(n)
        y = F.adaptive_avg_pool2d(x, output_size)
        gx = F.adaptive_avg_pool2d_backward(y, shape)
        m, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
        gm = F.adaptive_max_pool2d_backward(m, idx, shape)
        out.append((y, gx, m, idx, gm))
    for one, two in zip(*out):
        np.testing.assert_array_equal(one, two)
    assert_close(out[1][0], naive_avg(x, *sizes(shape, output_size)))


# ----------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("func", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
@pytest.mark.parametrize("args, exc, words", [
    ((np.ones((2, 3)), 2), ValueError, "input must be 3-D or 4-D"),
    ((np.ones((1, 2, 3, 4, 5)), 2), ValueError, "input must be 3-D or 4-D"),
    ((np.ones((2, 3, 0, 4)), 2), ValueError, "spatial sizes must be >= 1"),
    ((np.ones((2, 3, 4), dtype=complex), 2), TypeError, "input"),
    ((np.ones((2, 3, 4)), -1), ValueError, "output_size must be >= 0"),
    ((np.ones((2, 3, 4)), (2, -3)), ValueError, "output_size must be >= 0"),
    ((np.ones((2, 3, 4)), (1, 2, 3)), ValueError, "output_size must be an int or a pair"),
    ((np.ones((2, 3, 4)), 2.0), TypeError, "output_size must be an int"),
    ((np.ones((2, 3, 4)), (True, 2)), TypeError, "output_size must be an int"),
    ((np.ones((2, 3, 4)), None), TypeError, "output_size must be an int or a pair"),
])
def test_forward_bad_arguments(func, args, exc, words):
    with pytest.raises(exc) as info:
        func(*args)
    assert words in str(info.value)
    assert str(info.value).startswith(func.__name__ + ": ")


def test_return_indices_must_be_bool():
    with pytest.raises(TypeError, match="^adaptive_max_pool2d: return_indices must be a bool"):
        F.adaptive_max_pool2d(np.ones((1, 4, 4)), 2, return_indices=1)


@pytest.mark.parametrize("args, exc, words", [
    ((np.ones((2, 3, 2, 2)), (2, 3, 4)), ValueError, "grad_output must be 3-D"),
    ((np.ones((2, 3, 2, 2)), (2, 4, 5, 5)), ValueError, "does not match input_shape"),
    ((np.ones((2, 3, 2, 2)), (2, 3, 0, 5)), ValueError, "spatial sizes must be >= 1"),
    ((np.ones((2, 3, 2, 2)), (2, 3, 5)), ValueError, "grad_output must be 3-D"),
    ((np.ones((2, 3, 2, 2)), "abc"), TypeError, "input_shape must be a tuple of ints"),
    ((np.ones((2, 3, 2, 2)), (2, 3, -1, 4)), ValueError, "input_shape must be"),
])
def test_avg_backward_bad_arguments(args, exc, words):
    with pytest.raises(exc) as info:
        F.adaptive_avg_pool2d_backward(*args)
    assert words in str(info.value)
    assert str(info.value).startswith("adaptive_avg_pool2d_backward: ")


def test_max_backward_bad_indices():
    x = data((2, 3, 5, 7), np.float64, "bad-idx")
    y, idx = F.adaptive_max_pool2d(x, (3, 2), return_indices=True)
    func = F.adaptive_max_pool2d_backward
    with pytest.raises(TypeError, match="^adaptive_max_pool2d_backward: indices must be an integer"):
        func(y, idx.astype(np.float64), x.shape)
    with pytest.raises(ValueError, match="indices must have shape"):
        func(y, idx[:, :, :2], x.shape)
    bad = idx.copy()
    bad[1, 2, 0, 1] = 35  # H*W = 35
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"2 indices lie outside \[0, H\*W\) = \[0, 35\)"):
        func(y, bad, x.shape)
    with pytest.raises(ValueError, match="does not match input_shape"):
        func(y, idx, (2, 4, 5, 7))


def test_exported_and_compiled():
    names = {"adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
             "adaptive_max_pool2d_backward"}
    assert names <= set(F.__all__)
    from cnnext._kernels import _adaptive
    from cnnext.functional import adaptive
    assert adaptive._adaptive is _adaptive
    assert _adaptive.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
