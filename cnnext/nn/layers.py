"""Layers of cnnext.nn: convolution, pooling, linear, activations, flatten and dropout.

Each layer keeps its parameters and what its backward pass needs from the last forward pass (the
input, the max-pooling indices, the activation output or the dropout mask); every computation is a
call into ``cnnext.functional``.

Under ``cnnext.no_grad()`` a layer keeps nothing for backward (``Module._keep``). A layer validates
its input once per call: ``forward`` checks the input (and the geometry, with
``cnnext._validation``) and ``backward`` checks ``grad_output`` against the cached forward output
shape; both then call the functional modules' documented already-checked entry points
(``_conv_dispatch.forward_checked``/``backward_checked``, ``pooling.*_checked``,
``linear.*_checked``, ``loss.dropout_checked``, ``activation.*_checked``), which validate nothing
again.
"""
import math

import numpy as np

from cnnext._validation import (
    as_batch,
    as_float_array,
    check_batch_grad,
    check_bool,
    check_conv2d,
    check_conv_padding,
    check_dtype,
    check_float,
    check_int,
    check_linear,
    check_pool2d,
    check_rng,
    to_pair,
)
from cnnext.functional import _conv_dispatch
from cnnext.functional.linear import linear_backward_checked, linear_checked
from cnnext.functional.loss import dropout_checked
from cnnext.functional.pooling import (
    avg_pool2d_backward_checked,
    avg_pool2d_checked,
    max_pool2d_backward_checked,
    max_pool2d_checked,
)
from cnnext.functional import activation as _act
from cnnext.nn.module import Module, Parameter, own_methods

__all__ = [
    "Conv2d",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Dropout",
]


