"""cnnext's learn_dl layers beyond the tutorial's numbers: the fixed learn_dl bugs, batches, Filter views,
the helpers and argument validation.

Expected values come from the naive float64 oracle (tests/naive_oracle.py, no code shared with
cnnext), from hand computations written as literals, or from PyTorch.
"""
import numpy as np
import pytest

import cnnext
import naive_oracle as oracle
from cnnext import (
    ConvLayer,
    Filter,
    IdentityActivator,
    MaxPoolingLayer,
    ReluActivator,
    SigmoidActivator,
    TanhActivator,
    conv,
    element_wise_op,
    get_max_index,
    get_patch,
    padding,
)
from helpers import layer_grads, layer_params, random_conv_layer


def assert_forward_backward_match_oracle(layer, x, s):
    """forward(x), then backward(x, s) with an identity activator before the layer, against the oracle."""
    w, b = layer_params(layer)
    stride, zp = layer.stride, layer.zero_padding
    layer.forward(x)
    np.testing.assert_allclose(layer.output_array, oracle.conv2d(x, w, b, stride, zp), rtol=1e-12, atol=1e-12)
    layer.backward(x, s, IdentityActivator())
    gx, gw, gb = oracle.conv2d_backward(s, x, w, stride, zp)
    got_gw, got_gb = layer_grads(layer)
    np.testing.assert_allclose(layer.delta_array, gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_gw, gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_gb, gb, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- fixed learn_dl bugs

@pytest.mark.parametrize("iw, ih, c, fw, fh, k, zp, stride", [
    (7, 6, 2, 3, 2, 3, 1, 2),   # non-square filter, width > height
    (6, 7, 2, 2, 3, 2, 0, 1),   # non-square filter, height > width
    (8, 5, 3, 1, 4, 2, 2, 3),   # very non-square, stride not dividing
])
def test_non_square_filters_backward(iw, ih, c, fw, fh, k, zp, stride):
    """learn_dl's bp_sensitivity_map used the filter width for both axes (wrong for fw != fh)."""
    layer = random_conv_layer(iw, ih, c, fw, fh, k, zp, stride)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((c, ih, iw))
    s = rng.standard_normal((k, layer.output_height, layer.output_width))
    assert_forward_backward_match_oracle(layer, x, s)


@pytest.mark.parametrize("zp, fw, fh, stride", [(2, 2, 2, 1), (3, 2, 2, 1), (4, 3, 2, 2), (5, 1, 1, 2)])
def test_zero_padding_larger_than_filter_minus_one(zp, fw, fh, stride):
    """learn_dl padded the sensitivity map by filter - 1 - zero_padding (< 0 crashed)."""
    layer = random_conv_layer(4, 3, 2, fw, fh, 2, zp, stride)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4))
    s = rng.standard_normal((2, layer.output_height, layer.output_width))
    assert_forward_backward_match_oracle(layer, x, s)


def test_max_pool_overlapping_windows_accumulate_hand_computed():
    """learn_dl assigned (last window won); a maximum shared by two windows gets both gradients."""
    pool = MaxPoolingLayer(3, 1, 1, 2, 1, 1)        # width 3, height 1, windows [0:2] and [1:3]
    x = np.array([[[1.0, 5.0, 2.0]]])
    pool.forward(x)
    np.testing.assert_array_equal(pool.output_array, [[[5.0, 5.0]]])
    pool.backward(x, np.array([[[3.0, 4.0]]]))
    np.testing.assert_array_equal(pool.delta_array, [[[0.0, 7.0, 0.0]]])   # learn_dl gave 4


@pytest.mark.parametrize("iw, ih, fw, fh, stride", [(5, 5, 3, 3, 1), (6, 5, 3, 2, 1), (7, 7, 3, 3, 2)])
def test_max_pool_overlapping_windows_vs_oracle(iw, ih, fw, fh, stride):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, (2, ih, iw)).astype(float)  # many ties: first maximum must win
    pool = MaxPoolingLayer(iw, ih, 2, fw, fh, stride)
    pool.forward(x)
    y, idx = oracle.max_pool2d(x, (fh, fw), stride)
    np.testing.assert_array_equal(pool.output_array, y)
    s = rng.standard_normal(y.shape)
    pool.backward(x, s)
    np.testing.assert_allclose(pool.delta_array, oracle.max_pool2d_backward(s, idx, x.shape), rtol=1e-14)


