"""Property-based tests (hypothesis) over the public functional, learn_dl and nn APIs (issue 6, item 1).

Every property draws shapes, parameters, dtypes and memory layouts (C order, Fortran order, strided,
negatively strided, read-only, zero-stride broadcast views) and checks, for valid draws, agreement
with the independent float64 loop oracle (tests/naive_oracle.py) or with numpy closed forms, and for
invalid draws that cnnext raises ValueError or TypeError -- never another exception, never a crash.
Whether a draw is valid is decided here, from PyTorch's documented rules and cnnext's documented
refusals, not by asking cnnext.

Example counts: the ``cnnext-ci`` profile (the default, 200 examples per property, small shapes)
keeps the normal run short. For a long run set ``CNNEXT_HYPOTHESIS_PROFILE=long`` (5000 examples
per property) or ``CNNEXT_HYPOTHESIS_EXAMPLES=<n>`` (any count; it wins over the profile);
``CNNEXT_HYPOTHESIS_PROFILE=dev`` is a quick look (50 examples, no shrinking). For example::

    CNNEXT_HYPOTHESIS_PROFILE=long python -m pytest tests/functional/test_properties.py
"""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext import nn
from cnnext._config import force_conv_algorithm

# ------------------------------------------------------------------------------------ settings

settings.register_profile(
    "cnnext-ci", max_examples=200, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("cnnext-long", settings.get_profile("cnnext-ci"), max_examples=5000)
# quick look while editing: fewer examples, no shrinking (failures are reported as found)
settings.register_profile("cnnext-dev", settings.get_profile("cnnext-ci"), max_examples=50,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])


def _profile():
    name = os.environ.get("CNNEXT_HYPOTHESIS_PROFILE", "ci").strip().lower() or "ci"
    if name not in ("ci", "long", "dev"):
        raise ValueError(f"CNNEXT_HYPOTHESIS_PROFILE must be 'ci', 'long' or 'dev', got {name!r}")
    prof = settings.get_profile(f"cnnext-{name}")
    n = os.environ.get("CNNEXT_HYPOTHESIS_EXAMPLES", "").strip()
    if n:
        prof = settings(prof, max_examples=int(n))
    return prof


# Applied per test (not loaded globally) so other test modules keep hypothesis' own defaults.
PROPERTY = _profile()

# ------------------------------------------------------------------------------------ helpers

LAYOUTS = ("C", "F", "strided", "negative", "readonly", "broadcast", "list")
VALUE_KINDS = ("normal", "ties", "wide")
INPUT_DTYPES = ("float32", "float64", "int64", "int32", "uint8", "bool")


def compute_dtype(obj):
    """The dtype cnnext computes in for the array_like ``obj`` (float32 stays, the rest is float64).

    A nested list of float32 values is float64 to numpy, so this looks at what is passed.
    """
    return np.dtype(np.float32) if np.asarray(obj).dtype == np.float32 else np.dtype(np.float64)


def make_values(rng, shape, dtype, kind="normal"):
    """Random values of ``shape`` in ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "u":
        return rng.integers(0, 6, size=shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-4, 5, size=shape).astype(dtype)
    if kind == "ties":  # few distinct values: exercises tie-breaking in max pooling
        return rng.integers(-2, 3, size=shape).astype(dtype)
    if kind == "wide":
        return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def in_layout(values, layout):
    """The values of ``values`` in another memory layout (or as a nested list).

    'broadcast' replaces every entry along axis 0 by the first one (a zero-stride read-only view),
    so callers always take the expected result from ``np.array(returned)``.
    """
    v = np.asarray(values)
    if layout == "C" or v.ndim == 0:
        return np.ascontiguousarray(v)
    if layout == "F":
        return np.asfortranarray(v)
    if layout == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in v.shape), dtype=v.dtype)
        view = big[tuple(slice(1, None, 2) for _ in v.shape)]
        view[...] = v
        return view
    if layout == "negative":
        flip = tuple(slice(None, None, -1) for _ in v.shape)
        return np.ascontiguousarray(v[flip])[flip]
    if layout == "readonly":
        a = v.copy()
        a.setflags(write=False)
        return a
    if layout == "broadcast":
        if v.shape[0] == 0:
            return np.ascontiguousarray(v)
        return np.broadcast_to(v[:1], v.shape)
    if layout == "list":
        return v.tolist() if v.size else np.ascontiguousarray(v)  # [] would lose the shape
    raise AssertionError(layout)


def as_expected(arr, dtype):
    """float64 copy of ``arr`` after rounding to the compute ``dtype`` (what cnnext really sees)."""
    return np.array(arr).astype(dtype).astype(np.float64)


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, before):
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg="an input array was modified")


def assert_fresh(result, *inputs):
    """A result is a new writable array, sharing no memory with any input."""
    assert isinstance(result, np.ndarray)
    assert result.flags.writeable
    for a in inputs:
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(result, a)


def raises_cleanly(call):
    """Run ``call``; return the ValueError/TypeError it raised, or None. Any other exception fails."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        assert msg, "empty error message"
        return exc
    return None


seeds = st.integers(0, 2**32 - 1)
layouts = st.sampled_from(LAYOUTS)
value_kinds = st.sampled_from(VALUE_KINDS)
threads = st.integers(1, 3)


def int_or_pair(draw, lo, hi):
    """An int, an (h, w) tuple, a [h, w] list or a 1-tuple, all within [lo, hi]; return (arg, pair)."""
    form = draw(st.sampled_from(["int", "tuple", "list", "one"]))
    if form == "int":
        v = draw(st.integers(lo, hi))
        return v, (v, v)
    if form == "one":
        v = draw(st.integers(lo, hi))
        return (v,), (v, v)
    h, w = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return ((h, w) if form == "tuple" else [h, w]), (h, w)


