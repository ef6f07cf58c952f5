"""Data augmentation on whole batches: ``RandomCrop``, ``RandomHorizontalFlip``, ``Normalize``, ``Compose``.

The names, arguments and semantics follow torchvision's transforms, but each call takes a batch
``(N, C, H, W)`` (or one ``(C, H, W)`` sample) and draws an independent crop offset / flip for
every sample in one vectorised step. Random transforms take ``rng`` (a seed or a
``numpy.random.Generator``): the same seed gives the same augmentations. Inputs are never
modified; the output keeps the input's dtype (``Normalize`` computes in float, as
``cnnext.functional`` does). ``DataLoader(X, y, transform=...)`` applies a transform to each
batch of ``X``.

Random draws, per call on a batch of N samples (part of the contract, so runs are reproducible):
``RandomCrop`` draws the N row offsets, then the N column offsets, each with ``rng.integers``;
``RandomHorizontalFlip`` draws ``rng.random(N)`` and flips the samples where it is below ``p``.
"""
import numbers
import operator

import numpy as np

from cnnext._validation import as_float_array, check_choice, check_float, check_rng, to_pair

__all__ = ["RandomCrop", "RandomHorizontalFlip", "Normalize", "Compose"]


def _as_batch(x, func):
    """Return (x as an (N, C, H, W) array, True if it was one (C, H, W) sample)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{func}: input must be an array of numbers ({exc})") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{func}: input must hold real numbers, got dtype {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{func}: input must be (N, C, H, W) or (C, H, W), got shape {x.shape}")
    return (x[None], True) if x.ndim == 3 else (x, False)


def _padding(padding, func):
    """torchvision's padding forms -> (left, top, right, bottom) non-negative ints."""
    if padding is None:
        return (0, 0, 0, 0)
    if isinstance(padding, (tuple, list)):
        if len(padding) not in (1, 2, 4):
            raise ValueError(f"{func}: padding must be an int or a sequence of 1, 2 or 4 ints, got {padding!r}")
        vals = []
        for v in padding:
            if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
                raise TypeError(f"{func}: padding must hold ints, got {padding!r}")
            vals.append(operator.index(v))
        if len(vals) == 1:
            vals *= 4
        elif len(vals) == 2:  # (left/right, top/bottom), as torchvision
            vals = [vals[0], vals[1], vals[0], vals[1]]
    else:
        if isinstance(padding, (bool, np.bool_)) or not hasattr(padding, "__index__"):
            raise TypeError(f"{func}: padding must be an int or a sequence of ints, got "
                            f"{type(padding).__name__} {padding!r}")
        vals = [operator.index(padding)] * 4
    if min(vals) < 0:
        raise ValueError(f"{func}: padding must be >= 0, got {padding!r}")
    return tuple(vals)


class RandomCrop:
    """Crop a random ``size`` window out of every sample, after optional padding.

    Parameters
    ----------
    size : int or (h, w)
        Output height and width.
    padding : int or sequence, optional
        Added around each image first: an int for all sides, ``(left/right, top/bottom)`` or
        ``(left, top, right, bottom)`` (torchvision's order).
    fill : float
        Value of the padding for ``padding_mode='constant'``.
    padding_mode : {'constant', 'edge', 'reflect', 'symmetric'}
        As torchvision (and ``numpy.pad``).
    rng : None, int or numpy.random.Generator
        Source of the crop offsets.

    Examples
    --------
    >>> crop = RandomCrop(32, padding=4, rng=0)      # the usual CIFAR-10 augmentation
    >>> crop(np.zeros((128, 3, 32, 32), np.float32)).shape
    (128, 3, 32, 32)
    """

    def __init__(self, size, padding=None, fill=0, padding_mode="constant", rng=None):
        func = "RandomCrop"
        self.size = to_pair(size, "size", func, minimum=1)
        self.padding = _padding(padding, func)
        self.fill = check_float(fill, "fill", func)
        self.padding_mode = check_choice(padding_mode, "padding_mode", func,
                                         ("constant", "edge", "reflect", "symmetric"))
        self.rng = check_rng(rng, "rng", func)

    def __call__(self, x):
        func = "RandomCrop"
        x, single = _as_batch(x, func)
        N, C, H, W = x.shape
        left, top, right, bottom = self.padding
        Hp, Wp = H + top + bottom, W + left + right
        h, w = self.size
        if h > Hp or w > Wp:
            raise ValueError(f"{func}: crop size {(h, w)} is larger than the padded input {(Hp, Wp)} "
                             f"(input shape {x.shape}, padding {self.padding})")
        if any(self.padding):
            if self.padding_mode == "reflect" and (max(top, bottom) >= H or max(left, right) >= W):
                raise ValueError(f"{func}: padding_mode='reflect' needs padding smaller than the image, "
                                 f"got padding {self.padding} for images of {(H, W)}")
            widths = ((0, 0), (0, 0), (top, bottom), (left, right))
            if self.padding_mode == "constant":
                x = np.pad(x, widths, mode="constant", constant_values=np.array(self.fill).astype(x.dtype))
            else:
                x = np.pad(x, widths, mode=self.padding_mode)
        rows = self.rng.integers(0, Hp - h + 1, size=N)
        cols = self.rng.integers(0, Wp - w + 1, size=N)
        windows = np.lib.stride_tricks.sliding_window_view(x, (h, w), axis=(2, 3))
        out = np.ascontiguousarray(windows[np.arange(N), :, rows, cols])  # (N, C, h, w)
        return out[0] if single else out

    def __repr__(self):
        return (f"RandomCrop(size={self.size}, padding={self.padding}, fill={self.fill:g}, "
                f"padding_mode={self.padding_mode!r})")


