# Declarations of the convolution layout kernels (see _im2col.pyx for the design notes).
from cython cimport floating

cdef void im2col_row(const floating* x, floating* out, Py_ssize_t nc, Py_ssize_t C,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t c, Py_ssize_t ki, Py_ssize_t kj,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                     Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil

cdef void col2im_plane(const floating* cols, floating* dx, Py_ssize_t ncols, Py_ssize_t n,
                       Py_ssize_t c, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil
