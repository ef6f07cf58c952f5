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
# elementwise products is 36 independent GEMMs M(36, K, T) = U(36, K, C) @ V(36, C, T): `tile_gemm`
# here (register-blocked kernels in _tile_gemm.h, the weights packed once per call) where the CPU
# has AVX2+FMA, else one batched numpy matmul; cnnext/functional/_conv_dispatch.py picks. `filter_transform`
# computes U = G g G^T (in float64, rounded once) straight into the layout the GEMM reads, and
# `filter_grad_transform` grad_weight = G^T dU G. The data transforms work on a chunk of `nc`
# samples starting at sample `n0`, with T = nc * tiles_h * tiles_w tiles numbered (sample, tile
# row, tile column) and transform element e = 6*i + j:
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
#                          dU(36, K, C) = dM @ V^T (`tile_gemm_grad`) and grad_weight = G^T dU G.
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

from cnnext._kernels._openmp_helpers cimport omp_get_thread_num


cdef extern from "_tile_gemm.h" nogil:
    enum:
        CNNEXT_MR
        CNNEXT_NR_MAX
    int cnnext_tile_gemm_level
    int cnnext_tile_gemm_init()
    void cnnext_kernel_f32(const float* ap, const float* b, float* c, Py_ssize_t M,
                           Py_ssize_t L, Py_ssize_t ncols, Py_ssize_t ldb, Py_ssize_t ldc)
    void cnnext_kernel_f64(const double* ap, const double* b, double* c, Py_ssize_t M,
                           Py_ssize_t L, Py_ssize_t ncols, Py_ssize_t ldb, Py_ssize_t ldc)

cnnext_tile_gemm_init()  # pick the AVX2 or baseline kernels once, at import

# Rows of the packed weights per block, and the padding (elements) every row read by tile_gemm
# needs past the tile count: see _tile_gemm.h.
TILE_GEMM_MR = CNNEXT_MR
TILE_GEMM_PAD = CNNEXT_NR_MAX


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
        # one in-range index (c0 + lo >= 0): plane + r * W + c0 alone may point outside
        memcpy(dst + lo, plane + (r * W + (c0 + lo)), (hi - lo) * sizeof(floating))
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
    cdef floating two = 2, four = 4, five = 5, eight = 8  # typed: a bare 4 becomes a C double
    o = out
    for t in range(n):
        o[t] = four * z0[t] - five * z2[t] + z4[t]
    o = out + step
    for t in range(n):
        o[t] = (z4[t] - four * z2[t]) + (z3[t] - four * z1[t])
    o = out + 2 * step
    for t in range(n):
        o[t] = (z4[t] - four * z2[t]) - (z3[t] - four * z1[t])
    o = out + 3 * step
    for t in range(n):
        o[t] = (z4[t] - z2[t]) + two * (z3[t] - z1[t])
    o = out + 4 * step
    for t in range(n):
        o[t] = (z4[t] - z2[t]) - two * (z3[t] - z1[t])
    o = out + 5 * step
    for t in range(n):
        o[t] = four * z1[t] - five * z3[t] + z5[t]


cdef inline void at4(const floating* z0, const floating* z1, const floating* z2,
                     const floating* z3, const floating* z4, const floating* z5,
                     floating* out, Py_ssize_t step, Py_ssize_t n) noexcept nogil:
    """out[r*step + t] = (A^T z)[r] for t < n, r < 4, z = (z0[t], ..., z5[t])."""
    cdef Py_ssize_t t
    cdef floating* o
    cdef floating two = 2, four = 4, five = 5, eight = 8  # typed: a bare 4 becomes a C double
    o = out
    for t in range(n):
        o[t] = z0[t] + (z1[t] + z2[t]) + (z3[t] + z4[t])
    o = out + step
    for t in range(n):
        o[t] = (z1[t] - z2[t]) + two * (z3[t] - z4[t])
    o = out + 2 * step
    for t in range(n):
        o[t] = (z1[t] + z2[t]) + four * (z3[t] + z4[t])
    o = out + 3 * step
    for t in range(n):
        o[t] = (z1[t] - z2[t]) + eight * (z3[t] - z4[t]) + z5[t]


