"""nn.BatchNorm1d/2d and nn.AdaptiveAvgPool2d/AdaptiveMaxPool2d against torch.nn, step by step
(outputs, gradients, running statistics, state_dict), train and eval, float32 and float64."""
import numpy as np
import pytest

import cnnext
from cnnext import nn

torch = pytest.importorskip("torch")

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _tdtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,shape", [("BatchNorm2d", (4, 3, 5, 6)), ("BatchNorm1d", (7, 3)),
                                       ("BatchNorm1d", (4, 3, 9))])
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": 0.3, "eps": 1e-3}])
def test_batchnorm_matches_torch_over_steps(dtype, cls, shape, kw):
    ours = getattr(nn, cls)(3, dtype=dtype, **kw)
    theirs = getattr(torch.nn, cls)(3, dtype=_tdtype(dtype), **kw)
    rng = np.random.default_rng(0)
    if ours.affine:
        w, b = rng.random(3) + 0.5, rng.standard_normal(3)
        ours.weight.data[...] = w
        ours.bias.data[...] = b
        theirs.weight.data = torch.from_numpy(w.astype(dtype))
        theirs.bias.data = torch.from_numpy(b.astype(dtype))
    tol = TOL[dtype]
    for step, train in enumerate([True, True, True, False, True, False]):
        ours.train(train)
        theirs.train(train)
        x = (rng.standard_normal(shape) * 2 + step).astype(dtype)
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
        g = rng.standard_normal(shape).astype(dtype)
        ours.zero_grad()
        gx = ours.backward(g)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol * 10, atol=tol * 10)
        if ours.affine:
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=tol * 10, atol=tol * 10)
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=tol * 10, atol=tol * 10)
            theirs.weight.grad = theirs.bias.grad = None
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        for k in sd:
            assert sd[k].dtype == tsd[k].numpy().dtype, k
            np.testing.assert_allclose(sd[k], tsd[k].numpy(), rtol=tol, atol=tol, err_msg=k)


def test_batchnorm_gradcheck_and_errors():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    bn.weight.data[...] = [1.5, 0.5]
    assert cnnext.gradcheck(bn, rng.standard_normal((3, 2, 2, 2)))
    assert cnnext.gradcheck(bn.eval(), rng.standard_normal((3, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"BatchNorm2d: input must be 4-D \(N, C, H, W\), got 3-D"):
        nn.BatchNorm2d(2)(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="BatchNorm1d: num_features must be >= 1"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="BatchNorm2d: momentum must be in"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        nn.BatchNorm2d(3)(np.zeros((1, 3, 1, 1), np.float32))  # one value per channel in training


def test_batchnorm_no_grad_keeps_nothing_but_updates_running_stats():
    bn = nn.BatchNorm2d(2)
    x = np.random.default_rng(2).standard_normal((4, 2, 3, 3)).astype(np.float32)
    with cnnext.no_grad():
        bn(x)
    assert bn._x is None and bn.num_batches_tracked == 1
    with pytest.raises(RuntimeError, match="no_grad"):
        bn.backward(np.ones_like(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, (3, 2), (None, 4), 5])
@pytest.mark.parametrize("kind", ["Avg", "Max"])
def test_adaptive_pool_layers_match_torch(dtype, size, kind):
    ours = getattr(nn, f"Adaptive{kind}Pool2d")(size)
    theirs = getattr(torch.nn, f"Adaptive{kind}Pool2d")(size)
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 9)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    y, ty = ours(x), theirs(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=TOL[dtype], atol=TOL[dtype])
    g = np.random.default_rng(4).standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), tx.grad.numpy(), rtol=TOL[dtype], atol=TOL[dtype])


def test_adaptive_max_pool_return_indices_and_no_grad():
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6))
    y, idx = nn.AdaptiveMaxPool2d(2, return_indices=True)(x)
    ty, tidx = torch.nn.AdaptiveMaxPool2d(2, return_indices=True)(torch.from_numpy(x))
    np.testing.assert_array_equal(idx, tidx.numpy())
    np.testing.assert_array_equal(y, ty.numpy())
    layer = nn.AdaptiveMaxPool2d(2)
    with cnnext.no_grad():
        np.testing.assert_array_equal(layer(x), y)
    assert layer._indices is None
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
        nn.AdaptiveAvgPool2d(-1)
