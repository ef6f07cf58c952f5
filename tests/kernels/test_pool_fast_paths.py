"""The vectorized max_pool2d kernels of cnnext._kernels._pool, each against the naive float64 oracle.

Every case here is routed to a specific kernel path (see the Design notes in _pool.pyx), so a broken
path fails its own test: the 2x2 stride-2 forward, the separable forward (flat band loop, per-row
loop, band splitting, padding and ceil_mode clipping, strides larger than the kernel), the dense
2x2 backward and its fallback to zero-and-scatter. Values are exact, so they are compared exactly,
including NaN positions and the sign of zeros; the thread count never changes a bit.
"""
import itertools

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from helpers import rng_for
from cnnext._kernels import _pool

pytestmark = pytest.mark.usefixtures("restore_config")

FLOATS = [np.float32, np.float64]
SPECIAL = np.array([-np.inf, -1.0, -0.0, 0.0, 1.0, np.inf, np.nan])

# id -> (N, C, H, W, kernel_size, stride, padding, ceil_mode) and the path it takes
PATH_CASES = {
    "2x2s2_even": (2, 3, 6, 8, 2, 2, 0, False),                  # 2x2 fast path
    "2x2s2_odd": (2, 2, 7, 9, 2, 2, 0, False),                   # fast path, last row/col unused
    "3x3s2_flat": (2, 3, 9, 10, 3, 2, 0, False),                 # separable, one loop per band
    "3x3s2_rows": (2, 3, 9, 9, 3, 2, 0, False),                  # separable, W % sw != 0: per row
    "3x3s2_pad1_flat": (2, 2, 8, 8, 3, 2, 1, False),             # flat loop + clipped borders
    "3x3s2_pad1_ceil": (2, 2, 9, 6, 3, 2, 1, True),              # ceil: Wo > W // sw, per row
    "3x3s1": (1, 3, 7, 8, 3, 1, 0, False),
    "3x3s1_pad1": (1, 2, 6, 7, 3, 1, 1, False),
    "4x4s1_pad2": (1, 2, 7, 9, 4, 1, 2, False),
    "5x5s3_pad2_ceil": (1, 2, 11, 13, 5, 3, 2, True),
    "2x2s3_gaps": (1, 2, 10, 11, 2, 3, 0, False),                # stride > kernel: rows skipped
    "2x2s2_pad1": (1, 2, 6, 7, 2, 2, 1, False),                  # 2x2 with padding: separable
    "2x2s2_ceil": (1, 2, 7, 7, 2, 2, 0, True),                   # partial last window: separable
    "nonsquare": (2, 2, 7, 9, (2, 3), (1, 2), (1, 1), False),
    "nonsquare_ceil": (1, 2, 8, 7, (3, 2), (2, 3), (1, 0), True),
    "rows_only": (1, 2, 9, 6, (3, 1), (2, 1), 0, False),         # vertical fold alone
    "cols_only": (1, 2, 5, 12, (1, 3), (1, 2), 0, False),        # horizontal fold alone
    "1x1s2": (1, 2, 5, 6, 1, 2, 0, True),
    "global": (2, 2, 4, 5, (4, 5), 1, 0, False),
    "kernel_exceeds_input_ceil": (1, 2, 2, 2, 3, 2, 0, True),
    "bands": (1, 2, 2100, 4, 3, 1, 1, False),                    # ~8192-window bands: 2 bands
    "bands_rows": (1, 1, 2300, 7, 3, 2, 1, True),                # bands, per-row loops, ceil
}


def case_args(case_id):
    N, C, H, W, k, s, p, ceil = PATH_CASES[case_id]
    return (N, C, H, W), dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)


def make(rng, shape, kind, dtype):
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif kind == "special":
        x = rng.choice(SPECIAL, size=shape)
    else:  # sparse NaNs among normal values
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.05] = np.nan
    return x.astype(dtype)


def assert_exact(actual, expected):
    """Equal values, NaNs at the same places, zeros with the same sign."""
    expected = np.asarray(expected).astype(actual.dtype)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(np.signbit(actual), np.signbit(expected))


def forward_all_threads(x, **kw):
    """max_pool2d with 1, 2 and 3 threads; the three results must be bitwise identical."""
    results = []
    for n in (1, 2, 3):
        cnnext.set_num_threads(n)
        results.append(F.max_pool2d(x, return_indices=True, **kw))
    (y, idx), rest = results[0], results[1:]
    for y2, idx2 in rest:
        assert y2.tobytes() == y.tobytes() and idx2.tobytes() == idx.tobytes()
    return y, idx


