#!/usr/bin/env python
"""cnnext speed and memory benchmark: cnnext beside PyTorch CPU, plain numpy and learn_dl.

Run from a checkout after ``pip install .`` (PyTorch and threadpoolctl optional:
``pip install ".[bench]"``)::

    python benchmarks/bench.py                      # everything, float32 and float64, 1 and 2 threads
    python benchmarks/bench.py --quick              # smoke run, few repetitions
    python benchmarks/bench.py --shapes cifar,pool2 --dtype float32 --threads 2 --markdown out.md

Every section prints one Markdown table on stdout; progress goes to stderr. See benchmarks/README.md
for what the columns mean.

Method:
- Timings are medians of repeated single calls, taken round-robin over the contenders
  (``for rep: for contender: time one call``) after a warm-up call of each, so slow drifts of a shared
  machine hit every contender alike. The garbage collector is off while timing.
- Threads: cnnext through ``cnnext.set_num_threads``, PyTorch through ``torch.set_num_threads``,
  numpy's BLAS (which cnnext's GEMMs also use) through threadpoolctl.
- Peak extra memory comes from a separate pass under tracemalloc (numpy reports its allocations to
  it): peak traced bytes during one call minus the arrays the call returns. Inputs exist before the
  pass starts, so they are not counted. PyTorch's allocator is invisible to tracemalloc: "n/a".
"""
import argparse
import datetime
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

# Fairness between contenders that take turns on the same cores: numpy's OpenBLAS keeps its idle
# threads spinning for up to 2**28 cycles after every GEMM (cnnext's, the numpy contender's), and
# they slowed the PyTorch call timed next by up to 2.8x (measured: torch strided fwd+bwd 63 ms
# alone, 139 ms right after a numpy GEMM). With this, they sleep at once. OpenBLAS reads it when
# numpy loads it, so it is set before importing numpy; a value given by the user is kept. (PyTorch's
# OpenMP threads get OMP_WAIT_POLICY=PASSIVE from cnnext, imported first: see below.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LEARN_DL = REPO_ROOT.parent / "shared" / "reference" / "learn_dl_cnn.py"

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
SECTIONS = ("conv", "pool", "lenet", "learn_dl", "gemm")
DTYPES = {"float32": np.float32, "float64": np.float64}

# Issue 3's targets, checked on float32 at 2 threads (or the largest thread count run).
TARGET_CONV_RATIO = {"cifar": 0.7, "deep": 0.7, "strided": 0.7, "lenet1": 1.0, "lenet2": 1.0}
TARGET_POOL_RATIO = 0.25
TARGET_LEARN_DL_SPEEDUP = 1000.0
TARGET_GEMM_FRACTION = 0.60  # for the large 3x3 shapes
LARGE_3X3 = ("cifar", "deep", "strided")
TARGET_F64_RATIO = 1.3
TARGET_LENET_RATIO = 1.0

MIB = 2.0 ** 20

torch = None  # set by _import_torch() in main(), before cnnext is imported (see _import_torch)
cnnext = None


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Imports. cnnext is loaded BEFORE PyTorch (default; --import-order torch-first reverses it): both
# link an OpenMP runtime, and a runtime reads its environment (OMP_NUM_THREADS, OMP_WAIT_POLICY,
# GOMP_SPINCOUNT, ...) when it is loaded. cnnext sets OMP_WAIT_POLICY=PASSIVE (unless already set) before
# loading its kernels, because spinning idle OpenMP threads starve numpy's BLAS threads. A cnnext built
# from source on Linux links "libgomp.so.1" by name, so whichever library loads first provides the one
# copy both use: loaded first, cnnext's passive policy applies to torch too (torch's times do not change
# with it, measured on the dev machine); loaded second, cnnext shares torch's spinning runtime, defaults
# to one thread (show_config says so), and this benchmark's forced 2-thread cnnext rows then fight the
# BLAS threads (20x slower). cnnext's wheels vendor a renamed runtime and are not affected by the order.
# The header lists the OpenMP runtimes actually loaded.
# --------------------------------------------------------------------------------------------------
def _import_torch(enabled):
    global torch
    if not enabled:
        return "disabled (--no-torch)"
    try:
        import torch as _torch
        import torch.nn.functional  # noqa: F401
    except ImportError as exc:
        return f"not importable ({exc})"
    torch = _torch
    return None


def _import_cnnext():
    global cnnext
    import cnnext as _cnnext
    import cnnext.functional  # noqa: F401

    cnnext = _cnnext


