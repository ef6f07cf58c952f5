"""Softmax, losses and dropout, with their gradients.

``cross_entropy`` fuses log-softmax and the negative log-likelihood: the logits are shifted by their
row maximum before exponentiating, so it neither overflows nor loses the small probabilities. Each loss
has a ``*_backward`` function giving the gradient with respect to its first argument.

Already-checked entry points, for layers that validated their arguments (with
``cnnext._validation.check_cross_entropy`` / ``check_mse``, ``check_choice`` for the reduction and
``check_float`` for a scalar grad_output): ``cross_entropy_checked``,
``cross_entropy_backward_checked``, ``mse_loss_checked``, ``mse_loss_backward_checked`` and
``dropout_checked``. They validate nothing; they are not part of the public API.
"""
import numpy as np

from cnnext._validation import (
    as_float_array,
    check_choice,
    check_cross_entropy,
    check_float,
    check_int,
    check_mse,
    check_rng,
)

__all__ = [
    "log_softmax",
    "softmax",
    "cross_entropy",
    "cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "dropout",
    "dropout_backward",
]

_REDUCTIONS = ("mean", "sum", "none")


def _axis(dim, ndim, func):
    """``dim`` as an axis index in [0, ndim) (negative values count from the end)."""
    return check_int(dim, "dim", func, minimum=-ndim, maximum=ndim - 1) % ndim


def log_softmax(input, dim=1):
    """Logarithm of the softmax along ``dim``, computed stably.

    Parameters
    ----------
    input : array_like
        Logits, at least 1-D.
    dim : int
        Axis along which the softmax is normalised (default 1, the class axis of (N, C) logits).

    Returns
    -------
    ndarray
        Same shape, ``input - logsumexp(input, dim)``.
    """
    func = "log_softmax"
    x = as_float_array(input, "input", func, ndims=tuple(range(1, 33)))
    dim = _axis(dim, x.ndim, func)
    if x.size == 0:  # an empty axis has no maximum; the result is empty, as in PyTorch
        return x.copy()
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def softmax(input, dim=1):
    """Softmax along ``dim``, computed stably (see ``log_softmax``)."""
    func = "softmax"
    x = as_float_array(input, "input", func, ndims=tuple(range(1, 33)))
    return _softmax(x, _axis(dim, x.ndim, func))


def _softmax(x, dim):
    if x.size == 0:  # an empty axis has no maximum; the result is empty, as in PyTorch
        return x.copy()
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    e /= e.sum(axis=dim, keepdims=True)
    return e


def cross_entropy(input, target, reduction="mean"):
    """Cross-entropy between logits and class indices (log-softmax + negative log-likelihood).

    Parameters
    ----------
    input : array_like, shape (N, C)
        Unnormalised scores (logits).
    target : array_like of int, shape (N,)
        Class indices in [0, C).
    reduction : {'mean', 'sum', 'none'}
        Average over the batch, sum, or return the per-sample losses.

    Returns
    -------
    numpy scalar or ndarray of shape (N,)
        In the input's float dtype. The mean of an empty batch is NaN, as in PyTorch.
    """
    func = "cross_entropy"
    x, t = check_cross_entropy(func, input, target)
    return cross_entropy_checked(x, t, check_choice(reduction, "reduction", func, _REDUCTIONS))


def cross_entropy_checked(x, t, reduction):
    """cross_entropy for arguments checked by ``check_cross_entropy`` and a valid reduction."""
    shifted = x - x.max(axis=1, keepdims=True) if x.shape[0] else x
    lse = np.log(np.exp(shifted).sum(axis=1))
    losses = lse - shifted[np.arange(x.shape[0]), t]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum(dtype=x.dtype)
    if losses.size == 0:
        return x.dtype.type(np.nan)
    # the mean is taken in float64: float32 losses whose sum overflows may still have a finite mean
    return x.dtype.type(losses.mean(dtype=np.float64))


def _grad_scale(grad_output, reduction, shape, dtype, func):
    """grad_output checked for ``reduction``: an array of the per-sample losses' ``shape`` for
    'none', else a real number."""
    if reduction == "none":
        return as_float_array(grad_output, "grad_output", func, ndims=(len(shape),), dtype=dtype,
                              shape=shape)
    return check_float(grad_output, "grad_output", func, finite=False)


def cross_entropy_backward(input, target, reduction="mean", grad_output=1.0):
    """Gradient of ``cross_entropy`` with respect to its logits.

    Parameters
    ----------
    input, target, reduction
        As given to ``cross_entropy``.
    grad_output : float or array_like of shape (N,)
        Gradient of the final objective with respect to the loss (an (N,) array for
        ``reduction='none'``).

    Returns
    -------
    ndarray, shape (N, C)
        ``(softmax(input) - onehot(target)) * grad_output``, divided by N for 'mean'.
    """
    func = "cross_entropy_backward"
    x, t = check_cross_entropy(func, input, target)
    check_choice(reduction, "reduction", func, _REDUCTIONS)
    go = _grad_scale(grad_output, reduction, x.shape[:1], x.dtype, func)
    return cross_entropy_backward_checked(x, t, reduction, go)


