"""cnnext.save / cnnext.load of every module cnnext ships, nested to any depth: the zoo models
(with BatchNorm buffers), ModuleList/ModuleDict containers, adaptive pooling (issue 14 item 2)."""
import json
import zipfile

import numpy as np
import pytest

import cnnext
from cnnext import models, nn


def _perturb(model, rng):
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    for name, b in model.named_buffers():
        if b.dtype.kind == "f":
            b[...] = rng.random(b.shape) + 0.5
        else:
            b[...] = 7


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zoo_models_round_trip(tmp_path, name, dtype):
    rng = np.random.default_rng(0)
    model = models.build(name, num_classes=7, dtype=dtype, rng=1)
    _perturb(model, rng)
    path = tmp_path / f"{name}.npz"
    cnnext.save(model, path, metadata={"model": name})
    loaded, meta = cnnext.load(path, return_metadata=True)
    assert type(loaded) is type(model) and meta == {"model": name}
    want, got = model.state_dict(), loaded.state_dict()
    assert list(want) == list(got)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    x = rng.standard_normal((2,) + models.input_shape(name)).astype(dtype)
    np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))


def test_nested_containers_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    inner = nn.ModuleDict({"bn": nn.BatchNorm1d(4), "lin": nn.Linear(4, 4, rng=rng)})
    model = nn.Sequential(nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(4))),
                          nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                          nn.ModuleList([nn.Identity(), inner]))
    _perturb(model, rng)
    cnnext.save(model, tmp_path / "m.npz")
    loaded = cnnext.load(tmp_path / "m.npz")
    assert repr(loaded) == repr(model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)


def test_custom_module_is_refused_with_advice(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="cannot describe a Mine module.*state_dict"):
        cnnext.save(nn.Sequential(Mine()), tmp_path / "x.npz")


def _rewrite_header(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "__cnnext__.npy":
                arr = np.lib.format.read_array(__import__("io").BytesIO(data))
                meta = edit(json.loads(str(arr[()])))
                buf = __import__("io").BytesIO()
                np.lib.format.write_array(buf, np.array(json.dumps(meta)))
                data = buf.getvalue()
            zout.writestr(info, data)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["architecture"]["config"].update(num_classes=10**9) or m, "needs .* parameter values"),
    (lambda m: m["architecture"]["config"].update(rng=3) or m, "may not set rng or dtype"),
    (lambda m: m["architecture"].update(type="Evil") or m, "unknown module type 'Evil'"),
])
def test_crafted_zoo_headers_are_refused(tmp_path, edit, match):
    cnnext.save(models.resnet20(rng=0), tmp_path / "r.npz")
    _rewrite_header(tmp_path / "r.npz", tmp_path / "bad.npz", edit)
    with pytest.raises(ValueError, match=match):
        cnnext.load(tmp_path / "bad.npz")


def test_buffer_with_float_dtype_is_refused(tmp_path):
    model = nn.Sequential(nn.BatchNorm2d(2))
    cnnext.save(model, tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "b.npz") as zin, zipfile.ZipFile(tmp_path / "bad.npz", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "0.num_batches_tracked.npy":
                buf = __import__("io").BytesIO()
                np.lib.format.write_array(buf, np.array(1.5))
                data = buf.getvalue()
            zout.writestr(info, data)
    with pytest.raises(ValueError, match="buffer '0.num_batches_tracked' has dtype float64"):
        cnnext.load(tmp_path / "bad.npz")
