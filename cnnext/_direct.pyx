# Design
# ------
# Direct convolution, for the shapes where im2col + GEMM wastes its time moving memory: few output
# channels per group (depthwise and other grouped convolutions) and thin problems such as LeNet's
# first layer, where BLAS never reaches speed (see _algorithm in functional/conv.py). All three
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
# Padding is multiplied in as zeros, as in im2col + GEMM. Every thread writes only its own planes,
# and every sum runs in the same order for any thread count, so results are bitwise identical
# whatever `num_threads` is. Arguments are validated in Python (cnnext/_validation.py); the loops
# run unchecked under `nogil`.
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cnnext._indexing cimport end_valid, first_valid

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
                            dst = &gx[n, c, ih, 0] + off
                            src = &gy[n, k, oh, 0]
                            if sw == 1:
                                for ow in range(lo, hi):
                                    dst[ow] += wv * src[ow]
                            else:
                                for ow in range(lo, hi):
                                    dst[ow * sw] += wv * src[ow]


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
                    src = &a[n, c, i - top, 0] - left
                    memset(dst, 0, lo * sizeof(floating))
                    memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
                    memset(dst + hi, 0, (Wp - hi) * sizeof(floating))
