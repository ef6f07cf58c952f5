"""Bad arguments to the functional API raise ValueError / TypeError naming the argument (issue 2, item 5)."""
import numpy as np
import pytest

import cnnext
import cnnext.functional as F

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))  # valid with groups=2


def conv(**kw):
    args = dict(input=X, weight=W, groups=2)
    args.update(kw)
    return F.conv2d(**args)


# (exception, message regex, call) -- every message must name the function and the argument
CONV_ERRORS = {
    "input_2d": (ValueError, r"conv2d: input must be 3-D or 4-D, got 2-D",
                 lambda: conv(input=np.zeros((6, 6)))),
    "input_5d": (ValueError, r"conv2d: input must be 3-D or 4-D, got 5-D",
                 lambda: conv(input=np.zeros((1, 2, 4, 6, 6)))),
    "weight_3d": (ValueError, r"conv2d: weight must be 4-D", lambda: conv(weight=np.zeros((6, 2, 3)))),
    "bias_2d": (ValueError, r"conv2d: bias must be 1-D", lambda: conv(bias=np.zeros((6, 1)))),
    "bias_wrong_length": (ValueError, r"conv2d: bias must have shape \(6,\)",
                          lambda: conv(bias=np.zeros(5))),
    "channel_mismatch": (ValueError, r"conv2d: weight of shape .* input channels.*input has 4",
                         lambda: conv(groups=1)),
    "channel_mismatch_unbatched": (ValueError, r"conv2d: weight .*input has 3",
                                   lambda: conv(input=np.zeros((3, 6, 6)), groups=1)),
    "groups_not_dividing_input": (ValueError, r"conv2d: groups=3 must divide the input channels",
                                  lambda: conv(weight=np.zeros((6, 1, 3, 3)), groups=3)),
    "groups_not_dividing_output": (ValueError, r"conv2d: groups=2 must divide the weight's out_channels",
                                   lambda: conv(weight=np.zeros((5, 2, 3, 3)))),
    "groups_zero": (ValueError, r"conv2d: groups must be >= 1", lambda: conv(groups=0)),
    "groups_float": (TypeError, r"conv2d: groups must be an int", lambda: conv(groups=2.0)),
    "groups_bool": (TypeError, r"conv2d: groups must be an int", lambda: conv(groups=True)),
    "kernel_larger_than_input": (ValueError, r"conv2d: kernel size \(7, 3\).*larger than the padded input",
                                 lambda: conv(weight=np.zeros((6, 2, 7, 3)))),
    "dilated_kernel_larger": (ValueError, r"conv2d: kernel size \(9, 9\) \(dilated\)",
                              lambda: conv(dilation=4)),
    "kernel_larger_than_padded": (ValueError, r"conv2d: kernel size .*padded input \(8, 8\)",
                                  lambda: conv(weight=np.zeros((6, 2, 9, 9)), padding=1)),
    "stride_zero": (ValueError, r"conv2d: stride must be >= 1", lambda: conv(stride=0)),
    "stride_pair_negative": (ValueError, r"conv2d: stride must be >= 1", lambda: conv(stride=(1, -1))),
    "dilation_zero": (ValueError, r"conv2d: dilation must be >= 1", lambda: conv(dilation=0)),
    "padding_negative": (ValueError, r"conv2d: padding must be >= 0", lambda: conv(padding=-1)),
    "padding_pair_negative": (ValueError, r"conv2d: padding must be >= 0", lambda: conv(padding=(0, -2))),
    "padding_bad_string": (ValueError, r"conv2d: padding must be .*'valid' or 'same', got 'full'",
                           lambda: conv(padding="full")),
    "padding_same_stride2": (ValueError, r"conv2d: padding='same' needs stride 1",
                             lambda: conv(padding="same", stride=2)),
    "padding_same_stride_pair": (ValueError, r"conv2d: padding='same' needs stride 1",
                                 lambda: conv(padding="same", stride=(1, 2))),
    "stride_float": (TypeError, r"conv2d: stride must be an int or a pair of ints, got float",
                     lambda: conv(stride=1.0)),
    "stride_bool": (TypeError, r"conv2d: stride must be an int or a pair of ints, got bool",
                    lambda: conv(stride=True)),
    "dilation_bool_in_pair": (TypeError, r"conv2d: dilation must be an int or a pair",
                              lambda: conv(dilation=(1, False))),
    "padding_float": (TypeError, r"conv2d: padding must be an int", lambda: conv(padding=0.5)),
    "stride_triple": (ValueError, r"conv2d: stride must be an int or a pair of ints",
                      lambda: conv(stride=(1, 1, 1))),
    "input_complex": (TypeError, r"conv2d: input must hold real numbers.*complex128",
                      lambda: conv(input=X.astype(complex))),
    "input_object": (TypeError, r"conv2d: input must hold real numbers.*object",
                     lambda: conv(input=X.astype(object))),
    "input_strings": (TypeError, r"conv2d: input must hold real numbers",
                      lambda: conv(input=np.full(X.shape, "a"))),
    "input_float16": (TypeError, r"conv2d: input has dtype float16",
                      lambda: conv(input=X.astype(np.float16))),
    "input_none": (TypeError, r"conv2d: input must be an array", lambda: conv(input=None)),
    "input_ragged": (TypeError, r"conv2d: input must be array_like of numbers",
                     lambda: conv(input=[[1.0, 2.0], [3.0]])),
    "weight_complex": (TypeError, r"conv2d: weight must hold real numbers",
                       lambda: conv(weight=W.astype(np.complex64))),
    "bias_complex": (TypeError, r"conv2d: bias must hold real numbers",
                     lambda: conv(bias=np.zeros(6, dtype=complex))),
    "weight_float16": (TypeError, r"conv2d: weight has dtype float16",
                       lambda: conv(weight=W.astype(np.float16))),
    # conv2d_backward: its own name, and grad_output checked against the forward output (2, 6, 4, 4)
    "backward_grad_output_shape": (
        ValueError, r"conv2d_backward: grad_output must have shape \(2, 6, 4, 4\), got \(2, 6, 4, 5\)",
        lambda: F.conv2d_backward(np.zeros((2, 6, 4, 5)), X, W, groups=2)),
    "backward_grad_output_batch": (
        ValueError, r"conv2d_backward: grad_output must have shape \(2, 6, 4, 4\), got \(3, 6, 4, 4\)",
        lambda: F.conv2d_backward(np.zeros((3, 6, 4, 4)), X, W, groups=2)),
    "backward_grad_output_ndim": (
        ValueError, r"conv2d_backward: grad_output must be 4-D",
        lambda: F.conv2d_backward(np.zeros((6, 4, 4)), X, W, groups=2)),
    "backward_grad_output_complex": (
        TypeError, r"conv2d_backward: grad_output must hold real numbers",
        lambda: F.conv2d_backward(np.zeros((2, 6, 4, 4), dtype=complex), X, W, groups=2)),
    "backward_channel_mismatch": (
        ValueError, r"conv2d_backward: weight of shape",
        lambda: F.conv2d_backward(np.zeros((2, 6, 4, 4)), X, W)),
    "backward_stride_zero": (
        ValueError, r"conv2d_backward: stride must be >= 1",
        lambda: F.conv2d_backward(np.zeros((2, 6, 4, 4)), X, W, stride=0, groups=2)),
}