def for_oracle(args):
    """The same arguments for the oracle, which takes ints and pairs only (not 1-tuples)."""
    return {k: (v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v) for k, v in args.items()}


class Settings:
    """Set threads / workspace / algorithm for one example and restore them afterwards."""

    def __init__(self, num_threads=None, workspace=None, algorithm="auto"):
        self.num_threads, self.workspace, self.algorithm = num_threads, workspace, algorithm

    def __enter__(self):
        self._old = cnnext.get_num_threads(), cnnext.get_workspace_limit()
        if self.num_threads is not None:
            cnnext.set_num_threads(self.num_threads)
        if self.workspace is not None:
            cnnext.set_workspace_limit(self.workspace)
        self._algo = force_conv_algorithm(self.algorithm)
        self._algo.__enter__()
        return self

    def __exit__(self, *exc):
        self._algo.__exit__(*exc)
        cnnext.set_num_threads(self._old[0])
        cnnext.set_workspace_limit(self._old[1])
        return False


# ------------------------------------------------------------------------------------ conv2d

@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    Cg, Kg = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    C, K = groups * Cg, groups * Kg
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil_arg, (dh, dw) = int_or_pair(draw, 1, 2)
    stride_arg, (sh, sw) = int_or_pair(draw, 1, 3)
    pad_kind = draw(st.sampled_from(["num", "valid", "same"] if (sh, sw) == (1, 1) else ["num", "valid"]))
    if pad_kind == "num":
        pad_arg, (ph, pw) = int_or_pair(draw, 0, 2)
        pads = (ph, ph, pw, pw)
    else:
        pad_arg = pad_kind
        pads = oracle.conv_padding(pad_kind, (kh, kw), (dh, dw))
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    H = draw(st.integers(max(1, ekh - pads[0] - pads[1]), max(1, ekh - pads[0] - pads[1]) + 4))
    W = draw(st.integers(max(1, ekw - pads[2] - pads[3]), max(1, ekw - pads[2] - pads[3]) + 4))
    N = draw(st.integers(0, 2))
    unbatched = N == 1 and draw(st.booleans())
    return dict(N=N, C=C, H=H, W=W, K=K, kh=kh, kw=kw, groups=groups, stride=stride_arg,
                padding=pad_arg, dilation=dil_arg, unbatched=unbatched)


@PROPERTY
@given(case=conv_cases(), seed=seeds, x_dtype=st.sampled_from(INPUT_DTYPES),
       w_dtype=st.sampled_from(("float32", "float64", "int64")), x_layout=layouts, w_layout=layouts,
       g_layout=layouts, bias=st.booleans(), kind=value_kinds, nt=threads,
       workspace=st.sampled_from([None, 1, 200]), algorithm=st.sampled_from(["auto", "gemm", "direct"]))
