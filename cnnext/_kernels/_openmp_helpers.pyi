# Type stubs for the compiled module cnnext/_openmp_helpers.pyx (checked by `python -m mypy.stubtest`).

def openmp_enabled() -> bool:
    """Return True when the kernels were compiled with OpenMP."""

def openmp_max_threads() -> int:
    """Return OpenMP's default thread count (1 without OpenMP)."""
