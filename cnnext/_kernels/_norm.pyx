# Design
# ------
# Batch normalisation over an input viewed as (N, C, S): S = L or H*W (1 for (N, C) input), channel
# c's M = N*S values being the N contiguous runs x[n, c, :]. Every kernel parallelises with
# `prange` over groups of channels: a thread owns whole channels, reduces them and writes their
# outputs, so no two threads touch the same data. Inside a group the runs are visited in memory
# order (n outer, channel inner: long contiguous spans, which the hardware prefetches well) and a
# second sweep goes backwards (the runs read last are the ones still in cache). A group holds as
# many channels as fit in GROUP_BYTES, at most C / num_threads; for S == 1 a group is a block of
# BLOCK channels, whose rows are contiguous. Whatever the grouping, each channel's sums see its
# runs in the order n = 0, 1, ..., so results are bitwise identical for every thread count.
#
# Every sum runs in double, in the fixed interleaved lanes of the C helpers in _norm.h, which the
# C compiler vectorises (a single running sum would be bound by the latency of one add per element,
# and the compiler may not reorder floating-point sums by itself); on x86-64 their AVX2 build is
# picked at import where the CPU has it, with the same results as the baseline build.
#
# Training forward: the batch statistics, then y = x * a + b with a = invstd * gamma and
# b = beta - mean * a (computed in double per channel; the elementwise work in the input's
# precision). Statistics, in double:
#  - runs of S >= RUN_MIN: two-pass per run (its sum, then the squared deviations from its own mean
#    while the run is in L1), runs merged in order with Chan et al.'s pairwise update
#    M2 += m2_run + delta**2 * n_a * n_b / (n_a + n_b): as exact as a two-pass over the channel,
#    with one sweep over memory instead of two.
#  - shorter runs: a corrected two-pass over the channel: mean = sum / M, then d = sum(x - mean)
#    and q = sum((x - mean)**2), var = (q - d*d/M) / M (d is the rounding error of the mean).
#  - S == 1: the same two-pass per block of channels, row by row.
# The kernel returns mean, biased var and invstd = 1 / sqrt(var + eps) (float64);
# cnnext/functional/normalization.py updates the running statistics from them (PyTorch's unbiased
# variance and momentum).
# Evaluation forward: y = x * scale + shift, per-channel scale and shift computed in Python from
# the running statistics.
# Backward, training: with xhat = (x - mean) * invstd, k = gamma * invstd,
#   sweep 1: g = sum(gy), gd = sum(gy * (x - mean))    (grad_bias = g, grad_weight = gd * invstd)
#   sweep 2: grad_input = k * (gy - g/M - xhat * gd*invstd/M)
#                       = k * gy + c1 * (x - mean) + c2, c1 = -k*invstd**2*gd/M, c2 = -k*g/M
# Backward, evaluation (mean and invstd from the running statistics, constants of the input):
#   one sweep: the same g and gd, and grad_input = k * gy.
# Arguments are validated in Python; arrays are C-contiguous, shapes consistent.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

cdef extern from "_norm.h" nogil:
    int cnx_norm_avx2
    int cnx_norm_init()
    void cnx_sum8_f(const float* x, Py_ssize_t n, double* acc)
    void cnx_sum8_d(const double* x, Py_ssize_t n, double* acc)
    void cnx_dev8_f(const float* x, Py_ssize_t n, double m, double* s, double* q)
    void cnx_dev8_d(const double* x, Py_ssize_t n, double m, double* s, double* q)
    void cnx_run_stats_f(const float* x, Py_ssize_t n, double* total, double* m2)
    void cnx_run_stats_d(const double* x, Py_ssize_t n, double* total, double* m2)
    void cnx_grad8_f(const float* gy, const float* x, Py_ssize_t n, double m, double* g, double* e)
    void cnx_grad8_d(const double* gy, const double* x, Py_ssize_t n, double m, double* g, double* e)
    void cnx_affine_f(const float* x, float* y, Py_ssize_t n, float a, float b)
    void cnx_affine_d(const double* x, double* y, Py_ssize_t n, double a, double b)
    void cnx_scale_f(const float* x, float* y, Py_ssize_t n, float a)
    void cnx_scale_d(const double* x, double* y, Py_ssize_t n, double a)
    void cnx_grad_input_f(const float* gy, const float* x, float* gx, Py_ssize_t n, float k,
                          float c1, float m, float c2)
    void cnx_grad_input_d(const double* gy, const double* x, double* gx, Py_ssize_t n, double k,
                          double c1, double m, double c2)
    void cnx_rows_sum_f(const float* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt, double* acc)
    void cnx_rows_sum_d(const double* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt, double* acc)
    void cnx_rows_dev_f(const float* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt,
                        const double* m, double* s, double* q)
    void cnx_rows_dev_d(const double* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt,
                        const double* m, double* s, double* q)
    void cnx_rows_grad_f(const float* gy, const float* x, Py_ssize_t N, Py_ssize_t ld,
                         Py_ssize_t cnt, const double* m, double* g, double* e)
    void cnx_rows_grad_d(const double* gy, const double* x, Py_ssize_t N, Py_ssize_t ld,
                         Py_ssize_t cnt, const double* m, double* g, double* e)

