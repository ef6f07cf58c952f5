# Type stubs for the compiled module cnnext/_kernels/_direct.pyx (checked by `python -m mypy.stubtest`).
#
# Direct convolution kernels (depthwise, thin grouped and tiny convolutions). Fused-type Cython
# functions: every floating array of one call is float32 or float64 (the TypeVar _F); arrays are
# C-contiguous NCHW / (K, C/groups, kh, kw) and are validated, padded and allocated by
# cnnext/functional.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def direct_forward(
    x: NDArray[_F],
    w: NDArray[_F],
    y: NDArray[_F],
    bias: NDArray[_F],
    has_bias: bool,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    groups: int,
    num_threads: int = 1,
) -> None:
    """y[n, k] = bias[k] + sum over the group's channels and taps of w * shifted padded x[n, c]."""

def direct_grad_input_full(
    gy: NDArray[_F],
    w: NDArray[_F],
    gx: NDArray[_F],
    dh: int,
    dw: int,
    groups: int,
    num_threads: int = 1,
) -> None:
    """Stride-1 grad_input: the "full" correlation of the padded gy with the turned filters."""

def direct_grad_input(
    gy: NDArray[_F],
    w: NDArray[_F],
    gx: NDArray[_F],
    sh: int,
    sw: int,
    pt: int,
    pl: int,
    dh: int,
    dw: int,
    groups: int,
    num_threads: int = 1,
) -> None:
    """gx[n, c] (zeroed by the caller) += every tap's weight times the shifted gy[n, k]."""

def direct_grad_weight(
    gy: NDArray[_F],
    x: NDArray[_F],
    gw: NDArray[_F],
    gb: NDArray[_F],
    need_bias: bool,
    sh: int,
    sw: int,
    dh: int,
    dw: int,
    groups: int,
    num_threads: int = 1,
) -> None:
    """gw[k, cg, ki, kj] = sum over samples and pixels of gy[n, k] * shifted padded x[n, c]."""

def pad_planes(a: NDArray[_F], out: NDArray[_F], top: int, left: int) -> None:
    """out[n, c, i, j] = a[n, c, i - top, j - left] inside a, else 0 (negative top/left crop)."""

def small_conv(
    x: NDArray[_F],
    top: int,
    left: int,
    w: NDArray[_F],
    flip: bool,
    y: NDArray[_F],
    bias: NDArray[_F],
    has_bias: bool,
) -> None:
    """y[n, k] = bias[k] + sum over c of the correlation (valid, stride 1) of x[n, c] zero-padded
    by (top, left) and to the size the output needs (negative: cropped) with f[k, c]; f = w
    (K, C, kh, kw) or, with flip, the filters of the transposed convolution, f[k, c] =
    w[c, k, ::-1, ::-1] for w of shape (C, K, kh, kw) (grad_input from grad_output). Every output
    sums (c, ki, kj) in order."""

def small_grad_weight(
    x: NDArray[_F],
    top: int,
    left: int,
    gy: NDArray[_F],
    gw: NDArray[_F],
    gb: NDArray[_F],
    need_bias: bool,
) -> None:
    """gw[k, c] = sum over n of the correlation (stride 1, dilation 1) of x[n, c], zero-padded by
    (top, left) and to the size gy needs, with gy[n, k]; each weight sums the output pixels in
    order, then the samples in order. gw must be C-contiguous (it is written as one block).
    With need_bias also gb[k] = the sum of gy[:, k] (as direct_grad_weight sums it)."""
