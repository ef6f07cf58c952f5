"""cnnext.functional.batch_norm / batch_norm_backward against PyTorch and against naive numpy loops.

The naive oracle here is written from the definitions, in float64, one channel at a time with Python
loops: the mean and biased variance over (N, *spatial), y = (x - mean) / sqrt(var + eps) * w + b,
the running statistics with the unbiased variance, and gradients by central finite differences of
that forward (and by the explicit Jacobian sum). torch is an oracle only: its tests skip without it.
"""
import importlib.machinery
import itertools
import zlib

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext.functional.normalization import _batch_norm_backward, _batch_norm_forward
from naive_oracle import assert_close

DTYPES = [np.float32, np.float64]
# (N, C, S) views: S == 1 (channel blocks, one of them partial), short runs, runs of S >= 32
SHAPES = [(7, 5), (6, 130), (4, 3, 9), (3, 4, 5, 7), (2, 3, 2, 3, 4), (2, 1, 1, 1), (1, 2, 3, 1)]
# torch's float32 batch norm sums in float32: compare with a slightly wider tolerance there
TORCH_TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-11)}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def torch_or_skip():
    return pytest.importorskip("torch")


def close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64), **TORCH_TOL[dtype])


def make(shape, dtype, key, offset=1.5, scale=2.0):
    rng = rng_for(shape, np.dtype(dtype).name, key)
    C = shape[1]
    x = (rng.standard_normal(shape) * scale + offset).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    return x, w, b, gy


# ----------------------------------------------------------------------------------------------
# naive float64 oracle


def naive_stats(x):
    """Per-channel mean and biased variance by Python loops over every value of the channel."""
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape[:2]
    flat = x.reshape(N, C, -1)
    mean, var = np.zeros(C), np.zeros(C)
    for c in range(C):
        vals = [flat[n, c, s] for n in range(N) for s in range(flat.shape[2])]
        m = sum(vals) / len(vals)
        mean[c] = m
        var[c] = sum((v - m) ** 2 for v in vals) / len(vals)
    return mean, var


def naive_forward(x, w, b, mean, var, eps):
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape[:2]
    flat = x.reshape(N, C, -1)
    y = np.zeros_like(flat)
    for n, c, s in itertools.product(range(N), range(C), range(flat.shape[2])):
        y[n, c, s] = (flat[n, c, s] - mean[c]) / np.sqrt(var[c] + eps) * w[c] + b[c]
    return y.reshape(x.shape)


def naive_batch_norm(x, w, b, training, eps, running=None):
    if training:
        mean, var = naive_stats(x)
    else:
        mean, var = running
    return naive_forward(x, w, b, mean, var, eps)


def numeric_grads(x, w, b, gy, training, eps, running=None, h=1e-6):
    """Central finite differences of sum(gy * naive_batch_norm(...)) in x, w and b."""
    x, w, b, gy = (np.asarray(a, dtype=np.float64) for a in (x, w, b, gy))

    def loss(x_, w_, b_):
        return float(np.sum(gy * naive_batch_norm(x_, w_, b_, training, eps, running)))

    grads = []
    for arr in (x, w, b):
        g = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


