"""cnnext.datasets.transforms against hand-written expectations and a naive per-sample oracle.

The oracle below loops over the samples one at a time, pads with explicit slicing (or numpy.pad
for the non-constant modes) and reproduces the documented random draws with a generator seeded
the same way: RandomCrop draws N row offsets then N column offsets with ``rng.integers``,
RandomHorizontalFlip draws ``rng.random(N)``.
"""
import numpy as np
import pytest

from cnnext.datasets import DataLoader
from cnnext.datasets.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip


def oracle_crop(x, size, pad, rng, mode="constant", fill=0):
    """Per-sample RandomCrop: pad = (left, top, right, bottom)."""
    h, w = size
    left, top, right, bottom = pad
    N, C, H, W = x.shape
    rows = rng.integers(0, H + top + bottom - h + 1, size=N)
    cols = rng.integers(0, W + left + right - w + 1, size=N)
    out = np.empty((N, C, h, w), x.dtype)
    for n in range(N):
        if mode == "constant":
            padded = np.full((C, H + top + bottom, W + left + right), fill, x.dtype)
            padded[:, top:top + H, left:left + W] = x[n]
        else:
            padded = np.pad(x[n], ((0, 0), (top, bottom), (left, right)), mode=mode)
        for c in range(C):
            for i in range(h):
                for j in range(w):
                    out[n, c, i, j] = padded[c, rows[n] + i, cols[n] + j]
    return out


def oracle_flip(x, p, rng):
    u = rng.random(x.shape[0])
    out = x.copy()
    for n in range(x.shape[0]):
        if u[n] < p:
            for j in range(x.shape[3]):
                out[n, :, :, j] = x[n, :, :, x.shape[3] - 1 - j]
    return out


def batch(shape=(16, 3, 8, 8), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random(shape).astype(dtype)


# ------------------------------------------------------------------------------------ RandomCrop

def test_crop_hand_computed_windows():
    """3x3 image 0..8, 2x2 crops, no padding: the four possible windows, written out."""
    x = np.tile(np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3), (200, 1, 1, 1))
    windows = {(0, 0): [[0, 1], [3, 4]], (0, 1): [[1, 2], [4, 5]],
               (1, 0): [[3, 4], [6, 7]], (1, 1): [[4, 5], [7, 8]]}
    out = RandomCrop(2, rng=7)(x)
    draws = np.random.default_rng(7)
    rows, cols = draws.integers(0, 2, 200), draws.integers(0, 2, 200)
    for n in range(200):
        np.testing.assert_array_equal(out[n, 0], windows[(rows[n], cols[n])])
    assert len({(r, c) for r, c in zip(rows, cols)}) == 4
    # padding 1 with fill 0: the top-left window of the padded 5x5 image
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    seen = {}
    for seed in range(40):
        out = RandomCrop(3, padding=1, rng=seed)(x)[0, 0]
        seen[tuple(out.ravel())] = out
    assert (0, 0, 0, 0, 1, 2, 0, 4, 5) in seen and (5, 6, 0, 8, 9, 0, 0, 0, 0) in seen
    assert (1, 2, 3, 4, 5, 6, 7, 8, 9) in seen and len(seen) == 9


@pytest.mark.parametrize("size,padding,pad4", [
    (32, 4, (4, 4, 4, 4)),
    ((6, 9), (1, 2), (1, 2, 1, 2)),   # torchvision's 2-sequence: (left/right, top/bottom)
    ((5, 7), (0, 1, 3, 2), (0, 1, 3, 2)),
    (8, None, (0, 0, 0, 0)),
    (3, [2], (2, 2, 2, 2)),
])
def test_crop_matches_the_per_sample_oracle(size, padding, pad4):
    x = batch((13, 3, 32, 32) if size == 32 else (13, 2, 8, 8))
    got = RandomCrop(size, padding=padding, rng=11)(x)
    want = oracle_crop(x, (size, size) if isinstance(size, int) else size, pad4, np.random.default_rng(11))
    np.testing.assert_array_equal(got, want)
    assert got.dtype == x.dtype and got.flags.c_contiguous


@pytest.mark.parametrize("mode", ["edge", "reflect", "symmetric"])
def test_crop_padding_modes_match_numpy_pad_per_sample(mode):
    x = batch((9, 2, 5, 6), np.float64, seed=3)
    got = RandomCrop((5, 6), padding=(2, 3), padding_mode=mode, rng=5)(x)
    np.testing.assert_array_equal(got, oracle_crop(x, (5, 6), (2, 3, 2, 3), np.random.default_rng(5), mode))


def test_crop_fill_dtype_single_sample_and_no_mutation():
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 6, 6)).astype(np.uint8)
    before = x.copy()
    got = RandomCrop(6, padding=2, fill=255, rng=2)(x)
    np.testing.assert_array_equal(got, oracle_crop(x, (6, 6), (2,) * 4, np.random.default_rng(2), fill=255))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(x, before)
    one = RandomCrop(6, padding=2, rng=2)(x[0])
    assert one.shape == (3, 6, 6)
    np.testing.assert_array_equal(one, oracle_crop(x[:1], (6, 6), (2,) * 4, np.random.default_rng(2))[0])


