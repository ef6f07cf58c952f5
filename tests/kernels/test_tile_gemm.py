"""The Winograd GEMM kernels of cnnext/_kernels/_tile_gemm.h (via cnnext._winograd.tile_gemm and
tile_gemm_grad) against float64 numpy products, on shapes that hit every remainder of the
register block (rows of 6, columns of 16 float32 / 8 float64 values), with the padding the callers
leave past the tile count filled with NaN so that reading it would show."""
import numpy as np
import pytest

from cnnext._kernels import _winograd
from helpers import rng_for

MR, PAD = _winograd.TILE_GEMM_MR, _winograd.TILE_GEMM_PAD
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1, 1), (6, 16, 16), (5, 3, 17), (7, 9, 15), (13, 17, 33), (12, 8, 32), (19, 40, 9),
          (64, 32, 48)]


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


def pack_rows(u, dtype):
    """The layout tile_gemm reads: packed[e, kb, c, r] = u[e, kb*MR + r, c], zero past K."""
    E, K, C = u.shape
    kb = -(-K // MR)
    padded = np.zeros((E, kb * MR, C))
    padded[:, :K] = u
    return np.ascontiguousarray(padded.reshape(E, kb, MR, C).transpose(0, 1, 3, 2), dtype=dtype)


def tolerance(dtype, inner):
    return (1e-6 if dtype == np.float32 else 1e-14) * inner


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("K,C,T", SHAPES)
def test_tile_gemm_matches_numpy(K, C, T, dtype):
    u, v, _, ld = operands(K, C, T, dtype)
    E = u.shape[0]
    m = np.full((E, K * ld + 5), -7.0, dtype=dtype)  # sentinel: only (k, t < T) may change
    _winograd.tile_gemm(pack_rows(u, dtype), v, m, K, T, ld)
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
    up = pack_rows(u, dtype)
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
    up = pack_rows(u, np.float64)
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


# G of Winograd F(4x4, 3x3) (Lavin & Gray 2015), written out here independently of the module
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("mr", [1, MR])
@pytest.mark.parametrize("threads", [1, 3])
def test_filter_transform_matches_numpy(mr, rotate, dtype, threads):
    """U[6i+j, k, c] = (G g G^T)[i, j] of each filter, packed by blocks of mr rows (zero past K);
    rotate transforms the transposed convolution's filters w[c, k, ::-1, ::-1]."""
    w = rng_for("ft", dtype).standard_normal((7, 5, 3, 3)).astype(dtype)
    g = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1] if rotate else w
    K, C = g.shape[:2]
    want = np.einsum("ia,kcab,jb->ijkc", G, g.astype(np.float64), G).reshape(36, K, C)
    up = np.full((36, -(-K // mr), C, mr), np.nan, dtype=dtype)
    _winograd.filter_transform(w, up, rotate, threads)
    packed = pack_rows(want, np.float64) if mr == MR else want[..., None]
    np.testing.assert_allclose(up, packed, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", [1, 3])
def test_filter_grad_transform_matches_numpy(dtype, threads):
    du = rng_for("fgt", dtype).standard_normal((36, 7, 5)).astype(dtype)
    want = np.einsum("ia,ijkc,jb->kcab", G, du.astype(np.float64).reshape(6, 6, 7, 5), G)
    gw = np.full((7, 5, 3, 3), np.nan, dtype=dtype)
    _winograd.filter_grad_transform(du, gw, threads)
    np.testing.assert_allclose(gw, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7)


def test_filter_transforms_reject_wrong_shapes():
    with pytest.raises(ValueError, match="filter_transform"):
        _winograd.filter_transform(np.zeros((4, 3, 3, 3)), np.zeros((36, 1, 4, MR)), False)
    with pytest.raises(ValueError, match="filter_transform"):
        _winograd.filter_transform(np.zeros((4, 3, 3, 3)), np.zeros((36, 1, 3, MR)), True)
    with pytest.raises(ValueError, match="filter_transform"):
        _winograd.filter_transform(np.zeros((7, 3, 3, 3)), np.zeros((36, 1, 3, MR)), False)
    with pytest.raises(ValueError, match="filter_transform"):
        _winograd.filter_transform(np.zeros((4, 3, 5, 5)), np.zeros((36, 4, 3, 1)), False)
    with pytest.raises(ValueError, match="filter_grad_transform"):
        _winograd.filter_grad_transform(np.zeros((36, 4, 3)), np.zeros((4, 3, 3, 2)))
    with pytest.raises(ValueError, match="filter_grad_transform"):
        _winograd.filter_grad_transform(np.zeros((35, 4, 3)), np.zeros((4, 3, 3, 3)))


def test_tile_gemm_level_reported():
    assert _winograd.tile_gemm_level() in (0, 1, 2)