def jacobian_grad_input(x, w, gy, eps):
    """Training grad_input from the Jacobian dy_i/dx_j = w invstd (d_ij - 1/M - xhat_i xhat_j / M),
    summed with loops over each channel's (i, j) pairs."""
    x, gy = np.asarray(x, dtype=np.float64), np.asarray(gy, dtype=np.float64)
    N, C = x.shape[:2]
    xf, gf = x.reshape(N, C, -1), gy.reshape(N, C, -1)
    mean, var = naive_stats(x)
    gx = np.zeros_like(xf)
    idx = [(n, s) for n in range(N) for s in range(xf.shape[2])]
    M = len(idx)
    for c in range(C):
        invstd = 1 / np.sqrt(var[c] + eps)
        xhat = {p: (xf[p[0], c, p[1]] - mean[c]) * invstd for p in idx}
        for j in idx:
            total = 0.0
            for i in idx:
                jac = w[c] * invstd * ((i == j) - 1 / M - xhat[i] * xhat[j] / M)
                total += gf[i[0], c, i[1]] * jac
            gx[j[0], c, j[1]] = total
    return gx.reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_train_forward_matches_naive_oracle(shape, dtype, affine):
    x, w, b, _ = make(shape, dtype, "fwd")
    C = shape[1]
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y, mean, invstd = _batch_norm_forward(x, rm, rv, w if affine else None, b if affine else None,
                                          training=True, momentum=0.1, eps=1e-5)
    assert y.dtype == dtype and y.shape == shape
    wo = w if affine else np.ones(C)
    bo = b if affine else np.zeros(C)
    assert_close(y, naive_batch_norm(x, wo.astype(np.float64), bo.astype(np.float64), True, 1e-5))
    m, v = naive_stats(x)
    assert mean.dtype == np.float64 and invstd.dtype == np.float64
    assert_close(mean, m, dtype)
    assert_close(invstd, 1 / np.sqrt(v + 1e-5), dtype)
    M = x.size // C
    assert_close(rm, 0.1 * m, dtype)
    assert_close(rv, 0.9 + 0.1 * v * M / (M - 1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_eval_forward_matches_naive_oracle(shape, dtype):
    x, w, b, _ = make(shape, dtype, "eval")
    C = shape[1]
    rng = rng_for("eval-stats", shape)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = _batch_norm_forward(x, rm, rv, w, b, training=False, eps=1e-3)
    assert_close(y, naive_batch_norm(x, w, b, False, 1e-3, (rm.astype(np.float64), rv.astype(np.float64))))
    np.testing.assert_array_equal(rm, rm0)  # evaluation never updates the running statistics
    np.testing.assert_array_equal(rv, rv0)
    assert_close(mean, rm, dtype)
    assert_close(invstd, 1 / np.sqrt(rv.astype(np.float64) + 1e-3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_running_stats_match_torch(shape, dtype, training, affine):
    torch = torch_or_skip()
    x, w, b, _ = make(shape, dtype, "torch-fwd")
    C = shape[1]
    rng = rng_for("torch-fwd-stats", shape)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    kw = dict(weight=w if affine else None, bias=b if affine else None)
    y = F.batch_norm(x, rm, rv, training=training, momentum=0.3, eps=1e-4, **kw)
    ty = torch.nn.functional.batch_norm(
        torch.tensor(x), trm, trv, weight=torch.tensor(w) if affine else None,
        bias=torch.tensor(b) if affine else None, training=training, momentum=0.3, eps=1e-4)
    close(y, ty.numpy(), dtype)
    close(rm, trm.numpy(), dtype)
    close(rv, trv.numpy(), dtype)
    if training:  # the saved statistics are torch's save_mean / save_invstd
        _, mean, invstd = _batch_norm_forward(x, None, None, training=True, eps=1e-4, **kw)
        _, tmean, tinvstd = torch.native_batch_norm(torch.tensor(x), None, None, None, None, True,
                                                    0.1, 1e-4)
        close(mean, tmean.numpy(), dtype)
        close(invstd, tinvstd.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0, None])
@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7), (4, 3, 5, 6)])
def test_running_stats_step_by_step_match_torch_module(shape, dtype, momentum):
    """Five training batches, then evaluation: running_mean, running_var, num_batches_tracked and the
    outputs follow torch's BatchNorm (whose momentum=None is the cumulative average)."""
    torch = torch_or_skip()
    C = shape[1]
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)]
    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    module = cls(C, momentum=momentum, eps=1e-5, dtype=tdt)
    rng = rng_for("steps", shape, momentum)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.standard_normal(C)))
        module.bias.copy_(torch.tensor(rng.standard_normal(C)))
    w, b = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    nbt = np.zeros((), dtype=np.int64)
    module.train()
    for step in range(5):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum,
                         num_batches_tracked=nbt)
        ty = module(torch.tensor(x))
        close(y, ty.detach().numpy(), dtype)
        close(rm, module.running_mean.numpy(), dtype)
        close(rv, module.running_var.numpy(), dtype)
        assert int(nbt) == int(module.num_batches_tracked) == step + 1
    module.eval()
    x = rng.standard_normal(shape).astype(dtype)
    y = F.batch_norm(x, rm, rv, w, b, training=False, momentum=momentum, num_batches_tracked=nbt)
    close(y, module(torch.tensor(x)).detach().numpy(), dtype)
    assert int(nbt) == 5  # evaluation leaves the count alone


