"""Memory does not grow: every op and layer run thousands of times (issue 6, item 3).

Each case is one step (forward + backward, or a train step, or a save + load, or a failing call)
on small arrays, run about 2000 times (``N_STEPS`` = 600 per block, three blocks and a warm-up;
CNNEXT_LEAK_STEPS changes it; the train step uses blocks half as long and save/load a sixth, since a
save fsyncs). After a warm-up and one unmeasured block (caches, OpenMP thread pools, allocator
and free-list pools):

- under ``tracemalloc``, which sees every numpy data buffer and every Python object, the traced
  memory after a block of ``N_STEPS`` steps (after ``gc.collect()``) may exceed that before by at
  most ``TRACED_TOLERANCE`` = 16 KiB, i.e. 27 bytes per step: one leaked numpy array, tuple, list or
  dict per step exceeds it, while free-list jitter (a few KiB, whatever the block length) does not;
- then, measuring the resident set size (``/proc/self/statm``), which also sees C allocations the
  extensions might make and never free, a further block of ``N_STEPS`` steps may grow it by at most
  ``RSS_TOLERANCE`` = 2 MiB (3.5 KiB per step: allocator noise stays below it, a leaked im2col
  workspace or output buffer does not).

Two positive controls show that the measurement can fail: a step that keeps a small numpy array
alive each time (caught by tracemalloc), and a step that mallocs from C and never frees (invisible
to tracemalloc, caught by RSS).

Under ASan (tools/sanitize.sh sets CNNEXT_SANITIZER=1), freed memory sits in ASan's quarantine,
so RSS says nothing about leaks: only the tracemalloc half runs there.
"""
import ctypes
import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext import nn, optim
from cnnext._config import force_conv_algorithm

N_STEPS = int(os.environ.get("CNNEXT_LEAK_STEPS", "600"))
WARMUP = 100
TRACED_TOLERANCE = 16 * 2**10  # bytes over a block of N_STEPS steps: 27 bytes per step
RSS_TOLERANCE = 2 * 2**20  # bytes over a block of N_STEPS steps: 3.5 KiB per step
UNDER_SANITIZER = bool(os.environ.get("CNNEXT_SANITIZER"))
HAVE_STATM = os.path.exists("/proc/self/statm")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def traced_growth(step, n):
    """Bytes still traced by tracemalloc after a block of ``n`` steps.

    The first block after ``tracemalloc.start()`` is not measured: memory allocated before tracing
    started and reused from free lists shows up there once. What is left after that is a few KiB of
    free-list jitter (floats, tuples, dicts kept for reuse), independent of ``n``.
    """
    for _ in range(WARMUP):
        step()
    tracemalloc.start()
    try:
        for _ in range(n):
            step()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            step()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


def rss_growth(step, n, warm=True):
    """RSS growth in bytes over a block of ``n`` steps (after a warm-up block unless ``warm=False``)."""
    if warm:
        for _ in range(WARMUP + n):
            step()
    gc.collect()
    first = _rss()
    for _ in range(n):
        step()
    gc.collect()
    return _rss() - first


# ------------------------------------------------------------------------------------ the steps

def _rng():
    return np.random.default_rng(0)