def test_conv2d_forward_backward_match_oracle(case, seed, x_dtype, w_dtype, x_layout, w_layout, g_layout,
                                              bias, kind, nt, workspace, algorithm):
    rng = np.random.default_rng(seed)
    c = case
    xshape = (c["C"], c["H"], c["W"]) if c["unbatched"] else (c["N"], c["C"], c["H"], c["W"])
    x = in_layout(make_values(rng, xshape, x_dtype, kind), x_layout)
    w = in_layout(make_values(rng, (c["K"], c["C"] // c["groups"], c["kh"], c["kw"]), w_dtype), w_layout)
    b = make_values(rng, (c["K"],), "float64") if bias else None
    args = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    dt = compute_dtype(x)
    xe, we = as_expected(x, dt), as_expected(w, dt)
    be = as_expected(b, dt) if bias else None
    before = snapshot(x, w)
    with Settings(nt, workspace, algorithm):
        y = F.conv2d(x, w, b, **args)
        expected = oracle.conv2d(xe, we, be, **for_oracle(args))
        assert y.dtype == dt
        oracle.assert_close(y, expected)
        assert_fresh(y, x, w)
        gy = in_layout(make_values(rng, expected.shape, "float64"), g_layout)
        gx, gw, gb = F.conv2d_backward(gy, x, w, **args)
    egx, egw, egb = oracle.conv2d_backward(as_expected(gy, dt), xe, we, **for_oracle(args))
    for got, want in ((gx, egx), (gw, egw), (gb, egb)):
        assert got.dtype == dt
        oracle.assert_close(got, want)
        assert_fresh(got, x, w, gy)
    assert_unchanged((x, w), before)


# Bad values for each conv2d argument; each keeps the other arguments valid.
BAD_SIZE = [0, -1, -3, 1.5, 2.0, True, False, "2", None, (1, 2, 3), (), [1, 0], (1, -1), (1.0, 1),
            np.float64(1.0), 1j, object(), (None, 1), 2**64, (1, 2**70), -(2**63)]
BAD_PADDING = [-1, (0, -1), 0.5, "full", "SAME", True, None, (1, 1, 1), 1j, [0, 1.5], 2**64, (0, 2**70)]
BAD_GROUPS = [0, -1, 1.0, True, "1", None, 3, 5, (1,), np.float32(1)]
BAD_ARRAYS = ["complex", "object", "float16", "string", "none", "ragged", "dict", "scalar", "1d", "5d",
              "empty_channels", "datetime"]


def bad_array(kind, shape):
    if kind == "complex":
        return np.zeros(shape, dtype=complex)
    if kind == "object":
        return np.zeros(shape, dtype=object)
    if kind == "float16":
        return np.zeros(shape, dtype=np.float16)
    if kind == "string":
        return np.full(shape, "a")
    if kind == "none":
        return None
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]]
    if kind == "dict":
        return {"a": 1}
    if kind == "scalar":
        return 3.0
    if kind == "1d":
        return np.zeros(4)
    if kind == "5d":
        return np.zeros((1,) + tuple(shape))
    if kind == "empty_channels":
        return np.zeros(tuple(shape[:-3]) + (0,) + tuple(shape[-2:]))
    if kind == "datetime":
        return np.zeros(shape, dtype="datetime64[s]")
    raise AssertionError(kind)


@PROPERTY
@given(case=conv_cases(), seed=seeds, data=st.data())
def test_conv2d_bad_arguments_raise_value_or_type_error(case, seed, data):
    rng = np.random.default_rng(seed)
    c = case
    x = make_values(rng, (c["N"], c["C"], c["H"], c["W"]), "float64")
    w = make_values(rng, (c["K"], c["C"] // c["groups"], c["kh"], c["kw"]), "float64")
    gy = F.conv2d(x, w, None, c["stride"], c["padding"], c["dilation"], c["groups"])
    args = dict(input=x, weight=w, bias=None, stride=c["stride"], padding=c["padding"],
                dilation=c["dilation"], groups=c["groups"])
    which = data.draw(st.sampled_from(["input", "weight", "bias", "stride", "padding", "dilation", "groups",
                                       "grad_output", "weight_shape", "bias_shape"]))
    if which in ("input", "weight", "grad_output"):
        shape = {"input": x.shape, "weight": w.shape, "grad_output": gy.shape}[which]
        bad = bad_array(data.draw(st.sampled_from(BAD_ARRAYS)), shape)
    elif which == "bias":
        bad = bad_array(data.draw(st.sampled_from(["complex", "object", "string", "ragged", "dict", "5d"])),
                        (c["K"],))
    elif which in ("stride", "dilation"):
        bad = data.draw(st.sampled_from(BAD_SIZE))
    elif which == "padding":
        bad = data.draw(st.sampled_from(BAD_PADDING))
    elif which == "groups":
        bad = data.draw(st.sampled_from(BAD_GROUPS))
        # an int that divides both channel counts is a valid groups value only if it also matches
        # the weight's channels: that only happens for the current value
        assume(bad != c["groups"] or isinstance(bad, (bool, float, np.floating)))
    elif which == "weight_shape":
        bad = np.zeros((c["K"], c["C"] // c["groups"] + 1, c["kh"], c["kw"]))
    else:
        bad = np.zeros(c["K"] + 1)
    note(f"{which} = {bad!r}")
    if which in ("weight_shape", "bias_shape"):
        which = which.split("_")[0]
    if which == "grad_output":
        exc = raises_cleanly(lambda: F.conv2d_backward(bad, x, w, c["stride"], c["padding"], c["dilation"],
                                                       c["groups"]))
        assert exc is not None
        assert "conv2d_backward" in str(exc) and "grad_output" in str(exc)
        return
    args[which] = bad
    # stride 2 with padding='same' is also a (documented) error; a bad *value* is what we test
    exc = raises_cleanly(lambda: F.conv2d(**args))
    assert exc is not None, f"conv2d accepted {which}={bad!r}"
    assert str(exc).startswith("conv2d:"), str(exc)
    if which != "groups" and which != "weight":
        assert which in str(exc), str(exc)
    bw = dict(args)
    bw.pop("bias")
    bw["grad_output"] = gy
    if which != "bias":
        assert raises_cleanly(lambda: F.conv2d_backward(**bw)) is not None


# ------------------------------------------------------------------------------------ pooling

def pool_axis_valid(size, k, s, p, d, ceil_mode):
    """PyTorch's rules plus cnnext's documented refusal of windows that cover only padding."""
    if p > k // 2:
        return False
    out = oracle.pool_output_size(size, k, s, p, d, ceil_mode)
    if out < 1:
        return False
    for o in range(out):
        taps = [o * s - p + i * d for i in range(k)]
        if not any(0 <= t < size for t in taps):
            return False
    return True


@st.composite
def pool_cases(draw, with_dilation=True, mostly_valid=False):
    """Pooling shapes and parameters, valid or not (``valid`` says which, by PyTorch's rules).

    ``mostly_valid`` keeps the padding within half the kernel and the input at least as large as
    the dilated kernel, so that few draws have to be thrown away.
    """
    k_arg, (kh, kw) = int_or_pair(draw, 1, 4)
    if draw(st.booleans()):
        s_arg, (sh, sw) = None, (kh, kw)
    else:
        s_arg, (sh, sw) = int_or_pair(draw, 1, 4)
    if mostly_valid:
        p_arg, (ph, pw) = int_or_pair(draw, 0, min(kh, kw) // 2)
    else:
        p_arg, (ph, pw) = int_or_pair(draw, 0, 2)
    if with_dilation:
        d_arg, (dh, dw) = int_or_pair(draw, 1, 2)
    else:
        d_arg, (dh, dw) = 1, (1, 1)
    ceil_mode = draw(st.booleans())
    if mostly_valid:
        H = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 8))
        W = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 8))
    else:
        H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    unbatched = N == 1 and draw(st.booleans())
    valid = (pool_axis_valid(H, kh, sh, ph, dh, ceil_mode) and pool_axis_valid(W, kw, sw, pw, dw, ceil_mode))
    return dict(N=N, C=C, H=H, W=W, kernel_size=k_arg, stride=s_arg, padding=p_arg, dilation=d_arg,
                ceil_mode=ceil_mode, unbatched=unbatched, valid=valid)


def _shape(c):
    return (c["C"], c["H"], c["W"]) if c["unbatched"] else (c["N"], c["C"], c["H"], c["W"])


def sprinkle_specials(rng, x, fraction):
    """Put NaN, +inf and -inf at random positions of a float array (copy)."""
    x = np.array(x, copy=True)
    if x.dtype.kind != "f" or x.size == 0 or fraction == 0:
        return x
    mask = rng.random(x.shape) < fraction
    x[mask] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=x.dtype), size=int(mask.sum()))
    return x


