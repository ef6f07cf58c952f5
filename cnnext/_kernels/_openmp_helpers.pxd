# OpenMP helpers with a serial fallback, shared by every kernel module.
# When the extension is compiled without OpenMP, `_OPENMP` is undefined and the stubs below
# stand in, so the kernels compile and run serially with identical results.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CNNEXT_OPENMP_ENABLED 1
    #else
    #define CNNEXT_OPENMP_ENABLED 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint CNNEXT_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
