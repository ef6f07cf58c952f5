# Design: tells Python whether the extensions were compiled with OpenMP and how many threads
# OpenMP would use by default. The thread count the kernels actually use is chosen in
# cnnext/_config.py and passed to every kernel call as `num_threads`.
from cnnext._kernels._openmp_helpers cimport CNNEXT_OPENMP_ENABLED, omp_get_max_threads


def openmp_enabled():
    """Return True when the kernels were compiled with OpenMP."""
    return bool(CNNEXT_OPENMP_ENABLED)


def openmp_max_threads():
    """Return OpenMP's default thread count (1 without OpenMP)."""
    return int(omp_get_max_threads())