class Threads:
    """Set every library's thread count for the duration of a ``with`` block."""

    def __init__(self, n):
        self.n = n
        self._limits = None

    def __enter__(self):
        cnnext.set_num_threads(self.n)
        if torch is not None:
            torch.set_num_threads(self.n)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self._limits = None
        else:
            self._limits = threadpool_limits(limits=self.n, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limits is not None:
            self._limits.restore_original_limits()
        return False


# --------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------
def time_round_robin(fns, reps, warmup=1, inner=None):
    """Median-ready samples: ``{name: [seconds per call, ...]}`` over ``reps`` alternating rounds.

    ``inner[name]`` calls are made per round for very fast contenders (the sample is their mean).
    """
    inner = inner or {}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            for name, fn in fns.items():
                k = inner.get(name, 1)
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                samples[name].append((time.perf_counter() - t0) / k)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _arrays(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _arrays(item)


def _owned_bytes(result):
    """Bytes of the numpy buffers a call returned (each base buffer counted once)."""
    seen, total = set(), 0
    for a in _arrays(result):
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) not in seen:
            seen.add(id(base))
            total += base.nbytes
    return total


def peak_extra_mib(fn):
    """Peak traced bytes of one call of ``fn`` minus the numpy arrays it returns, in MiB."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    extra = max(0, peak - _owned_bytes(result))
    del result
    return extra / MIB


def summarise(samples):
    """(median, spread) with spread = interquartile range / median, in percent."""
    med = statistics.median(samples)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        spread = 100.0 * (q[2] - q[0]) / med if med > 0 else 0.0
    else:
        spread = 100.0 * (max(samples) - min(samples)) / med if med > 0 and len(samples) > 1 else 0.0
    return med, spread


# --------------------------------------------------------------------------------------------------
# Plain numpy contender: sliding_window_view + tensordot (an im2col without any loop over pixels)
# --------------------------------------------------------------------------------------------------
def _np_windows(x, kh, kw, stride, padding):
    """(N, C, Ho, Wo, kh, kw) view of the zero-padded input's windows."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def np_conv2d(x, w, b, stride, padding):
    K, _, kh, kw = w.shape
    win = _np_windows(x, kh, kw, stride, padding)
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, K)
    y += b
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def np_conv2d_backward(gy, x, w, stride, padding):
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    win = _np_windows(x, kh, kw, stride, padding)
    gw = np.tensordot(gy, win, axes=([0, 2, 3], [0, 2, 3]))  # (K, C, kh, kw)
    gb = gy.sum(axis=(0, 2, 3))
    dcols = np.tensordot(gy, w, axes=([1], [0]))  # (N, Ho, Wo, C, kh, kw)
    gxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    for i in range(kh):  # col2im: one strided add per kernel tap
        for j in range(kw):
            gxp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    gx = gxp[:, :, padding:padding + H, padding:padding + W] if padding else gxp
    return np.ascontiguousarray(gx), gw, gb


def np_max_pool2d(x, k, s, return_indices=False):
    N, C = x.shape[:2]
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    Ho, Wo = win.shape[2:4]
    flat = win.reshape(N, C, Ho, Wo, k * k)  # copies: the pooling im2col
    if not return_indices:
        return flat.max(axis=-1)
    arg = flat.argmax(axis=-1)
    return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], arg


def np_max_pool2d_backward(gy, arg, x_shape, k, s):
    gx = np.zeros(x_shape, dtype=gy.dtype)
    Ho, Wo = gy.shape[2:]
    for i in range(k):
        for j in range(k):
            gx[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s] += \
                np.where(arg == i * k + j, gy, 0)
    return gx


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------
def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if v != 0 and abs(v) < 10 ** -digits:
        return f"{v:.{digits}g}"
    return f"{v:,.{digits}f}"


def md_table(headers, rows, align=None):
    align = align or ["l"] * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


class Report:
    def __init__(self):
        self.parts = []

    def add(self, text):
        self.parts.append(text)
        print(text + "\n", flush=True)

    def text(self):
        return "\n\n".join(self.parts) + "\n"


def _check(name, got, want, dtype, notes):
    """Compare a cnnext result with a reference once; record a note on mismatch."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    err = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    tol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-9
    if not np.isfinite(err) or err > tol:
        notes.append(f"MISMATCH {name}: max error {err:.3g} (relative to max |value|), tolerance {tol:g}")
    return err


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
class Gemm:
    """A square numpy matmul with a preallocated output: the machine's GEMM rate at one dtype."""

    def __init__(self, dname, quick):
        self.n = 512 if quick else 1024
        rng = np.random.default_rng(1)
        dt = DTYPES[dname]
        self.a = rng.standard_normal((self.n, self.n)).astype(dt)
        self.b = rng.standard_normal((self.n, self.n)).astype(dt)
        self.c = np.empty((self.n, self.n), dtype=dt)
        self.flops = 2.0 * self.n ** 3

    def __call__(self):
        return np.matmul(self.a, self.b, out=self.c)


def gemm_rates(gemms, threads, reps):
    """{(dtype name, threads): (median GFLOP/s, best GFLOP/s, n)} of each dtype's square matmul."""
    rates = {}
    for dname, gemm in gemms.items():
        for t in threads:
            log(f"gemm {dname} threads={t}")
            with Threads(t):
                s = time_round_robin({"gemm": gemm}, max(reps, 3))["gemm"]
            rates[(dname, t)] = (gemm.flops / statistics.median(s) / 1e9, gemm.flops / min(s) / 1e9, gemm.n)
    return rates


