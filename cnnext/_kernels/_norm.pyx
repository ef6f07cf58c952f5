# Design
# ------
# Batch normalisation over an input viewed as (N, C, S): S = L or H*W (1 for (N, C) input), channel
# c's M = N*S values being the N contiguous runs x[n, c, :]. Every kernel parallelises over the C
# channels with `prange`: a thread owns whole channels, reduces them and writes their outputs, so
# no two threads touch the same data and the results are bitwise identical for every thread count
# (a channel's sums are always added in the same order, whichever thread computes them).
#
# Sums run in double, in fixed interleaved lanes (lane l adds elements l, l+LANES, ... of each run,
# the lanes are combined in one fixed order at the end). The lanes are independent chains, which
# the C compiler keeps in vector registers; a single running sum would be bound by the latency of
# one add per element, and the compiler may not reorder floating-point sums by itself.
#
# Training forward, one channel at a time (its data stays in L2 between the sweeps):
#   1. mean = sum(x) / M
#   2. d = sum(x - mean), q = sum((x - mean)**2): the biased variance (q - d*d/M) / M ("corrected
#      two-pass": d is the rounding error of the mean, about 0), invstd = 1 / sqrt(var + eps)
#   3. y = x * a + b, a = invstd * gamma, b = beta - mean * a (a and b computed in double, the
#      elementwise work in the input's precision)
# The kernel returns mean, var and invstd (float64); cnnext/functional/normalization.py updates the
# running statistics from them (PyTorch's unbiased variance and momentum).
# Evaluation forward: y = x * scale + shift with per-channel scale and shift computed in Python
# from the running statistics.
# Backward, training: with xhat = (x - mean) * invstd, k = gamma * invstd,
#   sweep 1: g = sum(gy), gd = sum(gy * (x - mean))    (grad_bias = g, grad_weight = gd * invstd)
#   sweep 2: grad_input = k * (gy - g/M - xhat * gd*invstd/M)
#                       = k * gy + c1 * (x - mean) + c2, c1 = -k*invstd**2*gd/M, c2 = -k*g/M
# Backward, evaluation (mean and invstd from the running statistics, constants of the input):
#   one sweep: the same g and gd, and grad_input = k * gy.
# Arguments are validated in Python; arrays are C-contiguous, shapes consistent, M >= 1.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt


cdef inline void _sum8(const floating* x, Py_ssize_t n, double* acc) noexcept nogil:
    # acc[0:8] += x[i] for i = l (mod 8) in lane l (the tail goes to lanes 0..n%8-1)
    cdef double a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3]
    cdef double a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7]
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        a0 = a0 + <double>x[i]
        a1 = a1 + <double>x[i + 1]
        a2 = a2 + <double>x[i + 2]
        a3 = a3 + <double>x[i + 3]
        a4 = a4 + <double>x[i + 4]
        a5 = a5 + <double>x[i + 5]
        a6 = a6 + <double>x[i + 6]
        a7 = a7 + <double>x[i + 7]
        i = i + 8
    if i < n:
        a0 = a0 + <double>x[i]
    if i + 1 < n:
        a1 = a1 + <double>x[i + 1]
    if i + 2 < n:
        a2 = a2 + <double>x[i + 2]
    if i + 3 < n:
        a3 = a3 + <double>x[i + 3]
    if i + 4 < n:
        a4 = a4 + <double>x[i + 4]
    if i + 5 < n:
        a5 = a5 + <double>x[i + 5]
    if i + 6 < n:
        a6 = a6 + <double>x[i + 6]
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    acc[4] = a4
    acc[5] = a5
    acc[6] = a6
    acc[7] = a7


