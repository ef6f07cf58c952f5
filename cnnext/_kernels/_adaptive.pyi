# Type stubs for the compiled module cnnext/_kernels/_adaptive.pyx (checked by `python -m mypy.stubtest`).
#
# Fused-type Cython kernels: every floating array of one call is float32 or float64 (the TypeVar _F),
# index arrays are int64. Arrays are C-contiguous; cnnext/functional/adaptive.py validates and
# allocates them. The backward of adaptive max pooling is cnnext._kernels._pool.max_pool2d_backward.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def adaptive_avg_pool2d_forward(x: NDArray[_F], y: NDArray[_F], num_threads: int = 1) -> None:
    """Adaptive average pooling of the planes of x (planes, H, W) into y (planes, Ho, Wo)."""

def adaptive_avg_pool2d_backward(gy: NDArray[_F], gx: NDArray[_F], num_threads: int = 1) -> None:
    """Write into gx (planes, H, W) the gradient of adaptive average pooling from gy (planes, Ho, Wo).

    gx's previous contents are ignored.
    """

def adaptive_max_pool2d_forward(
    x: NDArray[_F], y: NDArray[_F], idx: NDArray[np.int64], num_threads: int = 1
) -> None:
    """Adaptive max pooling of the planes of x (planes, H, W) into y and idx (planes, Ho, Wo)."""
