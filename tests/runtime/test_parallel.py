"""Chunk-level parallelism (cnnext/_threads.py): numpy's BLAS kept single-threaded and restored,
chunks spread over Python threads, results bitwise identical for every thread count. BLAS's thread
count is read through threadpoolctl's own threadpool_info, independently of cnnext's controller."""
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext import _threads
import threadpoolctl
from threadpoolctl import threadpool_info
from cnnext.functional import conv
from cnnext.functional import _conv_dispatch
import naive_oracle as oracle
from helpers import run_threads, same_at_thread_counts
from naive_oracle import assert_close

needs_control = pytest.mark.skipif(not _threads.blas_control_available(),
                                   reason="threadpoolctl controls no BLAS here")


def blas_threads():
    """The thread count of the BLAS libraries, as a fresh threadpoolctl scan reports it (one value)."""
    counts = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert len(counts) == 1, counts
    return counts.pop()


@pytest.fixture
def blas_limit_restored():
    """Put BLAS's thread count back after a test that sets it through threadpoolctl."""
    before = blas_threads()
    yield
    threadpoolctl.threadpool_limits(limits=before, user_api="blas")
    threadpoolctl_release()


def threadpoolctl_release():
    """Let any thread set OpenBLAS again (threadpoolctl >= 3.8 ties it to the first thread that set
    it, until that thread lets go)."""
    cls = getattr(threadpoolctl, "OpenBLASController", None)
    if hasattr(cls, "clear_controlling_thread"):
        cls.clear_controlling_thread(force=True)


def data(N=9, C=5, S=10, K=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, S, S)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    gy = rng.standard_normal((N, K, S, S)).astype(dtype)
    return x, w, b, gy


def conv_pass(x, w, b, gy):
    return (F.conv2d(x, w, b, padding=1),) + F.conv2d_backward(gy, x, w, padding=1)


def winograd_pass(x, w, b, gy):
    with cnnext.force_conv_algorithm("winograd"):
        return conv_pass(x, w, b, gy)


@contextlib.contextmanager
def chunk_calls(blas=True):
    """Record (BLAS thread count if ``blas``, else None; thread name) at every call of Winograd's
    output transform, which runs once per chunk, while the block runs."""
    seen = []
    real = _conv_dispatch._winograd.output_transform

    def recording(*args):
        seen.append((blas_threads() if blas else None, threading.current_thread().name))
        return real(*args)
    _conv_dispatch._winograd.output_transform = recording
    try:
        yield seen
    finally:
        _conv_dispatch._winograd.output_transform = real


@pytest.fixture
def many_chunks(monkeypatch, restore_config):
    """Chunks of one sample, so a 9-sample batch is 9 chunks for the threads to share."""
    monkeypatch.setattr(_conv_dispatch, "_WINOGRAD_CACHE_TARGET_BYTES", 1)


@pytest.fixture
def blas_gemm(monkeypatch):
    """Winograd's GEMMs in numpy's BLAS (as on CPUs without AVX2): the chunks then hold BLAS at
    one thread."""
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_TILE_GEMM", False)


@pytest.fixture
def native_gemm(monkeypatch):
    """Winograd's GEMMs in cnnext's tile_gemm kernels (what AVX2 machines use): no BLAS call."""
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_TILE_GEMM", True)


@pytest.mark.usefixtures("many_chunks")
@pytest.mark.parametrize("native", [True, False], ids=["tile_gemm", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_chunks_over_threads_bitwise_identical_and_correct(dtype, native, monkeypatch):
    monkeypatch.setattr(_conv_dispatch, "_NATIVE_TILE_GEMM", native)
    x, w, b, gy = data(dtype=dtype)
    # bitwise: grad_weight sums the chunks in order
    y, *grads = same_at_thread_counts(lambda: winograd_pass(x, w, b, gy), (1, 2, 3, 4))
    assert_close(y, oracle.conv2d(x, w, b, padding=1))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, padding=1)):
        assert_close(got, want)


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm")
def test_blas_is_single_threaded_inside_and_restored_after():
    cnnext.set_num_threads(2)
    before = blas_threads()
    with chunk_calls() as seen:
        winograd_pass(*data())
    assert blas_threads() == before
    assert {t for t, _ in seen} == {1}
    assert any(name.startswith("cnnext") for _, name in seen)  # the chunks ran on worker threads