def gemm_section(report, rates, threads_note):
    rows = []
    for (dname, t), (med, best, n) in rates.items():
        rows.append([f"{n}x{n} @ {n}x{n}", dname, t, fmt(med, 1), fmt(best, 1)])
    report.add("## numpy GEMM rate (the reference for the '% GEMM' columns)\n\n"
               + md_table(["matmul", "dtype", "threads", "GFLOP/s (median)", "GFLOP/s (best)"], rows,
                          ["l", "l", "r", "r", "r"])
               + "\n\nMeasured on its own before the other sections. The '% GEMM' column of the conv table "
                 "uses the same matmul timed again inside each row's round-robin (so a busy phase of the "
                 "machine slows both alike): a contender's GFLOP/s / that median rate." + threads_note)


def conv_section(report, shapes, dtypes, threads, reps, gemms, results, torch_note):
    F = cnnext.functional
    rows, notes = [], []
    for name in shapes:
        N, C, H, W, K, k, s, p = CONV_SHAPES[name]
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        flops_fwd = 2.0 * N * K * C * k * k * Ho * Wo
        for dname in dtypes:
            dt = DTYPES[dname]
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N, C, H, W)).astype(dt)
            w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(dt)
            b = rng.standard_normal(K).astype(dt)
            gy = rng.standard_normal((N, K, Ho, Wo)).astype(dt)

            fwd = {"cnnext": lambda: F.conv2d(x, w, b, s, p),
                   "numpy": lambda: np_conv2d(x, w, b, s, p)}
            both = {"cnnext": lambda: (F.conv2d(x, w, b, s, p), F.conv2d_backward(gy, x, w, s, p, 1, 1)),
                    "numpy": lambda: (np_conv2d(x, w, b, s, p), np_conv2d_backward(gy, x, w, s, p))}
            if torch is not None:
                tf = torch.nn.functional
                tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
                cl = torch.channels_last
                cx, cw, cgy = (a.contiguous(memory_format=cl) for a in (tx, tw, tgy))
                gx_, gw_, gb_ = (a.clone().requires_grad_() for a in (tx, tw, tb))
                # clone() keeps the memory format: these stay channels_last
                cgx, cgw, cgb = (a.clone().requires_grad_() for a in (cx, cw, tb))

                def t_fwd(xx=tx, ww=tw):
                    with torch.no_grad():
                        return tf.conv2d(xx, ww, tb, s, p)

                def t_both(xx=gx_, ww=gw_, bb=gb_, g=tgy):
                    y = tf.conv2d(xx, ww, bb, s, p)
                    return y, torch.autograd.grad(y, (xx, ww, bb), g)

                fwd["torch"] = t_fwd
                fwd["torch-CL"] = lambda: t_fwd(cx, cw)
                both["torch"] = t_both
                both["torch-CL"] = lambda: t_both(cgx, cgw, cgb, cgy)

            # Correctness, once per shape and dtype, untimed: cnnext against numpy (and torch).
            y0 = F.conv2d(x, w, b, s, p)
            g0 = F.conv2d_backward(gy, x, w, s, p, 1, 1)
            _check(f"{name} {dname} forward vs numpy", y0, np_conv2d(x, w, b, s, p), dt, notes)
            for label, got, want in zip(("grad_input", "grad_weight", "grad_bias"), g0,
                                        np_conv2d_backward(gy, x, w, s, p)):
                _check(f"{name} {dname} {label} vs numpy", got, want, dt, notes)
            if torch is not None:
                _check(f"{name} {dname} forward vs torch", y0, fwd["torch"]().numpy(), dt, notes)
                tg = both["torch"]()[1]
                for label, got, want in zip(("grad_input", "grad_weight", "grad_bias"), g0, tg):
                    _check(f"{name} {dname} {label} vs torch", got, want.numpy(), dt, notes)
            del y0, g0

            for t in threads:
                with Threads(t):
                    for pname, fns, flops in (("fwd", fwd, flops_fwd), ("fwd+bwd", both, 3 * flops_fwd)):
                        log(f"conv {name} {dname} threads={t} {pname}")
                        gemm = gemms[dname]  # the yardstick, timed in the same rounds
                        samples = time_round_robin({**fns, "gemm": gemm}, reps)
                        peak = gemm.flops / statistics.median(samples.pop("gemm")) / 1e9
                        mem = {n_: (peak_extra_mib(f) if not n_.startswith("torch") else None)
                               for n_, f in fns.items()}
                        stats = {n_: summarise(v) for n_, v in samples.items()}
                        t_torch = stats.get("torch", (None,))[0]
                        t_cl = stats.get("torch-CL", (None,))[0]
                        for impl, (med, spread) in stats.items():
                            gf = flops / med / 1e9
                            rows.append([name, dname, t, pname, impl, fmt(med * 1e3),
                                         fmt(gf, 1), fmt(100 * gf / peak, 0),
                                         fmt(med / t_torch) if t_torch else "n/a",
                                         fmt(med / t_cl) if t_cl else "n/a",
                                         fmt(mem[impl], 1), fmt(spread, 0)])
                            results[("conv", name, dname, t, pname, impl)] = {
                                "ms": med * 1e3, "gflops": gf,
                                "gemm_fraction": gf / peak, "gemm_gflops": peak,
                                "ratio_torch": med / t_torch if t_torch else None}
    headers = ["shape", "dtype", "thr", "pass", "impl", "ms", "GFLOP/s", "% GEMM", "x torch",
               "x torch-CL", "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "l", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r"])
    legend = ("\n\nShapes (N, C, H, W, K, kernel, stride, padding): "
              + ", ".join(f"{n} {CONV_SHAPES[n]}" for n in shapes)
              + ". GFLOP/s counts direct-convolution FLOPs (2*N*K*C*kh*kw*Ho*Wo forward, 3x that for "
                "fwd+bwd). '% GEMM' = GFLOP/s / the rate of the GEMM-table matmul, timed again in each "
                "row's round-robin. 'x torch' = time / PyTorch NCHW time, 'x torch-CL' = time / PyTorch "
                "channels_last time (< 1: faster than PyTorch). fwd+bwd computes grad_input, "
                "grad_weight and grad_bias.")
    report.add("## conv2d\n\n" + body + legend + torch_note + _notes(notes))


