"""cnnext.save / cnnext.load: exact round trips, atomic writes, and refusal of bad files."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

import cnnext
from cnnext import nn


def model(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=1, padding=1, dtype=dtype, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, (3, 1), padding="same", groups=2, bias=False, dtype=dtype, rng=rng), nn.Tanh(),
        nn.AvgPool2d(2, count_include_pad=False), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 5, dtype=dtype, rng=rng),
        nn.Sigmoid(),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    m = model(dtype)
    path = tmp_path / "m.npz"
    cnnext.save(m, path, metadata={"dataset": "digits", "acc": 0.5})
    m2, meta = cnnext.load(path, return_metadata=True)
    assert meta == {"dataset": "digits", "acc": 0.5}
    assert repr(m2) == repr(m)
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and v1.dtype == v2.dtype == dtype
        np.testing.assert_array_equal(v1, v2)
    x = np.random.default_rng(1).random((3, 1, 8, 8)).astype(dtype)
    m.eval()
    m2.eval()
    np.testing.assert_array_equal(m(x), m2(x))
    # the file is an ordinary npz: weights readable without cnnext and without pickle
    with np.load(path, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["0.weight"], m[0].weight.data)
        header = json.loads(str(npz["__cnnext__"][()]))
    assert header["format_version"] == cnnext.serialization.FORMAT_VERSION
    assert header["architecture"]["type"] == "Sequential"


def test_single_layer_round_trip(tmp_path):
    lin = nn.Linear(3, 2, bias=False, rng=0)
    cnnext.save(lin, tmp_path / "lin.npz")
    back = cnnext.load(tmp_path / "lin.npz")
    assert isinstance(back, nn.Linear) and back.bias is None
    np.testing.assert_array_equal(back.weight.data, lin.weight.data)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.npz"
    cnnext.save(model(seed=0), path)
    original = path.read_bytes()

    class Custom(nn.Module):
        pass

    with pytest.raises(TypeError, match="cannot describe a Custom module"):
        cnnext.save(nn.Sequential(nn.ReLU(), Custom()), path)
    with pytest.raises(TypeError, match="JSON"):
        cnnext.save(model(), path, metadata={"x": object()})
    assert path.read_bytes() == original  # failed saves left the old file intact
    cnnext.save(model(seed=1), path)  # overwrite
    assert path.read_bytes() != original
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def _write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _header(**changes):
    h = {"format": "cnnext.model", "format_version": 1, "cnnext_version": "x", "dtype": "float32",
         "architecture": {"type": "Linear", "config": {"in_features": 3, "out_features": 2, "bias": True}},
         "metadata": {}}
    h.update(changes)
    return np.array(json.dumps(h))


GOOD = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}


def test_hand_written_valid_file_loads(tmp_path):
    _write_npz(tmp_path / "ok.npz", {**GOOD, "__cnnext__": _header()})
    assert isinstance(cnnext.load(tmp_path / "ok.npz"), nn.Linear)


@pytest.mark.parametrize("arrays,match", [
    ({**GOOD, "__cnnext__": _header(format_version=2)}, "format_version 2 is not supported"),
    ({**GOOD, "__cnnext__": _header(format="other")}, "'format' must be 'cnnext.model'"),
    ({**GOOD}, "no '__cnnext__' entry"),
    ({"weight": GOOD["weight"], "__cnnext__": _header()}, r"missing \['bias'\]"),
    ({**GOOD, "extra": np.zeros(1), "__cnnext__": _header()}, r"unexpected \['extra'\]"),
    ({"weight": np.zeros((3, 2), np.float32), "bias": GOOD["bias"], "__cnnext__": _header()},
     r"'weight' has shape \(3, 2\), expected \(2, 3\)"),
    ({"weight": np.zeros((2, 3), np.int64), "bias": GOOD["bias"], "__cnnext__": _header()},
     "'weight' has dtype int64"),
    ({**GOOD, "__cnnext__": _header(architecture={"type": "os.system", "config": {}})},
     "unknown module type 'os.system'"),
    ({**GOOD, "__cnnext__": _header(architecture={"type": "Linear", "config": {"in_features": -3}})},
     "cannot build Linear"),
    ({**GOOD, "__cnnext__": _header(dtype="float16")}, "dtype must be 'float32' or 'float64'"),
    ({**GOOD, "__cnnext__": np.array("{not json")}, "not valid JSON"),
])
def test_rejects_bad_contents(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    _write_npz(path, arrays)
    with pytest.raises(ValueError, match=match):
        cnnext.load(path)


def test_rejects_pickled_object_arrays(tmp_path):
    path = tmp_path / "pickle.npz"
    evil = np.array([{"a": 1}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, weight=evil, bias=GOOD["bias"], __cnnext__=_header())
    with pytest.raises(ValueError, match="not a valid cnnext model file.*(pickle|[Oo]bject)"):
        cnnext.load(path)


def test_rejects_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.npz"
    cnnext.save(model(), good)
    data = good.read_bytes()
    for n in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"trunc{n}.npz"
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match="not a valid cnnext model file"):
            cnnext.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ValueError, match="not an .npz"):
        cnnext.load(junk)
    npy = tmp_path / "arr.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz"):
        cnnext.load(npy)
    # a corrupted member (flipped bytes inside the compressed data) is caught too
    corrupt = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo("0.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + 5
    for i in range(start, start + 20):
        corrupt[i] ^= 0xFF
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(tmp_path / "corrupt.npz")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        cnnext.load(tmp_path / "absent.npz")
