# Design
# ------
# Winograd F(4x4, 3x3) for 3x3 convolutions with stride 1, dilation 1 and groups 1 (Lavin & Gray,
# "Fast Algorithms for Convolutional Neural Networks", 2015). Each 4x4 block of output pixels
# ("tile") of one filter is computed from the 6x6 input patch d under it as
#
#     Y = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 6x6)
#
#     B^T = [4  0 -5  0  1  0]    G = [ 1/4     0     0 ]    A^T = [1  1  1  1  1  0]
#           [0 -4 -4  1  1  0]        [-1/6  -1/6  -1/6 ]          [0  1 -1  2 -2  0]
#           [0  4 -4 -1  1  0]        [-1/6   1/6  -1/6 ]          [0  1  1  4  4  0]
#           [0 -2 -1  2  1  0]        [1/24  1/12   1/6 ]          [0  1 -1  8 -8  1]
#           [0  2 -1 -2  1  0]        [1/24 -1/12   1/6 ]
#           [0  4  0 -5  0  1]        [ 0     0     1   ]
#
# so 36 multiplies give 16 outputs where the direct sum needs 144. The sum over channels of the 36
# elementwise products is 36 independent GEMMs, done by numpy/BLAS as ONE batched matmul
# M(36, K, T) = U(36, K, C) @ V(36, C, T) in cnnext/functional/conv.py, which also transforms the
# weights (U = G g G^T, a small numpy computation in float64). This module holds the data
# transforms, for a chunk of `nc` samples starting at sample `n0`, with T = nc * tiles_h * tiles_w
# tiles numbered (sample, tile row, tile column) and transform element e = 6*i + j:
#
#   input_transform        V[e, c, t] = (B^T d B)[i, j], prange over (sample, channel) planes.
#                          Input positions outside the image read as zero, so any padding (top/left
#                          `pt`, `pl`, possibly negative; the output size fixes the rest) is handled
#                          when the rows under a tile row are copied into a zero-padded buffer.
#   output_transform       y[n0 + n, k] tile = A^T m A (+ bias[k]) from m[e] = M[e, k, t]; prange
#                          over (sample, filter) planes. The last tile row/column is partial when
#                          Ho/Wo is not a multiple of 4: only the in-range outputs are written.
#   output_grad_transform  dM[e, k, t] = (A dy A^T)[i, j] of each 4x4 tile of grad_output (zero
#                          outside it), the adjoint of output_transform, for the weight gradient:
#                          dU(36, K, C) = dM @ V^T and grad_weight = G^T dU G (in conv.py).
#
# grad_input of a stride-1 3x3 convolution is itself such a convolution (of grad_output, with the
# weights rotated 180 degrees and their channel axes swapped, padded by 2 - p), so the forward
# kernels serve it. Every transform is a fixed sequence of adds and multiplies by small integers,
# applied first down the columns of a few whole rows (contiguous, so the C compiler vectorises it)
# and then along the rows. Conventions as in _im2col.pyx: arguments validated in Python,
# C-contiguous, `const` inputs, Py_ssize_t indices; each thread writes only its own planes and
# every output element is computed by one fixed sequence of operations, so results are bitwise
# identical for every `num_threads`.
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from cnnext._openmp_helpers cimport omp_get_thread_num


cdef inline void copy_rows(const floating* plane, floating* buf, Py_ssize_t rows,
                           Py_ssize_t r0, Py_ssize_t H, Py_ssize_t W, Py_ssize_t c0,
                           Py_ssize_t width) noexcept nogil:
    """buf[i, j] = plane[r0 + i, c0 + j] for i < rows, j < width, zero outside the (H, W) plane."""
    cdef Py_ssize_t lo = -c0 if c0 < 0 else 0
    cdef Py_ssize_t hi = W - c0 if W - c0 < width else width
    cdef Py_ssize_t i, r
    cdef floating* dst
    for i in range(rows):
        dst = buf + i * width
        r = r0 + i
        if r < 0 or r >= H or hi <= lo:
            memset(dst, 0, width * sizeof(floating))
            continue
        if lo > 0:
            memset(dst, 0, lo * sizeof(floating))
        memcpy(dst + lo, plane + r * W + c0 + lo, (hi - lo) * sizeof(floating))
        if hi < width:
            memset(dst + hi, 0, (width - hi) * sizeof(floating))


