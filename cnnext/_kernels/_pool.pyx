# Design
# ------
# Every kernel parallelises over the N*C independent (H, W) planes with `prange`: no two threads
# ever touch the same plane, so there are no races and the result is bitwise identical for every
# thread count. Pooling would be memory-bound, but max pooling with argmax is compute-bound unless
# its inner loops run in SIMD lanes, so they are written for the compiler's auto-vectorizer at the
# baseline ISA (SSE2 on x86-64): loops over many independent windows, contiguous or literal-stride
# accesses, and branch-free selects (the C helpers below) instead of per-element branches.
#
# Max pooling follows PyTorch exactly: padding counts as -inf, the window is scanned row by row and an
# element replaces the running maximum when it is greater or NaN (so NaN propagates), the stored
# index is the flat position h*W + w inside the plane, and a window of -inf keeps its first valid
# position. That rule is associative (the result is the last NaN, otherwise the first maximum, in
# scan order), so a window may be folded in pieces as long as the pieces are contiguous in scan
# order and combined in order: the kernels fold each window row left to right, then the rows top
# to bottom, with the same comparison.
#  - 2x2 stride-2 windows without padding or dilation: one unrolled loop over each output row.
#  - Other windows without dilation (_max_pool_plane_separable): each input row is folded
#    horizontally once into per-thread scratch, shared by every window overlapping it; then each
#    output row folds the row results of its window rows. Padding rows are skipped and padding
#    columns clipped, since -inf padding never wins. Argmax positions travel in lanes as wide as
#    the values (pos_t): int32 for float32, so float32 planes of 2**31 or more elements take the
#    general path. (GCC vectorizes the float32 kernels; at SSE2 it leaves the float64 ones scalar,
#    as it cannot select int64 lanes on a combined double comparison: still branch-free.)
#  - Dilated windows (max_pool_plane): tap by tap over the windows of each output row.
# Forward stores the argmax so backward is a scatter-add (correct for overlapping windows). When the
# outputs tile the input in 2x2 blocks (2x2 stride-2 pooling, Ho = H // 2, Wo = W // 2) and every
# index lies in its own block, backward writes each plane densely in one pass, zeros included;
# otherwise it scatters into the plane, zeroed just before while it is in cache, or handed over
# already zeroed (calloc'd, for planes too large for that to pay, so untouched pages stay so).
#
# Average pooling follows PyTorch's divisor rule: with count_include_pad the divisor is the window
# clipped to the padded input, otherwise the number of real input elements in the window. Window
# sums are accumulated in double, so float32 input whose mean fits never overflows.
#
# max_pool2d_backward trusts nothing about `indices`: an index outside [0, H*W) is never used and the
# kernel reports it, and cnnext/functional/pooling.py raises ValueError.
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, INT32_MAX
from libc.math cimport INFINITY
from libc.string cimport memset

from cnnext._kernels._indexing cimport ceil_div, end_valid, first_valid


cdef extern from *:
    """
    #include <stdint.h>
    /* Branch-free selects (take ? a : b). The C compiler turns a plain ternary on a float
       comparison into a branch, which mispredicts on real data; blending bit patterns cannot,
       and in a loop over independent lanes the blend vectorizes. */
    static inline float cnx_select_f(int take, float a, float b) {
        union { float f; uint32_t u; } x, y;
        uint32_t m = (uint32_t)0 - (uint32_t)take;
        x.f = a; y.f = b;
        x.u = (x.u & m) | (y.u & ~m);
        return x.f;
    }
    static inline double cnx_select_d(int take, double a, double b) {
        union { double f; uint64_t u; } x, y;
        uint64_t m = (uint64_t)0 - (uint64_t)take;
        x.f = a; y.f = b;
        x.u = (x.u & m) | (y.u & ~m);
        return x.f;
    }
    static inline Py_ssize_t cnx_select_i(int take, Py_ssize_t a, Py_ssize_t b) {
        Py_ssize_t m = -(Py_ssize_t)take;
        return (a & m) | (b & ~m);
    }
    static inline int32_t cnx_select_i32(int take, int32_t a, int32_t b) {
        int32_t m = -(int32_t)take;
        return (a & m) | (b & ~m);
    }
    static inline int64_t cnx_select_i64(int take, int64_t a, int64_t b) {
        int64_t m = -(int64_t)take;
        return (a & m) | (b & ~m);
    }
    """
    float cnx_select_f(int take, float a, float b) noexcept nogil
    double cnx_select_d(int take, double a, double b) noexcept nogil
    Py_ssize_t cnx_select_i(int take, Py_ssize_t a, Py_ssize_t b) noexcept nogil
    int32_t cnx_select_i32(int take, int32_t a, int32_t b) noexcept nogil
    int64_t cnx_select_i64(int take, int64_t a, int64_t b) noexcept nogil

