"""Layers, losses and models for training code, with a PyTorch-like surface.

Every module has ``forward(x)`` (also ``module(x)``), ``backward(grad_output)`` returning the input
gradient and accumulating parameter gradients, ``parameters()``, ``zero_grad()``, ``train()``/``eval()``,
``state_dict()``/``load_state_dict()`` with PyTorch's key names. Arithmetic runs in
``cnnext.functional``. Optimizers are in ``cnnext.optim``.

Examples
--------
>>> import numpy as np
>>> from cnnext import nn, optim
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
...                       nn.Flatten(), nn.Linear(8 * 4 * 4, 10, rng=rng))
>>> criterion = nn.CrossEntropyLoss()
>>> opt = optim.Adam(model.parameters(), lr=1e-2)
>>> x, y = rng.random((16, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 16)
>>> opt.zero_grad()
>>> loss = criterion(model(x), y)
>>> _ = model.backward(criterion.backward())
>>> opt.step()
"""
from cnnext.nn.layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from cnnext.nn.normalization import BatchNorm1d, BatchNorm2d
from cnnext.nn.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d
from cnnext.nn.loss import CrossEntropyLoss, MSELoss
from cnnext.nn import ops, utils
from cnnext.nn.module import Identity, Module, ModuleDict, ModuleList, Parameter, Sequential

__all__ = [
    "Parameter",
    "Module",
    "Sequential",
    "ModuleList",
    "ModuleDict",
    "Identity",
    "ops",
    "utils",
    "Conv2d",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "Dropout",
    "CrossEntropyLoss",
    "MSELoss",
]