def test_crop_errors():
    with pytest.raises(ValueError, match=r"RandomCrop: crop size \(10, 10\) is larger than the padded input \(9, 9\)"):
        RandomCrop(10, padding=1)(batch((2, 1, 7, 7)))
    with pytest.raises(ValueError, match="padding_mode='reflect' needs padding smaller"):
        RandomCrop(4, padding=4, padding_mode="reflect")(batch((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="RandomCrop: padding must be >= 0"):
        RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match="sequence of 1, 2 or 4 ints"):
        RandomCrop(4, padding=(1, 2, 3))
    with pytest.raises(TypeError, match="RandomCrop: padding must"):
        RandomCrop(4, padding=1.5)
    with pytest.raises(ValueError, match="RandomCrop: size must be >= 1"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        RandomCrop(4, padding_mode="wrap")
    with pytest.raises(TypeError, match="RandomCrop: rng must be"):
        RandomCrop(4, rng="seed")
    with pytest.raises(ValueError, match=r"RandomCrop: input must be \(N, C, H, W\) or \(C, H, W\)"):
        RandomCrop(4)(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="RandomCrop: input must hold real numbers"):
        RandomCrop(1)(np.zeros((1, 1, 2, 2), complex))


# ------------------------------------------------------------------------------------ flips

def test_flip_hand_computed_and_oracle():
    x = np.array([[[[1, 2, 3], [4, 5, 6]]]], np.float32)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), [[[[3, 2, 1], [6, 5, 4]]]])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x), x)
    xb = batch((64, 3, 4, 5))
    for p in (0.5, 0.2):
        got = RandomHorizontalFlip(p=p, rng=9)(xb)
        np.testing.assert_array_equal(got, oracle_flip(xb, p, np.random.default_rng(9)))
    flipped = [not np.array_equal(g, s) for g, s in zip(RandomHorizontalFlip(rng=1)(xb), xb)]
    assert 16 < sum(flipped) < 48  # p=0.5 over 64 samples
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: p must be in \[0.0, 1.0\], got 1.5"):
        RandomHorizontalFlip(p=1.5)


# ------------------------------------------------------------------------------------ Normalize

def test_normalize_hand_computed():
    x = np.empty((1, 2, 1, 2), np.float32)
    x[0, 0] = [[0.5, 1.0]]
    x[0, 1] = [[0.25, 0.0]]
    out = Normalize((0.5, 0.25), (0.25, 0.5))(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[[0.0, 2.0]], [[0.0, -0.5]]]])
    out64 = Normalize(0.5, 2)(np.array([[[[1, 3]]]]))  # integers compute in float64
    assert out64.dtype == np.float64
    np.testing.assert_array_equal(out64, [[[[0.25, 1.25]]]])
    # the CIFAR-10 statistics, in float32 as torchvision computes (x - mean) / std
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    xb = batch((5, 3, 4, 4))
    want = (xb - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    np.testing.assert_array_equal(Normalize(mean, std)(xb), want)
    np.testing.assert_array_equal(Normalize(mean, std)(xb[0]), want[0])


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"Normalize: std must be > 0, got \[1.0, 0.0\]"):
        Normalize((0, 0), (1, 0))
    with pytest.raises(ValueError, match="mean has 2 values but the input has 3 channels"):
        Normalize((0, 0), (1, 1))(batch((1, 3, 2, 2)))
    with pytest.raises(ValueError, match="mean and std must have the same length"):
        Normalize((0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="Normalize: mean must be finite"):
        Normalize(float("nan"), 1)
    with pytest.raises(TypeError, match="Normalize: std must be a real number"):
        Normalize(0, "1")
    with pytest.raises(ValueError, match="must not be empty"):
        Normalize([], [])


# ------------------------------------------------------------------------------------ Compose, DataLoader

def _pipeline(seed):
    return Compose([RandomCrop(8, padding=2, rng=seed), RandomHorizontalFlip(rng=seed + 1),
                    Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])


def test_compose_equals_the_steps_and_is_deterministic_per_seed():
    x = batch((10, 3, 8, 8))
    want = oracle_flip(oracle_crop(x, (8, 8), (2,) * 4, np.random.default_rng(4)), 0.5, np.random.default_rng(5))
    want = (want - np.float32(0.5)) / np.float32(0.25)
    np.testing.assert_array_equal(_pipeline(4)(x), want)
    a, b, c = _pipeline(4), _pipeline(4), _pipeline(6)
    first = [a(x), a(x)]
    np.testing.assert_array_equal(first[0], b(x))
    np.testing.assert_array_equal(first[1], b(x))  # the generators advance identically
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], c(x))
    assert "RandomCrop(size=(8, 8)" in repr(a) and "Normalize(mean=[0.5, 0.5, 0.5]" in repr(a)
    with pytest.raises(TypeError, match=r"Compose: transforms\[1\] must be callable"):
        Compose([RandomHorizontalFlip(), 3])
    with pytest.raises(TypeError, match="Compose: transforms must be a list"):
        Compose(RandomHorizontalFlip())


def test_dataloader_applies_the_transform_per_batch():
    X = batch((23, 3, 8, 8))
    y = np.arange(23)
    loader = DataLoader(X, y, batch_size=5, shuffle=True, seed=3, transform=_pipeline(1))
    oracle = _pipeline(1)
    order_rng = np.random.default_rng(3)
    for epoch in range(2):
        order = order_rng.permutation(23)
        got = list(loader)
        assert [len(yb) for _, yb in got] == [5, 5, 5, 5, 3]
        for k, (xb, yb) in enumerate(got):
            idx = order[5 * k:5 * k + 5]
            np.testing.assert_array_equal(yb, idx)  # labels untouched
            np.testing.assert_array_equal(xb, oracle(X[idx]))
    plain = DataLoader(X, None, batch_size=10, transform=RandomHorizontalFlip(p=1.0))
    np.testing.assert_array_equal(np.concatenate(list(plain)), X[..., ::-1])
    assert DataLoader(X, y).transform is None
    with pytest.raises(TypeError, match="DataLoader: transform must be callable or None, got int"):
        DataLoader(X, y, transform=5)
