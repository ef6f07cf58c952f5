"""Winograd F(4x4, 3x3) (cnnext/_kernels/_winograd.pyx) forced on, against the naive float64 oracle.

Winograd's transforms add and subtract (and scale by up to 8) input values before the multiplies,
so in float32 its rounding error is larger than a direct sum's (about 1e-5 of the output's largest
magnitude at 512 channels, against 3e-7 for im2col + GEMM); it stays inside the float32 tolerance
of naive_oracle.assert_close (rtol 1e-4, atol 1e-5 relative to the output's largest magnitude).
"""
import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext._config import force_conv_algorithm
from cnnext._validation import check_conv2d
from cnnext.functional import _conv_dispatch
from cnnext.functional._conv_dispatch import backward_checked
import naive_oracle as oracle
from helpers import rng_for, same_at_thread_counts
from naive_oracle import assert_close

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, params=["tile_gemm", "blas"])
def gemm_path(request, monkeypatch):
    """Every test here runs twice: with the 36 GEMMs in cnnext's tile_gemm kernels (what AVX2
    machines use) and in numpy's BLAS (what the others use)."""
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_TILE_GEMM", request.param == "tile_gemm")
    return request.param
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731


def make(N, C, H, W, K, dtype, key, bias=True):
    rng = rng_for(N, C, H, W, K, np.dtype(dtype).name, key)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if bias else None
    return x, w, b


def gy_for(y, key):
    return rng_for("gy", y.shape, y.dtype.name, key).standard_normal(y.shape).astype(y.dtype)


def run(x, w, b, padding, algorithm="winograd"):
    with force_conv_algorithm(algorithm):
        y = F.conv2d(x, w, b, padding=padding)
        gy = gy_for(y, padding)
        grads = F.conv2d_backward(gy, x, w, padding=padding)
    return y, gy, grads


def check_against_oracle(x, w, b, padding):
    y, gy, (gx, gw, gb) = run(x, w, b, padding)
    assert y.dtype == x.dtype and gx.dtype == x.dtype
    assert_close(y, oracle.conv2d(x, w, b, padding=padding))
    for got, want in zip((gx, gw, gb), oracle.conv2d_backward(gy, x, w, padding=padding)):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("padding", [0, 1, 2, 3, (1, 0), (0, 2)])
@pytest.mark.parametrize("hw", [(4, 4), (5, 5), (6, 7), (7, 6), (3, 3), (3, 8), (9, 4), (10, 13),
                                (12, 11)])
def test_winograd_matches_oracle_odd_and_even_sizes(hw, padding, dtype):
    """Output sizes that are not a multiple of 4 end in partial tiles (every remainder 0-3 occurs
    here, on each axis); padding 0-3 (3: grad_input's padding 2 - p is negative) and asymmetric
    pairs."""
    H, W = hw
    x, w, b = make(2, 3, H, W, 4, dtype, (hw, padding))
    check_against_oracle(x, w, b, padding)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 5, 5, 1), (1, 5, 8, 8, 3), (3, 16, 8, 8, 16), (2, 7, 11, 10, 9)])
def test_winograd_channels_batch_and_bias(shape, bias, dtype):
    x, w, b = make(*shape, dtype, "cb", bias=bias)
    check_against_oracle(x, w, b, 1)


