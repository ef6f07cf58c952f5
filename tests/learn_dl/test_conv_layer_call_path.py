"""ConvLayer's per-call path, and the small-work rule of cnnext._config.threads_for.

ConvLayer validates its convolution geometry with check_conv2d once per input shape and caches it;
each call then only checks the sample (a few attribute reads when it already is a C-contiguous
float64 array of the right shape) and calls the functional entry points that take the checked
geometry. These tests hold that path to:

- the public functional API (conv2d / conv2d_backward, the same kernels: results bitwise equal) and
  the naive oracle (tests/naive_oracle.py), on single samples and batches, stride, padding,
  non-square and 1x1 filters, with every conv algorithm;
- every way the filters change between calls (in-place edits, assignments, update, a Filter
  assigned into the layer, gradient-check style nudges), after the geometry has been cached;
- input shapes that change between calls (sample, batches of several sizes, an empty batch), and
  inputs that need converting; bad samples still raise the errors they raised before;
- check_conv2d running once per input shape, not once per call.

threads_for runs small kernel calls on one thread; results must not depend on the thread count,
with the rule (default threshold) or without it (threshold 0: the kernels really run in parallel on
small inputs).
"""
import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext import Filter, IdentityActivator, ReluActivator, TanhActivator
from cnnext import _config
from cnnext.learn_dl import layers
from cnnext._config import force_conv_algorithm
from helpers import layer_grads, layer_params, random_conv_layer, same_at_thread_counts

# (input_width, input_height, channel_number, filter_width, filter_height, filter_number,
#  zero_padding, stride)
SHAPES = [
    (28, 28, 1, 5, 5, 6, 0, 1),   # LeNet conv1, the benchmarked layer
    (12, 12, 6, 5, 5, 16, 0, 1),  # LeNet conv2
    (7, 6, 2, 3, 2, 3, 1, 2),     # non-square filter, stride 2
    (8, 5, 3, 1, 4, 2, 2, 3),     # very non-square, stride not dividing
    (5, 5, 2, 2, 2, 3, 3, 1),     # zero_padding > filter size - 1
    (6, 6, 4, 1, 1, 3, 0, 1),     # 1x1: the pointwise GEMM path
    (9, 9, 3, 3, 3, 4, 1, 1),     # 3x3 stride 1 (Winograd-eligible)
]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def sample(layer, n=None, seed=1):
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    x = rng.standard_normal(lead + (layer.channel_number, layer.input_height, layer.input_width))
    s = rng.standard_normal(lead + (layer.filter_number, layer.output_height, layer.output_width))
    return x, s


def assert_matches_functional(layer, x, s):
    """forward + backward(Identity) of ``layer`` equal the functional API's results bitwise."""
    w, b = layer_params(layer)
    layer.forward(x)
    y = F.conv2d(x, w, b, layer.stride, layer.zero_padding)
    want = layer.activator.forward(y)
    assert layer.output_array.dtype == np.float64
    np.testing.assert_array_equal(layer.output_array, want)
    layer.backward(x, s, IdentityActivator())
    gx, gw, gb = F.conv2d_backward(s, x, w, layer.stride, layer.zero_padding)
    got_gw, got_gb = layer_grads(layer)
    np.testing.assert_array_equal(layer.delta_array, gx)
    np.testing.assert_array_equal(got_gw, gw)
    np.testing.assert_array_equal(got_gb, gb)


# --------------------------------------------------------------------------- vs functional, oracle

@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("n", [None, 3], ids=["sample", "batch3"])
def test_layer_equals_functional_bitwise(shape, n):
    layer = random_conv_layer(*shape, act=ReluActivator())
    x, s = sample(layer, n)
    for _ in range(2):  # the second round runs on the cached geometry
        assert_matches_functional(layer, x, s)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_layer_equals_naive_oracle(shape):
    layer = random_conv_layer(*shape)
    x, s = sample(layer, 2)
    w, b = layer_params(layer)
    pad = layer.zero_padding
    for _ in range(2):
        layer.forward(x)
        oracle.assert_close(layer.output_array, oracle.conv2d(x, w, b, layer.stride, pad))
        layer.backward(x, s, IdentityActivator())
        gx, gw, gb = oracle.conv2d_backward(s, x, w, layer.stride, pad)
        got_gw, got_gb = layer_grads(layer)
        oracle.assert_close(layer.delta_array, gx)
        oracle.assert_close(got_gw, gw)
        oracle.assert_close(got_gb, gb)
        # a single sample of the batch, on the same layer
        layer.forward(x[1])
        oracle.assert_close(layer.output_array, oracle.conv2d(x[1], w, b, layer.stride, pad))


