"""The package's one set of argument checks (cnnext._validation) and the modules that use them.

Every scalar check has the signature ``check_x(value, name, func, ...)`` and raises
"{func}: {name} must be ..., got ..."; the expected messages here are written out by hand.
"""
import numpy as np
import pytest

import cnnext
from cnnext import datasets, nn, optim
from cnnext import functional as F
from cnnext._validation import (
    check_bool,
    check_choice,
    check_conv_padding,
    check_dtype,
    check_float,
    check_input_shape,
    check_int,
    check_rng,
    result_dtype,
)


# -- the checks themselves --------------------------------------------------------------------
@pytest.mark.parametrize("value,kw,want", [
    (3, {}, 3), (np.int16(3), {}, 3), (np.array(4), {}, 4), (0, dict(minimum=0), 0),
    (7, dict(minimum=1, maximum=7), 7),
])
def test_check_int_accepts_integers(value, kw, want):
    got = check_int(value, "n", "f", **kw)
    assert got == want and type(got) is int


@pytest.mark.parametrize("value,kw,exc,match", [
    (True, {}, TypeError, r"^f: n must be an int, got bool True$"),
    (np.bool_(False), {}, TypeError, r"^f: n must be an int, got bool"),
    (1.0, {}, TypeError, r"^f: n must be an int, got float 1.0$"),
    ("3", {}, TypeError, r"^f: n must be an int, got str '3'$"),
    (None, {}, TypeError, r"^f: n must be an int, got NoneType None$"),
    (np.array([1, 2]), {}, TypeError, r"^f: n must be an int, got array of shape \(2,\) and dtype int64$"),
    (np.array(1.0), {}, TypeError, r"^f: n must be an int, got array of shape \(\) and dtype float64$"),
    (0, dict(minimum=1), ValueError, r"^f: n must be >= 1, got 0$"),
    (9, dict(maximum=8), ValueError, r"^f: n must be <= 8, got 9$"),
    (9, dict(minimum=1, maximum=8), ValueError, r"^f: n must be in \[1, 8\], got 9$"),
])
def test_check_int_refuses(value, kw, exc, match):
    with pytest.raises(exc, match=match):
        check_int(value, "n", "f", **kw)


@pytest.mark.parametrize("value,kw,exc,match", [
    ("0.1", {}, TypeError, r"^f: x must be a real number, got str '0.1'$"),
    (True, {}, TypeError, r"^f: x must be a real number, got bool True$"),
    (1j, {}, TypeError, r"^f: x must be a real number, got complex 1j$"),
    (float("nan"), {}, ValueError, r"^f: x must be finite, got nan$"),
    (float("inf"), {}, ValueError, r"^f: x must be finite, got inf$"),
    (float("nan"), dict(finite=False), ValueError, r"^f: x must be finite, got nan$"),
    (-1, dict(minimum=0), ValueError, r"^f: x must be >= 0, got -1$"),
    (0.0, dict(minimum=0, open_min=True), ValueError, r"^f: x must be > 0, got 0.0$"),
    (1.0, dict(minimum=0.0, maximum=1.0, open_max=True), ValueError, r"^f: x must be in \[0.0, 1.0\), got 1.0$"),
    (2, dict(maximum=1), ValueError, r"^f: x must be <= 1, got 2$"),
])
def test_check_float_refuses(value, kw, exc, match):
    with pytest.raises(exc, match=match):
        check_float(value, "x", "f", **kw)


def test_check_float_accepts_real_numbers():
    assert check_float(np.float32(0.5), "x", "f") == 0.5
    assert check_float(3, "x", "f", minimum=0) == 3.0 and type(check_float(3, "x", "f")) is float
    assert check_float(float("inf"), "x", "f", finite=False) == float("inf")


