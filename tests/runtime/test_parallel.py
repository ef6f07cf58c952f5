"""Chunk-level parallelism (cnnext/_parallel.py): numpy's BLAS kept single-threaded and restored,
chunks spread over Python threads, results bitwise identical for every thread count."""
import contextlib
import threading

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext import _parallel
from cnnext.functional import conv
from cnnext.functional import _conv_dispatch
import naive_oracle as oracle
from helpers import same_at_thread_counts
from naive_oracle import assert_close

needs_control = pytest.mark.skipif(not _parallel.blas_control_available(),
                                   reason="numpy's BLAS is not the bundled OpenBLAS")


def blas_threads():
    return _parallel._blas_functions()[0]()


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
            monkeypatch.setattr(_parallel, "_functions", None)
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
    monkeypatch.setattr(_parallel, "_functions", None)
    assert not _parallel.blas_control_available()
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
    winograd_pass(x, w, b, gy)
    assert len(names) > 1


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_split_matmul_equals_numpy(threads):
    rng = np.random.default_rng(threads)
    a = rng.standard_normal((7, 4, 5))
    b = rng.standard_normal((7, 5, 3))
    out = np.empty((7, 4, 3))
    with _parallel.single_threaded_blas():
        _parallel.matmul(a, b, out, threads)
        want = np.matmul(a, b)
    np.testing.assert_array_equal(out, want)
