# Type stubs for the compiled module cnnext/_kernels/_im2col.pyx (checked by `python -m mypy.stubtest`).
#
# The kernels are Cython fused-type functions: each array argument may be float32 or float64, and all
# floating arrays of one call must share that dtype (expressed by the TypeVar _F). Arrays must be
# C-contiguous with the shapes given in each docstring; cnnext/functional validates and allocates them,
# so these are internal helpers, not public API.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def im2col(
    x: NDArray[_F],
    cols: NDArray[_F],
    n0: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pt: int,
    pl: int,
    dh: int,
    dw: int,
    Ho: int,
    Wo: int,
    num_threads: int = 1,
) -> None:
    """Write the column matrix of samples x[n0:n0+nc] into cols, shape (C*kh*kw, nc*Ho*Wo)."""

def col2im(
    cols: NDArray[_F],
    dx: NDArray[_F],
    n0: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    pt: int,
    pl: int,
    dh: int,
    dw: int,
    Ho: int,
    Wo: int,
    num_threads: int = 1,
) -> None:
    """Add the columns (C*kh*kw, nc*Ho*Wo) back into dx[n0:n0+nc]; dx must be zeroed first."""

def gemm_to_nchw(
    buf: NDArray[_F],
    y: NDArray[_F],
    n0: int,
    bias: NDArray[_F],
    has_bias: bool,
    num_threads: int = 1,
) -> None:
    """Copy buf (K, nc*P) into y[n0:n0+nc] viewed as (N, K, P), adding bias[k] when has_bias."""

def nchw_to_gemm(g: NDArray[_F], buf: NDArray[_F], n0: int, num_threads: int = 1) -> None:
    """Copy g[n0:n0+nc] viewed as (N, K, P) into buf laid out as (K, nc*P)."""
