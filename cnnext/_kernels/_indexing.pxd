# Index arithmetic shared by the kernels: which output positions of a sliding window read an input
# position inside [0, size). Inline, nogil, on Py_ssize_t; used by _im2col, _direct and _pool.
# The arguments come from geometry checked in cnnext/_validation.py, which keeps every size, stride,
# padding and dilated kernel extent at most 2**60 (_INDEX_LIMIT), so sums and differences of a few
# of them (o*s + off, size - off) cannot overflow.
#
# Inside a prange body, assign the results to variables (lo = first_valid(...)) rather than filling
# them through pointers: Cython makes assigned variables thread-private, pointer-filled ones shared.


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any a > PY_SSIZE_T_MIN, with no intermediate overflow (the
    former (a + b - 1) // b wrapped around for a + b > PY_SSIZE_T_MAX, e.g. a huge stride).
    Both divisions have non-negative operands, so they floor whatever the cdivision setting."""
    if a <= 0:
        return -((-a) // b)
    return (a - 1) // b + 1


cdef inline Py_ssize_t first_valid(Py_ssize_t off, Py_ssize_t s, Py_ssize_t n_out) noexcept nogil:
    """First output position o with input position o*s + off >= 0, clipped to [0, n_out]."""
    cdef Py_ssize_t a = ceil_div(-off, s)
    if a < 0:
        return 0
    return a if a < n_out else n_out


cdef inline Py_ssize_t end_valid(Py_ssize_t off, Py_ssize_t size, Py_ssize_t s,
                                 Py_ssize_t n_out, Py_ssize_t lo) noexcept nogil:
    """One past the last output position o >= lo with input position o*s + off < size."""
    cdef Py_ssize_t b = ceil_div(size - off, s)
    if b > n_out:
        b = n_out
    return b if b > lo else lo
