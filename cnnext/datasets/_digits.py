"""The 8x8 handwritten digits shipped with cnnext (see data/DIGITS_LICENSE.txt)."""
import os
from collections import namedtuple

import numpy as np

from cnnext._validation import check_int

__all__ = ["load_digits", "Dataset", "Split"]

_PATH = os.path.join(os.path.dirname(__file__), "data", "digits.npz")
_N_SAMPLES = 1797
DIGITS_SPLIT_SEED = 20240601

Split = namedtuple("Split", ["X", "y"])
Split.__doc__ = """Images ``X`` (N, 1, H, W) float32 in [0, 1] and integer labels ``y`` (N,)."""
Dataset = namedtuple("Dataset", ["train", "test"])
Dataset.__doc__ = """A train and a test ``Split``; unpacks as ``(X_train, y_train), (X_test, y_test)``."""


def _raw():
    with np.load(_PATH, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"]
    if images.shape != (_N_SAMPLES, 8, 8) or labels.shape != (_N_SAMPLES,):
        raise ValueError(f"load_digits: the packaged file {_PATH} is damaged "
                         f"(images {images.shape}, labels {labels.shape})")
    return images, labels


def load_digits(test_size=360):
    """Load the 1797 8x8 handwritten digits with a fixed train/test split.

    The pixels (integers 0..16 in the source data) are scaled to [0, 1]. The split is a fixed
    permutation (the same on every machine and every call): by default 1437 training and 360
    test images.

    Parameters
    ----------
    test_size : int
        Number of test images, 1..1796.

    Returns
    -------
    Dataset
        ``(train, test)`` with ``train.X`` float32 of shape (N, 1, 8, 8) and ``train.y`` int64
        labels 0..9; unpacks as ``(X_train, y_train), (X_test, y_test) = load_digits()``.

    Notes
    -----
    Data: E. Alpaydin and C. Kaynak, Optical Recognition of Handwritten Digits, UCI Machine
    Learning Repository (1998), CC BY 4.0.
    """
    test_size = check_int(test_size, "test_size", "load_digits", minimum=1, maximum=_N_SAMPLES - 1)
    images, labels = _raw()
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(_N_SAMPLES)
    X = (images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = labels.astype(np.int64)
    test, train = order[:test_size], order[test_size:]
    return Dataset(Split(X[train], y[train]), Split(X[test], y[test]))
