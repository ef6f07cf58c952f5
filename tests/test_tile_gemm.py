"""The Winograd GEMM kernels of cnnext/_tile_gemm.h (via cnnext._winograd.tile_gemm and
tile_gemm_grad) against float64 numpy products, on shapes that hit every remainder of the
register block (rows of 6, columns of 16 float32 / 8 float64 values), with the padding the callers
leave past the tile count filled with NaN so that reading it would show."""
import zlib

import numpy as np
import pytest

from cnnext import _winograd
from cnnext.functional import conv

MR, PAD = _winograd.TILE_GEMM_MR, _winograd.TILE_GEMM_PAD
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1, 1), (6, 16, 16), (5, 3, 17), (7, 9, 15), (13, 17, 33), (12, 8, 32), (19, 40, 9),
          (64, 32, 48)]


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def operands(K, C, T, dtype, extra=0):
    """U (E, K, C), v (E, C*ld) and dm (E, K*ld) with NaN in the row padding t >= T."""
    rng = rng_for(K, C, T, np.dtype(dtype).name)
    E = 3
    ld = -(-T // PAD) * PAD + extra
    u = rng.standard_normal((E, K, C)).astype(dtype)
    v = np.full((E, C, ld), np.nan, dtype=dtype)
    v[:, :, :T] = rng.standard_normal((E, C, T))
    dm = np.full((E, K, ld), np.nan, dtype=dtype)
    dm[:, :, :T] = rng.standard_normal((E, K, T))
    return u, v.reshape(E, C * ld), dm.reshape(E, K * ld), ld


def tolerance(dtype, inner):
    return (1e-6 if dtype == np.float32 else 1e-14) * inner


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("K,C,T", SHAPES)
def test_tile_gemm_matches_numpy(K, C, T, dtype):
    u, v, _, ld = operands(K, C, T, dtype)
    E = u.shape[0]
    m = np.full((E, K * ld + 5), -7.0, dtype=dtype)  # sentinel: only (k, t < T) may change
    _winograd.tile_gemm(conv._pack_rows(u, dtype), v, m, K, T, ld)
    want = u.astype(np.float64) @ v.reshape(E, C, ld)[:, :, :T].astype(np.float64)
    got = m[:, : K * ld].reshape(E, K, ld)
    np.testing.assert_allclose(got[:, :, :T], want, rtol=0, atol=tolerance(dtype, C) * np.abs(want).max())
    assert np.all(m[:, K * ld:] == -7.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("K,C,T", SHAPES)
def test_tile_gemm_grad_matches_numpy(K, C, T, dtype):
    u, v, dm, ld = operands(K, C, T, dtype, extra=PAD)
    E = u.shape[0]
    du = np.full((E, K, C), np.nan, dtype=dtype)
    _winograd.tile_gemm_grad(dm, v, du, T, ld)
    a = dm.reshape(E, K, ld)[:, :, :T].astype(np.float64)
    b = v.reshape(E, C, ld)[:, :, :T].astype(np.float64)
    want = a @ b.transpose(0, 2, 1)
    np.testing.assert_allclose(du, want, rtol=0, atol=tolerance(dtype, T) * np.abs(want).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_tile_gemm_thread_counts_bitwise_identical(dtype):
    u, v, dm, ld = operands(13, 20, 37, dtype)
    E, K, C, T = u.shape[0], 13, 20, 37
    up = conv._pack_rows(u, dtype)
    outs = []
    for threads in (1, 2, 3):
        m = np.zeros((E, K * ld), dtype=dtype)
        du = np.zeros((E, K, C), dtype=dtype)
        _winograd.tile_gemm(up, v, m, K, T, ld, threads)
        _winograd.tile_gemm_grad(dm, v, du, T, ld, threads)
        outs.append((m, du))
    for m, du in outs[1:]:
        assert np.array_equal(m, outs[0][0]) and np.array_equal(du, outs[0][1])


def test_tile_gemm_grad_empty_tile_count_gives_zeros():
    du = np.full((2, 3, 4), np.nan)
    _winograd.tile_gemm_grad(np.zeros((2, 3 * PAD)), np.zeros((2, 4 * PAD)), du, 0, PAD)
    assert np.all(du == 0)


def test_tile_gemm_rejects_buffers_it_would_overrun():
    """The kernels run unchecked loops: their wrappers refuse shapes that would read or write
    outside the arrays."""
    u, v, dm, ld = operands(7, 5, 20, np.float64)
    up = conv._pack_rows(u, np.float64)
    m = np.zeros((3, 7 * ld))
    with pytest.raises(ValueError, match="ld >="):
        _winograd.tile_gemm(up, v, m, 7, 20, 20)  # rows are read up to 32 > ld
    with pytest.raises(ValueError, match="ld >="):
        _winograd.tile_gemm(up, np.ascontiguousarray(v[:, :-1]), m, 7, 20, ld)
    with pytest.raises(ValueError, match="ld >="):
        _winograd.tile_gemm(up, v, np.zeros((3, 7 * ld - 1)), 7, 20, ld)
    with pytest.raises(ValueError, match="up must have shape"):
        _winograd.tile_gemm(up, v, m, 13, 20, ld)  # K does not match the packed blocks
    with pytest.raises(ValueError, match="need 0 <= T <= ld"):
        _winograd.tile_gemm_grad(dm, v, np.zeros((3, 7, 5)), ld + 1, ld)
    with pytest.raises(ValueError, match="need 0 <= T <= ld"):
        _winograd.tile_gemm_grad(np.ascontiguousarray(dm[:, :-1]), v, np.zeros((3, 7, 5)), 20, ld)


def test_pack_rows_layout():
    u = np.arange(2 * 8 * 3, dtype=np.float64).reshape(2, 8, 3)
    packed = conv._pack_rows(u, np.float32)
    assert packed.shape == (2, 2, 3, MR) and packed.dtype == np.float32
    for e in range(2):
        for k in range(2 * MR):
            for c in range(3):
                assert packed[e, k // MR, c, k % MR] == (u[e, k, c] if k < 8 else 0)


def test_tile_gemm_level_reported():
    assert _winograd.tile_gemm_level() in (0, 1, 2)