def test_against_torch():
    torch = pytest.importorskip("torch")
    layer = random_conv_layer(9, 7, 3, 4, 2, 5, 3, 2)
    pool = MaxPoolingLayer(9, 7, 3, 3, 2, 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 9))
    s = rng.standard_normal((5, layer.output_height, layer.output_width))
    w, b = layer_params(layer)
    layer.forward(x)
    layer.backward(x, s, IdentityActivator())
    xt = torch.tensor(x[None], requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=2, padding=3)
    (yt * torch.tensor(s[None])).sum().backward()
    np.testing.assert_allclose(layer.output_array, yt.detach().numpy()[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.delta_array, xt.grad.numpy()[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.stack([f.weights_grad for f in layer.filters]), wt.grad.numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([f.bias_grad for f in layer.filters], bt.grad.numpy(), rtol=1e-12)

    xt = torch.tensor(x[None], requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, (2, 3), 1)
    sp = rng.standard_normal(yt.shape[1:])
    (yt * torch.tensor(sp[None])).sum().backward()
    pool.forward(x)
    pool.backward(x, sp)
    np.testing.assert_array_equal(pool.output_array, yt.detach().numpy()[0])
    np.testing.assert_allclose(pool.delta_array, xt.grad.numpy()[0], rtol=1e-14)


# --------------------------------------------------------------------------- activators in layers

def test_forward_applies_own_activator_backward_applies_previous_one():
    layer = random_conv_layer(5, 4, 2, 3, 3, 2, 1, 1, act=ReluActivator())
    rng = np.random.default_rng(5)
    x = SigmoidActivator().forward(rng.standard_normal((2, 4, 5)))   # previous layer: sigmoid
    s = rng.standard_normal((2, layer.output_height, layer.output_width))
    w, b = layer_params(layer)
    layer.forward(x)
    np.testing.assert_allclose(layer.output_array, np.maximum(oracle.conv2d(x, w, b, 1, 1), 0), rtol=1e-12)
    layer.backward(x, s, SigmoidActivator())
    gx, _, _ = oracle.conv2d_backward(s, x, w, 1, 1)
    np.testing.assert_allclose(layer.delta_array, gx * x * (1 - x), rtol=1e-12, atol=1e-14)


class ScalarOnlyRelu:
    """A learn_dl-style activator that only works on scalars (Python's max and a conditional)."""

    def forward(self, weighted_input):
        return max(0, weighted_input)

    def backward(self, output):
        return 1 if output > 0 else 0


def test_scalar_only_activator_falls_back_to_per_element():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 5))
    s = rng.standard_normal((3, 5, 5))
    ours = random_conv_layer(5, 5, 2, 3, 3, 3, 1, 1, act=ReluActivator())
    theirs = random_conv_layer(5, 5, 2, 3, 3, 3, 1, 1, act=ScalarOnlyRelu())
    ours.forward(x)
    theirs.forward(x)
    np.testing.assert_array_equal(theirs.output_array, ours.output_array)
    assert (theirs.output_array == 0).any() and (theirs.output_array > 0).any()
    ours.backward(x, s, ReluActivator())
    theirs.backward(x, s, ScalarOnlyRelu())
    np.testing.assert_array_equal(theirs.delta_array, ours.delta_array)
    np.testing.assert_array_equal(theirs.delta_array[x <= 0], 0)


# --------------------------------------------------------------------------- batches

@pytest.mark.parametrize("act", [IdentityActivator(), ReluActivator(), TanhActivator()], ids=repr)
def test_conv_batch_equals_per_sample(act):
    n = 4
    layer = random_conv_layer(6, 5, 2, 3, 2, 3, 1, 2, act=act)
    rng = np.random.default_rng(7)
    xb = TanhActivator().forward(rng.standard_normal((n, 2, 5, 6)))
    sb = rng.standard_normal((n, 3, layer.output_height, layer.output_width))
    layer.forward(xb)
    yb = layer.output_array.copy()
    layer.backward(xb, sb, TanhActivator())
    db = layer.delta_array.copy()
    gwb = np.stack([f.weights_grad for f in layer.filters])
    gbb = np.array([f.bias_grad for f in layer.filters])
    assert yb.shape == (n, 3, 3, 3) and db.shape == xb.shape
    gw_sum, gb_sum = 0, 0
    for i in range(n):
        layer.forward(xb[i])
        np.testing.assert_allclose(layer.output_array, yb[i], rtol=1e-13, atol=1e-13)
        layer.backward(xb[i], sb[i], TanhActivator())
        np.testing.assert_allclose(layer.delta_array, db[i], rtol=1e-13, atol=1e-13)
        gw_sum = gw_sum + np.stack([f.weights_grad for f in layer.filters])
        gb_sum = gb_sum + np.array([f.bias_grad for f in layer.filters])
    np.testing.assert_allclose(gwb, gw_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gbb, gb_sum, rtol=1e-12, atol=1e-12)


def test_pool_batch_equals_per_sample():
    rng = np.random.default_rng(8)
    xb = rng.integers(0, 5, (3, 2, 6, 6)).astype(float)
    pool = MaxPoolingLayer(6, 6, 2, 3, 3, 1)
    pool.forward(xb)
    yb = pool.output_array.copy()
    sb = rng.standard_normal(yb.shape)
    pool.backward(xb, sb)
    db = pool.delta_array.copy()
    for i in range(3):
        y, idx = oracle.max_pool2d(xb[i], 3, 1)
        np.testing.assert_array_equal(yb[i], y)
        np.testing.assert_allclose(db[i], oracle.max_pool2d_backward(sb[i], idx, xb[i].shape), rtol=1e-14)


def test_empty_batch():
    layer = random_conv_layer(5, 5, 2, 3, 3, 2, 1, 1)
    layer.forward(np.zeros((0, 2, 5, 5)))
    assert layer.output_array.shape == (0, 2, 5, 5)
    layer.backward(np.zeros((0, 2, 5, 5)), np.zeros((0, 2, 5, 5)), IdentityActivator())
    assert layer.delta_array.shape == (0, 2, 5, 5)
    assert not np.stack([f.weights_grad for f in layer.filters]).any()


# --------------------------------------------------------------------------- bp_* and update

def test_bp_sensitivity_map_and_bp_gradient_split_backward():
    layer = random_conv_layer(6, 6, 2, 3, 3, 2, 1, 2)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 6))
    s = rng.standard_normal((2, 3, 3))
    w, b = layer_params(layer)
    gx, gw, gb = oracle.conv2d_backward(s, x, w, 2, 1)
    layer.forward(x)
    layer.bp_sensitivity_map(s, IdentityActivator())
    np.testing.assert_allclose(layer.delta_array, gx, rtol=1e-12, atol=1e-12)
    assert not np.stack([f.weights_grad for f in layer.filters]).any()  # not computed yet
    layer.bp_gradient(s)
    np.testing.assert_allclose(np.stack([f.weights_grad for f in layer.filters]), gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose([f.bias_grad for f in layer.filters], gb, rtol=1e-12)


def test_bp_before_forward_raises():
    layer = random_conv_layer(4, 4, 1, 2, 2, 1, 0, 1)
    with pytest.raises(RuntimeError, match="forward"):
        layer.bp_gradient(np.zeros((1, 3, 3)))
    with pytest.raises(RuntimeError, match="forward"):
        layer.bp_sensitivity_map(np.zeros((1, 3, 3)), IdentityActivator())


def test_update_is_sgd_on_every_filter():
    layer = random_conv_layer(5, 5, 2, 3, 3, 3, 0, 1, lr=0.05)
    rng = np.random.default_rng(10)
    x, s = rng.standard_normal((2, 5, 5)), rng.standard_normal((3, 3, 3))
    w0, b0 = layer_params(layer)
    layer.backward(x, s, IdentityActivator())
    _, gw, gb = oracle.conv2d_backward(s, x, w0, 1, 0)
    layer.update()
    w1, b1 = layer_params(layer)
    np.testing.assert_allclose(w1, w0 - 0.05 * gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b1, b0 - 0.05 * gb, rtol=1e-12, atol=1e-12)


def test_expand_sensitivity_map_and_create_delta_array():
    layer = ConvLayer(5, 5, 1, 3, 3, 1, 0, 2, IdentityActivator(), 0.1)
    e = layer.expand_sensitivity_map(np.array([[[1, 2], [3, 4]]]))
    np.testing.assert_array_equal(e, [[[1, 0, 2], [0, 0, 0], [3, 0, 4]]])
    assert layer.create_delta_array().shape == (1, 5, 5)


def test_padded_input_array():
    layer = ConvLayer(2, 2, 1, 2, 2, 1, 1, 1, IdentityActivator(), 0.1)
    assert layer.padded_input_array is None
    layer.forward(np.array([[[1, 2], [3, 4]]]))
    np.testing.assert_array_equal(layer.padded_input_array,
                                  [[[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0], [0, 0, 0, 0]]])


def test_non_contiguous_and_readonly_inputs():
    layer = random_conv_layer(5, 4, 2, 3, 3, 2, 1, 1)
    rng = np.random.default_rng(11)
    x = np.asfortranarray(rng.standard_normal((2, 4, 5)))
    x.flags.writeable = False
    w, b = layer_params(layer)
    layer.forward(x)
    np.testing.assert_allclose(layer.output_array, oracle.conv2d(np.array(x), w, b, 1, 1), rtol=1e-12)
    big = rng.standard_normal((2, 8, 10))[:, ::-2, ::2]
    layer.forward(big)
    np.testing.assert_allclose(layer.output_array, oracle.conv2d(np.array(big), w, b, 1, 1), rtol=1e-12)


# --------------------------------------------------------------------------- Filter

def test_filter_views_reach_the_layer():
    layer = ConvLayer(4, 4, 2, 2, 2, 2, 0, 1, IdentityActivator(), 0.1)
    x = np.ones((2, 4, 4))
    f = layer.filters[1]
    f.weights = np.zeros((2, 2, 2))
    f.bias = 0
    f.weights[1, 0, 1] = 3.0          # in-place edit
    layer.forward(x)
    np.testing.assert_array_equal(layer.output_array[1], np.full((3, 3), 3.0))
    f.bias = 1.5                       # assignment
    f.weights = np.ones((2, 2, 2))
    layer.forward(x)
    np.testing.assert_array_equal(layer.output_array[1], np.full((3, 3), 9.5))
    f.weights -= 1                     # augmented assignment
    layer.forward(x)
    np.testing.assert_array_equal(layer.output_array[1], np.full((3, 3), 1.5))
    assert layer.filters[1].get_weights() is f.weights


def test_filter_update_and_grads():
    f = Filter(2, 3, 1)
    f.weights = np.arange(6.0).reshape(1, 3, 2)
    f.bias = 1
    f.weights_grad = np.ones((1, 3, 2))
    f.bias_grad = 2
    f.update(0.5)
    np.testing.assert_array_equal(f.weights, np.arange(6.0).reshape(1, 3, 2) - 0.5)
    assert f.bias == 0.0
    assert (f.width, f.height, f.depth) == (2, 3, 1)


def test_filter_assignment_into_layer_list():
    layer = ConvLayer(3, 3, 1, 2, 2, 2, 0, 1, IdentityActivator(), 0.1)
    g = Filter(2, 2, 1)
    g.weights = np.full((1, 2, 2), 2.0)
    g.bias = 4
    layer.filters[0] = g
    layer.forward(np.ones((1, 3, 3)))
    np.testing.assert_array_equal(layer.output_array[0], np.full((2, 2), 12.0))
    assert len(layer.filters) == 2 and len(list(layer.filters)) == 2
    with pytest.raises(ValueError, match=r"\(1, 2, 2\)"):
        layer.filters[1] = Filter(3, 3, 1)
    with pytest.raises(TypeError, match="Filter"):
        layer.filters[1] = np.zeros((1, 2, 2))


def test_random_init_follows_learn_dl_stream():
    # learn_dl: np.random.seed(0); ConvLayer(5,5,3,3,3,2,1,2,...) -> filters[1].weights[0, 0]
    np.random.seed(0)
    layer = ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, IdentityActivator(), 0.001)
    np.testing.assert_allclose(layer.filters[1].weights[0, 0],
                               [8.893378340991678e-05, 4.3696643500143304e-06, -1.706761200189528e-05],
                               rtol=1e-15)
    np.random.seed(3)
    expected = [np.random.uniform(-1e-4, 1e-4, (2, 3, 4)) for _ in range(3)]
    np.random.seed(3)
    layer = ConvLayer(6, 6, 2, 4, 3, 3, 0, 1, IdentityActivator(), 0.1)
    for f, e in zip(layer.filters, expected):
        np.testing.assert_array_equal(f.weights, e)
        assert f.bias == 0 and f.bias_grad == 0 and not f.weights_grad.any()
    np.random.seed(3)
    np.testing.assert_array_equal(Filter(4, 3, 2).weights, expected[0])


