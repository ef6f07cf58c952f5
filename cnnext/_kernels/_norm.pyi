# Type stubs for the compiled module cnnext/_kernels/_norm.pyx (checked by `python -m mypy.stubtest`).
#
# Fused-type Cython kernels: the input-shaped arrays of one call are all float32 or all float64 (the
# TypeVar _F), viewed as (N, C, S); per-channel vectors are float64 of shape (C,). Arrays are
# C-contiguous; cnnext/functional/normalization.py validates and allocates them.
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

def simd_build() -> str:
    """Return 'avx2' or 'baseline': which build of the loops in _norm.h runs."""

def _use_avx2(flag: bool) -> bool:
    """Testing aid: run the AVX2 build (if the CPU has it) or the baseline one; returns the old
    setting. Both give bitwise identical results."""

def batch_norm_train_forward(
    x: NDArray[_F],
    weight: NDArray[np.float64],
    bias: NDArray[np.float64],
    y: NDArray[_F],
    mean: NDArray[np.float64],
    var: NDArray[np.float64],
    invstd: NDArray[np.float64],
    eps: float,
    num_threads: int = 1,
) -> None:
    """Normalise x (N, C, S) with its per-channel batch statistics into y; write mean, var, invstd."""

def batch_norm_eval_forward(
    x: NDArray[_F],
    scale: NDArray[np.float64],
    shift: NDArray[np.float64],
    y: NDArray[_F],
    num_threads: int = 1,
) -> None:
    """y = x * scale + shift per channel, x and y (N, C, S)."""

def batch_norm_backward(
    gy: NDArray[_F],
    x: NDArray[_F],
    weight: NDArray[np.float64],
    mean: NDArray[np.float64],
    invstd: NDArray[np.float64],
    gx: NDArray[_F],
    grad_weight: NDArray[np.float64],
    grad_bias: NDArray[np.float64],
    training: bool,
    need_input: bool = True,
    num_threads: int = 1,
) -> None:
    """Gradients of batch normalisation of x (N, C, S): gx (unless not need_input), grad_weight,
    grad_bias (C,). mean and invstd are the statistics the forward normalised with."""