@pytest.mark.parametrize("case", list(CONV_ERRORS))
def test_conv2d_errors(case):
    exc, match, call = CONV_ERRORS[case]
    with pytest.raises(exc, match=match):
        call()


POOL_ERRORS = {
    "input_2d": (ValueError, r"input must be 3-D or 4-D, got 2-D", dict(input=np.zeros((6, 6)))),
    "input_5d": (ValueError, r"input must be 3-D or 4-D, got 5-D", dict(input=np.zeros((1,) + X.shape))),
    "input_complex": (TypeError, r"input must hold real numbers", dict(input=X.astype(complex))),
    "input_object": (TypeError, r"input must hold real numbers", dict(input=X.astype(object))),
    "input_float16": (TypeError, r"input has dtype float16", dict(input=X.astype(np.float16))),
    "kernel_float": (TypeError, r"kernel_size must be an int or a pair of ints, got float",
                     dict(kernel_size=2.0)),
    "kernel_bool": (TypeError, r"kernel_size must be an int or a pair of ints, got bool",
                    dict(kernel_size=True)),
    "kernel_pair_with_float": (TypeError, r"kernel_size must be an int or a pair",
                               dict(kernel_size=(2, 2.5))),
    "kernel_triple": (ValueError, r"kernel_size must be an int or a pair", dict(kernel_size=(2, 2, 2))),
    "kernel_zero": (ValueError, r"kernel_size must be >= 1", dict(kernel_size=0)),
    "stride_zero": (ValueError, r"stride must be >= 1", dict(stride=0)),
    "stride_float": (TypeError, r"stride must be an int or a pair", dict(stride=1.5)),
    "padding_negative": (ValueError, r"padding must be >= 0", dict(padding=-1)),
    "padding_more_than_half_kernel": (ValueError, r"padding \(2, 2\) must be at most half the kernel size",
                                      dict(kernel_size=3, padding=2)),
    "padding_more_than_half_kernel_w": (ValueError, r"padding \(1, 2\) must be at most half",
                                        dict(kernel_size=(2, 3), padding=(1, 2))),
    "output_too_small": (ValueError,
                         r"input of spatial size \(6, 6\) is too small for kernel_size \(7, 7\)",
                         dict(kernel_size=7)),
    "output_too_small_h_only": (ValueError, r"input of spatial size \(6, 6\) is too small for kernel_size \(7, 2\)",
                                dict(kernel_size=(7, 2))),
}


