# Design
# ------
# Direct convolution, for the shapes where im2col + GEMM wastes its time moving memory: few output
# channels per group (depthwise and other grouped convolutions) and thin problems such as LeNet's
# first layer, where BLAS never reaches speed (see _algorithm in functional/_conv_dispatch.py). All three
# passes run one register-blocked kernel, _forward_plane: a block of 2 output rows by BLOCK (8
# float64 or 16 float32), BLOCK/2, BLOCK/4 or 1 columns lives in a local array that the C compiler
# keeps in vector registers (the loops over the block have a constant size once inlined and
# unroll), so each tap costs loads and multiply-adds only, with no store until the block is done.
#
#   forward      prange over (sample, filter) output planes; each output starts from the bias and
#                adds the taps in (channel, row, column) order. The input is *valid*: the caller
#                pads it (pad_planes), so every tap of every output is in range.
#   grad_input   stride 1: the same kernel on the padded grad_output with each filter turned by
#                180 degrees (a "full" correlation), prange over (sample, channel) input planes.
#                Other strides: the scatter kernel direct_grad_input (unblocked), each thread
#                writing only its own input planes.
#   grad_weight  the same kernel with the roles swapped, prange over (filter, channel) weight
#                slices: x[:, c] (padded) is the input, gy[:, k] the filter, stride (dh, dw) and
#                dilation (sh, sw); each weight sums samples, then rows, then columns, in order.
#
# small_conv / small_grad_weight: the same three passes for small stride-1 problems (chosen in
# functional/_conv_dispatch.py), in the C kernels of _tile_gemm.h with AVX2+FMA dispatch: forward with 6
# filters per register block (4 or more filters), else one filter and 6 output rows per block
# (also grad_input, on grad_output padded by kernel - 1 - padding, filters turned); grad_weight
# with 6 filters per block, each (channel, tap row) of x the shifted rows.
#
# Padding is multiplied in as zeros, as in im2col + GEMM. Every thread writes only its own planes,
# and every sum runs in the same order for any thread count, so results are bitwise identical
# whatever `num_threads` is. Arguments are validated in Python (cnnext/_validation.py); the loops
# run unchecked under `nogil`.
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cnnext._kernels._indexing cimport end_valid, first_valid
from libc.stdlib cimport malloc, free


cdef extern from "_tile_gemm.h" nogil:
    int cnnext_tile_gemm_init()
    Py_ssize_t CNNEXT_SLACK(Py_ssize_t W)
    void cnnext_rows_f32(const float* a, Py_ssize_t L, const float* base, const Py_ssize_t* off,
                         Py_ssize_t W, float* out, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t ldo,
                         float bias)
    void cnnext_rows_f64(const double* a, Py_ssize_t L, const double* base,
                         const Py_ssize_t* off, Py_ssize_t W, double* out, Py_ssize_t Ho,
                         Py_ssize_t Wo, Py_ssize_t ldo, double bias)
    void cnnext_implicit_f32(const float* ap, const float* base, const Py_ssize_t* off, float* c,
                             Py_ssize_t M, Py_ssize_t L, Py_ssize_t ncols, Py_ssize_t ldc,
                             const float* bias)
    void cnnext_implicit_f64(const double* ap, const double* base, const Py_ssize_t* off,
                             double* c, Py_ssize_t M, Py_ssize_t L, Py_ssize_t ncols,
                             Py_ssize_t ldc, const double* bias)
    enum:
        CNNEXT_MR

cnnext_tile_gemm_init()  # the AVX2+FMA or baseline build of the small-convolution kernels

cdef extern from *:
    """
    /* GCC would vectorise the loop over a filter row's taps around the unrolled column blocks
       (shuffling every product into place); the blocks vectorise better on their own (SLP). */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC optimize ("no-tree-loop-vectorize")
    #endif
    """

# Columns per register block: 8 float64 or 16 float32, four 128-bit vectors of accumulators.
cdef enum:
    _BLOCK_MAX = 16


cdef inline Py_ssize_t _block(const floating* dtype_only) noexcept nogil:
    """Columns per register block for this specialisation (the pointer only selects the type)."""
    if floating is double:
        return 8
    else:
        return 16


