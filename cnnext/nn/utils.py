"""Gradient utilities: ``clip_grad_norm_`` and ``clip_grad_value_``, as in ``torch.nn.utils``."""
import math

import numpy as np

from cnnext._validation import check_bool, check_float
from cnnext.nn.module import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _params(parameters, func):
    if isinstance(parameters, Parameter):
        return [parameters]
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"{func}: parameters must be a Parameter or an iterable of them, "
                        f"got {type(parameters).__name__}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{func}: parameters[{i}] must be a cnnext.nn.Parameter, got {type(p).__name__}")
    return params


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients together, as if concatenated into one vector; gradients
    are multiplied by ``min(1, max_norm / (norm + 1e-6))``, PyTorch's rule.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
    max_norm : float
        >= 0.
    norm_type : float
        p of the p-norm (> 0; ``inf`` for the largest absolute value).
    error_if_nonfinite : bool
        Raise RuntimeError when the norm is inf or NaN (otherwise the gradients become NaN, as in
        PyTorch).

    Returns
    -------
    float
        The joint norm before clipping.
    """
    func = "clip_grad_norm_"
    params = _params(parameters, func)
    max_norm = check_float(max_norm, "max_norm", func, minimum=0.0)
    norm_type = check_float(norm_type, "norm_type", func, minimum=0.0, open_min=True, finite=False)
    check_bool(error_if_nonfinite, "error_if_nonfinite", func)
    if not params:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(p.grad))) if p.grad.size else 0.0 for p in params)
    else:
        total = sum(float(np.sum(np.abs(p.grad.astype(np.float64)) ** norm_type)) for p in params)
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"{func}: the total norm of order {norm_type} of the gradients is {total}; "
                           "pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0 or not math.isfinite(total):
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
    clip_value : float
        >= 0.
    """
    func = "clip_grad_value_"
    params = _params(parameters, func)
    v = check_float(clip_value, "clip_value", func, minimum=0.0)
    for p in params:
        np.clip(p.grad, -v, v, out=p.grad)