def _pool_call(func, kw):
    args = dict(input=X, kernel_size=2)
    args.update(kw)
    return func(**args)


@pytest.mark.parametrize("case", list(POOL_ERRORS))
@pytest.mark.parametrize("func", [F.max_pool2d, F.avg_pool2d], ids=["max_pool2d", "avg_pool2d"])
def test_pool_errors(func, case):
    exc, match, kw = POOL_ERRORS[case]
    with pytest.raises(exc, match=rf"{func.__name__}: {match}"):
        _pool_call(func, kw)


def test_max_pool2d_dilation_errors():
    with pytest.raises(ValueError, match=r"max_pool2d: dilation must be >= 1"):
        F.max_pool2d(X, 2, dilation=0)
    with pytest.raises(ValueError, match=r"max_pool2d: input of spatial size \(6, 6\) is too small"):
        F.max_pool2d(X, 3, dilation=3)
    with pytest.raises(TypeError, match=r"max_pool2d: ceil_mode must be a bool"):
        F.max_pool2d(X, 2, ceil_mode=1)


def test_max_pool2d_window_of_padding_only_is_refused():
    # H = 2, kernel 2, dilation 3, padding 1: the only window's taps are rows -1 and 2, both padding
    with pytest.raises(ValueError, match=r"max_pool2d: along the height, some pooling window covers only padding"):
        F.max_pool2d(np.zeros((1, 1, 2, 5)), (2, 1), padding=(1, 0), dilation=(3, 1))


Y_SHAPE = (2, 4, 3, 3)  # max_pool2d(X, 2) / avg_pool2d(X, 2)


