"""MNIST-format IDX files: reading (plain or gzip) with strict validation, and checksummed download.

IDX layout: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D
float32, 0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then the data
in big-endian C order.
"""
import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib

import numpy as np

from cnnext._validation import check_int

__all__ = ["read_idx", "load_mnist", "MNIST_CHECKSUMS", "FASHION_MNIST_CHECKSUMS"]

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the published .gz files.
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
FASHION_MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
_DATASETS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", MNIST_CHECKSUMS),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", FASHION_MNIST_CHECKSUMS),
}
_MAX_BYTES = 2**31  # refuse headers announcing more than 2 GiB of data


def _read_into(f, buf, path, opener):
    """Fill ``buf`` (a writable uint8 view) from ``f``; return the number of bytes read."""
    view = memoryview(buf)
    got = 0
    while got < len(view):
        try:
            n = f.readinto(view[got:got + (1 << 24)])
        except (OSError, EOFError, zlib.error) as exc:
            if opener is open:
                raise
            raise ValueError(f"read_idx: {path!r} is a corrupt or truncated gzip file ({exc})") from None
        if not n:
            break
        got += n
    return got


def _at_end(f, path, opener):
    """True when ``f`` has no byte left (for gzip this also checks the stream's CRC and length)."""
    try:
        return f.read(1) == b""
    except (OSError, EOFError, zlib.error) as exc:
        if opener is open:
            raise
        raise ValueError(f"read_idx: {path!r} is a corrupt or truncated gzip file ({exc})") from None