@pytest.mark.parametrize("kind", ["normal", "ties", "special", "nans"])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(PATH_CASES))
def test_forward_paths_match_oracle(case_id, dtype, kind):
    shape, kw = case_args(case_id)
    x = make(rng_for(case_id, kind, np.dtype(dtype).name), shape, kind, dtype)
    y, idx = forward_all_threads(x, **kw)
    ey, eidx = oracle.max_pool2d(x, **kw)
    assert_exact(y, ey)
    np.testing.assert_array_equal(idx, eidx)
    np.testing.assert_array_equal(F.max_pool2d(x, **kw), y)


def lay_out(patterns, k, s):
    """A line holding pattern i at offset i * L (L a multiple of the stride s, >= the kernel k),
    so that window i * L // s sees exactly pattern i; the gaps cycle through SPECIAL."""
    L = s * -(-k // s)
    line = np.resize(SPECIAL, len(patterns) * L)
    for i, pat in enumerate(patterns):
        line[i * L:i * L + k] = pat
    return line


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((1, 3), (1, 2)), ((3, 1), (2, 1)),
                                            ((1, 3), (1, 1)), ((1, 2), (1, 1))])
def test_every_pattern_of_special_values(kernel, stride, dtype):
    """Windows holding every pattern over {-inf, -1, -0, 0, 1, inf, nan}: all 2x2 windows (fast
    path), all 3-tap rows (horizontal fold, stride 2 and 1) and 3-row columns (vertical fold), so
    every order of ties, signed zeros, infinities and NaNs is checked against the oracle."""
    kh, kw = kernel
    patterns = np.array(list(itertools.product(SPECIAL, repeat=kh * kw)))
    if kh == 1:
        plane = lay_out(patterns, kw, stride[1])[None, :]
    elif kw == 1:
        plane = lay_out(patterns, kh, stride[0])[:, None]
    else:  # 2x2 blocks side by side, each block one row-major pattern
        plane = patterns.reshape(-1, 2, 2).transpose(1, 0, 2).reshape(2, -1)
    x = np.stack([plane, plane[::-1, ::-1]])[None].astype(dtype)  # a second plane, reversed
    kwargs = dict(kernel_size=kernel, stride=stride)
    y, idx = forward_all_threads(x, **kwargs)
    ey, eidx = oracle.max_pool2d(x, **kwargs)
    assert_exact(y, ey)
    np.testing.assert_array_equal(idx, eidx)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["3x3s2_flat", "3x3s2_pad1_ceil", "2x2s2_odd"])
@pytest.mark.parametrize("layout", ["slice", "transposed"])
def test_forward_non_contiguous_input(case_id, dtype, layout):
    shape, kw = case_args(case_id)
    x = make(rng_for(case_id, "layout"), shape, "nans", dtype)
    if layout == "slice":
        big = np.zeros(shape[:-1] + (3 * shape[-1],), dtype=dtype)
        big[..., ::3] = x
        view = big[..., ::3]
    else:
        view = np.ascontiguousarray(np.swapaxes(x, 0, 1)).swapaxes(0, 1)
    assert not view.flags.c_contiguous
    y, idx = F.max_pool2d(view, return_indices=True, **kw)
    ey, eidx = oracle.max_pool2d(x, **kw)
    assert_exact(y, ey)
    np.testing.assert_array_equal(idx, eidx)


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------
def backward_all_threads(gy, idx, shape):
    results = []
    for n in (1, 2, 3):
        cnnext.set_num_threads(n)
        results.append(F.max_pool2d_backward(gy, idx, shape))
    for gx in results[1:]:
        assert gx.tobytes() == results[0].tobytes()
    return results[0]


def grad(rng, shape, dtype):
    g = rng.standard_normal(shape)
    g[rng.random(shape) < 0.1] = -0.0  # a scatter-add into zeros stores +0.0
    return g.astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (2, 2, 7, 9), (3, 5, 2, 2), (1, 2, 9, 4)])