def test_reprs():
    layer = ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, ReluActivator(), 0.001)
    assert repr(layer) == ("ConvLayer(input_width=5, input_height=5, channel_number=3, filter_width=3, "
                           "filter_height=3, filter_number=2, zero_padding=1, stride=2, "
                           "activator=ReluActivator(), learning_rate=0.001)")
    layer.filters[0].bias = 2
    r = repr(layer.filters[0])
    assert r.startswith("Filter(width=3, height=3, depth=3)\nweights:\narray(")
    assert r.endswith("bias: 2.0")
    assert repr(MaxPoolingLayer(4, 4, 2, 2, 2, 2)) == (
        "MaxPoolingLayer(input_width=4, input_height=4, channel_number=2, filter_width=2, "
        "filter_height=2, stride=2)")


# --------------------------------------------------------------------------- validation

GOOD = dict(input_width=5, input_height=5, channel_number=3, filter_width=3, filter_height=3,
            filter_number=2, zero_padding=1, stride=2, activator=IdentityActivator(), learning_rate=0.001)


def conv_layer(**changes):
    args = dict(GOOD, **changes)
    return ConvLayer(*args.values())


@pytest.mark.parametrize("name, value, exc", [
    ("input_width", 0, ValueError), ("input_height", -1, ValueError), ("channel_number", 0, ValueError),
    ("filter_width", 0, ValueError), ("filter_height", 0, ValueError), ("filter_number", 0, ValueError),
    ("zero_padding", -1, ValueError), ("stride", 0, ValueError),
    ("input_width", 5.0, TypeError), ("stride", "2", TypeError), ("filter_number", True, TypeError),
    ("learning_rate", "fast", TypeError), ("learning_rate", float("nan"), ValueError),
    ("activator", None, TypeError), ("activator", ReluActivator, TypeError),
])
def test_conv_layer_constructor_validation(name, value, exc):
    with pytest.raises(exc, match=name):
        conv_layer(**{name: value})


