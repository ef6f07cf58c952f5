"""cnnext.nn modules: gradients by central differences, initialisation, state, repr and errors.

No torch here: expected values come from finite differences and closed forms.
"""
import copy
import math

import numpy as np
import pytest

from cnnext import functional as F
from cnnext import nn
from cnnext.gradcheck import GradcheckError, gradcheck
from helpers import numerical_gradient


def rng(seed=0):
    return np.random.default_rng(seed)


# -- gradcheck of every module in float64 ---------------------------------------------------------
MODULE_CASES = [
    ("conv_basic", lambda: nn.Conv2d(2, 3, 3, rng=1), (2, 2, 5, 5)),
    ("conv_stride_pad", lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), rng=2), (2, 2, 5, 4)),
    ("conv_dilation_groups", lambda: nn.Conv2d(4, 6, 2, dilation=2, groups=2, rng=3), (1, 4, 5, 5)),
    ("conv_depthwise_nobias", lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False, rng=4), (2, 3, 4, 4)),
    ("conv_same", lambda: nn.Conv2d(1, 2, (3, 4), padding="same", rng=5), (1, 1, 5, 6)),
    ("linear", lambda: nn.Linear(5, 3, rng=6), (4, 5)),
    ("linear_3d_nobias", lambda: nn.Linear(4, 2, bias=False, rng=7), (2, 3, 4)),
    ("maxpool", lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    ("maxpool_overlap_pad_ceil", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 5)),
    ("maxpool_dilation", lambda: nn.MaxPool2d(2, stride=1, dilation=2), (1, 1, 5, 5)),
    ("avgpool", lambda: nn.AvgPool2d(2), (2, 2, 4, 4)),
    ("avgpool_pad_excl", lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 5)),
    ("avgpool_ceil", lambda: nn.AvgPool2d((2, 3), stride=2, ceil_mode=True), (1, 1, 5, 6)),
    ("relu", lambda: nn.ReLU(), (3, 4)),
    ("sigmoid", lambda: nn.Sigmoid(), (2, 3, 2, 2)),
    ("tanh", lambda: nn.Tanh(), (2, 5)),
    ("flatten", lambda: nn.Flatten(), (2, 3, 2, 2)),
    ("flatten_middle", lambda: nn.Flatten(1, 2), (2, 3, 2, 2)),
    ("dropout", lambda: nn.Dropout(0.4, rng=8), (3, 6)),
    ("sequential", lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, rng=9), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 2, 3, padding=1, rng=10), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.25, rng=11), nn.Linear(8, 4, rng=12), nn.Sigmoid()), (2, 1, 8, 8)),
]


@pytest.mark.parametrize("name,make,shape", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_gradcheck_every_module_float64(name, make, shape):
    module = make().double()
    x = rng(1).standard_normal(shape)
    if name == "relu":  # keep central differences away from the kink at 0
        x = np.where(np.abs(x) < 0.05, 0.5, x)
    assert gradcheck(module, x, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_loss_gradient_matches_finite_differences(reduction):
    r = rng(2)
    logits = r.standard_normal((5, 4)) * 3
    target = r.integers(0, 4, 5)
    crit = nn.CrossEntropyLoss(reduction=reduction)
    loss = crit(logits, target)
    g = crit.backward()
    z = logits.copy()
    fd = numerical_gradient(lambda: nn.CrossEntropyLoss(reduction=reduction)(z, target), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # closed form of the loss: -log softmax at the target
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per = -np.log(p[np.arange(5), target])
    assert loss == pytest.approx(per.mean() if reduction == "mean" else per.sum(), rel=1e-12)
    assert isinstance(loss, float)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_value_and_gradient(reduction):
    r = rng(3)
    out, tgt = r.standard_normal((3, 4)), r.standard_normal((3, 4))
    crit = nn.MSELoss(reduction=reduction)
    loss = crit(out, tgt)
    sq = (out - tgt) ** 2
    assert loss == pytest.approx(sq.mean() if reduction == "mean" else sq.sum(), rel=1e-12)
    z = out.copy()
    fd = numerical_gradient(lambda: nn.MSELoss(reduction=reduction)(z, tgt), z)
    np.testing.assert_allclose(crit.backward(), fd, rtol=1e-6, atol=1e-8)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]], dtype=np.float32)
    crit = nn.CrossEntropyLoss()
    assert crit(logits, np.array([0, 1])) == pytest.approx(0.0, abs=1e-6)
    loss = crit(logits, np.array([2, 0]))
    assert np.isfinite(loss) and loss == pytest.approx((2000.0 + 10000.0) / 2, rel=1e-6)
    g = crit.backward()
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[0.5, 0, -0.5], [-0.5, 0.5, 0]], atol=1e-6)


