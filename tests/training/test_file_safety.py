"""Hostile files: decompression bombs for read_idx and cnnext.load (issue 13 item 5), and save
targets that are not regular files: symlinks written through, FIFOs, devices, sockets and
directories refused (issue 13 item 7).

The bombs are built here without inflating them: a raw deflate stream of N MiB of zeros is one
compressed 1 MiB block repeated N times (after a full flush the compressor starts afresh, so every
block compresses to the same bytes), wrapped by hand in a gzip or zip container with the right
CRC-32 and sizes. Each load runs in a subprocess that reports the growth of its peak resident
memory (``ru_maxrss``) over the memory it had after importing cnnext.
"""
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

import cnnext
import cnnext.datasets

MiB = 1 << 20
_ZEROS = bytes(MiB)
PEAK_LIMIT_MIB = 64  # every refusal below must stay under this, whatever the bomb inflates to


def deflate_with_zeros(prefix, zero_mib, suffix=b""):
    """Raw deflate stream of ``prefix + zero_mib MiB of zeros + suffix``; returns (stream, crc, size)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(_ZEROS) + c.flush(zlib.Z_FULL_FLUSH) if zero_mib else b""
    tail = c.compress(suffix) + c.flush()
    crc = zlib.crc32(prefix)
    for _ in range(zero_mib):
        crc = zlib.crc32(_ZEROS, crc)
    crc = zlib.crc32(suffix, crc)
    return head + block * zero_mib + tail, crc, len(prefix) + zero_mib * MiB + len(suffix)


def gzip_wrap(stream, crc, size):
    return (b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff" + stream
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def zip_archive(members):
    """A zip file from ``[(name, deflate_stream, crc, size), ...]`` (method 8, sizes < 4 GiB)."""
    out, central = io.BytesIO(), []
    for name, stream, crc, size in members:
        fn = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 33, crc, len(stream), size, len(fn), 0))
        out.write(fn + stream)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 33, crc, len(stream),
                                   size, len(fn), 0, 0, 0, 0, 0, offset) + fn)
    cd_start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                          out.tell() - cd_start, cd_start, 0))
    return out.getvalue()


def npy_header(dtype, shape):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                               "shape": tuple(shape)})
    return buf.getvalue()


def npy_member(name, arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return (name,) + deflate_with_zeros(buf.getvalue(), 0)


def zero_npy_member(name, dtype, shape):
    """A member declaring ``shape`` whose data (zeros) inflates to whole MiBs."""
    hdr = npy_header(dtype, shape)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    assert nbytes % MiB == 0
    return (name,) + deflate_with_zeros(hdr, nbytes // MiB)


def model_header(architecture):
    return np.array(json.dumps({"format": "cnnext.model", "format_version": 1, "cnnext_version": "x",
                                "dtype": "float32", "architecture": architecture, "metadata": {}}))


def idx_header(code, dims):
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def run_measured(call, tmp_path):
    """Run ``call`` (Python source using ``cnnext``) in a fresh interpreter.

    Returns (outcome, peak growth in MiB): outcome is "ok" or "ExceptionName: message".
    """
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        import cnnext, cnnext.datasets
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            {call}
            outcome = "ok"
        except Exception as exc:
            outcome = f"{{type(exc).__name__}}: {{exc}}"
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(grown / 1024)
        print(outcome)
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(cnnext.__file__).resolve().parent.parent),
                                         env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    grown, outcome = proc.stdout.strip().split("\n", 1)
    return outcome, float(grown)


def test_bomb_builders_make_what_they_say():
    """The tests' own bomb builders, checked on small sizes against zlib, gzip and zipfile."""
    import gzip
    import zipfile

    stream, crc, size = deflate_with_zeros(b"head", 3, b"tail")
    assert zlib.decompress(stream, -15) == b"head" + bytes(3 * MiB) + b"tail" and size == 3 * MiB + 8
    assert gzip.decompress(gzip_wrap(stream, crc, size)) == b"head" + bytes(3 * MiB) + b"tail"
    data = zip_archive([("a.npy", stream, crc, size), npy_member("b.npy", np.arange(3.0))])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None and z.read("a.npy")[-4:] == b"tail"
        assert z.getinfo("a.npy").file_size == size
    member = zero_npy_member("w.npy", "<f4", (2, MiB // 8))
    with zipfile.ZipFile(io.BytesIO(zip_archive([member]))) as z:
        arr = np.load(io.BytesIO(z.read("w.npy")))
    assert arr.shape == (2, MiB // 8) and arr.dtype == np.float32 and not arr.any()


# ------------------------------------------------------------------------------------ read_idx

@pytest.mark.parametrize("dims,zero_mib,match", [
    ((10,), 1024, "longer than its header says"),  # 10 labels, then 1 GiB of trailing zeros
    ((2**20, 2**12, 2**12), 1024, "over max_bytes"),  # a 16 TiB header over a 1 GiB stream
    ((1536 * MiB,), 0, "truncated"),  # 1.5 GiB declared (under the cap), 1 KiB present
], ids=["trailing_1GiB", "huge_header", "declared_1.5GiB_truncated"])
def test_read_idx_gzip_bombs_are_refused_with_bounded_memory(tmp_path, dims, zero_mib, match):
    prefix = idx_header(0x08, dims) + bytes(min(1024, int(np.prod(dims, dtype=np.float64))))
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip_wrap(*deflate_with_zeros(prefix, zero_mib)))
    assert path.stat().st_size < 2 * MiB
    outcome, grown = run_measured(f"cnnext.datasets.read_idx({str(path)!r})", tmp_path)
    assert outcome.startswith("ValueError: read_idx:") and match in outcome, outcome
    assert grown < PEAK_LIMIT_MIB, f"peak memory grew by {grown:.0f} MiB"


def test_read_idx_max_bytes_caps_the_declared_size(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_header(0x0C, (4, 5)) + bytes(80))  # int32: 80 data bytes
    assert cnnext.datasets.read_idx(path, max_bytes=80).shape == (4, 5)
    with pytest.raises(ValueError, match=r"\(80 bytes\), over max_bytes=79"):
        cnnext.datasets.read_idx(path, max_bytes=79)
    with pytest.raises(TypeError, match="read_idx: max_bytes must be an int"):
        cnnext.datasets.read_idx(path, max_bytes=1.5)


def test_read_idx_plain_file_size_is_checked_before_reading(tmp_path):
    """An uncompressed file is compared with its header by its size, before any data is read."""
    path = tmp_path / "sparse.idx"
    with open(path, "wb") as f:
        f.write(idx_header(0x08, (1024, MiB)))  # 1 GiB declared
        f.truncate(12 + 1024 * MiB + 1)  # a sparse file one byte too long: takes no disk space
    outcome, grown = run_measured(f"cnnext.datasets.read_idx({str(path)!r})", tmp_path)
    assert "longer than its header says" in outcome and "found 1073741825" in outcome, outcome
    assert grown < PEAK_LIMIT_MIB


def test_read_idx_still_reads_gzip_and_corrupt_crc_is_caught(tmp_path):
    arr = np.arange(2 * 3 * 5, dtype=">i2").reshape(2, 3, 5)
    raw = idx_header(0x0B, arr.shape) + arr.tobytes()
    stream, crc, size = deflate_with_zeros(raw, 0)
    path = tmp_path / "a.gz"
    path.write_bytes(gzip_wrap(stream, crc, size))
    out = cnnext.datasets.read_idx(path)
    assert out.dtype == np.int16 and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, np.arange(30).reshape(2, 3, 5))
    path.write_bytes(gzip_wrap(stream, crc ^ 1, size))  # right data, wrong checksum in the trailer
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        cnnext.datasets.read_idx(path)


# ------------------------------------------------------------------------------------ cnnext.load

_LINEAR_3_2 = {"type": "Linear", "config": {"in_features": 3, "out_features": 2, "bias": True}}


def _write_model_zip(path, members):
    path.write_bytes(zip_archive(members))
    assert path.stat().st_size < 4 * MiB


def test_load_member_bomb_not_matching_the_architecture(tmp_path):
    """A 'weight' declaring 1 GiB of zeros (1 MiB on disk) for a Linear(3, 2): refused from its header."""
    path = tmp_path / "bomb.npz"
    _write_model_zip(path, [npy_member("__cnnext__.npy", model_header(_LINEAR_3_2)),
                            zero_npy_member("weight.npy", "<f4", (2**28,)),
                            npy_member("bias.npy", np.zeros(2, np.float32))])
    outcome, grown = run_measured(f"cnnext.load({str(path)!r})", tmp_path)
    assert outcome.startswith("ValueError: cnnext.load:"), outcome
    assert "'weight' has shape (268435456,), expected (2, 3)" in outcome, outcome
    assert grown < PEAK_LIMIT_MIB, f"peak memory grew by {grown:.0f} MiB"


def test_load_archive_declaring_3GiB_is_refused_before_inflating(tmp_path):
    """Architecture and member agree on a 3 GiB weight: over the default max_bytes (2 GiB)."""
    arch = {"type": "Linear", "config": {"in_features": 2**14, "out_features": 3 * 2**14, "bias": False}}
    path = tmp_path / "big.npz"
    _write_model_zip(path, [npy_member("__cnnext__.npy", model_header(arch)),
                            zero_npy_member("weight.npy", "<f4", (3 * 2**14, 2**14))])
    outcome, grown = run_measured(f"cnnext.load({str(path)!r})", tmp_path)
    assert outcome.startswith("ValueError: cnnext.load:") and "over max_bytes=2147483648" in outcome, outcome
    assert grown < PEAK_LIMIT_MIB, f"peak memory grew by {grown:.0f} MiB"
    # a lower cap refuses a file that the default would read
    arch = {"type": "Linear", "config": {"in_features": 256, "out_features": 1024, "bias": False}}
    _write_model_zip(path, [npy_member("__cnnext__.npy", model_header(arch)),
                            zero_npy_member("weight.npy", "<f4", (1024, 256))])
    assert not cnnext.load(path).weight.data.any()
    with pytest.raises(ValueError, match=r"over max_bytes=1000000 \(pass a larger max_bytes"):
        cnnext.load(path, max_bytes=10**6)


def test_load_header_member_bomb(tmp_path):
    """The JSON header member itself declared as 1 GiB of text."""
    path = tmp_path / "hdr.npz"
    _write_model_zip(path, [zero_npy_member("__cnnext__.npy", "<U1", (2**28,))])
    outcome, grown = run_measured(f"cnnext.load({str(path)!r})", tmp_path)
    assert outcome.startswith("ValueError: cnnext.load:") and "JSON text scalar" in outcome, outcome
    assert grown < PEAK_LIMIT_MIB
    _write_model_zip(path, [zero_npy_member("__cnnext__.npy", "<U268435456", ())])
    outcome, grown = run_measured(f"cnnext.load({str(path)!r})", tmp_path)
    assert outcome.startswith("ValueError: cnnext.load:") and "header is 1073741824 bytes" in outcome, outcome
    assert grown < PEAK_LIMIT_MIB


def test_load_member_whose_stream_outgrows_its_declared_size(tmp_path):
    """The zip directory declares the right size but the stream inflates to 1 GiB more: reading
    stops at the declared size (the weights read are the zeros declared), memory stays small."""
    hdr = npy_header("<f4", (2, 3))
    stream, _, _ = deflate_with_zeros(hdr + bytes(24), 1024)
    declared = len(hdr) + 24
    member = ("weight.npy", stream, zlib.crc32(hdr + bytes(24)), declared)
    path = tmp_path / "long.npz"
    _write_model_zip(path, [npy_member("__cnnext__.npy", model_header(_LINEAR_3_2)), member,
                            npy_member("bias.npy", np.zeros(2, np.float32))])
    outcome, grown = run_measured(f"m = cnnext.load({str(path)!r}); assert not m.weight.data.any()", tmp_path)
    assert outcome == "ok" or outcome.startswith("ValueError: cnnext.load:"), outcome
    assert grown < PEAK_LIMIT_MIB


def test_load_rejects_duplicate_members_and_max_bytes_type(tmp_path):
    path = tmp_path / "dup.npz"
    _write_model_zip(path, [npy_member("__cnnext__.npy", model_header(_LINEAR_3_2)),
                            npy_member("weight.npy", np.zeros((2, 3), np.float32)),
                            npy_member("weight.npy", np.ones((2, 3), np.float32)),
                            npy_member("bias.npy", np.zeros(2, np.float32))])
    with pytest.raises(ValueError, match="entry 'weight' appears twice"):
        cnnext.load(path)
    with pytest.raises(TypeError, match="cnnext.load: max_bytes must be an int"):
        cnnext.load(path, max_bytes="big")


def test_load_reads_big_endian_and_fortran_members(tmp_path):
    """Members numpy itself could write (other byte order, Fortran order) load with the right values."""
    w = np.arange(6, dtype=">f4").reshape(2, 3)
    path = tmp_path / "be.npz"
    with open(path, "wb") as f:
        np.savez(f, __cnnext__=model_header(_LINEAR_3_2), weight=np.asfortranarray(w),
                 bias=np.array([7, 8], ">f8"))
    m = cnnext.load(path)
    np.testing.assert_array_equal(m.weight.data, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(m.bias.data, [7, 8])
    assert m.weight.data.dtype == np.float32


# ------------------------------------------------------------------------------------ cnnext.save targets
# (issue 13 item 7) a symbolic link is written through; anything but a regular file is refused

def _tiny(seed=0):
    return cnnext.nn.Linear(3, 2, rng=seed)


def _weights_of(path):
    with np.load(path, allow_pickle=False) as z:
        return z["weight"]


def test_save_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    store, links = tmp_path / "store", tmp_path / "links"
    store.mkdir()
    links.mkdir()
    target = store / "model.npz"
    cnnext.save(_tiny(0), target)
    link = links / "current.npz"
    link.symlink_to(os.path.relpath(target, links))  # relative link into another directory
    chain = tmp_path / "chain.npz"
    chain.symlink_to(link)  # a link to the link
    new = _tiny(1)
    cnnext.save(new, link)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, links)
    assert target.is_file() and not target.is_symlink()
    np.testing.assert_array_equal(_weights_of(target), new.weight.data)
    newer = _tiny(2)
    cnnext.save(newer, chain)
    assert chain.is_symlink() and link.is_symlink()
    np.testing.assert_array_equal(cnnext.load(chain).weight.data, newer.weight.data)
    # the temporary file went to the target's directory and is gone: nothing else anywhere
    assert sorted(os.listdir(store)) == ["model.npz"] and sorted(os.listdir(links)) == ["current.npz"]


def test_save_through_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "sub" / "made.npz")
    with pytest.raises(FileNotFoundError, match=r"cnnext.save: cannot save to '.*link.npz': directory"):
        cnnext.save(_tiny(), link)  # the target's directory does not exist
    (tmp_path / "sub").mkdir()
    cnnext.save(_tiny(3), link)
    assert link.is_symlink() and (tmp_path / "sub" / "made.npz").is_file()
    np.testing.assert_array_equal(_weights_of(tmp_path / "sub" / "made.npz"), _tiny(3).weight.data)