def test_momentum_none_is_the_cumulative_average():
    rng = rng_for("cumulative")
    batches = [rng.standard_normal((8, 3, 2)) * 2 + 1 for _ in range(4)]
    rm, rv, nbt = np.zeros(3), np.ones(3), np.zeros(1, dtype=np.int32)
    for x in batches:
        F.batch_norm(x, rm, rv, training=True, momentum=None, num_batches_tracked=nbt)
    stats = [naive_stats(x) for x in batches]
    M = 16
    assert_close(rm, np.mean([m for m, _ in stats], axis=0))
    assert_close(rv, np.mean([v * M / (M - 1) for _, v in stats], axis=0))
    assert nbt[0] == 4 and nbt.dtype == np.int32


def test_training_without_running_stats_and_without_count():
    x, w, b, _ = make((5, 3, 4), np.float64, "no-stats")
    y = F.batch_norm(x, None, None, w, b, training=True)
    assert_close(y, naive_batch_norm(x, w, b, True, 1e-5))
    # a given num_batches_tracked is only counted with running statistics to update
    nbt = np.zeros((), dtype=np.int64)
    F.batch_norm(x, None, None, training=True, num_batches_tracked=nbt)
    assert int(nbt) == 0


@pytest.mark.parametrize("shape", [(16, 2, 9), (16, 2, 40), (40, 3)])
def test_precision_large_offset(shape):
    # float64 data far from zero: the two-pass variance keeps its digits (channel-wide corrected
    # two-pass for short runs and S == 1, run by run merged for S >= 32)
    rng = rng_for("offset", shape)
    x = rng.standard_normal(shape) * 1e-3 + 1e6
    _, mean, invstd = _batch_norm_forward(x, None, None, training=True, eps=0.0)
    m, v = naive_stats(x)
    np.testing.assert_allclose(mean, m, rtol=1e-14)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(v), rtol=1e-8)


def test_float32_range():
    rng = rng_for("range")
    # float32 data whose sums overflow float32: sums in double stay finite
    x32 = (rng.uniform(1, 2, (64, 2, 4)) * 3e37).astype(np.float32)
    y = F.batch_norm(x32, None, None, training=True)
    assert np.isfinite(y).all()
    assert_close(y, naive_batch_norm(x32, np.ones(2), np.zeros(2), True, 1e-5))


def test_channels_larger_than_a_group():
    # a channel of more than 2 MiB: one channel per group, run statistics merged over 2 runs
    rng = rng_for("big")
    x = (rng.standard_normal((2, 3, 300_000)) * 3 + 5).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    y, mean, invstd = _batch_norm_forward(x, None, None, training=True)
    x64 = x.astype(np.float64)
    m, v = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    np.testing.assert_allclose(mean, m, rtol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(v + 1e-5), rtol=1e-10)
    xhat = (x64 - m[:, None]) / np.sqrt(v[:, None] + 1e-5)
    assert_close(y, xhat)
    gx, gw, gb = F.batch_norm_backward(gy, x, None, mean, invstd)
    g64 = gy.astype(np.float64)
    M = x.size // 3
    assert_close(gb, g64.sum(axis=(0, 2)))
    assert_close(gw, (g64 * xhat).sum(axis=(0, 2)))
    expect = (g64 - g64.mean(axis=(0, 2))[:, None]
              - xhat * (g64 * xhat).sum(axis=(0, 2))[:, None] / M) / np.sqrt(v[:, None] + 1e-5)
    assert_close(gx, expect)


