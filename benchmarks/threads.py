"""Do cnnext's kernels release the GIL? Two Python threads vs one, measured (never asserted).

Each thread calls conv2d (forward, or forward + backward) on its own data. With one kernel thread
(cnnext.set_num_threads(1)) and one BLAS thread, a call keeps one core busy, so on a machine with
two free cores:

    ratio = time(two threads, one batch of calls each) / (2 * time(one thread, one batch))

is about 0.5 when the GIL is released during the heavy work (the two threads overlap), and about
1.0 when it is held (they take turns). The Python glue between kernel calls holds the GIL, so the
ratio is never exactly 0.5. The process's CPU time over wall time while both threads run is also
shown (about 2 when they overlap). Both depend on the machine being idle: a busy second core makes
them look serialised. tests/runtime/test_concurrency.py checks GIL release without timing.

Usage: python benchmarks/threads.py [--reps 5] [--calls 10] [--shape N,C,H,W,K,k] [--dtype float32]
"""
import argparse
import os
import sys
import threading
import time

# One BLAS thread: the GEMM must not use the second core by itself. Set before numpy is imported (the
# harness imports it); a value the user exported is kept.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import _harness  # noqa: E402
import cnnext  # noqa: E402
import cnnext.functional as F  # noqa: E402
from cnnext._config import force_conv_algorithm  # noqa: E402


def _conv_work(x, w, calls, backward):
    """A callable making ``calls`` conv2d calls (and their backward) on x, w."""
    def work():
        for _ in range(calls):
            y = F.conv2d(x, w, padding=1)
            if backward:
                F.conv2d_backward(y, x, w, padding=1)
    return work


def _one_thread(work):
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def _two_threads(works, cpu=None):
    """Wall time of running the two callables ``works`` at once on two Python threads; appends the
    process's CPU time / wall time over that span to ``cpu``."""
    barrier = threading.Barrier(3)

    def run(work):
        barrier.wait()
        work()

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for t in threads:
        t.start()
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu.append((time.process_time() - c0) / wall)
    return wall


def _best(works, reps):
    """(best one-thread time of works[0], best two-thread time, highest CPU/wall of the two-thread runs)."""
    one = min(_one_thread(works[0]) for _ in range(reps))
    cpu = []
    two = min(_two_threads(works, cpu) for _ in range(reps))
    return one, two, max(cpu)


def _control(reps):
    """The same measurement for numpy's sort, which releases the GIL: what this machine allows now."""
    arrays = [np.random.default_rng(i).random(2_000_000) for i in range(2)]

    def sorts(a):
        def work():
            for _ in range(3):
                np.sort(a)
        return work

    return _best([sorts(a) for a in arrays], reps)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions; the best time counts")
    p.add_argument("--calls", type=int, default=10, help="conv2d calls per thread per repetition")
    p.add_argument("--shape", default="16,32,32,32,32,3", help="N,C,H,W,K,kernel")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args(argv)
    N, C, H, W, K, k = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((N, C, H, W)).astype(args.dtype),
             rng.standard_normal((K, C, k, k)).astype(args.dtype)) for _ in range(2)]
    cnnext.set_num_threads(1)
    blas = _harness.threadpools_text() or f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    print(f"cnnext {cnnext.__version__}, {_harness.cpu_model()}, {os.cpu_count()} CPUs "
          f"(load average {_harness.loadavg_text()}), kernel threads 1, BLAS: {blas}")
    print(f"conv2d {args.dtype} input {(N, C, H, W)}, {K} filters {k}x{k}, padding 1; "
          f"{args.calls} calls per thread, best of {args.reps}")
    print()
    rows = []
    for algorithm in ("gemm", "direct"):
        for backward in (False, True):
            with force_conv_algorithm(algorithm):
                _two_threads([_conv_work(x, w, 1, backward) for x, w in data])  # warm-up
                one, two, cpu = _best([_conv_work(x, w, args.calls, backward) for x, w in data], args.reps)
            rows.append([algorithm, "fwd+bwd" if backward else "fwd", f"{one:.4f}", f"{two:.4f}",
                         f"{two / (2 * one):.2f}", f"{cpu:.2f}"])
    one, two, cpu = _control(args.reps)
    rows.append(["control: numpy.sort", "-", f"{one:.4f}", f"{two:.4f}", f"{two / (2 * one):.2f}", f"{cpu:.2f}"])
    print(_harness.md_table(["algorithm", "pass", "1 thread (s)", "2 threads (s)",
                             "ratio 2 threads / (2 x 1 thread)", "CPU/wall, 2 threads"], rows,
                            ["l", "l", "r", "r", "r", "r"]))
    print()
    print("ratio ~0.5: the two threads ran in parallel (GIL released); ~1.0: serialised (GIL held)")
    print("CPU/wall: cores this process kept busy while both threads ran (~2 in parallel, <=1 serialised);")
    print("both figures need two idle cores: other processes on the machine push them towards 1;")
    print("the numpy.sort control (which releases the GIL) shows what the machine allowed during the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
