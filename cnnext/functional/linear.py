"""Fully connected (affine) layer, forward and backward, as one BLAS GEMM each.

The weight has PyTorch's layout ``(out_features, in_features)``, so ``y = x @ W.T + b``. Any number of
leading dimensions is allowed on the input; they are flattened into one batch axis for the GEMM.
"""
import numpy as np

from cnnext._validation import as_float_array, check_shape

__all__ = ["linear", "linear_backward"]

_ANY_ND = tuple(range(1, 33))


def _check(func, input, weight):
    x = as_float_array(input, "input", func, ndims=_ANY_ND)
    w = as_float_array(weight, "weight", func, ndims=(2,), dtype=x.dtype)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{func}: input's last dimension ({x.shape[-1]}, shape {x.shape}) must equal weight's "
            f"in_features (weight.shape[1] = {w.shape[1]}, weight shape {w.shape})"
        )
    return x, w


def linear(input, weight, bias=None):
    """Apply ``y = input @ weight.T + bias``, as torch.nn.functional.linear.

    Parameters
    ----------
    input : array_like, shape (*, in_features)
    weight : array_like, shape (out_features, in_features)
    bias : array_like, shape (out_features,), optional

    Returns
    -------
    ndarray, shape (*, out_features)
        In the input's float dtype (float64 for integer input).
    """
    func = "linear"
    x, w = _check(func, input, weight)
    x2 = x.reshape(-1, x.shape[-1])
    y = np.matmul(x2, w.T)
    if bias is not None:
        b = as_float_array(bias, "bias", func, ndims=(1,), dtype=x.dtype)
        check_shape(b, (w.shape[0],), "bias", func)
        y += b
    return y.reshape(x.shape[:-1] + (w.shape[0],))


def linear_backward(grad_output, input, weight):
    """Gradients of ``linear`` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape (*, out_features)
        Gradient of the loss with respect to linear's output.
    input, weight
        As given to ``linear``.

    Returns
    -------
    grad_input : ndarray, shape of ``input``
    grad_weight : ndarray, shape (out_features, in_features)
    grad_bias : ndarray, shape (out_features,)
    """
    func = "linear_backward"
    x, w = _check(func, input, weight)
    gy = as_float_array(grad_output, "grad_output", func, ndims=(x.ndim,), dtype=x.dtype)
    check_shape(gy, x.shape[:-1] + (w.shape[0],), "grad_output", func)
    x2 = x.reshape(-1, x.shape[-1])
    gy2 = gy.reshape(-1, w.shape[0])
    gx = np.matmul(gy2, w).reshape(x.shape)
    gw = np.matmul(gy2.T, x2)
    gb = gy2.sum(axis=0)
    return gx, gw, gb