def test_conv_layer_empty_output_raises_at_construction():
    with pytest.raises(ValueError, match="filter_width=8.*empty"):
        conv_layer(filter_width=8)
    with pytest.raises(ValueError, match="filter_height=4.*empty"):
        ConvLayer(4, 2, 1, 1, 4, 1, 0, 1, IdentityActivator(), 0.1)
    conv_layer(filter_width=7)  # 5 + 2 * 1 = 7 still fits


@pytest.mark.parametrize("args, name", [
    ((0, 4, 2, 2, 2, 2), "input_width"), ((4, 4, 0, 2, 2, 2), "channel_number"),
    ((4, 4, 2, 5, 2, 2), "filter_width"), ((4, 4, 2, 2, 5, 2), "filter_height"),
    ((4, 4, 2, 2, 2, 0), "stride"), ((4, 4, 2, 2, 2, 1.5), "stride"),
])
def test_max_pooling_constructor_validation(args, name):
    with pytest.raises((ValueError, TypeError), match=name):
        MaxPoolingLayer(*args)


CONV_GEOMETRY = ["input_width", "input_height", "channel_number", "filter_width", "filter_height",
                 "filter_number", "zero_padding", "stride", "output_width", "output_height"]
POOL_GEOMETRY = ["input_width", "input_height", "channel_number", "filter_width", "filter_height",
                 "stride", "output_width", "output_height"]


