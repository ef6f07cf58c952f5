"""Errors carry context (issue 6, item 7).

A sweep over the public API with one bad argument at a time: every exception is a ValueError or
TypeError whose message names the function (``func:`` at the start), the offending argument, and
its value or shape. Also: parameters too large for the kernels' Py_ssize_t are refused by name
(not an OverflowError), and validating a pooling window does not allocate per kernel tap.
"""
import re
import sys

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext import nn, optim
from cnnext._config import force_conv_algorithm
from cnnext._validation import check_pool2d
from helpers import child_env

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))  # groups=2
G = np.zeros((1, 1, 2, 2))
I = np.zeros((1, 1, 2, 2), dtype=np.int64)
BIG = 2**70


def _layer():
    return cnnext.ConvLayer(5, 5, 3, 3, 3, 2, 1, 1, cnnext.IdentityActivator(), 0.1)


def _after_forward(module, x):
    module(x)
    return module


# id -> (exception type(s), call, function name, [fragments that must appear in the message])
# The fragments are the argument's name and its offending value or shape.
CASES = {
    "conv2d_input_ndim": (ValueError, lambda: F.conv2d(np.zeros((6, 6)), W), "conv2d", ["input", "(6, 6)"]),
    "conv2d_weight_ndim": (ValueError, lambda: F.conv2d(X, np.zeros((6, 2, 3))), "conv2d", ["weight", "(6, 2, 3)"]),
    "conv2d_bias_shape": (ValueError, lambda: F.conv2d(X, W, np.zeros(5), groups=2), "conv2d", ["bias", "(5,)", "(6,)"]),
    "conv2d_stride": (ValueError, lambda: F.conv2d(X, W, stride=(1, 0), groups=2), "conv2d", ["stride", "(1, 0)"]),
    "conv2d_stride_type": (TypeError, lambda: F.conv2d(X, W, stride=1.5, groups=2), "conv2d", ["stride", "1.5"]),
    "conv2d_padding": (ValueError, lambda: F.conv2d(X, W, padding=-2, groups=2), "conv2d", ["padding", "-2"]),
    "conv2d_padding_str": (ValueError, lambda: F.conv2d(X, W, padding="full", groups=2), "conv2d", ["padding", "'full'"]),
    "conv2d_same_stride": (ValueError, lambda: F.conv2d(X, W, padding="same", stride=2, groups=2), "conv2d",
                           ["padding='same'", "stride", "(2, 2)"]),
    "conv2d_dilation": (ValueError, lambda: F.conv2d(X, W, dilation=0, groups=2), "conv2d", ["dilation", "0"]),
    "conv2d_dilation_too_big": (ValueError, lambda: F.conv2d(X, W, dilation=9, groups=2), "conv2d",
                                ["dilation", "(9, 9)", "(6, 2, 3, 3)", "(2, 4, 6, 6)"]),
    "conv2d_groups": (ValueError, lambda: F.conv2d(X, W, groups=3), "conv2d", ["groups=3", "4"]),
    "conv2d_groups_type": (TypeError, lambda: F.conv2d(X, W, groups="2"), "conv2d", ["groups", "'2'"]),
    "conv2d_channels": (ValueError, lambda: F.conv2d(X, W), "conv2d", ["weight", "(6, 2, 3, 3)", "(2, 4, 6, 6)"]),
    "conv2d_dtype": (TypeError, lambda: F.conv2d(X.astype(complex), W), "conv2d", ["input", "complex128"]),
    "conv2d_float16": (TypeError, lambda: F.conv2d(X, W.astype(np.float16), groups=2), "conv2d", ["weight", "float16"]),
    "conv2d_empty_channels": (ValueError, lambda: F.conv2d(np.zeros((2, 0, 6, 6)), W), "conv2d", ["input", "(2, 0, 6, 6)"]),
    "conv2d_stride_overflow": (ValueError, lambda: F.conv2d(X, W, stride=BIG, groups=2), "conv2d", ["stride", str(BIG)]),
    "conv2d_backward_grad": (ValueError, lambda: F.conv2d_backward(np.zeros((2, 6, 3, 3)), X, W, groups=2),
                             "conv2d_backward", ["grad_output", "(2, 6, 3, 3)", "(2, 6, 4, 4)"]),
    "max_pool2d_kernel": (ValueError, lambda: F.max_pool2d(X, 0), "max_pool2d", ["kernel_size", "0"]),
    "max_pool2d_kernel_type": (TypeError, lambda: F.max_pool2d(X, "2"), "max_pool2d", ["kernel_size", "'2'"]),
    "max_pool2d_padding": (ValueError, lambda: F.max_pool2d(X, 2, padding=2), "max_pool2d", ["padding", "(2, 2)"]),
    "max_pool2d_too_small": (ValueError, lambda: F.max_pool2d(X, 7), "max_pool2d", ["kernel_size", "(7, 7)", "(6, 6)"]),
    "max_pool2d_ceil_mode": (TypeError, lambda: F.max_pool2d(X, 2, ceil_mode="yes"), "max_pool2d", ["ceil_mode", "'yes'"]),
    "max_pool2d_dilation_overflow": (ValueError, lambda: F.max_pool2d(X, 1, dilation=BIG), "max_pool2d",
                                     ["dilation", str(BIG)]),
    "max_pool2d_stride_overflow": (ValueError, lambda: F.max_pool2d(X, 2, stride=(1, BIG)), "max_pool2d",
                                   ["stride", str(BIG)]),
    "max_pool2d_only_padding": (ValueError, lambda: F.max_pool2d(np.zeros((1, 1, 1, 1)), 2, padding=1, dilation=2),
                                "max_pool2d", ["padding", "dilation", "size 1"]),
    "max_pool2d_backward_indices_dtype": (TypeError, lambda: F.max_pool2d_backward(G, G, (1, 1, 4, 4)),
                                          "max_pool2d_backward", ["indices", "float64"]),
    "max_pool2d_backward_indices_range": (ValueError, lambda: F.max_pool2d_backward(G, I + 16, (1, 1, 4, 4)),
                                          "max_pool2d_backward", ["indices", "[0, 16)", "(1, 1, 4, 4)"]),
    "max_pool2d_backward_negative_index": (ValueError, lambda: F.max_pool2d_backward(G, I - 1, (1, 1, 4, 4)),
                                           "max_pool2d_backward", ["indices", "[0, 16)"]),
    "max_pool2d_backward_input_shape": (ValueError, lambda: F.max_pool2d_backward(G, I, (1, 1, -4, 4)),
                                        "max_pool2d_backward", ["input_shape", "(1, 1, -4, 4)"]),
    "max_pool2d_backward_lead": (ValueError, lambda: F.max_pool2d_backward(G, I, (1, 2, 4, 4)),
                                 "max_pool2d_backward", ["grad_output", "(1, 1, 2, 2)", "(1, 2, 4, 4)"]),
    "avg_pool2d_kernel": (ValueError, lambda: F.avg_pool2d(X, (1, 2, 3)), "avg_pool2d", ["kernel_size", "(1, 2, 3)"]),
    "avg_pool2d_backward_grad": (ValueError, lambda: F.avg_pool2d_backward(np.zeros((2, 4, 2, 2)), X.shape, 2),
                                 "avg_pool2d_backward", ["grad_output", "(2, 4, 2, 2)", "(2, 4, 3, 3)"]),
    "linear_shapes": (ValueError, lambda: F.linear(np.zeros((2, 3)), np.zeros((4, 5))), "linear", ["input", "(2, 3)", "(4, 5)"]),
    "cross_entropy_target": (ValueError, lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
                             "cross_entropy", ["target", "3"]),
    "mse_loss_target": (ValueError, lambda: F.mse_loss(np.zeros(3), np.zeros(4)), "mse_loss", ["target", "(4,)"]),
    "dropout_p": (ValueError, lambda: F.dropout(np.zeros(3), 1.5), "dropout", ["p", "1.5"]),
    "log_softmax_dim": (ValueError, lambda: F.log_softmax(np.zeros((2, 3)), dim=2), "log_softmax", ["dim", "2"]),
    "set_num_threads": (ValueError, lambda: cnnext.set_num_threads(0), "set_num_threads", ["n", "0"]),
    "set_workspace_limit": (TypeError, lambda: cnnext.set_workspace_limit("1MB"), "set_workspace_limit", ["nbytes", "'1MB'"]),
    "force_conv_algorithm": (ValueError, lambda: force_conv_algorithm("fast"), "force_conv_algorithm", ["name", "'fast'"]),
    "ConvLayer_padding": (ValueError, lambda: cnnext.ConvLayer(5, 5, 3, 3, 3, 2, -1, 1, cnnext.IdentityActivator(), 0.1),
                          "ConvLayer", ["zero_padding", "-1"]),
    "ConvLayer_filter": (ValueError, lambda: cnnext.ConvLayer(5, 5, 3, 9, 3, 2, 1, 1, cnnext.IdentityActivator(), 0.1),
                         "ConvLayer", ["filter_width", "9"]),
    "ConvLayer_forward": (ValueError, lambda: _layer().forward(np.zeros((3, 5, 4))), "ConvLayer.forward",
                          ["input_array", "(3, 5, 4)"]),
    "ConvLayer_backward": (ValueError, lambda: _layer().backward(np.zeros((3, 5, 5)), np.zeros((2, 5, 4)),
                                                                 cnnext.IdentityActivator()),
                           "ConvLayer.backward", ["sensitivity_array", "(2, 5, 4)"]),
    "Filter_weights": (ValueError, lambda: setattr(_layer().filters[0], "weights", np.zeros((3, 3, 2))),
                       "Filter.weights", ["weights", "(3, 3, 2)"]),
    "MaxPoolingLayer_stride": (ValueError, lambda: cnnext.MaxPoolingLayer(4, 4, 2, 2, 2, 0), "MaxPoolingLayer",
                               ["stride", "0"]),
    "MaxPoolingLayer_backward": (ValueError, lambda: cnnext.MaxPoolingLayer(4, 4, 2, 2, 2, 2).backward(
        np.zeros((2, 4, 4)), np.zeros((2, 3, 2))), "MaxPoolingLayer.backward", ["sensitivity_array", "(2, 3, 2)"]),
    "padding_helper": (ValueError, lambda: cnnext.padding(np.zeros((2, 2)), -1), "padding", ["zp", "-1"]),
    "conv_helper": (ValueError, lambda: cnnext.conv(np.zeros((3, 3)), np.zeros((4, 4)), np.zeros((1, 1)), 1, 0),
                    "conv", ["kernel_array", "(4, 4)", "(3, 3)"]),
    "nn_Conv2d_kernel": (ValueError, lambda: nn.Conv2d(3, 4, 0), "Conv2d", ["kernel_size", "0"]),
    "nn_Conv2d_groups": (ValueError, lambda: nn.Conv2d(3, 4, 3, groups=2), "Conv2d", ["groups=2", "in_channels=3"]),
    "nn_Conv2d_backward": (ValueError, lambda: _after_forward(nn.Conv2d(3, 4, 3, rng=0), np.zeros((1, 3, 5, 5))).backward(
        np.zeros((1, 4, 2, 2))), "Conv2d.backward", ["grad_output", "(1, 4, 2, 2)", "(1, 4, 3, 3)"]),
    "nn_ReLU_backward": (ValueError, lambda: _after_forward(nn.ReLU(), np.zeros((2, 3))).backward(np.zeros((2, 4))),
                         "ReLU.backward", ["grad_output", "(2, 4)"]),
    "nn_Linear_dtype": (ValueError, lambda: nn.Linear(3, 4, dtype=np.int32), "Linear", ["dtype", "int32"]),
    "nn_Dropout_p": (ValueError, lambda: nn.Dropout(2.0), "Dropout", ["p", "2.0"]),
    "nn_load_state_dict": (ValueError, lambda: nn.Linear(3, 4, rng=0).load_state_dict(
        {"weight": np.zeros((3, 3)), "bias": np.zeros(4)}), "Linear.load_state_dict", ["'weight'", "(3, 3)", "(4, 3)"]),
    "optim_SGD_lr": (ValueError, lambda: optim.SGD(nn.Linear(2, 2, rng=0).parameters(), lr=-1), "SGD", ["lr", "-1"]),
    "save_model": (TypeError, lambda: cnnext.save(3, "unused.npz"), "cnnext.save", ["model", "int"]),
    "avg_pool2d_count_include_pad": (TypeError, lambda: F.avg_pool2d(X, 2, count_include_pad=None), "avg_pool2d",
                                     ["count_include_pad", "None"]),
    "nn_MaxPool2d_backward": (ValueError, lambda: _after_forward(nn.MaxPool2d(2), np.zeros((1, 3, 4, 4))).backward(
        np.zeros((1, 3, 3, 3))), "MaxPool2d.backward", ["grad_output", "(1, 3, 3, 3)", "(1, 3, 2, 2)"]),
    "gradcheck_input": ((TypeError, ValueError), lambda: cnnext.gradcheck(nn.ReLU(), "x"), "gradcheck", ["x"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_names_function_argument_and_value(case):
    exc_type, call, func, fragments = CASES[case]
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert issubclass(info.type, exc_type), f"{info.type.__name__}: {info.value}"
    msg = str(info.value)
    assert msg.startswith(func + ":"), f"message does not start with {func!r}: {msg}"
    for frag in fragments:
        assert frag in msg, f"{frag!r} missing from: {msg}"


def test_every_functional_error_starts_with_its_function_name():
    """Random bad calls to each functional op: the message always starts with that op's name."""
    bad_values = [0, -1, 1.5, "x", None, (1, 2, 3), True, np.zeros(3), BIG]
    ops = {
        "conv2d": lambda v: F.conv2d(X, W, stride=v, groups=2),
        "conv2d_backward": lambda v: F.conv2d_backward(np.zeros((2, 6, 4, 4)), X, W, dilation=v, groups=2),
        "max_pool2d": lambda v: F.max_pool2d(X, v),
        "avg_pool2d": lambda v: F.avg_pool2d(X, v),
        "avg_pool2d_backward": lambda v: F.avg_pool2d_backward(np.zeros((2, 4, 3, 3)), X.shape, 2, stride=v),
        "max_pool2d_backward": lambda v: F.max_pool2d_backward(np.zeros((1, 1, 2, 2)), I, (1, 1, v, 4)),
    }
    for func, call in ops.items():
        for v in bad_values:
            try:
                call(v)
            except (ValueError, TypeError) as exc:
                assert re.match(re.escape(func) + r": ", str(exc)), f"{func}({v!r}): {exc}"
            else:
                # a value that happens to be valid here (e.g. stride None for avg_pool2d_backward)
                assert v is None or v is True or (isinstance(v, int) and v >= 1), f"{func} accepted {v!r}"


def test_pool_validation_does_not_allocate_per_kernel_tap():
    """A kernel of 10**12 taps is validated arithmetically (the check used to build a tap array)."""
    g = check_pool2d("max_pool2d", (1, 1, 6, 6), 10**12, None, 5 * 10**11, 1, False)
    assert (g.Ho, g.Wo) == (1, 1)
    with pytest.raises(ValueError, match="covers only padding"):
        check_pool2d("max_pool2d", (1, 1, 1, 1), 2, 1, 1, 2, False)
    with pytest.raises(ValueError, match=f"kernel_size must be at most {sys.maxsize}"):
        check_pool2d("max_pool2d", (1, 1, 6, 6), 2**63, None, 0, 1, False)


@pytest.mark.parametrize("n", [2**31, 10**6])
def test_absurd_thread_counts_are_refused_or_work(n, tmp_path):
    """set_num_threads(n) either refuses n (ValueError/TypeError, naming it) or the kernels then
    work: never an OverflowError at every later call, never a crash (a child process runs it, so a
    crash fails this test instead of killing the suite)."""
    import subprocess

    code = (
        "import numpy as np, cnnext, cnnext.functional as F\n"
        f"n = {n}\n"
        "try:\n"
        "    cnnext.set_num_threads(n)\n"
        "except (ValueError, TypeError) as exc:\n"
        "    assert str(exc).startswith('set_num_threads:') and 'n' in str(exc), exc\n"
        "    print('refused')\n"
        "else:\n"
        "    y = F.max_pool2d(np.arange(32.0).reshape(2, 1, 4, 4), 2)\n"
        "    assert y.ravel().tolist() == [5, 7, 13, 15, 21, 23, 29, 31], y\n"
        "    print('works')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() in ("refused", "works")
