"""Model files are written atomically and read defensively (issue 6, item 6).

Complements tests/training/test_serialization.py (round trips, hand-written bad contents) with:
- interrupted saves: the writer fails half-way (an exception, or the process dying outright) and the
  previous good file is intact; no temporary file is left behind after an exception;
- concurrent saves and loads of one path: a reader only ever sees a complete model;
- every truncation and many byte flips of a good file: a ValueError (or, for a flip in bytes that
  carry no data, the identical model), never another exception;
- pickle payloads (object arrays inside the .npz, a bare pickle file) are refused and never run: a
  payload whose unpickling would create a marker file does not create it (and does, as a control,
  when numpy is allowed to unpickle it);
- headers with a wrong, missing or odd format version, and headers describing absurd layer sizes.
"""
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cnnext
from cnnext import nn
from helpers import child_env


def _model(seed=0):
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=seed), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3, rng=seed + 1))


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def _leftovers(directory, keep):
    return sorted(set(os.listdir(directory)) - set(keep))


# ------------------------------------------------------------------------------------ atomic writes

@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "ctrl_c"])
def test_interrupted_save_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "model.npz"
    good = _model(0)
    cnnext.save(good, path)
    before = path.read_bytes()
    real = np.savez_compressed

    def half_then_fail(file, **arrays):
        buf = io.BytesIO()
        real(buf, **arrays)
        file.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the archive reaches the disk
        raise exc

    monkeypatch.setattr(np, "savez_compressed", half_then_fail)
    with pytest.raises(type(exc)):
        cnnext.save(_model(1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _same_state(cnnext.load(path), good)
    assert _leftovers(tmp_path, ["model.npz"]) == []


def test_failed_rename_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    cnnext.save(_model(0), path)
    before = path.read_bytes()

    def no_replace(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(PermissionError):
        cnnext.save(_model(1), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, ["model.npz"]) == []


def test_save_onto_a_directory_fails_cleanly(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match=r"cnnext.save: path '.*d' is a directory"):
        cnnext.save(_model(), tmp_path / "d")
    assert _leftovers(tmp_path, ["d"]) == []


def test_process_killed_mid_save_leaves_the_previous_file_intact(tmp_path):
    """The process dies (os._exit) half-way through writing: the target is still the old model."""
    path = tmp_path / "model.npz"
    cnnext.save(_model(0), path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import io, os, sys
        import numpy as np
        import cnnext
        from cnnext import nn
        real = np.savez_compressed
        def die_half_way(file, **arrays):
            buf = io.BytesIO()
            real(buf, **arrays)
            file.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            file.flush()
            os._exit(3)
        np.savez_compressed = die_half_way
        cnnext.save(nn.Sequential(nn.Linear(5, 5, rng=1)), {str(path)!r})
    """)
    # cwd: "python -c" puts the working directory first on sys.path; the repository root would
    # shadow the installed cnnext with the uncompiled source tree
    proc = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr.decode()
    assert path.read_bytes() == before
    assert _same_state(cnnext.load(path), _model(0))
    # a dead process cannot clean up: at most its hidden temporary file is left, never a bad model
    left = _leftovers(tmp_path, ["model.npz"])
    assert all(name.startswith(".cnnext-") and name.endswith(".tmp") for name in left), left


def test_concurrent_saves_and_loads_never_see_a_partial_file(tmp_path):
    path = tmp_path / "model.npz"
    models = [_model(0), _model(1)]
    cnnext.save(models[0], path)
    errors, loads = [], [0]
    stop = threading.Event()

    def writer(m):
        try:
            for _ in range(25):
                cnnext.save(m, path)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        while not stop.is_set():
            try:
                got = cnnext.load(path)
            except Exception as exc:
                errors.append(exc)
                return
            if not any(_same_state(got, m) for m in models):
                errors.append(AssertionError("loaded a model that was never saved"))
                return
            loads[0] += 1

    writers = [threading.Thread(target=writer, args=(m,)) for m in models]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    assert loads[0] > 0
    assert _leftovers(tmp_path, ["model.npz"]) == []


def test_saved_file_permissions_follow_the_umask(tmp_path):
    if sys.platform == "win32":
        pytest.skip("POSIX permissions")
    old = os.umask(0o027)
    try:
        cnnext.save(_model(), tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------------ corrupt files

@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "model.npz"
    cnnext.save(_model(0), path, metadata={"note": "good"})
    return path.read_bytes()


def _load_bytes(tmp_path, data, name="x.npz"):
    p = tmp_path / name
    p.write_bytes(data)
    return cnnext.load(p)


def test_every_truncation_is_a_value_error(tmp_path, good_file):
    n = len(good_file)
    cuts = sorted(set(range(0, n, max(1, n // 300))) | set(range(max(0, n - 64), n)) | {1, 2, 3, 4, 5})
    for cut in cuts:
        with pytest.raises(ValueError, match="cnnext.load: .* is not a valid cnnext model file"):
            _load_bytes(tmp_path, good_file[:cut])


def test_byte_flips_are_a_value_error_or_change_nothing(tmp_path, good_file):
    """A flipped byte either makes load raise ValueError or (in bytes carrying no data, such as a
    timestamp) loads exactly the saved model: never another exception, never different weights."""
    rng = np.random.default_rng(0)
    n = len(good_file)
    positions = sorted(set(rng.integers(0, n, 400).tolist()) | set(range(0, 64)) | set(range(n - 64, n)))
    outcomes = {"ValueError": 0, "identical": 0}
    for pos in positions:
        data = bytearray(good_file)
        data[pos] ^= 0xFF if pos % 2 else 0x01
        try:
            m = _load_bytes(tmp_path, bytes(data))
        except ValueError as exc:
            assert str(exc).startswith("cnnext.load: "), str(exc)
            outcomes["ValueError"] += 1
            continue
        assert _same_state(m, _model(0)), f"flipping byte {pos} changed the weights silently"
        outcomes["identical"] += 1
    assert outcomes["ValueError"] > len(positions) // 2


def test_garbage_and_empty_files(tmp_path):
    for data in (b"", b"PK", b"PK\x03\x04", b"PK\x03\x04" + bytes(200), os.urandom(1000),
                 b"\x93NUMPY" + bytes(100), b"PK\x05\x06" + bytes(18)):
        with pytest.raises(ValueError, match="not a valid cnnext model file"):
            _load_bytes(tmp_path, data)


# ------------------------------------------------------------------------------------ pickles

class _Marker:
    """Unpickling this creates the marker file (that is what a malicious payload would do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _evil_npz(path, marker, where):
    evil = np.array([_Marker(marker)], dtype=object)
    header = {"format": "cnnext.model", "format_version": 1, "cnnext_version": "x", "dtype": "float32",
              "architecture": {"type": "Linear", "config": {"in_features": 3, "out_features": 2, "bias": True}},
              "metadata": {}}
    arrays = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32),
              "__cnnext__": np.array(json.dumps(header))}
    arrays[where] = evil
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # np.savez pickles object arrays


@pytest.mark.parametrize("where", ["weight", "bias", "__cnnext__", "extra"])
def test_pickle_payload_inside_the_npz_is_refused_and_never_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    _evil_npz(path, marker, where)
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)
    assert not marker.exists(), "loading ran the pickle payload"
    # control: the payload is live; numpy allowed to unpickle runs it
    with np.load(path, allow_pickle=True) as z:
        z[where]
    assert marker.exists()


def test_bare_pickle_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps({"model": _Marker(marker)}))
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)
    assert not marker.exists()
    # a pickle stored inside a zip under an .npy name is refused as well
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__cnnext__.npy", pickle.dumps(_Marker(marker)))
        z.writestr("weight.npy", pickle.dumps(_Marker(marker)))
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ headers