def test_save_refuses_a_fifo_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for writing would block: save must not even try
    with pytest.raises(ValueError, match=r"cnnext.save: path '.*pipe' is a FIFO \(named pipe\)"):
        cnnext.save(_tiny(), fifo)
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["pipe"]
    link = tmp_path / "to-pipe.npz"
    link.symlink_to(fifo)
    with pytest.raises(ValueError, match=r"path '.*to-pipe.npz' is a FIFO .* \(it resolves to '.*pipe'\)"):
        cnnext.save(_tiny(), link)
    assert link.is_symlink() and fifo.is_fifo()


def test_save_refuses_a_link_to_a_device_and_a_directory(tmp_path):
    null = tmp_path / "null.npz"
    null.symlink_to("/dev/null")
    before = os.stat("/dev/null")
    with pytest.raises(ValueError, match=r"path '.*null.npz' is a character device"):
        cnnext.save(_tiny(), null)
    after = os.stat("/dev/null")
    assert null.is_symlink() and (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)
    (tmp_path / "dir").mkdir()
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    with pytest.raises(ValueError, match=r"path '.*to-dir' is a directory"):
        cnnext.save(_tiny(), tmp_path / "to-dir")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match="symbolic link loop"):
        cnnext.save(_tiny(), loop)
    assert sorted(os.listdir(tmp_path)) == ["dir", "loop", "null.npz", "to-dir"]
    assert os.listdir(tmp_path / "dir") == []


def test_save_refuses_a_socket_and_a_missing_directory(tmp_path):
    import socket

    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(ValueError, match=r"path '.*s' is a socket"):
            cnnext.save(_tiny(), sock_path)
    with pytest.raises(FileNotFoundError, match=r"cannot save to '.*nowhere/m.npz': directory '.*nowhere' does not"):
        cnnext.save(_tiny(), tmp_path / "nowhere" / "m.npz")


def test_save_rechecks_the_target_just_before_the_rename(tmp_path, monkeypatch):
    """The target turns into a FIFO while the model is being written: nothing is replaced."""
    path = tmp_path / "m.npz"
    real = np.savez_compressed

    def write_then_swap(file, **arrays):
        real(file, **arrays)
        os.mkfifo(path)

    monkeypatch.setattr(np, "savez_compressed", write_then_swap)
    with pytest.raises(ValueError, match="is a FIFO"):
        cnnext.save(_tiny(), path)
    assert path.is_fifo() and os.listdir(tmp_path) == ["m.npz"]
