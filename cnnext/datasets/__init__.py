"""Datasets for training: the embedded 8x8 digits, an MNIST/Fashion-MNIST IDX reader, minibatches.

- ``load_digits()``: 1797 handwritten digits, 8x8 pixels (UCI "Optical Recognition of Handwritten
  Digits", CC BY 4.0), shipped inside the package; a fixed train/test split.
- ``load_mnist(path, kind)``: MNIST or Fashion-MNIST from IDX files (``.gz`` or plain), with an
  optional checksum-verified download; ``read_idx`` reads any single IDX file.
- ``iterate_minibatches`` and ``DataLoader``: seeded shuffling, last partial batch kept.
"""
from cnnext.datasets._batching import DataLoader, iterate_minibatches
from cnnext.datasets._digits import Dataset, Split, load_digits
from cnnext.datasets._idx import MNIST_CHECKSUMS, FASHION_MNIST_CHECKSUMS, load_mnist, read_idx

__all__ = [
    "load_digits",
    "load_mnist",
    "read_idx",
    "iterate_minibatches",
    "DataLoader",
    "Dataset",
    "Split",
    "MNIST_CHECKSUMS",
    "FASHION_MNIST_CHECKSUMS",
]