_ANY_ND = tuple(range(0, 33))


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Module):
    """2-D convolution over (N, C, H, W) batches, as torch.nn.Conv2d.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int)
    padding : int, (int, int), 'valid' or 'same'
    groups : int
        Must divide both channel counts.
    bias : bool
        Learn an additive bias per output channel.
    dtype : np.float32 or np.float64
        dtype of the parameters; inputs are computed in it.
    rng : numpy.random.Generator or int, optional
        Source of the initial weights (PyTorch's default init: weight and bias uniform in
        +-1/sqrt(fan_in), fan_in = in_channels / groups * kH * kW).

    Attributes
    ----------
    weight : Parameter, shape (out_channels, in_channels // groups, kH, kW)
    bias : Parameter of shape (out_channels,), or None
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        name = "Conv2d"
        self.in_channels = check_int(in_channels, "in_channels", name, minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", name, minimum=1)
        self.groups = check_int(groups, "groups", name, minimum=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{name}: groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        self.kernel_size = to_pair(kernel_size, "kernel_size", name, minimum=1)
        self.stride = to_pair(stride, "stride", name, minimum=1)
        self.dilation = to_pair(dilation, "dilation", name, minimum=1)
        self.padding = check_conv_padding(padding, self.stride, name)
        bias = check_bool(bias, "bias", name)
        self.dtype = check_dtype(dtype, "dtype", name)
        rng = check_rng(rng, "rng", name)
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(_uniform(rng, bound, (self.out_channels, self.in_channels // self.groups,
                                                      kh, kw), self.dtype))
        self.bias = Parameter(_uniform(rng, bound, (self.out_channels,), self.dtype)) if bias else None
        self._x = None

    def forward(self, x):
        """Convolve a (N, C, H, W) batch (or one (C, H, W) sample); cache it for backward."""
        w = self.weight.data
        b = self.bias.data if self.bias is not None else None
        x, w, b, g, unbatched = check_conv2d("Conv2d", x, w, b, self.stride, self.padding,
                                             self.dilation, self.groups, dtype=w.dtype)
        y = _conv_dispatch.forward_checked(x, w, b, g)
        self._keep("_x", (x, w, g, unbatched))
        return y[0] if unbatched else y

    def backward(self, grad_output, input_grad=True):
        """Accumulate weight and bias gradients; return d loss / d input (None if not input_grad)."""
        x, w, g, unbatched = self._cached("_x")
        gy = check_batch_grad(grad_output, "grad_output", "Conv2d.backward", g.output_shape,
                              unbatched, dtype=x.dtype)
        gx, gw, gb = _conv_dispatch.backward_checked(x, w, gy, g, need_input=bool(input_grad),
                                                     need_weight=True)
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx[0] if unbatched and gx is not None else gx

    def _config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=self.padding if isinstance(self.padding, str) else list(self.padding),
                    dilation=list(self.dilation), groups=self.groups, bias=self.bias is not None)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Linear(Module):
    """Fully connected layer ``y = x @ weight.T + bias``, as torch.nn.Linear.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator or int, optional
        Source of the initial weights (uniform in +-1/sqrt(in_features), as PyTorch).

    Attributes
    ----------
    weight : Parameter, shape (out_features, in_features)
    bias : Parameter of shape (out_features,), or None
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        name = "Linear"
        self.in_features = check_int(in_features, "in_features", name, minimum=1)
        self.out_features = check_int(out_features, "out_features", name, minimum=1)
        bias = check_bool(bias, "bias", name)
        self.dtype = check_dtype(dtype, "dtype", name)
        rng = check_rng(rng, "rng", name)
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(_uniform(rng, bound, (self.out_features, self.in_features), self.dtype))
        self.bias = Parameter(_uniform(rng, bound, (self.out_features,), self.dtype)) if bias else None
        self._x = None

    def forward(self, x):
        """Apply the affine map to a (*, in_features) array; cache it for backward."""
        w = self.weight.data
        x, w, b = check_linear("Linear", x, w, self.bias.data if self.bias is not None else None,
                               dtype=w.dtype)
        self._keep("_x", (x, w))
        return linear_checked(x, w, b)

    def backward(self, grad_output, input_grad=True):
        """Accumulate weight and bias gradients; return d loss / d input."""
        x, w = self._cached("_x")
        gy = as_float_array(grad_output, "grad_output", "Linear.backward", ndims=(x.ndim,),
                            dtype=x.dtype, shape=x.shape[:-1] + (w.shape[0],))
        gx, gw, gb = linear_backward_checked(gy, x, w)
        self.weight.grad += gw
        if self.bias is not None:
            self.bias.grad += gb
        return gx

    def _config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class MaxPool2d(Module):
    """2-D max pooling, as torch.nn.MaxPool2d (the argmax indices are kept for backward).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding, dilation : int or (int, int)
    ceil_mode : bool
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        name = "MaxPool2d"
        self.kernel_size = _int_or_pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else _int_or_pair(stride, "stride", name, 1)
        self.padding = _int_or_pair(padding, "padding", name, 0)
        self.dilation = _int_or_pair(dilation, "dilation", name, 1)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode", name)
        self._indices = None

    def forward(self, x):
        """Pool a (N, C, H, W) batch; cache the argmax indices."""
        x, unbatched = as_batch(x, "input", "MaxPool2d")
        g = check_pool2d("MaxPool2d", x.shape, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.ceil_mode)
        y, idx = max_pool2d_checked(x, g)
        self._keep("_indices", (idx, g, unbatched))
        return y[0] if unbatched else y

    def backward(self, grad_output, input_grad=True):
        """Route each output gradient to its maximum's position (accumulating overlaps)."""
        func = "MaxPool2d.backward"
        idx, g, unbatched = self._cached("_indices")
        gy = check_batch_grad(grad_output, "grad_output", func, g.output_shape, unbatched)
        gx = max_pool2d_backward_checked(gy, idx, g, func)
        return gx[0] if unbatched else gx

    def _config(self):
        return dict(kernel_size=_jsonable(self.kernel_size), stride=_jsonable(self.stride),
                    padding=_jsonable(self.padding), dilation=_jsonable(self.dilation),
                    ceil_mode=self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling, as torch.nn.AvgPool2d.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
    ceil_mode, count_include_pad : bool
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        name = "AvgPool2d"
        self.kernel_size = _int_or_pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else _int_or_pair(stride, "stride", name, 1)
        self.padding = _int_or_pair(padding, "padding", name, 0)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode", name)
        self.count_include_pad = check_bool(count_include_pad, "count_include_pad", name)
        self._shape = None

    def forward(self, x):
        """Average-pool a (N, C, H, W) batch."""
        x, unbatched = as_batch(x, "input", "AvgPool2d")
        g = check_pool2d("AvgPool2d", x.shape, self.kernel_size, self.stride, self.padding, 1,
                         self.ceil_mode)
        y = avg_pool2d_checked(x, g, self.count_include_pad)
        self._keep("_shape", (g, unbatched))
        return y[0] if unbatched else y

    def backward(self, grad_output, input_grad=True):
        """Spread each output gradient evenly over its window."""
        g, unbatched = self._cached("_shape")
        gy = check_batch_grad(grad_output, "grad_output", "AvgPool2d.backward", g.output_shape,
                              unbatched)
        gx = avg_pool2d_backward_checked(gy, g, self.count_include_pad)
        return gx[0] if unbatched else gx

    def _config(self):
        return dict(kernel_size=_jsonable(self.kernel_size), stride=_jsonable(self.stride),
                    padding=_jsonable(self.padding), ceil_mode=self.ceil_mode,
                    count_include_pad=self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _int_or_pair(value, name, owner, minimum):
    """Keep an int as an int (as torch's repr shows it) and a pair as a tuple, after validation."""
    pair = to_pair(value, name, owner, minimum=minimum)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return pair
    return pair[0]


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


class _Activation(Module):
    _fn = None  # the functional entry points for checked arrays
    _deriv = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own_methods(cls)  # errors name ReLU.forward, not _Activation.forward

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        """Apply the activation element-wise; cache the output for backward."""
        x = as_float_array(x, "input", type(self).__name__, ndims=_ANY_ND)
        y = np.asarray(type(self)._fn(x))  # a 0-d input gives a 0-d array, as in PyTorch
        self._keep("_y", y)
        return y

    def backward(self, grad_output, input_grad=True):
        """Multiply ``grad_output`` by the derivative (computed from the cached output)."""
        y = self._cached("_y")
        gy = as_float_array(grad_output, "grad_output", f"{type(self).__name__}.backward",
                            ndims=(y.ndim,), dtype=y.dtype, shape=y.shape)
        return np.asarray(gy * type(self)._deriv(y))

    def _config(self):
        return {}


class ReLU(_Activation):
    """Rectified linear unit ``max(x, 0)``."""

    _fn = staticmethod(_act.relu_checked)
    _deriv = staticmethod(_act.relu_derivative_checked)


class Sigmoid(_Activation):
    """Logistic sigmoid ``1 / (1 + exp(-x))``."""

    _fn = staticmethod(_act.sigmoid_checked)
    _deriv = staticmethod(_act.sigmoid_derivative_checked)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    _fn = staticmethod(_act.tanh_checked)
    _deriv = staticmethod(_act.tanh_derivative_checked)


class Flatten(Module):
    """Flatten dimensions ``start_dim``..``end_dim`` into one, as torch.nn.Flatten (default: all but the batch)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = check_int(start_dim, "start_dim", "Flatten")
        self.end_dim = check_int(end_dim, "end_dim", "Flatten")
        self._shape = None

    def forward(self, x):
        """Reshape the input; remember its shape for backward."""
        x = as_float_array(x, "input", "Flatten", ndims=_ANY_ND)
        nd = x.ndim
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not (0 <= s < max(nd, 1) and 0 <= e < max(nd, 1)) or s > e:
            raise ValueError(f"Flatten: start_dim={self.start_dim}, end_dim={self.end_dim} do not fit a "
                             f"{nd}-D input of shape {x.shape}")
        self._keep("_shape", x.shape)
        if nd == 0:
            return x.reshape(1)
        return x.reshape(x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:])

    def backward(self, grad_output, input_grad=True):
        """Reshape the gradient back to the input's shape."""
        shape = self._cached("_shape")
        gy = np.asarray(grad_output)
        if gy.size != int(np.prod(shape)):
            raise ValueError(f"Flatten.backward: grad_output of shape {gy.shape} does not match the "
                             f"forward input of shape {shape}")
        return gy.reshape(shape)

    def _config(self):
        return dict(start_dim=self.start_dim, end_dim=self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout: in training mode zero each element with probability ``p`` and scale by 1/(1-p).

    In evaluation mode (``model.eval()``) it is the identity.

    Parameters
    ----------
    p : float in [0, 1]
    rng : numpy.random.Generator or int, optional
        Source of the masks.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_float(p, "p", "Dropout", minimum=0, maximum=1)
        self.rng = check_rng(rng, "rng", "Dropout")
        self._mask = None  # None after an identity (eval mode or p = 0) forward pass
        self._shape = None

    def forward(self, x):
        """Drop elements at random (training mode) or pass the input through (eval mode)."""
        x = as_float_array(x, "input", "Dropout", ndims=_ANY_ND)
        if not self.training or self.p == 0.0:
            self._mask = None
            self._keep("_shape", x.shape)
            return x
        y, mask = dropout_checked(x, self.p, self.rng)
        self._keep("_mask", mask)
        self._keep("_shape", x.shape)
        return y

    def backward(self, grad_output, input_grad=True):
        """Multiply the gradient by the mask of the last forward pass."""
        shape = self._cached("_shape")
        gy = as_float_array(grad_output, "grad_output", "Dropout.backward", ndims=(len(shape),),
                            shape=shape)
        if self._mask is None:
            return gy
        return np.asarray(gy * self._mask.astype(gy.dtype, copy=False))

    def _config(self):
        return dict(p=self.p)

    def extra_repr(self):
        return f"p={self.p}"