@pytest.mark.parametrize("name", CONV_GEOMETRY)
def test_conv_layer_geometry_is_read_only(name):
    """Issue 13 item 10: changing stride/zero_padding/input_width... after construction gave silently
    wrong gradients (the cached geometry and the arrays kept the old sizes); it is now refused."""
    layer = random_conv_layer(7, 6, 2, 3, 2, 3, 1, 2)
    before = getattr(layer, name)
    with pytest.raises(AttributeError, match=rf"^ConvLayer.{name} is read-only: .* sized for "
                                             rf"{name}={before} at construction; build a new ConvLayer"):
        setattr(layer, name, before + 1)
    with pytest.raises(AttributeError, match=rf"ConvLayer.{name} is read-only"):
        delattr(layer, name)
    assert getattr(layer, name) == before
    # the layer still computes what its construction arguments say (against the naive oracle)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7))
    s = rng.standard_normal((3, layer.output_height, layer.output_width))
    assert_forward_backward_match_oracle(layer, x, s)


@pytest.mark.parametrize("name", POOL_GEOMETRY)
def test_max_pooling_layer_geometry_is_read_only(name):
    layer = MaxPoolingLayer(6, 5, 2, 3, 2, 1)
    before = getattr(layer, name)
    with pytest.raises(AttributeError, match=rf"^MaxPoolingLayer.{name} is read-only"):
        setattr(layer, name, 2)
    assert getattr(layer, name) == before
    x = np.random.default_rng(4).standard_normal((2, 5, 6))
    layer.forward(x)
    np.testing.assert_array_equal(layer.output_array, oracle.max_pool2d(x, (2, 3), 1)[0])


