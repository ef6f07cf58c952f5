# Declarations of the Winograd F(4x4, 3x3) transforms (see _winograd.pyx for the design notes).
from cython cimport floating

cdef void input_transform_plane(const floating* plane, floating* v, Py_ssize_t stride,
                                Py_ssize_t H, Py_ssize_t W, Py_ssize_t pt, Py_ssize_t pl,
                                Py_ssize_t th, Py_ssize_t tw, floating* buf) noexcept nogil

cdef void output_transform_plane(const floating* m, floating* y, Py_ssize_t stride,
                                 Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                 floating bias, bint has_bias, floating* buf) noexcept nogil

cdef void output_grad_transform_plane(const floating* gy, floating* dm, Py_ssize_t stride,
                                      Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                                      floating* buf) noexcept nogil