# Each transform is a fixed combination of 6 (or 4) equally long streams into 6 (or 4) others.
# The helpers below apply it with one loop per output stream: a loop that reads a few streams and
# writes one is what the C compiler vectorises (it checks each input against the output for
# overlap; a loop writing six streams at once needs too many checks and stays scalar).

cdef inline void bt6(const floating* z0, const floating* z1, const floating* z2,
                     const floating* z3, const floating* z4, const floating* z5,
                     floating* out, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """out[i*step + t] = (B^T z)[i] for t < n, i < 6, z = (z0[t], ..., z5[t])."""
    cdef Py_ssize_t t
    cdef floating* o
    o = out
    for t in range(n):
        o[t] = 4 * z0[t] - 5 * z2[t] + z4[t]
    o = out + step
    for t in range(n):
        o[t] = (z4[t] - 4 * z2[t]) + (z3[t] - 4 * z1[t])
    o = out + 2 * step
    for t in range(n):
        o[t] = (z4[t] - 4 * z2[t]) - (z3[t] - 4 * z1[t])
    o = out + 3 * step
    for t in range(n):
        o[t] = (z4[t] - z2[t]) + 2 * (z3[t] - z1[t])
    o = out + 4 * step
    for t in range(n):
        o[t] = (z4[t] - z2[t]) - 2 * (z3[t] - z1[t])
    o = out + 5 * step
    for t in range(n):
        o[t] = 4 * z1[t] - 5 * z3[t] + z5[t]


cdef inline void at4(const floating* z0, const floating* z1, const floating* z2,
                     const floating* z3, const floating* z4, const floating* z5,
                     floating* out, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """out[r*step + t] = (A^T z)[r] for t < n, r < 4, z = (z0[t], ..., z5[t])."""
    cdef Py_ssize_t t
    cdef floating* o
    o = out
    for t in range(n):
        o[t] = z0[t] + (z1[t] + z2[t]) + (z3[t] + z4[t])
    o = out + step
    for t in range(n):
        o[t] = (z1[t] - z2[t]) + 2 * (z3[t] - z4[t])
    o = out + 2 * step
    for t in range(n):
        o[t] = (z1[t] + z2[t]) + 4 * (z3[t] + z4[t])
    o = out + 3 * step
    for t in range(n):
        o[t] = (z1[t] - z2[t]) + 8 * (z3[t] - z4[t]) + z5[t]


cdef inline void a6(const floating* z0, const floating* z1, const floating* z2,
                    const floating* z3, floating* out, Py_ssize_t step,
                    Py_ssize_t n) noexcept nogil:
    """out[i*step + t] = (A z)[i] for t < n, i < 6, z = (z0[t], ..., z3[t])."""
    cdef Py_ssize_t t
    cdef floating* o
    o = out
    for t in range(n):
        o[t] = z0[t]
    o = out + step
    for t in range(n):
        o[t] = (z0[t] + z2[t]) + (z1[t] + z3[t])
    o = out + 2 * step
    for t in range(n):
        o[t] = (z0[t] + z2[t]) - (z1[t] + z3[t])
    o = out + 3 * step
    for t in range(n):
        o[t] = (z0[t] + 4 * z2[t]) + (2 * z1[t] + 8 * z3[t])
    o = out + 4 * step
    for t in range(n):
        o[t] = (z0[t] + 4 * z2[t]) - (2 * z1[t] + 8 * z3[t])
    o = out + 5 * step
    for t in range(n):
        o[t] = z3[t]


cdef inline void deinterleave4(const floating* src, floating* p, Py_ssize_t n) noexcept nogil:
    """p[k*n + b] = src[4*b + k] for b < n, k < 4: the four phases of a row, each contiguous."""
    cdef Py_ssize_t b, k
    cdef floating* q
    for k in range(4):
        q = p + k * n
        for b in range(n):
            q[b] = src[4 * b + k]


cdef void input_transform_plane(const floating* plane, floating* v, Py_ssize_t stride,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl,
                                Py_ssize_t th, Py_ssize_t tw, floating* buf) noexcept nogil:
    """Transform every 6x6 patch of one (H, W) plane: V value e of tile t goes to
    v[e * stride + t], t = tile_row * tw + tile_col. buf: scratch of 36*th*tw + 8*(tw + 1).

    Rows first: each of the 6 input rows under a tile row is copied, zero-padded, deinterleaved
    into its 4 phases (columns 4b + k) and transformed into 6 runs of tw values, R[j, k, t]. Then
    columns, over the whole plane at once: V[6*i + j, t] = (B^T R[j, :, t])[i], one run of th*tw
    values per output."""
    cdef Py_ssize_t per = th * tw, L = tw + 1
    cdef Py_ssize_t a, j, k
    cdef floating* R = buf
    cdef floating* lin = buf + 36 * per
    cdef floating* P = lin + 4 * L
    cdef floating* z
    for a in range(th):
        for k in range(6):
            copy_rows(plane, lin, 1, 4 * a - pt + k, H, W, -pl, 4 * L)
            deinterleave4(lin, P, L)
            bt6(P, P + L, P + 2 * L, P + 3 * L, P + 1, P + L + 1, R + k * per + a * tw,
                6 * per, tw)
    for j in range(6):
        z = R + 6 * j * per
        bt6(z, z + per, z + 2 * per, z + 3 * per, z + 4 * per, z + 5 * per, v + j * stride,
            6 * stride, per)


cdef void output_transform_plane(const floating* m, floating* y, Py_ssize_t stride,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                 floating bias, bint has_bias, floating* buf) noexcept nogil:
    """Write the (Ho, Wo) output plane y from its tiles' products m[e * stride + t]. buf: scratch
    of 24*th*tw + 8*tw. Columns first, over the whole plane: Z[r, j, t] = (A^T m[:, j, t])[r];
    then per tile row and output row r, A^T along the rows into the 4 phases of the row (+ bias),
    interleaved into y (through a buffer when the last tile column is partial)."""
    cdef Py_ssize_t per = th * tw, Wt = 4 * tw
    cdef Py_ssize_t a, j, r, q, rows
    cdef floating* Z = buf
    cdef floating* Q = buf + 24 * per
    cdef floating* row = Q + 4 * tw
    cdef floating* z
    cdef floating* dst
    for j in range(6):
        at4(m + j * stride, m + (6 + j) * stride, m + (12 + j) * stride, m + (18 + j) * stride,
            m + (24 + j) * stride, m + (30 + j) * stride, Z + j * per, 6 * per, per)
    for a in range(th):
        rows = Ho - 4 * a if Ho - 4 * a < 4 else 4
        for r in range(rows):
            z = Z + 6 * r * per + a * tw
            at4(z, z + per, z + 2 * per, z + 3 * per, z + 4 * per, z + 5 * per, Q, tw, tw)
            dst = y + (4 * a + r) * Wo if Wt == Wo else row
            if has_bias:
                for q in range(tw):
                    dst[4 * q] = Q[q] + bias
                    dst[4 * q + 1] = Q[tw + q] + bias
                    dst[4 * q + 2] = Q[2 * tw + q] + bias
                    dst[4 * q + 3] = Q[3 * tw + q] + bias
            else:
                for q in range(tw):
                    dst[4 * q] = Q[q]
                    dst[4 * q + 1] = Q[tw + q]
                    dst[4 * q + 2] = Q[2 * tw + q]
                    dst[4 * q + 3] = Q[3 * tw + q]
            if Wt != Wo:
                memcpy(y + (4 * a + r) * Wo, row, Wo * sizeof(floating))


cdef void output_grad_transform_plane(const floating* gy, floating* dm, Py_ssize_t stride,
                                      Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                      floating* buf) noexcept nogil:
    """dM value e of tile t of one (Ho, Wo) grad_output plane to dm[e * stride + t], from the
    tile's 4x4 values (zero past Ho/Wo). buf: scratch of 24*th*tw + 8*tw. Rows first: each of the
    4 rows of a tile row, zero-padded and deinterleaved into its phases, becomes 6 runs R[j, k, t]
    by A; then columns over the whole plane: dM[6*i + j, t] = (A R[j, :, t])[i]."""
    cdef Py_ssize_t per = th * tw, Wt = 4 * tw
    cdef Py_ssize_t a, j, k
    cdef floating* R = buf
    cdef floating* lin = buf + 24 * per
    cdef floating* P = lin + Wt
    cdef floating* z
    for a in range(th):
        for k in range(4):
            copy_rows(gy, lin, 1, 4 * a + k, Ho, Wo, 0, Wt)
            deinterleave4(lin, P, tw)
            a6(P, P + tw, P + 2 * tw, P + 3 * tw, R + k * per + a * tw, 4 * per, tw)
    for j in range(6):
        z = R + 4 * j * per
        a6(z, z + per, z + 2 * per, z + 3 * per, dm + j * stride, 6 * stride, per)


cdef void* thread_scratch(Py_ssize_t nbytes, str func) except NULL:
    """malloc nbytes for the per-thread row buffers, or raise MemoryError."""
    cdef void* scratch = malloc(nbytes)
    if scratch == NULL:
        raise MemoryError(f"cnnext._winograd.{func}: no memory for the row buffers")
    return scratch


def input_transform(const floating[:, :, :, ::1] x, floating[:, :, ::1] v, Py_ssize_t n0,
                    Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t Ho, Py_ssize_t Wo,
                    int num_threads=1):
    """Write the transformed input tiles of samples x[n0:n0+nc] into v, shape (36, C, nc*tiles),
    tiles = ceil(Ho/4) * ceil(Wo/4); pt, pl are the top/left zero padding."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = v.shape[2]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = 36 * th * tw + 8 * (tw + 1)
    cdef Py_ssize_t nc, u, n, c
    cdef floating* scratch
    if C == 0 or T == 0 or per == 0:
        return
    nc = T // per
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "input_transform")
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
    """Write y[n0:n0+nc] (N, K, Ho, Wo) from the tile products m, shape (36, K, nc*tiles),
    adding bias[k] when has_bias."""
    cdef Py_ssize_t K = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t T = m.shape[2]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = 24 * th * tw + 8 * tw
    cdef Py_ssize_t nc, u, n, k
    cdef floating* scratch
    cdef floating b
    if K == 0 or T == 0 or per == 0:
        return
    nc = T // per
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "output_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * K, schedule='static'):
                n = u // K
                k = u % K
                b = bias[k] if has_bias else 0
                output_transform_plane(&m[0, k, n * per], &y[n0 + n, k, 0, 0], K * T,
                                       Ho, Wo, th, tw, b, has_bias,
                                       scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)


def output_grad_transform(const floating[:, :, :, ::1] gy, floating[:, :, ::1] dm,
                          Py_ssize_t n0, int num_threads=1):
    """Write the transformed grad_output tiles of samples gy[n0:n0+nc] (N, K, Ho, Wo) into dm,
    shape (36, K, nc*tiles)."""
    cdef Py_ssize_t K = gy.shape[1], Ho = gy.shape[2], Wo = gy.shape[3]
    cdef Py_ssize_t T = dm.shape[2]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = 24 * th * tw + 8 * tw
    cdef Py_ssize_t nc, u, n, k
    cdef floating* scratch
    if K == 0 or T == 0 or per == 0:
        return
    nc = T // per
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "output_grad_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * K, schedule='static'):
                n = u // K
                k = u % K
                output_grad_transform_plane(&gy[n0 + n, k, 0, 0], &dm[0, k, n * per], K * T,
                                            Ho, Wo, th, tw, scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)
