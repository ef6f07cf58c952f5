"""Adaptive average and max pooling, forward and backward, over the N*C independent planes.

PyTorch's bins: output row i pools the input rows ``[floor(i * H / Ho), ceil((i + 1) * H / Ho))``,
output column j the columns ``[floor(j * W / Wo), ceil((j + 1) * W / Wo))``; neighbouring bins
overlap when the sizes do not divide. Max pooling returns PyTorch's indices (int64 flat positions
``h * W + w`` inside each plane) and its backward is a scatter-add through them. All loops run in
``cnnext._kernels._adaptive`` (and ``_pool`` for the scatter-add).
"""
import numpy as np

from cnnext._config import threads_for
from cnnext._kernels import _adaptive, _pool
from cnnext._validation import (
    as_batch,
    as_float_array,
    check_bool,
    check_input_shape,
    check_int,
)

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
]


def _output_size(output_size, H, W, func):
    """(Ho, Wo) from an int or a pair whose None entries keep the input's size."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(
                f"{func}: output_size must be an int or a pair of ints or None, got {output_size!r}"
            )
        sizes = output_size
    elif output_size is None:
        raise TypeError(f"{func}: output_size must be an int or a pair of ints or None, got None")
    else:
        sizes = (output_size, output_size)
    return tuple(
        size if v is None else check_int(v, "output_size", func, minimum=0)
        for v, size in zip(sizes, (H, W))
    )


def _input(input, func):
    x, unbatched = as_batch(input, "input", func)
    if min(x.shape[-2:]) < 1:
        shown = x.shape[1:] if unbatched else x.shape
        raise ValueError(f"{func}: input's spatial sizes must be >= 1, got shape {shown}")
    return x, unbatched


def _planes(a):
    N, C, H, W = a.shape
    return a.reshape(N * C, H, W)


def adaptive_avg_pool2d(input, output_size):
    """2-D adaptive average pooling, as torch.nn.functional.adaptive_avg_pool2d.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        (Ho, Wo); an int gives a square output, None keeps the input's size along that axis.

    Returns
    -------
    ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo)
        Each output is the mean of its bin (PyTorch's bin edges).
    """
    func = "adaptive_avg_pool2d"
    x, unbatched = _input(input, func)
    N, C, H, W = x.shape
    Ho, Wo = _output_size(output_size, H, W, func)
    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    _adaptive.adaptive_avg_pool2d_forward(_planes(x), _planes(y), threads_for(x.size))
    return y[0] if unbatched else y


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of ``adaptive_avg_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    input_shape : tuple
        Shape of the forward input, (N, C, H, W) or (C, H, W); the output size is grad_output's.

    Returns
    -------
    ndarray of ``input_shape``
        Each output gradient spread evenly over its bin; overlapping bins accumulate.
    """
    func = "adaptive_avg_pool2d_backward"
    shape, unbatched = check_input_shape(input_shape, "input_shape", func)
    gy = _grad_output(grad_output, shape, unbatched, input_shape, func)
    gx = np.empty(shape, dtype=gy.dtype)
    _adaptive.adaptive_avg_pool2d_backward(_planes(gy), _planes(gx), threads_for(gx.size))
    return gx[0] if unbatched else gx


def _grad_output(grad_output, shape, unbatched, input_shape, func):
    if min(shape[-2:]) < 1:
        raise ValueError(f"{func}: input_shape's spatial sizes must be >= 1, got {tuple(input_shape)}")
    gy = as_float_array(grad_output, "grad_output", func, ndims=(3,) if unbatched else (4,))
    if unbatched:
        gy = gy[None]
    if gy.shape[:2] != shape[:2]:
        raise ValueError(
            f"{func}: grad_output of shape {gy.shape[1:] if unbatched else gy.shape} does not match "
            f"input_shape {tuple(input_shape)} in its leading (batch, channel) dimensions"
        )
    return gy


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """2-D adaptive max pooling, as torch.nn.functional.adaptive_max_pool2d.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        (Ho, Wo); an int gives a square output, None keeps the input's size along that axis.
    return_indices : bool
        Also return the argmax indices, needed by ``adaptive_max_pool2d_backward``.

    Returns
    -------
    output : ndarray, shape (N, C, Ho, Wo) or (C, Ho, Wo)
        The maximum of each bin; NaN when the bin holds one.
    indices : ndarray of int64, same shape, only with ``return_indices``
        Flat position ``h * W + w`` of each maximum in its (H, W) plane (the first maximum in
        row-major order, or the last NaN).
    """
    func = "adaptive_max_pool2d"
    check_bool(return_indices, "return_indices", func)
    x, unbatched = _input(input, func)
    N, C, H, W = x.shape
    Ho, Wo = _output_size(output_size, H, W, func)
    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    _adaptive.adaptive_max_pool2d_forward(_planes(x), _planes(y), _planes(idx), threads_for(x.size))
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of ``adaptive_max_pool2d`` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, shape (N, C, Ho, Wo) or (C, Ho, Wo)
    indices : array_like of int, same shape
        As returned by ``adaptive_max_pool2d(..., return_indices=True)``; each in [0, H*W).
    input_shape : tuple
        Shape of the forward input, (N, C, H, W) or (C, H, W).

    Returns
    -------
    ndarray of ``input_shape``
        Every output gradient added at its index, so overlapping bins accumulate.
    """
    func = "adaptive_max_pool2d_backward"
    shape, unbatched = check_input_shape(input_shape, "input_shape", func)
    gy = _grad_output(grad_output, shape, unbatched, input_shape, func)
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{func}: indices must be an integer array, got dtype {idx.dtype}")
    want = gy.shape[1:] if unbatched else gy.shape
    if idx.shape != want:
        raise ValueError(f"{func}: indices must have shape {want} (the shape of grad_output), "
                         f"got {idx.shape}")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    N, C, H, W = shape
    Ho, Wo = gy.shape[2:]
    if Ho * Wo == 0:  # no output, no gradient
        gx = np.zeros(shape, dtype=gy.dtype)
        return gx[0] if unbatched else gx
    gx = np.empty(shape, dtype=gy.dtype)
    bad = _pool.max_pool2d_backward(gy.reshape(N * C, Ho * Wo), idx.reshape(N * C, Ho * Wo),
                                    gx.reshape(N * C, H * W), threads_for(gx.size), W, Wo)
    if bad:
        raise ValueError(
            f"{func}: {bad} indices lie outside [0, H*W) = [0, {H * W}) for input_shape "
            f"{tuple(input_shape)}; pass the indices returned by adaptive_max_pool2d for that input"
        )
    return gx[0] if unbatched else gx
