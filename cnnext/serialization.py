"""Save and load cnnext.nn models as .npz files: the weights plus the architecture as JSON.

File layout (a NumPy .npz archive, readable with ``np.load(path, allow_pickle=False)``):

- ``__cnnext__``: a 0-d unicode array holding JSON text: ``{"format": "cnnext.model",
  "format_version": 1, "cnnext_version": ..., "dtype": "float32", "architecture": {...},
  "metadata": {...}}``;
- one array per parameter, under its ``state_dict`` name ("0.weight", "0.bias", ...).

The architecture is a tree of ``{"type": "Conv2d", "config": {...}}`` (Sequential: ``"children":
[[name, spec], ...]``) naming cnnext.nn classes only, so loading never runs code from the file.
Saving writes a temporary file in the destination directory and renames it over the target, so a
crash never leaves a half-written model behind.
"""
import json
import os
import tempfile
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from cnnext._version import __version__
from cnnext import nn
from cnnext._validation import check_bool

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_KEY = "__cnnext__"
_FORMAT_NAME = "cnnext.model"
_LAYERS = {cls.__name__: cls for cls in (
    nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Flatten,
    nn.Dropout, nn.CrossEntropyLoss, nn.MSELoss)}
_WITH_DTYPE = (nn.Conv2d, nn.Linear)


def _architecture(module):
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential",
                "children": [[name, _architecture(m)] for name, m in module.named_children()]}
    cls = type(module)
    if _LAYERS.get(cls.__name__) is not cls:
        raise TypeError(
            f"cnnext.save: cannot describe a {cls.__name__} module; save supports models built from "
            f"cnnext.nn layers and Sequential (for other modules save model.state_dict() with np.savez)"
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
        Destination, written as given (no extension is added).
    metadata : dict, optional
        JSON-serialisable extra information stored with the model (e.g. dataset, accuracy);
        returned by ``load(path, return_metadata=True)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnnext.save: model must be a cnnext.nn.Module, got {type(model).__name__}")
    if metadata is not None and not isinstance(metadata, dict):  # load() reads back an object only
        raise TypeError(f"cnnext.save: metadata must be a dict or None, got {type(metadata).__name__}")
    path = os.fspath(path)
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
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cnnext-", suffix=".tmp", dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return None
    return 0


def _build(spec, path, where="architecture", budget=None):
    # budget: parameter elements the file holds; a layer asking for far more is refused before it
    # allocates (a corrupt or hostile header must not trigger a huge allocation)
    if not isinstance(spec, dict) or "type" not in spec:
        raise _bad(path, f"{where} must be an object with a 'type'")
    kind = spec["type"]
    if kind == "Sequential":
        children = spec.get("children")
        if not isinstance(children, list):
            raise _bad(path, f"{where}: Sequential needs a 'children' list")
        items = OrderedDict()
        for i, entry in enumerate(children):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise _bad(path, f"{where}.children[{i}] must be [name, spec]")
            items[entry[0]] = _build(entry[1], path, f"{where}.{entry[0]}", budget)
        try:
            return nn.Sequential(items)
        except (TypeError, ValueError) as exc:
            raise _bad(path, f"{where}: {exc}") from None
    cls = _LAYERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _bad(path, f"{where}: unknown module type {kind!r} (known: Sequential, {', '.join(_LAYERS)})")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        raise _bad(path, f"{where}: 'config' must be an object")
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    need = _param_elements(kind, config)
    if budget is not None and need is not None and need > budget + 2**20:  # small mismatches are
        # reported below, by name and shape
        raise _bad(path, f"{where}: {kind} with {spec.get('config')} needs {need} parameter values, "
                         f"but the file holds only {budget}")
    if cls in _WITH_DTYPE:
        config["rng"] = np.random.default_rng(0)  # weights are overwritten right after
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise _bad(path, f"{where}: cannot build {kind} from {spec.get('config')}: {exc}") from None


def load(path, return_metadata=False):
    """Load a model saved by ``cnnext.save``.

    The file is read with ``allow_pickle=False`` and checked: format name and version, a known
    architecture, exactly the expected parameter names, shapes and a float dtype.

    Parameters
    ----------
    path : str or os.PathLike
    return_metadata : bool
        Also return the metadata dict given to ``save``.

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
        pickled objects ...).
    """
    return_metadata = check_bool(return_metadata, "return_metadata", "cnnext.load")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cnnext.load: no such file: {path!r}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise _bad(path, "it is not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise _bad(path, "it holds a single array, not an .npz archive")
            names = list(npz.files)
            if _META_KEY not in names:
                raise _bad(path, f"no {_META_KEY!r} entry (was it written by cnnext.save?)")
            arrays = {name: npz[name] for name in names}
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):  # numpy hands back non-.npy members as raw bytes
                raise _bad(path, f"entry {name!r} is not a .npy array")
    except ValueError as exc:
        if str(exc).startswith("cnnext.load"):
            raise
        raise _bad(path, f"{exc} (object arrays are refused: loading never unpickles)") from None
    except MemoryError:
        raise _bad(path, "an entry declares an array too large to load; the file may be corrupt") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError,
            NotImplementedError, RuntimeError) as exc:  # unknown compression method, encrypted
        raise _bad(path, f"cannot read the archive ({type(exc).__name__}: {exc}); "
                         f"the file may be truncated or corrupt") from None
    meta_arr = arrays.pop(_META_KEY)
    if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
        raise _bad(path, f"{_META_KEY!r} must be a JSON text scalar")
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
    budget = sum(a.size for a in arrays.values())
    try:
        model = _build(meta.get("architecture"), path, budget=budget)
    except RecursionError:
        raise _bad(path, "its architecture is nested too deeply") from None
    model.to(np.dtype(dtype))
    expected = OrderedDict((name, p) for name, p in model.named_parameters())
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    if missing or unexpected:
        raise _bad(path, f"parameters do not match the architecture: missing {missing}, "
                         f"unexpected {unexpected}")
    for name, p in expected.items():
        a = arrays[name]
        if a.dtype.kind != "f":
            raise _bad(path, f"parameter {name!r} has dtype {a.dtype}, expected {dtype}")
        if a.shape != p.data.shape:
            raise _bad(path, f"parameter {name!r} has shape {a.shape}, expected {p.data.shape}")
    model.load_state_dict(arrays)
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _bad(path, "'metadata' must be an object")
    return (model, metadata) if return_metadata else model