cdef inline void a6(const floating* z0, const floating* z1, const floating* z2,
                    const floating* z3, floating* out, Py_ssize_t step,
                    Py_ssize_t n) noexcept nogil:
    """out[i*step + t] = (A z)[i] for t < n, i < 6, z = (z0[t], ..., z3[t])."""
    cdef Py_ssize_t t
    cdef floating* o
    cdef floating two = 2, four = 4, five = 5, eight = 8  # typed: a bare 4 becomes a C double
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
        o[t] = (z0[t] + four * z2[t]) + (two * z1[t] + eight * z3[t])
    o = out + 4 * step
    for t in range(n):
        o[t] = (z0[t] + four * z2[t]) - (two * z1[t] + eight * z3[t])
    o = out + 5 * step
    for t in range(n):
        o[t] = z3[t]


cdef inline void deinterleave(const floating* src, floating* p, Py_ssize_t n,
                              Py_ssize_t phases) noexcept nogil:
    """p[k*n + u] = src[4*u + k] for u < n, k < phases (<= 4): the column phases of rows 4 wide
    per tile, each contiguous."""
    cdef Py_ssize_t u, k
    cdef floating* q
    for k in range(phases):
        q = p + k * n
        for u in range(n):
            q[u] = src[4 * u + k]


# Layout of the row passes. A tile row a reads (padded) rows 4a .. 4a+5 (input transform) or
# 4a .. 4a+3 (grad_output transform), so rows are stored by residue: row 4a + q in slot
# q * rows_per_residue + a. Then the k-th row of every tile row of the plane is one contiguous
# run, and the column pass is one long loop per output instead of one short loop per tile row.

cdef void input_transform_plane(const floating* plane, floating* v, Py_ssize_t stride,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl,
                                Py_ssize_t th, Py_ssize_t tw, floating* buf) noexcept nogil:
    """Transform every 6x6 patch of one (H, W) plane: V value e of tile t goes to
    v[e * stride + t], t = tile_row * tw + tile_col. buf: scratch of input_scratch(th, tw).

    The S = 4 * (th + 1) padded rows 4a + q (q < 4, a <= th) are copied, zero-padded, into slot
    q * (th + 1) + a of `lin` (4*tw values) and deinterleaved into six phase arrays
    X_k[slot * tw + b] = row[4b + k], k < 6 (the last tile column's X_4, X_5 are the row's two
    extra values). B^T along the rows gives RT_j = (B^T X)_j, then B^T down the columns of each
    tile row (rows 4a + k: slots k * (th + 1) + a, and (a + 1), (th + 1) + (a + 1) for k = 4, 5)
    gives V[6*i + j] for the whole plane, one run of th*tw values per output."""
    cdef Py_ssize_t S = 4 * (th + 1), Wt = 4 * tw
    cdef Py_ssize_t n = S * tw, per = th * tw, T1 = (th + 1) * tw
    cdef Py_ssize_t r, slot, j
    cdef floating* X = buf
    cdef floating* RT = X + 6 * n
    cdef floating* lin = RT  # the rows are no longer needed once deinterleaved
    cdef floating* row = RT + 6 * n
    cdef floating* E = row + Wt + 2
    cdef floating* z
    for r in range(S):
        slot = (r % 4) * (th + 1) + r // 4
        copy_rows(plane, row, 1, r - pt, H, W, -pl, Wt + 2)
        memcpy(lin + slot * Wt, row, Wt * sizeof(floating))
        E[2 * slot] = row[Wt]
        E[2 * slot + 1] = row[Wt + 1]
    deinterleave(lin, X, n, 4)
    for r in range(n - 1):
        X[4 * n + r] = lin[4 * r + 4]
    for r in range(n - 1):
        X[5 * n + r] = lin[4 * r + 5]
    for slot in range(S):
        X[4 * n + slot * tw + tw - 1] = E[2 * slot]
        X[5 * n + slot * tw + tw - 1] = E[2 * slot + 1]
    bt6(X, X + n, X + 2 * n, X + 3 * n, X + 4 * n, X + 5 * n, RT, n, n)
    for j in range(6):
        z = RT + j * n
        bt6(z, z + T1, z + 2 * T1, z + 3 * T1, z + tw, z + T1 + tw, v + j * stride,
            6 * stride, per)