def test_check_bool_choice_dtype_rng():
    assert check_bool(np.bool_(True), "b", "f") is True
    with pytest.raises(TypeError, match=r"^f: b must be a bool, got int 1$"):
        check_bool(1, "b", "f")
    assert check_choice("sum", "reduction", "f", ("mean", "sum")) == "sum"
    with pytest.raises(ValueError, match=r"^f: reduction must be one of 'mean', 'sum', got 'avg'$"):
        check_choice("avg", "reduction", "f", ("mean", "sum"))
    with pytest.raises(ValueError, match=r"^f: reduction must be one of 'mean', 'sum', got \['mean'\]$"):
        check_choice(["mean"], "reduction", "f", ("mean", "sum"))
    assert check_dtype("float32", "dtype", "f") == np.float32
    with pytest.raises(ValueError, match=r"^f: dtype must be np.float32 or np.float64, got float16$"):
        check_dtype(np.float16, "dtype", "f")
    with pytest.raises(TypeError, match=r"^f: dtype must be np.float32 or np.float64, got 3.5$"):
        check_dtype(3.5, "dtype", "f")
    g = np.random.default_rng(0)
    assert check_rng(g, "rng", "f") is g
    assert check_rng(5, "rng", "f").random() == np.random.default_rng(5).random()
    with pytest.raises(TypeError, match=r"^f: rng must be a numpy.random.Generator, an int seed or None, got bool$"):
        check_rng(True, "rng", "f")


def test_array_checks_take_value_name_func():
    assert result_dtype(np.zeros(2, np.int8), "x", "f") == np.float64
    with pytest.raises(TypeError, match=r"^f: x must hold real numbers"):
        result_dtype(np.zeros(2, complex), "x", "f")
    assert check_input_shape((2, 3, 4), "input_shape", "f") == ((1, 2, 3, 4), True)
    with pytest.raises(TypeError, match=r"^f: shape must be a tuple of ints"):
        check_input_shape((2, 3.0, 4), "shape", "f")
    assert check_conv_padding("same", (1, 1), "f") == "same"
    assert check_conv_padding(2, (2, 2), "f") == (2, 2)
    with pytest.raises(ValueError, match=r"^f: padding='same' needs stride 1, got stride=\(2, 1\)$"):
        check_conv_padding("same", (2, 1), "f")


# -- the modules use them: one message format, the caller as the user sees it ----------------
def _lin():
    return nn.Linear(2, 2, rng=0)