@pytest.mark.parametrize("algorithm", ["gemm", "direct", "winograd"])
def test_every_algorithm_on_the_cached_geometry(algorithm):
    # The algorithm is chosen per call (it may be forced at any time), not cached with the geometry.
    layer = random_conv_layer(9, 9, 3, 3, 3, 4, 1, 1, act=TanhActivator())
    x, s = sample(layer)
    assert_matches_functional(layer, x, s)  # geometry cached under 'auto'
    with force_conv_algorithm(algorithm):
        assert_matches_functional(layer, x, s)
        w, _ = layer_params(layer)
        layer.backward(x, s, IdentityActivator())
        oracle.assert_close(layer.delta_array, oracle.conv2d_backward(s, x, w, 1, 1)[0])


def test_bp_methods_on_the_cached_geometry():
    layer = random_conv_layer(7, 6, 2, 3, 2, 3, 1, 2)
    xb, sb = sample(layer, 4)
    w, _ = layer_params(layer)
    for x, s in ((xb, sb), (xb[2], sb[2]), (xb, sb)):
        layer.forward(x)
        layer.bp_sensitivity_map(s, IdentityActivator())
        gx, gw, gb = F.conv2d_backward(s, x, w, 2, 1)
        np.testing.assert_array_equal(layer.delta_array, gx)
        layer.bp_gradient(s)
        got_gw, got_gb = layer_grads(layer)
        np.testing.assert_array_equal(got_gw, gw)
        np.testing.assert_array_equal(got_gb, gb)


# --------------------------------------------------------------------------- filters change

def test_filter_changes_after_the_geometry_is_cached():
    layer = random_conv_layer(6, 5, 2, 3, 3, 3, 1, 1)
    x, s = sample(layer)
    assert_matches_functional(layer, x, s)
    f = layer.filters[1]
    f.weights[0, 1, 2] += 0.5                     # in-place element edit
    assert_matches_functional(layer, x, s)
    f.weights[...] = -f.weights                   # in-place whole-array edit
    assert_matches_functional(layer, x, s)
    f.weights = np.full((2, 3, 3), 0.25)          # assignment (copied into the layer)
    f.bias = -3
    assert_matches_functional(layer, x, s)
    f.weights -= 0.125                            # augmented assignment
    assert_matches_functional(layer, x, s)
    g = Filter(3, 3, 2)
    g.weights = np.arange(18.0).reshape(2, 3, 3)
    g.bias = 7
    layer.filters[0] = g                          # a Filter assigned into the layer
    assert_matches_functional(layer, x, s)
    # (a one-filter GEMM may round differently from the layer's three-filter one)
    oracle.assert_close(layer.output_array[0], oracle.conv2d(x, g.weights[None], [7.0], 1, 1)[0])
    layer.update()                                # SGD step on the layer's arrays
    assert_matches_functional(layer, x, s)


def test_gradient_check_nudges_reach_the_cached_layer():
    # learn_dl's gradient_check: nudge one weight in place, forward, read the output, undo.
    layer = random_conv_layer(6, 6, 2, 3, 3, 2, 1, 2)
    x, s = sample(layer, seed=3)
    layer.forward(x)
    layer.backward(x, s, IdentityActivator())
    want, _ = layer_grads(layer)
    eps = 1e-6
    for k, f in enumerate(layer.filters):
        for idx in np.ndindex(f.weights.shape):
            f.weights[idx] += eps
            layer.forward(x)
            up = np.sum(layer.output_array * s)
            f.weights[idx] -= 2 * eps
            layer.forward(x)
            down = np.sum(layer.output_array * s)
            f.weights[idx] += eps
            assert (up - down) / (2 * eps) == pytest.approx(want[k][idx], rel=1e-6, abs=1e-6)


# --------------------------------------------------------------------------- inputs change