def pool_section(report, shapes, dtypes, threads, reps, results, torch_note):
    F = cnnext.functional
    rows, notes = [], []
    for name in shapes:
        N, C, H, W, k, s = POOL_SHAPES[name]
        for dname in dtypes:
            dt = DTYPES[dname]
            rng = np.random.default_rng(0)
            x = rng.standard_normal((N, C, H, W)).astype(dt)
            Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
            gy = rng.standard_normal((N, C, Ho, Wo)).astype(dt)

            def c_both():
                y, idx = F.max_pool2d(x, k, s, return_indices=True)
                return y, F.max_pool2d_backward(gy, idx, x.shape)

            def n_both():
                y, arg = np_max_pool2d(x, k, s, return_indices=True)
                return y, np_max_pool2d_backward(gy, arg, x.shape, k, s)

            fwd = {"cnnext": lambda: F.max_pool2d(x, k, s), "numpy": lambda: np_max_pool2d(x, k, s)}
            both = {"cnnext": c_both, "numpy": n_both}
            if torch is not None:
                tf = torch.nn.functional
                tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
                cx, cgy = (a.contiguous(memory_format=torch.channels_last) for a in (tx, tgy))
                gx_ = tx.clone().requires_grad_()
                cgx = cx.detach().clone(memory_format=torch.channels_last).requires_grad_()

                def t_fwd(xx=tx):
                    with torch.no_grad():
                        return tf.max_pool2d(xx, k, s)

                def t_both(xx=gx_, g=tgy):
                    y = tf.max_pool2d(xx, k, s)
                    return y, torch.autograd.grad(y, xx, g)

                fwd["torch"] = t_fwd
                fwd["torch-CL"] = lambda: t_fwd(cx)
                both["torch"] = t_both
                both["torch-CL"] = lambda: t_both(cgx, cgy)

            y0, g0 = c_both()
            yn, gn = n_both()
            _check(f"{name} {dname} forward vs numpy", y0, yn, dt, notes)
            _check(f"{name} {dname} grad_input vs numpy", g0, gn, dt, notes)
            if torch is not None:
                yt, (gt,) = both["torch"]()
                _check(f"{name} {dname} forward vs torch", y0, yt.detach().numpy(), dt, notes)
                _check(f"{name} {dname} grad_input vs torch", g0, gt.numpy(), dt, notes)
            del y0, g0, yn, gn

            gbytes = x.nbytes / 1e9
            for t in threads:
                with Threads(t):
                    for pname, fns in (("fwd", fwd), ("fwd+bwd", both)):
                        log(f"pool {name} {dname} threads={t} {pname}")
                        samples = time_round_robin(fns, reps)
                        mem = {n_: (peak_extra_mib(f) if not n_.startswith("torch") else None)
                               for n_, f in fns.items()}
                        stats = {n_: summarise(v) for n_, v in samples.items()}
                        t_torch = stats.get("torch", (None,))[0]
                        t_cl = stats.get("torch-CL", (None,))[0]
                        for impl, (med, spread) in stats.items():
                            rows.append([name, dname, t, pname, impl, fmt(med * 1e3), fmt(gbytes / med, 1),
                                         fmt(med / t_torch) if t_torch else "n/a",
                                         fmt(med / t_cl) if t_cl else "n/a",
                                         fmt(mem[impl], 1), fmt(spread, 0)])
                            results[("pool", name, dname, t, pname, impl)] = {
                                "ms": med * 1e3, "ratio_torch": med / t_torch if t_torch else None}
    headers = ["shape", "dtype", "thr", "pass", "impl", "ms", "GB/s in", "x torch", "x torch-CL",
               "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "l", "r", "l", "l", "r", "r", "r", "r", "r", "r"])
    legend = ("\n\nShapes (N, C, H, W, kernel, stride): "
              + ", ".join(f"{n} {POOL_SHAPES[n]}" for n in shapes)
              + ". Pooling is memory-bound: 'GB/s in' is the input's size divided by the time. "
                "fwd is inference (no indices kept); fwd+bwd keeps the argmax and computes grad_input.")
    report.add("## max_pool2d\n\n" + body + legend + torch_note + _notes(notes))


def _lenet_torch(dt):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10)).to(dt)