def test_avg_pool2d_backward_errors():
    gy = np.zeros(Y_SHAPE)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_output must have shape \(2, 4, 3, 3\), got \(2, 4, 3, 2\)"):
        F.avg_pool2d_backward(np.zeros((2, 4, 3, 2)), X.shape, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_output must have shape \(2, 4, 3, 3\), got \(2, 3, 3, 3\)"):
        F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: grad_output must be 3-D"):
        F.avg_pool2d_backward(gy, X.shape[1:], 2)
    with pytest.raises(TypeError, match=r"avg_pool2d_backward: grad_output must hold real numbers"):
        F.avg_pool2d_backward(gy.astype(complex), X.shape, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: input_shape must be"):
        F.avg_pool2d_backward(gy, (4, 6), 2)
    with pytest.raises(TypeError, match=r"avg_pool2d_backward: input_shape must be a tuple of ints"):
        F.avg_pool2d_backward(gy, (2, 4, 6.0, 6), 2)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: padding \(2, 2\) must be at most half"):
        F.avg_pool2d_backward(gy, X.shape, 2, padding=2)
    with pytest.raises(TypeError, match=r"avg_pool2d_backward: kernel_size must be an int or a pair"):
        F.avg_pool2d_backward(gy, X.shape, 2.0)


@pytest.fixture
def pooled():
    y, idx = F.max_pool2d(np.arange(np.prod(X.shape), dtype=np.float64).reshape(X.shape), 2,
                          return_indices=True)
    return y, idx


@pytest.mark.parametrize("bad", [-1, 36, 37, 2**62, -(2**62)])
def test_max_pool2d_backward_index_out_of_range(pooled, bad):
    y, idx = pooled
    idx = idx.copy()
    idx[1, 3, 2, 1] = bad
    with pytest.raises(ValueError, match=r"max_pool2d_backward: 1 indices lie outside \[0, H\*W\) = \[0, 36\)"):
        F.max_pool2d_backward(np.ones_like(y), idx, X.shape)


def test_max_pool2d_backward_all_indices_out_of_range(pooled):
    y, idx = pooled
    with pytest.raises(ValueError, match=r"max_pool2d_backward: 72 indices"):
        F.max_pool2d_backward(y, idx + 36, X.shape)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: .*indices lie outside"):
        F.max_pool2d_backward(y, idx - 36, X.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, bool, complex, object])
def test_max_pool2d_backward_non_integer_indices(pooled, dtype):
    y, idx = pooled
    with pytest.raises(TypeError, match=r"max_pool2d_backward: indices must be an integer array"):
        F.max_pool2d_backward(y, idx.astype(dtype), X.shape)


def test_max_pool2d_backward_shape_errors(pooled):
    y, idx = pooled
    with pytest.raises(ValueError, match=r"max_pool2d_backward: indices must have shape \(2, 4, 3, 3\)"):
        F.max_pool2d_backward(y, idx[..., :2], X.shape)
    with pytest.raises(ValueError, match=r"max_pool2d_backward: grad_output of shape .* does not match input_shape"):
        F.max_pool2d_backward(y, idx, (2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: grad_output must be 3-D"):
        F.max_pool2d_backward(y, idx, X.shape[1:])
    with pytest.raises(TypeError, match=r"max_pool2d_backward: grad_output must hold real numbers"):
        F.max_pool2d_backward(y.astype(complex), idx, X.shape)


def test_set_num_threads_errors(restore_config):
    with pytest.raises(ValueError, match=r"\bn must be >= 1, got 0"):
        cnnext.set_num_threads(0)
    with pytest.raises(ValueError, match=r"\bn must be >= 1, got -2"):
        cnnext.set_num_threads(-2)
    with pytest.raises(TypeError, match=r"\bn must be an int, got float 1.5"):
        cnnext.set_num_threads(1.5)
    with pytest.raises(TypeError, match=r"\bn must be an int, got bool"):
        cnnext.set_num_threads(True)
    with pytest.raises(TypeError, match=r"\bn must be an int, got str"):
        cnnext.set_num_threads("2")


def test_set_workspace_limit_errors(restore_config):
    with pytest.raises(ValueError, match=r"nbytes must be >= 1"):
        cnnext.set_workspace_limit(0)
    with pytest.raises(TypeError, match=r"nbytes must be an int, got float"):
        cnnext.set_workspace_limit(1e6)


def test_failed_calls_leave_the_settings_unchanged(restore_config):
    cnnext.set_num_threads(1)
    cnnext.set_workspace_limit(12345)
    for bad in (0, 1.5, True):
        with pytest.raises((ValueError, TypeError)):
            cnnext.set_num_threads(bad)
        with pytest.raises((ValueError, TypeError)):
            cnnext.set_workspace_limit(bad)
    assert cnnext.get_num_threads() == 1
    assert cnnext.get_workspace_limit() == 12345