@PROPERTY
@given(case=pool_cases(), seed=seeds, dtype=st.sampled_from(INPUT_DTYPES), layout=layouts,
       g_layout=layouts, kind=value_kinds, specials=st.sampled_from([0.0, 0.0, 0.2, 1.0]), nt=threads)
def test_max_pool2d_matches_oracle_or_raises(case, seed, dtype, layout, g_layout, kind, specials, nt):
    rng = np.random.default_rng(seed)
    c = case
    x = in_layout(sprinkle_specials(rng, make_values(rng, _shape(c), dtype, kind), specials), layout)
    args = dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"],
                dilation=c["dilation"], ceil_mode=c["ceil_mode"])
    note(f"valid={c['valid']}")
    before = snapshot(x)
    with Settings(nt):
        if not c["valid"]:
            exc = raises_cleanly(lambda: F.max_pool2d(x, **args))
            assert exc is not None and str(exc).startswith("max_pool2d:")
            return
        y, idx = F.max_pool2d(x, return_indices=True, **args)
        y_only = F.max_pool2d(x, **args)
    dt = compute_dtype(x)
    ey, eidx = oracle.max_pool2d(as_expected(x, dt), **for_oracle(args))
    assert y.dtype == dt and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ey.astype(dt))  # a max is exact: no tolerance
    np.testing.assert_array_equal(idx, eidx)
    np.testing.assert_array_equal(y_only, y)
    assert_fresh(y, x)
    assert_unchanged((x,), before)
    gy = in_layout(make_values(rng, y.shape, "float64"), g_layout)
    with Settings(nt):
        gx = F.max_pool2d_backward(gy, idx, np.shape(x))
    oracle.assert_close(gx, oracle.max_pool2d_backward(as_expected(gy, np.float64), eidx, np.shape(x)))


@PROPERTY
@given(case=pool_cases(with_dilation=False), seed=seeds, dtype=st.sampled_from(INPUT_DTYPES),
       layout=layouts, g_layout=layouts, kind=value_kinds, count_include_pad=st.booleans(), nt=threads)
def test_avg_pool2d_matches_oracle_or_raises(case, seed, dtype, layout, g_layout, kind, count_include_pad, nt):
    rng = np.random.default_rng(seed)
    c = case
    x = in_layout(make_values(rng, _shape(c), dtype, kind), layout)
    args = dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"],
                ceil_mode=c["ceil_mode"], count_include_pad=count_include_pad)
    before = snapshot(x)
    with Settings(nt):
        if not c["valid"]:
            exc = raises_cleanly(lambda: F.avg_pool2d(x, **args))
            assert exc is not None and str(exc).startswith("avg_pool2d:")
            exc = raises_cleanly(lambda: F.avg_pool2d_backward(np.zeros((1, 1, 1, 1)), np.shape(x), **args))
            assert exc is not None and str(exc).startswith("avg_pool2d_backward:")
            return
        y = F.avg_pool2d(x, **args)
    dt = compute_dtype(x)
    ey = oracle.avg_pool2d(as_expected(x, dt), **for_oracle(args))
    assert y.dtype == dt
    oracle.assert_close(y, ey)
    assert_fresh(y, x)
    assert_unchanged((x,), before)
    gy = in_layout(make_values(rng, y.shape, "float64"), g_layout)
    with Settings(nt):
        gx = F.avg_pool2d_backward(gy, np.shape(x), **args)
    oracle.assert_close(gx, oracle.avg_pool2d_backward(as_expected(gy, np.float64), np.shape(x), **for_oracle(args)))


@PROPERTY
@given(seed=seeds, N=st.integers(0, 2), C=st.integers(1, 3), H=st.integers(1, 5), W=st.integers(1, 5),
       Ho=st.integers(1, 4), Wo=st.integers(1, 4),
       idx_dtype=st.sampled_from(["int64", "int32", "int16", "uint8", "uint64"]),
       bad_rate=st.sampled_from([0.0, 0.0, 0.1, 1.0]), layout=layouts, unbatched=st.booleans())
def test_max_pool2d_backward_any_indices(seed, N, C, H, W, Ho, Wo, idx_dtype, bad_rate, layout, unbatched):
    """Any integer indices: those in [0, H*W) scatter-add like the oracle, any other one is a ValueError."""
    rng = np.random.default_rng(seed)
    unbatched = unbatched and N == 1
    lead = (C,) if unbatched else (N, C)
    shape = lead + (H, W)
    idx = rng.integers(0, H * W, size=lead + (Ho, Wo))
    bad = rng.random(idx.shape) < bad_rate
    info = np.iinfo(np.dtype(idx_dtype))
    idx[bad] = rng.choice(np.array([-1, -(2**31), H * W, H * W + 7, 2**40], dtype=np.int64), size=int(bad.sum()))
    idx = np.clip(idx, max(info.min, -(2**62)), min(info.max, 2**62)).astype(idx_dtype)
    gy = make_values(rng, idx.shape, "float64")
    idx_in = in_layout(idx, layout)
    idx = np.array(idx_in)  # 'broadcast' changes the values
    any_bad = bool(((idx.astype(np.float64) < 0) | (idx.astype(np.float64) >= H * W)).any())
    if any_bad:
        exc = raises_cleanly(lambda: F.max_pool2d_backward(gy, idx_in, shape))
        assert exc is not None, "out-of-range indices were accepted"
        assert str(exc).startswith("max_pool2d_backward:") and "indices" in str(exc)
        return
    gx = F.max_pool2d_backward(gy, idx_in, shape)
    oracle.assert_close(gx, oracle.max_pool2d_backward(gy, idx.astype(np.int64), shape))


