"""Central-difference gradient check of a module's input and parameter gradients."""
import copy

import numpy as np

from cnnext._validation import as_float_array, check_bool, check_float
from cnnext.nn.module import Module

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by ``gradcheck`` when analytic and numerical gradients disagree."""


def _rng_states(module):
    """Snapshot every numpy Generator held by the module tree (e.g. Dropout's), to replay them."""
    gens = []
    for m in module.modules():
        for v in m.__dict__.values():
            if isinstance(v, np.random.Generator):
                gens.append((v, copy.deepcopy(v.bit_generator.state)))
    return gens


def _restore(gens):
    for g, state in gens:
        g.bit_generator.state = copy.deepcopy(state)


def gradcheck(module, x, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True):
    """Compare a module's backward pass with central differences of its forward pass.

    The check runs in float64 on a copy of the module (the module itself is not changed). With a
    fixed random output weighting ``v``, the scalar ``L = sum(forward(x) * v)`` is differentiated
    numerically with respect to every element of ``x`` and of every parameter,
    ``(L(a + eps) - L(a - eps)) / (2 eps)``, and compared with ``backward(v)`` and the
    accumulated parameter gradients. Random modules (Dropout) replay the same mask at every
    evaluation.

    Parameters
    ----------
    module : cnnext.nn.Module
        A layer or model with ``forward`` and ``backward``.
    x : array_like
        Input to check at; converted to float64. Keep it small: the forward pass runs twice per
        element of ``x`` and of every parameter.
    eps : float
        Finite-difference step.
    atol, rtol : float
        An element passes when ``|analytic - numerical| <= atol + rtol * |numerical|``.
    seed : int
        Seed of the output weighting ``v``.
    raise_exception : bool
        Raise GradcheckError on failure (default) or return False.

    Returns
    -------
    bool
        True when every gradient matches.

    Raises
    ------
    GradcheckError
        With a report naming each mismatching gradient, its worst element and both values.
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck: module must be a cnnext.nn.Module, got {type(module).__name__}")
    eps = check_float(eps, "eps", "gradcheck", minimum=0, open_min=True)
    atol = check_float(atol, "atol", "gradcheck", minimum=0)
    rtol = check_float(rtol, "rtol", "gradcheck", minimum=0)
    raise_exception = check_bool(raise_exception, "raise_exception", "gradcheck")
    m = copy.deepcopy(module).to(np.float64)
    x = np.array(as_float_array(x, "input", "gradcheck", ndims=range(0, 33), dtype=np.float64), copy=True)
    gens = _rng_states(m)

    def f():
        _restore(gens)
        return m(x)

    y = f()
    v = np.random.default_rng(seed).standard_normal(np.shape(y))
    m.zero_grad()
    _restore(gens)
    y = m(x)
    gx = m.backward(v)
    targets = [("input", x, np.asarray(gx, dtype=np.float64))]
    targets += [(name, p.data, p.grad.copy()) for name, p in m.named_parameters()]

    failures = []
    for name, arr, analytic in targets:
        numeric = np.empty_like(arr)
        flat, nflat = arr.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps
            lp = float(np.sum(f() * v))
            flat[i] = orig - eps
            lm = float(np.sum(f() * v))
            flat[i] = orig
            nflat[i] = (lp - lm) / (2 * eps)
        if analytic.shape != numeric.shape:
            failures.append(f"  {name}: analytic gradient has shape {analytic.shape}, expected {numeric.shape}")
            continue
        err = np.abs(analytic - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        if bad.any():
            k = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
            failures.append(
                f"  {name}: {int(bad.sum())} of {bad.size} elements differ; worst at index {tuple(map(int, k))}: "
                f"analytic {analytic[k]:.8g}, numerical {numeric[k]:.8g} (|diff| {err[k]:.3g}, "
                f"atol {atol}, rtol {rtol})"
            )
    if failures:
        if raise_exception:
            raise GradcheckError(f"gradcheck failed for {type(module).__name__}:\n" + "\n".join(failures))
        return False
    return True
