"""optim.RMSprop against torch.optim.RMSprop, step by step (issue 14 item 5)."""
import numpy as np
import pytest

from cnnext import nn, optim

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"centered": True}, {"centered": True, "momentum": 0.5,
                                                                              "weight_decay": 0.01, "alpha": 0.9}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_matches_torch(kw, dtype):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4)).astype(dtype)
    p = nn.Parameter(w0)
    t = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    ours = optim.RMSprop([p], lr=0.01, **kw)
    theirs = torch.optim.RMSprop([t], lr=0.01, **kw)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for _ in range(8):
        g = rng.standard_normal(w0.shape).astype(dtype)
        p.grad[...] = g
        t.grad = torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=tol, atol=tol)


def test_rmsprop_arguments_and_by_name():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="RMSprop: alpha must be in"):
        optim.RMSprop([p], alpha=1.5)
    with pytest.raises(TypeError, match="RMSprop: centered must be a bool"):
        optim.RMSprop([p], centered="yes")
    assert isinstance(optim.create_optimizer("rmsprop", [p], lr=0.1), optim.RMSprop)
