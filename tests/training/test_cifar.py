"""cnnext.datasets.load_cifar10 on small files written here in the official binary format.

A record is 1 label byte + 3072 pixel bytes (the 32x32 red plane row by row, then green, then
blue); the official batches hold 10000 records each, these fakes only a few. Expected values are
computed from the bytes the test writes (pixel / 255 in float32), never from the loader.
Downloads come from a local http.server or a monkeypatched ``urlopen``.
"""
import functools
import hashlib
import http.client
import http.server
import io
import os
import tarfile
import threading
import urllib.request

import numpy as np
import pytest

from cnnext.datasets import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, load_cifar10
from cnnext.datasets import _cifar

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = "test_batch.bin"


def pixel(k, ch, r, c, salt):
    """The byte the fake writes at image k (of its file), channel ch, row r, column c."""
    return (salt * 31 + k * 7 + ch * 101 + r * 32 + c) % 256


def batch_bytes(labels, salt):
    out = bytearray()
    for k, label in enumerate(labels):
        out.append(label)
        out += bytes(pixel(k, ch, r, c, salt) for ch in range(3) for r in range(32) for c in range(32))
    return bytes(out)


def fake_batches(n_per_batch=(3, 2, 4, 1, 2), n_test=3):
    """{file name: (bytes, labels, salt)} for the five training batches and the test batch."""
    files = {}
    for i, (name, n) in enumerate(zip(TRAIN + [TEST], list(n_per_batch) + [n_test])):
        labels = [(i * 3 + k * 5) % 10 for k in range(n)]
        files[name] = (batch_bytes(labels, salt=i), labels, i)
    return files


def expected(files, names):
    X, y = [], []
    for name in names:
        _, labels, salt = files[name]
        for k, label in enumerate(labels):
            img = np.array([[[pixel(k, ch, r, c, salt) for c in range(32)] for r in range(32)]
                            for ch in range(3)], dtype=np.float32)
            X.append(img / np.float32(255))
            y.append(label)
    return np.stack(X), np.array(y)


def write_dir(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, (raw, _, _) in files.items():
        (directory / name).write_bytes(raw)


def write_archive(path, files, folder="cifar-10-batches-bin", extra=True):
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra:
            add("batches.meta.txt", "\n".join(CIFAR10_CLASSES).encode() + b"\n")
        for name, (raw, _, _) in files.items():
            add(name, raw)
        if extra:
            add("readme.html", b"<html></html>")
    return path


@pytest.fixture(scope="module")
def files():
    return fake_batches()


def test_hand_computed_values(tmp_path):
    """A two-record test batch whose pixels are chosen by hand."""
    rec0 = bytes([3]) + bytes([255]) + bytes(1023) + bytes([51]) * 1024 + bytes(1024)
    px = bytearray(3072)
    px[5] = 128  # red (0, 5)
    px[1024 + 32 * 2 + 1] = 1  # green (2, 1)
    px[2048 + 32 * 31 + 31] = 254  # blue (31, 31)
    (tmp_path / TEST).write_bytes(rec0 + bytes([9]) + bytes(px))
    X, y = load_cifar10(tmp_path, kind="test")
    assert X.shape == (2, 3, 32, 32) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.dtype == np.int64 and y.tolist() == [3, 9]
    assert X[0, 0, 0, 0] == 1.0 and X[0, 0, 0, 1] == 0.0 and X[0, 0].sum() == 1.0
    assert (X[0, 1] == np.float32(0.2)).all() and not X[0, 2].any()  # 51 / 255 = 0.2
    assert X[1, 0, 0, 5] == np.float32(128 / 255) and X[1, 1, 2, 1] == np.float32(1 / 255)
    assert X[1, 2, 31, 31] == np.float32(254 / 255)
    assert np.count_nonzero(X[1]) == 3
    assert 0.0 <= X.min() and X.max() <= 1.0


@pytest.mark.parametrize("layout", ["flat", "folder", "archive_in_dir", "archive_path"])
def test_train_and_test_from_every_layout(tmp_path, files, layout):
    if layout == "flat":
        write_dir(tmp_path, files)
        path = tmp_path
    elif layout == "folder":
        write_dir(tmp_path / "cifar-10-batches-bin", files)
        path = tmp_path
    else:
        archive = write_archive(tmp_path / "cifar-10-binary.tar.gz", files)
        path = tmp_path if layout == "archive_in_dir" else archive
    X, y = load_cifar10(path)  # kind='train' by default: the five batches in order
    Xe, ye = expected(files, TRAIN)
    assert X.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(X, Xe)
    np.testing.assert_array_equal(y, ye)
    Xt, yt = load_cifar10(path, kind="test")
    Xe, ye = expected(files, [TEST])
    np.testing.assert_array_equal(Xt, Xe)
    np.testing.assert_array_equal(yt, ye)


def test_default_directory_from_cnnext_data(tmp_path, files, monkeypatch):
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path))
    write_dir(tmp_path / "cifar-10" / "cifar-10-batches-bin", files)
    _, y = load_cifar10(kind="test")
    assert y.tolist() == files[TEST][1]