cdef inline void _dev4(const floating* x, Py_ssize_t n, double m, double* s, double* q) noexcept nogil:
    # s[0:4] += x - m and q[0:4] += (x - m)**2, in 4 lanes each
    cdef double s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3]
    cdef double q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3]
    cdef double d0, d1, d2, d3
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        d0 = <double>x[i] - m
        d1 = <double>x[i + 1] - m
        d2 = <double>x[i + 2] - m
        d3 = <double>x[i + 3] - m
        s0 = s0 + d0
        s1 = s1 + d1
        s2 = s2 + d2
        s3 = s3 + d3
        q0 = q0 + d0 * d0
        q1 = q1 + d1 * d1
        q2 = q2 + d2 * d2
        q3 = q3 + d3 * d3
        i = i + 4
    if i < n:
        d0 = <double>x[i] - m
        s0 = s0 + d0
        q0 = q0 + d0 * d0
    if i + 1 < n:
        d1 = <double>x[i + 1] - m
        s1 = s1 + d1
        q1 = q1 + d1 * d1
    if i + 2 < n:
        d2 = <double>x[i + 2] - m
        s2 = s2 + d2
        q2 = q2 + d2 * d2
    s[0] = s0
    s[1] = s1
    s[2] = s2
    s[3] = s3
    q[0] = q0
    q[1] = q1
    q[2] = q2
    q[3] = q3


cdef inline void _grad_sums4(const floating* gy, const floating* x, Py_ssize_t n, double m,
                             double* g, double* gd) noexcept nogil:
    # g[0:4] += gy and gd[0:4] += gy * (x - m), in 4 lanes each
    cdef double g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3]
    cdef double e0 = gd[0], e1 = gd[1], e2 = gd[2], e3 = gd[3]
    cdef double v0, v1, v2, v3
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        v0 = <double>gy[i]
        v1 = <double>gy[i + 1]
        v2 = <double>gy[i + 2]
        v3 = <double>gy[i + 3]
        g0 = g0 + v0
        g1 = g1 + v1
        g2 = g2 + v2
        g3 = g3 + v3
        e0 = e0 + v0 * (<double>x[i] - m)
        e1 = e1 + v1 * (<double>x[i + 1] - m)
        e2 = e2 + v2 * (<double>x[i + 2] - m)
        e3 = e3 + v3 * (<double>x[i + 3] - m)
        i = i + 4
    if i < n:
        g0 = g0 + <double>gy[i]
        e0 = e0 + <double>gy[i] * (<double>x[i] - m)
    if i + 1 < n:
        g1 = g1 + <double>gy[i + 1]
        e1 = e1 + <double>gy[i + 1] * (<double>x[i + 1] - m)
    if i + 2 < n:
        g2 = g2 + <double>gy[i + 2]
        e2 = e2 + <double>gy[i + 2] * (<double>x[i + 2] - m)
    g[0] = g0
    g[1] = g1
    g[2] = g2
    g[3] = g3
    gd[0] = e0
    gd[1] = e1
    gd[2] = e2
    gd[3] = e3


cdef inline double _combine8(const double* a) noexcept nogil:
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


cdef inline double _combine4(const double* a) noexcept nogil:
    return (a[0] + a[1]) + (a[2] + a[3])


cdef inline void _affine(const floating* x, floating* y, Py_ssize_t n, floating a, floating b) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = x[i] * a + b


cdef void _train_channel(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t S,
                         Py_ssize_t stride, double w, double b, double eps,
                         double* mean_out, double* var_out, double* invstd_out) noexcept nogil:
    cdef double acc[8]
    cdef double q[4]
    cdef double M = <double>(N * S), mean, var, invstd, a, c
    cdef Py_ssize_t n, l
    for l in range(8):
        acc[l] = 0
    for n in range(N):
        _sum8(x + n * stride, S, acc)
    mean = _combine8(acc) / M
    for l in range(4):
        acc[l] = 0
        q[l] = 0
    for n in range(N):
        _dev4(x + n * stride, S, mean, acc, q)
    a = _combine4(acc)
    var = (_combine4(q) - a * a / M) / M
    if var < 0:  # rounding only: q >= d*d/M exactly
        var = 0
    invstd = 1.0 / sqrt(var + eps)
    mean_out[0] = mean
    var_out[0] = var
    invstd_out[0] = invstd
    a = invstd * w
    c = b - mean * a
    for n in range(N):
        _affine(x + n * stride, y + n * stride, S, <floating>a, <floating>c)