@needs_control
@pytest.mark.usefixtures("many_chunks", "native_gemm")
def test_native_gemm_leaves_blas_alone_and_needs_no_control(monkeypatch):
    """With the tile_gemm kernels the chunks call no BLAS: its thread count is not touched, and the
    chunks run on worker threads even when BLAS cannot be controlled."""
    cnnext.set_num_threads(2)
    before = blas_threads()
    x, w, b, gy = data()
    want = winograd_pass(x, w, b, gy)
    for control in ("available", "unavailable"):
        if control == "unavailable":
            monkeypatch.setattr(_threads, "_blas_controllers", lambda: [])
        with chunk_calls(blas=control == "available") as seen:
            got = winograd_pass(x, w, b, gy)
        for a, c in zip(got, want):
            np.testing.assert_array_equal(a, c)
        assert any(name.startswith("cnnext") for _, name in seen)
        if control == "available":
            assert {t for t, _ in seen} == {before}


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm")
def test_blas_restored_after_an_error_in_a_chunk(monkeypatch):
    cnnext.set_num_threads(2)
    before = blas_threads()
    calls = []

    def fail(*a):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("chunk failed")
        return real(*a)
    real = _conv_dispatch._winograd.input_transform
    monkeypatch.setattr(_conv_dispatch._winograd, "input_transform", fail)
    x, w, b, _ = data()
    with cnnext.force_conv_algorithm("winograd"), pytest.raises(RuntimeError, match="chunk failed"):
        F.conv2d(x, w, b, padding=1)
    assert blas_threads() == before


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm")
def test_overlapping_calls_from_threads_restore_blas_once():
    """Calls overlapping in several Python threads each set BLAS to one thread; it is put back
    after the last one, and every call's result equals a serial call's. (The algorithm is forced
    once, outside the threads: force_conv_algorithm is process-wide.)"""
    cnnext.set_num_threads(2)
    before = blas_threads()
    inputs = [data(seed=s) for s in range(4)]
    got = [None] * 4
    barrier = threading.Barrier(4)

    def run(i):
        barrier.wait()
        for _ in range(3):
            got[i] = conv_pass(*inputs[i])
    with cnnext.force_conv_algorithm("winograd"):
        want = [conv_pass(*d) for d in inputs]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert blas_threads() == before
    for g, w_ in zip(got, want):
        for a, c in zip(g, w_):
            np.testing.assert_array_equal(a, c)


@pytest.mark.usefixtures("many_chunks", "blas_gemm")
def test_without_blas_control_results_are_the_same(monkeypatch):
    """With a BLAS cnnext cannot control, chunks run one after the other (kernels still use their
    OpenMP threads) and give the same results."""
    cnnext.set_num_threads(2)
    x, w, b, gy = data()
    want = winograd_pass(x, w, b, gy)
    monkeypatch.setattr(_threads, "_blas_controllers", lambda: [])
    assert not _threads.blas_control_available()
    got = winograd_pass(x, w, b, gy)
    for a, c in zip(got, want):
        assert_close(a, c)


@needs_control
@pytest.mark.usefixtures("many_chunks")
def test_workspace_limit_bounds_the_worker_threads(monkeypatch):
    """Each worker holds one chunk's workspace: with room for one, the chunks run serially."""
    cnnext.set_num_threads(4)
    names = set()
    real = _conv_dispatch._winograd.input_transform
    monkeypatch.setattr(_conv_dispatch._winograd, "input_transform",
                        lambda *a: names.add(threading.current_thread().name) or real(*a))
    x, w, b, gy = data()
    tiles, ld, _ = _conv_dispatch._winograd_chunks(9, 5, 6, 10, 10, x.dtype)
    cnnext.set_workspace_limit(36 * (5 + 6) * ld * x.itemsize)
    winograd_pass(x, w, b, gy)
    assert names == {threading.current_thread().name}
    names.clear()
    cnnext.set_workspace_limit(2**30)
    # the first two chunks wait for each other: they can only meet on two threads (a single one
    # would time out), so this does not depend on how fast the pool's threads start
    meet, calls = threading.Barrier(2), []

    def probe(*a):
        names.add(threading.current_thread().name)
        calls.append(1)
        if len(calls) <= 2:
            meet.wait(timeout=30)
        return real(*a)
    monkeypatch.setattr(_conv_dispatch._winograd, "input_transform", probe)
    winograd_pass(x, w, b, gy)
    assert len(names) > 1


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_split_matmul_equals_numpy(threads):
    rng = np.random.default_rng(threads)
    a = rng.standard_normal((7, 4, 5))
    b = rng.standard_normal((7, 5, 3))
    out = np.empty((7, 4, 3))
    with _threads.single_threaded_blas():
        _threads.matmul(a, b, out, threads)
        want = np.matmul(a, b)
    np.testing.assert_array_equal(out, want)


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm", "blas_limit_restored")
@pytest.mark.parametrize("found", [3, 1])
def test_blas_restored_to_the_count_it_had(found, monkeypatch):
    """Whatever BLAS ran with before (set here through threadpoolctl, as a user would), it is 1
    inside the chunked job and that count again after."""
    cnnext.set_num_threads(2)
    threadpoolctl.threadpool_limits(limits=found, user_api="blas")
    threadpoolctl_release()
    assert blas_threads() == found
    with chunk_calls() as seen:
        winograd_pass(*data())
    assert seen and {t for t, _ in seen} == {1}
    assert blas_threads() == found


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm", "blas_limit_restored")
def test_blas_controlled_from_a_thread_after_a_one_shot_limit_elsewhere(monkeypatch):
    """The main thread limits BLAS without a with block (as the CLI does); threadpoolctl >= 3.8 then
    ignores every other thread's setting. A chunked call in another thread still holds BLAS at one
    thread, puts back the count, and leaves BLAS settable from the main thread afterwards."""
    cnnext.set_num_threads(2)
    threadpoolctl.threadpool_limits(limits=2, user_api="blas")  # claims OpenBLAS for this thread
    x, w, b, gy = data()
    with chunk_calls() as seen, cnnext.force_conv_algorithm("winograd"):
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(conv_pass, x, w, b, gy).result()
    assert seen and {t for t, _ in seen} == {1}
    assert blas_threads() == 2
    assert_close(got[0], oracle.conv2d(x, w, b, padding=1))
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    assert blas_threads() == 1


