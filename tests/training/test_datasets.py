"""cnnext.datasets: the embedded digits, the IDX reader, the checksummed download, minibatches.

IDX files are generated here by a writer of the tests' own; downloads are served from a local
http.server bound to 127.0.0.1.
"""
import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np
import pytest

from cnnext.datasets import DataLoader, iterate_minibatches, load_digits, load_mnist, read_idx

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr, code=None):
    """Serialise an array in the IDX format (big-endian header and data)."""
    arr = np.asarray(arr)
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = IDX_CODES[np.dtype(be)] if code is None else code
    head = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(be).tobytes()


def write_mnist_dir(directory, n_train=30, n_test=12, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for kind, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, arr in ((f"{stem}-images-idx3-ubyte", images), (f"{stem}-labels-idx1-ubyte", labels)):
            raw = idx_bytes(arr)
            if gz:
                (directory / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
        data[kind] = (images, labels)
    return data


# -- digits ---------------------------------------------------------------------------------
def test_digits_shapes_range_and_split():
    (Xtr, ytr), (Xte, yte) = load_digits()
    assert Xtr.shape == (1437, 1, 8, 8) and Xte.shape == (360, 1, 8, 8)
    assert Xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert Xtr.min() == 0.0 and Xtr.max() == 1.0
    # the source pixels are integers 0..16
    np.testing.assert_array_equal(Xtr * 16, np.round(Xtr * 16))
    # class counts of the UCI 8x8 test set (1797 images), as published with the data
    counts = np.bincount(np.concatenate([ytr, yte]), minlength=10)
    np.testing.assert_array_equal(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    assert len(ytr) + len(yte) == 1797
    again = load_digits()
    np.testing.assert_array_equal(again.train.X, Xtr)
    np.testing.assert_array_equal(again.test.y, yte)
    small = load_digits(test_size=100)
    assert small.test.X.shape[0] == 100 and small.train.X.shape[0] == 1697
    with pytest.raises(ValueError, match="test_size must be in"):
        load_digits(test_size=0)


def test_digits_file_is_packaged_with_its_license():
    import cnnext.datasets as ds

    data_dir = os.path.join(os.path.dirname(ds.__file__), "data")
    text = open(os.path.join(data_dir, "DIGITS_LICENSE.txt"), encoding="utf-8").read()
    assert "CC BY 4.0" in text and "Alpaydin" in text
    with np.load(os.path.join(data_dir, "digits.npz"), allow_pickle=False) as npz:
        assert npz["images"].dtype == np.uint8 and npz["images"].max() == 16
        assert npz["labels"].dtype == np.uint8


# -- IDX reader -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_all_types(tmp_path, dtype, gz):
    arr = (np.random.default_rng(0).standard_normal((3, 4, 2)) * 50).astype(dtype)
    raw = idx_bytes(arr)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(p)
    assert out.shape == (3, 4, 2) and out.dtype.kind == np.dtype(dtype).kind
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b"\x01" + b[1:], "invalid IDX magic number"),
    (lambda b: b[:2] + b"\x07" + b[3:], "invalid IDX magic number"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "longer than its header says"),
    (lambda b: b[:10], "truncated inside its header"),
    (lambda b: b[:2], "too short"),
    (lambda b: b[:3] + b"\x00", "0 dimensions"),
])
def test_read_idx_rejects_corrupt_files(tmp_path, mutate, match):
    raw = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    p = tmp_path / "bad"
    p.write_bytes(mutate(raw))
    with pytest.raises(ValueError, match=match):
        read_idx(p)


def test_read_idx_rejects_corrupt_gzip_and_huge_headers(tmp_path):
    raw = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    p = tmp_path / "bad.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(p)
    p.write_bytes(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 2**20, 2**12, 2**12))
    with pytest.raises(ValueError, match="over"):
        read_idx(p)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_directory(tmp_path, gz):
    data = write_mnist_dir(tmp_path, gz=gz)
    X, y = load_mnist(tmp_path, "train")
    assert X.shape == (30, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X[:, 0] * 255, data["train"][0], atol=1e-4)
    np.testing.assert_array_equal(y, data["train"][1])
    Xt, yt = load_mnist(tmp_path, kind="test")
    assert Xt.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(yt, data["test"][1])


