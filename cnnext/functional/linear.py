"""Fully connected (affine) layer, forward and backward, as one BLAS GEMM each.

The weight has PyTorch's layout ``(out_features, in_features)``, so ``y = x @ W.T + b``. Any number of
leading dimensions is allowed on the input; they are flattened into one batch axis for the GEMM.

Already-checked entry points, for layers that validated their arguments with
``cnnext._validation.check_linear``: ``linear_checked(x, weight, bias)`` and
``linear_backward_checked(grad_output, x, weight)``. They validate nothing; they are not part of
the public API.
"""
import numpy as np

from cnnext._validation import as_float_array, check_linear

__all__ = ["linear", "linear_backward"]


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
    return linear_checked(*check_linear("linear", input, weight, bias))


def linear_checked(x, weight, bias):
    """linear for arguments checked by ``check_linear`` (bias may be None)."""
    y = np.matmul(x.reshape(-1, x.shape[-1]), weight.T)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[0],))


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
    x, w, _ = check_linear(func, input, weight)
    gy = as_float_array(grad_output, "grad_output", func, ndims=(x.ndim,), dtype=x.dtype,
                        shape=x.shape[:-1] + (w.shape[0],))
    return linear_backward_checked(gy, x, w)


def linear_backward_checked(grad_output, x, weight):
    """linear_backward for checked arguments: x and weight from ``check_linear``, grad_output of
    shape (*, out_features) in their dtype."""
    x2 = x.reshape(-1, x.shape[-1])
    gy2 = grad_output.reshape(-1, weight.shape[0])
    gx = np.matmul(gy2, weight).reshape(x.shape)
    gw = np.matmul(gy2.T, x2)
    gb = gy2.sum(axis=0)
    return gx, gw, gb
