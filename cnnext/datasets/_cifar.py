"""CIFAR-10 from its official binary version, with an MD5-verified download.

Binary layout (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"): each of
``data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and ``test_batch.bin`` holds 10000 records
of 3073 bytes: one label byte (0..9), then 3072 pixel bytes: the 1024 red values of the 32x32
image row by row, then the green, then the blue. The archive ``cifar-10-binary.tar.gz`` holds them
under ``cifar-10-batches-bin/``; it is read in place, never extracted. The pickled "python
version" is never read: loading it would run pickle.
"""
import os
import tarfile
import zlib

import numpy as np

from cnnext._validation import check_bool, check_choice, check_float
from cnnext.datasets._idx import _download

__all__ = ["load_cifar10", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_CLASSES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
RECORD = 1 + 3 * 32 * 32
_MAX_RECORDS = 10000  # per file, as published


def _size_problem(size, head, where):
    """The error for a batch of ``size`` bytes starting with ``head``, or None if the size is right."""
    n, rest = divmod(size, RECORD)
    if not rest and 0 < n <= _MAX_RECORDS:
        return None
    if not rest and n > _MAX_RECORDS:
        return ValueError(f"load_cifar10: {where} holds {n} records; a CIFAR-10 batch has at most "
                          f"{_MAX_RECORDS}")
    hint = ""
    if size and size % 3074 == 0:
        hint = " (records of 3074 bytes: this looks like the CIFAR-100 binary version)"
    elif head[:1] == b"\x80":
        hint = " (it starts like a pickle: the CIFAR-10 'python version' is not read, use the binary one)"
    return ValueError(f"load_cifar10: {where} holds {size} bytes, not a whole number of {RECORD}-byte "
                      f"records (1 label byte + 3072 pixel bytes){hint}; the file is truncated or not "
                      f"a CIFAR-10 binary batch")


def _decode(raw, where):
    """Split one batch's bytes (size already checked) into uint8 images (n, 3, 32, 32) and labels."""
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        hint = " (is it the pickled 'python version'?)" if raw[:1] == b"\x80" else ""
        raise ValueError(f"load_cifar10: {where}: record {int(bad[0])} has label {int(labels[bad[0]])}, "
                         f"labels must be 0..9{hint}; the file is damaged or not a CIFAR-10 batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _read_file(path):
    """A batch file's bytes, its size checked before it is read."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        problem = _size_problem(size, f.read(1), repr(path))
        if problem:
            raise problem
        f.seek(0)
        raw = f.read()
    if len(raw) != size:
        raise ValueError(f"load_cifar10: {path!r} changed size while being read")
    return raw


def _read_archive(path, names):
    """Read the wanted members of the archive in one pass; return {name: bytes}."""
    found = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base not in names or base in found:
                    continue
                where = f"{base} in {path!r}"
                if not member.isreg():
                    raise ValueError(f"load_cifar10: {where} is not a regular file in the archive")
                problem = _size_problem(member.size, b"", where)  # from the tar header, before
                if problem:                                        # any data is decompressed
                    raise problem
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise EOFError(f"{base} is cut short")
                found[base] = data
            while tar.fileobj.read(1 << 20):  # to the end: gzip checks its CRC and length there
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"load_cifar10: {path!r} is not a readable cifar-10-binary.tar.gz archive: "
                         f"it is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"load_cifar10: {path!r} lacks {missing}: not the CIFAR-10 binary archive "
                         f"(expected {FOLDER}/{names[0]} ...)")
    return found


def _sources(directory):
    """Where the batch files may be below ``directory``: the two folders, then the archive."""
    return ([("dir", directory), ("dir", os.path.join(directory, FOLDER)),
             ("archive", os.path.join(directory, ARCHIVE))])


def _locate(search, names):
    """Return ("dir", folder) or ("archive", path) for the first complete source, else None and
    the first partial folder (some files present) for the error message."""
    partial = None
    for directory in search:
        if os.path.isfile(directory):
            return ("archive", directory), None
        for kind, where in _sources(directory):
            if kind == "archive":
                if os.path.isfile(where):
                    return (kind, where), partial
            else:
                present = [n for n in names if os.path.isfile(os.path.join(where, n))]
                if len(present) == len(names):
                    return (kind, where), partial
                if present and partial is None:
                    partial = (where, [n for n in names if n not in present])
    return None, partial


def _not_found(search, names, partial):
    hints = []
    if partial:
        hints.append(f"{partial[0]!r} lacks {partial[1]}")
    for d in search:
        for py in ("cifar-10-python.tar.gz", "cifar-10-batches-py"):
            if os.path.exists(os.path.join(d, py)):
                hints.append(f"{os.path.join(d, py)!r} is the pickled 'python version', which cnnext "
                             f"does not read (it would unpickle); get the binary version "
                             f"{ARCHIVE}")
    hint = ("; " + "; ".join(hints)) if hints else ""
    return FileNotFoundError(
        f"load_cifar10: found neither {names[0]} ... nor {ARCHIVE} in {search}{hint}; pass "
        f"download=True to fetch {CIFAR10_URL}")


def load_cifar10(path=None, kind="train", download=False, url=None, cache_dir=None, md5=CIFAR10_MD5,
                 timeout=60):
    """Load CIFAR-10 from the official binary version.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The archive ``cifar-10-binary.tar.gz`` itself, or a directory holding it, or holding the
        extracted ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin`` (directly or
        in ``cifar-10-batches-bin/``). Defaults to ``cache_dir``. The archive is read in place,
        never extracted. The pickled "python version" is refused.
    kind : {'train', 'test'}
        The 50000 training images (five batches, in order) or the 10000 test images.
    download : bool
        When nothing is found, fetch the archive into ``cache_dir`` and verify its MD5.
    url : str, optional
        Where to download from (default ``CIFAR10_URL``, the CIFAR page's own link).
    cache_dir : str or os.PathLike, optional
        Where the download goes; default ``path``, else ``$CNNEXT_DATA/cifar-10`` or
        ``~/.cache/cnnext/cifar-10``.
    md5 : str or None
        Expected MD5 hex digest of the downloaded archive (default: the published
        ``CIFAR10_MD5``); None accepts any download.
    timeout : float
        Network timeout in seconds.

    Returns
    -------
    Split
        ``(X, y)``: X float32 of shape (N, 3, 32, 32) (channels red, green, blue), the pixel
        bytes divided by 255 (values in [0, 1]); y int64 labels 0..9, indices into
        ``CIFAR10_CLASSES``.

    Raises
    ------
    FileNotFoundError
        Nothing found and ``download`` False.
    ValueError
        Truncated or damaged files (sizes that are not whole 3073-byte records, more than 10000
        records in a batch, labels over 9, a corrupt archive), a checksum mismatch.
    OSError
        The download failed.
    """
    from cnnext.datasets._digits import Split

    func = "load_cifar10"
    check_choice(kind, "kind", func, ("train", "test"))
    check_bool(download, "download", func)
    timeout = check_float(timeout, "timeout", func, minimum=0, open_min=True)
    if md5 is not None and not isinstance(md5, str):
        raise TypeError(f"{func}: md5 must be a hex string or None, got {type(md5).__name__}")
    if cache_dir is None:
        if path is not None and not os.path.isfile(path):
            cache_dir = path
        else:
            root = os.environ.get("CNNEXT_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "cnnext")
            cache_dir = os.path.join(root, "cifar-10")
    cache_dir = os.fspath(cache_dir)
    search = [os.fspath(path)] if path is not None else []
    if cache_dir not in search:
        search.append(cache_dir)
    names = _FILES[kind]
    source, partial = _locate(search, names)
    if source is None:
        if not download:
            raise _not_found(search, names, partial)
        dest = os.path.join(cache_dir, ARCHIVE)
        _download(url if url is not None else CIFAR10_URL, dest, md5, timeout, func=func, algorithm="md5")
        source = ("archive", dest)
    where, location = source
    if where == "archive":
        raw = _read_archive(location, names)
        parts = [_decode(raw.pop(n), f"{n} in {location!r}") for n in names]
    else:
        parts = []
        for n in names:
            p = os.path.join(location, n)
            parts.append(_decode(_read_file(p), repr(p)))
    images = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    X = images.astype(np.float32)
    X /= np.float32(255.0)
    return Split(X, labels.astype(np.int64))
