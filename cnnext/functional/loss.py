"""Softmax, losses and dropout, with their gradients.

``cross_entropy`` fuses log-softmax and the negative log-likelihood: the logits are shifted by their
row maximum before exponentiating, so it neither overflows nor loses the small probabilities. Each loss
has a ``*_backward`` function giving the gradient with respect to its first argument.
"""
import numpy as np

from cnnext._validation import (
    as_float_array,
    check_choice,
    check_float,
    check_int,
    check_rng,
    check_shape,
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
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def softmax(input, dim=1):
    """Softmax along ``dim``, computed stably (see ``log_softmax``)."""
    func = "softmax"
    x = as_float_array(input, "input", func, ndims=tuple(range(1, 33)))
    dim = _axis(dim, x.ndim, func)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    e /= e.sum(axis=dim, keepdims=True)
    return e


def _check_ce(func, input, target, reduction):
    x = as_float_array(input, "input", func, ndims=(2,))
    check_choice(reduction, "reduction", func, _REDUCTIONS)
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{func}: target must hold integer class indices, got dtype {t.dtype} "
            f"(convert labels with target.astype(np.int64))"
        )
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{func}: target must be 1-D with one class index per row of input "
            f"(shape ({x.shape[0]},)), got shape {t.shape}"
        )
    n, c = x.shape
    if n and (t.min() < 0 or t.max() >= c):
        raise ValueError(
            f"{func}: target class indices must lie in [0, {c}) for {c} classes, "
            f"got values from {t.min()} to {t.max()}"
        )
    return x, t.astype(np.intp, copy=False)


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
    x, t = _check_ce("cross_entropy", input, target, reduction)
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
    x, t = _check_ce(func, input, target, reduction)
    g = softmax(x, dim=1)
    g[np.arange(x.shape[0]), t] -= 1
    if reduction == "none":
        go = as_float_array(grad_output, "grad_output", func, ndims=(1,), dtype=x.dtype)
        check_shape(go, (x.shape[0],), "grad_output", func)
        g *= go[:, None]
        return g
    scale = float(grad_output)
    if reduction == "mean" and x.shape[0]:
        scale /= x.shape[0]
    g *= x.dtype.type(scale)
    return g


def _check_mse(func, input, target, reduction):
    x = as_float_array(input, "input", func, ndims=tuple(range(0, 33)))
    t = as_float_array(target, "target", func, ndims=tuple(range(0, 33)), dtype=x.dtype)
    check_shape(t, x.shape, "target", func)
    check_choice(reduction, "reduction", func, _REDUCTIONS)
    return x, t


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
    x, t = _check_mse("mse_loss", input, target, reduction)
    sq = np.square(x - t)
    if reduction == "none":
        return sq
    if reduction == "sum":
        return sq.sum(dtype=x.dtype)
    if sq.size == 0:
        return x.dtype.type(np.nan)
    return x.dtype.type(sq.mean(dtype=np.float64))


def mse_loss_backward(input, target, reduction="mean", grad_output=1.0):
    """Gradient of ``mse_loss`` with respect to ``input``: ``2 (input - target)``, / size for 'mean'."""
    func = "mse_loss_backward"
    x, t = _check_mse(func, input, target, reduction)
    g = x - t
    if reduction == "none":
        go = as_float_array(grad_output, "grad_output", func, ndims=(x.ndim,), dtype=x.dtype)
        check_shape(go, x.shape, "grad_output", func)
        g *= 2 * go
        return g
    scale = 2.0 * float(grad_output)
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
        mask = np.ones_like(x)
    elif p == 1:
        mask = np.zeros_like(x)
    else:
        rng = check_rng(rng, "rng", func)
        keep = rng.random(x.shape, dtype=np.float64) >= p
        mask = keep.astype(x.dtype)
        mask *= x.dtype.type(1.0 / (1.0 - p))
    y = x * mask
    return (y, mask) if return_mask else y


def dropout_backward(grad_output, mask):
    """Gradient of ``dropout``: ``grad_output * mask`` with the mask returned by the forward pass."""
    func = "dropout_backward"
    gy = as_float_array(grad_output, "grad_output", func, ndims=tuple(range(0, 33)))
    m = as_float_array(mask, "mask", func, ndims=(gy.ndim,), dtype=gy.dtype)
    check_shape(m, gy.shape, "mask", func)
    return gy * m

