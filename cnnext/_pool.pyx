# Design
# ------
# Pooling is memory-bound, so every kernel makes one pass over its data and parallelises over the
# N*C independent (H, W) planes with `prange`: no two threads ever touch the same plane, so there are
# no races and the result is bitwise identical for every thread count.
#
# Max pooling follows PyTorch exactly: padding counts as -inf, the window is scanned row by row and an
# element replaces the running maximum when it is greater or NaN (so NaN propagates), the stored
# index is the flat position h*W + w inside the plane, and a window of -inf keeps its first valid
# position. Forward stores the argmax so backward is a scatter-add (correct for overlapping windows).
# 2x2 stride-2 and 3x3 windows without padding or dilation take unrolled fast paths with the same
# comparisons in the same order. When the indices tile the input in 2x2 blocks (2x2 stride-2
# pooling), backward writes each plane densely in one pass, zeros included; otherwise it zeroes
# the plane in cache and scatters into it.
#
# Average pooling follows PyTorch's divisor rule: with count_include_pad the divisor is the window
# clipped to the padded input, otherwise the number of real input elements in the window. Window
# sums are accumulated in double, so float32 input whose mean fits never overflows.
#
# max_pool2d_backward trusts nothing about `indices`: an index outside [0, H*W) is never used and the
# kernel reports it, and cnnext/functional.py raises ValueError.
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t, INT32_MAX
from libc.math cimport INFINITY
from libc.string cimport memset

from cnnext._indexing cimport ceil_div, end_valid, first_valid


cdef extern from *:
    """
    #include <stdint.h>
    /* Branch-free selects (take ? a : b). The C compiler turns a plain ternary on a float
       comparison into a branch, which mispredicts on real data; blending bit patterns cannot. */
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
    """
    float cnx_select_f(int take, float a, float b) noexcept nogil
    double cnx_select_d(int take, double a, double b) noexcept nogil
    Py_ssize_t cnx_select_i(int take, Py_ssize_t a, Py_ssize_t b) noexcept nogil


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
                src = x + ih * W + off
                for ow in range(lo, hi):
                    v = src[ow * sw]
                    take = (v > yrow[ow]) | (v != v)
                    yrow[ow] = _select(take, v, yrow[ow])
                    irow[ow] = cnx_select_i(take, ih * W + ow * sw + off, irow[ow])


cdef inline void _max_pool_plane_2x2(const floating* x, floating* y, int64_t* idx,
                                     Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    # 2x2 windows, stride 2, no padding, no dilation: every window lies inside the plane. The four
    # taps are compared in scan order (top-left, top-right, bottom-left, bottom-right) with the same
    # rule as the general path, branch-free; the first tap always starts the maximum.
    cdef Py_ssize_t oh, ow
    cdef const floating* r0
    cdef const floating* r1
    cdef floating a, b, c, d, m
    cdef Py_ssize_t off
    cdef int take
    for oh in range(Ho):
        r0 = x + 2 * oh * W
        r1 = r0 + W
        for ow in range(Wo):
            a = r0[2 * ow]
            b = r0[2 * ow + 1]
            c = r1[2 * ow]
            d = r1[2 * ow + 1]
            m = a
            off = 0
            take = (b > m) | (b != b)
            m = _select(take, b, m)
            off = cnx_select_i(take, 1, off)
            take = (c > m) | (c != c)
            m = _select(take, c, m)
            off = cnx_select_i(take, W, off)
            take = (d > m) | (d != d)
            m = _select(take, d, m)
            off = cnx_select_i(take, W + 1, off)
            y[oh * Wo + ow] = m
            idx[oh * Wo + ow] = 2 * oh * W + 2 * ow + off


cdef inline void _later(floating* m, Py_ssize_t* at, floating v, Py_ssize_t pos) noexcept nogil:
    # Fold the later element (v, pos) into the earlier result (m, at) with the scan-order rule:
    # the later one wins when it is greater or NaN. The rule is associative, so a window's taps
    # can be folded as a tree (shorter dependency chains) with the same result as the scan.
    cdef int take = (v > m[0]) | (v != v)
    m[0] = _select(take, v, m[0])
    at[0] = cnx_select_i(take, pos, at[0])


cdef inline void _max_pool_plane_3x3(const floating* x, floating* y, int64_t* idx,
                                     Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                                     Py_ssize_t sh, Py_ssize_t sw) noexcept nogil:
    # 3x3 windows, any stride, no padding, no dilation, every window inside the plane: each row
    # of the window is folded left to right, then the three rows top to bottom (see _later).
    cdef Py_ssize_t oh, ow, base, a0, a1, a2
    cdef const floating* p
    cdef floating m0, m1, m2
    for oh in range(Ho):
        for ow in range(Wo):
            base = oh * sh * W + ow * sw
            p = x + base
            m0 = p[0]
            a0 = 0
            _later(&m0, &a0, p[1], 1)
            _later(&m0, &a0, p[2], 2)
            m1 = p[W]
            a1 = W
            _later(&m1, &a1, p[W + 1], W + 1)
            _later(&m1, &a1, p[W + 2], W + 2)
            m2 = p[2 * W]
            a2 = 2 * W
            _later(&m2, &a2, p[2 * W + 1], 2 * W + 1)
            _later(&m2, &a2, p[2 * W + 2], 2 * W + 2)
            _later(&m0, &a0, m1, a1)
            _later(&m0, &a0, m2, a2)
            y[oh * Wo + ow] = m0
            idx[oh * Wo + ow] = base + a0


cdef void avg_pool_plane(const floating* x, floating* y, bint backward,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad) noexcept nogil:
    # Forward: x is the (H, W) input plane and y the (Ho, Wo) output plane.
    # Backward: x is the (Ho, Wo) grad_output plane and y the (H, W) grad_input plane (zeroed).
    cdef Py_ssize_t oh, ow, hs, he, ws, we, ih, iw, pool_size, divisor
    # sums run in double: a float32 window of huge values may overflow while its mean fits
    cdef double acc
    cdef floating g
    for oh in range(Ho):
        hs = oh * sh - ph
        he = _min(hs + kh, H + ph)
        for ow in range(Wo):
            ws = ow * sw - pw
            we = _min(ws + kw, W + pw)
            pool_size = (he - hs) * (we - ws)
            ih = _max(hs, 0)
            iw = _max(ws, 0)
            if count_include_pad:
                divisor = pool_size
            else:
                divisor = (_min(he, H) - ih) * (_min(we, W) - iw)
            if backward:
                if divisor <= 0:
                    continue
                g = x[oh * Wo + ow] / <floating>divisor
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
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], t
    # the fast paths need every window inside the plane (ceil_mode can add a partial last window)
    cdef bint inside = (ph == 0 and pw == 0 and dh == 1 and dw == 1
                        and (Ho - 1) * sh + kh <= H and (Wo - 1) * sw + kw <= W)
    cdef bint fast = inside and kh == 2 and kw == 2 and sh == 2 and sw == 2
    cdef bint fast3 = inside and kh == 3 and kw == 3
    if planes == 0 or Ho == 0 or Wo == 0:
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            if fast:
                _max_pool_plane_2x2(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], W, Ho, Wo)
            elif fast3:
                _max_pool_plane_3x3(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], W, Ho, Wo, sh, sw)
            else:
                max_pool_plane(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], H, W, Ho, Wo,
                               kh, kw, sh, sw, ph, pw, dh, dw)