@pytest.mark.parametrize("shape", [(9, 70), (4, 3, 9), (3, 4, 40)])
def test_avx2_and_baseline_builds_agree_bitwise(shape):
    from cnnext._kernels import _norm
    x, w, b, gy = make(shape, np.float32, "simd")
    results = []
    old = _norm._use_avx2(False)
    try:
        for flag in (False, True):
            _norm._use_avx2(flag)
            if not flag:
                assert _norm.simd_build() == "baseline"
            for dtype in (np.float32, np.float64):
                for training in (True, False):
                    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
                    y, m, s = _batch_norm_forward(x.astype(dtype), rm, rv, w, b, training)
                    results.append((flag, (y, m, s, rm, rv) + F.batch_norm_backward(
                        gy.astype(dtype), x.astype(dtype), w, m, s, training)))
    finally:
        _norm._use_avx2(old)
    half = len(results) // 2
    for (_, base), (_, avx) in zip(results[:half], results[half:]):
        for u, v in zip(base, avx):
            np.testing.assert_array_equal(u, v)
    assert _norm.simd_build() in ("avx2", "baseline")


def test_nan_stays_in_its_channel():
    x = rng_for("nan").standard_normal((4, 3, 5))
    x[1, 1, 2] = np.nan
    y = F.batch_norm(x, None, None, training=True)
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(y[:, [0, 2]]).all()


@pytest.mark.parametrize("layout", ["fortran", "slice", "int"])
def test_any_input_layout_or_integer_input(layout):
    base = rng_for("layout").integers(-3, 4, (4, 3, 5, 6))
    if layout == "int":
        x = base
    elif layout == "fortran":
        x = np.asfortranarray(base.astype(np.float64))
    else:
        big = np.zeros((4, 3, 5, 12))
        big[..., ::2] = base
        x = big[..., ::2]
    y = F.batch_norm(x, None, None, training=True)
    assert y.dtype == np.float64
    assert_close(y, naive_batch_norm(base, np.ones(3), np.zeros(3), True, 1e-5))
    gx, gw, gb = F.batch_norm_backward(x, x, None, *_batch_norm_forward(x, None, None, None, None, True)[1:])
    assert gx.flags.c_contiguous and gx.shape == x.shape


# ----------------------------------------------------------------------------------------------
# backward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_gradients_match_torch_autograd(shape, dtype, training, affine):
    torch = torch_or_skip()
    x, w, b, gy = make(shape, dtype, "torch-bwd")
    C = shape[1]
    rng = rng_for("torch-bwd-stats", shape)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    weight = w if affine else None
    y, mean, invstd = _batch_norm_forward(x, rm.copy(), rv.copy(), weight, b if affine else None,
                                          training=training, eps=1e-4)
    gx, gw, gb = F.batch_norm_backward(gy, x, weight, mean, invstd, training=training)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w if affine else np.ones(C, dtype), requires_grad=True)
    tb = torch.tensor(b if affine else np.zeros(C, dtype), requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, torch.tensor(rm), torch.tensor(rv), tw, tb,
                                        training=training, eps=1e-4)
    ty.backward(torch.tensor(gy))
    close(y, ty.detach().numpy(), dtype)
    for ours, theirs in ((gx, tx.grad), (gw, tw.grad), (gb, tb.grad)):
        assert ours.dtype == dtype
        close(ours, theirs.numpy(), dtype)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 2), (3, 2, 3), (2, 2, 2, 3)])
