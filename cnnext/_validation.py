"""Argument checks and normalisation for every public entry point.

Everything that reaches a kernel passes through here first: arrays become C-contiguous float32 or
float64 (integer and bool inputs become float64; complex, object and other dtypes are refused), size
arguments become (h, w) pairs of ints, and shapes are checked against each other. Errors are
ValueError or TypeError and name the function, the argument, what it was and what was expected.
Once these checks pass, the Cython kernels run without bounds checks.
"""
import math
import numbers
import operator
import reprlib
import sys
from dataclasses import dataclass

import numpy as np

__all__ = [
    "as_float_array",
    "as_batch",
    "check_batch_grad",
    "to_pair",
    "conv_output_size",
    "pool_output_size",
    "ConvGeometry",
    "PoolGeometry",
    "check_conv2d",
    "check_pool2d",
    "check_shape",
    "check_bool",
    "check_int",
    "check_float",
    "check_choice",
    "check_dtype",
    "check_rng",
    "check_conv_padding",
    "check_input_shape",
    "check_linear",
    "check_cross_entropy",
    "check_mse",
    "result_dtype",
]

# Naming convention: every check of one value is ``check_x(value, name, func, ...)`` (likewise
# ``as_float_array``, ``as_batch``, ``to_pair``, ``result_dtype``), where ``name`` is the argument and
# ``func`` the caller as the user sees it ("conv2d", "Conv2d", "Conv2d.backward", "SGD"). Messages
# read "{func}: {name} must be ..., got ...". The validators of a whole call (check_conv2d,
# check_pool2d, check_linear, check_cross_entropy, check_mse) take ``func`` first, then the
# arguments in the order of the function they check. One function per kind of check: extend these
# rather than writing a new one in a module.


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def result_dtype(x, name, func):
    """Return the float dtype a computation on array ``x`` runs in (float32 or float64).

    Integer and bool arrays compute in float64; float16, complex, object and other dtypes raise
    TypeError naming ``name`` and ``func``.
    """
    dt = x.dtype
    if dt == np.float32 or dt == np.float64:
        return dt
    if dt.kind in "iub":
        return np.dtype(np.float64)
    if dt.kind == "f":
        raise TypeError(
            f"{func}: {name} has dtype {dt}, which cnnext does not compute in; "
            f"convert it with {name}.astype(np.float32) or np.float64"
        )
    raise TypeError(
        f"{func}: {name} must hold real numbers (float32, float64, integer or bool), got dtype {dt}"
    )