cnx_norm_init()  # pick the AVX2 or the baseline build of the loops once, at import


def simd_build():
    """Return 'avx2' or 'baseline': which build of the loops in _norm.h runs."""
    return "avx2" if cnx_norm_avx2 else "baseline"


def _use_avx2(bint flag):
    """Testing aid: run the AVX2 build (if the CPU has it) or the baseline one; returns the old
    setting. Both give bitwise identical results."""
    cdef bint old = cnx_norm_avx2
    global cnx_norm_avx2
    cnx_norm_avx2 = 1 if (flag and cnx_norm_init()) else 0
    return bool(old)


cdef enum:
    RUN_MIN = 32  # shortest run whose statistics are merged run by run
    BLOCK = 64    # channels per block when S == 1

cdef Py_ssize_t GROUP_BYTES = 2 * 1024 * 1024  # input bytes a group of channels reads per sweep


# ---- typed wrappers of the C helpers -----------------------------------------------------------

cdef inline void _sum8(const floating* x, Py_ssize_t n, double* acc) noexcept nogil:
    if floating is float:
        cnx_sum8_f(x, n, acc)
    else:
        cnx_sum8_d(x, n, acc)


cdef inline void _dev8(const floating* x, Py_ssize_t n, double m, double* s, double* q) noexcept nogil:
    if floating is float:
        cnx_dev8_f(x, n, m, s, q)
    else:
        cnx_dev8_d(x, n, m, s, q)


cdef inline void _run_stats(const floating* x, Py_ssize_t n, double* total, double* m2) noexcept nogil:
    if floating is float:
        cnx_run_stats_f(x, n, total, m2)
    else:
        cnx_run_stats_d(x, n, total, m2)


cdef inline void _grad8(const floating* gy, const floating* x, Py_ssize_t n, double m,
                        double* g, double* e) noexcept nogil:
    if floating is float:
        cnx_grad8_f(gy, x, n, m, g, e)
    else:
        cnx_grad8_d(gy, x, n, m, g, e)


cdef inline void _rows_sum(const floating* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt,
                           double* acc) noexcept nogil:
    if floating is float:
        cnx_rows_sum_f(x, N, ld, cnt, acc)
    else:
        cnx_rows_sum_d(x, N, ld, cnt, acc)


cdef inline void _rows_dev(const floating* x, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t cnt,
                           const double* m, double* s, double* q) noexcept nogil:
    if floating is float:
        cnx_rows_dev_f(x, N, ld, cnt, m, s, q)
    else:
        cnx_rows_dev_d(x, N, ld, cnt, m, s, q)


cdef inline void _rows_grad(const floating* gy, const floating* x, Py_ssize_t N, Py_ssize_t ld,
                            Py_ssize_t cnt, const double* m, double* g, double* e) noexcept nogil:
    if floating is float:
        cnx_rows_grad_f(gy, x, N, ld, cnt, m, g, e)
    else:
        cnx_rows_grad_d(gy, x, N, ld, cnt, m, g, e)


cdef inline double _combine8(const double* a) noexcept nogil:
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