def test_gradients_match_naive_finite_differences(shape, training):
    x, w, b, gy = make(shape, np.float64, "fd")
    C = shape[1]
    running = (rng_for("fd-stats").standard_normal(C), rng_for("fd-var").uniform(0.5, 2, C))
    rm, rv = running[0].copy(), running[1].copy()
    _, mean, invstd = _batch_norm_forward(x, rm, rv, w, b, training=training, eps=1e-3)
    gx, gw, gb = F.batch_norm_backward(gy, x, w, mean, invstd, training=training)
    ngx, ngw, ngb = numeric_grads(x, w, b, gy, training, 1e-3, running)
    for ours, theirs in ((gx, ngx), (gw, ngw), (gb, ngb)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    if training:
        assert_close(gx, jacobian_grad_input(x, w, gy, 1e-3))


def test_need_input_false_returns_the_same_parameter_gradients():
    x, w, b, gy = make((4, 3, 5), np.float32, "need")
    for training in (True, False):
        rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
        _, mean, invstd = _batch_norm_forward(x, rm, rv, w, b, training=training)
        full = F.batch_norm_backward(gy, x, w, mean, invstd, training=training)
        gx, gw, gb = _batch_norm_backward(gy, x, w, mean, invstd, training=training, need_input=False)
        assert gx is None
        np.testing.assert_array_equal(gw, full[1])
        np.testing.assert_array_equal(gb, full[2])


def test_weight_none_is_weight_of_ones():
    x, _, _, gy = make((5, 4, 3, 2), np.float64, "ones")
    y1, m, s = _batch_norm_forward(x, None, None, None, None, True)
    y2, _, _ = _batch_norm_forward(x, None, None, np.ones(4), np.zeros(4), True)
    np.testing.assert_array_equal(y1, y2)
    a = F.batch_norm_backward(gy, x, None, m, s)
    c = F.batch_norm_backward(gy, x, np.ones(4), m, s)
    for u, v in zip(a, c):
        np.testing.assert_array_equal(u, v)


# ----------------------------------------------------------------------------------------------
# threads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 5), (7, 150), (3, 7, 33), (4, 5, 6, 7), (5, 7, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_thread_counts_bitwise_identical(shape, dtype, training, restore_config):
    x, w, b, gy = make(shape, dtype, "threads")
    C = shape[1]
    results = []
    for n in (1, 2):
        cnnext.set_num_threads(n)
        rm, rv = np.full(C, 0.5, dtype), np.full(C, 2.0, dtype)
        y, mean, invstd = _batch_norm_forward(x, rm, rv, w, b, training=training)
        grads = F.batch_norm_backward(gy, x, w, mean, invstd, training=training)
        results.append((y, mean, invstd, rm, rv) + grads)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    cnnext.set_num_threads(2)
    assert_close(results[0][0], naive_batch_norm(x, w, b, training, 1e-5,
                                                 (np.full(C, 0.5), np.full(C, 2.0))), dtype)


# ----------------------------------------------------------------------------------------------
# errors


def _args():
    x = np.ones((4, 3, 2, 2))
    return x, np.zeros(3), np.ones(3)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(input=np.ones(3)), ValueError, "input must be 2-D or 3-D or 4-D or 5-D"),
    (dict(input=np.ones((2, 3), dtype=complex)), TypeError, "input"),
    (dict(input=None), TypeError, "input"),
    (dict(weight=np.ones(4)), ValueError, "weight must have shape (3,)"),
    (dict(bias=np.ones((3, 1))), ValueError, "bias must be 1-D"),
    (dict(running_mean=np.zeros(4)), ValueError, "running_mean must have shape (3,)"),
    (dict(running_var=[1.0, 1.0, 1.0], training=True), TypeError, "running_var must be a numpy array"),
    (dict(running_var=np.ones(3, dtype=np.int64), training=True), ValueError, "running_var must be np.float32"),
    (dict(running_var=None), ValueError, "running_mean and running_var must both"),
    (dict(running_mean=None, running_var=None, training=False), ValueError, "needed in evaluation"),
    (dict(training=1), TypeError, "training must be a bool"),
    (dict(momentum=1.5), ValueError, "momentum must be in [0, 1]"),
    (dict(momentum="0.1"), TypeError, "momentum must be a real number"),
    (dict(momentum=True), TypeError, "momentum"),
    (dict(momentum=None, training=True), ValueError, "momentum=None (a cumulative average) needs num_batches_tracked"),
    (dict(eps=-1e-5), ValueError, "eps must be >= 0"),
    (dict(eps=float("nan")), ValueError, "eps must be finite"),
    (dict(num_batches_tracked=3, training=True), TypeError, "num_batches_tracked must be an integer numpy array"),
    (dict(num_batches_tracked=np.zeros(2, dtype=np.int64), training=True), TypeError, "num_batches_tracked"),
    (dict(num_batches_tracked=np.zeros(1), training=True), TypeError, "num_batches_tracked"),
    (dict(input=np.ones((1, 3)), training=True), ValueError, "more than 1 value per channel"),
    (dict(input=np.ones((0, 3, 2)), training=True), ValueError, "more than 1 value per channel"),
])
def test_batch_norm_bad_arguments(kwargs, exc, words):
    x, rm, rv = _args()
    args = dict(input=x, running_mean=rm, running_var=rv, training=True)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        F.batch_norm(**args)
    assert words in str(info.value)
    assert str(info.value).startswith("batch_norm: ")


