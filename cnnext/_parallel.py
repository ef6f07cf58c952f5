"""Chunk-level parallelism with numpy's BLAS kept to one thread.

A chunked convolution is a sequence of independent (kernel, GEMM, kernel) steps, one per chunk
of the batch. Running each step with OpenMP threads inside the kernels and OpenBLAS threads
inside the GEMM costs a wake-up and a barrier for every kernel call and every one of the (up to
36 per chunk) GEMMs; on a busy machine each of those can wait a scheduler time slice, and
measured 2-thread convolutions became 5-8x slower than serial ones. Here the chunks are spread over
Python threads instead (the kernels and numpy's matmul release the GIL), each running whole steps
serially with its own workspace, and numpy's BLAS runs single-threaded meanwhile: one fork and
one join per call.

numpy's BLAS thread count is process-wide. ``single_threaded_blas`` sets it to 1 while any
cnnext call needs that (a counter, so overlapping calls from several threads restore it once,
after the last one) and puts back what it found. Only numpy's bundled OpenBLAS (the PyPI wheels)
can be controlled; with another BLAS, ``blas_control_available()`` is False and the convolutions
keep their per-kernel OpenMP threads. Jobs that call no BLAS (Winograd with cnnext's own tile
GEMM kernels) pass ``uses_blas=False``: BLAS is left alone and the chunks go to threads anyway.
"""
import contextlib
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cnnext._config import get_workspace_limit

_lock = threading.Lock()
_users = 0
_saved = None
_functions = "unset"  # (get, set) ctypes functions, None when unavailable; looked up once


def _find_openblas():
    """numpy's bundled OpenBLAS as (get_num_threads, set_num_threads) ctypes functions, or None."""
    root = os.path.dirname(os.path.abspath(np.__file__))
    patterns = [os.path.join(root, os.pardir, "numpy.libs", "*openblas*"),  # Linux, Windows
                os.path.join(root, ".dylibs", "*openblas*")]  # macOS
    names = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
             ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
             ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
             ("openblas_get_num_threads", "openblas_set_num_threads")]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: this returns the same library
        except OSError:
            continue
        for get_name, set_name in names:
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


def _blas_functions():
    global _functions
    if _functions == "unset":
        with _lock:
            if _functions == "unset":
                _functions = _find_openblas()
    return _functions


def blas_control_available():
    """True when cnnext can set the thread count of numpy's BLAS."""
    return _blas_functions() is not None


class single_threaded_blas:
    """Context manager: numpy's BLAS runs on one thread inside it (a no-op without control)."""

    def __enter__(self):
        global _users, _saved
        functions = _blas_functions()
        if functions is not None:
            with _lock:
                if _users == 0:
                    _saved = functions[0]()
                    functions[1](1)
                _users += 1
        return self

    def __exit__(self, *exc):
        global _users
        functions = _blas_functions()
        if functions is not None:
            with _lock:
                _users -= 1
                if _users == 0:
                    functions[1](_saved)
        return False


def map_chunks(job, count, num_threads, make_workspace, workspace_bytes, uses_blas=True):
    """Yield ``job(workspace, i, threads)`` for i in range(count), in order.

    With ``num_threads`` > 1, more than one chunk and BLAS control (or ``uses_blas`` False: the
    jobs call no BLAS, so it needs no control and is left alone), the calls run on up to
    min(num_threads, count) Python threads, each with its own ``make_workspace()`` (of
    ``workspace_bytes``; no more threads than the workspace limit allows), and get
    ``threads`` = 1; otherwise they run here, one after the other, with one workspace and
    ``threads`` = num_threads, for their kernels and ``matmul``. Either way numpy's BLAS is
    single-threaded while they run (when it can be controlled), so every GEMM is computed the same
    way whatever the thread count: results are bitwise identical for every ``num_threads``.
    Consume the whole generator (it holds the BLAS setting until it ends).
    """
    workers = min(num_threads, count, max(1, get_workspace_limit() // max(workspace_bytes, 1)))
    with single_threaded_blas() if uses_blas else contextlib.nullcontext():
        if workers <= 1 or (uses_blas and not blas_control_available()):
            workspace = make_workspace()
            for i in range(count):
                yield job(workspace, i, num_threads)
            return
        local = threading.local()

        def run(i):
            workspace = getattr(local, "workspace", None)
            if workspace is None:
                workspace = local.workspace = make_workspace()
            return job(workspace, i, 1)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnext") as pool:
            yield from pool.map(run, range(count))


def matmul(a, b, out, threads):
    """``np.matmul(a, b, out=out)`` for stacks of matrices (axis 0), the stack split over
    ``threads`` Python threads when BLAS is controlled (inside ``map_chunks``): each matrix
    product is then one single-threaded BLAS call, as in a serial run."""
    count = a.shape[0]
    workers = min(threads, count)
    if workers <= 1 or not blas_control_available():
        np.matmul(a, b, out=out)
        return out
    bounds = [count * w // workers for w in range(workers + 1)]

    def part(w):
        lo, hi = bounds[w], bounds[w + 1]
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])

    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="cnnext") as pool:
        pending = [pool.submit(part, w) for w in range(1, workers)]
        part(0)
        for f in pending:
            f.result()
    return out