def _with_header(tmp_path, arrays=None, **header):
    h = {"format": "cnnext.model", "format_version": 1, "cnnext_version": "x", "dtype": "float32",
         "architecture": {"type": "Linear", "config": {"in_features": 3, "out_features": 2, "bias": True}},
         "metadata": {}}
    h.update(header)
    h = {k: v for k, v in h.items() if v is not _MISSING}
    arrays = arrays if arrays is not None else {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32)}
    path = tmp_path / "h.npz"
    with open(path, "wb") as f:
        np.savez(f, __cnnext__=np.array(json.dumps(h)), **arrays)
    return path


_MISSING = object()


@pytest.mark.parametrize("version", [0, 2, 999, -1, "1", 1.0, None, [1], _MISSING],
                         ids=["0", "2", "999", "-1", "str", "float", "null", "list", "missing"])
def test_wrong_or_missing_format_version(tmp_path, version):
    path = _with_header(tmp_path, format_version=version)
    if version == 1.0:  # JSON has no int/float distinction worth trusting: 1.0 == 1
        cnnext.load(path)
        return
    with pytest.raises(ValueError, match="format_version"):
        cnnext.load(path)


@pytest.mark.parametrize("arch", [
    {"type": "Linear", "config": {"in_features": 10**6, "out_features": 10**6, "bias": True}},
    {"type": "Conv2d", "config": {"in_channels": 4096, "out_channels": 4096, "kernel_size": [512, 512]}},
    {"type": "Sequential", "children": [["0", {"type": "Linear", "config": {"in_features": 2**40, "out_features": 1}}]]},
], ids=["linear_1e12", "conv_huge", "nested_2_40"])
def test_header_with_absurd_sizes_is_a_value_error_not_an_allocation(tmp_path, arch):
    """A corrupt or hostile header must not make load allocate (or fail with MemoryError)."""
    path = _with_header(tmp_path, architecture=arch)
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)


