"""cnnext.models against the PyTorch reference models (../shared/reference/torch_models.py, or the
copy of its definitions the environment variable CNNEXT_TORCH_MODELS points to): same state_dict keys,
shapes and dtypes; weights moved both ways; same outputs, input gradients and parameter gradients in
train and eval mode, float32 and float64 (issue 14 item 3)."""
import importlib.util
import os
import pathlib

import numpy as np
import pytest

import cnnext
from cnnext import models

torch = pytest.importorskip("torch")


def _reference():
    candidates = [os.environ.get("CNNEXT_TORCH_MODELS", ""),
                  pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "torch_models.py",
                  "/work/shared/reference/torch_models.py"]
    for path in candidates:
        if path and pathlib.Path(path).is_file():
            spec = importlib.util.spec_from_file_location("torch_models", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    return None


tm = _reference()
needs_reference = pytest.mark.skipif(tm is None, reason="the PyTorch reference models file is not available")
NAMES = ["lenet5", "cifarnet", "resnet20", "mobilenet"]


def _pair(name, dtype, seed=0):
    model = models.build(name, dtype=dtype, rng=seed)
    # torch's initial weights are drawn from its global generator: seed it, so every run compares
    # the same models (in float32 an unlucky draw can flip a ReLU whose input is within rounding
    # of 0, and that one element's gradient then differs by more than any tolerance)
    torch.manual_seed(seed)
    tmodel = tm.build(name).to(torch.float64 if dtype == np.float64 else torch.float32)
    return model, tmodel


@needs_reference
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_shapes_dtypes_match(name):
    model, tmodel = _pair(name, np.float32)
    ours, theirs = model.state_dict(), tmodel.state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k].shape == tuple(theirs[k].shape), k
        assert ours[k].dtype == theirs[k].numpy().dtype, k
    assert sum(p.size for p in model.parameters()) == sum(p.numel() for p in tmodel.parameters())


def _randomise_stats(tmodel, gen):
    for m in tmodel.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@needs_reference
@pytest.mark.parametrize("dtype,tol", [(np.float32, 3e-3), (np.float64, 1e-9)])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_gradients_match_torch(name, dtype, tol, train):
    model, tmodel = _pair(name, dtype)
    gen = torch.Generator().manual_seed(1)
    _randomise_stats(tmodel, gen)
    # torch -> cnnext
    model.load_state_dict({k: v for k, v in tmodel.state_dict().items()})
    model.train(train)
    tmodel.train(train)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4,) + models.input_shape(name)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    out = model(x)
    tout = tmodel(tx)
    scale = max(1.0, float(np.abs(tout.detach().numpy()).max()))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=tol, atol=tol * scale)
    g = rng.standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    gx = model.backward(g)
    tout.backward(torch.from_numpy(g))
    gscale = max(1.0, float(tx.grad.abs().max()))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol * gscale)
    tparams = dict(tmodel.named_parameters())
    for pname, p in model.named_parameters():
        want = tparams[pname].grad.numpy()
        np.testing.assert_allclose(p.grad, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())),
                                   err_msg=pname)
    # running statistics updated the same way in train mode; cnnext -> torch moves them back
    theirs = tmodel.state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v, theirs[k].numpy(), rtol=tol, atol=tol, err_msg=k)
    fresh = tm.build(name).to(tout.dtype)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})


@needs_reference
@pytest.mark.parametrize("name", NAMES)
def test_no_grad_inference_matches_eval(name):
    model = models.build(name, rng=3).eval()
    x = np.random.default_rng(4).standard_normal((2,) + models.input_shape(name)).astype(np.float32)
    want = model(x)
    with cnnext.no_grad():
        got = model(x)
    np.testing.assert_array_equal(got, want)


def test_builders_validate_arguments():
    with pytest.raises(ValueError, match="cnnext.models.build: name must be one of 'lenet5'"):
        models.build("vgg")
    with pytest.raises(ValueError, match="ResNet20: num_classes must be >= 1"):
        models.resnet20(num_classes=0)
    with pytest.raises(ValueError, match="CifarNet: dtype must be np.float32 or np.float64"):
        models.cifarnet(dtype=np.int32)
    assert models.lenet5(num_classes=3, rng=0)(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 3)
    assert models.input_shape("mobilenet") == (3, 32, 32)