# ------------------------------------------------------------------------------------ bad files

def _one_bad_test_batch(tmp_path, data):
    (tmp_path / TEST).write_bytes(data)
    return lambda: load_cifar10(tmp_path, kind="test")


@pytest.mark.parametrize("data,match", [
    (bytes(3073 * 2 - 1), r"holds 6145 bytes, not a whole number of 3073-byte records"),
    (b"", "holds 0 bytes"),
    (bytes(3074 * 3), "looks like the CIFAR-100 binary version"),
    (b"\x80\x04\x95" + bytes(3072), "starts like a pickle"),
    (bytes(3073) + bytes([10]) + bytes(3072), "record 1 has label 10, labels must be 0..9"),
    (b"\x80" + bytes(3072), r"label 128.*pickled 'python version'"),
], ids=["truncated", "empty", "cifar100", "pickle_size", "label_10", "pickle_label"])
def test_truncated_or_wrong_batch_files(tmp_path, data, match):
    load = _one_bad_test_batch(tmp_path, data)
    with pytest.raises(ValueError, match=f"load_cifar10: .*test_batch.bin.*{match}"):
        load()


def test_oversized_batch_is_refused_before_reading(tmp_path):
    with open(tmp_path / TEST, "wb") as f:
        f.truncate(3073 * 10001)  # sparse: one record more than a CIFAR-10 batch holds
    with pytest.raises(ValueError, match="holds 10001 records; a CIFAR-10 batch has at most 10000"):
        load_cifar10(tmp_path, kind="test")


def test_missing_files_and_the_python_version(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(tmp_path / "nothing")
    partial = {k: v for k, v in files.items() if k != "data_batch_3.bin"}
    write_dir(tmp_path / "p", partial)
    with pytest.raises(FileNotFoundError, match=r"lacks \['data_batch_3.bin'\]"):
        load_cifar10(tmp_path / "p")
    assert load_cifar10(tmp_path / "p", kind="test").y.tolist() == files[TEST][1]
    (tmp_path / "py").mkdir()
    (tmp_path / "py" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(FileNotFoundError, match="pickled 'python version', which cnnext does not read"):
        load_cifar10(tmp_path / "py")


def test_bad_archives(tmp_path, files):
    good = write_archive(tmp_path / "good.tar.gz", files).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    for n in (10, len(good) // 3, len(good) - 20):
        cut.write_bytes(good[:n])
        with pytest.raises(ValueError, match="not a readable cifar-10-binary.tar.gz archive: it is truncated"):
            load_cifar10(cut)
    cut.write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="not a readable"):
        load_cifar10(cut)
    flipped = bytearray(good)
    flipped[-8] ^= 0x01  # the gzip trailer's CRC-32: every member reads fine, the check fails
    cut.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="not a readable .*CRC"):
        load_cifar10(cut, kind="test")
    only_test = write_archive(tmp_path / "t.tar.gz", {TEST: files[TEST]})
    with pytest.raises(ValueError, match=r"lacks \['data_batch_1.bin', .*'data_batch_5.bin'\]"):
        load_cifar10(only_test)
    bad = dict(files)
    bad["data_batch_2.bin"] = (files["data_batch_2.bin"][0][:-1],) + files["data_batch_2.bin"][1:]
    with pytest.raises(ValueError, match="data_batch_2.bin in .* holds 6145 bytes, not a whole number"):
        load_cifar10(write_archive(tmp_path / "b.tar.gz", bad))


def test_archive_member_that_is_a_link_is_refused(tmp_path, files):
    path = tmp_path / "l.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="test_batch.bin in .* is not a regular file"):
        load_cifar10(path, kind="test")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="load_cifar10: kind must be one of 'train', 'test', got 'val'"):
        load_cifar10(tmp_path, kind="val")
    with pytest.raises(TypeError, match="load_cifar10: download must be a bool"):
        load_cifar10(tmp_path, download="yes")
    with pytest.raises(TypeError, match="md5 must be a hex string"):
        load_cifar10(tmp_path, download=True, md5=123)


