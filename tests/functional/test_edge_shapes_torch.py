"""Shapes and dtypes at the edges, against PyTorch (issue 13 item 11).

0-d arrays keep shape () through the element-wise functions, losses with reduction='none', dropout
and the activation modules; softmax over an empty axis is empty; complex input is refused by the
activations as by every other function; loss and activation modules' own errors name the class.
"""
import numpy as np
import pytest

import cnnext
from cnnext import functional as F
from cnnext import nn

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _t(a, dtype, grad=False):
    return torch.tensor(np.asarray(a), dtype=TORCH_DTYPE[dtype], requires_grad=grad)


# -- 0-d arrays keep shape () -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_loss_none_keeps_0d(dtype):
    x, t = np.array(1.5, dtype), np.array(-0.25, dtype)
    got = F.mse_loss(x, t, "none")
    want = torch.nn.functional.mse_loss(_t(x, dtype), _t(t, dtype), reduction="none")
    assert isinstance(got, np.ndarray) and got.shape == tuple(want.shape) == ()
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want.detach().numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_loss_backward_keeps_0d(dtype, reduction):
    x, t, go = np.array(1.5, dtype), np.array(-0.25, dtype), np.array(3.0, dtype)
    got = F.mse_loss_backward(x, t, reduction, go)
    tx = _t(x, dtype, grad=True)
    torch.nn.functional.mse_loss(tx, _t(t, dtype), reduction=reduction).backward(_t(go, dtype))
    assert isinstance(got, np.ndarray) and got.shape == tuple(tx.grad.shape) == ()
    np.testing.assert_allclose(got, tx.grad.numpy())


