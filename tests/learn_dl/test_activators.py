"""learn_dl's activators on Python scalars (as learn_dl calls them) and on arrays, against the formulas."""
import math

import numpy as np
import pytest

from cnnext import IdentityActivator, ReluActivator, SigmoidActivator, TanhActivator

SCALARS = [-3.5, -1.0, -1e-9, 0.0, 1e-9, 0.25, 1.0, 2.0, 7.5]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


FORMULAS = {
    IdentityActivator: (lambda x: x, lambda y: 1.0),
    ReluActivator: (lambda x: max(0.0, x), lambda y: 1.0 if y > 0 else 0.0),
    SigmoidActivator: (_sigmoid, lambda y: y * (1.0 - y)),
    TanhActivator: (math.tanh, lambda y: 1.0 - y * y),
}


@pytest.mark.parametrize("cls", list(FORMULAS), ids=lambda c: c.__name__)
@pytest.mark.parametrize("x", SCALARS)
def test_scalars_match_formulas(cls, x):
    act = cls()
    fwd, bwd = FORMULAS[cls]
    y = act.forward(x)
    assert isinstance(y, float)
    assert y == pytest.approx(fwd(x), rel=1e-15, abs=1e-300)
    d = act.backward(y)
    assert isinstance(d, (int, float))
    assert d == pytest.approx(bwd(y), rel=1e-15, abs=1e-300)


@pytest.mark.parametrize("cls", list(FORMULAS), ids=lambda c: c.__name__)
def test_arrays_match_formulas(cls):
    act = cls()
    fwd, bwd = FORMULAS[cls]
    x = np.linspace(-4, 4, 24).reshape(2, 3, 4)
    y = act.forward(x)
    assert isinstance(y, np.ndarray) and y.shape == x.shape
    np.testing.assert_allclose(y, np.vectorize(fwd)(x), rtol=1e-14, atol=1e-300)
    d = np.broadcast_to(act.backward(y), x.shape)
    np.testing.assert_allclose(d, np.vectorize(bwd)(y), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("cls", list(FORMULAS), ids=lambda c: c.__name__)
def test_zero_d_arrays_from_nditer(cls):
    # learn_dl's element_wise_op hands each element over as a 0-d array view
    act = cls()
    fwd, bwd = FORMULAS[cls]
    arr = np.array([[-2.0, 0.5], [1.5, 3.0]])
    out = arr.copy()
    for i in np.nditer(out, op_flags=["readwrite"]):
        i[...] = act.forward(i)
    np.testing.assert_allclose(out, np.vectorize(fwd)(arr), rtol=1e-14)
    back = out.copy()
    for i in np.nditer(back, op_flags=["readwrite"]):
        i[...] = act.backward(i)
    np.testing.assert_allclose(back, np.vectorize(bwd)(out), rtol=1e-14)


def test_sigmoid_true_division_regression():
    # learn_dl computed 1.0 // (1.0 + exp(-x)): 0.0 for every x > -inf
    s = SigmoidActivator()
    assert s.forward(0.0) == 0.5
    assert s.forward(0) == 0.5
    assert s.forward(2.0) == pytest.approx(0.8807970779778823, rel=1e-15)
    np.testing.assert_allclose(s.forward(np.array([-1.0, 0.0, 1.0])),
                               [0.2689414213699951, 0.5, 0.7310585786300049], rtol=1e-15)


def test_sigmoid_extremes_do_not_overflow():
    s = SigmoidActivator()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = s.forward(np.array([-1000.0, -50.0, 50.0, 1000.0]))
    assert y[0] == 0.0 and y[-1] == 1.0
    assert 0 < y[1] < 1e-20 and 1 - 1e-15 < y[2] <= 1.0


def test_relu_values_and_types():
    r = ReluActivator()
    assert r.forward(-2) == 0 and r.forward(3) == 3
    assert isinstance(r.forward(3), int)
    assert r.backward(0.0) == 0 and r.backward(1e-12) == 1
    np.testing.assert_array_equal(r.forward(np.array([-1.0, 0.0, 2.0])), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(r.backward(np.array([0.0, 2.0])), [0.0, 1.0])
    assert r.forward(np.array([-1.0], dtype=np.float32)).dtype == np.float32


def test_identity_backward_shapes():
    ident = IdentityActivator()
    assert ident.backward(5.0) == 1
    ones = ident.backward(np.zeros((2, 3), dtype=np.float32))
    assert ones.shape == (2, 3) and ones.dtype == np.float32 and (ones == 1).all()
    assert ident.backward(np.zeros(3, dtype=np.int64)).dtype == np.float64
    x = np.arange(3.0)
    assert ident.forward(x) is x


def test_lists_are_accepted():
    np.testing.assert_allclose(TanhActivator().forward([0.0, 1.0]), [0.0, math.tanh(1.0)])
    np.testing.assert_allclose(SigmoidActivator().backward([0.5, 0.25]), [0.25, 0.1875])


def test_repr():
    assert repr(ReluActivator()) == "ReluActivator()"
    assert repr(IdentityActivator()) == "IdentityActivator()"
    assert repr(SigmoidActivator()) == "SigmoidActivator()"
    assert repr(TanhActivator()) == "TanhActivator()"