CALLERS = [
    (lambda: datasets.load_digits(test_size=True), TypeError, r"^load_digits: test_size must be an int, got bool"),
    (lambda: datasets.load_digits(test_size=1797), ValueError,
     r"^load_digits: test_size must be in \[1, 1796\], got 1797$"),
    (lambda: datasets.DataLoader(np.zeros((3, 2)), batch_size=2.0), TypeError,
     r"^DataLoader: batch_size must be an int, got float 2.0$"),
    (lambda: datasets.iterate_minibatches(np.zeros((3, 2)), batch_size=0), ValueError,
     r"^iterate_minibatches: batch_size must be >= 1, got 0$"),
    (lambda: F.softmax(np.zeros((2, 3)), dim=2), ValueError, r"^softmax: dim must be in \[-2, 1\], got 2$"),
    (lambda: F.log_softmax(np.zeros((2, 3)), dim=np.array([0, 1])), TypeError,
     r"^log_softmax: dim must be an int, got array"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), [0, 1], reduction="avg"), ValueError,
     r"^cross_entropy: reduction must be one of 'mean', 'sum', 'none', got 'avg'$"),
    (lambda: F.dropout(np.zeros(3), p="0.5"), TypeError, r"^dropout: p must be a real number, got str '0.5'$"),
    (lambda: F.dropout(np.zeros(3), p=1.5), ValueError, r"^dropout: p must be in \[0, 1\], got 1.5$"),
    (lambda: F.dropout(np.zeros(3), p=0.5, rng="x"), TypeError, r"^dropout: rng must be a numpy.random.Generator"),
    (lambda: optim.SGD(_lin().parameters(), lr="0.1"), TypeError, r"^SGD: lr must be a real number, got str"),
    (lambda: optim.SGD(_lin().parameters(), lr=float("inf")), ValueError, r"^SGD: lr must be finite, got inf$"),
    (lambda: optim.SGD(_lin().parameters(), nesterov=1), TypeError, r"^SGD: nesterov must be a bool, got int 1$"),
    (lambda: optim.AdamW(_lin().parameters(), amsgrad="no"), TypeError, r"^AdamW: amsgrad must be a bool"),
    (lambda: cnnext.gradcheck(_lin(), np.zeros((1, 2)), eps=0), ValueError, r"^gradcheck: eps must be > 0, got 0$"),
    (lambda: cnnext.gradcheck(_lin(), np.zeros((1, 2)), atol=-1), ValueError, r"^gradcheck: atol must be >= 0"),
    (lambda: cnnext.gradcheck(_lin(), np.zeros((1, 2)), rtol="x"), TypeError, r"^gradcheck: rtol must be a real"),
    (lambda: _lin().to(np.int8), ValueError, r"^Linear.to: dtype must be np.float32 or np.float64, got int8$"),
    (lambda: _lin().train(1), TypeError, r"^Linear.train: mode must be a bool, got int 1$"),
    (lambda: nn.Parameter(np.zeros(2, np.float16)), TypeError, r"^Parameter: data has dtype float16"),
    (lambda: nn.Parameter(np.zeros(2, complex)), TypeError, r"^Parameter: data must hold real numbers"),
    (lambda: nn.Flatten(end_dim=True), TypeError, r"^Flatten: end_dim must be an int, got bool True$"),
    (lambda: nn.Conv2d(1, 2, 3, groups=np.array([1])), TypeError, r"^Conv2d: groups must be an int, got array"),
    (lambda: nn.Conv2d(1, 2, 3, bias=1), TypeError, r"^Conv2d: bias must be a bool, got int 1$"),
    (lambda: nn.Conv2d(1, 2, 3, stride=2, padding="same"), ValueError,
     r"^Conv2d: padding='same' needs stride 1, got stride=\(2, 2\)$"),
    (lambda: nn.MaxPool2d(2, ceil_mode="yes"), TypeError, r"^MaxPool2d: ceil_mode must be a bool, got str 'yes'$"),
    (lambda: nn.Dropout(p=-0.5), ValueError, r"^Dropout: p must be in \[0, 1\], got -0.5$"),
    (lambda: nn.MSELoss(reduction="none"), ValueError, r"^MSELoss: reduction must be one of 'mean', 'sum', got"),
    (lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), groups=1.0), TypeError,
     r"^conv2d: groups must be an int, got float 1.0$"),
    (lambda: cnnext.padding(np.zeros((3, 3)), -1), ValueError, r"^padding: zp must be >= 0, got -1$"),
    (lambda: cnnext.get_patch(np.zeros((3, 3)), 0, 0, 2, 2, 1.0), TypeError,
     r"^get_patch: stride must be an int, got float 1.0$"),
    (lambda: cnnext.Filter(2, 2, 0), ValueError, r"^Filter: depth must be >= 1, got 0$"),
    (lambda: cnnext.Filter(2, 2, 1).update(float("nan")), ValueError,
     r"^Filter.update: learning_rate must be finite, got nan$"),
]