@pytest.mark.parametrize("p", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_0d(dtype, p):
    x = np.array(2.0, dtype)
    y, mask = F.dropout(x, p, True, rng=0, return_mask=True)
    want = torch.nn.functional.dropout(_t(x, dtype), p, training=True)
    assert y.shape == mask.shape == tuple(want.shape) == ()
    assert isinstance(y, np.ndarray) and y.dtype == dtype
    if p < 0.5:
        np.testing.assert_array_equal(y, want.numpy())  # p = 0: identity in both
    elif p == 1.0:
        np.testing.assert_array_equal(y, want.numpy())  # p = 1: zero in both
    else:
        assert float(y) in (0.0, 4.0)  # dropped, or kept and scaled by 1 / (1 - p)
    g = F.dropout_backward(np.array(1.0, dtype), mask)
    assert g.shape == () and float(g) == float(mask)
    assert F.dropout(x, 0.5, training=False).shape == ()


@pytest.mark.parametrize("name", ["ReLU", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("value", [-0.7, 0.0, 1.3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_modules_keep_0d(name, value, dtype):
    x = np.array(value, dtype)
    m = getattr(nn, name)()
    y = m(x)
    tx = _t(x, dtype, grad=True)
    ty = getattr(torch.nn, name)()(tx)
    ty.backward(_t(2.0, dtype))
    assert isinstance(y, np.ndarray) and y.shape == tuple(ty.shape) == () and y.dtype == dtype
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6)
    gx = m.backward(np.array(2.0, dtype))
    assert isinstance(gx, np.ndarray) and gx.shape == tuple(tx.grad.shape) == ()
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6)


def test_dropout_module_keeps_0d():
    m = nn.Dropout(0.5, rng=0)
    y = m(np.array(3.0))
    assert isinstance(y, np.ndarray) and y.shape == () and float(y) in (0.0, 6.0)
    g = m.backward(np.array(1.0))
    assert isinstance(g, np.ndarray) and g.shape == ()
    assert m.eval()(np.array(3.0)).shape == () and m.backward(np.array(1.0)).shape == ()


# -- softmax over an empty axis ---------------------------------------------------------------
@pytest.mark.parametrize("shape,dim", [((2, 0), 1), ((0,), 0), ((0, 3), 1), ((3, 0, 2), 1),
                                       ((3, 0, 2), -1), ((2, 0), 0)])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_over_empty_axis_is_empty(fn, shape, dim):
    x = np.zeros(shape, np.float32)
    got = getattr(F, fn)(x, dim)
    want = getattr(torch, fn)(torch.zeros(shape), dim)
    assert got.shape == tuple(want.shape) and got.dtype == np.float32


def test_cross_entropy_backward_of_an_empty_batch_without_classes():
    g = F.cross_entropy_backward(np.zeros((0, 0)), np.zeros(0, np.int64))
    assert g.shape == (0, 0)


# -- complex input is refused like everywhere else --------------------------------------------
@pytest.mark.parametrize("fn", ["relu", "sigmoid", "tanh", "relu_derivative", "sigmoid_derivative",
                                "tanh_derivative"])
@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array([1.0], dtype=object), 1 + 2j,
                                 np.array([1.0], np.float16)], ids=["complex", "object", "py_complex", "f16"])
def test_activations_refuse_what_conv2d_refuses(fn, bad):
    with pytest.raises(TypeError) as conv_exc:
        F.conv2d(np.broadcast_to(np.asarray(bad), (1, 1, 1, 1)), np.ones((1, 1, 1, 1)))
    with pytest.raises(TypeError) as exc:
        getattr(F, fn)(bad)
    arg = "y" if fn.endswith("derivative") else "input"
    # conv2d's words, with this function's and argument's names
    assert str(exc.value) == str(conv_exc.value).replace("input", arg).replace("conv2d", fn)


def test_learn_dl_activators_refuse_complex():
    with pytest.raises(TypeError, match="relu: input must hold real numbers"):
        cnnext.ReluActivator().forward(np.array([1 + 1j]))
    assert cnnext.ReluActivator().forward(-3) == 0 and isinstance(cnnext.ReluActivator().forward(3), int)
    assert cnnext.SigmoidActivator().backward(0.5) == 0.25


# -- loss and activation modules' own errors name the class -----------------------------------
LOSS_CALLS = {
    "ce_init": (lambda nn_: nn_.CrossEntropyLoss(foo=1),
                "CrossEntropyLoss.__init__() got an unexpected keyword argument 'foo'"),
    "mse_init": (lambda nn_: nn_.MSELoss(foo=1),
                 "MSELoss.__init__() got an unexpected keyword argument 'foo'"),
    "ce_forward": (lambda nn_: nn_.CrossEntropyLoss()(np.zeros((2, 3)) if nn_ is nn else torch.zeros(2, 3)),
                   "CrossEntropyLoss.forward() missing 1 required positional argument: 'target'"),
    "mse_forward": (lambda nn_: nn_.MSELoss()(np.zeros(2) if nn_ is nn else torch.zeros(2)),
                    "MSELoss.forward() missing 1 required positional argument: 'target'"),
}


@pytest.mark.parametrize("case", list(LOSS_CALLS))
def test_loss_errors_name_the_class(case):
    call, want = LOSS_CALLS[case]
    with pytest.raises(TypeError) as ours:
        call(nn)
    assert str(ours.value) == want
    with pytest.raises(TypeError) as theirs:
        call(torch.nn)
    # PyTorch names the class too, except in MSELoss's constructor ("_Loss.__init__()")
    assert str(theirs.value) == want.replace("MSELoss.__init__", "_Loss.__init__")


@pytest.mark.parametrize("name", ["ReLU", "Sigmoid", "Tanh"])
def test_activation_errors_name_the_class(name):
    with pytest.raises(TypeError, match=rf"^{name}.forward\(\) missing 1 required positional argument"):
        getattr(nn, name)()()
    with pytest.raises(TypeError, match=rf"^{name}.__init__\(\) takes 1 positional argument"):
        getattr(nn, name)(1)
    with pytest.raises(TypeError, match=rf"^{name}.backward\(\) missing 1 required positional argument"):
        getattr(nn, name)().backward()
    assert getattr(nn, name).forward.__doc__  # the copies keep their docstrings


@pytest.mark.parametrize("name", ["BatchNorm1d", "BatchNorm2d"])
def test_batchnorm_errors_name_the_class(name):
    with pytest.raises(TypeError) as ours:
        getattr(nn, name)(4, foo=1)
    with pytest.raises(TypeError) as theirs:
        getattr(torch.nn, name)(4, foo=1)
    want = f"{name}.__init__() got an unexpected keyword argument 'foo'"
    assert str(ours.value) == want
    assert str(theirs.value) == want.replace(name, "_BatchNorm")  # PyTorch names its private base here
    with pytest.raises(TypeError, match=rf"^{name}.forward\(\) missing 1 required positional argument"):
        getattr(nn, name)(4)()