@needs_control
@pytest.mark.usefixtures("blas_limit_restored")
def test_blas_restored_when_the_last_block_ends_in_another_thread():
    """Thread A limits BLAS (first block in), thread B restores it (last block out)."""
    before = blas_threads()
    a_in, b_in, a_out, done = (threading.Barrier(2) for _ in range(4))
    inside = {}

    def a():
        with _threads.single_threaded_blas() as blas:
            inside["a"] = blas.active, blas_threads()
            a_in.wait()
            b_in.wait()
        a_out.wait()
        done.wait()  # A is still alive when B restores

    def b():
        a_in.wait()
        with _threads.single_threaded_blas() as blas:
            b_in.wait()
            a_out.wait()  # A has left: this block is the last one
            inside["b"] = blas.active, blas_threads()
        inside["after"] = blas_threads()
        done.wait()
    run_threads([a, b], timeout=60)
    assert inside == {"a": (True, 1), "b": (True, 1), "after": before}
    assert blas_threads() == before


def test_without_blas_control_blocks_are_inactive(monkeypatch):
    monkeypatch.setattr(_threads, "_blas_controllers", lambda: [])
    before = [i["num_threads"] for i in threadpool_info()]
    with _threads.single_threaded_blas() as blas:
        assert not blas.active
        assert [i["num_threads"] for i in threadpool_info()] == before


def test_one_cached_controller():
    """Every use goes through one ThreadpoolController; refresh builds a new one and keeps it."""
    ctl = _threads.controller()
    assert isinstance(ctl, threadpoolctl.ThreadpoolController)
    assert _threads.controller() is ctl
    new = _threads.controller(refresh=True)
    assert new is not ctl and _threads.controller() is new
    assert {i["filepath"] for i in new.info()} == {i["filepath"] for i in threadpool_info()}


def test_controller_built_once_under_concurrent_first_use(monkeypatch):
    monkeypatch.setattr(_threads, "_controller", None)
    built = []
    real = threadpoolctl.ThreadpoolController

    class Counting(real):
        def __init__(self):
            built.append(1)
            super().__init__()
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Counting)
    start = threading.Barrier(8)

    def first_use(_):
        start.wait()
        return _threads.controller()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(first_use, range(8)))
    assert len(built) == 1 and all(c is got[0] for c in got)


@needs_control
@pytest.mark.usefixtures("blas_limit_restored")
def test_set_blas_threads_now_or_after_the_last_block():
    assert _threads.set_blas_threads(3)
    assert blas_threads() == 3
    with _threads.single_threaded_blas():
        assert _threads.set_blas_threads(2)
        assert blas_threads() == 1  # a chunked call is running: it keeps BLAS at one thread
    assert blas_threads() == 2
    # from another thread than the one that set it last (threadpoolctl >= 3.8 would ignore that)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(_threads.set_blas_threads, 1).result()
    assert blas_threads() == 1


def test_set_blas_threads_without_control(monkeypatch):
    monkeypatch.setattr(_threads, "_blas_controllers", lambda: [])
    assert _threads.set_blas_threads(2) is False


@needs_control
@pytest.mark.usefixtures("many_chunks", "blas_gemm", "blas_limit_restored")
def test_after_a_chunked_call_other_threads_can_set_blas():
    """cnnext lets go of threadpoolctl's claim on OpenBLAS after its changes: while the thread that
    ran a chunked call lives on, the main thread's threadpool_limits still takes effect."""
    cnnext.set_num_threads(2)
    done, checked = threading.Event(), threading.Event()

    def user():
        winograd_pass(*data())
        done.set()
        checked.wait(timeout=60)
    t = threading.Thread(target=user)
    t.start()
    try:
        assert done.wait(timeout=60)
        threadpoolctl.threadpool_limits(limits=3, user_api="blas")
        assert blas_threads() == 3
    finally:
        checked.set()
        t.join(timeout=60)