def as_float_array(x, name, func, ndims=(4,), dtype=None, shape=None):
    """Return ``x`` as a C-contiguous float array with one of the given numbers of dimensions.

    Parameters
    ----------
    x : array_like
        The argument to check.
    name, func : str
        Argument and function names for error messages.
    ndims : tuple of int
        Accepted numbers of dimensions.
    dtype : numpy dtype, optional
        Cast to this dtype (after checking ``x`` is real and numeric). By default the result keeps
        float32/float64 and turns integers and bools into float64.
    shape : tuple of int, optional
        The exact shape ``x`` must have (checked after ``ndims``).
    """
    if x is None:
        raise TypeError(f"{func}: {name} must be an array, got None")
    orig = x
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{func}: {name} must be array_like of numbers ({exc})") from None
    try:
        target = result_dtype(x, name, func)
    except TypeError as exc:
        if orig is not x:  # the caller passed a non-array: show what it was
            raise TypeError(f"{exc} (from {reprlib.repr(orig)})") from None
        raise
    if dtype is not None:
        target = np.dtype(dtype)
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{func}: {name} must be {want}, got {x.ndim}-D array of shape {x.shape}")
    if shape is not None:
        check_shape(x, shape, name, func)
    return np.asarray(x, dtype=target, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-D


def as_batch(x, name, func, dtype=None):
    """Check an (N, C, H, W) batch or one (C, H, W) sample (see ``as_float_array``).

    Returns ``(x4, unbatched)``: the checked array, always 4-D, and whether it was one 3-D sample.
    """
    x = as_float_array(x, name, func, ndims=(3, 4), dtype=dtype)
    return (x[None], True) if x.ndim == 3 else (x, False)


def check_batch_grad(grad_output, name, func, output_shape, unbatched, dtype=None):
    """Check a gradient against a forward output of 4-D ``output_shape`` (3-D, without the batch
    axis, when the forward input was ``unbatched``); return it 4-D."""
    shape = tuple(output_shape[1:]) if unbatched else tuple(output_shape)
    gy = as_float_array(grad_output, name, func, ndims=(len(shape),), dtype=dtype, shape=shape)
    return gy[None] if unbatched else gy


# The kernels index with Py_ssize_t (int64). Every geometric quantity they see -- input and padded
# sizes, paddings, kernel sizes, dilated kernel extents and strides, hence every position
# o * stride - padding + i * dilation -- is kept at most _INDEX_LIMIT, so that a sum or difference
# of a few such terms cannot overflow (4 * 2**60 < 2**63). The checks below refuse larger values
# with a ValueError naming the argument, except where a value does not change the result: a
# stride at least the padded size (only output position 0 exists, and o * stride = 0) is clamped
# to that size, and the dilation of a kernel of size 1 to 1.
_INDEX_LIMIT = 2**60


def _index_bound(value, what, func):
    """Raise ValueError unless ``value`` (a Python int, computed without overflow) is at most
    _INDEX_LIMIT; ``what`` describes it, naming the argument."""
    if value > _INDEX_LIMIT:
        raise ValueError(
            f"{func}: {what} is {value}, more than 2**60 = {_INDEX_LIMIT}, beyond which the "
            f"kernels' int64 index arithmetic could overflow"
        )


def _axis_bounds(size, k, s, pad_total, d, func, argnames, axis):
    """Check one axis' geometry against _INDEX_LIMIT: the dilated kernel extent and the padded
    size. Returns the stride and dilation the kernels get: s clamped to the padded size (an
    output of one position is all a larger stride can give, see _INDEX_LIMIT) and d = 1 for
    k == 1. ``argnames`` maps "kernel", "padding", "dilation" to the argument names to report."""
    _index_bound(k, f"{argnames['kernel']} along the {axis}", func)
    if k == 1:
        d = 1
    else:
        _index_bound(d * (k - 1) + 1, f"the dilated kernel extent dilation * (kernel - 1) + 1 "
                     f"along the {axis} ({argnames['dilation']} {d}, kernel {k})", func)
    padded = size + pad_total
    _index_bound(padded, f"the padded input size along the {axis} (size {size} + "
                 f"{argnames['padding']} {pad_total})", func)
    return min(s, padded), d


def to_pair(value, name, func, minimum=None):
    """Normalise an int or an (h, w) pair of ints to a tuple of two Python ints >= ``minimum``."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{func}: {name} must be an int or a pair of ints, got {value!r}")
        pair = tuple(_to_int(v, name, func) for v in value)
    else:
        v = _to_int(value, name, func)
        pair = (v, v)
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, got {value!r}")
    if max(abs(v) for v in pair) > sys.maxsize:  # the kernels take Py_ssize_t
        raise ValueError(f"{func}: {name} must be at most {sys.maxsize}, got {value!r}")
    return pair


def _to_int(v, name, func):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be an int or a pair of ints, got bool {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(
            f"{func}: {name} must be an int or a pair of ints, got {type(v).__name__} {v!r}"
        ) from None


def conv_output_size(size, kernel, stride, pad_total, dilation):
    """Output length of a convolution along one axis (PyTorch's rule, floor division)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Output length of a pooling along one axis (PyTorch's rule, including ceil_mode's last window).

    With ``ceil_mode`` the last window may run past the input, but it must start inside the input
    or the left padding; otherwise it is dropped.
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1  # ceil, also for span < 0 (PyTorch: div_rtn(span + s - 1, s))
        if (out - 1) * stride >= size + pad:
            out -= 1
    else:
        out = span // stride + 1
    return out


def check_bool(value, name, func):
    """Return ``value`` as a Python bool; TypeError unless it is a bool (Python or numpy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{func}: {name} must be a bool, got {_describe(value)}")
    return bool(value)


def check_int(value, name, func, minimum=None, maximum=None):
    """Return ``value`` as a Python int in [minimum, maximum]; bools and non-integers are refused.

    Parameters
    ----------
    value : object
        Anything with ``__index__`` (Python or numpy integer).
    name, func : str
        Argument and caller names for error messages.
    minimum, maximum : int, optional
        Inclusive bounds.
    """
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        value = operator.index(value)  # also refuses float arrays and arrays of several ints
    except TypeError:
        raise TypeError(f"{func}: {name} must be an int, got {_describe(value)}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            raise ValueError(f"{func}: {name} must be >= {minimum}, got {value}")
        if minimum is None:
            raise ValueError(f"{func}: {name} must be <= {maximum}, got {value}")
        raise ValueError(f"{func}: {name} must be in [{minimum}, {maximum}], got {value}")
    return value


def check_float(value, name, func, minimum=None, maximum=None, open_min=False, open_max=False,
                finite=True):
    """Return ``value`` as a Python float within the given bounds.

    Parameters
    ----------
    value : object
        A real number (Python or numpy, or a 0-d array of one; bools are refused).
    name, func : str
        Argument and caller names for error messages.
    minimum, maximum : float, optional
        Bounds, inclusive unless ``open_min`` / ``open_max``.
    finite : bool
        Refuse inf and NaN (NaN is always refused).
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{func}: {name} must be a real number, got {_describe(value)}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{func}: {name} must be finite, got {value!r}")
    low_bad = minimum is not None and (v <= minimum if open_min else v < minimum)
    high_bad = maximum is not None and (v >= maximum if open_max else v > maximum)
    if low_bad or high_bad:
        if maximum is None:
            want = f"{'>' if open_min else '>='} {minimum}"
        elif minimum is None:
            want = f"{'<' if open_max else '<='} {maximum}"
        else:
            want = f"in {'(' if open_min else '['}{minimum}, {maximum}{')' if open_max else ']'}"
        raise ValueError(f"{func}: {name} must be {want}, got {value!r}")
    return v


def check_choice(value, name, func, choices):
    """Return ``value`` if it is one of ``choices`` (compared with ==), else raise ValueError."""
    if not isinstance(value, (str, type(None), bool, int)) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{func}: {name} must be one of {listed}, got {value!r}")
    return value


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name, func):
    """Return ``dtype`` as the numpy dtype float32 or float64, or raise naming the argument."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{func}: {name} must be np.float32 or np.float64, got {dtype!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise ValueError(f"{func}: {name} must be np.float32 or np.float64, got {dt}")
    return dt


def check_rng(rng, name, func):
    """Return a numpy Generator from ``rng`` (None, an int seed or a Generator)."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"{func}: {name} must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def check_shape(arr, expected, name, func):
    """Raise ValueError unless ``arr.shape == expected``."""
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{func}: {name} must have shape {tuple(expected)}, got {tuple(arr.shape)}")


@dataclass(frozen=True)
class ConvGeometry:
    """Normalised convolution parameters (padding split into top/bottom/left/right)."""

    N: int
    C: int
    H: int
    W: int
    K: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dh: int
    dw: int
    groups: int
    Ho: int
    Wo: int

    @property
    def output_shape(self):
        return (self.N, self.K, self.Ho, self.Wo)

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)

    @property
    def pointwise(self):
        """True for a 1x1 convolution with stride 1 and no padding (no im2col needed)."""
        return (self.kh == 1 and self.kw == 1 and self.sh == 1 and self.sw == 1
                and self.pt == self.pb == self.pl == self.pr == 0)