cdef inline Py_ssize_t input_scratch(Py_ssize_t th, Py_ssize_t tw) noexcept nogil:
    return 12 * 4 * (th + 1) * tw + 4 * tw + 2 + 2 * 4 * (th + 1)


cdef void output_transform_plane(const floating* m, floating* y, Py_ssize_t stride,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                 floating bias, bint has_bias, floating* buf) noexcept nogil:
    """Write the (Ho, Wo) output plane y from its tiles' products m[e * stride + t]. buf: scratch
    of 32*th*tw. Columns first, over the whole plane: Z[r, j, t] = (A^T m[:, j, t])[r]; then for
    each output row r of the tile rows, A^T along the rows into four phases Q_c (+ bias),
    interleaved into th output rows of 4*tw values, copied into y without the values past Ho/Wo."""
    cdef Py_ssize_t per = th * tw, Wt = 4 * tw
    cdef Py_ssize_t a, j, r, u
    cdef floating* Z = buf
    cdef floating* Q = buf + 24 * per
    cdef floating* out = Q + 4 * per
    cdef floating* z
    for j in range(6):
        at4(m + j * stride, m + (6 + j) * stride, m + (12 + j) * stride, m + (18 + j) * stride,
            m + (24 + j) * stride, m + (30 + j) * stride, Z + j * per, 6 * per, per)
    for r in range(4 if Ho >= 4 else Ho):
        z = Z + 6 * r * per
        at4(z, z + per, z + 2 * per, z + 3 * per, z + 4 * per, z + 5 * per, Q, per, per)
        if has_bias:
            for u in range(per):
                out[4 * u] = Q[u] + bias
                out[4 * u + 1] = Q[per + u] + bias
                out[4 * u + 2] = Q[2 * per + u] + bias
                out[4 * u + 3] = Q[3 * per + u] + bias
        else:
            for u in range(per):
                out[4 * u] = Q[u]
                out[4 * u + 1] = Q[per + u]
                out[4 * u + 2] = Q[2 * per + u]
                out[4 * u + 3] = Q[3 * per + u]
        for a in range(th):
            if 4 * a + r < Ho:
                memcpy(y + (4 * a + r) * Wo, out + a * Wt, Wo * sizeof(floating))


