"""Element-wise activations and their derivatives.

The derivatives are written in terms of the activation's *output* (learn_dl's convention:
``activator.backward(output)``), which is also what a layer caches; ``cnnext.nn`` multiplies them by
the incoming gradient. They work on arrays and on Python or numpy scalars.
"""
import numpy as np

__all__ = ["relu", "relu_derivative", "sigmoid", "sigmoid_derivative", "tanh", "tanh_derivative"]


def relu(x):
    """max(x, 0) element-wise; NaN stays NaN."""
    return np.maximum(x, 0)


def relu_derivative(y):
    """Derivative of relu given its output ``y``: 1 where y > 0, else 0 (in y's float dtype)."""
    y = np.asarray(y)
    dt = y.dtype if y.dtype.kind == "f" else np.float64
    return (y > 0).astype(dt)[()]


def sigmoid(x):
    """1 / (1 + exp(-x)) element-wise, computed without overflow for large |x|."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return np.exp(-np.logaddexp(0, -x))[()]


def sigmoid_derivative(y):
    """Derivative of the sigmoid given its output ``y``: y * (1 - y)."""
    return y * (1 - y)


def tanh(x):
    """Hyperbolic tangent element-wise."""
    return np.tanh(x)


def tanh_derivative(y):
    """Derivative of tanh given its output ``y``: 1 - y**2."""
    return 1 - y * y
