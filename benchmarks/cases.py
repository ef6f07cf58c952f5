"""The cases of the benchmarks: the shapes, their seeded inputs, and the targets (issue 3) the results
are held to. benchmarks/bench.py runs every contender of benchmarks/contenders.py on them.
"""
from collections import namedtuple

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}

# name: (N, C, H, W, K, kernel, stride, padding)
CONV_SHAPES = {
    "cifar": (64, 32, 32, 32, 64, 3, 1, 1),
    "deep": (32, 128, 16, 16, 128, 3, 1, 1),
    "strided": (32, 64, 32, 32, 128, 3, 2, 1),
    "lenet1": (64, 1, 28, 28, 6, 5, 1, 0),
    "lenet2": (64, 6, 12, 12, 16, 5, 1, 0),
}
# name: (N, C, H, W, kernel, stride)
POOL_SHAPES = {
    "pool2": (64, 64, 32, 32, 2, 2),
    "pool3": (32, 64, 32, 32, 3, 2),
}

# LeNet-5 training step: a batch of 1x28x28 images, 10 classes
LENET_BATCH = 64
# learn_dl section: ConvLayer(*LEARN_DL_LAYER, ReluActivator(), 0.01) on one 1x28x28 float64 sample
LEARN_DL_LAYER = (28, 28, 1, 5, 5, 6, 0, 1)

# Issue 3's targets, checked on float32 at 2 threads (or the largest thread count run).
TARGET_CONV_RATIO = {"cifar": 0.7, "deep": 0.7, "strided": 0.7, "lenet1": 1.0, "lenet2": 1.0}
TARGET_POOL_RATIO = 0.25
TARGET_LEARN_DL_SPEEDUP = 1000.0
TARGET_GEMM_FRACTION = 0.60  # for the large 3x3 shapes
LARGE_3X3 = ("cifar", "deep", "strided")
TARGET_F64_RATIO = 1.3
TARGET_LENET_RATIO = 1.0

ConvCase = namedtuple("ConvCase", "x w b gy stride padding flops_fwd")
PoolCase = namedtuple("PoolCase", "x gy kernel stride")


def conv_case(name, dname):
    """Seeded inputs of conv shape ``name`` in dtype ``dname``, and its forward FLOP count."""
    N, C, H, W, K, k, s, p = CONV_SHAPES[name]
    dt = DTYPES[dname]
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(dt)
    b = rng.standard_normal(K).astype(dt)
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(dt)
    return ConvCase(x, w, b, gy, s, p, 2.0 * N * K * C * k * k * Ho * Wo)


def pool_case(name, dname):
    """Seeded input and output gradient of max-pool shape ``name`` in dtype ``dname``."""
    N, C, H, W, k, s = POOL_SHAPES[name]
    dt = DTYPES[dname]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(dt)
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    gy = rng.standard_normal((N, C, Ho, Wo)).astype(dt)
    return PoolCase(x, gy, k, s)


def lenet_case(dname):
    """A seeded batch of LENET_BATCH images and their class labels."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((LENET_BATCH, 1, 28, 28)).astype(DTYPES[dname])
    return x, rng.integers(0, 10, LENET_BATCH)


def lenet_flops():
    """FLOPs of one LeNet-5 forward pass over a batch, conv and linear layers only."""
    B = LENET_BATCH
    return (2.0 * B * 6 * 1 * 25 * 24 * 24 + 2.0 * B * 16 * 6 * 25 * 8 * 8
            + 2.0 * B * (256 * 120 + 120 * 84 + 84 * 10))


def learn_dl_case():
    """The learn_dl section's float64 sample (1, 28, 28) and sensitivity map (6, 24, 24)."""
    rng = np.random.default_rng(0)
    return rng.random((1, 28, 28)), rng.standard_normal((6, 24, 24))