def read_idx(path, max_bytes=_MAX_BYTES):
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    The header is read first and the data streamed into an array of the declared size, so a
    hostile file (a small ``.gz`` inflating to gigabytes, or a header announcing a huge array) is
    refused with memory bounded by the declared size, at most ``max_bytes``.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int
        Largest data size (in bytes) a header may declare; default 2 GiB.

    Returns
    -------
    ndarray
        With the file's shape; the type code sets the dtype (uint8 for MNIST), in native byte order.

    Raises
    ------
    ValueError
        Bad magic number, unknown type code, a declared size over ``max_bytes``, or a data size that
        does not match the header (truncated file or trailing bytes), corrupt gzip data.
    """
    path = os.fspath(path)
    max_bytes = check_int(max_bytes, "max_bytes", "read_idx", minimum=0)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        opener = gzip.GzipFile if gz else open
        f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        head = bytearray(4)
        got = _read_into(f, head, path, opener)
        if got < 4:
            raise ValueError(f"read_idx: {path!r} is too short to be an IDX file ({got} bytes)")
        zero, code, ndim = struct.unpack(">HBB", head)
        if zero != 0 or code not in _TYPES:
            raise ValueError(f"read_idx: {path!r} has an invalid IDX magic number 0x{bytes(head).hex()} "
                             f"(expected 0x0000 then a type code in {[hex(c) for c in _TYPES]} and the "
                             f"number of dimensions)")
        if ndim < 1:
            raise ValueError(f"read_idx: {path!r} declares 0 dimensions")
        dim_bytes = bytearray(4 * ndim)
        if _read_into(f, dim_bytes, path, opener) < len(dim_bytes):
            raise ValueError(f"read_idx: {path!r} is truncated inside its header")
        dims = struct.unpack(f">{ndim}I", dim_bytes)
        dtype = _TYPES[code]
        nbytes = math.prod(dims) * dtype.itemsize  # exact (Python ints)
        if nbytes > max_bytes:
            raise ValueError(f"read_idx: {path!r} declares dimensions {dims} ({nbytes} bytes), over "
                             f"max_bytes={max_bytes}")
        if not gz:  # the file size says at once whether the data is all there
            have = os.fstat(raw.fileno()).st_size - 4 - 4 * ndim
            if have != nbytes:
                raise _size_error(path, dims, nbytes, have)
        data = np.empty(nbytes, np.uint8)  # pages are touched only as data arrives
        have = _read_into(f, data, path, opener)
        if have < nbytes:
            raise _size_error(path, dims, nbytes, have)
        if not _at_end(f, path, opener):
            raise ValueError(f"read_idx: {path!r} is longer than its header says: dimensions {dims} "
                             f"need {nbytes} data bytes, found more")
    arr = data.view(dtype).reshape(dims)
    if not dtype.isnative and dtype.itemsize > 1:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr


def _size_error(path, dims, nbytes, have):
    what = "truncated" if have < nbytes else "longer than its header says"
    return ValueError(f"read_idx: {path!r} is {what}: dimensions {dims} need {nbytes} data bytes, "
                      f"found {have}")


def _download(url, dest, digest, timeout, func="load_mnist", algorithm="sha256"):
    """Fetch ``url`` into ``dest`` through a temporary file, checking its ``algorithm`` digest.

    Nothing is left at ``dest`` unless the whole download arrived and matched ``digest`` (when
    ``digest`` is not None).
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"{func}: url must be http:// or https://, got {url!r}")
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=directory)
    h = hashlib.new(algorithm)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    for block in iter(lambda: resp.read(1 << 20), b""):
                        h.update(block)
                        f.write(block)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise OSError(f"{func}: cannot download {url}: {type(exc).__name__}: {exc}") from exc
        got = h.hexdigest()
        if digest is not None and got != digest.lower():
            label = {"sha256": "SHA-256", "md5": "MD5"}.get(algorithm, algorithm)
            raise ValueError(f"{func}: checksum mismatch for {url}: {label} {got}, expected "
                             f"{digest.lower()}; the download was discarded")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _find(directory, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def load_mnist(path=None, kind="train", download=False, url=None, cache_dir=None,
               dataset="mnist", checksums=None, timeout=60):
    """Load MNIST or Fashion-MNIST from IDX files.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` (the published names;
        Fashion-MNIST uses the same). Defaults to ``cache_dir``.
    kind : {'train', 'test'}
    download : bool
        Fetch missing files (the ``.gz`` versions) into ``cache_dir`` and verify their SHA-256.
    url : str, optional
        Base URL the file names are appended to (default: the dataset's usual mirror).
    cache_dir : str or os.PathLike, optional
        Where downloads go; default ``path``, else ``$CNNEXT_DATA`` or ``~/.cache/cnnext``, plus
        the dataset name.
    dataset : {'mnist', 'fashion-mnist'}
        Chooses the default URL and checksums.
    checksums : dict, optional
        File name -> expected SHA-256 hex digest, replacing the dataset's published ones. Files
        missing from it are accepted unchecked.
    timeout : float
        Network timeout in seconds.

    Returns
    -------
    Split
        ``(X, y)``: X float32 of shape (N, 1, 28, 28) scaled to [0, 1], y int64 labels.

    Raises
    ------
    FileNotFoundError
        Files missing and ``download`` False.
    ValueError
        Corrupt, truncated or inconsistent files, or a checksum mismatch.
    """
    from cnnext.datasets._digits import Split

    if kind not in _FILES:
        raise ValueError(f"load_mnist: kind must be 'train' or 'test', got {kind!r}")
    if dataset not in _DATASETS:
        raise ValueError(f"load_mnist: dataset must be one of {sorted(_DATASETS)}, got {dataset!r}")
    default_url, default_sums = _DATASETS[dataset]
    sums = default_sums if checksums is None else dict(checksums)
    if cache_dir is None:
        if path is not None:
            cache_dir = path
        else:
            root = os.environ.get("CNNEXT_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "cnnext")
            cache_dir = os.path.join(root, dataset)
    cache_dir = os.fspath(cache_dir)
    search = [os.fspath(path)] if path is not None else []
    if cache_dir not in search:
        search.append(cache_dir)
    base = url if url is not None else default_url
    if not base.endswith("/"):
        base += "/"
    files = []
    for stem in _FILES[kind]:
        found = next((f for f in (_find(d, stem) for d in search) if f), None)
        if found is None:
            if not download:
                raise FileNotFoundError(
                    f"load_mnist: {stem}[.gz] not found in {search}; pass download=True to fetch it"
                )
            name = stem + ".gz"
            found = os.path.join(cache_dir, name)
            _download(base + name, found, sums.get(name), timeout)
        files.append(found)
    images, labels = (read_idx(f) for f in files)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"load_mnist: {files[0]!r} must hold uint8 images of shape (N, rows, cols), "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"load_mnist: {files[1]!r} must hold uint8 labels of shape (N,), got "
                         f"{labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"load_mnist: {images.shape[0]} images but {labels.shape[0]} labels in "
                         f"{files[0]!r} and {files[1]!r}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"load_mnist: labels must be 0..9, found {int(labels.max())} in {files[1]!r}")
    X = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return Split(X, labels.astype(np.int64))
