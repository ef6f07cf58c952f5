"""Optimizers with PyTorch's update rules and state (``SGD``, ``Adam``, ``AdamW``), and schedules.

Construct one over ``model.parameters()``, then per step: ``opt.zero_grad()``, forward,
``model.backward(...)``, ``opt.step()``. ``create_optimizer("adam", params, lr=...)`` picks one by
name; the schedules of ``cnnext.optim.lr_scheduler`` (``StepLR``, ``MultiStepLR``, ``CosineAnnealingLR``,
``OneCycleLR``, ``LinearLR``, ``SequentialLR``, ``ReduceLROnPlateau``) change the learning rate.
"""
from cnnext._validation import check_choice
from cnnext.optim import lr_scheduler
from cnnext.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from cnnext.optim.optimizers import SGD, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "OPTIMIZERS", "create_optimizer", "LRScheduler",
           "CosineAnnealingLR", "StepLR", "MultiStepLR", "LinearLR", "OneCycleLR", "SequentialLR",
           "ReduceLROnPlateau", "lr_scheduler"]

#: The optimizers ``create_optimizer`` knows, by lower-case name.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def create_optimizer(name, params, **options):
    """Return the optimizer called ``name`` over ``params``.

    Parameters
    ----------
    name : {'sgd', 'adam', 'adamw'}
        ``SGD``, ``Adam`` or ``AdamW``.
    params : iterable of Parameter or of parameter-group dicts
        As for the optimizer's constructor (e.g. ``model.parameters()``).
    **options
        The optimizer's own options (``lr``, ``momentum``, ``weight_decay``, ...); those not given
        keep the optimizer's defaults.

    Returns
    -------
    Optimizer

    Examples
    --------
    >>> opt = create_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    """
    name = check_choice(name, "name", "create_optimizer", tuple(OPTIMIZERS))
    return OPTIMIZERS[name](params, **options)
