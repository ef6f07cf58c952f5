"""Learning-rate schedules with PyTorch's interface: ``LRScheduler`` and ``CosineAnnealingLR``.

A scheduler changes ``group["lr"]`` of an optimizer's parameter groups. Call ``scheduler.step()``
after ``optimizer.step()``: once per epoch, or once per minibatch when ``T_max`` counts steps::

    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    for epoch in range(epochs):
        for xb, yb in loader:
            ...                  # zero_grad, forward, backward
            opt.step()
        sched.step()

Constructing a scheduler does not change the learning rates; it records them as the base rates
(``group["initial_lr"]``, as PyTorch does, so a scheduler can be resumed with ``last_epoch``).
"""
import bisect
import math

from cnnext._validation import check_bool, check_choice, check_float, check_int
from cnnext.optim.optimizers import Optimizer

__all__ = ["LRScheduler", "CosineAnnealingLR", "StepLR", "MultiStepLR", "LinearLR", "OneCycleLR",
           "SequentialLR", "ReduceLROnPlateau"]


class LRScheduler:
    """Base class: base rates, the epoch counter, ``step``, ``get_last_lr`` and ``state_dict``.

    Subclasses implement ``get_lr()``, the rates for the epoch ``self.last_epoch`` just reached.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    last_epoch : int
        Index of the last epoch done; -1 (default) starts a new schedule. To resume, pass the
        index reached before (the groups must then hold ``"initial_lr"``, as an optimizer
        restored from a ``state_dict`` taken under a scheduler does).
    """

    _state_keys = ("base_lrs", "last_epoch", "_step_count", "_last_lr")

    def __init__(self, optimizer, last_epoch=-1):
        func = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{func}: optimizer must be a cnnext.optim optimizer (SGD, Adam, AdamW), "
                            f"got {type(optimizer).__name__}")
        last_epoch = check_int(last_epoch, "last_epoch", func, minimum=-1)
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{func}: param_groups[{i}] has no 'initial_lr' to resume from with "
                               f"last_epoch={last_epoch}; restore the optimizer's state_dict first, "
                               f"or start a new schedule with last_epoch=-1")
        self.optimizer = optimizer
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._first_step()

    #: Schedules whose rate at step 0 differs from the optimizer's (LinearLR, OneCycleLR) set it
    #: when they are built, as PyTorch's do; the others leave the current rates.
    _changes_at_start = False

    def _first_step(self):
        """The step made at construction: advances the counter to 0 (or past a resumed epoch)."""
        self._step_count = 1
        self.last_epoch += 1
        if self.last_epoch == 0 and self._changes_at_start:
            for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
                group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def _restart(self):
        """Jump back to step 0 (SequentialLR hands over this way): the closed-form rates at 0."""
        self._step_count += 1
        self.last_epoch = 0
        values = self._closed_form(0) if hasattr(self, "_closed_form") else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_lr(self):
        """Return the rates for ``self.last_epoch`` (subclasses implement it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_lr")

    def step(self):
        """Advance one epoch (or step) and set every group's ``lr`` to the scheduled value."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """Return the learning rates set by the last ``step`` (one per parameter group)."""
        return list(self._last_lr)

    def state_dict(self):
        """Return the scheduler's state (everything but the optimizer) as a dict."""
        state = {k: v for k, v in self.__dict__.items() if k != "optimizer"}
        return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}

    def load_state_dict(self, state_dict):
        """Restore a state returned by ``state_dict``."""
        func = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{func}: state_dict must be a dict, got {type(state_dict).__name__}")
        missing = [k for k in self._state_keys if k not in state_dict]
        if missing:
            raise ValueError(f"{func}: state_dict lacks {missing}; pass what state_dict() returned")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"{func}: state_dict has {len(state_dict['base_lrs'])} base rates, the "
                             f"optimizer has {len(self.optimizer.param_groups)} parameter groups")
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v) for k, v in state_dict.items()})

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


