"""BLAS and OpenMP thread control (through threadpoolctl) and chunk-level parallelism.

Everything cnnext knows about the thread pools of the process comes from one threadpoolctl
``ThreadpoolController`` (``controller()``), built on first use and rebuilt only when the set of
loaded libraries must be read again (``controller(refresh=True)``: at import, around loading the
kernels, and in ``show_config``). Its ``info()`` tells which OpenMP runtimes are loaded
(``user_api == "openmp"``) and which BLAS libraries it can control (``user_api == "blas"``: OpenBLAS,
MKL, BLIS, FlexiBLAS).

Why chunks go to Python threads: a chunked convolution is a sequence of independent (kernel,
GEMM, kernel) steps, one per chunk of the batch. Running each step with OpenMP threads inside the
kernels and BLAS threads inside the GEMM costs a wake-up and a barrier for every kernel call and
every one of the (up to 36 per chunk) GEMMs; on a busy machine each of those can wait a scheduler
time slice. Here the chunks are spread over Python threads instead (the kernels and numpy's matmul
release the GIL), each running whole steps serially with its own workspace, while numpy's BLAS runs
single-threaded: one fork and one join per call.

The BLAS thread count is process-wide. ``single_threaded_blas`` sets it to 1 while any cnnext call
needs that (a counter, so overlapping calls from several threads restore it once, after the last
one) and puts back what it found. When threadpoolctl finds no BLAS it can control, or the setting
does not take, the chunks run one after the other with their kernels' OpenMP threads. Jobs that call
no BLAS (Winograd with cnnext's own tile GEMM kernels) pass ``uses_blas=False``: BLAS is left alone
and the chunks go to threads anyway.
"""
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl

_controller_lock = threading.Lock()
_controller = None  # the one ThreadpoolController; see controller()
_blas = ()  # its BLAS library controllers

_blas_lock = threading.Lock()
_users = 0  # single_threaded_blas blocks in progress, in every thread
_saved = None  # [(library controller, its thread count before the first block)]
_limited = False  # BLAS is held at one thread by single_threaded_blas

# threadpoolctl >= 3.8 lets only one Python thread (the first to set it, until it lets go) change a
# pthreads OpenBLAS; the others' settings are ignored. The block that restores BLAS may end in
# another thread than the one that limited it, and the CLI limits BLAS once from the main thread,
# so cnnext gives up its claim after each change and takes one over when its setting was ignored.
_release_claim = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread",
                         lambda force=False: None)


def controller(refresh=False):
    """Return the threadpoolctl ``ThreadpoolController`` cnnext uses, built on first use.

    Parameters
    ----------
    refresh : bool
        Scan the loaded libraries again (a controller only knows those loaded when it was built)
        and keep the new controller from now on.
    """
    global _controller, _blas
    ctl = _controller
    if ctl is None or refresh:
        with _controller_lock:
            if _controller is None or refresh:
                new = threadpoolctl.ThreadpoolController()
                _blas = tuple(new.select(user_api="blas").lib_controllers)
                _controller = new
            ctl = _controller
    return ctl


def threadpool_info(refresh=True):
    """threadpoolctl's info: one dict per thread pool library loaded (user_api, internal_api,
    prefix, filepath, version, num_threads, ...), read afresh by default."""
    return controller(refresh).info()


def loaded_openmp_runtimes():
    """Return the set of file paths of the OpenMP runtimes loaded in this process (a fresh scan)."""
    return frozenset(i["filepath"] for i in threadpool_info() if i["user_api"] == "openmp")


def _blas_controllers():
    """threadpoolctl's controllers of the BLAS libraries loaded (numpy's among them)."""
    if _controller is None:
        controller()
    return _blas


def blas_control_available():
    """True when threadpoolctl can set the thread count of a loaded BLAS (numpy's)."""
    return bool(_blas_controllers())


def _set_blas_threads(pairs):
    """Set each (library controller, count); return whether every library now has its count."""
    took = True
    for lib, n in pairs:
        lib.set_num_threads(n)
        if lib.get_num_threads() != n:  # ignored: another thread holds threadpoolctl's claim
            _release_claim(force=True)
            lib.set_num_threads(n)
            took = took and lib.get_num_threads() == n
    if pairs:
        _release_claim()
    return took


class single_threaded_blas:
    """Context manager: numpy's BLAS runs on one thread inside it (a no-op without control).

    ``active`` (after entering) tells whether BLAS really is held at one thread.
    """

    active = False

    def __enter__(self):
        global _users, _saved, _limited
        libs = _blas_controllers()
        with _blas_lock:
            if _users == 0 and libs:
                _saved = [(lib, lib.get_num_threads()) for lib in libs]
                _limited = _set_blas_threads([(lib, 1) for lib, n in _saved if n != 1])
            _users += 1
            self.active = _limited
        return self

    def __exit__(self, *exc):
        global _users, _saved, _limited
        with _blas_lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                _limited = False
                saved, _saved = _saved, None
                _set_blas_threads([(lib, n) for lib, n in saved if n != 1])
        return False


def set_blas_threads(n):
    """Set the thread count of the BLAS libraries threadpoolctl controls (the CLI's ``--threads``).

    Inside ``single_threaded_blas`` blocks (another thread's chunked call) BLAS stays at one thread
    and gets ``n`` when the last block ends. Returns False when no BLAS can be controlled.
    """
    global _saved
    libs = _blas_controllers()
    with _blas_lock:
        if _users and _saved is not None:
            _saved = [(lib, n) for lib, _ in _saved]
        else:
            _set_blas_threads([(lib, n) for lib in libs])
    return bool(libs)


def map_chunks(job, count, num_threads, make_workspace, workspace_bytes, uses_blas=True):
    """Yield ``job(workspace, i, threads)`` for i in range(count), in order.

    With ``num_threads`` > 1, more than one chunk and BLAS held at one thread (or ``uses_blas``
    False: the jobs call no BLAS, so it needs no control and is left alone), the calls run on up
    to min(num_threads, count) Python threads, each with its own ``make_workspace()`` (of
    ``workspace_bytes``; no more threads than the workspace limit allows), and get ``threads`` = 1;
    otherwise they run here, one after the other, with one workspace and ``threads`` =
    num_threads, for their kernels and ``matmul``. Either way numpy's BLAS is single-threaded while
    they run (when it can be controlled), so every GEMM is computed the same way whatever the
    thread count: results are bitwise identical for every ``num_threads``. Consume the whole
    generator (it holds the BLAS setting until it ends).
    """
    from cnnext._config import get_workspace_limit  # not at import: _config loads the kernels

    workers = min(num_threads, count, max(1, get_workspace_limit() // max(workspace_bytes, 1)))
    with single_threaded_blas() if uses_blas else contextlib.nullcontext() as blas:
        if workers <= 1 or (uses_blas and not blas.active):
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
    ``threads`` Python threads while BLAS is held at one thread (inside ``map_chunks``): each
    matrix product is then one single-threaded BLAS call, as in a serial run."""
    count = a.shape[0]
    workers = min(threads, count)
    if workers <= 1 or not _limited:
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