cdef void output_grad_transform_plane(const floating* gy, floating* dm, Py_ssize_t stride,
                                      Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                      floating* buf) noexcept nogil:
    """dM value e of tile t of one (Ho, Wo) grad_output plane to dm[e * stride + t], from the
    tile's 4x4 values (zero past Ho/Wo). buf: scratch of 40*th*tw. Rows 4a + k (k < 4) go,
    zero-padded to 4*tw values, to slot k * th + a of `lin`, are deinterleaved into their 4 column
    phases and transformed by A along the rows (RT_j); then A down the columns of each tile row
    gives dM[6*i + j] for the whole plane."""
    cdef Py_ssize_t per = th * tw, Wt = 4 * tw, n = 4 * per
    cdef Py_ssize_t r, j
    cdef floating* X = buf
    cdef floating* RT = X + 4 * n
    cdef floating* lin = RT  # the rows are no longer needed once deinterleaved
    cdef floating* z
    for r in range(4 * th):
        copy_rows(gy, lin + ((r % 4) * th + r // 4) * Wt, 1, r, Ho, Wo, 0, Wt)
    deinterleave(lin, X, n, 4)
    a6(X, X + n, X + 2 * n, X + 3 * n, RT, n, n)
    for j in range(6):
        z = RT + j * n
        a6(z, z + per, z + 2 * per, z + 3 * per, dm + j * stride, 6 * stride, per)


cdef void* thread_scratch(Py_ssize_t nbytes, str func) except NULL:
    """malloc nbytes for the per-thread row buffers, or raise MemoryError."""
    cdef void* scratch = malloc(nbytes)
    if scratch == NULL:
        raise MemoryError(f"cnnext._winograd.{func}: no memory for the row buffers")
    return scratch


def input_transform(const floating[:, :, :, ::1] x, floating[:, ::1] v, Py_ssize_t n0,
                    Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t nc,
                    Py_ssize_t ld, int num_threads=1):
    """Write the transformed input tiles of samples x[n0:n0+nc] into v: element (e, c, t) at
    v[e, c*ld + t] for t < nc * tiles <= ld, tiles = ceil(Ho/4) * ceil(Wo/4); v has shape
    (36, >= C*ld); pt, pl are the top/left zero padding."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = input_scratch(th, tw)
    cdef Py_ssize_t u, n, c
    cdef floating* scratch
    if C == 0 or nc == 0 or per == 0:
        return
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "input_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * C, schedule='static'):
                n = u // C
                c = u % C
                input_transform_plane(&x[n0 + n, c, 0, 0], &v[0, c * ld + n * per], v.shape[1],
                                      H, W, pt, pl, th, tw, scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)


def output_transform(const floating[:, ::1] m, floating[:, :, :, ::1] y, Py_ssize_t n0,
                     const floating[::1] bias, bint has_bias, Py_ssize_t nc, Py_ssize_t ld,
                     int num_threads=1):
    """Write y[n0:n0+nc] (N, K, Ho, Wo) from the tile products, element (e, k, t) at
    m[e, k*ld + t], adding bias[k] when has_bias."""
    cdef Py_ssize_t K = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = 32 * th * tw
    cdef Py_ssize_t u, n, k
    cdef floating* scratch
    cdef floating b
    if K == 0 or nc == 0 or per == 0:
        return
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "output_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * K, schedule='static'):
                n = u // K
                k = u % K
                b = bias[k] if has_bias else 0
                output_transform_plane(&m[0, k * ld + n * per], &y[n0 + n, k, 0, 0], m.shape[1],
                                       Ho, Wo, th, tw, b, has_bias,
                                       scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)


def output_grad_transform(const floating[:, :, :, ::1] gy, floating[:, ::1] dm,
                          Py_ssize_t n0, Py_ssize_t nc, Py_ssize_t ld, int num_threads=1):
    """Write the transformed grad_output tiles of samples gy[n0:n0+nc] (N, K, Ho, Wo) into dm:
    element (e, k, t) at dm[e, k*ld + t]."""
    cdef Py_ssize_t K = gy.shape[1], Ho = gy.shape[2], Wo = gy.shape[3]
    cdef Py_ssize_t th = (Ho + 3) // 4, tw = (Wo + 3) // 4
    cdef Py_ssize_t per = th * tw
    cdef Py_ssize_t width = 40 * th * tw
    cdef Py_ssize_t u, n, k
    cdef floating* scratch
    if K == 0 or nc == 0 or per == 0:
        return
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "output_grad_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            for u in prange(nc * K, schedule='static'):
                n = u // K
                k = u % K
                output_grad_transform_plane(&gy[n0 + n, k, 0, 0], &dm[0, k * ld + n * per], dm.shape[1],
                                            Ho, Wo, th, tw, scratch + omp_get_thread_num() * width)
    finally:
        free(scratch)


def tile_gemm_level():
    """2 when the tile GEMMs run the AVX2+FMA kernels, 1 for the baseline-ISA vector kernels, 0
    for plain loops (a compiler without vector extensions)."""
    return cnnext_tile_gemm_level


cdef inline void kernel(const floating* ap, const floating* b, floating* c, Py_ssize_t M,
                        Py_ssize_t L, Py_ssize_t ncols, Py_ssize_t ldb,
                        Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        cnnext_kernel_f32(ap, b, c, M, L, ncols, ldb, ldc)
    else:
        cnnext_kernel_f64(ap, b, c, M, L, ncols, ldb, ldc)


cdef inline Py_ssize_t padded(Py_ssize_t n) noexcept nogil:
    return (n + CNNEXT_NR_MAX - 1) // CNNEXT_NR_MAX * CNNEXT_NR_MAX


def tile_gemm(const floating[:, :, :, ::1] up, const floating[:, ::1] v, floating[:, ::1] m,
              Py_ssize_t K, Py_ssize_t T, Py_ssize_t ld, int num_threads=1):
    """M[e] = U[e] @ V[e] for the 36 transform elements: m[e, k*ld + t] = sum over c of
    U[e, k, c] * v[e, c*ld + t], for k < K, t < T. ``up`` holds U packed by blocks of
    TILE_GEMM_MR rows, up[e, kb, c, r] = U[e, kb*MR + r, c] (zero past K); the rows of v are
    read up to T rounded up to TILE_GEMM_PAD, which must not exceed ld."""
    cdef Py_ssize_t E = up.shape[0], Kb = up.shape[1], C = up.shape[2]
    cdef Py_ssize_t e
    if up.shape[3] != CNNEXT_MR or Kb != (K + CNNEXT_MR - 1) // CNNEXT_MR or K < 0 or T < 0:
        raise ValueError(f"tile_gemm: up must have shape (E, ceil(K/{CNNEXT_MR}), C, {CNNEXT_MR}) "
                         f"for K={K}, got {(up.shape[0], up.shape[1], up.shape[2], up.shape[3])}")
    if padded(T) > ld or v.shape[0] != E or m.shape[0] != E or v.shape[1] < C * ld \
            or m.shape[1] < K * ld:
        raise ValueError(f"tile_gemm: need ld >= {padded(T)}, v of shape ({E}, >= {C * ld}) and "
                         f"m of shape ({E}, >= {K * ld}); got ld={ld}, v {(v.shape[0], v.shape[1])}, "
                         f"m {(m.shape[0], m.shape[1])}")
    if K == 0 or T == 0:
        return
    with nogil:
        for e in prange(E, schedule='static', num_threads=num_threads):
            kernel(&up[e, 0, 0, 0], &v[e, 0], &m[e, 0], K, C, T, ld, ld)


def tile_gemm_grad(const floating[:, ::1] dm, const floating[:, ::1] v, floating[:, :, ::1] du,
                   Py_ssize_t T, Py_ssize_t ld, int num_threads=1):
    """dU[e] = dM[e] @ V[e]^T for the 36 transform elements: du[e, k, c] = sum over t < T of
    dm[e, k*ld + t] * v[e, c*ld + t], with du of shape (E, K, C); the sum runs over t in
    order. Each thread packs its element's dM by row blocks and transposes V into a buffer."""
    cdef Py_ssize_t E = du.shape[0], K = du.shape[1], C = du.shape[2]
    cdef Py_ssize_t Kb = (K + CNNEXT_MR - 1) // CNNEXT_MR, Cp = padded(C)
    cdef Py_ssize_t width = Kb * CNNEXT_MR * T + T * Cp
    cdef Py_ssize_t e, i, r, l, c, k
    cdef floating* scratch
    cdef floating* ap = NULL
    cdef floating* bt = NULL
    if T < 0 or T > ld or dm.shape[0] != E or v.shape[0] != E or dm.shape[1] < K * ld \
            or v.shape[1] < C * ld:
        raise ValueError(f"tile_gemm_grad: need 0 <= T <= ld, dm of shape ({E}, >= {K * ld}) and "
                         f"v of shape ({E}, >= {C * ld}); got T={T}, ld={ld}, "
                         f"dm {(dm.shape[0], dm.shape[1])}, v {(v.shape[0], v.shape[1])}")
    if K == 0 or C == 0:
        return
    if T == 0:
        du[:, :, :] = 0
        return
    scratch = <floating*> thread_scratch(num_threads * width * sizeof(floating), "tile_gemm_grad")
    try:
        with nogil, parallel(num_threads=num_threads):
            ap = scratch + omp_get_thread_num() * width
            bt = ap + Kb * CNNEXT_MR * T
            for e in prange(E, schedule='static'):
                for i in range(Kb):
                    for r in range(CNNEXT_MR):
                        k = i * CNNEXT_MR + r
                        for l in range(T):
                            ap[(i * T + l) * CNNEXT_MR + r] = dm[e, k * ld + l] if k < K else 0
                for c in range(C):
                    for l in range(T):
                        bt[l * Cp + c] = v[e, c * ld + l]
                for c in range(C, Cp):
                    for l in range(T):
                        bt[l * Cp + c] = 0
                kernel(ap, bt, &du[e, 0, 0], K, T, C, Cp, C)
    finally:
        free(scratch)


cdef inline void g_apply(double x0, double x1, double x2, double* o) noexcept nogil:
    """o = G x for G of F(4x4, 3x3) (see the table at the top), with its shared sums."""
    cdef double even = x0 + x2
    o[0] = 0.25 * x0
    o[1] = -(even + x1) * (1.0 / 6)
    o[2] = -(even - x1) * (1.0 / 6)
    o[3] = x0 * (1.0 / 24) + x1 * (1.0 / 12) + x2 * (1.0 / 6)
    o[4] = x0 * (1.0 / 24) - x1 * (1.0 / 12) + x2 * (1.0 / 6)
    o[5] = x2


cdef inline void gt_apply(const double* y, Py_ssize_t step, double* o) noexcept nogil:
    """o = G^T y for the 6 values y[0], y[step], ..., y[5 * step]."""
    cdef double p12 = y[step] + y[2 * step], m12 = y[step] - y[2 * step]
    cdef double p34 = y[3 * step] + y[4 * step], m34 = y[3 * step] - y[4 * step]
    o[0] = 0.25 * y[0] - p12 * (1.0 / 6) + p34 * (1.0 / 24)
    o[1] = -m12 * (1.0 / 6) + m34 * (1.0 / 12)
    o[2] = -p12 * (1.0 / 6) + p34 * (1.0 / 6) + y[5 * step]


cdef void transform_filter(const floating* taps, bint rotate, floating* out,
                           Py_ssize_t estride) noexcept nogil:
    """out[e * estride] = (G g G^T)[i, j], e = 6*i + j, for the 3x3 filter g at taps (row-major;
    rotated 180 degrees with rotate), in float64."""
    cdef double g[9]
    cdef double t[3][6]   # t[b] = G g[:, b]
    cdef double row[6]
    cdef Py_ssize_t i, j, b
    for i in range(9):
        g[i] = taps[8 - i] if rotate else taps[i]
    for b in range(3):
        g_apply(g[b], g[3 + b], g[6 + b], t[b])
    for i in range(6):
        g_apply(t[0][i], t[1][i], t[2][i], row)
        for j in range(6):
            out[(6 * i + j) * estride] = <floating> row[j]


cdef void grad_filter(const floating* du, Py_ssize_t estride, floating* gw) noexcept nogil:
    """gw[3*a + b] = (G^T d G)[a, b] for the 6x6 d[i, j] = du[(6*i + j) * estride], in float64."""
    cdef double d[36]
    cdef double s[6][3]   # s[i] = G^T d[i, :]
    cdef double col[3]
    cdef Py_ssize_t i, a, b
    for i in range(36):
        d[i] = du[i * estride]
    for i in range(6):
        gt_apply(&d[6 * i], 1, s[i])
    for b in range(3):
        gt_apply(&s[0][b], 3, col)
        for a in range(3):
            gw[3 * a + b] = <floating> col[a]


def filter_transform(const floating[:, :, :, ::1] w, floating[:, :, :, ::1] up, bint rotate,
                     int num_threads=1):
    """The transformed filters U[e, k, c] = (G g G^T)[i, j], e = 6*i + j, of the (K, C, 3, 3)
    weights w (computed in float64, rounded once), written as up[e, k // mr, c, k % mr] with
    mr = up.shape[3] (1: plain (36, K, C) for BLAS; TILE_GEMM_MR: packed for tile_gemm, zero
    past K). With rotate, g is the filter of the transposed convolution, w[c, k, ::-1, ::-1]
    (so K and C are w's second and first axis), which grad_input convolves with."""
    cdef Py_ssize_t K = w.shape[1] if rotate else w.shape[0]
    cdef Py_ssize_t C = w.shape[0] if rotate else w.shape[1]
    cdef Py_ssize_t mr = up.shape[3]
    cdef Py_ssize_t Kb = (K + mr - 1) // mr if mr > 0 else 0
    cdef Py_ssize_t k, c, e
    cdef floating* scratch
    cdef floating* tmp = NULL
    if w.shape[2] != 3 or w.shape[3] != 3 or mr < 1 or up.shape[0] != 36 or up.shape[1] != Kb \
            or up.shape[2] != C:
        raise ValueError(f"filter_transform: need 3x3 weights and up of shape (36, ceil({K}/mr), {C}, "
                         f"mr); got w {(w.shape[0], w.shape[1], w.shape[2], w.shape[3])}, up "
                         f"{(up.shape[0], up.shape[1], up.shape[2], up.shape[3])}")
    if Kb == 0 or C == 0:
        return
    # Each thread transforms one filter row k into tmp (36, C), then copies it out row by row:
    # writing the 36 values of each filter straight into up would touch 36 places a multiple of
    # up's row size apart, which (being near a multiple of 4 KiB) share a few cache sets.
    scratch = <floating*> thread_scratch(num_threads * 36 * C * sizeof(floating), "filter_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            tmp = scratch + omp_get_thread_num() * 36 * C
            for k in prange(Kb * mr, schedule='static'):
                if k < K:
                    for c in range(C):
                        transform_filter(&w[c, k, 0, 0] if rotate else &w[k, c, 0, 0], rotate,
                                         tmp + c, C)
                    for e in range(36):
                        for c in range(C):
                            up[e, k // mr, c, k % mr] = tmp[e * C + c]
                else:
                    for e in range(36):
                        for c in range(C):
                            up[e, k // mr, c, k % mr] = 0
    finally:
        free(scratch)


def filter_grad_transform(const floating[:, :, ::1] du, floating[:, :, :, ::1] gw,
                          int num_threads=1):
    """grad_weight gw[k, c] = G^T dU[:, k, c] G (6x6 -> 3x3) from du of shape (36, K, C), e = 6*i + j,
    computed in float64 and rounded once."""
    cdef Py_ssize_t K = du.shape[1], C = du.shape[2]
    cdef Py_ssize_t k, c, e
    cdef floating* scratch
    cdef floating* tmp = NULL
    if du.shape[0] != 36 or gw.shape[0] != K or gw.shape[1] != C or gw.shape[2] != 3 \
            or gw.shape[3] != 3:
        raise ValueError(f"filter_grad_transform: need du of shape (36, K, C) and gw of shape "
                         f"(K, C, 3, 3); got du {(du.shape[0], du.shape[1], du.shape[2])}, gw "
                         f"{(gw.shape[0], gw.shape[1], gw.shape[2], gw.shape[3])}")
    if K == 0 or C == 0:
        return
    # Each thread gathers one filter row k of du into tmp (C, 36) first, reading 36 contiguous runs
    # (du's planes are a multiple of 4 KiB apart: gathering each filter's 36 values directly
    # would hit the same cache sets 36 times).
    scratch = <floating*> thread_scratch(num_threads * 36 * C * sizeof(floating),
                                         "filter_grad_transform")
    try:
        with nogil, parallel(num_threads=num_threads):
            tmp = scratch + omp_get_thread_num() * 36 * C
            for k in prange(K, schedule='static'):
                for e in range(36):
                    for c in range(C):
                        tmp[c * 36 + e] = du[e, k, c]
                for c in range(C):
                    grad_filter(tmp + c * 36, 1, &gw[k, c, 0, 0])
    finally:
        free(scratch)
