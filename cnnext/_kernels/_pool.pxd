# Declarations of the pooling kernels (see _pool.pyx for the design notes).
from cython cimport floating
from libc.stdint cimport int64_t

cdef void max_pool_plane(const floating* x, floating* y, int64_t* idx,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil

cdef void avg_pool_plane(const floating* x, floating* y, bint backward,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad) noexcept nogil
