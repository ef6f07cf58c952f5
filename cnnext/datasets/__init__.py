"""Datasets for training: the embedded 8x8 digits, an MNIST/Fashion-MNIST IDX reader, minibatches.

- ``load_digits()``: 1797 handwritten digits, 8x8 pixels (UCI "Optical Recognition of Handwritten
  Digits", CC BY 4.0), shipped inside the package; a fixed train/test split.
- ``load_mnist(path, kind)``: MNIST or Fashion-MNIST from IDX files (``.gz`` or plain), with an
  optional checksum-verified download; ``read_idx`` reads any single IDX file.
- ``load_cifar10(path, kind)``: CIFAR-10 from its official binary version (the archive or the
  extracted ``.bin`` batches), with an optional MD5-verified download.
- ``iterate_minibatches`` and ``DataLoader``: seeded shuffling, last partial batch kept;
  ``DataLoader(transform=...)`` applies ``cnnext.datasets.transforms`` (random crops, flips,
  normalisation) to each batch.
"""
from cnnext.datasets import transforms
from cnnext.datasets._batching import DataLoader, iterate_minibatches
from cnnext.datasets._cifar import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, load_cifar10
from cnnext.datasets._digits import Dataset, Split, load_digits
from cnnext.datasets._idx import MNIST_CHECKSUMS, FASHION_MNIST_CHECKSUMS, load_mnist, read_idx

__all__ = [
    "load_digits",
    "load_mnist",
    "load_cifar10",
    "read_idx",
    "iterate_minibatches",
    "DataLoader",
    "Dataset",
    "Split",
    "MNIST_CHECKSUMS",
    "FASHION_MNIST_CHECKSUMS",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "transforms",
]
