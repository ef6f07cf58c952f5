# Design
# ------
# Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1, dilation 1 and groups 1 (Lavin & Gray,
# "Fast Algorithms for Convolutional Neural Networks", 2015). Each 2x2 block of output pixels
# ("tile") of one filter is computed from the 4x4 input patch d under it as
#
#     Y = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 4x4)
#
#     B^T = [1  0 -1  0]     G = [1    0    0  ]     A^T = [1  1  1  0]
#           [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
#           [0 -1  1  0]         [1/2 -1/2  1/2]
#           [0  1  0 -1]         [0    0    1  ]
#
# so 16 multiplies give 4 outputs where the direct sum needs 36. The sum over channels of the 16
# elementwise products is 16 independent GEMMs, done by numpy/BLAS as ONE batched matmul
# M(16, K, T) = U(16, K, C) @ V(16, C, T) in cnnext/functional/conv.py, which also transforms the
# weights (U = G g G^T, a small numpy computation). This module holds the two data transforms, for a
# chunk of `nc` samples starting at sample `n0`, with T = nc * tiles_h * tiles_w tiles numbered
# (sample, tile row, tile column):
#
#   input_transform    V[4*i + j, c, t] = (B^T d B)[i, j] for every (sample, channel) plane; prange
#                      over those planes. Input positions outside the image read as zero, so any
#                      padding (top/left `pt`, `pl`; the output size fixes the rest) is handled by
#                      bounds checks on the border tiles only.
#   output_transform   y[n0 + n, k] tile = A^T m A (+ bias[k]) from m[4*i + j] = M[4*i + j, k, t];
#                      prange over (sample, filter) output planes. The last tile row/column is
#                      partial when Ho/Wo is odd: only the in-range outputs are written.
#
# grad_input of a stride-1 3x3 convolution is itself such a convolution (of grad_output, with the
# weights rotated 180 degrees and their channel axes swapped, padded by 2 - p), so the same
# kernels serve it. Conventions as in _im2col.pyx: arguments validated in Python, C-contiguous,
# `const` inputs, Py_ssize_t indices; each thread writes only its own planes and every output
# element is computed by one fixed sequence of operations, so results are bitwise identical for
# every `num_threads`.
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from cnnext._openmp_helpers cimport omp_get_thread_num


cdef void input_transform_plane(const floating* plane, floating* v, Py_ssize_t stride,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl,
                                Py_ssize_t th, Py_ssize_t tw, floating* buf) noexcept nogil:
    """Transform every 4x4 patch of one (H, W) plane: V value (i, j) of tile t goes to
    v[(4*i + j) * stride + t], t = tile_row * tw + tile_col. buf: scratch of 4 * (2*tw + 2).

    Per tile row: copy the 4 input rows under it, zero-padded, into buf (width Wp = 2*tw + 2),
    apply B^T down the columns in place (whole rows, contiguous), then B along each row, writing
    each of the 16 outputs as a contiguous run over the tile columns."""
    cdef Py_ssize_t Wp = 2 * tw + 2
    cdef Py_ssize_t lo = pl if pl > 0 else 0
    cdef Py_ssize_t hi = pl + W if pl + W < Wp else Wp
    cdef Py_ssize_t a, b, i, j, r
    cdef floating* r0 = buf
    cdef floating* r1 = buf + Wp
    cdef floating* r2 = buf + 2 * Wp
    cdef floating* r3 = buf + 3 * Wp
    cdef floating* t
    cdef floating* d0
    cdef floating* d1
    cdef floating* d2
    cdef floating* d3
    cdef floating p, q
    for a in range(th):
        for i in range(4):
            r = 2 * a - pt + i
            if r < 0 or r >= H or hi <= lo:
                memset(buf + i * Wp, 0, Wp * sizeof(floating))
                continue
            if lo > 0:
                memset(buf + i * Wp, 0, lo * sizeof(floating))
            memcpy(buf + i * Wp + lo, plane + r * W + lo - pl, (hi - lo) * sizeof(floating))
            if hi < Wp:
                memset(buf + i * Wp + hi, 0, (Wp - hi) * sizeof(floating))
        # rows of B^T d: (r0 - r2, r1 + r2, r2 - r1, r1 - r3)
        for j in range(Wp):
            p = r1[j]
            q = r2[j]
            r0[j] = r0[j] - q
            r3[j] = p - r3[j]
            r1[j] = p + q
            r2[j] = q - p
        for i in range(4):
            t = buf + i * Wp
            d0 = v + (4 * i) * stride + a * tw
            d1 = d0 + stride
            d2 = d1 + stride
            d3 = d2 + stride
            for b in range(tw):
                d0[b] = t[2 * b] - t[2 * b + 2]
                d1[b] = t[2 * b + 1] + t[2 * b + 2]
                d2[b] = t[2 * b + 2] - t[2 * b + 1]
                d3[b] = t[2 * b + 1] - t[2 * b + 3]


