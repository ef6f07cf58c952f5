"""The learn_dl tutorial API: ``ConvLayer``, ``MaxPoolingLayer``, ``Filter``, the activators and helpers.

hanbt's learn_dl ``cnn.py`` ("write a CNN by hand") with the same names, signatures and attributes, so
the tutorial's code runs unchanged, with every convolution and pooling computed by
``cnnext.functional`` and learn_dl's bugs fixed. ``cnnext`` re-exports every name listed here.
"""
from cnnext.learn_dl.activators import IdentityActivator, ReluActivator, SigmoidActivator, TanhActivator
from cnnext.learn_dl.layers import (
    ConvLayer,
    Filter,
    MaxPoolingLayer,
    conv,
    element_wise_op,
    get_max_index,
    get_patch,
    padding,
)

__all__ = [
    "ConvLayer",
    "MaxPoolingLayer",
    "Filter",
    "IdentityActivator",
    "ReluActivator",
    "SigmoidActivator",
    "TanhActivator",
    "padding",
    "conv",
    "get_patch",
    "element_wise_op",
    "get_max_index",
]
