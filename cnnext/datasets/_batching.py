"""Minibatches over in-memory arrays, shuffled with a seed."""
import numpy as np

from cnnext._validation import check_int

__all__ = ["iterate_minibatches", "DataLoader"]


def _check(X, y, batch_size, func):
    X = np.asarray(X)
    if X.ndim < 1:
        raise ValueError(f"{func}: X must have a sample axis, got a 0-d array")
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"{func}: y must have one entry per sample of X ({X.shape[0]}), "
                             f"got shape {y.shape}")
    return X, y, check_int(batch_size, "batch_size", func, minimum=1)


def _batches(X, y, batch_size, order):
    n = X.shape[0] if order is None else len(order)
    for start in range(0, n, batch_size):
        if order is None:
            sl = slice(start, start + batch_size)
            xb = X[sl]
            yb = y[sl] if y is not None else None
        else:
            idx = order[start:start + batch_size]
            xb = X[idx]
            yb = y[idx] if y is not None else None
        yield (xb, yb) if y is not None else xb


def iterate_minibatches(X, y=None, batch_size=32, shuffle=True, seed=None):
    """Yield ``(X_batch, y_batch)`` pairs (or ``X_batch`` alone when ``y`` is None).

    Parameters
    ----------
    X : array_like, shape (N, ...)
    y : array_like, shape (N, ...), optional
    batch_size : int
        The last batch holds the remaining ``N % batch_size`` samples when it is not zero.
    shuffle : bool
        Visit the samples in a random order.
    seed : int or numpy.random.Generator, optional
        Seed of the order; the same seed gives the same batches.
    """
    X, y, batch_size = _check(X, y, batch_size, "iterate_minibatches")
    order = np.random.default_rng(seed).permutation(X.shape[0]) if shuffle else None
    return _batches(X, y, batch_size, order)


class DataLoader:
    """Iterable over minibatches of in-memory arrays, reshuffled every epoch.

    Parameters
    ----------
    X : array_like, shape (N, ...)
    y : array_like, shape (N, ...), optional
    batch_size : int
    shuffle : bool
    seed : int or numpy.random.Generator, optional
        One Generator is made from it at construction, so the sequence of epochs is reproducible.
    drop_last : bool
        Skip the last batch when it is smaller than ``batch_size`` (kept by default).
    transform : callable, optional
        Applied to every batch of ``X`` (not to ``y``) before it is yielded, e.g.
        ``cnnext.datasets.transforms.Compose([RandomCrop(32, padding=4, rng=0),
        RandomHorizontalFlip(rng=1)])``; it gets the whole ``(B, ...)`` batch.

    Examples
    --------
    >>> loader = DataLoader(X_train, y_train, batch_size=32, shuffle=True, seed=0)
    >>> for epoch in range(3):
    ...     for xb, yb in loader:
    ...         pass
    """

    def __init__(self, X, y=None, batch_size=32, shuffle=False, seed=None, drop_last=False, transform=None):
        self.X, self.y, self.batch_size = _check(X, y, batch_size, "DataLoader")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def __len__(self):
        n = self.X.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = self.X.shape[0]
        order = self._rng.permutation(n) if self.shuffle else None
        if self.drop_last:
            keep = len(self) * self.batch_size
            order = order[:keep] if order is not None else np.arange(keep)
        batches = _batches(self.X, self.y, self.batch_size, order)
        if self.transform is None:
            return batches
        return self._transformed(batches)

    def _transformed(self, batches):
        t = self.transform
        for b in batches:
            yield (t(b[0]), b[1]) if self.y is not None else t(b)