def check_conv_padding(padding, stride, func):
    """Return a convolution's ``padding`` as 'valid', 'same' or an (h, w) pair of ints >= 0.

    ``stride`` is the normalised (h, w) stride: 'same' needs stride 1.
    """
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"{func}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        if padding == "same" and tuple(stride) != (1, 1):
            raise ValueError(f"{func}: padding='same' needs stride 1, got stride={tuple(stride)}")
        return padding
    return to_pair(padding, "padding", func, minimum=0)


def _conv_padding(padding, kh, kw, dh, dw, stride, func):
    """(top, bottom, left, right) padding amounts of a checked convolution."""
    padding = check_conv_padding(padding, stride, func)
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = padding
    return ph, ph, pw, pw


def check_conv2d(func, x, weight, bias, stride, padding, dilation, groups, dtype=None):
    """Validate conv2d arguments.

    Returns ``(x, weight, bias, geometry, unbatched)`` with x always 4-D (N, C, H, W), weight in
    x's dtype, bias in x's dtype or None, and ``unbatched`` True when x was a single (C, H, W) sample.
    With ``dtype`` (a layer's parameter dtype) x is cast to it first.
    """
    x, unbatched = as_batch(x, "input", func, dtype=dtype)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{func}: input's channel and spatial sizes must be >= 1, got shape {x.shape}")
    weight = as_float_array(weight, "weight", func, ndims=(4,), dtype=x.dtype)
    groups = check_int(groups, "groups", func, minimum=1)
    N, C, H, W = x.shape
    K, Cg, kh, kw = weight.shape
    if C % groups:
        raise ValueError(f"{func}: groups={groups} must divide the input channels, got {C} channels")
    if K % groups:
        raise ValueError(f"{func}: groups={groups} must divide the weight's out_channels, got {K}")
    if Cg * groups != C:
        raise ValueError(
            f"{func}: weight of shape {weight.shape} expects {Cg * groups} input channels "
            f"(weight.shape[1] * groups = {Cg} * {groups}), but input has {C} (shape {x.shape})"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"{func}: weight's kernel must be at least 1x1, got shape {weight.shape}")
    sh, sw = to_pair(stride, "stride", func, minimum=1)
    dh, dw = to_pair(dilation, "dilation", func, minimum=1)
    pt, pb, pl, pr = _conv_padding(padding, kh, kw, dh, dw, (sh, sw), func)
    names = {"kernel": "the weight's kernel size", "padding": "padding", "dilation": "dilation"}
    ksh, kdh = _axis_bounds(H, kh, sh, pt + pb, dh, func, names, "height")
    ksw, kdw = _axis_bounds(W, kw, sw, pl + pr, dw, func, names, "width")
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if ekh > H + pt + pb or ekw > W + pl + pr:
        raise ValueError(
            f"{func}: kernel size {(ekh, ekw)} (dilated) is larger than the padded input "
            f"{(H + pt + pb, W + pl + pr)}; use a smaller kernel or dilation, or more padding "
            f"(weight shape {weight.shape}, dilation {(dh, dw)}, padding {padding!r}, "
            f"input shape {x.shape})"
        )
    if bias is not None:
        bias = as_float_array(bias, "bias", func, ndims=(1,), dtype=x.dtype)
        check_shape(bias, (K,), "bias", func)
    # output sizes from the arguments as given; the kernels get the clamped stride and dilation
    geo = ConvGeometry(N, C, H, W, K, kh, kw, ksh, ksw, pt, pb, pl, pr, kdh, kdw, groups,
                       conv_output_size(H, kh, sh, pt + pb, dh), conv_output_size(W, kw, sw, pl + pr, dw))
    return x, weight, bias, geo, unbatched


