"""learn_dl-compatible layers: ``ConvLayer``, ``MaxPoolingLayer``, ``Filter`` and the module helpers.

The classes and helpers keep the signatures, attribute names and results of hanbt's learn_dl ``cnn.py``
(arrays are (C, H, W); constructors take the width before the height), so the tutorial's code runs
unchanged. The layers only hold state: every convolution and pooling runs in ``cnnext.functional``,
once per call, for a single (C, H, W) sample or a whole (N, C, H, W) batch.

Design
------
* A ``ConvLayer`` owns one weight array (K, C, KH, KW), one bias array (K,) and their gradients. Each
  ``layer.filters[k]`` is a ``Filter`` whose ``weights``/``weights_grad`` are *views* into those arrays
  and whose ``bias``/``bias_grad`` read and write the layer's k-th element. In-place edits
  (``layer.filters[0].weights[d, i, j] += eps``, as learn_dl's gradient check does) and assignments
  (``layer.filters[0].weights = w``, ``.bias = 1``, as learn_dl's init_test does; the shape is checked
  and the values copied) therefore reach the layer. The layer never rebinds these arrays.
* ``ConvLayer.backward`` does not recompute the forward pass (learn_dl's did): it needs only the input
  and the sensitivity map, and computes the input and weight gradients with one ``conv2d_backward``
  call. ``output_array`` keeps the result of the last ``forward``.
* ``ConvLayer`` validates its convolution geometry (``check_conv2d``) once per input shape and caches
  it; each call then only checks the sample's type, dtype and shape (a few attribute reads for a
  C-contiguous float64 array) and calls the functional entry points that take the checked geometry,
  so a single-sample call costs little more than its kernels. The weights are read at every call:
  edits reach the next one without invalidating anything.
* ``MaxPoolingLayer.backward`` finds the maxima of the input it is given (one pooling kernel call), so
  it works without a preceding ``forward``, as in learn_dl's test_pool_bp.
* Computation is in float64, as in learn_dl; integer inputs are converted.
* The sizes given to a constructor (``stride``, ``zero_padding``, ``input_width``, ...) and the
  output sizes derived from them are read-only attributes: the arrays and the cached geometry are
  built from them, so an assignment raises AttributeError instead of giving wrong gradients.

Fixed relative to learn_dl: backward with non-square filters; ``zero_padding > filter size - 1``;
max-pool backward with overlapping windows (the gradients now accumulate instead of overwriting each
other); no debug prints. Arguments are checked at construction and shapes at every call.
"""
import collections.abc

import numpy as np

from cnnext._validation import (
    as_float_array,
    check_conv2d,
    check_float,
    check_int,
    check_shape,
    conv_output_size,
    result_dtype,
)
from cnnext.learn_dl.activators import IdentityActivator, ReluActivator
from cnnext.functional import conv2d, max_pool2d, max_pool2d_backward
from cnnext.functional.activation import relu_checked
from cnnext.functional._conv_dispatch import backward_checked as _conv2d_backward_checked
from cnnext.functional._conv_dispatch import forward_checked as _conv2d_forward_checked

__all__ = [
    "ConvLayer",
    "MaxPoolingLayer",
    "Filter",
    "padding",
    "conv",
    "get_patch",
    "element_wise_op",
    "get_max_index",
]

_DTYPE = np.dtype(np.float64)


# --------------------------------------------------------------------------- argument checks

def _check_activator(activator, name, func):
    if isinstance(activator, type):
        raise TypeError(
            f"{func}: {name} must be an activator instance, got the class {activator.__name__}; "
            f"pass {activator.__name__}()"
        )
    if not (callable(getattr(activator, "forward", None))
            and callable(getattr(activator, "backward", None))):
        raise TypeError(
            f"{func}: {name} must have forward(weighted_input) and backward(output) methods "
            f"(e.g. cnnext.ReluActivator()), got {type(activator).__name__} {activator!r}"
        )
    return activator