def test_save_refuses_metadata_that_load_would_refuse(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(TypeError, match=r"^cnnext.save: metadata must be a dict or None, got list$"):
        cnnext.save(_lin(), path, metadata=[1, 2])
    assert not path.exists()
    cnnext.save(_lin(), path, metadata={"a": 1})
    with pytest.raises(TypeError, match=r"^cnnext.load: return_metadata must be a bool, got str 'yes'$"):
        cnnext.load(path, return_metadata="yes")
    assert cnnext.load(path, return_metadata=True)[1] == {"a": 1}


@pytest.mark.parametrize("call,exc,match", CALLERS)
def test_modules_check_through_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_dropout_takes_an_int_seed_like_the_layers():
    x = np.ones((4, 5))
    y1, y2 = F.dropout(x, 0.5, rng=3), F.dropout(x, 0.5, rng=3)
    np.testing.assert_array_equal(y1, y2)
    keep = np.random.default_rng(3).random(x.shape) >= 0.5
    np.testing.assert_array_equal(y1, np.where(keep, 2.0, 0.0))


# -- a layer validates its input once per call ------------------------------------------------
@pytest.fixture
def checked_names(monkeypatch):
    """Names of the arrays run through as_float_array (every array check calls result_dtype)."""
    import cnnext._validation as v
    names = []
    real = v.result_dtype

    def spy(x, name, func):
        names.append(name)
        return real(x, name, func)

    monkeypatch.setattr(v, "result_dtype", spy)
    return names


def _layers():
    r = np.random.default_rng(0)
    img = r.standard_normal((2, 3, 6, 6))
    return [
        ("conv", nn.Conv2d(3, 4, 3, padding=1, rng=0), img),
        ("conv_unbatched", nn.Conv2d(3, 4, 3, rng=0, dtype=np.float64), img[0]),
        ("linear", nn.Linear(6, 2, rng=0), r.standard_normal((5, 6))),
        ("maxpool", nn.MaxPool2d(2), img),
        ("maxpool_unbatched", nn.MaxPool2d(3, 1), img[0]),
        ("avgpool", nn.AvgPool2d(2, padding=1), img),
        ("relu", nn.ReLU(), img),
        ("tanh", nn.Tanh(), r.standard_normal(())),
        ("dropout", nn.Dropout(0.5, rng=0), img),
        ("dropout_eval", nn.Dropout(0.5, rng=0).eval(), img),
    ]


@pytest.mark.parametrize("case", range(len(_layers())), ids=[c[0] for c in _layers()])
def test_layers_check_input_once_and_only_grad_output_in_backward(case, checked_names):
    _, layer, x = _layers()[case]
    y = layer(x)
    assert checked_names.count("input") == 1, checked_names
    checked_names.clear()
    layer.backward(np.ones(np.shape(y)))
    assert checked_names == ["grad_output"], checked_names


@pytest.mark.parametrize("crit,target", [(nn.CrossEntropyLoss(), np.array([0, 2])),
                                         (nn.MSELoss(reduction="sum"), np.ones((2, 3)))])
def test_losses_check_once(crit, target, checked_names):
    logits = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]])
    crit(logits, target)
    assert checked_names.count("input") == 1, checked_names
    checked_names.clear()
    crit.backward()
    assert checked_names == [], checked_names


def test_layer_errors_name_the_layer_and_backward():
    conv = nn.Conv2d(3, 4, 3, rng=0)
    conv(np.zeros((3, 5, 5)))  # one sample: grad_output is then (4, 3, 3)
    with pytest.raises(ValueError, match=r"^Conv2d.backward: grad_output must be 3-D, got 4-D"):
        conv.backward(np.zeros((1, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"^Conv2d.backward: grad_output must have shape \(4, 3, 3\), "
                                         r"got \(4, 3, 2\)$"):
        conv.backward(np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match=r"^Conv2d: weight of shape \(4, 3, 3, 3\) expects 3 input channels"):
        conv(np.zeros((1, 2, 5, 5)))
    pool = nn.AvgPool2d(2)
    pool(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"^AvgPool2d.backward: grad_output must have shape \(1, 3, 2, 2\)"):
        pool.backward(np.zeros((1, 3, 2, 3)))
    with pytest.raises(ValueError, match=r"^MaxPool2d: input of spatial size \(1, 1\) is too small"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 1, 1)))
    lin = nn.Linear(4, 2, rng=0)
    lin(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"^Linear.backward: grad_output must have shape \(3, 2\), got \(2, 3\)$"):
        lin.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^CrossEntropyLoss: target class indices must lie in \[0, 3\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3]))
    drop = nn.Dropout(0.5).eval()
    drop(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^Dropout.backward: grad_output must have shape \(2, 3\), got \(3, 2\)$"):
        drop.backward(np.zeros((3, 2)))  # the identity's backward was unchecked
    crit = nn.MSELoss()
    crit(np.zeros(3), np.ones(3))
    with pytest.raises(TypeError, match=r"^MSELoss.backward: grad_output must be a real number, got str"):
        crit.backward("1")