def test_deeply_nested_header_is_a_value_error(tmp_path):
    depth = 5000  # deeper than Python's recursion limit: json and the builder must not crash
    arch = '{"type": "Sequential", "children": [["m", ' * depth + '{"type": "ReLU", "config": {}}' + "]]}" * depth
    text = '{"format": "cnnext.model", "format_version": 1, "dtype": "float32", "architecture": ' + arch + "}"
    path = tmp_path / "deep.npz"
    with open(path, "wb") as f:
        np.savez(f, __cnnext__=np.array(text))
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)


@pytest.mark.parametrize("arch", [["Linear"], {"type": ["Linear"]}, {"type": {"a": 1}}, {"type": None}, {"type": 3},
                                  {"type": "Linear", "config": [1, 2]}, {"type": "Linear", "config": {"in_features": [3]}},
                                  {"type": "Conv2d", "config": {"in_channels": 1, "out_channels": 1, "kernel_size": {"h": 1}}},
                                  {"type": "Sequential", "children": {"0": {"type": "ReLU"}}},
                                  {"type": "Sequential", "children": [["0", "ReLU"]]},
                                  {"type": "Sequential", "children": [[0, {"type": "ReLU"}]]},
                                  {"type": "Sequential", "children": [["a.b", {"type": "ReLU"}]]},
                                  {"type": "Dropout", "config": {"p": "nan"}}, {"type": "Dropout", "config": {"p": 1e400}},
                                  None, "Linear", 5], ids=lambda a: json.dumps(a)[:40])
def test_malformed_architectures_are_value_errors(tmp_path, arch):
    path = _with_header(tmp_path, architecture=arch)
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)


@pytest.mark.parametrize("header", ["[]", "null", "3", '"text"', '{"format": "cnnext.model"}', "{}", "",
                                    '{"format": "cnnext.model", "format_version": 1, "dtype": "float32", '
                                    '"architecture": {"type": "ReLU"}, "metadata": [1]}'])
def test_malformed_headers_are_value_errors(tmp_path, header):
    path = tmp_path / "h.npz"
    with open(path, "wb") as f:
        np.savez(f, __cnnext__=np.array(header))
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)


@pytest.mark.parametrize("count", [2**40, 2**62 // 4])
def test_member_declaring_a_huge_array_is_a_value_error(tmp_path, count):
    """An .npy header inside the archive that claims far more data than the member holds."""
    path = tmp_path / "huge.npz"
    hdr = {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, hdr)
    member.write(bytes(64))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("weight.npy", member.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps({"format": "cnnext.model", "format_version": 1, "dtype": "float32",
                                          "architecture": {"type": "ReLU", "config": {}}})))
        z.writestr("__cnnext__.npy", buf.getvalue())
    with pytest.raises(ValueError, match="not a valid cnnext model file"):
        cnnext.load(path)
