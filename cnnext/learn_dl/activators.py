"""learn_dl's activators: Identity, ReLU, sigmoid and tanh.

Each activator has ``forward(weighted_input)`` and ``backward(output)``; ``backward`` is the derivative
written in terms of the activation's *output*, as in learn_dl (a layer calls it on its input, which is
the previous layer's output). Both work on Python scalars (learn_dl calls them element by element) and
on whole arrays (cnnext's layers call them once per array). The arithmetic lives in
``cnnext.functional``'s activation functions.

Fixed relative to learn_dl: ``SigmoidActivator.forward`` divides with ``/`` (learn_dl's ``1.0 // (...)``
floor division returned 0 for every input).
"""
import numbers

import numpy as np

from cnnext.functional import activation as _F

__all__ = ["IdentityActivator", "ReluActivator", "SigmoidActivator", "TanhActivator"]


def _prepare(x):
    """Pass scalars and arrays through; turn other array_likes (lists, tuples) into arrays."""
    if isinstance(x, (np.ndarray, np.generic, numbers.Number)):
        return x
    return np.asarray(x)


def _apply(func, x):
    """Call ``func`` on ``x``; a plain Python number in gives a plain Python number out."""
    if type(x) is np.ndarray:  # what the layers pass: nothing to convert
        return func(x)
    result = func(_prepare(x))
    if isinstance(x, numbers.Number) and not isinstance(x, np.generic):
        result = result.item() if isinstance(result, (np.ndarray, np.generic)) else result
    return result


class _Activator:
    """Common repr for the stateless activators."""

    __slots__ = ()

    def __repr__(self):
        return f"{type(self).__name__}()"


class IdentityActivator(_Activator):
    """Identity: ``forward(x) = x``, derivative 1.

    ``backward`` returns the scalar 1 for a scalar and an array of ones (float) for an array.
    """

    __slots__ = ()

    def forward(self, weighted_input):
        """Return ``weighted_input`` unchanged."""
        return weighted_input

    def backward(self, output):
        """Return the derivative, 1, in the shape of ``output``."""
        if np.ndim(output) == 0:
            return 1
        output = np.asarray(output)
        dtype = output.dtype if output.dtype.kind == "f" else np.float64
        return np.ones(output.shape, dtype=dtype)


class ReluActivator(_Activator):
    """Rectified linear unit: ``forward(x) = max(0, x)``, derivative 1 where the output is > 0."""

    __slots__ = ()

    def forward(self, weighted_input):
        """Return ``max(0, weighted_input)`` element-wise."""
        return _apply(_F.relu, weighted_input)

    def backward(self, output):
        """Return 1 where ``output > 0``, else 0."""
        return _apply(_F.relu_derivative, output)


class SigmoidActivator(_Activator):
    """Logistic sigmoid: ``forward(x) = 1 / (1 + exp(-x))``, derivative ``y * (1 - y)``."""

    __slots__ = ()

    def forward(self, weighted_input):
        """Return ``1 / (1 + exp(-weighted_input))`` element-wise (true division)."""
        return _apply(_F.sigmoid, weighted_input)

    def backward(self, output):
        """Return ``output * (1 - output)``."""
        return _apply(_F.sigmoid_derivative, output)


class TanhActivator(_Activator):
    """Hyperbolic tangent: ``forward(x) = tanh(x)``, derivative ``1 - y**2``."""

    __slots__ = ()

    def forward(self, weighted_input):
        """Return ``tanh(weighted_input)`` element-wise."""
        return _apply(_F.tanh, weighted_input)

    def backward(self, output):
        """Return ``1 - output**2``."""
        return _apply(_F.tanh_derivative, output)