class RandomHorizontalFlip:
    """Mirror each sample left-right with probability ``p``.

    Parameters
    ----------
    p : float
        Probability of flipping, in [0, 1].
    rng : None, int or numpy.random.Generator
        Source of the coin flips.
    """

    def __init__(self, p=0.5, rng=None):
        self.p = check_float(p, "p", "RandomHorizontalFlip", minimum=0.0, maximum=1.0)
        self.rng = check_rng(rng, "rng", "RandomHorizontalFlip")

    def __call__(self, x):
        x, single = _as_batch(x, "RandomHorizontalFlip")
        flip = self.rng.random(x.shape[0]) < self.p
        out = np.array(x, copy=True, order="C")
        out[flip] = x[flip][..., ::-1]
        return out[0] if single else out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"


class Normalize:
    """``(x - mean[c]) / std[c]`` for every channel ``c``, as torchvision's ``Normalize``.

    Parameters
    ----------
    mean, std : float or sequence of floats
        One value per channel (or one for all); ``std`` must be > 0. The result is computed in the
        input's float dtype (float32 stays float32; integers become float64).
    """

    def __init__(self, mean, std):
        func = "Normalize"
        self.mean = self._values(mean, "mean", func)
        self.std = self._values(std, "std", func)
        if self.mean.size != self.std.size and 1 not in (self.mean.size, self.std.size):
            raise ValueError(f"{func}: mean and std must have the same length, got {self.mean.size} "
                             f"and {self.std.size}")
        if (self.std <= 0).any():
            raise ValueError(f"{func}: std must be > 0, got {self.std.tolist()}")

    @staticmethod
    def _values(v, name, func):
        seq = v if isinstance(v, (tuple, list, np.ndarray)) else [v]
        if len(seq) == 0:
            raise ValueError(f"{func}: {name} must not be empty")
        if any(isinstance(e, (bool, np.bool_)) or not isinstance(e, (numbers.Real, np.floating, np.integer))
               for e in np.asarray(seq, dtype=object).ravel()):
            raise TypeError(f"{func}: {name} must be a real number or a sequence of them, got {v!r}")
        arr = np.asarray(seq, dtype=np.float64).ravel()
        for e in arr:
            check_float(e, name, func)
        return arr

    def __call__(self, x):
        func = "Normalize"
        x = as_float_array(x, "input", func, ndims=(3, 4))
        C = x.shape[-3]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, C):
                raise ValueError(f"{func}: {name} has {v.size} values but the input has {C} channels "
                                 f"(shape {x.shape})")
        mean = self.mean.astype(x.dtype)[:, None, None]
        std = self.std.astype(x.dtype)[:, None, None]
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Compose:
    """Apply several transforms in order: ``Compose([RandomCrop(32, 4), RandomHorizontalFlip()])``.

    Parameters
    ----------
    transforms : sequence of callables
        Each takes a batch and returns a batch.
    """

    def __init__(self, transforms):
        if not isinstance(transforms, (list, tuple)):
            raise TypeError(f"Compose: transforms must be a list or tuple of callables, got "
                            f"{type(transforms).__name__}")
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable, got {type(t).__name__}")
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
