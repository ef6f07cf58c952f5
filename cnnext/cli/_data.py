"""Data and model files for the commands: the digits or MNIST IDX files, saved models, test splits."""
import os

import numpy as np

from cnnext._validation import check_int
from cnnext.cli._common import UsageError, check_input_file, path_arg, threads

_IDX_DATASETS = ("mnist", "fashion-mnist")


def load_data(data_dir, dataset="mnist", download=False, option="--data", test_only=False):
    """Return (train, test, description, metadata) for the digits or an MNIST directory.

    ``option`` names where ``data_dir`` came from in error messages; with ``test_only`` the
    training files are not read (train is None).
    """
    from cnnext.datasets import load_digits, load_mnist

    if data_dir is None:
        train, test = load_digits()
        return train, test, "digits", {"dataset": "digits"}
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not download and not os.path.isdir(data_dir):
        raise UsageError(f"{option} {data_dir}: no such directory")
    train = None if test_only else load_mnist(data_dir, "train", download=download, dataset=dataset)
    test = load_mnist(data_dir, "test", download=download, dataset=dataset)
    return train, test, f"{dataset} IDX files in {data_dir}", {"dataset": dataset, "data_dir": data_dir}


def add_model_arguments(p):
    """MODEL, --data and --threads: the arguments of the commands that use a saved model."""
    p.add_argument("model", metavar="MODEL", type=path_arg, help="a .npz file written by 'cnnext train' or cnnext.save")
    p.add_argument("--data", metavar="DIR", type=path_arg, default=None,
                   help="MNIST IDX directory (default: the data the model was trained on)")
    p.add_argument("--threads", type=threads, default=1, help="threads (default 1)")


def load_model(path):
    """Return (model, metadata) of a model file; UsageError when it is missing or its metadata is bad."""
    from cnnext import load

    check_input_file(path, "MODEL")
    model, meta = load(path, return_metadata=True)
    _check_metadata(meta, path)
    return model, meta


def _check_metadata(meta, path):
    """The metadata the commands read (written by 'cnnext train'), checked before any use."""
    where = f"MODEL {path}: metadata"
    shape = meta.get("input_shape")
    if shape is not None:
        if not isinstance(shape, list) or len(shape) != 3:
            raise UsageError(f"{where}: input_shape must be [channels, height, width], got {shape!r}")
        try:
            for i, s in enumerate(shape):
                check_int(s, f"input_shape[{i}]", where, minimum=1)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    for key in ("dataset", "data_dir"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise UsageError(f"{where}: {key} must be a string, got {type(meta[key]).__name__} {meta[key]!r}")


def load_test_split(meta, data_dir, model_path):
    """Return (test split, description) of the data a model was trained on (or of ``data_dir``).

    With ``data_dir`` (``--data``) its IDX files are read whatever the model was trained on (its
    image shape is checked); without, the model's metadata says: the digits, or an IDX directory.
    """
    dataset = meta.get("dataset") or "digits"
    option = "--data"
    if data_dir is None and dataset != "digits":
        if dataset not in _IDX_DATASETS:
            raise UsageError(f"{model_path} was trained on {dataset!r}, which cnnext cannot load; "
                             f"pass --data DIR (MNIST-format IDX files)")
        data_dir = meta.get("data_dir")
        if not data_dir:
            raise UsageError(f"{model_path} was not trained on the digits; pass --data DIR")
        option = f"{model_path} was trained on {dataset} in"
        if not os.path.isdir(data_dir):
            raise UsageError(f"{option} {data_dir}, no such directory now; pass --data DIR")
    if data_dir is not None and dataset not in _IDX_DATASETS:
        dataset = "mnist"  # a digits model on IDX files: read them (the image shape is checked below)
    _, test, source, _ = load_data(data_dir, dataset, option=option, test_only=True)
    if test.X.shape[0] == 0:
        raise UsageError(f"the test split of {source} holds no images")
    shape = meta.get("input_shape")
    if shape is not None and list(test.X.shape[1:]) != list(shape):
        raise UsageError(f"the model expects images of shape {tuple(shape)}, the test data has "
                         f"{tuple(test.X.shape[1:])}")
    return test, source


def model_outputs(model, X, model_path, batch_size=256):
    """The model's outputs for ``X`` (N >= 1 images), checked: shape (N, classes), finite values.

    A model that cannot take these images, gives no class scores or non-finite ones is a
    UsageError naming the model file.
    """
    from cnnext.training import predict

    try:
        out = predict(model, X, batch_size=batch_size)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"MODEL {model_path} cannot take images of shape {tuple(X.shape[1:])}: {exc}") from None
    check_outputs(out, X.shape[0], model_path)
    return out


def check_outputs(out, n, model_path):
    """Raise UsageError unless ``out`` holds finite class scores of shape (n, classes >= 1)."""
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise UsageError(f"MODEL {model_path}: its output for {n} image{'s' * (n != 1)} has shape "
                         f"{out.shape}; a classifier must output (images, classes)")
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise UsageError(f"MODEL {model_path}: its output for image #{int(np.argmax(bad))} is not finite "
                         f"(NaN or inf); check the model's weights and the scale of the images")
