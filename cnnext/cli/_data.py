"""Data and model files for the commands: the digits or MNIST IDX files, saved models, test splits."""
import os

from cnnext.cli._common import UsageError, positive_int


def load_data(data_dir, dataset="mnist", download=False):
    """Return (train, test, description, metadata) for the digits or an MNIST directory."""
    from cnnext.datasets import load_digits, load_mnist

    if data_dir is None:
        train, test = load_digits()
        return train, test, "digits", {"dataset": "digits"}
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not download and not os.path.isdir(data_dir):
        raise UsageError(f"--data {data_dir}: no such directory")
    train = load_mnist(data_dir, "train", download=download, dataset=dataset)
    test = load_mnist(data_dir, "test", download=download, dataset=dataset)
    return train, test, f"{dataset} IDX files in {data_dir}", {"dataset": dataset, "data_dir": data_dir}


def add_model_arguments(p):
    """MODEL, --data and --threads: the arguments of the commands that use a saved model."""
    p.add_argument("model", metavar="MODEL", help="a .npz file written by 'cnnext train' or cnnext.save")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="MNIST IDX directory (default: the data the model was trained on)")
    p.add_argument("--threads", type=positive_int, default=1, help="threads (default 1)")


def load_model(path):
    """Return (model, metadata) of a model file, or raise UsageError when there is no such file."""
    from cnnext import load

    if not os.path.isfile(path):
        raise UsageError(f"MODEL {path}: no such file")
    return load(path, return_metadata=True)


def load_test_split(meta, data_dir, model_path):
    """Return (test split, description) of the data a model was trained on (or of ``data_dir``)."""
    if data_dir is None and meta.get("dataset", "digits") != "digits":
        data_dir = meta.get("data_dir")
        if not data_dir:
            raise UsageError(f"{model_path} was not trained on the digits; pass --data DIR")
    _, test, source, _ = load_data(data_dir, meta.get("dataset", "mnist") if data_dir else "mnist")
    shape = meta.get("input_shape")
    if shape is not None and list(test.X.shape[1:]) != list(shape):
        raise UsageError(f"the model expects images of shape {tuple(shape)}, the test data has "
                         f"{tuple(test.X.shape[1:])}")
    return test, source
