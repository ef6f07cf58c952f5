"""Optimizers with PyTorch's update rules and state (``SGD``, ``Adam``, ``AdamW``).

Construct one over ``model.parameters()``, then per step: ``opt.zero_grad()``, forward,
``model.backward(...)``, ``opt.step()``.
"""
from cnnext.optim.optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