_ANY_ND = tuple(range(0, 33))


def check_linear(func, x, weight, bias=None, dtype=None):
    """Validate linear (``x @ weight.T + bias``) arguments; return ``(x, weight, bias)``.

    x (*, in_features) is cast to ``dtype`` when given (a layer's parameter dtype), weight
    (out_features, in_features) and bias (out_features,) or None to x's dtype.
    """
    x = as_float_array(x, "input", func, ndims=_ANY_ND[1:], dtype=dtype)
    w = as_float_array(weight, "weight", func, ndims=(2,), dtype=x.dtype)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"{func}: input's last dimension ({x.shape[-1]}, shape {x.shape}) must equal weight's "
            f"in_features (weight.shape[1] = {w.shape[1]}, weight shape {w.shape})"
        )
    if bias is not None:
        bias = as_float_array(bias, "bias", func, ndims=(1,), dtype=x.dtype, shape=(w.shape[0],))
    return x, w, bias


def check_cross_entropy(func, input, target):
    """Validate (N, C) logits and (N,) integer class targets in [0, C); return ``(x, target)``
    with target as an intp array."""
    x = as_float_array(input, "input", func, ndims=(2,))
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{func}: target must hold integer class indices, got dtype {t.dtype} "
            f"(convert labels with target.astype(np.int64))"
        )
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{func}: target must be 1-D with one class index per row of input "
            f"(shape ({x.shape[0]},)), got shape {t.shape}"
        )
    n, c = x.shape
    if n and (t.min() < 0 or t.max() >= c):
        raise ValueError(
            f"{func}: target class indices must lie in [0, {c}) for {c} classes, "
            f"got values from {t.min()} to {t.max()}"
        )
    return x, t.astype(np.intp, copy=False)


