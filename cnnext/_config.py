"""Process-wide settings: the kernels' thread count and the im2col workspace cap.

The thread count starts from ``OMP_NUM_THREADS`` when it is set (as OpenMP itself would), otherwise
from OpenMP's default (the number of cores), and is 1 when the extensions were built without OpenMP.
It is passed explicitly to every kernel call, so changing it never needs OpenMP's global state.
Every source of a thread count (``OMP_NUM_THREADS``, OpenMP's default, ``set_num_threads``, and so
the CLI's ``--threads``) is clamped to ``_MAX_THREADS``: an OpenMP team of 200,000 threads crashes
the process instead of failing.
"""
import os
import threading

from cnnext._kernels._openmp_helpers import openmp_enabled, openmp_max_threads
from cnnext._validation import check_int

_DEFAULT_WORKSPACE_BYTES = 64 * 2**20
# Below this much work (elements a kernel call writes or reads, e.g. a convolution's column matrix)
# a call runs on one thread: starting a parallel region wakes the other OpenMP threads, which sleep
# (OMP_WAIT_POLICY=PASSIVE), and that costs more than such a call's whole work. Measured on the
# 2-core dev machine: LeNet conv1 on one 1x28x28 sample (a 14,400-element column matrix) takes
# 11 us of im2col on one thread and 22 us on two; a single-sample forward+backward 0.23 ms on one
# thread and 0.31 ms on two. The kernels' results do not depend on the thread count.
_MIN_PARALLEL_WORK = 2**17
_MAX_THREADS = 1024  # an OpenMP team larger than this is a mistake, not a machine
_lock = threading.Lock()


def _clamp_threads(n):
    """``n`` (an int) within [1, _MAX_THREADS]."""
    return max(1, min(n, _MAX_THREADS))