cdef inline void _forward_block(floating* dst, Py_ssize_t dst_row, const floating* src,
                                Py_ssize_t src_row, const floating* w, Py_ssize_t wplane,
                                Py_ssize_t wrow, Py_ssize_t wcol, floating b, Py_ssize_t Cg,
                                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t plane, Py_ssize_t row,
                                Py_ssize_t dw, Py_ssize_t sw, Py_ssize_t rows,
                                Py_ssize_t width) noexcept nogil:
    """dst[r * dst_row + j] = b + sum over (cg, ki, kj) of w[cg * wplane + ki * wrow + kj * wcol] *
    src[r * src_row + cg * plane + ki * row + kj * dw + j * sw] for r < rows (1 or 2), j < width,
    summed in that order; inlined with constant rows and width (and sw) so that acc stays in
    registers."""
    cdef floating acc[2 * _BLOCK_MAX]
    cdef floating wv
    cdef const floating* s
    cdef Py_ssize_t j, r, cg, ki, kj
    for j in range(rows * width):
        acc[j] = b
    for cg in range(Cg):
        for ki in range(kh):
            s = src + cg * plane + ki * row
            for kj in range(kw):
                wv = w[cg * wplane + ki * wrow + kj * wcol]
                for r in range(rows):
                    for j in range(width):
                        acc[r * width + j] += wv * s[r * src_row + kj * dw + j * sw]
    for r in range(rows):
        for j in range(width):
            dst[r * dst_row + j] = acc[r * width + j]