def conv_step(algorithm, groups=1, kernel=3, padding=1, stride=1, dtype=np.float64):
    rng = _rng()
    x = rng.standard_normal((2, 6, 8, 8)).astype(dtype)
    w = rng.standard_normal((6, 6 // groups, kernel, kernel)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)

    def step():
        with force_conv_algorithm(algorithm):
            y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
            F.conv2d_backward(y, x, w, stride=stride, padding=padding, groups=groups)
    return step


def max_pool_step(kernel, stride, padding, ceil_mode=False):
    x = _rng().standard_normal((2, 3, 9, 8)).astype(np.float32)

    def step():
        y, idx = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
        F.max_pool2d_backward(y, idx, x.shape)
    return step


def avg_pool_step():
    x = _rng().standard_normal((2, 3, 9, 8))

    def step():
        y = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        F.avg_pool2d_backward(y, x.shape, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    return step


def activations_step():
    x = _rng().standard_normal((4, 16))

    def step():
        F.relu_derivative(F.relu(x))
        F.sigmoid_derivative(F.sigmoid(x))
        F.tanh_derivative(F.tanh(x))
    return step


def linear_losses_step():
    rng = _rng()
    x, w, b = rng.standard_normal((8, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    t = rng.integers(0, 3, 8)
    drop_rng = np.random.default_rng(1)

    def step():
        y = F.linear(x, w, b)
        F.linear_backward(y, x, w)
        F.cross_entropy(y, t)
        F.cross_entropy_backward(y, t)
        F.mse_loss(y, y + 1)
        F.mse_loss_backward(y, y + 1)
        z, mask = F.dropout(y, 0.3, True, drop_rng, return_mask=True)
        F.dropout_backward(z, mask)
        F.log_softmax(y)
    return step


def learn_dl_step():
    np.random.seed(0)
    conv = cnnext.ConvLayer(6, 6, 2, 3, 3, 3, 1, 1, cnnext.ReluActivator(), 0.01)
    pool = cnnext.MaxPoolingLayer(6, 6, 3, 2, 2, 2)
    x = _rng().standard_normal((2, 6, 6))
    act = cnnext.SigmoidActivator()

    def step():
        conv.forward(x)
        pool.forward(conv.output_array)
        pool.backward(conv.output_array, np.ones((3, 3, 3)))
        conv.backward(x, pool.delta_array, act)
        conv.update()
        act.forward(0.5)
        act.backward(0.5)
    return step


def nn_train_step():
    """A train step of a small CNN; the three optimizers take turns on the same model."""
    rng = _rng()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, groups=4, padding=1, rng=1), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Dropout(0.2, rng=2), nn.Linear(16, 3, rng=3), nn.Sigmoid())
    crit = nn.CrossEntropyLoss()
    mse = nn.MSELoss()
    opts = [optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
            optim.Adam(model.parameters(), lr=1e-3), optim.AdamW(model.parameters(), lr=1e-3)]
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, 4)
    turn = [0]

    def step():
        opt = opts[turn[0] % 3]
        turn[0] += 1
        opt.zero_grad()
        out = model(x)
        crit(out, t)
        model.backward(crit.backward())
        opt.step()
        mse(out, out * 0.5)
        mse.backward()
        model.state_dict()
    return step


def save_load_step(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3, rng=1))
    path = tmp_path / "model.npz"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive")

    def step():
        cnnext.save(model, path, metadata={"step": 1})
        cnnext.load(path)
        try:
            cnnext.load(bad)
        except ValueError:
            pass
    return step


def errors_step():
    x = np.zeros((1, 2, 4, 4))
    w = np.zeros((2, 2, 3, 3))
    gy = np.ones((1, 2, 2, 2))
    idx = np.full((1, 2, 2, 2), 99, dtype=np.int64)  # out of range: the kernel runs, then it raises

    def step():
        for call in (lambda: F.conv2d(x, w, stride=0), lambda: F.conv2d(x, w.astype(complex)),
                     lambda: F.max_pool2d_backward(gy, idx, x.shape), lambda: F.max_pool2d(x, 9),
                     lambda: nn.Conv2d(2, 3, 0)):
            try:
                call()
            except (ValueError, TypeError):
                pass
    return step


STEPS = {
    "conv2d_gemm": lambda tmp: conv_step("gemm"),
    "conv2d_gemm_strided_float32": lambda tmp: conv_step("gemm", stride=2, dtype=np.float32),
    "conv2d_direct_depthwise": lambda tmp: conv_step("direct", groups=6),
    "conv2d_pointwise": lambda tmp: conv_step("auto", kernel=1, padding=0),
    "max_pool2d_2x2_fastpath": lambda tmp: max_pool_step(2, 2, 0),
    "max_pool2d_3x3_pad_ceil": lambda tmp: max_pool_step(3, 2, 1, ceil_mode=True),
    "avg_pool2d": lambda tmp: avg_pool_step(),
    "activations": lambda tmp: activations_step(),
    "linear_losses_dropout": lambda tmp: linear_losses_step(),
    "learn_dl_layers": lambda tmp: learn_dl_step(),
    "nn_train_sgd_adam_adamw": lambda tmp: nn_train_step(),
    "save_load": save_load_step,
    "errors": lambda tmp: errors_step(),
}
FEWER = {"save_load": 6, "nn_train_sgd_adam_adamw": 2}  # a save fsyncs; a train step is long


@pytest.mark.parametrize("name", sorted(STEPS))
def test_no_memory_growth(name, tmp_path):
    step = STEPS[name](tmp_path)
    n = max(100, N_STEPS // FEWER.get(name, 1))
    grown = traced_growth(step, n)
    assert grown <= TRACED_TOLERANCE, f"{name}: {grown} bytes still allocated after {n} steps"
    if UNDER_SANITIZER:
        return  # freed memory sits in ASan's quarantine: RSS says nothing here
    if not HAVE_STATM:
        pytest.skip("no /proc/self/statm on this platform: RSS part not measured")
    rss = rss_growth(step, n, warm=False)  # warmed up by the traced blocks
    assert rss <= RSS_TOLERANCE, f"{name}: RSS grew by {rss / 2**20:.1f} MiB over {n} steps"


# ------------------------------------------------------------------------------------ controls

def test_control_tracemalloc_sees_a_numpy_leak():
    kept = []
    grown = traced_growth(lambda: kept.append(np.empty(1)), N_STEPS)
    assert grown > TRACED_TOLERANCE  # ~100 bytes per kept array


@pytest.mark.skipif(not HAVE_STATM or UNDER_SANITIZER, reason="needs /proc/self/statm and no ASan")
@pytest.mark.skipif(sys.platform != "linux", reason="libc malloc through ctypes: Linux")
def test_control_rss_sees_a_c_leak():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]

    def leak():
        p = libc.malloc(8192)
        ctypes.memset(p, 1, 8192)  # touch the pages so they become resident

    assert traced_growth(leak, 100) <= TRACED_TOLERANCE  # invisible to tracemalloc
    # Free heap memory left resident by earlier tests would serve the leak without new pages (RSS
    # flat): glibc's malloc_trim hands it back to the system first (musl has none, and keeps less).
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
    assert rss_growth(leak, N_STEPS) > RSS_TOLERANCE  # 8 KiB per step
