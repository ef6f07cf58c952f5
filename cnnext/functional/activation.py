"""Element-wise activations and their derivatives.

The derivatives are written in terms of the activation's *output* (learn_dl's convention:
``activator.backward(output)``), which is also what a layer caches; ``cnnext.nn`` multiplies them by
the incoming gradient. They work on arrays and on Python or numpy scalars (a scalar or 0-d input
gives a numpy scalar). Like every other function of cnnext they refuse complex, object and float16
input with TypeError.

Already-checked entry points, for layers that validated their input (a float32 or float64
array): ``relu_checked``, ``sigmoid_checked``, ``tanh_checked`` and ``relu_derivative_checked``,
``sigmoid_derivative_checked``, ``tanh_derivative_checked``. They validate nothing; they are not
part of the public API.
"""
import numpy as np

from cnnext._validation import result_dtype

__all__ = ["relu", "relu_derivative", "sigmoid", "sigmoid_derivative", "tanh", "tanh_derivative"]


def _real(x, name, func):
    """``x`` as an array of real numbers (integers and bools kept), or TypeError naming it."""
    a = np.asarray(x)
    result_dtype(a, name, func)
    return a


def _float(x, name, func):
    """``x`` as an array in the float dtype cnnext computes it in (integers become float64)."""
    a = _real(x, name, func)
    return a if a.dtype.kind == "f" else a.astype(np.float64)


def relu(x):
    """max(x, 0) element-wise; NaN stays NaN. Integer input keeps its dtype."""
    return relu_checked(_real(x, "input", "relu"))


def relu_checked(x):
    """relu of a checked real array."""
    return np.maximum(x, 0)


def relu_derivative(y):
    """Derivative of relu given its output ``y``: 1 where y > 0, else 0 (in y's float dtype)."""
    return relu_derivative_checked(_float(y, "y", "relu_derivative"))[()]


def relu_derivative_checked(y):
    """relu_derivative of a checked float array."""
    return (y > 0).astype(y.dtype)


def sigmoid(x):
    """1 / (1 + exp(-x)) element-wise, computed without overflow for large |x|."""
    return sigmoid_checked(_float(x, "input", "sigmoid"))[()]


def sigmoid_checked(x):
    """sigmoid of a checked float array."""
    return np.exp(-np.logaddexp(0, -x))


def sigmoid_derivative(y):
    """Derivative of the sigmoid given its output ``y``: y * (1 - y)."""
    return sigmoid_derivative_checked(_float(y, "y", "sigmoid_derivative"))


def sigmoid_derivative_checked(y):
    """sigmoid_derivative of a checked float array."""
    return y * (1 - y)


def tanh(x):
    """Hyperbolic tangent element-wise."""
    return tanh_checked(_real(x, "input", "tanh"))


def tanh_checked(x):
    """tanh of a checked real array."""
    return np.tanh(x)


def tanh_derivative(y):
    """Derivative of tanh given its output ``y``: 1 - y**2."""
    return tanh_derivative_checked(_float(y, "y", "tanh_derivative"))


def tanh_derivative_checked(y):
    """tanh_derivative of a checked float array."""
    return 1 - y * y
