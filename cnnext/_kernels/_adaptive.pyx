# Design
# ------
# Adaptive pooling of the independent (H, W) planes of an (N*C, H, W) input into (Ho, Wo) outputs,
# with PyTorch's bins: output row i covers the input rows [floor(i*H/Ho), ceil((i+1)*H/Ho)), output
# column j the columns [floor(j*W/Wo), ceil((j+1)*W/Wo)). Bins are never empty; neighbours overlap
# when H is not a multiple of Ho, and with Ho > H an input row belongs to several bins. Every kernel
# parallelises over the planes with `prange`: a thread owns whole planes, so the result is bitwise
# identical for every thread count.
#  - Average: each bin's sum in double (4 interleaved lanes along each bin row, or along the whole
#    bin when it spans full rows, combined in a fixed order), divided by the bin's area. Backward
#    zeroes the plane, then adds each output gradient / area to its bin, bins in (row, column)
#    order.
#  - Max: each bin scanned row by row; an element replaces the running maximum when it is greater
#    or NaN (PyTorch's rule: the first maximum, or the last NaN), the index is the flat position
#    h*W + w in the plane, and a bin of -inf keeps its first position. Backward is a scatter-add
#    through the indices, done by max_pool2d_backward in cnnext._kernels._pool (which also
#    reports indices outside the plane).
# Arguments are validated in cnnext/functional/adaptive.py; arrays are C-contiguous.
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset


cdef inline Py_ssize_t _start(Py_ssize_t i, Py_ssize_t size, Py_ssize_t out) noexcept nogil:
    return (i * size) // out


cdef inline Py_ssize_t _end(Py_ssize_t i, Py_ssize_t size, Py_ssize_t out) noexcept nogil:
    return ((i + 1) * size + out - 1) // out


cdef inline double _row_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        a0 = a0 + <double>x[i]
        a1 = a1 + <double>x[i + 1]
        a2 = a2 + <double>x[i + 2]
        a3 = a3 + <double>x[i + 3]
        i = i + 4
    if i < n:
        a0 = a0 + <double>x[i]
    if i + 1 < n:
        a1 = a1 + <double>x[i + 1]
    if i + 2 < n:
        a2 = a2 + <double>x[i + 2]
    return (a0 + a1) + (a2 + a3)


cdef void _avg_plane(const floating* x, floating* y, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t oh, ow, hs, he, ws, we, ih
    cdef double acc
    for oh in range(Ho):
        hs = _start(oh, H, Ho)
        he = _end(oh, H, Ho)
        for ow in range(Wo):
            ws = _start(ow, W, Wo)
            we = _end(ow, W, Wo)
            if ws == 0 and we == W:  # full-width bins (global pooling): one contiguous run
                acc = _row_sum(x + hs * W, (he - hs) * W)
            else:
                acc = 0
                for ih in range(hs, he):
                    acc = acc + _row_sum(x + ih * W + ws, we - ws)
            y[oh * Wo + ow] = <floating>(acc / <double>((he - hs) * (we - ws)))


cdef void _avg_plane_backward(const floating* gy, floating* gx, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t oh, ow, hs, he, ws, we, ih, iw
    cdef floating g
    cdef floating* row
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(Ho):
        hs = _start(oh, H, Ho)
        he = _end(oh, H, Ho)
        for ow in range(Wo):
            ws = _start(ow, W, Wo)
            we = _end(ow, W, Wo)
            g = <floating>(<double>gy[oh * Wo + ow] / <double>((he - hs) * (we - ws)))
            for ih in range(hs, he):
                row = gx + ih * W
                for iw in range(ws, we):
                    row[iw] = row[iw] + g


cdef void _max_plane(const floating* x, floating* y, int64_t* idx, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    cdef Py_ssize_t oh, ow, hs, he, ws, we, ih, iw
    cdef floating v, m
    cdef int64_t best
    cdef const floating* row
    for oh in range(Ho):
        hs = _start(oh, H, Ho)
        he = _end(oh, H, Ho)
        for ow in range(Wo):
            ws = _start(ow, W, Wo)
            we = _end(ow, W, Wo)
            m = -INFINITY
            best = hs * W + ws
            for ih in range(hs, he):
                row = x + ih * W
                for iw in range(ws, we):
                    v = row[iw]
                    if v > m or v != v:
                        m = v
                        best = ih * W + iw
            y[oh * Wo + ow] = m
            idx[oh * Wo + ow] = best


def adaptive_avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, int num_threads=1):
    """Adaptive average pooling of the planes of x (planes, H, W) into y (planes, Ho, Wo)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], t
    if planes == 0 or Ho == 0 or Wo == 0 or H == 0 or W == 0:
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            _avg_plane(&x[t, 0, 0], &y[t, 0, 0], H, W, Ho, Wo)


def adaptive_avg_pool2d_backward(const floating[:, :, ::1] gy, floating[:, :, ::1] gx,
                                 int num_threads=1):
    """Write into gx (planes, H, W) the gradient of adaptive average pooling from gy (planes, Ho, Wo).

    gx's previous contents are ignored.
    """
    cdef Py_ssize_t planes = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], t
    if planes == 0 or H == 0 or W == 0:
        return
    if Ho == 0 or Wo == 0:
        gx[:, :, :] = 0
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            _avg_plane_backward(&gy[t, 0, 0], &gx[t, 0, 0], H, W, Ho, Wo)


def adaptive_max_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                                int64_t[:, :, ::1] idx, int num_threads=1):
    """Adaptive max pooling of the planes of x (planes, H, W) into y and idx (planes, Ho, Wo)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], t
    if planes == 0 or Ho == 0 or Wo == 0 or H == 0 or W == 0:
        return
    with nogil:
        for t in prange(planes, schedule='static', num_threads=num_threads):
            _max_plane(&x[t, 0, 0], &y[t, 0, 0], &idx[t, 0, 0], H, W, Ho, Wo)