def batch_norm_train_forward(const floating[:, :, ::1] x, const double[::1] weight,
                             const double[::1] bias, floating[:, :, ::1] y, double[::1] mean,
                             double[::1] var, double[::1] invstd, double eps, int num_threads=1):
    """Normalise x (N, C, S) with its per-channel batch statistics into y; write mean, var, invstd."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    if N == 0 or C == 0 or S == 0:
        return
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            _train_channel(&x[0, c, 0], &y[0, c, 0], N, S, C * S, weight[c], bias[c], eps,
                           &mean[c], &var[c], &invstd[c])


def batch_norm_eval_forward(const floating[:, :, ::1] x, const double[::1] scale,
                            const double[::1] shift, floating[:, :, ::1] y, int num_threads=1):
    """y = x * scale + shift per channel, x and y (N, C, S)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c, n
    if N == 0 or C == 0 or S == 0:
        return
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            for n in range(N):
                _affine(&x[n, c, 0], &y[n, c, 0], S, <floating>scale[c], <floating>shift[c])


cdef void _backward_channel(const floating* gy, const floating* x, floating* gx, Py_ssize_t N,
                            Py_ssize_t S, Py_ssize_t stride, double w, double mean, double invstd,
                            bint training, bint need_input, double* gw_out, double* gb_out) noexcept nogil:
    cdef double g[4]
    cdef double gd[4]
    cdef double M = <double>(N * S), sg, sgd, k, c1, c2
    cdef floating kf, c1f, c2f, mf
    cdef Py_ssize_t n, i, l
    cdef const floating* gyr
    cdef const floating* xr
    cdef floating* gxr
    for l in range(4):
        g[l] = 0
        gd[l] = 0
    k = w * invstd
    kf = <floating>k
    for n in range(N):
        _grad_sums4(gy + n * stride, x + n * stride, S, mean, g, gd)
        if need_input and not training:  # the run is still in L1
            gyr = gy + n * stride
            gxr = gx + n * stride
            for i in range(S):
                gxr[i] = gyr[i] * kf
    sg = _combine4(g)
    sgd = _combine4(gd)
    gb_out[0] = sg
    gw_out[0] = sgd * invstd
    if not (need_input and training):
        return
    c1 = -k * invstd * invstd * sgd / M
    c2 = -k * sg / M
    c1f = <floating>c1
    c2f = <floating>c2
    mf = <floating>mean
    for n in range(N):
        gyr = gy + n * stride
        xr = x + n * stride
        gxr = gx + n * stride
        for i in range(S):
            gxr[i] = kf * gyr[i] + c1f * (xr[i] - mf) + c2f


def batch_norm_backward(const floating[:, :, ::1] gy, const floating[:, :, ::1] x,
                        const double[::1] weight, const double[::1] mean, const double[::1] invstd,
                        floating[:, :, ::1] gx, double[::1] grad_weight, double[::1] grad_bias,
                        bint training, bint need_input=True, int num_threads=1):
    """Gradients of batch normalisation of x (N, C, S): gx (unless not need_input), grad_weight,
    grad_bias (C,). mean and invstd are the statistics the forward normalised with."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], c
    if C == 0:
        return
    if N == 0 or S == 0:
        grad_weight[:] = 0
        grad_bias[:] = 0
        return
    with nogil:
        for c in prange(C, schedule='static', num_threads=num_threads):
            _backward_channel(&gy[0, c, 0], &x[0, c, 0], &gx[0, c, 0] if need_input else NULL,
                              N, S, C * S, weight[c], mean[c], invstd[c], training, need_input,
                              &grad_weight[c], &grad_bias[c])