def test_input_shape_changes_between_calls():
    layer = random_conv_layer(7, 6, 2, 3, 2, 3, 1, 2, act=ReluActivator())
    rng = np.random.default_rng(4)
    for n in (None, 2, 5, None, 1, 5):
        x, s = sample(layer, n, seed=int(rng.integers(100)))
        assert_matches_functional(layer, x, s)
        assert layer._geometry_cache.N == (1 if n is None else n)
        assert layer.output_array.shape == x.shape[:-3] + (3, 4, 4)
        assert layer.delta_array.shape == x.shape
    layer.forward(np.zeros((0, 2, 6, 7)))
    assert layer.output_array.shape == (0, 3, 4, 4)
    layer.backward(np.zeros((0, 2, 6, 7)), np.zeros((0, 3, 4, 4)), IdentityActivator())
    assert layer.delta_array.shape == (0, 2, 6, 7)
    x, s = sample(layer)
    assert_matches_functional(layer, x, s)


def test_bad_samples_raise_as_before_once_cached():
    layer = random_conv_layer(5, 5, 3, 3, 3, 2, 1, 2)
    x, s = sample(layer)
    layer.forward(x)
    layer.backward(x, s, IdentityActivator())  # geometry cached for (1, 3, 5, 5)
    with pytest.raises(ValueError, match=r"input_array must have shape \(3, 5, 5\) or \(N,\) \+ "
                                         r"\(3, 5, 5\), got \(3, 5, 4\)"):
        layer.forward(np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"input_array must have shape.*got \(1, 3, 5, 5, 1\)"):
        layer.forward(np.zeros((1, 3, 5, 5, 1)))
    with pytest.raises(ValueError, match=r"input_array must have shape.*got \(5, 5\)"):
        layer.backward(np.zeros((5, 5)), s, IdentityActivator())
    with pytest.raises(ValueError, match=r"input_array must have shape.*got \(2, 2, 5, 5\)"):
        layer.forward(np.zeros((2, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(2, 3, 3\), got \(1, 2, 3, 3\)"):
        layer.backward(x, s[None], IdentityActivator())
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(4, 2, 3, 3\), got \(2, 3, 3\)"):
        layer.backward(np.zeros((4, 3, 5, 5)), s, IdentityActivator())
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(2, 3, 3\)"):
        layer.bp_gradient(np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="input_array"):
        layer.forward(np.zeros((3, 5, 5), dtype=complex))
    with pytest.raises(TypeError, match="input_array"):
        layer.forward(x.astype(np.float16))
    with pytest.raises(TypeError, match="input_array has dtype >f8"):
        layer.forward(x.astype(">f8"))
    with pytest.raises(TypeError, match="sensitivity_array"):
        layer.backward(x, s.astype(object), IdentityActivator())
    with pytest.raises(TypeError, match="activator"):
        layer.backward(x, s, ReluActivator)
    # and the layer still works, on the cached geometry
    assert_matches_functional(layer, x, s)


def test_inputs_that_need_converting():
    layer = random_conv_layer(6, 5, 2, 3, 3, 3, 1, 1, act=ReluActivator())
    x, s = sample(layer)
    layer.forward(x)
    want_y = layer.output_array.copy()
    layer.backward(x, s, IdentityActivator())
    want_d = layer.delta_array.copy()
    big = np.zeros((2, 10, 12))
    big[:, ::2, ::2] = x
    readonly = x.copy()
    readonly.flags.writeable = False
    for other in (x.tolist(), np.asfortranarray(x), big[:, ::2, ::2], readonly):
        layer.forward(other)
        layer.backward(other, s.tolist(), IdentityActivator())
        assert layer.input_array.dtype == np.float64 and layer.input_array.flags.c_contiguous
        np.testing.assert_array_equal(layer.input_array, x)
        np.testing.assert_array_equal(layer.output_array, want_y)
        np.testing.assert_array_equal(layer.delta_array, want_d)
    xi = np.arange(2 * 5 * 6).reshape(2, 5, 6) % 5    # integers: computed in float64
    layer.forward(xi)
    w, b = layer_params(layer)
    np.testing.assert_array_equal(layer.output_array, np.maximum(F.conv2d(xi.astype(float), w, b, 1, 1), 0))
    x32 = x.astype(np.float32)                          # float32: computed in float64, as learn_dl
    layer.forward(x32)
    assert layer.output_array.dtype == np.float64
    np.testing.assert_array_equal(layer.output_array,
                                  np.maximum(F.conv2d(x32.astype(np.float64), w, b, 1, 1), 0))


def test_geometry_validated_once_per_input_shape(monkeypatch):
    calls = []
    real = layers.check_conv2d

    def counting(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(layers, "check_conv2d", counting)
    layer = random_conv_layer(28, 28, 1, 5, 5, 6, 0, 1, act=ReluActivator())
    x, s = sample(layer)
    for _ in range(3):
        layer.forward(x)
        layer.backward(x, s, IdentityActivator())
        layer.bp_sensitivity_map(s, IdentityActivator())
        layer.bp_gradient(s)
    assert calls == [(1, 1, 28, 28)]
    xb, sb = sample(layer, 4)
    layer.forward(xb)
    layer.backward(xb, sb, IdentityActivator())
    layer.forward(x)
    assert calls == [(1, 1, 28, 28), (4, 1, 28, 28), (1, 1, 28, 28)]


# --------------------------------------------------------------------------- threads

@pytest.mark.usefixtures("restore_config")
def test_threads_for(monkeypatch):
    limit = _config._MIN_PARALLEL_WORK
    monkeypatch.setitem(_config._state, "min_parallel_work", limit)
    cnnext.set_num_threads(3)
    assert _config.threads_for(0) == 1
    assert _config.threads_for(limit - 1) == 1
    assert _config.threads_for(limit) == 3
    cnnext.set_num_threads(1)
    assert _config.threads_for(10 * limit) == 1


def _conv_results(shapes):
    rng = np.random.default_rng(12)
    out = []
    for n, c, h, k, kern, stride, pad in shapes:
        x = rng.standard_normal((n, c, h, h))
        w = rng.standard_normal((k, c, kern, kern))
        b = rng.standard_normal(k)
        y = F.conv2d(x, w, b, stride, pad)
        out.append(y)
        out.extend(F.conv2d_backward(y, x, w, stride, pad))
    layer = random_conv_layer(28, 28, 1, 5, 5, 6, 0, 1, act=ReluActivator())
    xs, ss = sample(layer)
    layer.forward(xs)
    layer.backward(xs, ss, IdentityActivator())
    out += [layer.output_array, layer.delta_array, *layer_grads(layer)]
    return out


# work = N * C * kh * kw * Ho * Wo: the first two are below the default threshold (2**17), the
# last two above it
THREAD_SHAPES = [(1, 1, 28, 6, 5, 1, 0), (2, 3, 11, 4, 3, 2, 1), (4, 8, 24, 8, 3, 1, 1),
                 (64, 1, 28, 6, 5, 1, 0)]


@pytest.mark.usefixtures("restore_config")
@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("min_work", [_config._MIN_PARALLEL_WORK, 0], ids=["default", "always-parallel"])
def test_results_do_not_depend_on_threads(monkeypatch, algorithm, min_work):
    monkeypatch.setitem(_config._state, "min_parallel_work", min_work)
    with force_conv_algorithm(algorithm):
        same_at_thread_counts(lambda: _conv_results(THREAD_SHAPES), (1, 2, 3))


@pytest.mark.usefixtures("restore_config")
def test_pooling_follows_the_small_work_rule(monkeypatch):
    """max/avg pooling pick their thread count with threads_for too: one thread for a LeNet-sized
    single sample, get_num_threads() for a batch."""
    from cnnext._kernels import _pool
    from cnnext.functional import pooling
    monkeypatch.setitem(_config._state, "min_parallel_work", _config._MIN_PARALLEL_WORK)
    cnnext.set_num_threads(2)
    seen = []
    # position of num_threads in each kernel's arguments (cnnext/_kernels/_pool.pyi)
    for name, pos in (("max_pool2d_forward", 11), ("max_pool2d_backward", 3),
                      ("avg_pool2d_forward", 9), ("avg_pool2d_backward", 9)):
        def spy(*args, _real=getattr(_pool, name), _pos=pos, **kwargs):
            seen.append(args[_pos])
            return _real(*args, **kwargs)
        monkeypatch.setattr(pooling._pool, name, spy)
    small = np.ones((6, 24, 24))
    big = np.ones((8, 16, 32, 32))
    for x in (small, big):
        seen.clear()
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
        a = F.avg_pool2d(x, 2)
        F.avg_pool2d_backward(np.ones_like(a), x.shape, 2)
        assert seen == ([1] * 4 if x is small else [2] * 4), seen
