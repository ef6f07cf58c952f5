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
import math

from cnnext._validation import check_float, check_int
from cnnext.optim.optimizers import Optimizer

__all__ = ["LRScheduler", "CosineAnnealingLR"]


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
        # The first step (made here) only advances the counter: the current rates stay.
        self._step_count = 1
        self.last_epoch += 1
        self._last_lr = [float(group["lr"]) for group in optimizer.param_groups]

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
