"""Save and load cnnext.nn models as .npz files: the weights plus the architecture as JSON.

File layout (a NumPy .npz archive, readable with ``np.load(path, allow_pickle=False)``):

- ``__cnnext__``: a 0-d unicode array holding JSON text: ``{"format": "cnnext.model",
  "format_version": 1, "cnnext_version": ..., "dtype": "float32", "architecture": {...},
  "metadata": {...}}``;
- one array per parameter, under its ``state_dict`` name ("0.weight", "0.bias", ...).

The architecture is a tree of ``{"type": "Conv2d", "config": {...}}`` (Sequential: ``"children":
[[name, spec], ...]``) naming cnnext.nn classes only, so loading never runs code from the file.
Saving writes a temporary file in the destination directory and renames it over the target, so a
crash never leaves a half-written model behind; a symbolic link is written through (its target is
replaced, the link kept), and directories, devices, FIFOs and sockets are refused.
"""
import contextlib
import errno
import inspect
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from cnnext._version import __version__
from cnnext import models, nn
from cnnext._validation import check_bool, check_int

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_KEY = "__cnnext__"
_FORMAT_NAME = "cnnext.model"
_CONTAINERS = {cls.__name__: cls for cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict)}
_LAYERS = {cls.__name__: cls for cls in (
    nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Flatten,
    nn.Dropout, nn.CrossEntropyLoss, nn.MSELoss, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity,
    models.LeNet5, models.CifarNet, models.BasicBlock, models.ResNet20, models.MobileNetCifar)}
_MAX_BYTES = 2**31  # default cap on the decompressed size of a model file
_MAX_HEADER_BYTES = 2**26  # the JSON header (architecture and metadata)


def _architecture(module):
    cls = type(module)
    if _CONTAINERS.get(cls.__name__) is cls:
        return {"type": cls.__name__,
                "children": [[name, _architecture(m)] for name, m in module.named_children()]}
    if _LAYERS.get(cls.__name__) is not cls:
        raise TypeError(
            f"cnnext.save: cannot describe a {cls.__name__} module; save supports the modules "
            f"cnnext ships (cnnext.nn layers, Sequential, ModuleList, ModuleDict, the cnnext.models "
            f"zoo), nested to any depth (for your own modules save model.state_dict() with np.savez)"
        )
    return {"type": cls.__name__, "config": module._config()}


def _dtype_of(model):
    dts = {p.data.dtype for p in model.parameters()}
    if len(dts) > 1:
        raise ValueError(f"cnnext.save: all parameters must share one dtype, got {sorted(map(str, dts))}")
    return (dts.pop() if dts else np.dtype(np.float32)).name