def test_load_mnist_consistency_errors(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(29, np.uint8))))
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_mnist(tmp_path, "train")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(30, 12, np.uint8))))
    with pytest.raises(ValueError, match="labels must be 0..9"):
        load_mnist(tmp_path, "train")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((30, 784), np.uint8))))
    with pytest.raises(ValueError, match="must hold uint8 images of shape"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="kind must be 'train' or 'test'"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_mnist(tmp_path / "empty", "test")


# -- download from a local server --------------------------------------------------------------
@pytest.fixture
def local_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/files"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def translate_path(self, path):  # serve /files/NAME from the directory
        return super().translate_path(path.replace("/files/", "/", 1))


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_checksums_and_caches(local_server, tmp_path):
    served, url = local_server
    data = write_mnist_dir(served, n_train=20, n_test=8)
    sums = {p.name: _sha(p) for p in served.iterdir()}
    cache = tmp_path / "cache"
    X, y = load_mnist(cache, "test", download=True, url=url, checksums=sums)
    np.testing.assert_array_equal(y, data["test"][1])
    assert sorted(os.listdir(cache)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # a second call uses the cache, even with the server's files gone
    for p in served.iterdir():
        p.unlink()
    X2, _ = load_mnist(cache, "test", download=True, url=url, checksums=sums)
    np.testing.assert_array_equal(X2, X)


def test_download_checksum_mismatch_is_an_error_and_keeps_nothing(local_server, tmp_path):
    served, url = local_server
    write_mnist_dir(served, n_train=5, n_test=5)
    sums = {p.name: _sha(p) for p in served.iterdir()}
    sums["train-images-idx3-ubyte.gz"] = "0" * 64
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch .*train-images-idx3-ubyte.gz"):
        load_mnist(cache, "train", download=True, url=url, checksums=sums)
    assert not any(p.name.startswith("train-images") or p.suffix == ".part" for p in cache.iterdir())
    # the published MNIST checksums are used by default: generated files never match them
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_mnist(tmp_path / "cache2", "test", download=True, url=url)


def test_download_missing_file_and_bad_scheme(local_server, tmp_path):
    _, url = local_server
    with pytest.raises(OSError, match=r"cannot download http://127.0.0.1:\d+/files/train-images.*404"):
        load_mnist(tmp_path / "c", "train", download=True, url=url, checksums={})
    with pytest.raises(ValueError, match="url must be http"):
        load_mnist(tmp_path / "c", "train", download=True, url="file:///etc/", checksums={})


# -- minibatches ---------------------------------------------------------------------------------
def test_iterate_minibatches_covers_everything_with_partial_last_batch():
    X = np.arange(23)[:, None] * np.ones((1, 3))
    y = np.arange(23)
    batches = list(iterate_minibatches(X, y, 5, shuffle=True, seed=3))
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen) == list(range(23)) and not np.array_equal(seen, np.arange(23))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)
    again = np.concatenate([b[1] for b in iterate_minibatches(X, y, 5, shuffle=True, seed=3)])
    np.testing.assert_array_equal(seen, again)
    ordered = np.concatenate([b[1] for b in iterate_minibatches(X, y, 5, shuffle=False)])
    np.testing.assert_array_equal(ordered, np.arange(23))
    assert [len(b) for b in iterate_minibatches(X, None, 10, shuffle=False)] == [10, 10, 3]


def test_dataloader_epochs_reshuffle_reproducibly():
    X, y = np.zeros((10, 2)), np.arange(10)
    a = DataLoader(X, y, batch_size=4, shuffle=True, seed=0)
    b = DataLoader(X, y, batch_size=4, shuffle=True, seed=0)
    e1 = [yb.tolist() for _, yb in a]
    e2 = [yb.tolist() for _, yb in a]
    assert len(a) == 3 and [len(v) for v in e1] == [4, 4, 2]
    assert e1 != e2
    assert [yb.tolist() for _, yb in b] == e1 and [yb.tolist() for _, yb in b] == e2
    d = DataLoader(X, y, batch_size=4, drop_last=True)
    assert len(d) == 2 and [yb.tolist() for _, yb in d] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_minibatch_argument_errors():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DataLoader(np.zeros((3, 1)), np.zeros(3), batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        list(iterate_minibatches(np.zeros((3, 1)), None, 2.5))
    with pytest.raises(ValueError, match="y must have one entry per sample"):
        DataLoader(np.zeros((3, 1)), np.zeros(4))