def _env_threads():
    """OMP_NUM_THREADS's first value as a thread count (clamped), or None when it is unset or not
    a positive decimal number (then OpenMP ignores it too)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if not (env.isascii() and env.isdigit()):
        return None
    digits = env.lstrip("0")
    if not digits:
        return None
    if len(digits) > len(str(_MAX_THREADS)):  # also keeps int() off huge strings
        return _MAX_THREADS
    return _clamp_threads(int(digits))


def _default_threads():
    if not openmp_enabled():
        return 1
    env = _env_threads()
    if env is not None:
        return env
    return _clamp_threads(openmp_max_threads())


_state = {
    "num_threads": _default_threads(),
    "workspace_bytes": _DEFAULT_WORKSPACE_BYTES,
    "conv_algorithm": "auto",
    "min_parallel_work": _MIN_PARALLEL_WORK,  # see threads_for
    "parallel_used": False,  # a kernel ran (or may have run) with more than one thread
    "forked_serial": False,  # this process was forked after that: kernels run serially
    "shared_runtime": None,  # paths of an OpenMP runtime loaded before cnnext and shared with it
    "serial_by_default": False,  # ... which spins, so the kernels default to one thread
}
_CONV_ALGORITHMS = ("auto", "gemm", "direct", "winograd")


def _note_openmp_runtime(before, after, user_wait_policy):
    """Called once by cnnext/__init__.py after the kernels' OpenMP runtime is loaded.

    ``before``/``after``: the OpenMP runtimes mapped before and after loading the kernels. When the
    kernels got no runtime of their own but share one another library loaded first (a source
    build of cnnext imported after PyTorch, say), that runtime kept the wait policy it started
    with: unless it is PASSIVE, its idle threads spin and starve numpy's BLAS threads, which made a
    2-thread convolution 20x slower than a serial one. The kernels then default to one thread
    (set_num_threads or OMP_NUM_THREADS still choose more). Wheels carry a private runtime, so
    this does not happen with them.
    """
    shared = bool(before) and not (after - before)
    spinning = (user_wait_policy or "").strip().upper() != "PASSIVE"
    _state["shared_runtime"] = sorted(before) if shared else None
    if shared and spinning and openmp_enabled() and _env_threads() is None:
        _state["num_threads"] = 1
        _state["serial_by_default"] = True


def set_num_threads(n):
    """Set the number of threads the cnnext kernels use.

    Parameters
    ----------
    n : int
        Thread count, >= 1; values above 1024 count as 1024 (as ``OMP_NUM_THREADS`` does; so does
        the CLI's ``--threads``). Without OpenMP the kernels are serial and any value behaves as 1, and
        so does a process forked (``multiprocessing``'s default on Linux) after its parent ran
        multi-threaded kernels, because the OpenMP runtime cannot start threads there. Use the
        ``spawn`` or ``forkserver`` start method for multi-threaded kernels in worker processes.
        Calls on small inputs (a convolution whose column matrix has fewer than 2**17 elements, such
        as one LeNet sample) run on one thread, where waking the others would cost more than it saves.
    """
    n = _clamp_threads(check_int(n, "n", "set_num_threads", minimum=1))
    with _lock:
        _state["num_threads"] = n


def get_num_threads():
    """Return the number of threads the cnnext kernels use.

    In a child process forked after the parent ran multi-threaded kernels this is always 1 (see
    ``set_num_threads``).
    """
    n = _state["num_threads"]
    if n > 1:
        if _state["forked_serial"]:
            return 1
        _state["parallel_used"] = True
    return n


def threads_for(work):
    """Threads for a kernel call doing ``work`` (elements moved or computed): 1 for small work, where
    waking other threads costs more than it saves, else ``get_num_threads()``. Results are the same
    either way (the kernels are bitwise deterministic in the thread count)."""
    if work < _state["min_parallel_work"]:
        return 1
    return get_num_threads()


def _after_fork_in_child():
    # GNU libgomp is not fork-safe: a child forked after the parent ran a parallel region hangs in
    # its own first parallel region (its thread pool names threads that were not forked). Such a
    # child runs the kernels serially instead; the results are bitwise the same.
    if _state["parallel_used"]:
        _state["forked_serial"] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_workspace_limit(nbytes):
    """Cap the scratch memory of one convolution call (default 64 MiB).

    Parameters
    ----------
    nbytes : int
        Size in bytes, >= 1. Every algorithm works in chunks whose scratch arrays fit in this
        budget: im2col + GEMM's column matrix and GEMM output (whole samples, or bands of output
        rows of one sample), Winograd's transforms, the direct kernels' zero-padded planes. The
        smallest chunk is always allowed: one output row of one sample for im2col + GEMM, one
        sample for Winograd and the direct kernels; the automatic choice takes Winograd or the
        direct kernels only when that fits, and a forced 'direct' runs as 'gemm' when it does not.
        Buffers the size of the weights (transformed weights, weight-gradient partial sums) are
        not counted.
    """
    nbytes = check_int(nbytes, "nbytes", "set_workspace_limit", minimum=1)
    with _lock:
        _state["workspace_bytes"] = nbytes


def get_workspace_limit():
    """Return the im2col workspace cap in bytes."""
    return _state["workspace_bytes"]


class _Forced:
    """One active ``force_conv_algorithm`` block: its algorithm and the thread's stack holding it."""

    __slots__ = ("owner", "name", "stack")

    def __init__(self, owner, name, stack):
        self.owner, self.name, self.stack = owner, name, stack


_local = threading.local()  # .forced: this thread's active blocks, innermost last
_forced = []  # every thread's active blocks, in the order they were entered (under _lock)


class force_conv_algorithm:
    """Context manager that makes conv2d use one algorithm inside its ``with`` block.

    Use it to compare algorithms, or with 'gemm' to keep float32 convolutions off Winograd's larger
    rounding error. Blocks may be nested and used from several threads at once:

    - the thread that entered a block uses that block's algorithm (its innermost block's);
    - other threads, having no block of their own (worker threads started inside the block, say),
      use the algorithm of the most recently entered block still active in any thread;
    - when a block ends, exactly its own effect ends, whatever the order in which blocks of other
      threads end; with none active, conv2d chooses per shape again ('auto').

    The same object may be entered again, nested or from other threads.

    Parameters
    ----------
    name : {'auto', 'gemm', 'direct', 'winograd'}
        'gemm' is im2col + BLAS (1x1 convolutions skip the im2col), 'direct' the direct kernels,
        'winograd' Winograd F(4x4, 3x3) for the shapes it serves (3x3, stride 1, dilation 1,
        groups 1; forward, grad_input and grad_weight) and GEMM for the others, 'auto' lets cnnext choose
        per shape (the default).
    """

    def __init__(self, name):
        if name not in _CONV_ALGORITHMS:
            raise ValueError(f"force_conv_algorithm: name must be one of {_CONV_ALGORITHMS}, got {name!r}")
        self.name = name

    def __enter__(self):
        stack = getattr(_local, "forced", None)
        if stack is None:
            stack = _local.forced = []
        entry = _Forced(self, self.name, stack)
        with _lock:
            stack.append(entry)
            _forced.append(entry)
            _state["conv_algorithm"] = self.name
        return self

    def __exit__(self, *exc):
        mine = getattr(_local, "forced", None)
        with _lock:
            # this block: the innermost entry of this object in this thread, else (a block left
            # from another thread than the one that entered it) the latest of this object anywhere
            ours = [e for e in _forced if e.owner is self]
            here = [e for e in ours if e.stack is mine]
            if not ours:
                raise RuntimeError("force_conv_algorithm: __exit__ without a matching __enter__")
            entry = (here or ours)[-1]
            entry.stack.remove(entry)
            _forced.remove(entry)
            _state["conv_algorithm"] = _forced[-1].name if _forced else "auto"
        return False


def get_conv_algorithm():
    """Return the conv2d algorithm forced for the calling thread (see force_conv_algorithm), or
    'auto'."""
    stack = getattr(_local, "forced", None)
    if stack:
        try:
            return stack[-1].name
        except IndexError:  # emptied meanwhile by a block left from another thread
            pass
    return _state["conv_algorithm"]
