"""Max and average pooling, forward and backward, over the N*C independent planes.

Max pooling returns PyTorch's indices (int64 flat positions h*W + w inside each plane); its backward
is a scatter-add through them, so overlapping windows accumulate. All loops run in ``cnnext._kernels._pool``.

Already-checked entry points, for layers that validated their input (C-contiguous, 4-D, float32 or
float64) and computed ``g = cnnext._validation.check_pool2d(...)`` for its shape:
``max_pool2d_checked(x, g)`` -> (output, indices), ``max_pool2d_backward_checked(grad_output,
indices, g, func)``, ``avg_pool2d_checked(x, g, count_include_pad)`` and
``avg_pool2d_backward_checked(grad_output, g, count_include_pad)``; grad_output must have shape
``g.output_shape``. They validate nothing (max_pool2d_backward_checked still refuses indices
outside their plane, naming ``func``); they are not part of the public API.
"""
import numpy as np

from cnnext._kernels import _pool
from cnnext._config import threads_for
from cnnext._validation import (
    as_batch,
    as_float_array,
    check_batch_grad,
    check_bool,
    check_input_shape,
    check_pool2d,
)

__all__ = ["max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]

# max_pool2d_backward zeroes planes up to this size itself, in cache, just before scattering
_CLEAR_IN_CACHE_BYTES = 256 * 1024


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling over a batch of images, as torch.nn.functional.max_pool2d.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding on both sides, at most half the kernel size.
    dilation : int or (int, int)
    ceil_mode : bool
        Use ceil instead of floor for the output size (a last window must start inside the input
        or its left padding).
    return_indices : bool
        Also return the argmax indices, needed by ``max_pool2d_backward``.

    Returns
    -------
    output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : ndarray of int64, same shape, only with ``return_indices``
        Flat position ``h * W + w`` of each maximum in its (H, W) plane.
    """
    func = "max_pool2d"
    check_bool(return_indices, "return_indices", func)
    x, unbatched = as_batch(input, "input", func)
    g = check_pool2d(func, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = max_pool2d_checked(x, g)
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def max_pool2d_checked(x, g):
    """max_pool2d of a checked 4-D input with geometry ``g``: (output, int64 indices), both 4-D."""
    y = np.empty(g.output_shape, dtype=x.dtype)
    idx = np.empty(g.output_shape, dtype=np.int64)
    planes = g.N * g.C
    _pool.max_pool2d_forward(x.reshape(planes, g.H, g.W), y.reshape(planes, g.Ho, g.Wo),
                             idx.reshape(planes, g.Ho, g.Wo), g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
                             g.dh, g.dw, threads_for(x.size))
    return y, idx


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of ``max_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : array_like of int, same shape
        As returned by ``max_pool2d(..., return_indices=True)``; each must lie in [0, H*W).
    input_shape : tuple
        Shape of the forward input, (N, C, H, W) or (C, H, W).

    Returns
    -------
    ndarray of ``input_shape``
        Every output gradient added at its index, so overlapping windows accumulate.
    """
    func = "max_pool2d_backward"
    shape, unbatched = check_input_shape(input_shape, "input_shape", func)
    nd = (3,) if unbatched else (4,)
    gy = as_float_array(grad_output, "grad_output", func, ndims=nd)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{func}: indices must be an integer array, got dtype {idx.dtype}")
    if idx.shape != gy.shape:
        raise ValueError(f"{func}: indices must have shape {gy.shape} (the shape of grad_output), "
                         f"got {idx.shape}")
    if gy.shape[:-2] != tuple(input_shape)[:-2]:
        raise ValueError(
            f"{func}: grad_output of shape {gy.shape} does not match input_shape {tuple(input_shape)} "
            f"in its leading (batch, channel) dimensions"
        )
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if unbatched:
        gy, idx = gy[None], idx[None]
    gx = _max_pool2d_scatter(gy, idx, shape, func, tuple(input_shape))
    return gx[0] if unbatched else gx


def max_pool2d_backward_checked(grad_output, indices, g, func):
    """max_pool2d_backward for a checked 4-D grad_output of ``g.output_shape`` and the indices
    returned by ``max_pool2d_checked``; indices outside their plane raise ValueError naming ``func``."""
    return _max_pool2d_scatter(grad_output, indices, g.input_shape, func, g.input_shape)


def _max_pool2d_scatter(gy, idx, shape, func, shown_shape):
    N, C, H, W = shape
    planes = N * C
    Ho, Wo = gy.shape[-2:]
    P = Ho * Wo  # not -1 in the reshapes: ambiguous when planes == 0
    # The kernel writes whole planes when the outputs tile them in 2x2 blocks, and clears a plane
    # that fits in cache right before scattering into it. A larger plane gets calloc'd zeros
    # instead: no extra pass, and pages no gradient lands on are never touched.
    dense = (Ho == H // 2 and Wo == W // 2) or H * W * gy.itemsize <= _CLEAR_IN_CACHE_BYTES
    gx = (np.empty if dense else np.zeros)(shape, dtype=gy.dtype)
    bad = _pool.max_pool2d_backward(gy.reshape(planes, P), idx.reshape(planes, P),
                                    gx.reshape(planes, H * W), threads_for(gx.size), W, Wo,
                                    zeroed=not dense)
    if bad:
        raise ValueError(
            f"{func}: {bad} indices lie outside [0, H*W) = [0, {H * W}) for input_shape "
            f"{shown_shape}; pass the indices returned by max_pool2d for that input"
        )
    return gx


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """2-D average pooling over a batch of images, as torch.nn.functional.avg_pool2d.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding, at most half the kernel size.
    ceil_mode : bool
    count_include_pad : bool
        Divide by the window size including padding (default) or by the real elements only.

    Returns
    -------
    ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    """
    func = "avg_pool2d"
    check_bool(count_include_pad, "count_include_pad", func)
    x, unbatched = as_batch(input, "input", func)
    g = check_pool2d(func, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    y = avg_pool2d_checked(x, g, bool(count_include_pad))
    return y[0] if unbatched else y


def avg_pool2d_checked(x, g, count_include_pad):
    """avg_pool2d of a checked 4-D input with geometry ``g``; returns the 4-D output."""
    y = np.empty(g.output_shape, dtype=x.dtype)
    planes = g.N * g.C
    _pool.avg_pool2d_forward(x.reshape(planes, g.H, g.W), y.reshape(planes, g.Ho, g.Wo),
                             g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, count_include_pad,
                             threads_for(x.size))
    return y


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True):
    """Gradient of ``avg_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    input_shape : tuple
        Shape of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to ``avg_pool2d``.

    Returns
    -------
    ndarray of ``input_shape``
    """
    func = "avg_pool2d_backward"
    check_bool(count_include_pad, "count_include_pad", func)
    shape, unbatched = check_input_shape(input_shape, "input_shape", func)
    g = check_pool2d(func, shape, kernel_size, stride, padding, 1, ceil_mode)
    gy = check_batch_grad(grad_output, "grad_output", func, g.output_shape, unbatched)
    gx = avg_pool2d_backward_checked(gy, g, bool(count_include_pad))
    return gx[0] if unbatched else gx


def avg_pool2d_backward_checked(grad_output, g, count_include_pad):
    """avg_pool2d_backward for a checked 4-D grad_output of ``g.output_shape``; returns the 4-D
    input gradient."""
    planes = g.N * g.C
    gx = np.zeros(g.input_shape, dtype=grad_output.dtype)
    _pool.avg_pool2d_backward(grad_output.reshape(planes, g.Ho, g.Wo), gx.reshape(planes, g.H, g.W),
                              g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, count_include_pad,
                              threads_for(gx.size))
    return gx
