"""Threads and processes (issue 6, item 4).

- Many Python threads calling the functional API at once on shared read-only inputs get exactly
  (np.array_equal) the serial results.
- Results are bitwise identical for every kernel thread count (cnnext.set_num_threads 1, 2, 3):
  each output element is computed by one thread with the same sequence of operations.
- The kernels release the GIL: two threads on separate data get the serial results, and a probe
  (huge switch interval: a GIL-holding call lets no other thread run, shown by a control) sees the
  main thread run while each kernel call is in flight. How much faster two threads are is
  measured by benchmarks/threads.py, never asserted.
- multiprocessing works after cnnext has run parallel (OpenMP) code, with the default start method
  (fork on Linux) and with spawn and forkserver. (GNU libgomp cannot start threads in a child
  forked after the parent ran a parallel region: cnnext runs such a child's kernels serially; a
  hang fails the test after a 30 s timeout.)

Settings such as the thread count are process-wide, and a forced conv algorithm reaches threads that
have no force_conv_algorithm block of their own (tests/test_config_threads.py); every test here sets
them before starting its threads and restores them afterwards.
"""
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import mp_workers
from cnnext import nn
from cnnext._config import force_conv_algorithm

pytestmark = pytest.mark.usefixtures("restore_config")


def _readonly(a):
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _shared_inputs():
    rng = np.random.default_rng(42)
    return dict(
        x=_readonly(rng.standard_normal((4, 6, 11, 10)).astype(np.float32)),
        x64=_readonly(rng.standard_normal((3, 6, 9, 9))),
        w=_readonly(rng.standard_normal((8, 6, 3, 3)).astype(np.float32)),
        wd=_readonly(rng.standard_normal((6, 1, 3, 3))),  # depthwise
        b=_readonly(rng.standard_normal(8).astype(np.float32)),
    )


def _all_ops(d):
    """Every functional op on the shared inputs; returns a dict of result arrays."""
    out = {}
    y = F.conv2d(d["x"], d["w"], d["b"], stride=(1, 2), padding=1, dilation=(2, 1))
    out["conv"] = y
    out["conv_gx"], out["conv_gw"], out["conv_gb"] = F.conv2d_backward(
        y, d["x"], d["w"], stride=(1, 2), padding=1, dilation=(2, 1))
    yd = F.conv2d(d["x64"], d["wd"], None, padding="same", groups=6)
    out["dw"] = yd
    out["dw_gx"], out["dw_gw"], _ = F.conv2d_backward(yd, d["x64"], d["wd"], padding="same", groups=6)
    p, idx = F.max_pool2d(d["x"], 3, 2, 1, ceil_mode=True, return_indices=True)
    out["max"], out["max_idx"] = p, idx
    out["max_g"] = F.max_pool2d_backward(p, idx, d["x"].shape)
    p2, idx2 = F.max_pool2d(d["x64"], 2, return_indices=True)  # the 2x2 fast path
    out["max2"], out["max2_g"] = p2, F.max_pool2d_backward(p2, idx2, d["x64"].shape)
    a = F.avg_pool2d(d["x"], 3, 2, 1, count_include_pad=False)
    out["avg"] = a
    out["avg_g"] = F.avg_pool2d_backward(a, d["x"].shape, 3, 2, 1, count_include_pad=False)
    out["relu"] = F.relu(d["x"])
    return out


def _assert_same(got, want, what):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype, f"{what}: {k}"
        assert np.array_equal(got[k], want[k]), f"{what}: {k} differs from the serial result"


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@pytest.mark.parametrize("kernel_threads", [1, 2])
def test_many_threads_on_shared_inputs_match_serial(algorithm, kernel_threads):
    d = _shared_inputs()
    cnnext.set_num_threads(kernel_threads)
    with force_conv_algorithm(algorithm):
        serial = _all_ops(d)
        start = threading.Barrier(8)

        def task(i):
            if i < 8:
                start.wait()  # the first eight tasks really start together
            return _all_ops(d)

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(task, range(48)))
    for i, r in enumerate(results):
        _assert_same(r, serial, f"task {i}")
    for name in ("x", "x64", "w", "wd", "b"):
        assert not d[name].flags.writeable  # the inputs stayed read-only (and were accepted as such)


def test_threads_with_their_own_modules_match_serial():
    """nn modules hold per-call state, so each thread has its own; the weights are shared, read-only."""
    rng = np.random.default_rng(3)
    x = _readonly(rng.standard_normal((4, 1, 8, 8)).astype(np.float32))
    ref = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(64, 3, rng=1))
    state = ref.state_dict()

    def run(_):
        m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 3, rng=6))
        m.load_state_dict(state)
        y = m(x)
        gx = m.backward(np.ones_like(y))
        return y, gx, m[0].weight.grad.copy()

    want = run(None)
    with ThreadPoolExecutor(max_workers=6) as pool:
        for got in pool.map(run, range(24)):
            for g, w in zip(got, want):
                assert np.array_equal(g, w)


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
def test_results_bitwise_identical_across_kernel_thread_counts(algorithm):
    d = _shared_inputs()
    results = {}
    with force_conv_algorithm(algorithm):
        for n in (1, 2, 3):
            cnnext.set_num_threads(n)
            results[n] = _all_ops(d)
    _assert_same(results[2], results[1], "2 threads vs 1")
    _assert_same(results[3], results[1], "3 threads vs 1")