BAD_POOL_ARGS = {
    "kernel_size": [0, -1, 1.5, True, None, "2", (2, 2, 2), (0, 1), 1j, 2**64],
    "stride": [0, -2, 1.5, True, "1", (1, 0), (2, 2, 2), 2**64, (1, 2**70)],
    "padding": [-1, 0.5, True, None, (0, -1), "same", (9, 9), 2**64],
    "dilation": [0, -1, 1.5, False, None, (1, 0), 2**64],
    "ceil_mode": [None, 0, 1, "yes", 1.0],
}


@PROPERTY
@given(seed=seeds, data=st.data(), op=st.sampled_from(["max", "avg", "avg_backward"]),
       which=st.sampled_from(sorted(BAD_POOL_ARGS) + ["input", "input_shape", "grad_output"]))
def test_pool_bad_arguments_raise_value_or_type_error(seed, data, op, which):
    rng = np.random.default_rng(seed)
    x = make_values(rng, (2, 2, 6, 6), "float64")
    args = dict(kernel_size=2, stride=None, padding=0, ceil_mode=False)
    if op == "max":
        args["dilation"] = 1
        func, call = "max_pool2d", lambda a: F.max_pool2d(x, **a)
    elif op == "avg":
        func, call = "avg_pool2d", lambda a: F.avg_pool2d(x, **a)
    else:
        gy = np.zeros((2, 2, 3, 3))
        func, call = "avg_pool2d_backward", lambda a: F.avg_pool2d_backward(gy, x.shape, **a)
    assume(which in args or which in ("input", "input_shape", "grad_output"))
    if which == "input":
        bad = bad_array(data.draw(st.sampled_from(BAD_ARRAYS)), x.shape)
        if op == "avg_backward":
            return
        fn = {"max": F.max_pool2d, "avg": F.avg_pool2d}[op]
        exc = raises_cleanly(lambda: fn(bad, **args))
    elif which == "input_shape":
        bad = data.draw(st.sampled_from([(2, 2, 6), (2, 2, 6, 6, 1), (2, -2, 6, 6), (2, 2.0, 6, 6), None, 5,
                                         "2266", (2, 2, 0, 6), (2, 3, 6, 6)]))
        if op != "avg_backward":
            return
        exc = raises_cleanly(lambda: F.avg_pool2d_backward(gy, bad, **args))
    elif which == "grad_output":
        if op != "avg_backward":
            return
        bad = data.draw(st.sampled_from([np.zeros((2, 2, 3, 4)), np.zeros((2, 2, 3)), np.zeros((2, 2, 3, 3), complex),
                                         None, "x", np.zeros((2, 2, 3, 3), object)]))
        exc = raises_cleanly(lambda: F.avg_pool2d_backward(bad, x.shape, **args))
    else:
        bad = data.draw(st.sampled_from(BAD_POOL_ARGS[which]))
        a = dict(args)
        a[which] = bad
        exc = raises_cleanly(lambda: call(a))
    note(f"{which} = {bad!r}")
    assert exc is not None, f"{func} accepted {which}={bad!r}"
    assert str(exc).startswith(func + ":"), str(exc)


# ------------------------------------------------------------------------------------ activations

@PROPERTY
@given(seed=seeds, shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
       dtype=st.sampled_from(["float32", "float64"]), layout=layouts, scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_activations_match_closed_forms(seed, shape, dtype, layout, scale):
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(shape) * scale).astype(dtype)
    x = in_layout(v, layout) if v.ndim else v
    dtype = np.asarray(x).dtype  # a nested list is float64 to numpy
    xv = np.array(x, dtype=np.float64)
    flat = xv.ravel()
    sig = np.array([1 / (1 + math.exp(-t)) if t > -700 else 0.0 for t in flat]).reshape(xv.shape)
    tanh = np.array([math.tanh(t) for t in flat]).reshape(xv.shape)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(F.relu(x), np.maximum(xv, 0).astype(dtype))
    np.testing.assert_allclose(F.sigmoid(x), sig, **tol)
    np.testing.assert_allclose(F.tanh(x), tanh, **tol)
    for fn, deriv, want in ((F.relu, F.relu_derivative, lambda y: (y > 0) * 1.0),
                            (F.sigmoid, F.sigmoid_derivative, lambda y: y * (1 - y)),
                            (F.tanh, F.tanh_derivative, lambda y: 1 - y * y)):
        y = np.asarray(fn(x))
        assert y.dtype == np.dtype(dtype)
        np.testing.assert_allclose(deriv(y), want(y.astype(np.float64)), **tol)
        assert np.isfinite(y).all()


# ------------------------------------------------------------------------------------ learn_dl

ACTIVATORS = {
    "identity": (cnnext.IdentityActivator, lambda z: z, lambda y: np.ones_like(y)),
    "relu": (cnnext.ReluActivator, lambda z: np.maximum(z, 0), lambda y: (y > 0) * 1.0),
    "sigmoid": (cnnext.SigmoidActivator, lambda z: 1 / (1 + np.exp(-z)), lambda y: y * (1 - y)),
    "tanh": (cnnext.TanhActivator, np.tanh, lambda y: 1 - y * y),
}