def _to_array(x, name, func):
    """np.asarray with a TypeError naming the argument, and a check that it holds real numbers."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{func}: {name} must be array_like of numbers ({exc})") from None
    result_dtype(x, name, func)
    return x


def _check_sample(x, expected, name, func, batch=None):
    """Check an (C, H, W) sample or (N, C, H, W) batch against ``expected`` = (C, H, W).

    With ``batch`` (``None`` for a single sample, else N) the layout must match that of the input
    the array belongs to. Returns a C-contiguous float64 array.
    """
    if type(x) is np.ndarray and x.dtype is _DTYPE and x.flags.c_contiguous:
        # the common case, checked in a few attribute reads: already what the kernels take
        shape = x.shape
        if batch is None:
            if shape == expected or (len(shape) == 4 and shape[1:] == expected):
                return x
        elif shape == (expected if batch is False else (batch,) + expected):
            return x
    x = _to_array(x, name, func)
    if batch is None:
        ok = x.shape == expected if x.ndim == 3 else (x.ndim == 4 and x.shape[1:] == expected)
        want = f"{expected} or (N,) + {expected}"
    else:
        want_shape = expected if batch is False else (batch,) + expected
        ok = x.shape == want_shape
        want = str(want_shape)
    if not ok:
        raise ValueError(f"{func}: {name} must have shape {want}, got {x.shape}")
    return np.ascontiguousarray(x, dtype=_DTYPE)


class _Geometry:
    """A layer's read-only size attribute (``layer.stride``, ``layer.input_width``, ...).

    The layer's weights, ``output_array`` and cached convolution geometry are sized from these at
    construction, so changing one afterwards would compute silently wrong outputs and gradients:
    assignment raises AttributeError instead.
    """

    __slots__ = ("name", "slot")

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        return layer.__dict__[self.slot]

    def __set__(self, layer, value):
        cls = type(layer).__name__
        raise AttributeError(
            f"{cls}.{self.name} is read-only: the layer's arrays and geometry were sized for "
            f"{self.name}={getattr(layer, self.name)!r} at construction; build a new {cls} instead"
        )

    def __delete__(self, layer):
        self.__set__(layer, None)


def _read_only_sizes(*names):
    """Class decorator: each of ``names`` becomes a read-only ``_Geometry`` attribute."""
    def decorate(cls):
        for name in names:
            attr = _Geometry()
            attr.__set_name__(cls, name)
            setattr(cls, name, attr)
        return cls
    return decorate


def _set_sizes(layer, func, sizes):
    """Check each ``(name, value, minimum)`` with check_int and store it behind its attribute."""
    for name, value, minimum in sizes:
        layer.__dict__["_" + name] = check_int(value, name, func, minimum=minimum)


# --------------------------------------------------------------------------- element-wise ops

_SCALAR_ONLY = object()


def _try_whole_array(op, array):
    """``op(array)`` if ``op`` accepts arrays and returns an array of that shape or a scalar."""
    try:
        result = op(array)
    except Exception:  # a scalar-only callable (e.g. learn_dl's ``max(0, x)``) fails on arrays
        return _SCALAR_ONLY
    shape = np.shape(result)
    if shape != array.shape and shape != ():
        return _SCALAR_ONLY
    return result


def _per_element(op, array):
    # Compatibility path for callables that only take scalars, exactly as learn_dl iterates.
    for i in np.nditer(array, op_flags=["readwrite"]):
        i[...] = op(i)


def element_wise_op(array, op):
    """Apply ``op`` to every element of ``array``, in place (learn_dl's helper).

    ``op`` is first called once on the whole array; only if it fails on an array (a callable written
    for scalars, such as ``lambda x: max(0, x)``) is it called element by element, as in learn_dl.
    ``op`` must act element-wise.

    Parameters
    ----------
    array : ndarray
        Modified in place.
    op : callable
        Element-wise function, e.g. an activator's ``forward`` or ``backward``.
    """
    func = "element_wise_op"
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{func}: array must be a numpy array (it is modified in place), "
                        f"got {type(array).__name__}")
    if not callable(op):
        raise TypeError(f"{func}: op must be callable, got {type(op).__name__} {op!r}")
    result = _try_whole_array(op, array)
    if result is _SCALAR_ONLY:
        _per_element(op, array)
    elif result is not array:
        array[...] = result


def _activate(op, array):
    """``op`` applied element-wise to ``array`` (which may be overwritten); returns the result array."""
    if getattr(op, "__func__", None) is ReluActivator.forward:  # the common case, without the probing
        return relu_checked(array)  # a layer's float64 output
    result = _try_whole_array(op, array)
    if result is _SCALAR_ONLY:
        _per_element(op, array)
        return array
    if isinstance(result, np.ndarray) and result.shape == array.shape and result.dtype.kind == "f":
        return result
    array[...] = result
    return array


# --------------------------------------------------------------------------- module helpers

def padding(input_array, zp):
    """Zero-pad the last two (height, width) axes of an array by ``zp`` on every side.

    Parameters
    ----------
    input_array : array_like, shape (H, W), (C, H, W) or (N, C, H, W)
    zp : int
        Padding width, >= 0. With 0 the input is returned unchanged, as in learn_dl.

    Returns
    -------
    ndarray, shape (..., H + 2 zp, W + 2 zp)
        A new float array (float64 for integer input).
    """
    func = "padding"
    zp = check_int(zp, "zp", func, minimum=0)
    if zp == 0:
        return input_array
    x = as_float_array(input_array, "input_array", func, ndims=(2, 3, 4))
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(zp, zp), (zp, zp)])


def get_patch(input_array, i, j, filter_width, filter_height, stride):
    """The window of output position (i, j): ``input_array[..., i*stride : i*stride + filter_height,
    j*stride : j*stride + filter_width]`` (a view; 2-D or 3-D input, as in learn_dl).

    Returns
    -------
    ndarray
        A view of ``input_array`` (truncated at the border, as numpy slicing is).
    """
    func = "get_patch"
    arr = input_array if isinstance(input_array, np.ndarray) else np.asarray(input_array)
    if arr.ndim < 2:
        raise ValueError(f"{func}: input_array must be 2-D (H, W) or 3-D (C, H, W), got shape {arr.shape}")
    i = check_int(i, "i", func, minimum=0)
    j = check_int(j, "j", func, minimum=0)
    fw = check_int(filter_width, "filter_width", func, minimum=1)
    fh = check_int(filter_height, "filter_height", func, minimum=1)
    s = check_int(stride, "stride", func, minimum=1)
    return arr[..., i * s: i * s + fh, j * s: j * s + fw]


def conv(input_array, kernel_array, output_array, stride, bias):
    """Valid cross-correlation of one image with one kernel, written into ``output_array``.

    As learn_dl's ``conv``: a 3-D (C, H, W) input with a 3-D (C, KH, KW) kernel sums over the
    channels; 2-D arrays are single channels (a 2-D side is broadcast against a 3-D one, as numpy
    broadcasting did in learn_dl).

    Parameters
    ----------
    input_array : array_like, shape (H, W) or (C, H, W)
    kernel_array : array_like, shape (KH, KW) or (C, KH, KW)
    output_array : ndarray, shape ((H - KH) // stride + 1, (W - KW) // stride + 1)
        Receives the result.
    stride : int
    bias : float
        Added to every output element.
    """
    func = "conv"
    x = as_float_array(input_array, "input_array", func, ndims=(2, 3))
    k = as_float_array(kernel_array, "kernel_array", func, ndims=(2, 3), dtype=x.dtype)
    stride = check_int(stride, "stride", func, minimum=1)
    if not isinstance(output_array, np.ndarray):
        raise TypeError(f"{func}: output_array must be a numpy array to write into, "
                        f"got {type(output_array).__name__}")
    x3 = x if x.ndim == 3 else x[None]
    k3 = k if k.ndim == 3 else k[None]
    channels = max(x3.shape[0], k3.shape[0])
    if x3.shape[0] not in (1, channels) or k3.shape[0] not in (1, channels):
        raise ValueError(f"{func}: kernel_array of shape {k.shape} does not match the channels of "
                         f"input_array of shape {x.shape}")
    H, W = x3.shape[1:]
    kh, kw = k3.shape[1:]
    if min(H, W, kh, kw) < 1 or kh > H or kw > W:
        raise ValueError(f"{func}: kernel_array's window {(kh, kw)} must be non-empty and fit in "
                         f"input_array's {(H, W)}")
    expected = ((H - kh) // stride + 1, (W - kw) // stride + 1)
    check_shape(output_array, expected, "output_array", func)
    x3 = np.broadcast_to(x3, (channels, H, W))
    k3 = np.broadcast_to(k3, (channels, kh, kw))
    y = conv2d(x3, k3[None], None, stride)
    output_array[...] = y[0] + bias


def get_max_index(array):
    """Position of the (first) maximum of ``array`` as a tuple of ints, e.g. ``(i, j)`` for 2-D."""
    a = np.asarray(array)
    if a.size == 0:
        raise ValueError("get_max_index: array must not be empty")
    return tuple(int(v) for v in np.unravel_index(np.argmax(a), a.shape))


# --------------------------------------------------------------------------- Filter

class Filter:
    """One convolution filter: weights (depth, height, width), a scalar bias and their gradients.

    ``Filter(width, height, depth)`` owns its arrays, initialised as in learn_dl (weights uniform in
    [-1e-4, 1e-4) from ``np.random``, bias 0). The filters of a ``ConvLayer`` are views into the
    layer's arrays. Assigning ``weights``/``weights_grad`` checks the shape and copies into the existing
    array; ``bias``/``bias_grad`` take a scalar.

    Parameters
    ----------
    width, height, depth : int
        Kernel width, kernel height and number of input channels, each >= 1.
    """

    __slots__ = ("_weights", "_bias", "_weights_grad", "_bias_grad")

    def __init__(self, width, height, depth):
        func = "Filter"
        width = check_int(width, "width", func, minimum=1)
        height = check_int(height, "height", func, minimum=1)
        depth = check_int(depth, "depth", func, minimum=1)
        self._weights = np.random.uniform(-1e-4, 1e-4, (depth, height, width))
        self._bias = np.zeros((), dtype=_DTYPE)
        self._weights_grad = np.zeros((depth, height, width), dtype=_DTYPE)
        self._bias_grad = np.zeros((), dtype=_DTYPE)

    @classmethod
    def _view(cls, weights, bias, weights_grad, bias_grad):
        """A filter over existing arrays (a layer's slices); bias arrays are 0-d views."""
        f = cls.__new__(cls)
        f._weights, f._bias, f._weights_grad, f._bias_grad = weights, bias, weights_grad, bias_grad
        return f

    # shape
    @property
    def width(self):
        """Kernel width."""
        return self._weights.shape[2]

    @property
    def height(self):
        """Kernel height."""
        return self._weights.shape[1]

    @property
    def depth(self):
        """Number of input channels."""
        return self._weights.shape[0]

    # parameters and gradients
    def _set_array(self, target, value, name):
        if value is target:  # e.g. ``f.weights -= g`` already updated the array in place
            return
        func = f"Filter.{name}"
        value = _to_array(value, name, func)
        if value.shape != target.shape:
            raise ValueError(f"{func}: {name} must have shape {target.shape} (depth, height, width), "
                             f"got {value.shape}")
        target[...] = value

    def _set_scalar(self, target, value, name):
        func = f"Filter.{name}"
        value = _to_array(value, name, func)
        if value.size != 1 or value.ndim > 1:
            raise ValueError(f"{func}: {name} must be a scalar, got an array of shape {value.shape}")
        target[...] = value.reshape(())

    @property
    def weights(self):
        """Weights, shape (depth, height, width); editing them in place edits the layer's."""
        return self._weights

    @weights.setter
    def weights(self, value):
        self._set_array(self._weights, value, "weights")

    @property
    def weights_grad(self):
        """Gradient of the loss with respect to the weights, shape (depth, height, width)."""
        return self._weights_grad

    @weights_grad.setter
    def weights_grad(self, value):
        self._set_array(self._weights_grad, value, "weights_grad")

    @property
    def bias(self):
        """Bias (a float)."""
        return float(self._bias)

    @bias.setter
    def bias(self, value):
        self._set_scalar(self._bias, value, "bias")

    @property
    def bias_grad(self):
        """Gradient of the loss with respect to the bias (a float)."""
        return float(self._bias_grad)

    @bias_grad.setter
    def bias_grad(self, value):
        self._set_scalar(self._bias_grad, value, "bias_grad")

    def get_weights(self):
        """Return the weights array (not a copy)."""
        return self._weights

    def get_bias(self):
        """Return the bias."""
        return float(self._bias)

    def update(self, learning_rate):
        """One gradient-descent step: ``weights -= learning_rate * weights_grad``, same for the bias."""
        lr = check_float(learning_rate, "learning_rate", "Filter.update")
        self._weights -= lr * self._weights_grad
        self._bias -= lr * self._bias_grad

    def __repr__(self):
        return (f"Filter(width={self.width}, height={self.height}, depth={self.depth})\n"
                f"weights:\n{self._weights!r}\nbias: {self.bias!r}")


class _FilterList(collections.abc.Sequence):
    """A layer's filters: indexable and iterable like learn_dl's list.

    Assigning ``layer.filters[k] = some_filter`` copies that filter's weights and bias into the layer.
    """

    __slots__ = ("_filters",)

    def __init__(self, filters):
        self._filters = tuple(filters)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._filters[index])
        return self._filters[index]

    def __len__(self):
        return len(self._filters)

    def __setitem__(self, index, value):
        if not isinstance(value, Filter):
            raise TypeError(f"ConvLayer.filters: can only assign a Filter, got {type(value).__name__}")
        target = self._filters[index]
        target.weights = value.weights
        target.bias = value.bias

    def __repr__(self):
        return repr(list(self._filters))


# --------------------------------------------------------------------------- ConvLayer

@_read_only_sizes("input_width", "input_height", "channel_number", "filter_width", "filter_height",
                  "filter_number", "zero_padding", "stride", "output_width", "output_height")
class ConvLayer:
    """learn_dl's convolution layer, computed by ``cnnext.functional.conv2d``.

    Parameters
    ----------
    input_width, input_height, channel_number : int
        Input size; samples are (channel_number, input_height, input_width) arrays.
    filter_width, filter_height, filter_number : int
        Kernel size and number of filters (output channels).
    zero_padding : int
        Zero padding on every side, >= 0 (any size, also larger than the filter).
    stride : int
        >= 1.
    activator : activator
        Applied to the convolution output in ``forward`` (e.g. ``ReluActivator()``).
    learning_rate : float
        Step size of ``update``.

    Attributes
    ----------
    output_array : ndarray, (filter_number, output_height, output_width) or (N, ...)
        Result of the last ``forward``.
    delta_array : ndarray, shape of the input
        Sensitivity map passed to the previous layer, set by ``backward`` / ``bp_sensitivity_map``.
    input_array : ndarray or None
        Last input (float64).
    filters : sequence of Filter
        Views of the layer's weights, biases and gradients.
    input_width, input_height, channel_number, filter_width, filter_height, filter_number,
    zero_padding, stride, output_width, output_height : int
        The layer's sizes, read-only (assigning one raises AttributeError: the arrays are sized
        from them).

    Notes
    -----
    ``forward``, ``backward``, ``update``, ``bp_sensitivity_map`` and ``bp_gradient`` accept a single
    (C, H, W) sample or an (N, C, H, W) batch; with a batch the gradients are summed over the samples.
    ``backward`` does not re-run ``forward``.
    """

    def __init__(self, input_width, input_height, channel_number, filter_width, filter_height,
                 filter_number, zero_padding, stride, activator, learning_rate):
        func = "ConvLayer"
        _set_sizes(self, func, [
            ("input_width", input_width, 1), ("input_height", input_height, 1),
            ("channel_number", channel_number, 1), ("filter_width", filter_width, 1),
            ("filter_height", filter_height, 1), ("filter_number", filter_number, 1),
            ("zero_padding", zero_padding, 0), ("stride", stride, 1)])
        self.activator = _check_activator(activator, "activator", func)
        self.learning_rate = check_float(learning_rate, "learning_rate", func)
        for axis, size, fsize in (("width", self.input_width, self.filter_width),
                                  ("height", self.input_height, self.filter_height)):
            if fsize > size + 2 * self.zero_padding:
                raise ValueError(
                    f"{func}: filter_{axis}={fsize} is larger than the padded input {axis} "
                    f"input_{axis} + 2 * zero_padding = {size + 2 * self.zero_padding}; "
                    f"the output would be empty"
                )
        self.__dict__.update(  # the read-only output sizes
            _output_width=ConvLayer.calculate_output_size(
                self.input_width, self.filter_width, self.zero_padding, self.stride),
            _output_height=ConvLayer.calculate_output_size(
                self.input_height, self.filter_height, self.zero_padding, self.stride))
        self.output_array = np.zeros((self.filter_number, self.output_height, self.output_width))
        self.input_array = None
        self.delta_array = None
        self._geometry_key = None  # input shape of the cached geometry
        self._geometry_cache = None

        shape = (self.filter_number, self.channel_number, self.filter_height, self.filter_width)
        # one draw of K*C*KH*KW numbers equals learn_dl's K draws of C*KH*KW: same np.random stream
        self._weights = np.random.uniform(-1e-4, 1e-4, shape)
        self._bias = np.zeros(self.filter_number, dtype=_DTYPE)
        self._weights_grad = np.zeros(shape, dtype=_DTYPE)
        self._bias_grad = np.zeros(self.filter_number, dtype=_DTYPE)
        self._filters = _FilterList(
            Filter._view(self._weights[k], self._bias[k, ...], self._weights_grad[k],
                         self._bias_grad[k, ...])
            for k in range(self.filter_number)
        )

    @staticmethod
    def calculate_output_size(input_size, filter_size, zero_padding, stride):
        """Output length along one axis: ``(input_size - filter_size + 2 * zero_padding) // stride + 1``."""
        return conv_output_size(input_size, filter_size, stride, 2 * zero_padding, 1)

    @property
    def filters(self):
        """The filters (``Filter`` views of the layer's arrays)."""
        return self._filters

    @property
    def padded_input_array(self):
        """The last input with its zero padding (computed on access; the kernels pad implicitly)."""
        if self.input_array is None:
            return None
        return padding(self.input_array, self.zero_padding)

    # shapes
    @property
    def _in_shape(self):
        return (self.channel_number, self.input_height, self.input_width)

    @property
    def _out_shape(self):
        return (self.filter_number, self.output_height, self.output_width)

    def _check_input(self, input_array, func):
        return _check_sample(input_array, self._in_shape, "input_array", func)

    def _check_sensitivity(self, sensitivity_array, x, func):
        batch = False if x.ndim == 3 else x.shape[0]
        return _check_sample(sensitivity_array, self._out_shape, "sensitivity_array", func, batch)

    def _last_input(self, func):
        if self.input_array is None:
            raise RuntimeError(f"{func}: no input yet; call forward(input_array) first")
        return self.input_array

    def _geometry(self, x4, func):
        """The convolution geometry for a checked (N, C, H, W) input, validated by ``check_conv2d``
        once per input shape (and stride and padding) and cached: the calls in between pass it
        straight to the functional entry points, which skip the argument checks."""
        key = x4.shape  # stride and zero_padding are read-only
        if key != self._geometry_key:
            _, _, _, g, _ = check_conv2d(func, x4, self._weights, self._bias, self.stride,
                                         self.zero_padding, 1, 1)
            self._geometry_key, self._geometry_cache = key, g
        return self._geometry_cache

    def _grads(self, func, x, s, need_input, need_weight):
        """One conv2d_backward of the checked input ``x`` and sensitivity ``s`` (same layout)."""
        unbatched = x.ndim == 3
        x4, s4 = (x[None], s[None]) if unbatched else (x, s)
        out_w, out_b = (self._weights_grad, self._bias_grad) if need_weight else (None, None)
        gx, _, _ = _conv2d_backward_checked(x4, self._weights, s4, self._geometry(x4, func),
                                            need_input, need_weight, out_w, out_b)
        return gx[0] if unbatched and need_input else gx

    def _set_delta(self, grad_input, x, activator):
        if type(activator) is not IdentityActivator:  # the identity's derivative is 1
            grad_input *= _activate(activator.backward, x.copy())
        self.delta_array = grad_input

    # learn_dl API
    def forward(self, input_array):
        """Convolve ``input_array``, add the biases, apply the activator; result in ``output_array``.

        Parameters
        ----------
        input_array : array_like, (channel_number, input_height, input_width) or (N, ...)
        """
        func = "ConvLayer.forward"
        x = self._check_input(input_array, func)
        unbatched = x.ndim == 3
        x4 = x[None] if unbatched else x
        y = _conv2d_forward_checked(x4, self._weights, self._bias, self._geometry(x4, func))
        self.input_array = x
        self.output_array = _activate(self.activator.forward, y[0] if unbatched else y)

    def backward(self, input_array, sensitivity_array, activator):
        """Compute ``delta_array`` and the filters' gradients in one ``conv2d_backward`` call.

        Parameters
        ----------
        input_array : array_like, (channel_number, input_height, input_width) or (N, ...)
            This layer's input (the previous layer's output).
        sensitivity_array : array_like, (filter_number, output_height, output_width) or (N, ...)
            Gradient of the loss with respect to this layer's pre-activation output.
        activator : activator
            The previous layer's activator: ``delta_array = dL/d(input) * activator.backward(input)``.

        Notes
        -----
        Unlike learn_dl's, this does not re-run ``forward``; ``output_array`` is left as it was.
        """
        func = "ConvLayer.backward"
        x = self._check_input(input_array, func)
        s = self._check_sensitivity(sensitivity_array, x, func)
        _check_activator(activator, "activator", func)
        self.input_array = x
        gx = self._grads(func, x, s, need_input=True, need_weight=True)
        self._set_delta(gx, x, activator)

    def bp_sensitivity_map(self, sensitivity_array, activator):
        """Compute only ``delta_array`` for the input of the last ``forward`` (see ``backward``)."""
        func = "ConvLayer.bp_sensitivity_map"
        x = self._last_input(func)
        s = self._check_sensitivity(sensitivity_array, x, func)
        _check_activator(activator, "activator", func)
        gx = self._grads(func, x, s, need_input=True, need_weight=False)
        self._set_delta(gx, x, activator)

    def bp_gradient(self, sensitivity_array):
        """Compute only the filters' gradients for the input of the last ``forward``."""
        func = "ConvLayer.bp_gradient"
        x = self._last_input(func)
        s = self._check_sensitivity(sensitivity_array, x, func)
        self._grads(func, x, s, need_input=False, need_weight=True)

    def update(self):
        """One gradient-descent step on all filters with ``learning_rate``."""
        lr = check_float(self.learning_rate, "learning_rate", "ConvLayer.update")
        self._weights -= lr * self._weights_grad
        self._bias -= lr * self._bias_grad

    def expand_sensitivity_map(self, sensitivity_array):
        """learn_dl's helper: the sensitivity map of the same layer with stride 1 (zeros in between)."""
        s = _to_array(sensitivity_array, "sensitivity_array", "ConvLayer.expand_sensitivity_map")
        if s.ndim < 2 or s.shape[-2:] != (self.output_height, self.output_width):
            raise ValueError(
                f"ConvLayer.expand_sensitivity_map: sensitivity_array must end in "
                f"(output_height, output_width) = {(self.output_height, self.output_width)}, got {s.shape}")
        eh = self.input_height - self.filter_height + 2 * self.zero_padding + 1
        ew = self.input_width - self.filter_width + 2 * self.zero_padding + 1
        out = np.zeros(s.shape[:-2] + (eh, ew), dtype=_DTYPE)
        out[..., ::self.stride, ::self.stride] = s
        return out

    def create_delta_array(self):
        """learn_dl's helper: zeros of the input's shape (channel_number, input_height, input_width)."""
        return np.zeros(self._in_shape)

    def __repr__(self):
        return (f"ConvLayer(input_width={self.input_width}, input_height={self.input_height}, "
                f"channel_number={self.channel_number}, filter_width={self.filter_width}, "
                f"filter_height={self.filter_height}, filter_number={self.filter_number}, "
                f"zero_padding={self.zero_padding}, stride={self.stride}, "
                f"activator={self.activator!r}, learning_rate={self.learning_rate!r})")


# --------------------------------------------------------------------------- MaxPoolingLayer

@_read_only_sizes("input_width", "input_height", "channel_number", "filter_width", "filter_height",
                  "stride", "output_width", "output_height")
class MaxPoolingLayer:
    """learn_dl's max-pooling layer, computed by ``cnnext.functional.max_pool2d``.

    Parameters
    ----------
    input_width, input_height, channel_number : int
        Input size; samples are (channel_number, input_height, input_width) arrays.
    filter_width, filter_height : int
        Window size.
    stride : int
        >= 1; windows may overlap (stride < window), their gradients then add up.

    Attributes
    ----------
    output_array : ndarray, (channel_number, output_height, output_width) or (N, ...)
    delta_array : ndarray, shape of the input
        Set by ``backward``: each sensitivity added at the position of its window's (first) maximum.
    input_width, input_height, channel_number, filter_width, filter_height, stride, output_width,
    output_height : int
        The layer's sizes, read-only (assigning one raises AttributeError).
    """

    def __init__(self, input_width, input_height, channel_number, filter_width, filter_height,
                 stride):
        func = "MaxPoolingLayer"
        _set_sizes(self, func, [
            ("input_width", input_width, 1), ("input_height", input_height, 1),
            ("channel_number", channel_number, 1), ("filter_width", filter_width, 1),
            ("filter_height", filter_height, 1), ("stride", stride, 1)])
        for axis, size, fsize in (("width", self.input_width, self.filter_width),
                                  ("height", self.input_height, self.filter_height)):
            if fsize > size:
                raise ValueError(f"{func}: filter_{axis}={fsize} is larger than input_{axis}={size}; "
                                 f"the output would be empty")
        self.__dict__.update(  # the read-only output sizes
            _output_width=(self.input_width - self.filter_width) // self.stride + 1,
            _output_height=(self.input_height - self.filter_height) // self.stride + 1)
        self.output_array = np.zeros((self.channel_number, self.output_height, self.output_width))
        self.delta_array = None

    @property
    def _in_shape(self):
        return (self.channel_number, self.input_height, self.input_width)

    @property
    def _out_shape(self):
        return (self.channel_number, self.output_height, self.output_width)

    def _pool(self, x, return_indices):
        return max_pool2d(x, (self.filter_height, self.filter_width), self.stride,
                          return_indices=return_indices)

    def forward(self, input_array):
        """Max over each window; result in ``output_array``.

        Parameters
        ----------
        input_array : array_like, (channel_number, input_height, input_width) or (N, ...)
        """
        x = _check_sample(input_array, self._in_shape, "input_array", "MaxPoolingLayer.forward")
        self.output_array = self._pool(x, False)

    def backward(self, input_array, sensitivity_array):
        """Route each sensitivity to its window's maximum in ``input_array``; result in ``delta_array``.

        Parameters
        ----------
        input_array : array_like, (channel_number, input_height, input_width) or (N, ...)
        sensitivity_array : array_like, (channel_number, output_height, output_width) or (N, ...)

        Notes
        -----
        The maxima are found again in ``input_array`` (no ``forward`` needed first); where windows
        overlap, the gradients of a shared maximum add up.
        """
        func = "MaxPoolingLayer.backward"
        x = _check_sample(input_array, self._in_shape, "input_array", func)
        batch = False if x.ndim == 3 else x.shape[0]
        s = _check_sample(sensitivity_array, self._out_shape, "sensitivity_array", func, batch)
        _, indices = self._pool(x, True)
        self.delta_array = max_pool2d_backward(s, indices, x.shape)

    def __repr__(self):
        return (f"MaxPoolingLayer(input_width={self.input_width}, input_height={self.input_height}, "
                f"channel_number={self.channel_number}, filter_width={self.filter_width}, "
                f"filter_height={self.filter_height}, stride={self.stride})")