# ------------------------------------------------------------------------------------ download

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-binary.tar.gz"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_download_checks_md5_and_caches(server, tmp_path, files):
    served, url = server
    archive = write_archive(served / "cifar-10-binary.tar.gz", files)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    X, y = load_cifar10(cache, kind="test", download=True, url=url, md5=digest)
    np.testing.assert_array_equal(y, files[TEST][1])
    assert sorted(os.listdir(cache)) == ["cifar-10-binary.tar.gz"]
    archive.unlink()  # the cache is used from now on
    X2, _ = load_cifar10(cache, kind="test", download=True, url=url, md5=digest)
    np.testing.assert_array_equal(X2, X)
    assert load_cifar10(cache).X.shape == (12, 3, 32, 32)


def test_download_with_the_published_md5_refuses_other_bytes(server, tmp_path, files):
    served, url = server
    write_archive(served / "cifar-10-binary.tar.gz", files)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=f"checksum mismatch for {url}: MD5 [0-9a-f]{{32}}, expected {CIFAR10_MD5}"):
        load_cifar10(cache, download=True, url=url)  # the default md5 is the published one
    assert os.listdir(cache) == []  # nothing kept, not even the partial file
    with pytest.raises(OSError, match=r"load_cifar10: cannot download http://127.0.0.1:\d+/missing.*404"):
        load_cifar10(cache, download=True, url=url.replace("cifar-10-binary.tar.gz", "missing"))
    with pytest.raises(ValueError, match="url must be http"):
        load_cifar10(cache, download=True, url=(tmp_path / "x").as_uri())


class _FakeResponse(io.BytesIO):
    def __init__(self, data, fail_after=None):
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise http.client.IncompleteRead(b"", 1000)
        return super().read(n if self.fail_after is None else min(n, self.fail_after - self.tell()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_default_url_is_the_official_one_and_broken_transfers_leave_nothing(tmp_path, files, monkeypatch):
    data = write_archive(tmp_path / "a.tar.gz", files).read_bytes()
    requested = []

    def fake_urlopen(url, timeout):
        requested.append((url, timeout))
        return _FakeResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_cifar10(cache, download=True, timeout=5)
    assert requested == [("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", 5.0)]
    assert CIFAR10_URL == requested[0][0] and CIFAR10_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert load_cifar10(cache, kind="test", download=True, md5=hashlib.md5(data).hexdigest()).y.size == 3
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _FakeResponse(data, len(data) // 2))
    cache2 = tmp_path / "cache2"
    with pytest.raises(OSError, match="cannot download .*IncompleteRead"):
        load_cifar10(cache2, download=True, md5=None)
    assert os.listdir(cache2) == []


def test_classes_and_record_layout_constants():
    assert CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[9] == "truck" and len(CIFAR10_CLASSES) == 10
    assert _cifar.RECORD == 3073
