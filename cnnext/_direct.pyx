# Design
# ------
# Direct convolution, for the shapes where im2col + GEMM wastes its time moving memory: few output
# channels per group (LeNet's first layers, depthwise and other grouped convolutions). Each kernel
# walks the filter taps and, for each tap, sweeps a whole output row with a contiguous inner loop
# that the C compiler vectorises (stride 1) while the input plane stays in L1/L2 cache.
#
#   forward      prange over (sample, filter) output planes
#   grad_input   prange over (sample, channel) input planes
#   grad_weight  prange over (filter, channel) weight slices; each tap's sum over the batch is kept
#                per output column in a private row buffer (vectorisable without reassociating a
#                scalar sum), then reduced in a fixed order
#
# Every thread writes only its own planes, and every sum runs in the same order for any thread
# count, so results are bitwise identical whatever `num_threads` is. Arguments are validated in
# Python (cnnext/_validation.py); the loops run unchecked under `nogil`.
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset

from cnnext._indexing cimport end_valid, first_valid
from cnnext._openmp_helpers cimport omp_get_thread_num


def direct_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   floating[:, :, :, ::1] y, const floating[::1] bias, bint has_bias,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                   Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int num_threads=1):
    """y[n, k] = bias[k] + sum over the group's channels and taps of w * shifted x[n, c]."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = w.shape[0], Cg = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t Ho = y.shape[2], Wo = y.shape[3], Kg = K // groups
    cdef Py_ssize_t t, n, k, cg, c, ki, kj, oh, ow, ih, lo, hi, off, p
    cdef floating wv, b
    cdef floating* dst
    cdef const floating* src
    if N == 0 or K == 0 or Ho == 0 or Wo == 0:
        return
    with nogil:
        for t in prange(N * K, schedule='static', num_threads=num_threads):
            n = t // K
            k = t % K
            dst = &y[n, k, 0, 0]
            b = bias[k] if has_bias else 0
            for p in range(Ho * Wo):
                dst[p] = b
            for cg in range(Cg):
                c = (k // Kg) * Cg + cg
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
                            src = &x[n, c, ih, 0] + off
                            if sw == 1:
                                for ow in range(lo, hi):
                                    dst[oh * Wo + ow] += wv * src[ow]
                            else:
                                for ow in range(lo, hi):
                                    dst[oh * Wo + ow] += wv * src[ow * sw]


def direct_grad_input(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] w,
                      floating[:, :, :, ::1] gx,
                      Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                      Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int num_threads=1):
    """gx[n, c] (zeroed by the caller) += every tap's weight times the shifted gy[n, k]."""
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


def direct_grad_weight(const floating[:, :, :, ::1] gy, const floating[:, :, :, ::1] x,
                       floating[:, :, :, ::1] gw, floating[:, ::1] scratch,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups, int num_threads=1):
    """gw[k, cg, ki, kj] = sum over samples and output pixels of gy[n, k] * shifted x[n, c].

    scratch has shape (num_threads, Wo + 1): one private row of partial sums per thread.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = gw.shape[0], Cg = gw.shape[1], kh = gw.shape[2], kw = gw.shape[3]
    cdef Py_ssize_t Ho = gy.shape[2], Wo = gy.shape[3], Kg = K // groups
    cdef Py_ssize_t t, n, k, cg, c, ki, kj, oh, ow, ih, lo, hi, off
    cdef floating* acc
    cdef floating total
    cdef const floating* src
    cdef const floating* g
    if K == 0 or Cg == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        acc = &scratch[omp_get_thread_num(), 0]
        for t in prange(K * Cg, schedule='static'):
            k = t // Cg
            cg = t % Cg
            c = (k // Kg) * Cg + cg
            for ki in range(kh):
                for kj in range(kw):
                    off = kj * dw - pl
                    lo = first_valid(off, sw, Wo)
                    hi = end_valid(off, W, sw, Wo, lo)
                    memset(acc, 0, (Wo + 1) * sizeof(floating))
                    for n in range(N):
                        for oh in range(Ho):
                            ih = oh * sh - pt + ki * dh
                            if ih < 0 or ih >= H:
                                continue
                            src = &x[n, c, ih, 0] + off
                            g = &gy[n, k, oh, 0]
                            if sw == 1:
                                for ow in range(lo, hi):
                                    acc[ow] += g[ow] * src[ow]
                            else:
                                for ow in range(lo, hi):
                                    acc[ow] += g[ow] * src[ow * sw]
                    total = 0
                    for ow in range(Wo):
                        total = total + acc[ow]
                    gw[k, cg, ki, kj] = total