def save(model, path, metadata=None):
    """Save a model (architecture and weights) to a .npz file, atomically.

    Parameters
    ----------
    model : cnnext.nn.Module
        A cnnext.nn layer or a Sequential of them.
    path : str or os.PathLike
        Destination, written as given (no extension is added). A symbolic link is followed: the
        file it points to is replaced atomically and the link kept.
    metadata : dict, optional
        JSON-serialisable extra information stored with the model (e.g. dataset, accuracy);
        returned by ``load(path, return_metadata=True)``.

    Raises
    ------
    ValueError
        ``path`` is (or points to) a directory, a device, a FIFO or a socket.
    FileNotFoundError
        The directory of ``path`` does not exist.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnnext.save: model must be a cnnext.nn.Module, got {type(model).__name__}")
    if metadata is not None and not isinstance(metadata, dict):  # load() reads back an object only
        raise TypeError(f"cnnext.save: metadata must be a dict or None, got {type(metadata).__name__}")
    path = os.fspath(path)
    target = save_target(path)
    meta = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "cnnext_version": __version__,
        "dtype": _dtype_of(model),
        "architecture": _architecture(model),
        "metadata": metadata if metadata is not None else {},
    }
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cnnext.save: metadata must be JSON-serialisable ({exc})") from None
    arrays = OrderedDict(model.state_dict())
    if _META_KEY in arrays:
        raise ValueError(f"cnnext.save: parameter name {_META_KEY!r} is reserved")
    arrays[_META_KEY] = np.array(text)
    fd, tmp = tempfile.mkstemp(prefix=".cnnext-", suffix=".tmp", dir=os.path.dirname(target))
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        _refuse_non_regular(path, target, "cnnext.save", follow=False)  # changed meanwhile?
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _refuse_non_regular(path, target, func, follow=True):
    try:
        st = os.stat(target) if follow else os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{func}: path {path!r} is a symbolic link loop") from None
        raise
    if stat.S_ISREG(st.st_mode) or (not follow and stat.S_ISLNK(st.st_mode)):
        return
    kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
    via = f" (it resolves to {target!r})" if target != os.path.abspath(path) else ""
    raise ValueError(f"{func}: path {path!r} is {kind}{via}; a model is saved to a regular file "
                     f"(give a file name)")


def save_target(path, func="cnnext.save"):
    """Return the file that saving to ``path`` replaces, or raise if ``path`` cannot take a model.

    Symbolic links are followed (the file they point to is replaced, the links are kept);
    directories, devices, FIFOs and sockets are refused with a ValueError naming ``path``, a
    missing directory with FileNotFoundError. ``save`` calls it first; callers with long work
    before saving (the CLI's ``--save``) can call it up front.

    Parameters
    ----------
    path : str or os.PathLike
    func : str
        Caller name for error messages.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    _refuse_non_regular(path, target, func)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{func}: cannot save to {path!r}: directory {directory!r} does not exist")
    return target


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _bad(path, why):
    return ValueError(f"cnnext.load: {path!r} is not a valid cnnext model file: {why}")


def _param_elements(kind, config):
    """Parameter elements a Conv2d/Linear config asks for (0 for other layers, None if unclear)."""
    try:
        if kind == "Linear":
            out = int(config["out_features"])
            return int(config["in_features"]) * out + (out if config.get("bias", True) else 0)
        if kind == "Conv2d":
            k = config["kernel_size"]
            kh, kw = (k, k) if isinstance(k, int) else (int(k[0]), int(k[-1]))
            out, groups = int(config["out_channels"]), max(1, int(config.get("groups", 1)))
            return (out * (int(config["in_channels"]) // groups) * kh * kw
                    + (out if config.get("bias", True) else 0))
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            return 2 * int(config["num_features"])
        if kind in _ZOO_HEAD:  # a lower bound: the classifier's weights
            return _ZOO_HEAD[kind] * int(config.get("num_classes", 10)) + 4608 * int(config.get("blocks", 1))
        if kind == "BasicBlock":
            return 9 * int(config["cout"]) * (int(config["cin"]) + int(config["cout"]))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return None
    return 0


_ZOO_HEAD = {"LeNet5": 84, "CifarNet": 2048, "ResNet20": 64, "MobileNetCifar": 512}


def _build(spec, path, where="architecture", budget=None):
    # budget: parameter elements the file holds; a layer asking for far more is refused before it
    # allocates (a corrupt or hostile header must not trigger a huge allocation)
    if not isinstance(spec, dict) or "type" not in spec:
        raise _bad(path, f"{where} must be an object with a 'type'")
    kind = spec["type"]
    if isinstance(kind, str) and kind in _CONTAINERS:
        children = spec.get("children")
        if not isinstance(children, list):
            raise _bad(path, f"{where}: {kind} needs a 'children' list")
        items = OrderedDict()
        for i, entry in enumerate(children):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise _bad(path, f"{where}.children[{i}] must be [name, spec]")
            items[entry[0]] = _build(entry[1], path, f"{where}.{entry[0]}", budget)
        try:
            if kind == "ModuleList":
                if list(items) != [str(i) for i in range(len(items))]:
                    raise ValueError(f"ModuleList children must be named 0, 1, ..., got {list(items)}")
                return nn.ModuleList(items.values())
            return _CONTAINERS[kind](items)
        except (TypeError, ValueError) as exc:
            raise _bad(path, f"{where}: {exc}") from None
    cls = _LAYERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _bad(path, f"{where}: unknown module type {kind!r} "
                         f"(known: {', '.join(list(_CONTAINERS) + list(_LAYERS))})")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise _bad(path, f"{where}: 'config' must be an object")
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    need = _param_elements(kind, config)
    if budget is not None and need is not None and need > budget + 2**20:  # small mismatches are
        # reported below, by name and shape
        raise _bad(path, f"{where}: {kind} with {spec.get('config')} needs {need} parameter values, "
                         f"but the file holds only {budget}")
    if "rng" in config or "dtype" in config:
        raise _bad(path, f"{where}: 'config' may not set rng or dtype")
    if "rng" in inspect.signature(cls).parameters:
        config["rng"] = np.random.default_rng(0)  # weights are overwritten right after
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"{where}: cannot build {kind} from {spec.get('config')}: {exc}") from None


def _member_headers(path, zf, max_bytes):
    """Check every archive member from its declared sizes and .npy header, reading no data.

    Returns ``{name: (ZipInfo, dtype, shape, fortran_order, data_offset, data_bytes)}``.
    """
    members = OrderedDict()
    total = 0
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.is_dir():
            raise _bad(path, f"entry {info.filename!r} is not a .npy array")
        name = info.filename[:-4]
        if name in members:
            raise _bad(path, f"entry {name!r} appears twice")
        total += info.file_size
        if total > max_bytes:
            raise _bad(path, f"its entries declare {total} bytes or more once uncompressed, over "
                             f"max_bytes={max_bytes} (pass a larger max_bytes to cnnext.load if the "
                             f"model really is that large)")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise _bad(path, f"entry {name!r} uses .npy format version {version}, expected 1.0 or 2.0")
            offset = f.tell()
        if dtype.hasobject:
            raise _bad(path, f"entry {name!r} holds Python objects (object arrays are refused: "
                             f"loading never unpickles)")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise _bad(path, f"entry {name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                             f"holds {info.file_size - offset} data bytes")
        members[name] = (info, dtype, shape, fortran, offset, nbytes)
    return members


def _read_member(zf, member):
    """Stream one member's data (size already checked) into an array in native byte order."""
    info, dtype, shape, fortran, offset, nbytes = member
    buf = np.empty(nbytes, np.uint8)
    view = memoryview(buf)
    with zf.open(info) as f:
        f.read(offset)
        got = 0
        while got < nbytes:
            n = f.readinto(view[got:got + (1 << 24)])
            if not n:
                break
            got += n
        if got != nbytes or f.read(1):  # reading to the end also checks the member's CRC
            raise EOFError(f"entry {info.filename!r} is shorter than its header says")
    arr = buf.view(dtype)
    if not dtype.isnative and dtype.itemsize > 1:
        arr = arr.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return arr.reshape(shape, order="F" if fortran else "C")


@contextlib.contextmanager
def _reading(path):
    """Turn the errors of reading a damaged archive into cnnext.load's ValueError."""
    try:
        yield
    except ValueError as exc:
        if str(exc).startswith("cnnext.load"):
            raise
        raise _bad(path, f"{exc}") from None
    except MemoryError:
        raise _bad(path, "an entry declares an array too large to load; the file may be corrupt") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError,
            NotImplementedError, RuntimeError) as exc:  # unknown compression method, encrypted
        raise _bad(path, f"cannot read the archive ({type(exc).__name__}: {exc}); "
                         f"the file may be truncated or corrupt") from None


def load(path, return_metadata=False, max_bytes=_MAX_BYTES):
    """Load a model saved by ``cnnext.save``.

    The file is read with ``allow_pickle=False`` and checked: format name and version, a known
    architecture, exactly the expected parameter names, shapes and a float dtype. Sizes are
    checked from the archive's directory and each array's header before any data is
    decompressed, so a small hostile file cannot make ``load`` allocate gigabytes.

    Parameters
    ----------
    path : str or os.PathLike
    return_metadata : bool
        Also return the metadata dict given to ``save``.
    max_bytes : int
        Refuse files whose arrays add up to more than this many bytes once decompressed
        (default 2 GiB).

    Returns
    -------
    model : cnnext.nn.Module
        In the dtype it was saved in, in training mode (call ``model.eval()`` for inference).
    metadata : dict, only with ``return_metadata``

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a valid cnnext model (truncated, wrong version, wrong keys or shapes,
        pickled objects, sizes over ``max_bytes`` ...).
    """
    return_metadata = check_bool(return_metadata, "return_metadata", "cnnext.load")
    path = os.fspath(path)
    max_bytes = check_int(max_bytes, "max_bytes", "cnnext.load", minimum=0)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cnnext.load: no such file: {path!r}")
    with open(path, "rb") as fh:  # one open file throughout: a concurrent save cannot swap it
        return _load_open(path, fh, return_metadata, max_bytes)


def _load_open(path, fh, return_metadata, max_bytes):
    if fh.read(4) != b"PK\x03\x04":
        raise _bad(path, "it is not an .npz (zip) archive")
    with _reading(path), zipfile.ZipFile(fh) as zf:
        members = _member_headers(path, zf, max_bytes)
        if _META_KEY not in members:
            raise _bad(path, f"no {_META_KEY!r} entry (was it written by cnnext.save?)")
        meta_member = members.pop(_META_KEY)
        if meta_member[1].kind != "U" or meta_member[2] != ():
            raise _bad(path, f"{_META_KEY!r} must be a JSON text scalar")
        if meta_member[5] > _MAX_HEADER_BYTES:
            raise _bad(path, f"its {_META_KEY!r} header is {meta_member[5]} bytes, over "
                             f"{_MAX_HEADER_BYTES}")
        meta_arr = _read_member(zf, meta_member)
    meta = _parse_header(path, meta_arr)
    dtype = meta["dtype"]
    budget = sum(math.prod(m[2]) for m in members.values())
    try:
        model = _build(meta.get("architecture"), path, budget=budget)
    except RecursionError:
        raise _bad(path, "its architecture is nested too deeply") from None
    model.to(np.dtype(dtype))
    expected = model.state_dict()  # parameters and buffers
    missing = [k for k in expected if k not in members]
    unexpected = [k for k in members if k not in expected]
    if missing or unexpected:
        raise _bad(path, f"parameters do not match the architecture: missing {missing}, "
                         f"unexpected {unexpected}")
    for name, want in expected.items():
        _, a_dtype, a_shape = members[name][:3]
        if want.dtype.kind == "f" and a_dtype.kind != "f":
            raise _bad(path, f"parameter {name!r} has dtype {a_dtype}, expected {dtype}")
        if want.dtype.kind in "iu" and a_dtype.kind not in "iu":
            raise _bad(path, f"buffer {name!r} has dtype {a_dtype}, expected {want.dtype}")
        if a_shape != want.shape:
            raise _bad(path, f"parameter {name!r} has shape {a_shape}, expected {want.shape}")
    # only now, with every size known to match the architecture, is any weight decompressed
    with _reading(path), zipfile.ZipFile(fh) as zf:
        arrays = {name: _read_member(zf, members[name]) for name in expected}
    model.load_state_dict(arrays)
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _bad(path, "'metadata' must be an object")
    return (model, metadata) if return_metadata else model


def _parse_header(path, meta_arr):
    """Decode and check the JSON header (format name, version, dtype)."""
    try:
        meta = json.loads(str(meta_arr[()]))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"its header is not valid JSON ({exc})") from None
    except RecursionError:
        raise _bad(path, "its header is nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_NAME:
        raise _bad(path, f"header 'format' must be {_FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(path, f"format_version {version!r} is not supported by cnnext {__version__} "
                         f"(supported: {FORMAT_VERSION})")
    dtype = meta.get("dtype")
    if dtype not in ("float32", "float64"):
        raise _bad(path, f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return meta
