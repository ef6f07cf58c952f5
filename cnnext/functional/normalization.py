"""Batch normalisation, forward and backward, with torch.nn.functional.batch_norm's semantics.

The input is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); every channel is normalised over
its M = N * L (or N * H * W, ...) values. All loops run in ``cnnext._kernels._norm``: one fused
kernel call per direction, parallel over the channels.

For layers: ``_batch_norm_forward`` is ``batch_norm`` returning ``(output, save_mean,
save_invstd)``, the per-channel statistics the output was normalised with (the batch's in training,
the running ones in evaluation), as float64 arrays of shape (C,); pass them, with the same
``training``, to ``batch_norm_backward`` (or to ``_batch_norm_backward``, which can skip
grad_input). Both take ``func``, the name errors are reported under ("BatchNorm2d", say).
"""
import math

import numpy as np

from cnnext._config import threads_for
from cnnext._kernels import _norm
from cnnext._validation import (
    as_float_array,
    check_bool,
    check_dtype,
    check_float,
    check_shape,
)

__all__ = ["batch_norm", "batch_norm_backward"]


def _input(input, func):
    """(x, x3): the checked input and its (N, C, S) view."""
    x = as_float_array(input, "input", func, ndims=(2, 3, 4, 5))
    N, C = x.shape[:2]
    return x, x.reshape(N, C, math.prod(x.shape[2:]))


def _channel_vector(v, name, func, C, dtype, default):
    """A per-channel argument (weight, bias, statistics) as a float64 (C,) array, rounded to
    ``dtype`` first (the input's precision) when that is float32."""
    if v is None:
        return np.full(C, default, dtype=np.float64)
    v = as_float_array(v, name, func, ndims=(1,), dtype=dtype)
    check_shape(v, (C,), name, func)
    return v.astype(np.float64)


def _running_stat(v, name, func, C):
    """A running statistic updated in place: a writable float32/float64 ndarray of shape (C,)."""
    if not isinstance(v, np.ndarray):
        raise TypeError(
            f"{func}: {name} must be a numpy array (it is updated in place in training), "
            f"got {type(v).__name__}"
        )
    check_dtype(v.dtype, name, func)
    check_shape(v, (C,), name, func)
    if not v.flags.writeable:
        raise ValueError(f"{func}: {name} is read-only, but training updates it in place")
    return v


def _batches_tracked(v, func):
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "iu" or v.size != 1:
        raise TypeError(
            f"{func}: num_batches_tracked must be an integer numpy array of one element (it is "
            f"incremented in place), got {type(v).__name__}"
            + (f" of dtype {v.dtype} and shape {v.shape}" if isinstance(v, np.ndarray) else "")
        )
    if not v.flags.writeable:
        raise ValueError(f"{func}: num_batches_tracked is read-only, but training increments it")
    return v


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, num_batches_tracked=None):
    """Batch normalisation over the channel axis, as torch.nn.functional.batch_norm.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, with the batch's mean and
    biased variance in training, the running statistics in evaluation.

    Parameters
    ----------
    input : array_like, shape (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W)
    running_mean, running_var : ndarray of shape (C,), or None
        Required in evaluation. In training, when given, updated in place:
        ``running = (1 - momentum) * running + momentum * batch_stat``, the variance unbiased
        (times M / (M - 1)). Both or neither must be given.
    weight, bias : array_like of shape (C,), optional
        The affine parameters (default ones and zeros).
    training : bool
        Normalise with the batch statistics (needs more than one value per channel).
    momentum : float in [0, 1], or None
        Weight of the batch statistics in the running ones; None for a cumulative average, with
        factor ``1 / num_batches_tracked``.
    eps : float >= 0
        Added to the variance.
    num_batches_tracked : integer ndarray of one element, optional
        Keyword only (cnnext): when given, incremented in place in training when the running
        statistics are updated, as BatchNorm's buffer in PyTorch. Needed for ``momentum=None``.

    Returns
    -------
    ndarray, shape and dtype of ``input``
    """
    return _batch_norm_forward(input, running_mean, running_var, weight, bias, training, momentum,
                               eps, num_batches_tracked, func="batch_norm")[0]