def test_batch_norm_read_only_running_stats_refused_in_training_only():
    x, rm, rv = _args()
    rm.setflags(write=False)
    with pytest.raises(ValueError, match="running_mean is read-only"):
        F.batch_norm(x, rm, rv, training=True)
    F.batch_norm(x, rm, rv, training=False)  # only read
    nbt = np.zeros((), np.int64)
    nbt.setflags(write=False)
    with pytest.raises(ValueError, match="num_batches_tracked is read-only"):
        F.batch_norm(x, np.zeros(3), np.ones(3), training=True, num_batches_tracked=nbt)


def test_failed_call_leaves_running_stats_alone():
    x, rm, rv = _args()
    with pytest.raises(ValueError):
        F.batch_norm(x, rm, rv, weight=np.ones(5), training=True)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(grad_output=np.ones((4, 3, 2))), ValueError, "grad_output must be 4-D"),
    (dict(grad_output=np.ones((4, 3, 2, 3))), ValueError, "grad_output must have shape (4, 3, 2, 2)"),
    (dict(weight=np.ones(2)), ValueError, "weight must have shape (3,)"),
    (dict(save_mean=np.zeros(2)), ValueError, "save_mean must have shape (3,)"),
    (dict(save_invstd=None), TypeError, "save_mean and save_invstd must be arrays"),
    (dict(save_invstd=np.ones((3, 1))), ValueError, "save_invstd must be 1-D"),
    (dict(training="yes"), TypeError, "training must be a bool"),
    (dict(input=np.ones(5)), ValueError, "input must be 2-D"),
])
def test_batch_norm_backward_bad_arguments(kwargs, exc, words):
    x, _, _ = _args()
    args = dict(grad_output=x, input=x, weight=None, save_mean=np.zeros(3), save_invstd=np.ones(3))
    args.update(kwargs)
    with pytest.raises(exc) as info:
        F.batch_norm_backward(**args)
    assert words in str(info.value)
    assert str(info.value).startswith("batch_norm_backward: ")


def test_private_entry_points_report_under_the_callers_name():
    x, rm, rv = _args()
    with pytest.raises(ValueError, match="^BatchNorm2d: weight must have shape"):
        _batch_norm_forward(x, rm, rv, np.ones(2), None, True, func="BatchNorm2d")
    with pytest.raises(ValueError, match="^BatchNorm2d: save_mean"):
        _batch_norm_backward(x, x, None, np.ones(2), np.ones(3), True, func="BatchNorm2d")


def test_exported_and_compiled():
    assert {"batch_norm", "batch_norm_backward"} <= set(F.__all__)
    from cnnext._kernels import _norm
    from cnnext.functional import normalization
    assert normalization._norm is _norm
    assert _norm.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


@pytest.mark.parametrize("extra", [[], ["--no-torch", "--warm"]])
def test_bench_norm_quick_runs(extra):
    """benchmarks/bench_norm.py runs and prints its table (never asserts a timing)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_norm.py"
    if not script.is_file():
        pytest.skip(f"{script} not found (the benchmarks are not part of this tree)")
    if not extra:
        torch_or_skip()
    env = dict(os.environ)
    where = str(Path(cnnext.__file__).resolve().parent.parent)  # the cnnext these tests import
    env["PYTHONPATH"] = os.pathsep.join([where] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, str(script), "--quick", "--threads", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| shape | dtype | thr | pass | cnnext ms | torch ms | ratio |" in proc.stdout
    assert "| 8x4x6x6 | float32 | 1 | fwd+bwd |" in proc.stdout
    assert "MISMATCH" not in proc.stdout