class CosineAnnealingLR(LRScheduler):
    r"""Anneal each group's learning rate from its base value to ``eta_min`` along a half cosine.

    After ``t`` calls of ``step()`` the rate is

    .. math:: \eta_t = \eta_{min} + (\eta_{base} - \eta_{min}) \frac{1 + \cos(\pi t / T_{max})}{2}

    reaching ``eta_min`` at ``t = T_max`` and rising again after it (a period of ``2 * T_max``),
    as PyTorch's ``CosineAnnealingLR``. The update is PyTorch's recursive form, which scales the
    current ``group["lr"]``, so it composes with other changes of the rate.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    T_max : int
        Number of steps (epochs, or minibatches) of the half period, >= 1.
    eta_min : float
        The smallest rate, >= 0 (default 0).
    last_epoch : int
        -1 to start; see ``LRScheduler`` for resuming.

    Examples
    --------
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> sched = CosineAnnealingLR(opt, T_max=10)
    >>> for epoch in range(10):
    ...     train_one_epoch(model, opt)
    ...     sched.step()
    """

    _state_keys = LRScheduler._state_keys + ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = check_int(T_max, "T_max", "CosineAnnealingLR", minimum=1)
        self.eta_min = check_float(eta_min, "eta_min", "CosineAnnealingLR", minimum=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        """Return the rates for ``self.last_epoch`` from the current ones (PyTorch's recursion)."""
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if (t - 1 - T) % (2 * T) == 0:  # leaving the minimum: the ratio below would divide by 0
            rise = (1 - math.cos(math.pi / T)) / 2
            return [g["lr"] + (base - lo) * rise for base, g in zip(self.base_lrs, groups)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [ratio * (g["lr"] - lo) + lo for g in groups]

    def _closed_form(self, epoch):
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
                for base in self.base_lrs]


class StepLR(LRScheduler):
    """Multiply each group's rate by ``gamma`` every ``step_size`` steps, as PyTorch's ``StepLR``.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    step_size : int
        Steps between decays, >= 1.
    gamma : float
        Decay factor, > 0 (default 0.1).
    last_epoch : int
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = check_int(step_size, "step_size", "StepLR", minimum=1)
        self.gamma = check_float(gamma, "gamma", "StepLR", minimum=0.0, open_min=True)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _closed_form(self, epoch):
        return [base * self.gamma ** (epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply each group's rate by ``gamma`` at each milestone step, as PyTorch's ``MultiStepLR``.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    milestones : sequence of int
        Step indices (a milestone given twice decays twice).
    gamma : float
        Decay factor, > 0 (default 0.1).
    last_epoch : int
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"MultiStepLR: milestones must be a sequence of ints, got {milestones!r}")
        self.milestones = sorted(check_int(m, "milestones", "MultiStepLR", minimum=0) for m in milestones)
        self.gamma = check_float(gamma, "gamma", "MultiStepLR", minimum=0.0, open_min=True)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = self.milestones.count(self.last_epoch)
        return [group["lr"] * self.gamma ** hits for group in self.optimizer.param_groups]

    def _closed_form(self, epoch):
        return [base * self.gamma ** bisect.bisect_right(self.milestones, epoch) for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale each group's rate linearly from ``start_factor`` to ``end_factor`` over ``total_iters``
    steps, then keep it, as PyTorch's ``LinearLR`` (a warm-up).

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    start_factor : float
        In (0, 1] (default 1/3).
    end_factor : float
        In [0, 1] (default 1).
    total_iters : int
        Steps of the ramp, >= 1 (default 5).
    last_epoch : int
    """

    _changes_at_start = True

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = check_float(start_factor, "start_factor", "LinearLR", 0.0, 1.0, open_min=True)
        self.end_factor = check_float(end_factor, "end_factor", "LinearLR", 0.0, 1.0)
        self.total_iters = check_int(total_iters, "total_iters", "LinearLR", minimum=1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in groups]
        if self.last_epoch > self.total_iters:
            return [group["lr"] for group in groups]
        span = self.end_factor - self.start_factor
        factor = 1.0 + span / (self.total_iters * self.start_factor + (self.last_epoch - 1) * span)
        return [group["lr"] * factor for group in groups]

    def _closed_form(self, epoch):
        t = min(self.total_iters, epoch) / self.total_iters
        return [base * (self.start_factor + (self.end_factor - self.start_factor) * t)
                for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run schedulers one after another, switching at the milestones, as PyTorch's ``SequentialLR``.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    schedulers : sequence of LRScheduler
        Built on ``optimizer``; ``len(milestones) + 1`` of them.
    milestones : sequence of int
        Increasing step indices where the next scheduler takes over (it restarts from step 0).
    last_epoch : int
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        func = "SequentialLR"
        schedulers = list(schedulers)
        milestones = [check_int(m, "milestones", func, minimum=1) for m in milestones]
        if len(schedulers) != len(milestones) + 1 or not schedulers:
            raise ValueError(f"{func}: expected len(milestones) + 1 = {len(milestones) + 1} schedulers, "
                             f"got {len(schedulers)}")
        if milestones != sorted(milestones):
            raise ValueError(f"{func}: milestones must increase, got {milestones}")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler) or isinstance(s, SequentialLR):
                raise TypeError(f"{func}: schedulers[{i}] must be a scheduler, got {type(s).__name__}")
            if s.optimizer is not optimizer:
                raise ValueError(f"{func}: schedulers[{i}] is bound to another optimizer")
        self.optimizer = optimizer
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = check_int(last_epoch, "last_epoch", func, minimum=-1) + 1
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        for group in optimizer.param_groups:  # undo what the schedulers' first steps did
            group["lr"] = group["initial_lr"]
        for s in schedulers:
            s.last_epoch -= 1
        schedulers[0]._first_step()
        self._step_count = 1
        self._last_lr = schedulers[0].get_last_lr()

    def step(self):
        """Advance one step in the scheduler whose turn it is."""
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            s._restart()
        else:
            s.step()
        self._last_lr = s.get_last_lr()

    def state_dict(self):
        """The state, with each scheduler's own state under ``"_schedulers"``."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        """Restore a state returned by ``state_dict``."""
        state = dict(state_dict)
        inner = state.pop("_schedulers")
        self.__dict__.update(state)
        for s, sd in zip(self._schedulers, inner):
            s.load_state_dict(sd)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2017), as PyTorch's ``OneCycleLR``: the rate rises from
    ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of the steps, then falls to
    ``max_lr / div_factor / final_div_factor``; the momentum (SGD's ``momentum``, Adam's first beta)
    moves the opposite way between ``max_momentum`` and ``base_momentum``. Step it once per batch.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    max_lr : float or sequence of float
    total_steps : int, optional
        Or give ``epochs`` and ``steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
    pct_start : float
        Fraction of the steps spent rising, in (0, 1) (default 0.3).
    anneal_strategy : {'cos', 'linear'}
    cycle_momentum : bool
    base_momentum, max_momentum : float or sequence of float
    div_factor, final_div_factor : float
    three_phase : bool
        Rise, fall back to the initial rate, then anneal to the minimum (PyTorch's three_phase).
    last_epoch : int
    """

    _changes_at_start = True

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        func = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{func}: optimizer must be a cnnext.optim optimizer, got {type(optimizer).__name__}")
        if total_steps is not None:
            self.total_steps = check_int(total_steps, "total_steps", func, minimum=1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (check_int(epochs, "epochs", func, minimum=1)
                                * check_int(steps_per_epoch, "steps_per_epoch", func, minimum=1))
        else:
            raise ValueError(f"{func}: give total_steps, or epochs and steps_per_epoch")
        pct_start = check_float(pct_start, "pct_start", func, 0.0, 1.0, open_min=True, open_max=True)
        check_choice(anneal_strategy, "anneal_strategy", func, ("cos", "linear"))
        self._anneal = _cos_anneal if anneal_strategy == "cos" else _linear_anneal
        check_bool(cycle_momentum, "cycle_momentum", func)
        check_bool(three_phase, "three_phase", func)
        div_factor = check_float(div_factor, "div_factor", func, minimum=0.0, open_min=True)
        final_div_factor = check_float(final_div_factor, "final_div_factor", func, minimum=0.0, open_min=True)
        groups = optimizer.param_groups
        max_lrs = _per_group(max_lr, "max_lr", func, len(groups))
        if last_epoch == -1:
            for group, m in zip(groups, max_lrs):
                group["initial_lr"] = m / div_factor
                group["max_lr"] = m
                group["min_lr"] = group["initial_lr"] / final_div_factor
        up = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (2 * up, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                            (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                            (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            self._beta = "betas" in optimizer.defaults
            if not self._beta and "momentum" not in optimizer.defaults:
                raise ValueError(f"{func}: cycle_momentum needs an optimizer with momentum or betas")
            bases = _per_group(base_momentum, "base_momentum", func, len(groups))
            maxes = _per_group(max_momentum, "max_momentum", func, len(groups))
            if last_epoch == -1:
                for group, b, m in zip(groups, bases, maxes):
                    self._set_momentum(group, m)
                    group["base_momentum"], group["max_momentum"] = b, m
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self._beta:
            group["betas"] = (value,) + tuple(group["betas"][1:])
        else:
            group["momentum"] = value

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {step} times, more than total_steps={self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end or i == len(self._phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start = end
        return lrs


def _cos_anneal(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _linear_anneal(start, end, pct):
    return (end - start) * pct + start


def _per_group(value, name, func, n):
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{func}: {name} must have one value per parameter group ({n}), got {len(value)}")
        return [check_float(v, name, func, minimum=0.0) for v in value]
    return [check_float(value, name, func, minimum=0.0)] * n


class ReduceLROnPlateau:
    """Divide the rates by ``1 / factor`` when a metric stops improving, as PyTorch's
    ``ReduceLROnPlateau``: call ``step(metric)`` after each evaluation.

    Parameters
    ----------
    optimizer : cnnext.optim.Optimizer
    mode : {'min', 'max'}
        Whether lower or higher metric values are better.
    factor : float
        In (0, 1) (default 0.1).
    patience : int
        Steps without improvement before the rate is reduced (default 10).
    threshold : float
        Minimal change counted as an improvement (default 1e-4).
    threshold_mode : {'rel', 'abs'}
    cooldown : int
        Steps to wait after a reduction before counting again.
    min_lr : float or sequence of float
    eps : float
        Smaller changes of the rate are skipped.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        func = "ReduceLROnPlateau"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{func}: optimizer must be a cnnext.optim optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.mode = check_choice(mode, "mode", func, ("min", "max"))
        self.factor = check_float(factor, "factor", func, 0.0, 1.0, open_min=True, open_max=True)
        self.patience = check_int(patience, "patience", func, minimum=0)
        self.threshold = check_float(threshold, "threshold", func, minimum=0.0)
        self.threshold_mode = check_choice(threshold_mode, "threshold_mode", func, ("rel", "abs"))
        self.cooldown = check_int(cooldown, "cooldown", func, minimum=0)
        self.min_lrs = _per_group(min_lr, "min_lr", func, len(optimizer.param_groups))
        self.eps = check_float(eps, "eps", func, minimum=0.0)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [float(group["lr"]) for group in optimizer.param_groups]

    def _is_better(self, a):
        if self.mode == "min":
            return a < (self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold)
        return a > (self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold)

    def step(self, metrics):
        """Record one value of the monitored metric; reduce the rates after ``patience`` bad ones."""
        current = check_float(metrics, "metrics", "ReduceLROnPlateau.step", finite=False)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, low in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, low)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The current learning rates, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self):
        """The state (everything but the optimizer) as a dict."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a state returned by ``state_dict``."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"ReduceLROnPlateau.load_state_dict: state_dict must be a dict, "
                            f"got {type(state_dict).__name__}")
        self.__dict__.update(state_dict)
