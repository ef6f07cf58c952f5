"""The small-convolution kernels (cnnext/_kernels/_tile_gemm.h via _direct.small_conv and
small_grad_weight: stride 1, dilation 1, groups 1, one thread), which the direct algorithm uses
for small problems on AVX2 machines, against the naive float64 oracle.

They compute in blocks of 6 rows (or 6 filters) by two vectors of columns (8 float64 / 16 float32)
and read past the valid region into zeroed slack: the shapes reach every row and column remainder,
both kernels (fewer than 4 filters: one filter at a time, 6 output rows per block; 4 or more: 6
filters per block), kernels from 1x1 to 7x7, paddings that grow and that crop, and batches.
"""
import numpy as np
import pytest

import cnnext.functional as F
import naive_oracle as oracle
from cnnext._kernels import _direct
from cnnext._config import force_conv_algorithm
from cnnext._validation import check_conv2d
from cnnext.functional import _conv_dispatch
from cnnext.functional._conv_dispatch import backward_checked
from helpers import assert_partial_backward
from naive_oracle import assert_close

DTYPES = [np.float32, np.float64]

# (N, C, H, W, K, kh, kw, padding)
CASES = {
    "lenet1": (1, 1, 28, 28, 6, 5, 5, 0),
    "one_filter": (1, 2, 9, 10, 1, 3, 3, 1),
    "three_filters": (2, 1, 13, 21, 3, 3, 2, 0),  # one-filter kernel, 11 rows, 20 columns
    "seven_filters": (1, 3, 8, 19, 7, 3, 3, 1),  # 6 + 1 filters
    "thirteen_filters": (1, 2, 7, 7, 13, 2, 2, 0),
    "pointwise": (2, 3, 5, 6, 4, 1, 1, 0),
    "wide_kernel": (1, 2, 12, 30, 5, 7, 7, 3),
    "tall_kernel": (1, 1, 16, 9, 4, 7, 1, (3, 0)),
    "one_pixel_output": (1, 2, 5, 5, 6, 5, 5, 0),
    "crop_padding": (1, 2, 6, 7, 4, 2, 2, (1, 2)),  # padding > kernel - 1: grad_input crops
    "same_even_kernel": (2, 2, 7, 9, 5, 4, 4, "same"),
    "batch": (3, 2, 10, 17, 6, 3, 3, 1),
    "wide_row": (1, 1, 4, 70, 6, 3, 5, 0),  # 66 columns: several blocks and a tail
}


@pytest.fixture(autouse=True)
def small_kernels(monkeypatch):
    """Force the small kernels even on CPUs without AVX2 (they then run the baseline build)."""
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_DIRECT", True)
    _conv_dispatch._auto_algorithm.cache_clear()  # its cached choices depend on _NATIVE_DIRECT
    yield
    _conv_dispatch._auto_algorithm.cache_clear()


def _inputs(case, dtype):
    N, C, H, W, K, kh, kw, padding = CASES[case]
    rng = np.random.default_rng([len(case)] + [ord(ch) for ch in case])
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = oracle.conv2d(x, w, b, padding=padding)
    gy = rng.standard_normal(y.shape).astype(dtype)
    return x, w, b, gy, padding, y


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", sorted(CASES))
def test_small_direct_matches_oracle(case, dtype, monkeypatch):
    x, w, b, gy, padding, want = _inputs(case, dtype)
    spy = []
    for name in ("small_conv", "small_grad_weight"):
        real = getattr(_direct, name)
        monkeypatch.setattr(_direct, name, lambda *a, _r=real, _n=name: spy.append(_n) or _r(*a))
    with force_conv_algorithm("direct"):
        y = F.conv2d(x, w, b, padding=padding)
        gx, gw, gb = F.conv2d_backward(gy, x, w, padding=padding)
    assert spy == ["small_conv", "small_conv", "small_grad_weight"]  # the path under test ran
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == dtype
    assert_close(y, want)
    for got, ref in zip((gx, gw, gb), oracle.conv2d_backward(gy, x, w, padding=padding)):
        assert_close(got, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_small_direct_partial_backward_and_no_bias(dtype):
    x, w, b, gy, padding, _ = _inputs("seven_filters", dtype)
    want = oracle.conv2d_backward(gy, x, w, padding=padding)
    with force_conv_algorithm("direct"):
        assert_close(F.conv2d(x, w, None, padding=padding), oracle.conv2d(x, w, None, padding=padding))
        x, w, _, g, _ = check_conv2d("t", x, w, None, 1, padding, 1, 1)
        gy = np.ascontiguousarray(gy, dtype=x.dtype)
        assert_partial_backward(backward_checked, x, w, gy, g, want)


def test_small_direct_only_for_small_stride1_problems():

    def algorithm(shape_x, shape_w, **kw):
        x, w = np.zeros(shape_x), np.zeros(shape_w)
        g = check_conv2d("t", x, w, None, kw.get("stride", 1), 0, kw.get("dilation", 1),
                         kw.get("groups", 1))[3]
        with force_conv_algorithm("direct"):
            return _conv_dispatch._algorithm(g, x.dtype)

    assert algorithm((1, 1, 28, 28), (6, 1, 5, 5)) == "small"
    assert algorithm((64, 1, 28, 28), (6, 1, 5, 5)) == "direct"  # 2**17 elements of work or more
    assert algorithm((1, 1, 28, 28), (6, 1, 5, 5), stride=2) == "direct"
    assert algorithm((1, 1, 28, 28), (6, 1, 5, 5), dilation=2) == "direct"
    assert algorithm((1, 2, 28, 28), (6, 1, 5, 5), groups=2) == "direct"


def test_small_kernels_reject_mismatched_shapes():
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match="small_conv"):
        _direct.small_conv(x, 0, 0, np.zeros((3, 1, 3, 3)), False, np.zeros((1, 3, 4, 4)),
                           np.zeros(3), True)
    with pytest.raises(ValueError, match="small_conv"):
        _direct.small_conv(x, 0, 0, np.zeros((3, 2, 3, 3)), False, np.zeros((1, 3, 4, 4)),
                           np.zeros(2), True)  # bias too short
    with pytest.raises(ValueError, match="small_grad_weight"):
        _direct.small_grad_weight(x, 0, 0, np.zeros((1, 3, 4, 4)), np.zeros((3, 1, 3, 3)),
                                  np.zeros(3), True)
    with pytest.raises(ValueError, match="small_grad_weight"):
        _direct.small_grad_weight(x, 0, 0, np.zeros((1, 3, 4, 4)), np.zeros((3, 2, 3, 3)),
                                  np.zeros(2), True)