def cross_entropy_backward_checked(x, t, reduction, grad_output):
    """cross_entropy_backward for checked arguments: ``grad_output`` a float, or for 'none' an
    (N,) array in x's dtype."""
    g = _softmax(x, 1)
    g[np.arange(x.shape[0]), t] -= 1
    if reduction == "none":
        g *= grad_output[:, None]
        return g
    scale = grad_output
    if reduction == "mean" and x.shape[0]:
        scale /= x.shape[0]
    g *= x.dtype.type(scale)
    return g


def mse_loss(input, target, reduction="mean"):
    """Mean squared error, as torch.nn.functional.mse_loss.

    Parameters
    ----------
    input, target : array_like of the same shape
    reduction : {'mean', 'sum', 'none'}

    Returns
    -------
    numpy scalar, or ndarray of the input's shape for ``reduction='none'``
    """
    func = "mse_loss"
    x, t = check_mse(func, input, target)
    return mse_loss_checked(x, t, check_choice(reduction, "reduction", func, _REDUCTIONS))


def mse_loss_checked(x, t, reduction):
    """mse_loss for arguments checked by ``check_mse`` and a valid reduction."""
    sq = np.square(x - t)
    if reduction == "none":
        return np.asarray(sq)  # a 0-d input gives a 0-d array, as in PyTorch
    if reduction == "sum":
        return sq.sum(dtype=x.dtype)
    if sq.size == 0:
        return x.dtype.type(np.nan)
    return x.dtype.type(sq.mean(dtype=np.float64))


def mse_loss_backward(input, target, reduction="mean", grad_output=1.0):
    """Gradient of ``mse_loss`` with respect to ``input``: ``2 (input - target)``, / size for 'mean'."""
    func = "mse_loss_backward"
    x, t = check_mse(func, input, target)
    check_choice(reduction, "reduction", func, _REDUCTIONS)
    go = _grad_scale(grad_output, reduction, x.shape, x.dtype, func)
    return mse_loss_backward_checked(x, t, reduction, go)


def mse_loss_backward_checked(x, t, reduction, grad_output):
    """mse_loss_backward for checked arguments: ``grad_output`` a float, or for 'none' an array of
    x's shape and dtype."""
    g = np.asarray(x - t)  # 0-d stays a 0-d array
    if reduction == "none":
        g *= 2 * grad_output
        return g
    scale = 2.0 * grad_output
    if reduction == "mean" and x.size:
        scale /= x.size
    g *= x.dtype.type(scale)
    return g


def dropout(input, p=0.5, training=True, rng=None, return_mask=False):
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    Parameters
    ----------
    input : array_like
    p : float in [0, 1]
        Probability of zeroing an element.
    training : bool
        When False the input is returned unchanged (and the mask is all ones).
    rng : numpy.random.Generator or int, optional
        Source of randomness (an int seeds a new Generator); a new unseeded Generator by default.
    return_mask : bool
        Also return the scaled mask that ``dropout_backward`` needs.

    Returns
    -------
    output : ndarray
    mask : ndarray, only with ``return_mask``
        ``output == input * mask``.
    """
    func = "dropout"
    x = as_float_array(input, "input", func, ndims=tuple(range(0, 33)))
    p = check_float(p, "p", func, minimum=0, maximum=1)
    if not training or p == 0:
        y, mask = x.copy(), np.ones_like(x)
    else:
        y, mask = dropout_checked(x, p, check_rng(rng, "rng", func) if p < 1 else None)
    return (y, mask) if return_mask else y


def dropout_checked(x, p, rng):
    """dropout in training mode for checked arguments: x a float array, p a float in (0, 1], rng
    a numpy Generator (unused for p == 1). Returns ``(output, mask)``."""
    if p == 1:
        mask = np.zeros_like(x)
    else:
        keep = rng.random(x.shape, dtype=np.float64) >= p
        mask = np.asarray(keep, dtype=x.dtype)  # 0-d stays a 0-d array
        mask *= x.dtype.type(1.0 / (1.0 - p))
    return np.asarray(x * mask), mask


def dropout_backward(grad_output, mask):
    """Gradient of ``dropout``: ``grad_output * mask`` with the mask returned by the forward pass."""
    func = "dropout_backward"
    gy = as_float_array(grad_output, "grad_output", func, ndims=tuple(range(0, 33)))
    m = as_float_array(mask, "mask", func, ndims=(gy.ndim,), dtype=gy.dtype, shape=gy.shape)
    return np.asarray(gy * m)

