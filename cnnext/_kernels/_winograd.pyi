# Type stubs for the compiled module cnnext/_kernels/_winograd.pyx (checked by `python -m mypy.stubtest`).
#
# The kernels are Cython fused-type functions: each array argument may be float32 or float64, and all
# floating arrays of one call must share that dtype (expressed by the TypeVar _F). Arrays must be
# C-contiguous with the shapes given in each docstring; cnnext/functional validates and allocates them,
# so these are internal helpers, not public API.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def input_transform(
    x: NDArray[_F],
    v: NDArray[_F],
    n0: int,
    pt: int,
    pl: int,
    Ho: int,
    Wo: int,
    nc: int,
    ld: int,
    num_threads: int = 1,
) -> None:
    """Write the transformed input tiles of samples x[n0:n0+nc] into v: element (e, c, t) at
    v[e, c*ld + t] for t < nc * tiles <= ld, tiles = ceil(Ho/4) * ceil(Wo/4); v has shape
    (36, >= C*ld); pt, pl are the top/left zero padding."""

def output_transform(
    m: NDArray[_F],
    y: NDArray[_F],
    n0: int,
    bias: NDArray[_F],
    has_bias: bool,
    nc: int,
    ld: int,
    num_threads: int = 1,
) -> None:
    """Write y[n0:n0+nc] (N, K, Ho, Wo) from the tile products, element (e, k, t) at
    m[e, k*ld + t], adding bias[k] when has_bias."""

def output_grad_transform(
    gy: NDArray[_F],
    dm: NDArray[_F],
    n0: int,
    nc: int,
    ld: int,
    num_threads: int = 1,
) -> None:
    """Write the transformed grad_output tiles of samples gy[n0:n0+nc] (N, K, Ho, Wo) into dm:
    element (e, k, t) at dm[e, k*ld + t]."""

TILE_GEMM_MR: int
TILE_GEMM_PAD: int

def tile_gemm_level() -> int:
    """2 when the tile GEMMs run the AVX2+FMA kernels, 1 for the baseline-ISA vector kernels, 0
    for plain loops (a compiler without vector extensions)."""

def tile_gemm(
    up: NDArray[_F],
    v: NDArray[_F],
    m: NDArray[_F],
    K: int,
    T: int,
    ld: int,
    num_threads: int = 1,
) -> None:
    """M[e] = U[e] @ V[e] for the 36 transform elements: m[e, k*ld + t] = sum over c of
    U[e, k, c] * v[e, c*ld + t], for k < K, t < T. ``up`` holds U packed by blocks of
    TILE_GEMM_MR rows, up[e, kb, c, r] = U[e, kb*MR + r, c] (zero past K); the rows of v are
    read up to T rounded up to TILE_GEMM_PAD, which must not exceed ld."""

def tile_gemm_grad(
    dm: NDArray[_F],
    v: NDArray[_F],
    du: NDArray[_F],
    T: int,
    ld: int,
    num_threads: int = 1,
) -> None:
    """dU[e] = dM[e] @ V[e]^T for the 36 transform elements: du[e, k, c] = sum over t < T of
    dm[e, k*ld + t] * v[e, c*ld + t], with du of shape (E, K, C); the sum runs over t in
    order. Each thread packs its element's dM by row blocks and transposes V into a buffer."""

def filter_transform(w: NDArray[_F], up: NDArray[_F], rotate: bool, num_threads: int = 1) -> None:
    """The transformed filters U[e, k, c] = (G g G^T)[i, j], e = 6*i + j, of the (K, C, 3, 3)
    weights w (computed in float64, rounded once), written as up[e, k // mr, c, k % mr] with
    mr = up.shape[3] (1: plain (36, K, C) for BLAS; TILE_GEMM_MR: packed for tile_gemm, zero
    past K). With rotate, g is the filter of the transposed convolution, w[c, k, ::-1, ::-1]
    (so K and C are w's second and first axis), which grad_input convolves with."""

def filter_grad_transform(du: NDArray[_F], gw: NDArray[_F], num_threads: int = 1) -> None:
    """grad_weight gw[k, c] = G^T dU[:, k, c] G (6x6 -> 3x3) from du of shape (36, K, C), e = 6*i + j,
    computed in float64 and rounded once."""