@PROPERTY
@given(seed=seeds, C=st.integers(1, 3), K=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6),
       fh=st.integers(1, 4), fw=st.integers(1, 4), zp=st.integers(0, 3), stride=st.integers(1, 3),
       act=st.sampled_from(sorted(ACTIVATORS)), prev=st.sampled_from(sorted(ACTIVATORS)),
       batch=st.sampled_from([None, 1, 2]), dtype=st.sampled_from(["float64", "int64", "float32"]),
       layout=layouts, lr=st.floats(-1, 1, allow_nan=False))
def test_learn_dl_conv_layer_matches_oracle(seed, C, K, H, W, fh, fw, zp, stride, act, prev, batch, dtype,
                                            layout, lr):
    valid = fh <= H + 2 * zp and fw <= W + 2 * zp
    if not valid:
        exc = raises_cleanly(lambda: cnnext.ConvLayer(W, H, C, fw, fh, K, zp, stride,
                                                      ACTIVATORS[act][0](), lr))
        assert exc is not None and str(exc).startswith("ConvLayer:")
        return
    rng = np.random.default_rng(seed)
    layer = cnnext.ConvLayer(W, H, C, fw, fh, K, zp, stride, ACTIVATORS[act][0](), lr)
    w = rng.standard_normal((K, C, fh, fw))
    b = rng.standard_normal(K)
    for k in range(K):
        layer.filters[k].weights = w[k]
        layer.filters[k].bias = b[k]
    shape = (C, H, W) if batch is None else (batch, C, H, W)
    x = in_layout(make_values(rng, shape, dtype), layout)
    xe = np.array(x, dtype=np.float64)
    layer.forward(x)
    pre = oracle.conv2d(xe, w, b, stride, zp)
    oracle.assert_close(layer.output_array, ACTIVATORS[act][1](pre), dtype=np.float64)
    sens = rng.standard_normal(pre.shape)
    layer.backward(x, sens, ACTIVATORS[prev][0]())
    gx, gw, gb = oracle.conv2d_backward(sens, xe, w, stride, zp)
    oracle.assert_close(layer.delta_array, gx * ACTIVATORS[prev][2](xe), dtype=np.float64)
    for k in range(K):
        oracle.assert_close(layer.filters[k].weights_grad, gw[k], dtype=np.float64)
        assert layer.filters[k].bias_grad == pytest.approx(gb[k], rel=1e-10, abs=1e-10)
    layer.update()
    for k in range(K):
        oracle.assert_close(layer.filters[k].weights, w[k] - lr * gw[k], dtype=np.float64)
        assert layer.filters[k].bias == pytest.approx(b[k] - lr * gb[k], rel=1e-10, abs=1e-10)
    # a sensitivity map of the wrong shape is refused
    exc = raises_cleanly(lambda: layer.backward(x, sens[..., :-1] if sens.shape[-1] > 1 else sens[..., None],
                                                ACTIVATORS[prev][0]()))
    assert exc is not None and "sensitivity_array" in str(exc)


@PROPERTY
@given(seed=seeds, C=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(1, 6), fh=st.integers(1, 4),
       fw=st.integers(1, 4), stride=st.integers(1, 3), batch=st.sampled_from([None, 1, 2]),
       dtype=st.sampled_from(["float64", "int64", "uint8"]), layout=layouts, kind=value_kinds)
def test_learn_dl_max_pooling_layer_matches_oracle(seed, C, H, W, fh, fw, stride, batch, dtype, layout, kind):
    if fh > H or fw > W:
        exc = raises_cleanly(lambda: cnnext.MaxPoolingLayer(W, H, C, fw, fh, stride))
        assert exc is not None and str(exc).startswith("MaxPoolingLayer:")
        return
    rng = np.random.default_rng(seed)
    layer = cnnext.MaxPoolingLayer(W, H, C, fw, fh, stride)
    shape = (C, H, W) if batch is None else (batch, C, H, W)
    x = in_layout(make_values(rng, shape, dtype, kind), layout)
    xe = np.array(x, dtype=np.float64)
    layer.forward(x)
    ey, eidx = oracle.max_pool2d(xe, (fh, fw), stride)
    np.testing.assert_array_equal(layer.output_array, ey)
    sens = rng.standard_normal(ey.shape)
    layer.backward(x, sens)
    oracle.assert_close(layer.delta_array, oracle.max_pool2d_backward(sens, eidx, xe.shape), dtype=np.float64)


LEARN_DL_BAD = [
    ("ConvLayer", dict(input_width=0)), ("ConvLayer", dict(channel_number=-1)),
    ("ConvLayer", dict(filter_width=1.5)), ("ConvLayer", dict(zero_padding=-1)),
    ("ConvLayer", dict(stride=0)), ("ConvLayer", dict(stride=True)),
    ("ConvLayer", dict(activator=cnnext.ReluActivator)), ("ConvLayer", dict(activator=None)),
    ("ConvLayer", dict(learning_rate="0.1")), ("ConvLayer", dict(learning_rate=float("nan"))),
    ("ConvLayer", dict(filter_width=9)), ("ConvLayer", dict(filter_number=None)),
    ("MaxPoolingLayer", dict(input_width=0)), ("MaxPoolingLayer", dict(filter_height=7)),
    ("MaxPoolingLayer", dict(stride=-1)), ("MaxPoolingLayer", dict(channel_number=2.0)),
]