cdef inline void _forward_rows(floating* dst, Py_ssize_t Wo, const floating* src,
                               Py_ssize_t src_row, const floating* w, Py_ssize_t wplane,
                               Py_ssize_t wrow, Py_ssize_t wcol, floating b, Py_ssize_t Cg,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t plane, Py_ssize_t row,
                               Py_ssize_t dw, Py_ssize_t sw, Py_ssize_t rows) noexcept nogil:
    """`rows` output rows (1 or 2): blocks of BLOCK columns, then BLOCK/2, BLOCK/4 (one vector),
    then single columns."""
    cdef Py_ssize_t B = _block(dst), ow = 0
    while ow + B <= Wo:
        _forward_block(dst + ow, Wo, src + ow * sw, src_row, w, wplane, wrow, wcol, b, Cg, kh, kw,
                       plane, row, dw, sw, rows, B)
        ow += B
    if ow + B // 2 <= Wo:
        _forward_block(dst + ow, Wo, src + ow * sw, src_row, w, wplane, wrow, wcol, b, Cg, kh, kw,
                       plane, row, dw, sw, rows, B // 2)
        ow += B // 2
    if ow + B // 4 <= Wo:
        _forward_block(dst + ow, Wo, src + ow * sw, src_row, w, wplane, wrow, wcol, b, Cg, kh, kw,
                       plane, row, dw, sw, rows, B // 4)
        ow += B // 4
    while ow < Wo:
        _forward_block(dst + ow, Wo, src + ow * sw, src_row, w, wplane, wrow, wcol, b, Cg, kh, kw,
                       plane, row, dw, sw, rows, 1)
        ow += 1


cdef inline void _forward_plane(floating* dst, Py_ssize_t Ho, Py_ssize_t Wo, const floating* src,
                                Py_ssize_t src_row, const floating* w, Py_ssize_t wplane,
                                Py_ssize_t wrow, Py_ssize_t wcol, floating b, Py_ssize_t Cg,
                                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t plane, Py_ssize_t row,
                                Py_ssize_t dw, Py_ssize_t sw) noexcept nogil:
    """A whole (Ho, Wo) output plane, two rows at a time (twice the independent accumulators per
    tap); output row r reads the input from src + r * src_row."""
    cdef Py_ssize_t oh
    for oh in range(0, Ho - 1, 2):
        if sw == 1:
            _forward_rows(dst + oh * Wo, Wo, src + oh * src_row, src_row, w, wplane, wrow, wcol, b,
                          Cg, kh, kw, plane, row, dw, 1, 2)
        else:
            _forward_rows(dst + oh * Wo, Wo, src + oh * src_row, src_row, w, wplane, wrow, wcol, b,
                          Cg, kh, kw, plane, row, dw, sw, 2)
    if Ho % 2:
        oh = Ho - 1
        _forward_rows(dst + oh * Wo, Wo, src + oh * src_row, src_row, w, wplane, wrow, wcol, b,
                      Cg, kh, kw, plane, row, dw, sw, 1)


def direct_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   floating[:, :, :, ::1] y, const floating[::1] bias, bint has_bias,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups,
                   int num_threads=1):
    """y[n, k] = bias[k] + sum over the group's channels and taps of w * shifted x[n, c], x padded.

    Every tap must be in range: H >= (Ho - 1) * sh + (kh - 1) * dh + 1, likewise for the width.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3], Kg = K // groups
    cdef Py_ssize_t t, n, k
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    with nogil:
        for t in prange(N * K, schedule='static', num_threads=num_threads):
            n = t // K
            k = t % K
            _forward_plane(&y[n, k, 0, 0], Ho, Wo, &x[n, (k // Kg) * Cg, 0, 0], sh * W,
                           &w[k, 0, 0, 0], kh * kw, kw, 1, bias[k] if has_bias else 0, Cg, kh, kw,
                           H * W, dh * W, dw, sw)


def direct_grad_input_full(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] w,
                           floating[:, :, :, ::1] gx, Py_ssize_t dh, Py_ssize_t dw,
                           Py_ssize_t groups, int num_threads=1):
    """Stride-1 grad_input: gx[n, c] = the "full" correlation of gy (padded by the caller with
    dilation * (kernel - 1) - padding on each side) with the group's filters' slices w[k, cg] turned
    by 180 degrees, summed over the group's filters in order."""
    cdef Py_ssize_t N = gx.shape[0], C = gx.shape[1], H = gx.shape[2], W = gx.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Hp = gy.shape[2], Wp = gy.shape[3], Kg = K // groups
    cdef Py_ssize_t t, n, c, k0
    if N == 0 or C == 0 or H == 0 or W == 0:
        return
    with nogil:
        for t in prange(N * C, schedule='static', num_threads=num_threads):
            n = t // C
            c = t % C
            k0 = (c // Cg) * Kg
            _forward_plane(&gx[n, c, 0, 0], H, W, &gy[n, k0, 0, 0], Wp,
                           &w[k0, c % Cg, kh - 1, kw - 1], Cg * kh * kw, -kw, -1, 0, Kg, kh, kw,
                           Hp * Wp, dh * Wp, dw, 1)


def direct_grad_input(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] w,
                      floating[:, :, :, ::1] gx,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                      Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int num_threads=1):
    """gx[n, c] (zeroed by the caller) += every tap's weight times the shifted gy[n, k].

    The scatter form, for any stride; stride 1 runs faster as direct_forward (see the Design).
    """
    cdef Py_ssize_t N = gx.shape[0], C = gx.shape[1], H = gx.shape[2], W = gx.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Ho = gy.shape[2], Wo = gy.shape[3], Kg = K // groups
    cdef Py_ssize_t t, n, k, kg, cg, c, ki, kj, oh, ow, ih, lo, hi, off
    cdef floating wv
    cdef floating* dst
    cdef const floating* src
    if N == 0 or C == 0 or Ho == 0 or Wo == 0:
        return
    with nogil:
        for t in prange(N * C, schedule='static', num_threads=num_threads):
            n = t // C
            c = t % C
            cg = c % Cg
            for kg in range(Kg):
                k = (c // Cg) * Kg + kg
                for ki in range(kh):
                    for kj in range(kw):
                        wv = w[k, cg, ki, kj]
                        off = kj * dw - pl
                        lo = first_valid(off, sw, Wo)
                        hi = end_valid(off, W, sw, Wo, lo)
                        for oh in range(Ho):
                            ih = oh * sh - pt + ki * dh
                            if ih < 0 or ih >= H:
                                continue
                            dst = &gx[n, c, ih, 0]  # indexed by off + ow * sw, in [0, W)
                            src = &gy[n, k, oh, 0]
                            if sw == 1:
                                for ow in range(lo, hi):
                                    dst[off + ow] += wv * src[ow]
                            else:
                                for ow in range(lo, hi):
                                    dst[off + ow * sw] += wv * src[ow]


cdef inline floating _plane_sum(const floating* a, Py_ssize_t N, Py_ssize_t sample,
                               Py_ssize_t P) noexcept nogil:
    """Sum of the N planes of P elements at a, a + sample, ...: BLOCK lanes, then the tail, in a
    fixed order."""
    cdef Py_ssize_t B = _block(a), n, p, j
    cdef floating acc[_BLOCK_MAX]
    cdef floating tail = 0, total = 0
    for j in range(B):
        acc[j] = 0
    for n in range(N):
        p = 0
        while p + B <= P:
            for j in range(B):
                acc[j] += a[n * sample + p + j]
            p += B
        while p < P:
            tail += a[n * sample + p]
            p += 1
    for j in range(B):
        total = total + acc[j]
    return total + tail


def direct_grad_weight(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] gw, floating[::1] gb, bint need_bias,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t groups, int num_threads=1):
    """gw[k, cg, ki, kj] = sum over samples and output pixels of gy[n, k] * shifted padded x[n, c];
    with need_bias also gb[k] = the sum of gy[:, k].

    Each (filter, channel) slice is a forward pass with the roles swapped: x[:, c] is the input,
    gy[:, k] the (Ho, Wo) filter over the N samples, stride (dh, dw) and dilation (sh, sw); every
    weight is summed over samples, then rows, then columns, in that order.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = gw.shape[0], Cg = gw.shape[1], kh = gw.shape[2], kw = gw.shape[3]
    cdef Py_ssize_t Ho = gy.shape[2], Wo = gy.shape[3], Kg = K // groups
    cdef Py_ssize_t t, k, cg, c
    if K == 0 or Cg == 0:
        return
    if N == 0 or Ho == 0 or Wo == 0:
        gw[...] = 0
        if need_bias:
            gb[...] = 0
        return
    with nogil:
        for t in prange(K * Cg, schedule='static', num_threads=num_threads):
            k = t // Cg
            cg = t % Cg
            c = (k // Kg) * Cg + cg
            # output "rows" are ki, "columns" kj; the taps run over (n, oh, ow)
            _forward_plane(&gw[k, cg, 0, 0], kh, kw, &x[0, c, 0, 0], dh * W, &gy[0, k, 0, 0],
                           K * Ho * Wo, Wo, 1, 0, N, Ho, Wo, C * H * W, sh * W, sw, dw)
            if need_bias and cg == 0:
                gb[k] = _plane_sum(&gy[0, k, 0, 0], N, K * Ho * Wo, Ho * Wo)


def pad_planes(const floating[:, :, :, ::1] a, floating[:, :, :, ::1] out, Py_ssize_t top,
               Py_ssize_t left):
    """out[n, c, i, j] = a[n, c, i - top, j - left] where that is inside a, else 0 (top and left
    may be negative: a crop)."""
    cdef Py_ssize_t N = out.shape[0], C = out.shape[1], Hp = out.shape[2], Wp = out.shape[3]
    cdef Py_ssize_t H = a.shape[2], W = a.shape[3]
    cdef Py_ssize_t n, c, i, j, lo = max(left, 0), hi = min(W + left, Wp)
    cdef floating* dst
    cdef const floating* src
    if lo > hi:
        lo = hi = Wp
    with nogil:
        for n in range(N):
            for c in range(C):
                for i in range(Hp):
                    dst = &out[n, c, i, 0]
                    if i - top < 0 or i - top >= H:
                        memset(dst, 0, Wp * sizeof(floating))
                        continue
                    src = &a[n, c, i - top, 0]  # column j of out is column j - left of a
                    memset(dst, 0, lo * sizeof(floating))
                    if hi > lo:
                        memcpy(dst + lo, src + (lo - left), (hi - lo) * sizeof(floating))
                    memset(dst + hi, 0, (Wp - hi) * sizeof(floating))


# Small convolutions (one LeNet sample) on one thread, by the register-blocked C kernels of
# _tile_gemm.h (AVX2+FMA where the CPU has them); stride 1, dilation 1, groups 1. Each call copies
# its input, padded, into a buffer followed by zeroed slack that the kernels' blocks may read past
# the valid region (those lanes are dropped).

cdef inline void _rows_plane(const floating* a, Py_ssize_t L, const floating* base,
                             const Py_ssize_t* off, Py_ssize_t W, floating* out, Py_ssize_t Ho,
                             Py_ssize_t Wo, Py_ssize_t ldo, floating bias) noexcept nogil:
    if floating is float:
        cnnext_rows_f32(a, L, base, off, W, out, Ho, Wo, ldo, bias)
    else:
        cnnext_rows_f64(a, L, base, off, W, out, Ho, Wo, ldo, bias)


cdef inline void _implicit(const floating* ap, const floating* base, const Py_ssize_t* off,
                           floating* c, Py_ssize_t M, Py_ssize_t L, Py_ssize_t ncols,
                           Py_ssize_t ldc, const floating* bias) noexcept nogil:
    if floating is float:
        cnnext_implicit_f32(ap, base, off, c, M, L, ncols, ldc, bias)
    else:
        cnnext_implicit_f64(ap, base, off, c, M, L, ncols, ldc, bias)


cdef void* _scratch(Py_ssize_t nbytes, str func) except NULL:
    cdef void* p = malloc(nbytes if nbytes > 0 else 1)
    if p == NULL:
        raise MemoryError(f"cnnext._direct.{func}: no memory for the offset table")
    return p


cdef floating* _padded_copy(const floating[:, :, :, ::1] a, Py_ssize_t top, Py_ssize_t left,
                            Py_ssize_t Hp, Py_ssize_t Wp, str func) except NULL:
    """A malloc'ed copy of a (N, C, H, W) placed at (top, left) in zeroed (N, C, Hp, Wp) planes
    (negative top/left and smaller planes crop), followed by CNNEXT_SLACK(Wp) zeros; free it."""
    cdef Py_ssize_t N = a.shape[0], C = a.shape[1], H = a.shape[2], W = a.shape[3]
    cdef Py_ssize_t size = N * C * Hp * Wp + CNNEXT_SLACK(Wp)
    cdef Py_ssize_t n, c, i, r, j0, j1
    cdef floating* buf = <floating*> _scratch(size * sizeof(floating), func)
    with nogil:
        memset(buf, 0, size * sizeof(floating))
        j0 = -left if left < 0 else 0          # first source column kept
        j1 = Wp - left if Wp - left < W else W  # one past the last
        if j1 > j0:
            for n in range(N):
                for c in range(C):
                    for i in range(H):
                        r = i + top
                        if 0 <= r < Hp:
                            memcpy(buf + (((n * C + c) * Hp + r) * Wp + j0 + left), &a[n, c, i, j0],
                                   (j1 - j0) * sizeof(floating))
    return buf


def small_conv(const floating[:, :, :, ::1] x, Py_ssize_t top, Py_ssize_t left,
               const floating[:, :, :, ::1] w, bint flip, floating[:, :, :, ::1] y,
               const floating[::1] bias, bint has_bias):
    """y[n, k] = bias[k] + sum over c of the correlation (valid, stride 1) of x[n, c] zero-padded
    by (top, left) and to the size the output needs (negative: cropped) with f[k, c]; f = w
    (K, C, kh, kw) or, with flip, the filters of the transposed convolution, f[k, c] =
    w[c, k, ::-1, ::-1] for w of shape (C, K, kh, kw) (grad_input from grad_output). Every output
    sums (c, ki, kj) in order."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Py_ssize_t K = y.shape[1], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t H = Ho + kh - 1, W = Wo + kw - 1
    cdef Py_ssize_t wc = w.shape[0] if flip else w.shape[1]
    cdef Py_ssize_t wk = w.shape[1] if flip else w.shape[0]
    cdef Py_ssize_t L = C * kh * kw, n, k, c, ki, kj
    cdef Py_ssize_t* off
    cdef floating* a
    cdef floating* xs
    if wc != C or wk != K or y.shape[0] != N or (has_bias and bias.shape[0] < K):
        raise ValueError(f"small_conv: shapes do not match: input {(N, C, x.shape[2], x.shape[3])}"
                         f", weight {(w.shape[0], w.shape[1], kh, kw)} (flip={bool(flip)}), "
                         f"output {(y.shape[0], K, Ho, Wo)}")
    if N == 0 or K == 0 or Ho <= 0 or Wo <= 0:
        return
    xs = _padded_copy(x, top, left, H, W, "small_conv")
    off = NULL
    a = NULL
    cdef Py_ssize_t Kb = (K + CNNEXT_MR - 1) // CNNEXT_MR, oh, i
    try:
        off = <Py_ssize_t*> _scratch(L * sizeof(Py_ssize_t), "small_conv")
        a = <floating*> _scratch(Kb * CNNEXT_MR * L * sizeof(floating), "small_conv")
        with nogil:
            for c in range(C):
                for ki in range(kh):
                    for kj in range(kw):
                        off[(c * kh + ki) * kw + kj] = c * H * W + ki * W + kj
            if not flip and K >= 4:
                # all filters at once, a block of 6 per register tile: each input row loaded
                # once for 6 filters (the weights packed by blocks of 6 rows)
                for i in range(Kb * CNNEXT_MR):
                    for c in range(L):
                        a[((i // CNNEXT_MR) * L + c) * CNNEXT_MR + i % CNNEXT_MR] = (
                            (&w[i, 0, 0, 0])[c] if i < K else 0)
                for n in range(N):
                    for oh in range(Ho):
                        _implicit(a, xs + n * C * H * W + oh * W, off, &y[n, 0, oh, 0], K, L, Wo,
                                  Ho * Wo, &bias[0] if has_bias else NULL)
            else:
                # one filter at a time, 6 output rows per register tile
                for k in range(K):
                    for c in range(C):
                        for ki in range(kh):
                            for kj in range(kw):
                                a[(c * kh + ki) * kw + kj] = (
                                    w[c, k, kh - 1 - ki, kw - 1 - kj] if flip else w[k, c, ki, kj])
                    for n in range(N):
                        _rows_plane(a, L, xs + n * C * H * W, off, W, &y[n, k, 0, 0], Ho, Wo, Wo,
                                    bias[k] if has_bias else 0)
    finally:
        free(xs)
        free(off)
        free(a)


def small_grad_weight(const floating[:, :, :, ::1] x, Py_ssize_t top, Py_ssize_t left,
                      const floating[:, :, :, ::1] gy, floating[:, :, :, ::1] gw,
                      floating[::1] gb, bint need_bias):
    """gw[k, c] = sum over n of the correlation (stride 1, dilation 1) of x[n, c], zero-padded by
    (top, left) and to the size gy needs, with gy[n, k]; each weight sums the output pixels in
    order, then the samples in order. gw must be C-contiguous (it is written as one block).
    With need_bias also gb[k] = the sum of gy[:, k] (as direct_grad_weight sums it)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1]
    cdef Py_ssize_t K = gy.shape[1], Ho = gy.shape[2], Wo = gy.shape[3]
    cdef Py_ssize_t kh = gw.shape[2], kw = gw.shape[3]
    cdef Py_ssize_t H = Ho + kh - 1, W = Wo + kw - 1
    cdef Py_ssize_t L = Ho * Wo, n, c, ki, oh, ow, t, i, k
    cdef Py_ssize_t Kb = (K + CNNEXT_MR - 1) // CNNEXT_MR
    cdef Py_ssize_t* off
    cdef floating* tmp
    cdef floating* ap
    cdef floating* xs
    cdef floating* dst
    if gw.shape[0] != K or gw.shape[1] != C or gy.shape[0] != N or (need_bias and gb.shape[0] != K):
        raise ValueError(f"small_grad_weight: shapes do not match: input "
                         f"{(N, C, x.shape[2], x.shape[3])}, grad_output {(gy.shape[0], K, Ho, Wo)}"
                         f", grad_weight {(gw.shape[0], gw.shape[1], kh, kw)}")
    if need_bias:
        for k in range(K):
            gb[k] = _plane_sum(&gy[0, k, 0, 0], N, K * Ho * Wo, Ho * Wo) if N * Ho * Wo > 0 else 0
    if K == 0 or C == 0:
        return
    if N == 0 or Ho <= 0 or Wo <= 0:
        gw[...] = 0
        return
    xs = _padded_copy(x, top, left, H, W, "small_grad_weight")
    off = NULL
    tmp = NULL
    ap = NULL
    try:
        off = <Py_ssize_t*> _scratch(L * sizeof(Py_ssize_t), "small_grad_weight")
        tmp = <floating*> _scratch(K * C * kh * kw * sizeof(floating), "small_grad_weight")
        ap = <floating*> _scratch(Kb * CNNEXT_MR * L * sizeof(floating), "small_grad_weight")
        with nogil:
            for oh in range(Ho):
                for ow in range(Wo):
                    off[oh * Wo + ow] = oh * W + ow
            # all filters at once: gy[n] packed by blocks of 6 filters is the A operand, each
            # (channel, tap row) of x the shifted rows, a row of kw taps the columns
            for n in range(N):
                for i in range(Kb * CNNEXT_MR):
                    for t in range(L):
                        ap[((i // CNNEXT_MR) * L + t) * CNNEXT_MR + i % CNNEXT_MR] = (
                            (&gy[n, i, 0, 0])[t] if i < K else 0)
                dst = &gw[0, 0, 0, 0] if n == 0 else tmp
                for c in range(C):
                    for ki in range(kh):
                        _implicit(ap, xs + (n * C + c) * H * W + ki * W, off,
                                  dst + (c * kh + ki) * kw, K, L, kw, C * kh * kw, NULL)
                if n > 0:
                    for t in range(K * C * kh * kw):
                        (&gw[0, 0, 0, 0])[t] += tmp[t]
    finally:
        free(xs)
        free(off)
        free(tmp)
        free(ap)