def _lenet_cnnext(dname):
    """The cnnext.nn LeNet-5 in ``dname``; raises ImportError/AttributeError until cnnext.nn exists."""
    import cnnext.nn as cnn

    dt = DTYPES[dname]
    return cnn.Sequential(
        cnn.Conv2d(1, 6, 5, dtype=dt), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(6, 16, 5, dtype=dt), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Flatten(), cnn.Linear(256, 120, dtype=dt), cnn.ReLU(), cnn.Linear(120, 84, dtype=dt), cnn.ReLU(),
        cnn.Linear(84, 10, dtype=dt))


def lenet_section(report, dtypes, threads, reps, results, torch_note):
    try:
        import cnnext.nn as cnn
        import cnnext.optim as coptim
        for attr in ("Sequential", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Flatten", "CrossEntropyLoss"):
            getattr(cnn, attr)
        coptim.SGD  # noqa: B018
        _lenet_cnnext("float32")
    except (ImportError, AttributeError, TypeError) as exc:
        report.add(f"## LeNet-5 training step\n\nSkipped: cnnext.nn / cnnext.optim not available yet ({exc}).")
        return
    rows, notes = [], []
    B = 64
    layer_flops = (2.0 * B * 6 * 1 * 25 * 24 * 24 + 2.0 * B * 16 * 6 * 25 * 8 * 8
                   + 2.0 * B * (256 * 120 + 120 * 84 + 84 * 10))
    for dname in dtypes:
        dt = DTYPES[dname]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((B, 1, 28, 28)).astype(dt)
        target = rng.integers(0, 10, B)
        model = _lenet_cnnext(dname)
        crit = cnn.CrossEntropyLoss()
        opt = coptim.SGD(model.parameters(), lr=0.01)

        def c_fwd():
            return model(x)

        def c_step():
            opt.zero_grad()
            out = model(x)
            loss = crit(out, target)
            model.backward(crit.backward())
            opt.step()
            return loss

        fwd = {"cnnext": c_fwd}
        step = {"cnnext": c_step}
        if torch is not None:
            tdt = torch.float32 if dname == "float32" else torch.float64
            tmodel = _lenet_torch(tdt)
            tcrit = torch.nn.CrossEntropyLoss()
            topt = torch.optim.SGD(tmodel.parameters(), lr=0.01)
            tx, ty = torch.from_numpy(x), torch.from_numpy(target)
            # Same weights in both, when cnnext.nn can load PyTorch's state_dict.
            try:
                model.load_state_dict({k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()})
                with torch.no_grad():
                    _check(f"lenet {dname} forward vs torch", c_fwd(), tmodel(tx).numpy(), dt, notes)
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                notes.append(f"weights not shared with torch ({type(exc).__name__}: {exc}); "
                             "outputs not compared")

            def t_fwd():
                with torch.no_grad():
                    return tmodel(tx)

            def t_step():
                topt.zero_grad()
                loss = tcrit(tmodel(tx), ty)
                loss.backward()
                topt.step()
                return loss

            fwd["torch"] = t_fwd
            step["torch"] = t_step
        for t in threads:
            with Threads(t):
                for pname, fns, flops in (("fwd", fwd, layer_flops), ("train step", step, 3 * layer_flops)):
                    log(f"lenet {dname} threads={t} {pname}")
                    samples = time_round_robin(fns, reps)
                    mem = {n_: (peak_extra_mib(f) if not n_.startswith("torch") else None)
                           for n_, f in fns.items()}
                    stats = {n_: summarise(v) for n_, v in samples.items()}
                    t_torch = stats.get("torch", (None,))[0]
                    for impl, (med, spread) in stats.items():
                        rows.append([dname, t, pname, impl, fmt(med * 1e3, 3), fmt(flops / med / 1e9, 1),
                                     fmt(med / t_torch) if t_torch else "n/a", fmt(mem[impl], 1),
                                     fmt(spread, 0)])
                        results[("lenet", dname, t, pname, impl)] = {
                            "ms": med * 1e3, "ratio_torch": med / t_torch if t_torch else None}
    headers = ["dtype", "thr", "pass", "impl", "ms", "GFLOP/s", "x torch", "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "r", "l", "l", "r", "r", "r", "r", "r"])
    legend = ("\n\nLeNet-5 on a batch of 64 1x28x28 images: conv(1->6,5)-relu-maxpool2-conv(6->16,5)-relu-"
              "maxpool2-flatten-linear(256->120)-relu-linear(120->84)-relu-linear(84->10). 'train step' = "
              "zero_grad, forward, cross-entropy loss, backward, SGD step (lr 0.01). GFLOP/s counts the "
              "conv and linear layers only (3x for a step). 'x torch' = time / the same torch.nn model's.")
    report.add("## LeNet-5 training step (cnnext.nn vs torch.nn)\n\n" + body + legend + torch_note
               + _notes(notes, checked=torch is not None))


def _load_learn_dl(path):
    spec = importlib.util.spec_from_file_location("learn_dl_reference_cnn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def learn_dl_section(report, threads, reps_slow, learn_dl_path, learn_dl_note, results):
    try:
        ConvLayer, Relu, Ident = cnnext.ConvLayer, cnnext.ReluActivator, cnnext.IdentityActivator
    except AttributeError as exc:
        report.add(f"## learn_dl API, single sample\n\nSkipped: cnnext's learn_dl API is not available "
                   f"yet ({exc}).")
        return
    ref = None
    if learn_dl_path is not None:
        try:
            ref = _load_learn_dl(learn_dl_path)
        except Exception as exc:  # any failure of third-party code: report it, keep benchmarking
            learn_dl_note = f"learn_dl code at {learn_dl_path} failed to load ({type(exc).__name__}: {exc})"
    rows, notes = [], []
    rng = np.random.default_rng(0)
    x = rng.random((1, 28, 28))
    sens = rng.standard_normal((6, 24, 24))
    args = (28, 28, 1, 5, 5, 6, 0, 1)
    layer = ConvLayer(*args, Relu(), 0.01)
    fwd = {"cnnext": lambda: layer.forward(x)}
    both = {"cnnext": lambda: (layer.forward(x), layer.backward(x, sens, Ident()))}
    if ref is not None:
        rlayer = ref.ConvLayer(*args, ref.ReluActivator(), 0.01)
        for f_c, f_r in zip(layer.filters, rlayer.filters):  # same weights: compare outputs once
            f_r.weights = np.array(f_c.weights, dtype=np.float64)
            f_r.bias = float(f_c.bias)
        fwd["learn_dl"] = lambda: rlayer.forward(x)
        both["learn_dl"] = lambda: (rlayer.forward(x), rlayer.backward(x, sens, ref.IdentityActivator()))
        both["cnnext"]()
        both["learn_dl"]()
        _check("ConvLayer output vs learn_dl", layer.output_array, rlayer.output_array, np.float64, notes)
        _check("ConvLayer delta_array vs learn_dl", layer.delta_array, rlayer.delta_array, np.float64, notes)
        for i, (f_c, f_r) in enumerate(zip(layer.filters, rlayer.filters)):
            _check(f"filter {i} weights_grad vs learn_dl", f_c.weights_grad, f_r.weights_grad, np.float64,
                   notes)
    for t in threads:
        with Threads(t):
            for pname, fns in (("fwd", fwd), ("fwd+bwd", both)):
                log(f"learn_dl {pname} threads={t}")
                once = min(time_round_robin({"c": fns["cnnext"]}, 5, warmup=2)["c"])
                inner = {"cnnext": max(1, int(0.02 / max(once, 1e-7)))}
                rounds = reps_slow if "learn_dl" in fns else max(reps_slow, 5)
                samples = time_round_robin(fns, rounds, inner=inner)
                mem = {n_: peak_extra_mib(f) for n_, f in fns.items()}
                stats = {n_: summarise(v) for n_, v in samples.items()}
                t_ref = stats.get("learn_dl", (None,))[0]
                for impl, (med, spread) in stats.items():
                    rows.append([t, pname, impl, fmt(med * 1e3, 3), fmt(t_ref / med, 0) if t_ref else "n/a",
                                 fmt(mem[impl], 2), len(samples[impl]), fmt(spread, 0)])
                    results[("learn_dl", t, pname, impl)] = {"ms": med * 1e3,
                                                             "speedup": t_ref / med if t_ref else None}
    headers = ["thr", "pass", "impl", "ms", "speedup vs learn_dl", "extra MiB", "rounds", "spread %"]
    body = md_table(headers, rows, ["r", "l", "l", "r", "r", "r", "r", "r"])
    legend = ("\n\nLeNet conv1 on one float64 sample: ConvLayer(28, 28, 1, 5, 5, 6, 0, 1, ReluActivator(), "
              "0.01), input 1x28x28, sensitivity 6x24x24; fwd+bwd = forward(x) then backward(x, sensitivity, "
              "IdentityActivator()) (learn_dl's backward recomputes the forward). cnnext's time per round is "
              "the mean of many calls; learn_dl runs once per round. learn_dl's threads do not matter "
              "(pure Python).")
    if learn_dl_note:
        legend += f"\n\nlearn_dl contender skipped: {learn_dl_note}."
    report.add("## learn_dl API, single sample (cnnext.ConvLayer vs the learn_dl code)\n\n" + body + legend
               + _notes(notes, checked=ref is not None))


def _notes(notes, checked=True):
    if not notes:
        return "\n\nResults checked against the reference implementations: all agree." if checked else ""
    return "\n\n**Checks:**\n" + "\n".join(f"- {n}" for n in notes)


def targets_section(report, results, threads, dtypes):
    t = 2 if 2 in threads else max(threads)
    rows = []

    def add(what, value, target, ok, fmt_v):
        if value is not None:  # rows of shapes/sections not run are left out
            rows.append([what, fmt_v(value), target, "yes" if ok(value) else "**no**"])

    ratio = lambda v: fmt(v)  # noqa: E731
    if "float32" in dtypes:
        for name, lim in TARGET_CONV_RATIO.items():
            r = results.get(("conv", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"conv {name} fwd+bwd / torch", r, f"<= {lim}", lambda v, lim=lim: v <= lim, ratio)
        for name in POOL_SHAPES:
            r = results.get(("pool", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"max_pool {name} fwd+bwd / torch", r, f"<= {TARGET_POOL_RATIO}",
                lambda v: v <= TARGET_POOL_RATIO, ratio)
        for name in LARGE_3X3:
            r = results.get(("conv", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("gemm_fraction")
            add(f"conv {name} fwd+bwd, % of the GEMM rate", r, f">= {TARGET_GEMM_FRACTION:.0%}",
                lambda v: v >= TARGET_GEMM_FRACTION, lambda v: f"{100 * v:.0f}%")
        r = results.get(("lenet", "float32", t, "train step", "cnnext"), {}).get("ratio_torch")
        add("LeNet-5 train step / torch", r, f"<= {TARGET_LENET_RATIO}", lambda v: v <= TARGET_LENET_RATIO,
            ratio)
    if "float64" in dtypes:
        for name in CONV_SHAPES:
            r = results.get(("conv", name, "float64", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"conv {name} float64 fwd+bwd / torch", r, f"<= {TARGET_F64_RATIO}",
                lambda v: v <= TARGET_F64_RATIO, ratio)
    r = results.get(("learn_dl", t, "fwd+bwd", "cnnext"), {}).get("speedup")
    add("learn_dl ConvLayer fwd+bwd speedup", r, f">= {TARGET_LEARN_DL_SPEEDUP:.0f}x",
        lambda v: v >= TARGET_LEARN_DL_SPEEDUP, lambda v: f"{v:,.0f}x")
    if not rows:
        return
    caveat = "" if t == 2 else "\n\nThe targets are defined at 2 threads; this run's largest thread count is used."
    report.add(f"## Targets (issue 3; float32 unless stated, {t} thread{'s' if t > 1 else ''}, medians)\n\n"
               + md_table(["target", "measured", "goal", "met"], rows, ["l", "r", "r", "l"]) + caveat)


# --------------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ", ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "none of avx2/fma/avx512f"
    except OSError:
        pass
    return None


def _loadavg():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def _openmp_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    out = [f"{info.get('filepath')} ({info.get('version') or 'version unknown'})"
           for info in threadpool_info() if info.get("user_api") == "openmp"]
    return "; ".join(out) or "none found"


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    out = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            out.append(f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')}, "
                       f"{info.get('threading_layer')})")
    return "; ".join(out) or None


def header(args, torch_note, learn_dl_note):
    cfg = cnnext.show_config(mode="dicts")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    la = _loadavg()
    lines = [
        "# cnnext benchmark",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_cpu_model()} ({_cpu_flags() or 'flags unknown'}), {os.cpu_count()} logical cores, "
        f"{usable} usable; {platform.system()} {platform.release()}",
        f"- load average at start: {', '.join(f'{v:.2f}' for v in la) if la else 'n/a'}",
        f"- Python {platform.python_version()}, numpy {np.__version__} "
        f"(BLAS: {_blas_info() or cfg.get('blas', 'unknown')}; OPENBLAS_THREAD_TIMEOUT="
        f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset: idle BLAS threads spin')})",
        f"- PyTorch: {torch.__version__ if torch is not None else torch_note}"
        + (f" (oneDNN: {'yes' if torch.backends.mkldnn.is_available() else 'no'})" if torch is not None else ""),
        f"- cnnext {cfg['version']} from {Path(cnnext.__file__).parent}: OpenMP "
        f"{'compiled in' if cfg['openmp'] else 'NOT compiled in (serial kernels)'}, "
        f"workspace cap {cfg['workspace_bytes'] / MIB:.0f} MiB",
        f"- OpenMP runtimes loaded: {_openmp_info() or 'unknown (threadpoolctl missing)'}; "
        f"import order {args.import_order}",
        f"- learn_dl: {args.learn_dl if learn_dl_note is None else learn_dl_note}",
        f"- run: dtype {','.join(args.dtypes)}, threads {','.join(map(str, args.threads))}, "
        f"reps {args.reps} (learn_dl {args.reps_slow}), sections {','.join(args.sections)}"
        + (", --quick" if args.quick else ""),
    ]
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        lines.append("- WARNING: threadpoolctl is not installed: numpy's BLAS thread count is not controlled")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _csv(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark cnnext against PyTorch CPU, a plain numpy im2col and the learn_dl code; "
                    "prints Markdown tables.")
    ap.add_argument("--shapes", default=",".join([*CONV_SHAPES, *POOL_SHAPES]),
                    help="comma-separated conv and pool shape names (default: all): "
                         + ", ".join([*CONV_SHAPES, *POOL_SHAPES]))
    ap.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repetitions per contender (default 10, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="few repetitions, smaller GEMM: a smoke run")
    ap.add_argument("--no-torch", action="store_true", help="do not import or time PyTorch")
    ap.add_argument("--no-learn-dl", action="store_true", help="do not time the learn_dl code")
    ap.add_argument("--learn-dl", metavar="PATH", default=None,
                    help=f"path of learn_dl's cnn.py (default: {DEFAULT_LEARN_DL} when it exists)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated sections to run (default: all): " + ", ".join(SECTIONS))
    ap.add_argument("--import-order", choices=["cnnext-first", "torch-first"], default="cnnext-first",
                    help="load cnnext before PyTorch (default) or after: which OpenMP runtime a source "
                         "build of cnnext shares with torch depends on it (see the header)")
    ap.add_argument("--markdown", metavar="PATH", default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)

    args.shape_names = _csv(args.shapes)
    unknown = [s for s in args.shape_names if s not in CONV_SHAPES and s not in POOL_SHAPES]
    if unknown:
        ap.error(f"unknown shape name(s): {', '.join(unknown)}; known: {', '.join([*CONV_SHAPES, *POOL_SHAPES])}")
    args.sections = _csv(args.sections)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad or not args.sections:
        ap.error(f"unknown section(s): {', '.join(bad) or '(none given)'}; known: {', '.join(SECTIONS)}")
    try:
        threads = [int(t) for t in _csv(args.threads)]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        ap.error(f"--threads must be comma-separated positive integers, got {args.threads!r}")
    args.threads = list(dict.fromkeys(threads))
    if args.reps is None:
        args.reps = 3 if args.quick else 10
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")
    args.reps_slow = 1 if args.quick else min(args.reps, 3)
    args.dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    return args


def main(argv=None):
    args = parse_args(argv)
    # cnnext before torch unless asked otherwise: see the comment above _import_torch
    if args.import_order == "cnnext-first":
        _import_cnnext()
        torch_note = _import_torch(not args.no_torch)
    else:
        torch_note = _import_torch(not args.no_torch)
        _import_cnnext()

    learn_dl_note = None
    if args.no_learn_dl:
        learn_dl_note, args.learn_dl = "disabled (--no-learn-dl)", None
    else:
        path = Path(args.learn_dl) if args.learn_dl else DEFAULT_LEARN_DL
        if path.is_file():
            args.learn_dl = str(path)
        else:
            learn_dl_note = f"{path} not found (pass --learn-dl PATH)"
            args.learn_dl = None

    report = Report()
    report.add(header(args, torch_note, learn_dl_note))
    conv_shapes = [s for s in args.shape_names if s in CONV_SHAPES]
    pool_shapes = [s for s in args.shape_names if s in POOL_SHAPES]
    results = {}
    threads_note = "" if _blas_info() else "\n\n(threadpoolctl missing: BLAS threads not controlled.)"
    torch_skip = f"\n\nPyTorch: {torch_note}." if torch is None else ""

    gemms = {d: Gemm(d, args.quick) for d in args.dtypes}
    if "gemm" in args.sections:
        gemm_section(report, gemm_rates(gemms, args.threads, args.reps), threads_note)
    if "conv" in args.sections:
        if conv_shapes:
            conv_section(report, conv_shapes, args.dtypes, args.threads, args.reps, gemms, results,
                         torch_skip)
        else:
            report.add("## conv2d\n\nSkipped: no conv shape among --shapes.")
    if "pool" in args.sections:
        if pool_shapes:
            pool_section(report, pool_shapes, args.dtypes, args.threads, args.reps, results, torch_skip)
        else:
            report.add("## max_pool2d\n\nSkipped: no pool shape among --shapes.")
    if "lenet" in args.sections:
        lenet_section(report, args.dtypes, args.threads, args.reps, results, torch_skip)
    if "learn_dl" in args.sections:
        learn_dl_section(report, args.threads, args.reps_slow, args.learn_dl, learn_dl_note, results)
    if results:
        targets_section(report, results, args.threads, args.dtypes)
    la = _loadavg()
    report.add(f"_load average at end: {', '.join(f'{v:.2f}' for v in la) if la else 'n/a'}_")

    if args.markdown:
        Path(args.markdown).write_text(report.text(), encoding="utf-8")
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