# Argmax positions inside a kernel: int32 lanes next to float32 values, int64 next to float64, so
# that values and positions fill vectors of the same number of lanes.
ctypedef fused pos_t:
    int32_t
    int64_t

import numpy as np


cdef inline floating _select(int take, floating a, floating b) noexcept nogil:
    if floating is float:
        return cnx_select_f(take, a, b)
    else:
        return cnx_select_d(take, a, b)


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _max(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef void max_pool_plane(const floating* x, floating* y, int64_t* idx,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    # One output row at a time, tap by tap: for each tap (ki, kj) in scan order, every window of the
    # row compares that tap with its running maximum. Each window still sees its taps in scan order
    # (so ties and NaN follow PyTorch's rule), while the inner loop runs over independent windows,
    # which pipelines well. The running maximum is updated with branch-free selects: on real data
    # the comparison is unpredictable, and mispredicted branches cost more than the memory traffic.
    cdef Py_ssize_t oh, ow, ki, kj, hs, ih, iw, ws, off, lo, hi, pos
    cdef Py_ssize_t ki_lo, ki_hi, kj_lo, kj_hi
    cdef floating v
    cdef floating* yrow
    cdef int64_t* irow
    cdef const floating* src
    cdef int take
    for oh in range(Ho):
        yrow = y + oh * Wo
        irow = idx + oh * Wo
        hs = oh * sh - ph
        ih = hs
        if ih < 0:  # first tap row inside the plane (arithmetic, not a walk: padding may be huge)
            ih = ih + ceil_div(-ih, dh) * dh
        for ow in range(Wo):
            ws = ow * sw - pw
            iw = ws
            if iw < 0:
                iw = iw + ceil_div(-iw, dw) * dw
            yrow[ow] = -INFINITY
            irow[ow] = ih * W + iw
        # only the taps that can land inside the plane (kernel and padding may be huge)
        ki_lo = ceil_div(-hs, dh)
        if ki_lo < 0:
            ki_lo = 0
        ki_hi = ceil_div(H - hs, dh)
        if ki_hi > kh:
            ki_hi = kh
        kj_lo = ceil_div(pw - (Wo - 1) * sw, dw)
        if kj_lo < 0:
            kj_lo = 0
        kj_hi = ceil_div(W + pw, dw)
        if kj_hi > kw:
            kj_hi = kw
        for ki in range(ki_lo, ki_hi):
            ih = hs + ki * dh
            for kj in range(kj_lo, kj_hi):
                off = kj * dw - pw
                # windows ow in [lo, hi) have this tap inside the plane: 0 <= ow*sw + off < W
                lo = first_valid(off, sw, Wo)
                hi = end_valid(off, W, sw, Wo, lo)
                src = x + ih * W  # indexed by off + ow * sw, in [0, W): no pointer outside x
                for ow in range(lo, hi):
                    v = src[off + ow * sw]
                    take = (v > yrow[ow]) | (v != v)
                    yrow[ow] = _select(take, v, yrow[ow])
                    irow[ow] = cnx_select_i(take, ih * W + ow * sw + off, irow[ow])


cdef inline pos_t _select_pos(int take, pos_t a, pos_t b) noexcept nogil:
    if pos_t is int32_t:
        return cnx_select_i32(take, a, b)
    else:
        return cnx_select_i64(take, a, b)


cdef inline int64_t _widen(pos_t p) noexcept nogil:
    # positions are >= 0: zero-extension (cheaper than sign extension in SSE2) is exact
    if pos_t is int32_t:
        return <uint32_t>p
    else:
        return p


cdef inline void _max_pool_plane_2x2(const floating* x, floating* y, int64_t* idx,
                                     pos_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    # 2x2 windows, stride 2, no padding, no dilation: every window lies inside the plane. Each
    # window row is folded left to right, then the bottom row into the top one (associative rule,
    # see _max_pool_plane_separable), branch-free. Positions are computed in lanes as wide as the
    # values (pos_t: int32 for float32, int64 for float64) and widened only when stored.
    cdef Py_ssize_t oh, ow
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* yrow
    cdef int64_t* irow
    cdef floating a, b, c, d
    cdef pos_t q, pa, pc
    cdef int take
    for oh in range(Ho):
        r0 = x + 2 * oh * W
        r1 = r0 + W
        yrow = y + oh * Wo
        irow = idx + oh * Wo
        q = <pos_t>(2 * oh * W)
        for ow in range(Wo):
            a = r0[2 * ow]
            b = r0[2 * ow + 1]
            c = r1[2 * ow]
            d = r1[2 * ow + 1]
            take = (b > a) | (b != b)
            a = _select(take, b, a)
            pa = take
            take = (d > c) | (d != d)
            c = _select(take, d, c)
            pc = W + take
            take = (c > a) | (c != c)
            yrow[ow] = _select(take, c, a)
            irow[ow] = _widen(q + _select_pos(take, pc, pa))
            q = q + 2  # an induction variable in pos_t lanes, no wider ones to narrow


cdef inline void _fold_taps(const floating* r, floating* hv, pos_t* hp, Py_ssize_t n,
                            Py_ssize_t kw, Py_ssize_t sw, pos_t base) noexcept nogil:
    # Fold the taps r[j*sw : j*sw + kw] of n windows j left to right into (hv[j], hp[j]), hp
    # being the flat position base + j*sw + kj of the winner. Same rule as the scan: a later tap
    # wins when it is greater or NaN. Loops run over independent windows with branch-free
    # selects, literal strides where they matter and a pos_t induction variable q (the window's
    # first position), so the compiler vectorizes them.
    cdef Py_ssize_t j, kj
    cdef floating v, m
    cdef pos_t p, q
    cdef int take, take1
    if kw == 3 and sw == 2:  # the common overlapping case, in registers
        q = base
        for j in range(n):
            m = r[2 * j]
            v = r[2 * j + 1]
            take1 = (v > m) | (v != v)
            m = _select(take1, v, m)
            v = r[2 * j + 2]
            take = (v > m) | (v != v)
            hv[j] = _select(take, v, m)
            hp[j] = q + _select_pos(take, <pos_t>2, <pos_t>take1)
            q = q + 2
        return
    q = base
    for j in range(n):
        hv[j] = r[j * sw]
        hp[j] = q
        q = q + <pos_t>sw
    for kj in range(1, kw):
        q = base + <pos_t>kj
        if sw == 1:
            for j in range(n):
                v = r[j + kj]
                m = hv[j]
                p = hp[j]
                take = (v > m) | (v != v)
                hv[j] = _select(take, v, m)
                hp[j] = _select_pos(take, q, p)
                q = q + 1
        elif sw == 2:
            for j in range(n):
                v = r[2 * j + kj]
                m = hv[j]
                p = hp[j]
                take = (v > m) | (v != v)
                hv[j] = _select(take, v, m)
                hp[j] = _select_pos(take, q, p)
                q = q + 2
        else:
            for j in range(n):
                v = r[j * sw + kj]
                m = hv[j]
                p = hp[j]
                take = (v > m) | (v != v)
                hv[j] = _select(take, v, m)
                hp[j] = _select_pos(take, q, p)
                q = q + <pos_t>sw


cdef inline void _fold_rows(const floating* hv, const pos_t* hp, Py_ssize_t Wh,
                            floating* y, int64_t* idx, Py_ssize_t Wo, Py_ssize_t kh) noexcept nogil:
    # Fold kh consecutive rows (stride Wh) of row results top to bottom into y[:Wo], idx[:Wo].
    cdef Py_ssize_t ow, ki
    cdef floating v, m
    cdef pos_t p, q
    cdef int take
    if kh == 3:
        for ow in range(Wo):
            m = hv[ow]
            p = hp[ow]
            v = hv[Wh + ow]
            take = (v > m) | (v != v)
            m = _select(take, v, m)
            p = _select_pos(take, hp[Wh + ow], p)
            v = hv[2 * Wh + ow]
            take = (v > m) | (v != v)
            y[ow] = _select(take, v, m)
            idx[ow] = _widen(_select_pos(take, hp[2 * Wh + ow], p))
        return
    for ow in range(Wo):
        y[ow] = hv[ow]
        idx[ow] = _widen(hp[ow])
    for ki in range(1, kh):
        for ow in range(Wo):
            v = hv[ki * Wh + ow]
            m = y[ow]
            q = hp[ki * Wh + ow]  # loaded unconditionally: a conditional load blocks vectorization
            take = (v > m) | (v != v)
            y[ow] = _select(take, v, m)
            idx[ow] = cnx_select_i64(take, _widen(q), idx[ow])


cdef inline void _fold_clipped(const floating* row, floating* hv, pos_t* hp, Py_ssize_t ow,
                               Py_ssize_t W, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pw,
                               pos_t base) noexcept nogil:
    # One window ow of a row that reaches into the padding: fold its taps inside [0, W) only
    # (padding is -inf and never wins; the first tap inside starts the maximum, so a window of
    # -inf keeps its first position inside the plane, as the scan does).
    cdef Py_ssize_t ws = ow * sw - pw, kj = _max(0, -ws), kj_hi = _min(kw, W - ws)
    cdef floating m = row[ws + kj], v
    cdef pos_t p = base + <pos_t>(ws + kj)
    cdef int take
    for kj in range(kj + 1, kj_hi):
        v = row[ws + kj]
        take = (v > m) | (v != v)
        m = _select(take, v, m)
        p = _select_pos(take, base + <pos_t>(ws + kj), p)
    hv[0] = m
    hp[0] = p


cdef void _max_pool_plane_separable(const floating* x, floating* y, int64_t* idx,
                                    Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Wh,
                                    Py_ssize_t band, floating* hv, pos_t* hp) noexcept nogil:
    # Any window without dilation, flat positions representable in pos_t. Bands of `band` output
    # rows: the input rows under a band are folded horizontally once (_fold_taps), each shared by
    # all the windows overlapping it, then each output row folds its row results top to bottom
    # (_fold_rows). Folding each window row by row and then the rows in order gives the scan's
    # result because the rule is associative (the later element wins when greater or NaN: overall
    # the last NaN, otherwise the first maximum). Padding rows are skipped and padding columns
    # clipped (_fold_clipped): -inf padding never wins, so a window's result is the fold of its
    # taps inside the plane.
    # Wh is the scratch row length. When sw divides W and Wh == W // sw >= Wo, the windows of
    # consecutive rows are equally spaced in memory, so all the windows inside the plane of a band
    # are one long loop (the ones straddling two rows are computed, then overwritten or never
    # read); otherwise Wh == Wo and rows are folded one by one.
    # hv, hp: min(H, (band - 1) * sh + kh) * Wh elements.
    cdef bint flat = W % sw == 0 and Wh == W // sw
    # windows [ow_lo, ow_hi) have all their taps inside the row
    cdef Py_ssize_t ow_lo = first_valid(-pw, sw, Wo)
    cdef Py_ssize_t ow_hi = end_valid(kw - 1 - pw, W, sw, Wo, ow_lo)
    cdef Py_ssize_t oh0 = 0, oh1, oh, r0, r1, ih, ow, hs, k_lo, k_hi, j0, i
    while oh0 < Ho:
        oh1 = _min(oh0 + band, Ho)
        r0 = _max(0, oh0 * sh - ph)  # input rows [r0, r1) in scratch rows 0, 1, ...
        r1 = _min(H, (oh1 - 1) * sh - ph + kh)
        if ow_lo < ow_hi:
            if flat:
                j0 = r0 * Wh + ow_lo  # window (ih, ow) is number ih * Wh + ow, at sw * it - pw
                _fold_taps(x + (j0 * sw - pw), hv + ow_lo, hp + ow_lo,
                           (r1 - 1) * Wh + ow_hi - j0, kw, sw, <pos_t>(j0 * sw - pw))
            else:
                for ih in range(r0, r1):
                    i = (ih - r0) * Wh + ow_lo
                    _fold_taps(x + (ih * W + ow_lo * sw - pw), hv + i, hp + i, ow_hi - ow_lo,
                               kw, sw, <pos_t>(ih * W + ow_lo * sw - pw))
        if ow_lo > 0 or ow_hi < Wo:
            for ih in range(r0, r1):
                i = (ih - r0) * Wh
                for ow in range(ow_lo):
                    _fold_clipped(x + ih * W, hv + i + ow, hp + i + ow, ow, W, kw, sw, pw,
                                  <pos_t>(ih * W))
                for ow in range(ow_hi, Wo):
                    _fold_clipped(x + ih * W, hv + i + ow, hp + i + ow, ow, W, kw, sw, pw,
                                  <pos_t>(ih * W))
        for oh in range(oh0, oh1):
            hs = oh * sh - ph
            k_lo = _max(0, -hs)  # the window's rows inside the plane
            k_hi = _min(kh, H - hs)
            i = (hs + k_lo - r0) * Wh
            # Wh >= Wo columns when they stay inside the plane: the extra ones spill into the
            # next rows, which are written afterwards, and a row of Wh is a vectorizable count
            _fold_rows(hv + i, hp + i, Wh, y + oh * Wo, idx + oh * Wo,
                       Wh if oh * Wo + Wh <= Ho * Wo else Wo, k_hi - k_lo)
        oh0 = oh1


cdef void avg_pool_plane(const floating* x, floating* y, bint backward,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad) noexcept nogil:
    # Forward: x is the (H, W) input plane and y the (Ho, Wo) output plane.
    # Backward: x is the (Ho, Wo) grad_output plane and y the (H, W) grad_input plane (zeroed).
    cdef Py_ssize_t oh, ow, hs, he, ws, we, ih, iw
    # sums run in double: a float32 window of huge values may overflow while its mean fits
    cdef double acc
    # and so do divisors: the product of two window lengths (each at most about 2**60, see
    # _INDEX_LIMIT in cnnext/_validation.py) overflows int64 (exact below 2**53)
    cdef double pool_size, divisor
    cdef floating g
    for oh in range(Ho):
        hs = oh * sh - ph
        he = _min(hs + kh, H + ph)
        for ow in range(Wo):
            ws = ow * sw - pw
            we = _min(ws + kw, W + pw)
            pool_size = <double>(he - hs) * <double>(we - ws)
            ih = _max(hs, 0)
            iw = _max(ws, 0)
            if count_include_pad:
                divisor = pool_size
            else:
                divisor = <double>(_min(he, H) - ih) * <double>(_min(we, W) - iw)
            if backward:
                if divisor <= 0:
                    continue
                # in double: the same correctly rounded quotient for float32 (double carries
                # more than twice float's precision), without float32's range limit
                g = <floating>(<double>x[oh * Wo + ow] / divisor)
                for ih in range(_max(hs, 0), _min(he, H)):
                    for iw in range(_max(ws, 0), _min(we, W)):
                        y[ih * W + iw] += g
            else:
                acc = 0
                for ih in range(_max(hs, 0), _min(he, H)):
                    for iw in range(_max(ws, 0), _min(we, W)):
                        acc = acc + x[ih * W + iw]
                y[oh * Wo + ow] = <floating>(acc / divisor) if divisor > 0 else 0


def max_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, int64_t[:, :, ::1] idx,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       int num_threads=1):
    """Max pooling of the (H, W) planes of x (planes, H, W) into y and idx (planes, Ho, Wo)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], t, tid
    # float32 kernels hold positions in int32 (see pos_t)
    cdef bint fits = floating is double or H * W <= INT32_MAX
    # the 2x2 fast path needs every window inside the plane (ceil_mode can add a partial one)
    cdef bint fast = (fits and kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0
                      and pw == 0 and dh == 1 and dw == 1 and 2 * Ho <= H and 2 * Wo <= W)
    cdef bint separable = fits and not fast and dh == 1 and dw == 1
    cdef Py_ssize_t band = 0, Wh = 0, rows
    cdef floating[:, ::1] hv
    cdef int32_t[:, ::1] hp32
    cdef int64_t[:, ::1] hp64
    if planes == 0 or Ho == 0 or Wo == 0:
        return
    num_threads = max(1, num_threads)
    if separable:  # per-thread scratch for the row results of a band of about 8192 windows
        Wh = W // sw if W % sw == 0 and W // sw >= Wo else Wo
        band = min(Ho, max(1, (8192 // Wh - kh) // sh + 1))
        if sh > kh:
            band = 1  # rows between windows: bands of one output row skip them
        rows = min(H, (band - 1) * sh + kh)  # input rows under a band (kh may exceed H)
        if floating is float:
            hv = np.empty((num_threads, rows * Wh), dtype=np.float32)
            hp32 = np.empty((num_threads, rows * Wh), dtype=np.int32)
        else:
            hv = np.empty((num_threads, rows * Wh), dtype=np.float64)
            hp64 = np.empty((num_threads, rows * Wh), dtype=np.int64)
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            if fast:
                if floating is float:
                    _max_pool_plane_2x2(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], <int32_t>W, Ho, Wo)
                else:
                    _max_pool_plane_2x2(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], <int64_t>W, Ho, Wo)
            elif separable:
                tid = threadid()
                if floating is float:
                    _max_pool_plane_separable(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0],
                                              H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, Wh, band,
                                              &hv[tid, 0], &hp32[tid, 0])
                else:
                    _max_pool_plane_separable(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0],
                                              H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, Wh, band,
                                              &hv[tid, 0], &hp64[tid, 0])
            else:
                max_pool_plane(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], H, W, Ho, Wo,
                               kh, kw, sh, sw, ph, pw, dh, dw)


cdef bint _unpool_plane_2x2(const floating* g, const int64_t* ix, floating* gx,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    # Backward when the outputs tile the plane in 2x2 blocks (Ho = H // 2, Wo = W // 2: 2x2
    # stride-2 pooling) and H*W fits in int32: if every index lies in its own block, each block
    # receives one gradient and every element of gx is written exactly once, zeros included, in
    # contiguous row streams. Returns False, with gx partly written, after the first row holding
    # an index outside its block; the caller then clears the plane and scatters (_scatter_plane).
    # A scatter-add into zeros stores 0 + g, which turns -0.0 into +0.0, so the same sum is
    # written here.
    # An index i is its block's start q plus d in {0, 1, W, W+1} exactly when its high 32 bits
    # are 0 and its low 32 bits minus q are d (mod 2**32, as q + d < 2**31): 32-bit lanes, which
    # SSE2 vectorizes, where 64-bit comparisons would not.
    cdef Py_ssize_t oh, ow, w
    cdef uint64_t i
    cdef int32_t q, d, w32 = <int32_t>W
    cdef int ok = 1
    cdef floating v, zero = 0
    cdef const floating* grow
    cdef const int64_t* irow
    cdef floating* r0
    cdef floating* r1
    for oh in range(Ho):
        grow = g + oh * Wo
        irow = ix + oh * Wo
        r0 = gx + 2 * oh * W
        r1 = r0 + W
        q = <int32_t>(2 * oh * W)
        for ow in range(Wo):
            i = <uint64_t>irow[ow]
            d = <int32_t>(<uint32_t>i - <uint32_t>(q + 2 * ow))
            ok &= ((d == 0) | (d == 1) | (d == w32) | (d == w32 + 1)) & (<uint32_t>(i >> 32) == 0)
            v = grow[ow] + zero
            r0[2 * ow] = _select(d == 0, v, zero)
            r0[2 * ow + 1] = _select(d == 1, v, zero)
            r1[2 * ow] = _select(d == w32, v, zero)
            r1[2 * ow + 1] = _select(d == w32 + 1, v, zero)
        if not ok:
            return False
        for w in range(2 * Wo, W):  # odd width: the last column belongs to no window
            r0[w] = 0
            r1[w] = 0
    if 2 * Ho < H:
        memset(gx + 2 * Ho * W, 0, (H - 2 * Ho) * W * sizeof(floating))
    return True


cdef Py_ssize_t _scatter_plane(const floating* g, const int64_t* ix, floating* gx,
                               Py_ssize_t P, Py_ssize_t HW, bint clear) noexcept nogil:
    # Add every gradient at its index into the plane, first zeroed here when `clear` (a small plane
    # is then in cache for the scatter); an index outside [0, HW) is counted and skipped.
    cdef Py_ssize_t p, bad = 0
    cdef int64_t j
    if clear:
        memset(gx, 0, HW * sizeof(floating))
    for p in range(P):
        j = ix[p]
        if <uint64_t>j >= <uint64_t>HW:
            bad += 1
        else:
            gx[j] += g[p]
    return bad


def max_pool2d_backward(const floating[:, ::1] gy, const int64_t[:, ::1] idx,
                        floating[:, ::1] gx, int num_threads=1, Py_ssize_t W=0, Py_ssize_t Wo=0,
                        bint zeroed=False):
    """Write into gx (planes, H*W) the scatter-add of gy (planes, Ho*Wo) at idx over zeros.

    gx's previous contents are ignored, unless ``zeroed`` says it already holds zeros (a calloc'd
    array stays untouched where no gradient lands). ``W`` and ``Wo``, the row lengths of the input
    and output planes, are optional: with them, planes whose indices all lie in their own 2x2
    block (2x2 stride-2 pooling) are written densely, zeros included. Returns the number of indices
    outside [0, H*W); those are skipped, never written.
    """
    cdef Py_ssize_t planes = gy.shape[0], P = gy.shape[1], HW = gx.shape[1]
    cdef Py_ssize_t t, bad = 0, H = 0, Ho = 0
    cdef bint blocks = False
    if planes == 0:
        return 0
    if W > 0 and Wo > 0 and HW % W == 0 and P % Wo == 0:
        H, Ho = HW // W, P // Wo
        blocks = Ho > 0 and Ho == H // 2 and Wo == W // 2 and HW <= INT32_MAX
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            if not (blocks and _unpool_plane_2x2(&gy[t, 0], &idx[t, 0], &gx[t, 0], H, W, Ho, Wo)):
                # a plane the dense path gave up on holds part of its writes: cleared in any case
                bad += _scatter_plane(&gy[t, 0], &idx[t, 0], &gx[t, 0], P, HW, blocks or not zeroed)
    return bad


def avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, int num_threads=1):
    """Average pooling of the planes of x (planes, H, W) into y (planes, Ho, Wo)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], t
    if planes == 0 or Ho == 0 or Wo == 0:
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            avg_pool_plane(&x[t, 0, 0], &y[t, 0, 0], False, H, W, Ho, Wo,
                           kh, kw, sh, sw, ph, pw, count_include_pad)


def avg_pool2d_backward(const floating[:, :, ::1] gy, floating[:, :, ::1] gx,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, int num_threads=1):
    """Spread gy (planes, Ho, Wo) back over the zeroed gx (planes, H, W)."""
    cdef Py_ssize_t planes = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], t
    if planes == 0 or Ho == 0 or Wo == 0 or H == 0 or W == 0:
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            avg_pool_plane(&gy[t, 0, 0], &gx[t, 0, 0], True, H, W, Ho, Wo,
                           kh, kw, sh, sw, ph, pw, count_include_pad)