def test_gradcheck_detects_a_wrong_backward():
    class BadLinear(nn.Linear):
        def backward(self, grad_output, input_grad=True):
            gx = super().backward(grad_output, input_grad)
            self.weight.grad *= 1.01  # 1% off
            return gx

    m = BadLinear(3, 2, rng=0)
    with pytest.raises(GradcheckError, match=r"weight: .* differ"):
        gradcheck(m, rng(0).standard_normal((2, 3)))
    assert gradcheck(m, rng(0).standard_normal((2, 3)), raise_exception=False) is False

    class BadInput(nn.Tanh):
        def backward(self, grad_output, input_grad=True):
            return super().backward(grad_output) * 0.5

    with pytest.raises(GradcheckError, match="input"):
        gradcheck(BadInput(), rng(0).standard_normal((2, 3)))


def test_gradcheck_does_not_modify_the_module():
    m = nn.Linear(3, 2, rng=0)
    before = m.weight.data.copy()
    gradcheck(m, rng(0).standard_normal((2, 3)))
    assert m.weight.data.dtype == np.float32
    np.testing.assert_array_equal(m.weight.data, before)
    assert not m.weight.grad.any()


# -- initialisation -----------------------------------------------------------------------------
def test_conv_and_linear_init_follow_pytorch_bounds():
    conv = nn.Conv2d(6, 12, (3, 5), groups=2, rng=0)
    fan_in = 3 * 3 * 5
    bound = 1 / math.sqrt(fan_in)
    assert conv.weight.shape == (12, 3, 3, 5) and conv.bias.shape == (12,)
    for p in (conv.weight.data, conv.bias.data):
        assert p.dtype == np.float32
        assert np.abs(p).max() <= bound
    # uniform on [-b, b]: the largest of 540 draws is close to the bound, the variance b^2/3
    assert np.abs(conv.weight.data).max() > 0.95 * bound
    assert conv.weight.data.var() == pytest.approx(bound ** 2 / 3, rel=0.15)
    lin = nn.Linear(400, 50, rng=1)
    b = 1 / 20
    assert np.abs(lin.weight.data).max() <= b and np.abs(lin.weight.data).max() > 0.99 * b
    assert lin.weight.data.var() == pytest.approx(b ** 2 / 3, rel=0.05)