def test_layers_with_read_only_geometry_copy_and_pickle():
    import copy
    import pickle
    conv_l = random_conv_layer(5, 5, 2, 3, 3, 2, 1, 1, act=ReluActivator())
    pool_l = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    for layer in (conv_l, pool_l):
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert repr(clone) == repr(layer)
            with pytest.raises(AttributeError):
                clone.stride = 3
    x = np.random.default_rng(5).standard_normal((2, 5, 5))
    clone = pickle.loads(pickle.dumps(conv_l))
    conv_l.forward(x)
    clone.forward(x)
    np.testing.assert_array_equal(clone.output_array, conv_l.output_array)
    conv_l.learning_rate = 0.5  # not geometry: still writable, as in learn_dl
    conv_l.activator = IdentityActivator()
    assert conv_l.learning_rate == 0.5


def test_wrong_sample_shapes():
    layer = conv_layer()
    with pytest.raises(ValueError, match=r"input_array must have shape \(3, 5, 5\)"):
        layer.forward(np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match="input_array"):
        layer.forward(np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(2, 3, 3\)"):
        layer.backward(np.zeros((3, 5, 5)), np.zeros((3, 3, 3)), IdentityActivator())
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(4, 2, 3, 3\)"):
        layer.backward(np.zeros((4, 3, 5, 5)), np.zeros((2, 3, 3)), IdentityActivator())
    with pytest.raises(TypeError, match="input_array"):
        layer.forward(np.zeros((3, 5, 5), dtype=complex))
    with pytest.raises(TypeError, match="activator"):
        layer.backward(np.zeros((3, 5, 5)), np.zeros((2, 3, 3)), "identity")
    layer.forward(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="sensitivity_array"):
        layer.bp_gradient(np.zeros((2, 2, 3)))
    pool = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"input_array must have shape \(2, 4, 4\)"):
        pool.forward(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"sensitivity_array must have shape \(2, 2, 2\)"):
        pool.backward(np.zeros((2, 4, 4)), np.zeros((2, 2, 3)))


def test_wrong_filter_assignments():
    layer = conv_layer()
    with pytest.raises(ValueError, match=r"weights must have shape \(3, 3, 3\).*\(3, 3\)"):
        layer.filters[0].weights = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"weights_grad must have shape \(3, 3, 3\)"):
        layer.filters[0].weights_grad = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="bias must be a scalar"):
        layer.filters[0].bias = [1, 2]
    with pytest.raises(TypeError, match="weights"):
        layer.filters[0].weights = np.zeros((3, 3, 3), dtype=complex)
    with pytest.raises((ValueError, TypeError), match="width"):
        Filter(0, 3, 3)


# --------------------------------------------------------------------------- helpers