cdef bint _unpool_plane_2x2(const floating* g, const int64_t* ix, floating* gx,
                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    # Backward when the outputs tile the plane in 2x2 blocks (2x2 stride-2 pooling without
    # padding) and H*W fits in int32: if every index lies in its own block, each block receives
    # one gradient and every element of gx is written exactly once, zeros included, in contiguous
    # row streams. Returns False, with gx partly written, after the first row holding an index
    # outside its block; the caller then redoes the plane with _scatter_plane. A scatter-add into
    # zeros stores 0 + g, which turns -0.0 into +0.0, so the same sum is written here.
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
                               Py_ssize_t P, Py_ssize_t HW) noexcept nogil:
    # Zero the plane (it is then in cache) and add every gradient at its index; an index outside
    # [0, HW) is counted and skipped.
    cdef Py_ssize_t p, bad = 0
    cdef int64_t j
    memset(gx, 0, HW * sizeof(floating))
    for p in range(P):
        j = ix[p]
        if <uint64_t>j >= <uint64_t>HW:
            bad += 1
        else:
            gx[j] += g[p]
    return bad


def max_pool2d_backward(const floating[:, ::1] gy, const int64_t[:, ::1] idx,
                        floating[:, ::1] gx, int num_threads=1, Py_ssize_t W=0, Py_ssize_t Wo=0):
    """Write into gx (planes, H*W) the scatter-add of gy (planes, Ho*Wo) at idx over zeros.

    gx's previous contents are ignored. ``W`` and ``Wo``, the row lengths of the input and output
    planes, are optional: with them, planes whose indices all lie in their own 2x2 block (2x2
    stride-2 pooling) take a dense path. Returns the number of indices outside [0, H*W); those
    are skipped, never written.
    """
    cdef Py_ssize_t planes = gy.shape[0], P = gy.shape[1], HW = gx.shape[1]
    cdef Py_ssize_t t, bad = 0, H = 0, Ho = 0
    cdef bint blocks = False
    if planes == 0 or HW == 0:
        return 0
    if W > 0 and Wo > 0 and HW % W == 0 and P % Wo == 0:
        H, Ho = HW // W, P // Wo
        blocks = Ho > 0 and 2 * Ho <= H and 2 * Wo <= W and HW <= INT32_MAX
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            if not (blocks and _unpool_plane_2x2(&gy[t, 0], &idx[t, 0], &gx[t, 0], H, W, Ho, Wo)):
                bad += _scatter_plane(&gy[t, 0], &idx[t, 0], &gx[t, 0], P, HW)
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