def check_mse(func, input, target):
    """Validate an input and a target of the same shape (any rank); return them in one float dtype."""
    x = as_float_array(input, "input", func, ndims=_ANY_ND)
    t = as_float_array(target, "target", func, ndims=_ANY_ND, dtype=x.dtype, shape=x.shape)
    return x, t


@dataclass(frozen=True)
class PoolGeometry:
    """Normalised pooling parameters."""

    N: int
    C: int
    H: int
    W: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    Ho: int
    Wo: int

    @property
    def output_shape(self):
        return (self.N, self.C, self.Ho, self.Wo)

    @property
    def input_shape(self):
        return (self.N, self.C, self.H, self.W)


def check_pool2d(func, input_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate pooling parameters against an (N, C, H, W) input shape; return a PoolGeometry."""
    N, C, H, W = input_shape
    if min(C, H, W) < 1:
        raise ValueError(f"{func}: input's channel and spatial sizes must be >= 1, got shape {tuple(input_shape)}")
    kh, kw = to_pair(kernel_size, "kernel_size", func, minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        sh, sw = kh, kw
    else:
        sh, sw = to_pair(stride, "stride", func, minimum=1)
    ph, pw = to_pair(padding, "padding", func, minimum=0)
    dh, dw = to_pair(dilation, "dilation", func, minimum=1)
    check_bool(ceil_mode, "ceil_mode", func)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(
            f"{func}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}"
        )
    names = {"kernel": "kernel_size", "padding": "2 * padding", "dilation": "dilation"}
    ksh, kdh = _axis_bounds(H, kh, sh, 2 * ph, dh, func, names, "height")
    ksw, kdw = _axis_bounds(W, kw, sw, 2 * pw, dw, func, names, "width")
    Ho = pool_output_size(H, kh, sh, ph, dh, bool(ceil_mode))
    Wo = pool_output_size(W, kw, sw, pw, dw, bool(ceil_mode))
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{func}: input of spatial size {(H, W)} is too small for kernel_size {(kh, kw)} with "
            f"padding {(ph, pw)} and dilation {(dh, dw)} (output size would be {(Ho, Wo)})"
        )
    for size, k, s, p, d, n_out, axis in ((H, kh, sh, ph, dh, Ho, "height"), (W, kw, sw, pw, dw, Wo, "width")):
        # Window o has taps o*s - p + i*d, i < k. A window starting inside the input is fine (the
        # output size rules keep every start below size), so only those starting in the left
        # padding are checked, by arithmetic: never one array element per tap, whatever k is.
        # The first tap at or after 0 lies at (o*s - p) mod d < d, so with d <= size every window
        # reaches the input (and the loop below, up to p iterations, is skipped).
        only_padding = False
        for o in range(n_out if d > size else 0):
            st = o * s - p
            if st >= 0:
                break
            i0 = -(st // d)  # first tap at or after 0: ceil(-st / d)
            if i0 >= k or st + i0 * d >= size:
                only_padding = True
                break
        if only_padding:
            raise ValueError(
                f"{func}: along the {axis}, some pooling window covers only padding "
                f"(size {size}, kernel {k}, stride {s}, padding {p}, dilation {d}); "
                f"reduce padding or dilation"
            )
    # output sizes from the arguments as given; the kernels get the clamped stride and dilation
    return PoolGeometry(N, C, H, W, kh, kw, ksh, ksw, ph, pw, kdh, kdw, Ho, Wo)


def check_input_shape(input_shape, name, func):
    """Normalise an (N, C, H, W) or (C, H, W) shape; return (shape4, unbatched)."""
    try:
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"{func}: {name} must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) not in (3, 4) or min(shape) < 0:
        raise ValueError(f"{func}: {name} must be (N, C, H, W) or (C, H, W) with sizes >= 0, got {shape}")
    if math.prod(shape) * 8 > sys.maxsize:
        raise ValueError(f"{func}: {name} {shape} is too large for an array")
    if len(shape) == 3:
        return (1,) + shape, True
    return shape, False