cdef void output_transform_plane(const floating* m, floating* y, Py_ssize_t stride,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                 floating bias, floating* buf) noexcept nogil:
    """Write the (Ho, Wo) output plane y from its tiles' products m[(4*i + j) * stride + t].
    buf: scratch of 12 * tw. Per tile row, A^T runs down the columns into 8 runs of tw values
    (a[s], a[4 + s]: rows 0+1+2 and 1-2-3 of column s), then A along the rows into two output rows
    of 2*tw values, copied into y without the last column/row when Wo/Ho is odd. Each loop has
    few streams, so the C compiler vectorises it."""
    cdef Py_ssize_t Wt = 2 * tw
    cdef Py_ssize_t p, q, s
    cdef const floating* m0
    cdef const floating* m1
    cdef const floating* m2
    cdef const floating* m3
    cdef floating* a = buf
    cdef floating* lo
    cdef floating* hi
    cdef floating* o0 = buf + 8 * tw
    cdef floating* o1 = o0 + Wt
    cdef floating e, f
    for p in range(th):
        for s in range(4):
            m0 = m + s * stride + p * tw
            m1 = m0 + 4 * stride
            m2 = m1 + 4 * stride
            m3 = m2 + 4 * stride
            lo = a + s * tw
            hi = a + (4 + s) * tw
            for q in range(tw):
                e = m1[q]
                f = m2[q]
                lo[q] = m0[q] + e + f
                hi[q] = e - f - m3[q]
        for s in range(2):
            lo = a + 4 * s * tw
            hi = o0 + s * Wt
            for q in range(tw):
                e = lo[tw + q]
                f = lo[2 * tw + q]
                hi[2 * q] = lo[q] + e + f + bias
                hi[2 * q + 1] = e - f - lo[3 * tw + q] + bias
        memcpy(y + 2 * p * Wo, o0, Wo * sizeof(floating))
        if 2 * p + 1 < Ho:
            memcpy(y + (2 * p + 1) * Wo, o1, Wo * sizeof(floating))


def input_transform(const floating[:, :, :, ::1] x, floating[:, :, ::1] v, Py_ssize_t n0,
                    Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t Ho, Py_ssize_t Wo,
                    int num_threads=1):
    """Write the transformed input tiles of samples x[n0:n0+nc] into v, shape (16, C, nc*tiles),
    tiles = ceil(Ho/2) * ceil(Wo/2); pt, pl are the top/left zero padding."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = v.shape[2]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t nc, u, n, c
    cdef floating* scratch
    cdef Py_ssize_t width
    if C == 0 or T == 0 or per == 0:
        return
    nc = T // per
    width = 4 * (2 * tw + 2)
    scratch = <floating*> malloc(num_threads * width * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("cnnext._winograd.input_transform: no memory for the row buffers")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * C, schedule='static'):
                n = u // C
                c = u % C
                input_transform_plane(&x[n0 + n, c, 0, 0], &v[0, c, n * per], C * T,
                                      H, W, pt, pl, th, tw, scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)


def output_transform(const floating[:, :, ::1] m, floating[:, :, :, ::1] y, Py_ssize_t n0,
                     const floating[::1] bias, bint has_bias, int num_threads=1):
    """Write y[n0:n0+nc] (N, K, Ho, Wo) from the tile products m, shape (16, K, nc*tiles),
    adding bias[k] when has_bias."""
    cdef Py_ssize_t K = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t T = m.shape[2]
    cdef Py_ssize_t th = (Ho + 1) // 2, tw = (Wo + 1) // 2
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t nc, u, n, k
    cdef floating* scratch
    cdef Py_ssize_t width
    cdef floating b
    if K == 0 or T == 0 or per == 0:
        return
    nc = T // per
    width = 12 * tw
    scratch = <floating*> malloc(num_threads * width * sizeof(floating))
    if scratch == NULL:
        raise MemoryError("cnnext._winograd.output_transform: no memory for the row buffers")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * K, schedule='static'):
                n = u // K
                k = u % K
                b = bias[k] if has_bias else 0
                output_transform_plane(&m[0, k, n * per], &y[n0 + n, k, 0, 0], K * T,
                                       Ho, Wo, th, tw, b, scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)