def test_two_threads_on_separate_data_are_correct():
    """Two threads, each with its own data and a long-running kernel call, get the serial results."""
    rng = np.random.default_rng(7)
    data = [(rng.standard_normal((4, 8, 24, 24)), rng.standard_normal((8, 8, 3, 3))) for _ in range(2)]
    cnnext.set_num_threads(1)
    serial = [F.conv2d_backward(F.conv2d(x, w, padding=1), x, w, padding=1) for x, w in data]
    results = [None, None]
    start = threading.Barrier(2)

    def work(i):
        x, w = data[i]
        start.wait()
        for _ in range(3):
            results[i] = F.conv2d_backward(F.conv2d(x, w, padding=1), x, w, padding=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    for got, want in zip(results, serial):
        for g, w in zip(got, want):
            assert np.array_equal(g, w)


def _gil_probe_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 64, 64))
    w = rng.standard_normal((16, 16, 3, 3))
    wd = rng.standard_normal((16, 1, 5, 5))
    y = F.conv2d(x, w, padding=1)
    return {
        "max_pool2d": lambda: F.max_pool2d(x, 7, 1, 3),
        "avg_pool2d": lambda: F.avg_pool2d(x, 7, 1, 3),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(*F.max_pool2d(x, 3, 1, 1, return_indices=True), x.shape),
        "conv2d_direct": lambda: F.conv2d(x, wd, padding=2, groups=16),
        "conv2d_backward_direct": lambda: F.conv2d_backward(F.conv2d(x, wd, padding=2, groups=16), x, wd,
                                                            padding=2, groups=16),
        "conv2d_gemm": lambda: F.conv2d(x, w, padding=1),
        "conv2d_backward_gemm": lambda: F.conv2d_backward(y, x, w, padding=1),
    }


def _gil_probe(call, max_calls=300):
    """How often the main thread ran while ``call`` was in flight in a worker thread.

    The switch interval is made huge, so a thread holding the GIL keeps it until it blocks or
    releases it. The worker flags ``in_call`` around its calls (until the main thread has seen the
    flag, at most ``max_calls`` of them: on a busy machine a short call may end before the main
    thread's next check) and the main thread, which sleeps between checks, counts how often it sees
    the flag set. If the call kept the GIL throughout, the main thread could not run at all between
    setting and clearing the flag: the count is exactly 0.
    """
    state = {"in_call": False, "done": False, "seen": 0}
    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        def work():
            for _ in range(max_calls):
                state["in_call"] = True
                call()
                state["in_call"] = False
                if state["seen"]:
                    break
            state["done"] = True

        t = threading.Thread(target=work)
        t.start()
        while not state["done"]:
            if state["in_call"]:
                state["seen"] += 1
            time.sleep(0.001)  # blocks: releases the GIL
        t.join()
    finally:
        sys.setswitchinterval(old)
    return state["seen"]


@pytest.mark.parametrize("name", sorted(_gil_probe_calls()))
def test_kernels_release_the_gil(name):
    """Another Python thread runs while a kernel call is in flight (a correctness probe, no timing).

    Inputs are float64 and C-contiguous (no copy); what else runs in a call is small numpy
    bookkeeping, plus numpy's GEMM for the gemm algorithm (which releases the GIL too).
    """
    cnnext.set_num_threads(1)
    call = _gil_probe_calls()[name]
    with force_conv_algorithm("direct" if name.endswith("direct") else "gemm"):
        seen = _gil_probe(call)
    assert seen > 0, f"the main thread never ran while {name} was running: the GIL was held"


def test_gil_probe_control_sees_a_gil_holding_call():
    """The probe can fail: a pure-Python loop holds the GIL, and the main thread never runs."""
    assert _gil_probe(lambda: sum(range(2 * 10**6)), max_calls=3) == 0


def _parent_results(seeds, threads):
    return [mp_workers.conv_job((s, threads)) for s in seeds]


def _pool_results(ctx, seeds, threads):
    with ctx.Pool(2) as pool:
        res = pool.map_async(mp_workers.conv_job, [(s, threads) for s in seeds])
        try:
            return res.get(timeout=30)
        except multiprocessing.TimeoutError:
            pool.terminate()
            pytest.fail(f"multiprocessing ({ctx.get_start_method()}) workers hung: with {threads} kernel "
                        f"threads, a child forked after the parent ran parallel OpenMP code never returned")


def _start_methods():
    methods = multiprocessing.get_all_start_methods()
    return [None] + [m for m in ("spawn", "forkserver") if m in methods]


@pytest.mark.parametrize("method", _start_methods(), ids=lambda m: m or "default")
def test_multiprocessing_after_parallel_openmp_code(method):
    # parallel kernels first, in the parent (OpenMP's thread pool now exists in this process)
    cnnext.set_num_threads(2)
    seeds = [1, 2, 3, 4]
    want = _parent_results(seeds, 2)
    ctx = multiprocessing.get_context(method)
    if method is None and sys.platform.startswith("linux"):
        assert ctx.get_start_method() in ("fork", "forkserver")
    got = _pool_results(ctx, seeds, 2)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert np.array_equal(a, b)
    # and the parent still works after forking
    again = _parent_results(seeds[:1], 2)
    for a, b in zip(again[0], want[0]):
        assert np.array_equal(a, b)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_fork_after_parallel_code_with_serial_children():
    """What always works with fork: children that run the kernels with one thread."""
    cnnext.set_num_threads(2)
    seeds = [5, 6]
    want = _parent_results(seeds, 1)
    _parent_results(seeds, 2)  # parallel regions in the parent
    got = _pool_results(multiprocessing.get_context("fork"), seeds, 1)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert np.array_equal(a, b)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_forked_child_after_parallel_code_reports_one_thread():
    """After the parent ran multi-threaded kernels, a forked child's kernels run serially."""
    cnnext.set_num_threads(2)
    _parent_results([1], 2)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        res = pool.apply_async(mp_workers.threads_after, (3,))
        assert res.get(timeout=30) == 1