def test_init_is_seeded_and_float64_on_request():
    a = nn.Conv2d(1, 4, 3, rng=np.random.default_rng(5))
    b = nn.Conv2d(1, 4, 3, rng=np.random.default_rng(5))
    c = nn.Conv2d(1, 4, 3, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    d = nn.Linear(3, 2, dtype=np.float64, rng=0)
    assert d.weight.data.dtype == np.float64 and d.bias.grad.dtype == np.float64
    y = d(np.ones((1, 3), dtype=np.float32))
    assert y.dtype == np.float64


# -- behaviour ----------------------------------------------------------------------------------
def test_backward_accumulates_parameter_gradients_and_zero_grad_clears():
    m = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    x = rng(0).standard_normal((5, 3)).astype(np.float32)
    g = np.ones((5, 2), dtype=np.float32)
    m(x)
    m.backward(g)
    first = [p.grad.copy() for p in m.parameters()]
    m(x)
    m.backward(g)
    for p, f in zip(m.parameters(), first):
        np.testing.assert_allclose(p.grad, 2 * f, rtol=1e-6)
    m.zero_grad()
    assert all(not p.grad.any() for p in m.parameters())


def test_layers_compute_through_functional():
    r = rng(4)
    x = r.standard_normal((2, 3, 6, 6)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0)
    np.testing.assert_array_equal(conv(x), F.conv2d(x, conv.weight.data, conv.bias.data, stride=2, padding=1))
    pool = nn.MaxPool2d(2)
    np.testing.assert_array_equal(pool(x), F.max_pool2d(x, 2))
    lin = nn.Linear(6, 2, rng=0)
    expected = x @ lin.weight.data.T + lin.bias.data
    np.testing.assert_allclose(lin(x), expected, rtol=1e-5, atol=1e-6)


def test_relu_backward_is_zero_for_negative_inputs():
    relu = nn.ReLU()
    x = np.array([[-2.0, -0.5, 0.5, 3.0]])
    relu(x)
    np.testing.assert_array_equal(relu.backward(np.full((1, 4), 7.0)), [[0, 0, 7, 7]])


def test_dropout_train_and_eval():
    d = nn.Dropout(0.3, rng=0)
    x = np.ones((200, 100), dtype=np.float32)
    y = d(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    g = d.backward(np.full_like(x, 2.0))
    np.testing.assert_allclose(g, 2.0 * y, rtol=1e-6)
    d.eval()
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(x), x)
    assert nn.Dropout(1.0, rng=0)(x).sum() == 0
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


def test_train_eval_propagate_and_return_self():
    m = nn.Sequential(nn.Linear(2, 2, rng=0), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    assert m.eval() is m
    assert all(not mod.training for mod in m.modules())
    assert m.train() is m
    assert all(mod.training for mod in m.modules())


def test_named_parameters_use_pytorch_names():
    m = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(2, 3, bias=False, rng=0),
                      nn.Sequential(nn.Linear(3, 3, rng=0)))
    assert [n for n, _ in m.named_parameters()] == ["0.weight", "0.bias", "4.weight", "5.0.weight", "5.0.bias"]
    assert list(m.state_dict()) == ["0.weight", "0.bias", "4.weight", "5.0.weight", "5.0.bias"]
    assert len(list(m.parameters())) == 5
    assert m[0] is m._modules["0"] and len(m) == 6 and isinstance(m[1:3], nn.Sequential)


def test_state_dict_round_trip_and_copy_semantics():
    a = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.Flatten(), nn.Linear(18, 3, rng=0))
    b = nn.Sequential(nn.Conv2d(1, 2, 3, rng=1), nn.Flatten(), nn.Linear(18, 3, rng=1))
    sd = a.state_dict()
    sd["0.weight"][...] = 0  # a copy: the model is untouched
    assert a[0].weight.data.any()
    b.load_state_dict(a.state_dict())
    x = rng(0).random((2, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_load_state_dict_errors_change_nothing():
    m = nn.Sequential(nn.Linear(3, 2, rng=0))
    before = m[0].weight.data.copy()
    good = {"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(2)}
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\]"):
        m.load_state_dict({"0.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"unexpected keys \['1.weight'\]"):
        m.load_state_dict({**good, "1.weight": np.zeros(1)})
    with pytest.raises(ValueError, match=r"'0.bias' must have shape \(2,\), got \(3,\)"):
        m.load_state_dict({"0.weight": np.zeros((2, 3)), "0.bias": np.zeros(3)})
    np.testing.assert_array_equal(m[0].weight.data, before)
    res = m.load_state_dict({"0.weight": np.ones((2, 3))}, strict=False)
    assert res.missing_keys == ["0.bias"] and res.unexpected_keys == []
    np.testing.assert_array_equal(m[0].weight.data, np.ones((2, 3)))


def test_repr_is_readable_like_torch():
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 8, 3, stride=2, groups=8, bias=False), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 10))
    text = repr(m)
    assert text.splitlines()[0] == "Sequential("
    assert "  (0): Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in text
    assert "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)" in text
    assert "(3): Conv2d(16, 8, kernel_size=(3, 3), stride=(2, 2), groups=8, bias=False)" in text
    assert "(4): AvgPool2d(kernel_size=2, stride=2, padding=0)" in text
    assert "(7): Linear(in_features=8, out_features=10, bias=True)" in text
    assert repr(nn.ReLU()) == "ReLU()" and repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.Parameter(np.zeros((2, 3), np.float32))) == "Parameter(shape=(2, 3), dtype=float32)"


def test_module_deepcopy_is_independent():
    m = nn.Sequential(nn.Linear(2, 2, rng=0))
    c = copy.deepcopy(m)
    c[0].weight.data += 1
    assert not np.array_equal(c[0].weight.data, m[0].weight.data)