@PROPERTY
@given(case=st.sampled_from(LEARN_DL_BAD))
def test_learn_dl_constructors_refuse_bad_arguments(case):
    cls, bad = case
    base = {"ConvLayer": dict(input_width=5, input_height=5, channel_number=2, filter_width=3, filter_height=3,
                              filter_number=2, zero_padding=1, stride=1, activator=cnnext.ReluActivator(),
                              learning_rate=0.1),
            "MaxPoolingLayer": dict(input_width=4, input_height=4, channel_number=2, filter_width=2,
                                    filter_height=2, stride=2)}[cls]
    kw = dict(base, **bad)
    exc = raises_cleanly(lambda: getattr(cnnext, cls)(**kw))
    assert exc is not None
    (name,) = bad
    assert str(exc).startswith(cls + ":") and name in str(exc), str(exc)


# ------------------------------------------------------------------------------------ nn

@PROPERTY
@given(case=conv_cases(), seed=seeds, dtype=st.sampled_from(["float32", "float64"]), bias=st.booleans(),
       x_dtype=st.sampled_from(INPUT_DTYPES), layout=layouts, nt=threads)
def test_nn_conv2d_module_matches_oracle(case, seed, dtype, bias, x_dtype, layout, nt):
    c = case
    rng = np.random.default_rng(seed)
    kernel = (c["kh"], c["kw"])
    m = nn.Conv2d(c["C"], c["K"], kernel, c["stride"], c["padding"], c["dilation"], c["groups"], bias=bias,
                  dtype=dtype, rng=int(seed))
    w = rng.standard_normal(m.weight.shape)
    state = {"weight": w}
    if bias:
        state["bias"] = rng.standard_normal(c["K"])
    m.load_state_dict(state)
    xshape = (c["C"], c["H"], c["W"]) if c["unbatched"] else (c["N"], c["C"], c["H"], c["W"])
    x = in_layout(make_values(rng, xshape, x_dtype), layout)
    dt = np.dtype(dtype)
    xe, we = as_expected(x, dt), as_expected(w, dt)
    be = as_expected(state["bias"], dt) if bias else None
    args = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    with Settings(nt):
        y = m(x)
        assert y.dtype == dt
        oracle.assert_close(y, oracle.conv2d(xe, we, be, **for_oracle(args)))
        gy = make_values(rng, y.shape, "float64")
        gx = m.backward(gy)
        gx2 = m.backward(gy)  # gradients accumulate
    egx, egw, egb = oracle.conv2d_backward(as_expected(gy, dt), xe, we, **for_oracle(args))
    oracle.assert_close(gx, egx)
    np.testing.assert_array_equal(gx, gx2)
    oracle.assert_close(m.weight.grad, 2 * egw, dtype=dt)
    if bias:
        oracle.assert_close(m.bias.grad, 2 * egb, dtype=dt)
    m.zero_grad()
    assert not m.weight.grad.any()


@PROPERTY
@given(case=pool_cases(mostly_valid=True), seed=seeds, layout=layouts, count_include_pad=st.booleans(),
       kind=value_kinds)
def test_nn_pool_modules_match_oracle(case, seed, layout, count_include_pad, kind):
    c = case
    assume(c["valid"])
    rng = np.random.default_rng(seed)
    x = in_layout(make_values(rng, _shape(c), "float64", kind), layout)
    xe = np.array(x, dtype=np.float64)
    mp = nn.MaxPool2d(c["kernel_size"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])
    y = mp(x)
    o = for_oracle(c)
    ey, eidx = oracle.max_pool2d(xe, o["kernel_size"], o["stride"], o["padding"], o["dilation"], o["ceil_mode"])
    np.testing.assert_array_equal(y, ey)
    gy = rng.standard_normal(y.shape)
    oracle.assert_close(mp.backward(gy), oracle.max_pool2d_backward(gy, eidx, xe.shape))
    if oracle.pair(o["dilation"]) == (1, 1):
        ap = nn.AvgPool2d(c["kernel_size"], c["stride"], c["padding"], c["ceil_mode"], count_include_pad)
        args = (o["kernel_size"], o["stride"], o["padding"], o["ceil_mode"], count_include_pad)
        y = ap(x)
        oracle.assert_close(y, oracle.avg_pool2d(xe, *args))
        gy = rng.standard_normal(y.shape)
        oracle.assert_close(ap.backward(gy), oracle.avg_pool2d_backward(gy, xe.shape, *args))


def _logsumexp(row):
    m = max(row)
    return m + math.log(math.fsum(math.exp(v - m) for v in row))


@PROPERTY
@given(seed=seeds, N=st.integers(1, 3), C=st.integers(1, 2), H=st.integers(2, 6), W=st.integers(2, 6),
       K=st.integers(1, 3), classes=st.integers(2, 4), scale=st.sampled_from([1.0, 50.0]),
       reduction=st.sampled_from(["mean", "sum"]))