cdef inline Py_ssize_t _min(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline void _affine(const floating* x, floating* y, Py_ssize_t n, floating a, floating b) noexcept nogil:
    if floating is float:
        cnx_affine_f(x, y, n, a, b)
    else:
        cnx_affine_d(x, y, n, a, b)


cdef inline void _scale(const floating* x, floating* y, Py_ssize_t n, floating a) noexcept nogil:
    if floating is float:
        cnx_scale_f(x, y, n, a)
    else:
        cnx_scale_d(x, y, n, a)


cdef inline void _grad_input(const floating* gy, const floating* x, floating* gx, Py_ssize_t n,
                             floating k, floating c1, floating m, floating c2) noexcept nogil:
    if floating is float:
        cnx_grad_input_f(gy, x, gx, n, k, c1, m, c2)
    else:
        cnx_grad_input_d(gy, x, gx, n, k, c1, m, c2)


# ---- a group of channels (S > 1) ----------------------------------------------------------------
# Channels c0 <= c < c1, visited run by run in memory order (n outer, c inner), so that memory is
# read in long contiguous spans; each channel's sums still see its runs in order n = 0, 1, ...
# `work` holds 16 doubles per channel (work + 16*c) for its running sums.

cdef void _train_group(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                       Py_ssize_t c0, Py_ssize_t c1, const double* w, const double* b, double eps,
                       double* mean, double* var, double* invstd, double* work) noexcept nogil:
    cdef Py_ssize_t n, c, l
    cdef double M = <double>(N * S), rs = 0, rm2 = 0, delta, d
    cdef double* acc
    if S >= RUN_MIN:  # two-pass per run, runs merged in order (Chan et al.)
        for n in range(N):
            for c in range(c0, c1):
                _run_stats(x + (n * C + c) * S, S, &rs, &rm2)
                acc = work + 16 * c
                if n == 0:
                    acc[0] = rs
                    acc[1] = rm2
                else:  # the run's S values join the first n runs' n*S
                    delta = rs / <double>S - acc[0] / <double>(n * S)
                    acc[1] = acc[1] + rm2 + delta * delta * (<double>S * <double>n / <double>(n + 1))
                    acc[0] = acc[0] + rs
        for c in range(c0, c1):
            mean[c] = work[16 * c] / M
            var[c] = work[16 * c + 1] / M
    else:  # corrected two-pass over the channel
        for c in range(c0, c1):
            for l in range(16):
                work[16 * c + l] = 0
        for n in range(N):
            for c in range(c0, c1):
                _sum8(x + (n * C + c) * S, S, work + 16 * c)
        for c in range(c0, c1):
            mean[c] = _combine8(work + 16 * c) / M
            for l in range(8):
                work[16 * c + l] = 0
        for n in range(N):
            for c in range(c0, c1):
                _dev8(x + (n * C + c) * S, S, mean[c], work + 16 * c, work + 16 * c + 8)
        for c in range(c0, c1):
            d = _combine8(work + 16 * c)
            d = (_combine8(work + 16 * c + 8) - d * d / M) / M
            var[c] = d if d > 0 else 0  # rounding only: q >= d*d/M exactly
    for c in range(c0, c1):
        invstd[c] = 1.0 / sqrt(var[c] + eps)
        work[16 * c] = invstd[c] * w[c]
        work[16 * c + 1] = b[c] - mean[c] * work[16 * c]
    for n in range(N - 1, -1, -1):  # last runs first: they are the ones still in cache
        for c in range(c0, c1):
            _affine(x + (n * C + c) * S, y + (n * C + c) * S, S, <floating>work[16 * c],
                    <floating>work[16 * c + 1])


cdef void _eval_group(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                      Py_ssize_t c0, Py_ssize_t c1, const double* scale,
                      const double* shift) noexcept nogil:
    cdef Py_ssize_t n, c
    for n in range(N):
        for c in range(c0, c1):
            _affine(x + (n * C + c) * S, y + (n * C + c) * S, S, <floating>scale[c],
                    <floating>shift[c])


cdef void _backward_group(const floating* gy, const floating* x, floating* gx, Py_ssize_t N,
                          Py_ssize_t C, Py_ssize_t S, Py_ssize_t c0, Py_ssize_t c1,
                          const double* w, const double* mean, const double* invstd,
                          bint training, bint need_input, double* gw, double* gb,
                          double* work) noexcept nogil:
    cdef Py_ssize_t n, c, l, off
    cdef double M = <double>(N * S), sg, sgd, k
    for c in range(c0, c1):
        for l in range(16):
            work[16 * c + l] = 0
    for n in range(N):
        for c in range(c0, c1):
            off = (n * C + c) * S
            _grad8(gy + off, x + off, S, mean[c], work + 16 * c, work + 16 * c + 8)
            if need_input and not training:  # the run is still in L1
                _scale(gy + off, gx + off, S, <floating>(w[c] * invstd[c]))
    for c in range(c0, c1):
        sg = _combine8(work + 16 * c)
        sgd = _combine8(work + 16 * c + 8)
        gb[c] = sg
        gw[c] = sgd * invstd[c]
        k = w[c] * invstd[c]
        work[16 * c] = k
        work[16 * c + 1] = -k * invstd[c] * invstd[c] * sgd / M
        work[16 * c + 2] = -k * sg / M
    if not (need_input and training):
        return
    for n in range(N - 1, -1, -1):  # last runs first: they are the ones still in cache
        for c in range(c0, c1):
            off = (n * C + c) * S
            _grad_input(gy + off, x + off, gx + off, S, <floating>work[16 * c],
                        <floating>work[16 * c + 1], <floating>mean[c], <floating>work[16 * c + 2])


cdef Py_ssize_t _group_size(Py_ssize_t C, Py_ssize_t channel_bytes, int num_threads) noexcept nogil:
    """Channels per group: as many as fit in GROUP_BYTES, at most C / num_threads (rounded up)."""
    cdef Py_ssize_t cg = GROUP_BYTES // channel_bytes if channel_bytes > 0 else C
    cdef Py_ssize_t share = (C + num_threads - 1) // num_threads
    if cg > share:
        cg = share
    return cg if cg > 1 else 1


# ---- a block of channels (S == 1) ----------------------------------------------------------------

cdef void _train_block(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t cnt,
                       const double* w, const double* b, double eps, double* mean, double* var,
                       double* invstd) noexcept nogil:
    # x, y, w, b and the outputs start at the block's first channel
    cdef double acc[BLOCK]
    cdef double q[BLOCK]
    cdef floating a[BLOCK]
    cdef floating c[BLOCK]
    cdef double M = <double>N, d, s
    cdef Py_ssize_t j, n
    cdef const floating* xr
    cdef floating* yr
    for j in range(cnt):
        acc[j] = 0
    _rows_sum(x, N, C, cnt, acc)
    for j in range(cnt):
        mean[j] = acc[j] / M
        acc[j] = 0
        q[j] = 0
    _rows_dev(x, N, C, cnt, mean, acc, q)
    for j in range(cnt):
        d = (q[j] - acc[j] * acc[j] / M) / M
        var[j] = d if d > 0 else 0
        invstd[j] = 1.0 / sqrt(var[j] + eps)
        s = invstd[j] * w[j]
        a[j] = <floating>s
        c[j] = <floating>(b[j] - mean[j] * s)
    for n in range(N):
        xr = x + n * C
        yr = y + n * C
        for j in range(cnt):
            yr[j] = xr[j] * a[j] + c[j]


cdef void _eval_block(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t cnt,
                      const double* scale, const double* shift) noexcept nogil:
    cdef floating a[BLOCK]
    cdef floating c[BLOCK]
    cdef Py_ssize_t j, n
    cdef const floating* xr
    cdef floating* yr
    for j in range(cnt):
        a[j] = <floating>scale[j]
        c[j] = <floating>shift[j]
    for n in range(N):
        xr = x + n * C
        yr = y + n * C
        for j in range(cnt):
            yr[j] = xr[j] * a[j] + c[j]


cdef void _backward_block(const floating* gy, const floating* x, floating* gx, Py_ssize_t N,
                          Py_ssize_t C, Py_ssize_t cnt, const double* w, const double* mean,
                          const double* invstd, bint training, bint need_input,
                          double* gw, double* gb) noexcept nogil:
    cdef double g[BLOCK]
    cdef double e[BLOCK]
    cdef floating k[BLOCK]
    cdef floating c1[BLOCK]
    cdef floating c2[BLOCK]
    cdef floating m[BLOCK]
    cdef double M = <double>N, kd
    cdef Py_ssize_t j, n
    cdef const floating* gyr
    cdef const floating* xr
    cdef floating* gxr
    for j in range(cnt):
        g[j] = 0
        e[j] = 0
    _rows_grad(gy, x, N, C, cnt, mean, g, e)
    for j in range(cnt):
        gb[j] = g[j]
        gw[j] = e[j] * invstd[j]
        kd = w[j] * invstd[j]
        k[j] = <floating>kd
        m[j] = <floating>mean[j]
        if training:
            c1[j] = <floating>(-kd * invstd[j] * invstd[j] * e[j] / M)
            c2[j] = <floating>(-kd * g[j] / M)
        else:
            c1[j] = 0
            c2[j] = 0
    if not need_input:
        return
    for n in range(N):
        gyr = gy + n * C
        xr = x + n * C
        gxr = gx + n * C
        if training:
            for j in range(cnt):
                gxr[j] = k[j] * gyr[j] + c1[j] * (xr[j] - m[j]) + c2[j]
        else:
            for j in range(cnt):
                gxr[j] = gyr[j] * k[j]


# ---- entry points --------------------------------------------------------------------------------

def batch_norm_train_forward(const floating[:, :, ::1] x, const double[::1] weight,
                             const double[::1] bias, floating[:, :, ::1] y, double[::1] mean,
                             double[::1] var, double[::1] invstd, double eps, int num_threads=1):
    """Normalise x (N, C, S) with its per-channel batch statistics into y; write mean, var, invstd."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], blk, c0, cg
    cdef double[:, ::1] work
    if N == 0 or C == 0 or S == 0:
        return
    num_threads = max(1, num_threads)
    if S == 1:
        with nogil:
            for blk in prange((C + BLOCK - 1) // BLOCK, schedule='static', num_threads=num_threads):
                c0 = blk * BLOCK
                _train_block(&x[0, c0, 0], &y[0, c0, 0], N, C, _min(BLOCK, C - c0), &weight[c0],
                             &bias[c0], eps, &mean[c0], &var[c0], &invstd[c0])
        return
    work = np.empty((C, 16))
    cg = _group_size(C, N * S * sizeof(floating), num_threads)
    with nogil:
        for blk in prange((C + cg - 1) // cg, schedule='static', num_threads=num_threads):
            c0 = blk * cg
            _train_group(&x[0, 0, 0], &y[0, 0, 0], N, C, S, c0, _min(C, c0 + cg), &weight[0],
                         &bias[0], eps, &mean[0], &var[0], &invstd[0], &work[0, 0])


def batch_norm_eval_forward(const floating[:, :, ::1] x, const double[::1] scale,
                            const double[::1] shift, floating[:, :, ::1] y, int num_threads=1):
    """y = x * scale + shift per channel, x and y (N, C, S)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], blk, c0, cg
    if N == 0 or C == 0 or S == 0:
        return
    num_threads = max(1, num_threads)
    with nogil:
        if S == 1:
            for blk in prange((C + BLOCK - 1) // BLOCK, schedule='static', num_threads=num_threads):
                c0 = blk * BLOCK
                _eval_block(&x[0, c0, 0], &y[0, c0, 0], N, C, _min(BLOCK, C - c0), &scale[c0],
                            &shift[c0])
        else:
            cg = _group_size(C, N * S * sizeof(floating), num_threads)
            for blk in prange((C + cg - 1) // cg, schedule='static', num_threads=num_threads):
                c0 = blk * cg
                _eval_group(&x[0, 0, 0], &y[0, 0, 0], N, C, S, c0, _min(C, c0 + cg), &scale[0],
                            &shift[0])


def batch_norm_backward(const floating[:, :, ::1] gy, const floating[:, :, ::1] x,
                        const double[::1] weight, const double[::1] mean, const double[::1] invstd,
                        floating[:, :, ::1] gx, double[::1] grad_weight, double[::1] grad_bias,
                        bint training, bint need_input=True, int num_threads=1):
    """Gradients of batch normalisation of x (N, C, S): gx (unless not need_input), grad_weight,
    grad_bias (C,). mean and invstd are the statistics the forward normalised with."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], blk, c0, cg
    cdef double[:, ::1] work
    cdef floating* gxp = NULL
    if C == 0:
        return
    if N == 0 or S == 0:
        grad_weight[:] = 0
        grad_bias[:] = 0
        return
    num_threads = max(1, num_threads)
    if need_input:
        gxp = &gx[0, 0, 0]
    if S == 1:
        with nogil:
            for blk in prange((C + BLOCK - 1) // BLOCK, schedule='static', num_threads=num_threads):
                c0 = blk * BLOCK
                _backward_block(&gy[0, c0, 0], &x[0, c0, 0], gxp + c0 if need_input else NULL,
                                N, C, _min(BLOCK, C - c0), &weight[c0], &mean[c0], &invstd[c0],
                                training, need_input, &grad_weight[c0], &grad_bias[c0])
        return
    work = np.empty((C, 16))
    cg = _group_size(C, 2 * N * S * sizeof(floating), num_threads)
    with nogil:
        for blk in prange((C + cg - 1) // cg, schedule='static', num_threads=num_threads):
            c0 = blk * cg
            _backward_group(&gy[0, 0, 0], &x[0, 0, 0], gxp, N, C, S, c0, _min(C, c0 + cg),
                            &weight[0], &mean[0], &invstd[0], training, need_input,
                            &grad_weight[0], &grad_bias[0], &work[0, 0])