def test_custom_module_registers_parameters_and_children():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU())
            self.scale = nn.Parameter(np.ones(1))
            self.head = nn.Linear(2, 1, rng=0)

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "features.0.weight", "features.0.bias",
                                                      "head.weight", "head.bias"]
    assert "(features): Sequential(" in repr(net)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,match", [
    (lambda: nn.Conv2d(0, 2, 3), ValueError, "in_channels must be >= 1"),
    (lambda: nn.Conv2d(3, 2, 3, groups=2), ValueError, "groups=2 must divide"),
    (lambda: nn.Conv2d(1, 2, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: nn.Conv2d(1, 2, 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: nn.Conv2d(1, 2, 3, stride=2, padding="same"), ValueError, "padding='same' needs stride 1"),
    (lambda: nn.Conv2d(1, 2, 3, padding="full"), ValueError, "padding must be"),
    (lambda: nn.Conv2d(1.5, 2, 3), TypeError, "in_channels must be an int"),
    (lambda: nn.Conv2d(1, 2, 3, dtype=np.int32), ValueError, "dtype must be"),
    (lambda: nn.Conv2d(1, 2, 3, rng="seed"), TypeError, "rng must be"),
    (lambda: nn.Linear(3, 0), ValueError, "out_features must be >= 1"),
    (lambda: nn.MaxPool2d(0), ValueError, "kernel_size must be >= 1"),
    (lambda: nn.AvgPool2d(2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: nn.Dropout(1.5), ValueError, r"p must be in \[0, 1\]"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, "reduction must be"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "must be a cnnext.nn.Module"),
])
def test_constructor_errors_name_the_argument(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_forward_and_backward_errors():
    conv = nn.Conv2d(3, 2, 3, rng=0)
    with pytest.raises(ValueError, match="expects 3 input channels"):
        conv(np.zeros((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="input must be 3-D or 4-D"):
        conv(np.zeros((5, 5)))
    with pytest.raises(RuntimeError, match="call forward first"):
        nn.Conv2d(1, 1, 1).backward(np.zeros((1, 1, 2, 2)))
    conv(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        conv.backward(np.zeros((1, 2, 4, 4)))
    lin = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="in_features"):
        lin(np.zeros((3, 5)))
    crit = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"target class indices must lie in \[0, 3\)"):
        crit(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        crit(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="target must be 1-D"):
        crit(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="target must have shape"):
        nn.MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="complex"):
        nn.ReLU()(np.zeros(3, dtype=complex))


def test_functional_linear_and_losses_closed_forms():
    r = rng(5)
    x, w, b = r.standard_normal((4, 3)), r.standard_normal((2, 3)), r.standard_normal(2)
    np.testing.assert_allclose(F.linear(x, w, b), x @ w.T + b)
    gy = r.standard_normal((4, 2))
    gx, gw, gb = F.linear_backward(gy, x, w)
    np.testing.assert_allclose(gx, gy @ w)
    np.testing.assert_allclose(gw, gy.T @ x)
    np.testing.assert_allclose(gb, gy.sum(0))
    z = r.standard_normal((3, 5))
    np.testing.assert_allclose(np.exp(F.log_softmax(z)).sum(1), 1.0)
    np.testing.assert_allclose(F.softmax(z), np.exp(z) / np.exp(z).sum(1, keepdims=True))
    t = np.array([1, 0, 4])
    per = F.cross_entropy(z, t, reduction="none")
    np.testing.assert_allclose(per, -np.log(F.softmax(z)[np.arange(3), t]))
    assert F.cross_entropy(z, t).dtype == np.float64
    assert F.cross_entropy(z.astype(np.float32), t).dtype == np.float32
    np.testing.assert_allclose(F.mse_loss_backward(z, np.zeros_like(z), "sum"), 2 * z)


# -- no_grad: the layers keep nothing for backward --------------------------------------------
NO_GRAD_LAYERS = [
    ("conv", lambda: nn.Conv2d(2, 3, 3, padding=1, rng=0), (2, 2, 5, 5), "_x"),
    ("linear", lambda: nn.Linear(4, 3, rng=0), (5, 4), "_x"),
    ("maxpool", lambda: nn.MaxPool2d(2), (2, 2, 4, 4), "_indices"),
    ("avgpool", lambda: nn.AvgPool2d(2), (2, 2, 4, 4), "_shape"),
    ("relu", lambda: nn.ReLU(), (3, 4), "_y"),
    ("flatten", lambda: nn.Flatten(), (2, 3, 4), "_shape"),
    ("dropout", lambda: nn.Dropout(0.5, rng=0), (3, 4), "_shape"),
    ("dropout_eval", lambda: nn.Dropout(0.5, rng=0).eval(), (3, 4), "_shape"),
]


@pytest.mark.parametrize("name,make,shape,cache", NO_GRAD_LAYERS, ids=[c[0] for c in NO_GRAD_LAYERS])
def test_layers_keep_nothing_under_no_grad(name, make, shape, cache):
    import cnnext
    x = rng(7).standard_normal(shape)
    with_grad, without = make(), make()
    y = with_grad(x)
    assert with_grad.__dict__[cache] is not None
    with cnnext.no_grad():
        y0 = without(x)
    np.testing.assert_array_equal(y0, y)  # same output (the same dropout mask: same seed)
    assert without.__dict__[cache] is None and without.__dict__.get("_mask") is None
    with pytest.raises(RuntimeError, match="no_grad"):
        without.backward(np.ones_like(y))
    without(x)  # with gradients again: backward works
    with_grad(x)  # (the second dropout mask of each)
    np.testing.assert_array_equal(without.backward(np.ones_like(y)), with_grad.backward(np.ones_like(y)))


def test_losses_keep_nothing_under_no_grad():
    import cnnext
    crit = nn.CrossEntropyLoss()
    logits, target = rng(8).standard_normal((4, 3)), np.array([0, 2, 1, 1])
    want = crit(logits, target)
    with cnnext.no_grad():
        assert crit(logits, target) == want
    assert crit.__dict__["_input"] is None and crit.__dict__["_target"] is None
    with pytest.raises(RuntimeError, match="no_grad"):
        crit.backward()