def test_nn_sequential_loss_and_input_gradient_match_composed_oracle(seed, N, C, H, W, K, classes, scale,
                                                                     reduction):
    """conv -> relu -> maxpool -> flatten -> linear -> cross-entropy, against the oracle pieces composed."""
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(C, K, 2, padding=1, dtype=np.float64, rng=1)
    pool = nn.MaxPool2d(2, ceil_mode=True)
    Ho, Wo = H + 1, W + 1
    Hp, Wp = -(-Ho // 2), -(-Wo // 2)
    fc = nn.Linear(K * Hp * Wp, classes, dtype=np.float64, rng=2)
    model = nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), fc)
    crit = nn.CrossEntropyLoss(reduction=reduction)
    x = rng.standard_normal((N, C, H, W)) * scale
    t = rng.integers(0, classes, N)
    loss = crit(model(x), t)
    # oracle forward
    wc, bc = conv.weight.data, conv.bias.data
    z1 = oracle.conv2d(x, wc, bc, 1, 1)
    a1 = np.maximum(z1, 0)
    p, pidx = oracle.max_pool2d(a1, 2, None, 0, 1, True)
    f = p.reshape(N, -1)
    logits = f @ fc.weight.data.T + fc.bias.data
    losses = [_logsumexp(list(logits[i])) - logits[i, t[i]] for i in range(N)]
    want = math.fsum(losses) / (N if reduction == "mean" else 1)
    assert loss == pytest.approx(want, rel=1e-9, abs=1e-9)
    # oracle backward
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    g = soft.copy()
    g[np.arange(N), t] -= 1
    if reduction == "mean":
        g /= N
    gf = g @ fc.weight.data
    ga1 = oracle.max_pool2d_backward(gf.reshape(p.shape), pidx, a1.shape)
    gz1 = ga1 * (z1 > 0)
    gx, gw, gb = oracle.conv2d_backward(gz1, x, wc, 1, 1)
    got = model.backward(crit.backward())
    oracle.assert_close(got, gx)
    oracle.assert_close(conv.weight.grad, gw)
    oracle.assert_close(conv.bias.grad, gb)
    oracle.assert_close(fc.weight.grad, g.T @ f)


NN_BAD = [
    (nn.Conv2d, dict(in_channels=0)), (nn.Conv2d, dict(out_channels=2.0)), (nn.Conv2d, dict(kernel_size=0)),
    (nn.Conv2d, dict(stride=(1, 0))), (nn.Conv2d, dict(padding=-1)), (nn.Conv2d, dict(padding="full")),
    (nn.Conv2d, dict(dilation=True)), (nn.Conv2d, dict(groups=3)), (nn.Conv2d, dict(bias="yes")),
    (nn.Conv2d, dict(dtype=np.int32)), (nn.Conv2d, dict(dtype="float16")), (nn.Conv2d, dict(rng="seed")),
    (nn.Linear, dict(in_features=-1)), (nn.Linear, dict(out_features=None)), (nn.Linear, dict(bias=1)),
    (nn.Linear, dict(dtype=complex)),
    (nn.MaxPool2d, dict(kernel_size=0)), (nn.MaxPool2d, dict(stride=-1)), (nn.MaxPool2d, dict(ceil_mode=1)),
    (nn.MaxPool2d, dict(padding=1.5)), (nn.AvgPool2d, dict(kernel_size=(1, 2, 3))),
    (nn.AvgPool2d, dict(count_include_pad=None)), (nn.Dropout, dict(p=1.5)), (nn.Dropout, dict(p="x")),
    (nn.Dropout, dict(rng=1.5)), (nn.Flatten, dict(start_dim=1.0)),
    (nn.CrossEntropyLoss, dict(reduction="avg")), (nn.MSELoss, dict(reduction=None)),
]
NN_BASE = {
    nn.Conv2d: dict(in_channels=4, out_channels=2, kernel_size=3), nn.Linear: dict(in_features=3, out_features=2),
    nn.MaxPool2d: dict(kernel_size=2), nn.AvgPool2d: dict(kernel_size=2), nn.Dropout: {}, nn.Flatten: {},
    nn.CrossEntropyLoss: {}, nn.MSELoss: {},
}


@PROPERTY
@given(case=st.sampled_from(NN_BAD))
def test_nn_constructors_refuse_bad_arguments(case):
    cls, bad = case
    exc = raises_cleanly(lambda: cls(**dict(NN_BASE[cls], **bad)))
    assert exc is not None, f"{cls.__name__} accepted {bad}"
    (name,) = bad
    assert str(exc).startswith(cls.__name__ + ":"), str(exc)
    if name not in ("groups",):
        assert name in str(exc), str(exc)


@PROPERTY
@given(seed=seeds, which=st.sampled_from(["conv", "maxpool", "avgpool", "linear", "relu", "flatten"]),
       bad=st.sampled_from(["complex", "object", "string", "none", "ragged", "wrong_shape", "wrong_ndim"]))
def test_nn_modules_refuse_bad_inputs(seed, which, bad):
    rng = np.random.default_rng(seed)
    mods = {"conv": (nn.Conv2d(2, 3, 2, rng=0), (1, 2, 4, 4)), "maxpool": (nn.MaxPool2d(2), (1, 2, 4, 4)),
            "avgpool": (nn.AvgPool2d(2), (1, 2, 4, 4)), "linear": (nn.Linear(3, 2, rng=0), (4, 3)),
            "relu": (nn.ReLU(), (2, 3)), "flatten": (nn.Flatten(), (2, 3, 4))}
    m, shape = mods[which]
    y = m(rng.standard_normal(shape))
    if bad == "wrong_shape":
        if which in ("relu",):
            exc = raises_cleanly(lambda: m.backward(np.zeros(y.shape + (1,))))
        else:
            exc = raises_cleanly(lambda: m.backward(np.zeros(tuple(s + 1 for s in y.shape))))
        assert exc is not None, f"{which}.backward accepted a grad_output of the wrong shape"
        return
    if bad == "wrong_ndim":
        if which in ("relu", "flatten", "linear"):
            return  # any rank is valid for these
        arg = np.zeros((4, 4))
    else:
        arg = bad_array(bad, shape)
    exc = raises_cleanly(lambda: m(arg))
    assert exc is not None, f"{which} accepted {bad}"
