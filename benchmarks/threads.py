"""Do cnnext's kernels release the GIL? Two Python threads vs one, measured (never asserted).

Each thread calls conv2d (forward, or forward + backward) on its own data. With one kernel thread
(cnnext.set_num_threads(1)) and one BLAS thread, a call keeps one core busy, so on a machine with
two free cores:

    ratio = time(two threads, one batch of calls each) / (2 * time(one thread, one batch))

is about 0.5 when the GIL is released during the heavy work (the two threads overlap), and about
1.0 when it is held (they take turns). The Python glue between kernel calls holds the GIL, so the
ratio is never exactly 0.5. The process's CPU time over wall time while both threads run is also
shown (about 2 when they overlap). Both depend on the machine being idle: a busy second core makes
them look serialised. tests/test_threads.py checks GIL release without timing.

Usage: python benchmarks/threads.py [--reps 5] [--calls 10] [--shape N,C,H,W,K,k] [--dtype float32]
"""
import argparse
import os
import sys
import threading
import time

# One BLAS thread: the GEMM must not use the second core by itself. Set before numpy is imported;
# a value the user exported is kept.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import cnnext  # noqa: E402
import cnnext.functional as F  # noqa: E402
from cnnext._config import force_conv_algorithm  # noqa: E402


def _work(x, w, calls, backward):
    for _ in range(calls):
        y = F.conv2d(x, w, padding=1)
        if backward:
            F.conv2d_backward(y, x, w, padding=1)


def _one_thread(data, calls, backward):
    x, w = data[0]
    t0 = time.perf_counter()
    _work(x, w, calls, backward)
    return time.perf_counter() - t0


def _control(reps):
    """The same measurement for numpy's sort, which releases the GIL: what this machine allows now."""
    arrays = [np.random.default_rng(i).random(2_000_000) for i in range(2)]

    def work(a):
        for _ in range(3):
            np.sort(a)

    def one():
        t0 = time.perf_counter()
        work(arrays[0])
        return time.perf_counter() - t0

    def two(cpu):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=lambda a=a: (barrier.wait(), work(a))) for a in arrays]
        for t in threads:
            t.start()
        barrier.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu.append((time.process_time() - c0) / wall)
        return wall

    t1 = min(one() for _ in range(reps))
    cpu = []
    t2 = min(two(cpu) for _ in range(reps))
    return t1, t2, max(cpu)


def _two_threads(data, calls, backward, cpu=None):
    barrier = threading.Barrier(3)

    def run(i):
        x, w = data[i]
        barrier.wait()
        _work(x, w, calls, backward)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
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
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i['internal_api']} {i['num_threads']} thread(s)" for i in threadpool_info())
    except ImportError:
        blas = f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    print(f"cnnext {cnnext.__version__}, {os.cpu_count()} CPUs, kernel threads 1, BLAS: {blas}")
    print(f"conv2d {args.dtype} input {(N, C, H, W)}, {K} filters {k}x{k}, padding 1; "
          f"{args.calls} calls per thread, best of {args.reps}")
    print()
    print("| algorithm | pass | 1 thread (s) | 2 threads (s) | ratio 2 threads / (2 x 1 thread) | CPU/wall, 2 threads |")
    print("|---|---|---|---|---|---|")
    for algorithm in ("gemm", "direct"):
        for backward in (False, True):
            with force_conv_algorithm(algorithm):
                _two_threads(data, 1, backward)  # warm-up
                one = min(_one_thread(data, args.calls, backward) for _ in range(args.reps))
                cpu = []
                two = min(_two_threads(data, args.calls, backward, cpu) for _ in range(args.reps))
            ratio = two / (2 * one)
            label = "fwd+bwd" if backward else "fwd"
            print(f"| {algorithm} | {label} | {one:.4f} | {two:.4f} | {ratio:.2f} | {max(cpu):.2f} |")
    one, two, cpu = _control(args.reps)
    print(f"| control: numpy.sort | - | {one:.4f} | {two:.4f} | {two / (2 * one):.2f} | {cpu:.2f} |")
    print()
    print("ratio ~0.5: the two threads ran in parallel (GIL released); ~1.0: serialised (GIL held)")
    print("CPU/wall: cores this process kept busy while both threads ran (~2 in parallel, <=1 serialised);")
    print("both figures need two idle cores: other processes on the machine push them towards 1;")
    print("the numpy.sort control (which releases the GIL) shows what the machine allowed during the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