def test_backward_dense_2x2(shape, dtype):
    """2x2 stride-2 indices (odd sizes leave a zero last row/column): every element written once."""
    rng = rng_for("dense", shape, np.dtype(dtype).name)
    x = make(rng, shape, "ties", dtype)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    gy = grad(rng, idx.shape, dtype)
    gx = backward_all_threads(gy, idx, shape)
    assert gx.dtype == np.dtype(dtype)
    assert_exact(gx, oracle.max_pool2d_backward(gy, idx, shape))  # one contribution each: exact
    assert not np.signbit(gx[gx == 0]).any()


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_backward_2x2_geometry_with_foreign_indices(dtype):
    """Planes whose indices leave their own 2x2 block fall back to zero-and-scatter; the others stay
    dense. Foreign indices sit in the first row (fallback before anything was written), in a later
    row (after part of the plane was written densely) and repeat (accumulation)."""
    shape = (2, 3, 6, 8)
    rng = rng_for("foreign", np.dtype(dtype).name)
    _, idx = F.max_pool2d(make(rng, shape, "normal", dtype), 2, return_indices=True)
    idx = idx.copy()
    idx[0, 1, 0, 0] = 47                     # valid, but in the last block of the plane
    idx[1, 0, 2, 3] = 0                      # later row points back to the first block
    idx[1, 0, 2, 1] = 0                      # ... twice: these two gradients add up
    idx[1, 2] = rng.integers(0, 48, size=idx.shape[2:])  # a whole plane of random positions
    gy = grad(rng, idx.shape, dtype)
    gx = backward_all_threads(gy, idx, shape)
    oracle.assert_close(gx, oracle.max_pool2d_backward(gy, idx, shape))
    np.testing.assert_array_equal(gx[0, 0], oracle.max_pool2d_backward(gy, idx, shape)[0, 0])


@pytest.mark.parametrize("bad", [2**32, 2**32 + 1, 2**32 + 8, -2**32 + 9, -2**63 + 1, -1, 48])
def test_backward_2x2_index_with_high_bits_is_rejected(bad):
    """The dense path compares 32-bit halves: an index whose low 32 bits point into its own block
    but whose high bits are set is still out of range."""
    shape = (1, 2, 6, 8)
    _, idx = F.max_pool2d(np.zeros(shape), 2, return_indices=True)  # idx[.., 0, 0] == 0
    idx = idx.copy()
    idx[0, 1, 0, 0] = bad  # 2**32 + {0, 1, 8, 9}: low bits 0, 1, W, W + 1 (the block of (0, 0))
    with pytest.raises(ValueError, match="1 indices lie outside"):
        F.max_pool2d_backward(np.ones(idx.shape), idx, shape)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["3x3s2_flat", "3x3s2_pad1_ceil", "2x2s3_gaps", "nonsquare"])
def test_backward_scatter_paths(case_id, dtype):
    shape, kw = case_args(case_id)
    rng = rng_for("scatter", case_id, np.dtype(dtype).name)
    _, idx = F.max_pool2d(make(rng, shape, "ties", dtype), return_indices=True, **kw)
    gy = grad(rng, idx.shape, dtype)
    gx = backward_all_threads(gy, idx, shape)
    expected = oracle.max_pool2d_backward(gy, idx, shape)
    oracle.assert_close(gx, expected)
    assert not np.signbit(gx[gx == 0]).any()


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel, stride, foreign", [(3, 2, False), (2, 2, False), (2, 2, True)])
def test_backward_planes_larger_than_cache(kernel, stride, foreign, dtype):
    """Planes above 256 KiB: the scatter path gets calloc'd zeros from pooling.py instead of
    clearing the plane itself; 2x2 blocks stay dense, and a plane the dense path gives up on is
    cleared before the scatter all the same."""
    shape = (1, 3, 260, 262)  # 265 KiB of float32 per plane
    rng = rng_for("large", kernel, foreign, np.dtype(dtype).name)
    _, idx = F.max_pool2d(make(rng, shape, "ties", dtype), kernel, stride, return_indices=True)
    if foreign:
        idx = idx.copy()
        idx[0, 1, 50, 7] = 0  # a later row of plane 1 points back to the first block
    gy = grad(rng, idx.shape, dtype)
    gx = backward_all_threads(gy, idx, shape)
    oracle.assert_close(gx, oracle.max_pool2d_backward(gy, idx, shape))
    assert not np.signbit(gx[gx == 0]).any()


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dense", [True, False])
def test_backward_kernel_overwrites_every_element(dense, dtype):
    """The kernel ignores what gx held: dense planes and fallback planes are written entirely."""
    planes, H, W, Ho, Wo = 3, 5, 7, 2, 3
    rng = rng_for("overwrite", dense, np.dtype(dtype).name)
    x = make(rng, (1, planes, H, W), "normal", dtype)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    idx = idx.reshape(planes, Ho * Wo).copy()
    if not dense:
        idx[:, 0] = 34  # the last element of each plane, outside block 0
    gy = grad(rng, (planes, Ho * Wo), dtype)
    gx = np.full((planes, H * W), 7.0, dtype=dtype)
    assert _pool.max_pool2d_backward(gy, idx, gx, 2, W, Wo) == 0
    expected = oracle.max_pool2d_backward(gy.reshape(planes, Ho, Wo), idx.reshape(planes, Ho, Wo),
                                          (planes, H, W)).reshape(planes, H * W)
    assert_exact(gx, expected)