def _batch_norm_forward(input, running_mean, running_var, weight=None, bias=None, training=False,
                        momentum=0.1, eps=1e-5, num_batches_tracked=None, func="batch_norm"):
    """``batch_norm`` returning ``(output, save_mean, save_invstd)`` for its backward.

    ``save_mean`` and ``save_invstd`` are float64 arrays of shape (C,): in training the batch mean
    and ``1 / sqrt(biased batch variance + eps)``, in evaluation the running mean and
    ``1 / sqrt(running_var + eps)``. Errors name ``func``.
    """
    check_bool(training, "training", func)
    eps = check_float(eps, "eps", func, minimum=0)
    if momentum is not None:
        momentum = check_float(momentum, "momentum", func, minimum=0, maximum=1)
    x, x3 = _input(input, func)
    N, C, S = x3.shape
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{func}: running_mean and running_var must both be arrays or both be None")
    tracking = running_mean is not None
    w = _channel_vector(weight, "weight", func, C, x.dtype, 1.0)
    b = _channel_vector(bias, "bias", func, C, x.dtype, 0.0)
    y = np.empty_like(x)
    y3 = y.reshape(N, C, S)
    if not training:
        if not tracking:
            raise ValueError(
                f"{func}: running_mean and running_var are needed in evaluation (training=False)"
            )
        if num_batches_tracked is not None:
            _batches_tracked(num_batches_tracked, func)
        mean = _channel_vector(running_mean, "running_mean", func, C, x.dtype, 0.0)
        var = _channel_vector(running_var, "running_var", func, C, x.dtype, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            invstd = 1.0 / np.sqrt(var + eps)
        scale = w * invstd
        shift = b - mean * scale
        _norm.batch_norm_eval_forward(x3, scale, shift, y3, threads_for(x.size))
        return y, mean, invstd
    M = N * S
    if M < 2:
        raise ValueError(
            f"{func}: training needs more than 1 value per channel, got input of shape {x.shape}"
        )
    if tracking:
        running_mean = _running_stat(running_mean, "running_mean", func, C)
        running_var = _running_stat(running_var, "running_var", func, C)
        if num_batches_tracked is not None:
            _batches_tracked(num_batches_tracked, func)
        elif momentum is None:
            raise ValueError(
                f"{func}: momentum=None (a cumulative average) needs num_batches_tracked"
            )
    mean = np.empty(C)
    var = np.empty(C)
    invstd = np.empty(C)
    _norm.batch_norm_train_forward(x3, w, b, y3, mean, var, invstd, eps, threads_for(x.size))
    if tracking:
        if num_batches_tracked is not None:
            num_batches_tracked += 1
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked.reshape(-1)[0])
        else:
            factor = momentum
        # in float64, rounded once to the statistics' dtype
        running_mean[...] = (1.0 - factor) * running_mean.astype(np.float64) + factor * mean
        running_var[...] = ((1.0 - factor) * running_var.astype(np.float64)
                            + factor * (var * (M / (M - 1))))
    return y, mean, invstd


def batch_norm_backward(grad_output, input, weight, save_mean, save_invstd, training=True):
    """Gradients of ``batch_norm`` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape of ``input``
        Gradient of the loss with respect to batch_norm's output.
    input, weight
        As given to ``batch_norm`` (``weight`` may be None).
    save_mean, save_invstd : array_like, shape (C,)
        The statistics the forward normalised with. In training: the batch mean
        ``x.mean(axis=(0, 2, ...))`` and ``1 / sqrt(x.var(axis=(0, 2, ...)) + eps)``; in
        evaluation: ``running_mean`` and ``1 / sqrt(running_var + eps)``. cnnext's layers get them
        from ``_batch_norm_forward``.
    training : bool
        As given to ``batch_norm``: in training the statistics depend on the input, and grad_input
        has the terms through them.

    Returns
    -------
    grad_input : ndarray, shape of ``input``
    grad_weight : ndarray, shape (C,)
        ``sum(grad_output * xhat)`` over all but the channel axis (the gradient a weight of ones
        would get when ``weight`` is None).
    grad_bias : ndarray, shape (C,)
        ``sum(grad_output)`` over all but the channel axis.
    """
    return _batch_norm_backward(grad_output, input, weight, save_mean, save_invstd, training,
                                need_input=True, func="batch_norm_backward")


def _batch_norm_backward(grad_output, input, weight, save_mean, save_invstd, training=True,
                         need_input=True, func="batch_norm_backward"):
    """``batch_norm_backward`` with the option to skip grad_input (then returned as None)."""
    check_bool(training, "training", func)
    check_bool(need_input, "need_input", func)
    x, x3 = _input(input, func)
    N, C, S = x3.shape
    gy = as_float_array(grad_output, "grad_output", func, ndims=(x.ndim,), dtype=x.dtype)
    check_shape(gy, x.shape, "grad_output", func)
    w = _channel_vector(weight, "weight", func, C, x.dtype, 1.0)
    if save_mean is None or save_invstd is None:
        raise TypeError(f"{func}: save_mean and save_invstd must be arrays of shape ({C},), got None")
    mean = as_float_array(save_mean, "save_mean", func, ndims=(1,), dtype=np.float64)
    check_shape(mean, (C,), "save_mean", func)
    invstd = as_float_array(save_invstd, "save_invstd", func, ndims=(1,), dtype=np.float64)
    check_shape(invstd, (C,), "save_invstd", func)
    gx = np.empty_like(x) if need_input else np.empty((0, 0, 0), dtype=x.dtype)
    gw = np.empty(C)
    gb = np.empty(C)
    _norm.batch_norm_backward(gy.reshape(N, C, S), x3, w, mean, invstd,
                              gx.reshape(N, C, S) if need_input else gx, gw, gb, bool(training),
                              bool(need_input), threads_for(x.size))
    return (gx if need_input else None), gw.astype(x.dtype), gb.astype(x.dtype)
