"""cnnext.nn against torch.nn: same weights (through state_dict) give the same outputs and gradients.

Skipped when torch is not installed.
"""
import numpy as np
import pytest

from cnnext import functional as F
from cnnext import nn

torch = pytest.importorskip("torch")
tnn = torch.nn

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def make_pair(dtype, seed=0):
    """An equivalent cnnext model and torch model (torch initialised independently, then copied)."""
    rng = np.random.default_rng(seed)
    ours = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2, dtype=dtype, rng=rng), nn.Tanh(),
        nn.AvgPool2d(2, stride=1), nn.Flatten(), nn.Linear(18, 5, dtype=dtype, rng=rng), nn.Sigmoid(),
        nn.Linear(5, 3, dtype=dtype, rng=rng),
    )
    torch.manual_seed(seed)
    theirs = tnn.Sequential(
        tnn.Conv2d(2, 4, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2), tnn.Tanh(),
        tnn.AvgPool2d(2, stride=1), tnn.Flatten(), tnn.Linear(18, 5), tnn.Sigmoid(), tnn.Linear(5, 3),
    )
    theirs = theirs.double() if dtype == np.float64 else theirs.float()
    return ours, theirs


def to_torch_state(ours):
    return {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_outputs_and_gradients_match_torch(dtype):
    ours, theirs = make_pair(dtype)
    theirs.load_state_dict(to_torch_state(ours))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    target = rng.integers(0, 3, 3)

    crit = nn.CrossEntropyLoss()
    out = ours(x)
    loss = crit(out, target)
    gx = ours.backward(crit.backward())

    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tout = theirs(tx)
    tloss = torch.nn.functional.cross_entropy(tout, torch.from_numpy(target))
    tloss.backward()

    tol = TOL[dtype]
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    assert loss == pytest.approx(tloss.item(), rel=tol["rtol"], abs=tol["atol"])
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    tgrads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tgrads[name], err_msg=name, **tol)
    assert out.dtype == dtype and gx.dtype == dtype


def test_weights_move_from_torch_to_cnnext():
    ours, theirs = make_pair(np.float64, seed=3)
    ours.load_state_dict(theirs.state_dict())  # torch tensors accepted directly
    x = np.random.default_rng(2).standard_normal((2, 2, 8, 8))
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].shape == tuple(v.shape)


def test_mse_loss_matches_torch():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    for reduction in ("mean", "sum"):
        crit = nn.MSELoss(reduction)
        loss = crit(a, b)
        ta = torch.from_numpy(a.copy()).requires_grad_(True)
        tl = torch.nn.functional.mse_loss(ta, torch.from_numpy(b), reduction=reduction)
        tl.backward()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
        np.testing.assert_allclose(crit.backward(), ta.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_functional_cross_entropy_matches_torch_on_extreme_logits(reduction):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 4)) * 300
    t = rng.integers(0, 4, 6)
    tz = torch.from_numpy(z.copy()).requires_grad_(True)
    tl = torch.nn.functional.cross_entropy(tz, torch.from_numpy(t), reduction=reduction)
    np.testing.assert_allclose(F.cross_entropy(z, t, reduction), tl.detach().numpy(), rtol=1e-12)
    go = np.ones(6) if reduction == "none" else 1.0
    tl.backward(torch.ones(6, dtype=torch.float64) if reduction == "none" else None)
    np.testing.assert_allclose(F.cross_entropy_backward(z, t, reduction, go), tz.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(F.log_softmax(z), torch.log_softmax(torch.from_numpy(z), 1).numpy(), rtol=1e-12)


def test_linear_with_leading_dims_matches_torch():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4))
    lin = nn.Linear(4, 5, dtype=np.float64, rng=0)
    tl = tnn.Linear(4, 5).double()
    tl.load_state_dict(to_torch_state(lin))
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tl(tx)
    g = rng.standard_normal((2, 3, 5))
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(lin(x), ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.backward(g), tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.weight.grad, tl.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.bias.grad, tl.bias.grad.numpy(), rtol=1e-12)


def test_maxpool_ceil_mode_padding_matches_torch():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 6))
    pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = tnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)(tx)
    g = rng.standard_normal(ty.shape)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(pool(x), ty.detach().numpy())
    np.testing.assert_allclose(pool.backward(g), tx.grad.numpy(), rtol=1e-12)
