"""Batched NCHW operations with torch.nn.functional's names and semantics.

Every other API of cnnext (the learn_dl layers, ``cnnext.nn``) computes through these functions.
Inputs are (N, C, H, W) arrays, or single (C, H, W) samples; float32 and float64 are computed in their
own precision, integer and bool inputs in float64.
"""
from cnnext.functional.activation import (
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    tanh,
    tanh_derivative,
)
from cnnext.functional.conv import conv2d, conv2d_backward
from cnnext.functional.linear import linear, linear_backward
from cnnext.functional.loss import (
    cross_entropy,
    cross_entropy_backward,
    dropout,
    dropout_backward,
    log_softmax,
    mse_loss,
    mse_loss_backward,
    softmax,
)
from cnnext.functional.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from cnnext.functional.normalization import batch_norm, batch_norm_backward
from cnnext.functional.adaptive import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
)

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "relu",
    "relu_derivative",
    "sigmoid",
    "sigmoid_derivative",
    "tanh",
    "tanh_derivative",
    "linear",
    "linear_backward",
    "log_softmax",
    "softmax",
    "cross_entropy",
    "cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "dropout",
    "dropout_backward",
    "batch_norm",
    "batch_norm_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
]