def test_padding():
    a = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(padding(a, 1), [[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0], [0, 0, 0, 0]])
    b = np.arange(8).reshape(2, 2, 2)
    p = padding(b, 2)
    assert p.shape == (2, 6, 6) and p.dtype == np.float64
    np.testing.assert_array_equal(p[:, 2:4, 2:4], b)
    assert p.sum() == b.sum()
    assert padding(a, 0) is a          # learn_dl returns the input itself
    with pytest.raises(ValueError, match="zp"):
        padding(a, -1)


def test_get_patch():
    a = np.arange(25).reshape(5, 5)
    np.testing.assert_array_equal(get_patch(a, 1, 0, 3, 2, 2), [[10, 11, 12], [15, 16, 17]])
    b = np.stack([a, -a])
    p = get_patch(b, 0, 1, 2, 2, 1)
    np.testing.assert_array_equal(p, [[[1, 2], [6, 7]], [[-1, -2], [-6, -7]]])
    p[0, 0, 0] = 100                   # a view, as in learn_dl
    assert b[0, 0, 1] == 100


def test_conv_helper():
    x = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    k = np.array([[1, -1], [0, 2]])
    out = np.zeros((3, 3))
    assert conv(x, k, out, 1, 0.5) is None
    expected = [[1 - 0 + 0 + 2 + .5, 0 - 1 + 0 + 0 + .5, 1 - 0 + 0 + 2 + .5],
                [0 - 1 + 0 + 2 + .5, 1 - 0 + 0 + 2 + .5, 0 - 1 + 0 + 2 + .5],
                [1 - 1 + 0 + 0 + .5, 1 - 1 + 0 + 0 + .5, 1 - 1 + 0 + 0 + .5]]
    np.testing.assert_array_equal(out, expected)
    out2 = np.zeros((2, 2))
    conv(x, k, out2, 2, 0)
    np.testing.assert_array_equal(out2, [[3, 3], [0, 0]])
    # 3-D input and kernel: summed over channels
    x3 = np.stack([x, 2 * x])
    k3 = np.stack([k, np.ones((2, 2))])
    out3 = np.zeros((3, 3))
    conv(x3, k3, out3, 1, 0)
    window_sums = np.array([[x[i:i + 2, j:j + 2].sum() for j in range(3)] for i in range(3)])
    np.testing.assert_array_equal(out3, np.array(expected) - .5 + 2 * window_sums)
    with pytest.raises(ValueError, match=r"output_array must have shape \(3, 3\)"):
        conv(x, k, np.zeros((2, 2)), 1, 0)
    with pytest.raises(ValueError, match="kernel_array"):
        conv(x3, np.ones((3, 2, 2)), out3, 1, 0)


def test_element_wise_op():
    a = np.array([[-1.0, 2.0], [3.0, -4.0]])
    element_wise_op(a, lambda v: max(0, v))            # scalar-only callable
    np.testing.assert_array_equal(a, [[0, 2], [3, 0]])
    element_wise_op(a, np.square)                      # array callable
    np.testing.assert_array_equal(a, [[0, 4], [9, 0]])
    element_wise_op(a, lambda v: 1)                    # constant (IdentityActivator.backward style)
    np.testing.assert_array_equal(a, np.ones((2, 2)))
    b = np.array([0.0, 1.0])
    element_wise_op(b, SigmoidActivator().forward)
    np.testing.assert_allclose(b, [0.5, 0.7310585786300049], rtol=1e-15)
    calls = []
    element_wise_op(np.zeros(1000), lambda v: calls.append(1) or v)
    assert len(calls) == 1                             # one call for an array-capable op
    with pytest.raises(TypeError, match="array"):
        element_wise_op([1.0, 2.0], np.square)


def test_get_max_index():
    assert get_max_index(np.array([[1, 7, 3], [7, 0, 2]])) == (0, 1)   # first maximum
    i, j = get_max_index(np.array([[0.0, 1.0], [5.0, -2.0]]))
    assert (i, j) == (1, 0) and isinstance(i, int)


def test_learn_dl_names_are_exported():
    for name in ["ConvLayer", "MaxPoolingLayer", "Filter", "IdentityActivator", "ReluActivator",
                 "SigmoidActivator", "TanhActivator", "padding", "conv", "get_patch",
                 "element_wise_op", "get_max_index"]:
        assert name in cnnext.__all__
        assert getattr(cnnext, name) is not None
