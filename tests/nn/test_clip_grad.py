"""clip_grad_norm_ / clip_grad_value_ against torch.nn.utils (issue 14 item 5)."""
import math

import numpy as np
import pytest

from cnnext import nn

torch = pytest.importorskip("torch")


def _pair(seed, scale):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) * scale for s in ((3, 4), (5,), (2, 2, 3))]
    ours = []
    for g in grads:
        p = nn.Parameter(np.zeros_like(g))
        p.grad[...] = g
        ours.append(p)
    theirs = []
    for g in grads:
        t = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64))
        t.grad = torch.from_numpy(g.copy())
        theirs.append(t)
    return ours, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm,scale", [(1.0, 1.0), (100.0, 1.0), (0.5, 10.0)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, scale):
    ours, theirs = _pair(0, scale)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_matches_torch():
    ours, theirs = _pair(1, 2.0)
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


def test_nonfinite_and_bad_arguments():
    ours, _ = _pair(2, 1.0)
    ours[0].grad[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="clip_grad_norm_: max_norm must be >= 0.0"):
        nn.utils.clip_grad_norm_(ours, -1.0)
    with pytest.raises(TypeError, match=r"clip_grad_value_: parameters\[0\] must be a cnnext.nn.Parameter"):
        nn.utils.clip_grad_value_([np.zeros(3)], 1.0)
    model = nn.Linear(3, 2, rng=0)
    model.weight.grad[...] = 10.0
    nn.utils.clip_grad_value_(model.parameters(), 1.0)
    assert model.weight.grad.max() == 1.0