def test_winograd_same_padding_and_unbatched():
    x, w, b = make(1, 3, 7, 6, 2, np.float64, "same")
    with force_conv_algorithm("winograd"):
        y = F.conv2d(x[0], w, b, padding="same")
        gx, gw, gb = F.conv2d_backward(np.ones_like(y), x[0], w, padding="same")
    assert_close(y, oracle.conv2d(x, w, b, padding=1)[0])
    want = oracle.conv2d_backward(np.ones((1,) + y.shape), x, w, padding=1)
    assert_close(gx, want[0][0])
    assert_close(gw, want[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("limit", ["one_sample", "partial_last_chunk", "tiny_1000_bytes"])
def test_winograd_chunked_batch(limit, dtype, restore_config, monkeypatch):
    """The batch runs in chunks that fit the workspace limit; results do not depend on them."""
    x, w, b = make(7, 3, 6, 5, 4, dtype, "chunk")
    cnnext.set_workspace_limit(2**30)
    y_full, _, g_full = run(x, w, b, 1)
    tiles = 2 * 2  # 4x4 tiles over the 6x5 output
    per_sample = 36 * (3 + 4) * tiles * x.dtype.itemsize
    monkeypatch.setattr(_conv_dispatch, "_WINOGRAD_CACHE_TARGET_BYTES", 2**30)
    cnnext.set_workspace_limit({"one_sample": per_sample, "partial_last_chunk": 3 * per_sample,
                                "tiny_1000_bytes": 1000}[limit])
    y, gy, g = run(x, w, b, 1)
    np.testing.assert_array_equal(y, y_full)  # same arithmetic per element whatever the chunk
    assert_close(y, oracle.conv2d(x, w, b, padding=1))
    for got, full, want in zip(g, g_full, oracle.conv2d_backward(gy, x, w, padding=1)):
        assert_close(got, full)
        assert_close(got, want)


@pytest.mark.parametrize("C", [128, 512])
def test_winograd_float32_rounding_stays_in_tolerance_with_many_channels(C):
    """The transforms' rounding error grows with the channel sum: check it where it is largest,
    with weights scaled as in a trained network (He initialisation)."""
    x, w, b = make(2, C, 9, 10, 8, np.float32, "wide")
    w *= np.float32(np.sqrt(2 / (9 * C)))
    check_against_oracle(x, w, b, 1)


def test_winograd_backward_runs_every_pass_by_winograd(monkeypatch):
    """Forced (or chosen) Winograd computes grad_input and grad_weight by Winograd too: each
    transform kernel is called, and no im2col column matrix is built."""
    from cnnext._kernels import _im2col, _winograd
    calls = []
    for name in ("input_transform", "output_transform", "output_grad_transform"):
        real = getattr(_winograd, name)
        monkeypatch.setattr(_winograd, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    monkeypatch.setattr(_im2col, "im2col", lambda *a: pytest.fail("im2col called"))
    x, w, b = make(2, 3, 8, 8, 4, np.float64, "spy")
    with force_conv_algorithm("winograd"):
        _, gw, _ = F.conv2d_backward(np.ones((2, 4, 8, 8)), x, w, padding=1)
        assert sorted(set(calls)) == ["input_transform", "output_grad_transform",
                                      "output_transform"]
        calls.clear()
        x4, w4, _, g, _ = check_conv2d("t", x, w, None, 1, 1, 1, 1)
        backward_checked(x4, w4, np.ones((2, 4, 8, 8)), g, need_input=False, need_weight=True)
        assert sorted(set(calls)) == ["input_transform", "output_grad_transform"]
    assert_close(gw, oracle.conv2d_backward(np.ones((2, 4, 8, 8)), x, w, padding=1)[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("padding", [0, 1])
def test_winograd_thread_counts_bitwise_identical(padding, dtype, restore_config):
    x, w, b = make(5, 6, 9, 8, 7, dtype, "threads")

    def outputs():
        y, _, grads = run(x, w, b, padding)
        return (y,) + grads
    y, *_ = same_at_thread_counts(outputs, (1, 2, 3))
    assert_close(y, oracle.conv2d(x, w, b, padding=padding))


@pytest.mark.parametrize("layout", ["readonly", "slice", "F"])
def test_winograd_readonly_and_noncontiguous_inputs(layout):
    x, w, b = make(2, 3, 7, 8, 4, np.float32, "layout")
    if layout == "readonly":
        xs, ws = x.copy(), w.copy()
        xs.setflags(write=False)
        ws.setflags(write=False)
    elif layout == "slice":
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
        big[..., ::2] = x
        xs, ws = big[..., ::2], np.asfortranarray(w)
    else:
        xs, ws = np.asfortranarray(x), w[:, :, ::-1, :][:, :, ::-1, :]
    y, gy, grads = run(xs, ws, b, 1)
    assert_close(y, oracle.conv2d(x, w, b, padding=1))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, padding=1)):
        assert_close(got, want)


@pytest.mark.parametrize("case", ["stride2", "dilation2", "groups2", "kernel5", "kernel1x3"])
def test_winograd_forced_on_other_shapes_falls_back_to_gemm(case):
    x, w, b = make(2, 4, 9, 9, 4, np.float64, case)
    params = {"stride2": dict(stride=2, padding=1), "dilation2": dict(dilation=2, padding=2),
              "groups2": dict(groups=2, padding=1), "kernel5": dict(padding=2),
              "kernel1x3": dict(padding=(0, 1))}[case]
    if case == "groups2":
        w = w[:, :2]
    elif case == "kernel5":
        w = rng_for(case).standard_normal((4, 4, 5, 5))
    elif case == "kernel1x3":
        w = w[:, :, :1, :]
    with force_conv_algorithm("winograd"):
        y = F.conv2d(x, w, b, **params)
        gy = gy_for(y, case)
        grads = F.conv2d_backward(gy, x, w, **params)
    assert_close(y, oracle.conv2d(x, w, b, **params))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, **params)):
        assert_close(got, want)


def test_auto_picks_winograd_where_it_was_measured_faster():

    def algorithm(C, K, size, stride=1):
        x = np.zeros((2, C, size, size), np.float32)
        w = np.zeros((K, C, 3, 3), np.float32)
        return _conv_dispatch._algorithm(check_conv2d("t", x, w, None, stride, 1, 1, 1)[3], x.dtype)

    assert _conv_dispatch._WINOGRAD_AUTO  # at least one (size, channels) rule
    for size, channels in _conv_dispatch._WINOGRAD_AUTO:
        assert algorithm(channels, channels, size) == "winograd"
        assert algorithm(channels, 2 * channels, size) == "winograd"
        assert algorithm(channels, channels, size, stride=2) == "gemm"
    assert algorithm(1, 1, 64) == "gemm"  # too few channels at any size (float32: not thin-direct)
    assert algorithm(256, 256, 4) == "gemm"  # too small an output at any width
    assert algorithm(16, 16, 8) == "gemm" and algorithm(16, 16, 16) == "winograd"
    with force_conv_algorithm("gemm"):
        assert algorithm(64, 64, 32) == "gemm"
    with force_conv_algorithm("winograd"):
        assert algorithm(1, 1, 4) == "winograd"


def test_force_conv_algorithm_is_public_and_turns_winograd_off(monkeypatch):
    """cnnext.force_conv_algorithm('gemm') (README, Numerics) keeps a shape that 'auto' runs on
    Winograd off it, and restores 'auto' afterwards."""
    from cnnext._kernels import _winograd
    x, w, b = make(2, 32, 16, 16, 32, np.float32, "public")
    calls = []
    real = _winograd.input_transform
    monkeypatch.setattr(_winograd, "input_transform", lambda *a: calls.append(1) or real(*a))
    F.conv2d(x, w, b, padding=1)
    assert calls, "auto should pick Winograd for 32 channels at 16x16"
    calls.clear()
    with cnnext.force_conv_algorithm("gemm"):
        y = F.conv2d(x, w, b, padding=1)
    assert not calls
    assert_close(y, oracle.conv2d(x, w, b, padding=1))
    assert "force_conv_algorithm" in cnnext.__all__


@pytest.mark.parametrize("N", [1, 2, 3, 5, 7, 8, 11, 32, 64, 200])
@pytest.mark.parametrize("C,K,HW", [(128, 128, 16), (32, 64, 32), (3, 4, 6), (8, 8, 16)])
def test_winograd_chunks_cover_the_batch_in_balanced_shares(N, C, K, HW, gemm_path):
    """Chunks cover the batch in order; their count is a multiple of 4 (2 below 4) unless it is
    the batch size, so 2 or 4 threads get equal shares; sizes differ by at most one sample; the
    pitch fits the largest chunk's tiles rounded up to TILE_GEMM_PAD."""
    tiles, ld, chunks = _conv_dispatch._winograd_chunks(N, C, K, HW, HW, np.dtype(np.float32))
    assert [n0 for n0, _ in chunks] == list(np.cumsum([0] + [nc for _, nc in chunks[:-1]]))
    assert sum(nc for _, nc in chunks) == N
    sizes = {nc for _, nc in chunks}
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    count = len(chunks)
    assert count == N or count % 4 == 0 or (count < 4 and count % 2 == 0)
    assert count >= min(N, 4)
    pad = _conv_dispatch._winograd.TILE_GEMM_PAD
    assert ld % pad == 0 and max(sizes) * tiles <= ld < max(sizes) * tiles + pad
