"""The comparison harness of the benchmarks: loading the libraries, thread control, timing (medians of
alternating runs), peak extra memory, result checks, Markdown tables and the machine's description.

Nothing here knows what is measured: benchmarks/contenders.py has the contenders, benchmarks/cases.py
the shapes, bench.py and threads.py put them together. Importing this module imports numpy: an entry
point that sets BLAS environment variables sets them first.
"""
import gc
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections import namedtuple

import numpy as np

MIB = 2.0 ** 20


def log(msg):
    """Progress, on stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Libraries. cnnext is loaded BEFORE PyTorch (default; --import-order torch-first reverses it): both
# link an OpenMP runtime, and a runtime reads its environment (OMP_NUM_THREADS, OMP_WAIT_POLICY,
# GOMP_SPINCOUNT, ...) when it is loaded. cnnext sets OMP_WAIT_POLICY=PASSIVE (unless already set) before
# loading its kernels, because spinning idle OpenMP threads starve numpy's BLAS threads. A cnnext built
# from source on Linux links "libgomp.so.1" by name, so whichever library loads first provides the one
# copy both use: loaded first, cnnext's passive policy applies to torch too (torch's times do not change
# with it, measured on the dev machine); loaded second, cnnext shares torch's spinning runtime, defaults
# to one thread (show_config says so), and forced 2-thread cnnext rows then fight the BLAS threads (20x
# slower). cnnext's wheels vendor a renamed runtime and are not affected by the order. The header
# lists the OpenMP runtimes actually loaded.
# --------------------------------------------------------------------------------------------------
Libraries = namedtuple("Libraries", "cnnext torch torch_note")


def _import_torch(enabled):
    if not enabled:
        return None, "disabled (--no-torch)"
    try:
        import torch
        import torch.nn.functional  # noqa: F401
    except ImportError as exc:
        return None, f"not importable ({exc})"
    return torch, None


def import_libraries(import_order="cnnext-first", torch_enabled=True):
    """cnnext and (when enabled and importable) PyTorch, in ``import_order``; ``torch_note`` says why
    torch is None."""
    if import_order == "cnnext-first":
        import cnnext
        import cnnext.functional  # noqa: F401
        torch, note = _import_torch(torch_enabled)
    else:
        torch, note = _import_torch(torch_enabled)
        import cnnext
        import cnnext.functional  # noqa: F401
    return Libraries(cnnext, torch, note)


class Threads:
    """Set every library's thread count for the duration of a ``with`` block: cnnext's, PyTorch's
    (when loaded) and, through threadpoolctl when installed, numpy's BLAS."""

    def __init__(self, n, libs):
        self.n = n
        self.libs = libs
        self._limits = None

    def __enter__(self):
        self.libs.cnnext.set_num_threads(self.n)
        if self.libs.torch is not None:
            self.libs.torch.set_num_threads(self.n)
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


Stat = namedtuple("Stat", "median spread mib rounds")


def measure(fns, reps, inner=None, traced=lambda name: True):
    """Time ``fns`` round-robin, then (a separate pass, so tracing never slows the timed calls) the
    peak extra memory of one call of each contender ``traced(name)`` accepts.

    Returns ``{name: Stat(median seconds, spread %, extra MiB or None, rounds)}``.
    """
    samples = time_round_robin(fns, reps, inner=inner)
    mem = {name: peak_extra_mib(fn) for name, fn in fns.items() if traced(name)}
    return {name: Stat(*summarise(s), mem.get(name), len(s)) for name, s in samples.items()}


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


def ratio(time, reference):
    """``time / reference`` formatted, or n/a without a reference."""
    return fmt(time / reference) if reference else "n/a"


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


def as_numpy(value):
    """A result as a float64 numpy array (PyTorch tensors detached first)."""
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    return np.asarray(value, dtype=np.float64)


def check(name, got, want, dtype, notes):
    """Compare a result with a reference once; record a note on mismatch."""
    got, want = as_numpy(got), as_numpy(want)
    if got.shape != want.shape:
        notes.append(f"MISMATCH {name}: shape {got.shape}, expected {want.shape}")
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    err = float(np.max(np.abs(got - want))) / scale if want.size else 0.0
    tol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-9
    if not np.isfinite(err) or err > tol:
        notes.append(f"MISMATCH {name}: max error {err:.3g} (relative to max |value|), tolerance {tol:g}")
    return err


def notes_text(notes, checked=True, against="the reference implementations"):
    if not notes:
        return f"\n\nResults checked against {against}: all agree." if checked else ""
    return "\n\n**Checks:**\n" + "\n".join(f"- {n}" for n in notes)


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ", ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "none of avx2/fma/avx512f"
    except OSError:
        pass
    return None


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def loadavg():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def loadavg_text():
    la = loadavg()
    return ", ".join(f"{v:.2f}" for v in la) if la else "n/a"


def _threadpools(user_api=None):
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [info for info in threadpool_info() if user_api in (None, info.get("user_api"))]


def threadpools_text():
    """Every BLAS and OpenMP library loaded, with its thread count, or None without threadpoolctl."""
    pools = _threadpools()
    return None if pools is None else ", ".join(f"{i['internal_api']} {i['num_threads']} thread(s)" for i in pools)


def openmp_info():
    """The OpenMP runtimes loaded in this process, or None without threadpoolctl."""
    pools = _threadpools("openmp")
    if pools is None:
        return None
    return "; ".join(f"{info.get('filepath')} ({info.get('version') or 'version unknown'})"
                     for info in pools) or "none found"


def blas_info():
    """numpy's BLAS libraries, or None (none found, or no threadpoolctl)."""
    return "; ".join(f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')}, "
                     f"{info.get('threading_layer')})" for info in _threadpools("blas") or ()) or None
