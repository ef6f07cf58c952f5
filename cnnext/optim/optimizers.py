"""Optimizers with PyTorch's update rules and state: SGD, Adam and AdamW.

Construct one over ``model.parameters()`` (or a list of parameter-group dicts, as in PyTorch),
then per step: ``opt.zero_grad()``, forward, ``model.backward(...)``, ``opt.step()``. Updates are done
in place on ``Parameter.data`` in the parameter's dtype.
"""
import math

import numpy as np

from cnnext._validation import check_bool, check_float
from cnnext.nn.module import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``state_dict``.

    Parameters
    ----------
    params : iterable of Parameter, or of dicts with a "params" entry and per-group options
    defaults : dict
        Option values for groups that do not set them.
    """

    def __init__(self, params, defaults):
        owner = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{owner}: params must be an iterable of Parameters (e.g. model.parameters()), "
                            f"got a single Parameter")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(f"{owner}: params must be an iterable of Parameters, got "
                            f"{type(params).__name__}") from None
        if not groups:
            raise ValueError(f"{owner}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        seen = set()
        for g in groups:
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError(f"{owner}: parameter groups must be dicts with a 'params' entry")
            plist = list(g["params"]) if not isinstance(g["params"], Parameter) else [g["params"]]
            for p in plist:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{owner}: params must hold cnnext.nn.Parameter objects, got "
                                    f"{type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{owner}: a parameter appears in more than one group or twice")
                seen.add(id(p))
            unknown = set(g) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{owner}: unknown option(s) {sorted(unknown)} in a parameter group")
            group = dict(self.defaults)
            group.update({k: v for k, v in g.items() if k != "params"})
            self._check_group(group)
            group["params"] = plist
            self.param_groups.append(group)

    def _check_group(self, group):
        pass

    def zero_grad(self):
        """Set the gradient of every parameter to zero."""
        for g in self.param_groups:
            for p in g["params"]:
                p.grad[...] = 0

    def step(self):
        """Update every parameter from its gradient (subclasses implement it)."""
        raise NotImplementedError

    def state_dict(self):
        """Return the optimizer state as PyTorch lays it out: {'state': {index: {...}}, 'param_groups': [...]}.

        Parameters are referred to by their position across the groups; arrays are copied.
        """
        index, state, groups = 0, {}, []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                if p in self.state:
                    state[index] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                    for k, v in self.state[p].items()}
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a state saved by ``state_dict`` for the same parameter list."""
        owner = f"{type(self).__name__}.load_state_dict"
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if groups is None or "state" not in state_dict:
            raise ValueError(f"{owner}: expected a dict with 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"{owner}: the saved parameter groups do not match this optimizer's")
        params = [p for g in self.param_groups for p in g["params"]]
        new_state = {}
        for i, s in state_dict["state"].items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"{owner}: state refers to parameter {i}, but there are {len(params)}")
            p = params[i]
            entry = {}
            for k, v in s.items():
                if isinstance(v, np.ndarray) or hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                    v = np.array(v, dtype=p.data.dtype)
                    if v.shape != p.data.shape:
                        raise ValueError(f"{owner}: state {k!r} of parameter {i} has shape {v.shape}, "
                                         f"expected {p.data.shape}")
                entry[k] = v
            new_state[p] = entry
        for g, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = v
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay.

    Per parameter, exactly as torch.optim.SGD::

        g = grad + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g  (later steps)
        g = g + momentum * buf if nesterov else buf  (when momentum != 0)
        p -= lr * g

    Parameters
    ----------
    params : iterable of Parameter or of group dicts
    lr : float
    momentum, dampening, weight_decay : float, >= 0
    nesterov : bool
        Needs momentum > 0 and dampening == 0.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def _check_group(self, g):
        o = "SGD"
        g["lr"] = check_float(g["lr"], "lr", o, minimum=0.0)
        g["momentum"] = check_float(g["momentum"], "momentum", o, minimum=0.0)
        g["dampening"] = check_float(g["dampening"], "dampening", o, minimum=0.0)
        g["weight_decay"] = check_float(g["weight_decay"], "weight_decay", o, minimum=0.0)
        g["nesterov"] = check_bool(g["nesterov"], "nesterov", o)
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError(f"{o}: nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={g['momentum']}, dampening={g['dampening']}")

    def step(self):
        """Apply one SGD update to every parameter."""
        for g in self.param_groups:
            lr, mom, damp = g["lr"], g["momentum"], g["dampening"]
            wd, nesterov = g["weight_decay"], g["nesterov"]
            for p in g["params"]:
                d = p.grad
                if wd:
                    d = d + p.data.dtype.type(wd) * p.data
                if mom:
                    st = self.state.setdefault(p, {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = np.array(d, copy=True)
                    else:
                        buf *= p.data.dtype.type(mom)
                        buf += p.data.dtype.type(1 - damp) * d
                    d = d + p.data.dtype.type(mom) * buf if nesterov else buf
                p.data -= p.data.dtype.type(lr) * d


class Adam(Optimizer):
    """Adam (Kingma and Ba), with PyTorch's update rule, optional AMSGrad and L2 weight decay.

    Per parameter, at step t::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : iterable of Parameter or of group dicts
    lr : float
    betas : (float, float), each in [0, 1)
    eps, weight_decay : float
    amsgrad : bool
        Use the running maximum of v (AMSGrad).
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _check_group(self, g):
        o = type(self).__name__
        g["lr"] = check_float(g["lr"], "lr", o, minimum=0.0)
        g["eps"] = check_float(g["eps"], "eps", o, minimum=0.0)
        g["weight_decay"] = check_float(g["weight_decay"], "weight_decay", o, minimum=0.0)
        b = g["betas"]
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise ValueError(f"{o}: betas must be a pair of floats in [0, 1), got {b!r}")
        g["betas"] = (check_float(b[0], "betas[0]", o, 0.0, 1.0, open_max=True),
                      check_float(b[1], "betas[1]", o, 0.0, 1.0, open_max=True))
        g["amsgrad"] = check_bool(g["amsgrad"], "amsgrad", o)

    def step(self):
        """Apply one Adam update to every parameter."""
        for g in self.param_groups:
            lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
            for p in g["params"]:
                dt = p.data.dtype.type
                st = self.state.get(p)
                if st is None:
                    st = self.state[p] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                          "exp_avg_sq": np.zeros_like(p.data)}
                    if g["amsgrad"]:
                        st["max_exp_avg_sq"] = np.zeros_like(p.data)
                st["step"] += 1
                t = st["step"]
                grad = p.grad
                if wd:
                    if self._decoupled:
                        p.data *= dt(1 - lr * wd)
                    else:
                        grad = grad + dt(wd) * p.data
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m += dt(1 - b1) * (grad - m)
                v *= dt(b2)
                v += dt(1 - b2) * grad * grad
                if g["amsgrad"]:
                    vmax = st["max_exp_avg_sq"]
                    np.maximum(vmax, v, out=vmax)
                    v = vmax
                bc1 = 1 - b1 ** t
                bc2_sqrt = math.sqrt(1 - b2 ** t)
                denom = np.sqrt(v)
                denom /= dt(bc2_sqrt)
                denom += dt(eps)
                p.data -= dt(lr / bc1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as torch.optim.AdamW.

    Each step first shrinks the parameter, ``p *= 1 - lr * weight_decay``, then applies the Adam
    update without weight decay in the gradient. Default ``weight_decay=1e-2``.
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton), with PyTorch's update rule.

    Per parameter::

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        a = alpha * a + (1 - alpha) * g                     (centered only)
        d = sqrt(v - a * a) + eps  if centered  else  sqrt(v) + eps
        buf = momentum * buf + g / d;  p -= lr * buf        (momentum > 0)
        p -= lr * g / d                                    (otherwise)

    Parameters
    ----------
    params : iterable of Parameter or of group dicts
    lr : float
    alpha : float
        Smoothing constant in [0, 1] (default 0.99).
    eps, weight_decay, momentum : float, >= 0
    centered : bool
        Normalise by the estimated variance instead of the second moment.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _check_group(self, g):
        o = "RMSprop"
        g["lr"] = check_float(g["lr"], "lr", o, minimum=0.0)
        g["alpha"] = check_float(g["alpha"], "alpha", o, 0.0, 1.0)
        g["eps"] = check_float(g["eps"], "eps", o, minimum=0.0)
        g["weight_decay"] = check_float(g["weight_decay"], "weight_decay", o, minimum=0.0)
        g["momentum"] = check_float(g["momentum"], "momentum", o, minimum=0.0)
        check_bool(g["centered"], "centered", o)

    def step(self):
        """Apply one RMSprop update to every parameter."""
        for g in self.param_groups:
            for p in g["params"]:
                t = p.data.dtype.type
                d = p.grad
                if g["weight_decay"]:
                    d = d + t(g["weight_decay"]) * p.data
                st = self.state.setdefault(p, {})
                if "square_avg" not in st:
                    st["step"] = 0
                    st["square_avg"] = np.zeros_like(p.data)
                    if g["centered"]:
                        st["grad_avg"] = np.zeros_like(p.data)
                    if g["momentum"]:
                        st["momentum_buffer"] = np.zeros_like(p.data)
                st["step"] += 1
                v = st["square_avg"]
                v *= t(g["alpha"])
                v += t(1 - g["alpha"]) * d * d
                if g["centered"]:
                    a = st["grad_avg"]
                    a += t(1 - g["alpha"]) * (d - a)  # PyTorch's lerp
                    denom = np.sqrt(v - a * a) + t(g["eps"])
                else:
                    denom = np.sqrt(v) + t(g["eps"])
                if g["momentum"]:
                    buf = st["momentum_buffer"]
                    buf *= t(g["momentum"])
                    buf += d / denom
                    p.data -= t(g["lr"]) * buf
                else:
                    p.data -= t(g["lr"]) * (d / denom)
