# Design
# ------
# Convolution as GEMM. For a chunk of `nc` samples starting at sample `n0`, `im2col` writes the
# column matrix cols[(c*kh + ki)*kw + kj, n*P + p] (P = Ho*Wo output pixels per sample): one row per
# filter tap, one column per output pixel of the chunk. The forward pass is then a single BLAS GEMM
# W(K, C*kh*kw) @ cols -> (K, nc*P) done by numpy in cnnext/functional/_conv_dispatch.py, and `gemm_to_nchw` moves
# that result into the NCHW output while adding the bias. Backward runs the same layout the other way:
# `nchw_to_gemm` gathers grad_output into (K, nc*P), numpy computes dW = dY @ cols.T and
# dcols = W.T @ dY, and `col2im` scatters dcols back into grad_input.
#
# Conventions: inputs are C-contiguous and validated in Python (cnnext/_validation.py) before they
# get here, so the loops run unchecked under `nogil`. Read-only inputs are `const`. Every index is a
# Py_ssize_t. Padding may be asymmetric: only the top/left pads are needed, the output size fixes the
# rest. Work is split with `prange` so that no two threads ever write the same element: im2col over
# rows of cols, col2im over (sample, channel) planes, the layout copies over (sample, filter) rows.
# Each output element is computed by the same sequence of operations whatever the thread count, so
# results are bitwise identical for every `num_threads`.
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cnnext._kernels._indexing cimport end_valid, first_valid


cdef void im2col_row(const floating* x, floating* out, Py_ssize_t nc, Py_ssize_t C,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t c, Py_ssize_t ki, Py_ssize_t kj,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                     Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Fill one row of cols (filter tap c, ki, kj) for nc samples starting at x."""
    cdef Py_ssize_t n, oh, ow, ih, lo, hi
    cdef Py_ssize_t off = kj * dw - pl
    cdef const floating* plane
    cdef const floating* src
    cdef floating* dst
    lo = first_valid(off, sw, Wo)
    hi = end_valid(off, W, sw, Wo, lo)
    for n in range(nc):
        plane = x + (n * C + c) * H * W
        for oh in range(Ho):
            dst = out + (n * Ho + oh) * Wo
            ih = oh * sh - pt + ki * dh
            if ih < 0 or ih >= H:
                for ow in range(Wo):
                    dst[ow] = 0
                continue
            # the row itself, indexed by off + ow * sw (in [0, W) for ow in [lo, hi)): a pointer
            # row + off would point outside the array when off is negative (UB, and with a
            # padding of 2**59 it wraps around the address space)
            src = plane + ih * W
            # plain loops, not memcpy/memset: rows are often short (8-16 values), where a library
            # call per row costs more than the copy (benchmarks/README.md, "Design measurements")
            for ow in range(lo):
                dst[ow] = 0
            if sw == 1:
                for ow in range(lo, hi):
                    dst[ow] = src[off + ow]
            else:
                for ow in range(lo, hi):
                    dst[ow] = src[off + ow * sw]
            for ow in range(hi, Wo):
                dst[ow] = 0


cdef void col2im_plane(const floating* cols, floating* dx, Py_ssize_t ncols, Py_ssize_t n,
                       Py_ssize_t c, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Accumulate every tap's column entries of sample n into the (H, W) plane dx of channel c."""
    cdef Py_ssize_t ki, kj, oh, ow, ih, lo, hi, off
    cdef const floating* src
    cdef floating* dst
    for ki in range(kh):
        for kj in range(kw):
            off = kj * dw - pl
            lo = first_valid(off, sw, Wo)
            hi = end_valid(off, W, sw, Wo, lo)
            src = cols + ((c * kh + ki) * kw + kj) * ncols + n * Ho * Wo
            for oh in range(Ho):
                ih = oh * sh - pt + ki * dh
                if ih < 0 or ih >= H:
                    continue
                dst = dx + ih * W  # indexed by off + ow * sw, in range (see im2col_row)
                if sw == 1:
                    for ow in range(lo, hi):
                        dst[off + ow] += src[oh * Wo + ow]
                else:
                    for ow in range(lo, hi):
                        dst[off + ow * sw] += src[oh * Wo + ow]


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t n0,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads=1):
    """Write the column matrix of samples x[n0:n0+nc] into cols, shape (C*kh*kw, nc*Ho*Wo)."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t rows = cols.shape[0], ncols = cols.shape[1]
    cdef Py_ssize_t nc, r, c, ki, kj
    if rows == 0 or ncols == 0:
        return
    nc = ncols // (Ho * Wo)
    with nogil:
        for r in prange(rows, schedule='static', num_threads=num_threads):
            c = r // (kh * kw)
            ki = (r // kw) % kh
            kj = r % kw
            im2col_row(&x[n0, 0, 0, 0], &cols[r, 0], nc, C, H, W, c, ki, kj,
                       sh, sw, pt, pl, dh, dw, Ho, Wo)


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, Py_ssize_t n0,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t Ho, Py_ssize_t Wo, int num_threads=1):
    """Add the columns (C*kh*kw, nc*Ho*Wo) back into dx[n0:n0+nc]; dx must be zeroed first."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t ncols = cols.shape[1]
    cdef Py_ssize_t nc, t, n, c
    if cols.shape[0] == 0 or ncols == 0 or H == 0 or W == 0:
        return
    nc = ncols // (Ho * Wo)
    with nogil:
        for t in prange(nc * C, schedule='static', num_threads=num_threads):
            n = t // C
            c = t % C
            col2im_plane(&cols[0, 0], &dx[n0 + n, c, 0, 0], ncols, n, c, H, W, kh, kw,
                         sh, sw, pt, pl, dh, dw, Ho, Wo)


def gemm_to_nchw(const floating[:, ::1] buf, floating[:, :, ::1] y, Py_ssize_t n0,
                 const floating[::1] bias, bint has_bias, int num_threads=1):
    """Copy buf (K, nc*P) into y[n0:n0+nc] viewed as (N, K, P), adding bias[k] when has_bias."""
    cdef Py_ssize_t K = y.shape[1], P = y.shape[2]
    cdef Py_ssize_t nc, t, n, k, p
    cdef floating b
    cdef const floating* src
    cdef floating* dst
    if K == 0 or P == 0:
        return
    nc = buf.shape[1] // P
    with nogil:
        for t in prange(nc * K, schedule='static', num_threads=num_threads):
            n = t // K
            k = t % K
            src = &buf[k, n * P]
            dst = &y[n0 + n, k, 0]
            if has_bias:
                b = bias[k]
                for p in range(P):
                    dst[p] = src[p] + b
            else:
                memcpy(dst, src, P * sizeof(floating))


def nchw_to_gemm(const floating[:, :, ::1] g, floating[:, ::1] buf, Py_ssize_t n0,
                 int num_threads=1):
    """Copy g[n0:n0+nc] viewed as (N, K, P) into buf laid out as (K, nc*P)."""
    cdef Py_ssize_t K = g.shape[1], P = g.shape[2]
    cdef Py_ssize_t nc, t, n, k
    if K == 0 or P == 0:
        return
    nc = buf.shape[1] // P
    with nogil:
        for t in prange(nc * K, schedule='static', num_threads=num_threads):
            n = t // K
            k = t % K
            memcpy(&buf[k, n * P], &g[n0 + n, k, 0], P * sizeof(floating))
