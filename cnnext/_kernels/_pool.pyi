# Type stubs for the compiled module cnnext/_kernels/_pool.pyx (checked by `python -m mypy.stubtest`).
#
# Fused-type Cython kernels: every floating array of one call is float32 or float64 (the TypeVar _F),
# index arrays are int64. Arrays are C-contiguous; cnnext/functional validates and allocates them.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def max_pool2d_forward(
    x: NDArray[_F],
    y: NDArray[_F],
    idx: NDArray[np.int64],
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    num_threads: int = 1,
) -> None:
    """Max pooling of the (H, W) planes of x (planes, H, W) into y and idx (planes, Ho, Wo)."""

def max_pool2d_backward(
    gy: NDArray[_F],
    idx: NDArray[np.int64],
    gx: NDArray[_F],
    num_threads: int = 1,
    W: int = 0,
    Wo: int = 0,
    zeroed: bool = False,
) -> int:
    """Write into gx (planes, H*W) the scatter-add of gy (planes, Ho*Wo) at idx over zeros.

    gx's previous contents are ignored, unless ``zeroed`` says it already holds zeros (a calloc'd
    array stays untouched where no gradient lands). ``W`` and ``Wo``, the row lengths of the input
    and output planes, are optional: with them, planes whose indices all lie in their own 2x2
    block (2x2 stride-2 pooling) are written densely, zeros included. Returns the number of indices
    outside [0, H*W); those are skipped, never written.
    """

def avg_pool2d_forward(
    x: NDArray[_F],
    y: NDArray[_F],
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    num_threads: int = 1,
) -> None:
    """Average pooling of the planes of x (planes, H, W) into y (planes, Ho, Wo)."""

def avg_pool2d_backward(
    gy: NDArray[_F],
    gx: NDArray[_F],
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    count_include_pad: bool,
    num_threads: int = 1,
) -> None:
    """Spread gy (planes, Ho, Wo) back over the zeroed gx (planes, H, W)."""
