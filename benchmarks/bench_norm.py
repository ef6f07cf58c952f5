"""Batch normalisation, cnnext vs PyTorch: training forward, backward and both, medians in ms.

cnnext: the kernels layers call (``_batch_norm_forward`` with running statistics to update, then
``_batch_norm_backward``), arguments checked as in every call. PyTorch: ``torch.native_batch_norm``
and ``native_batch_norm_backward``, the ATen kernels autograd runs, without the autograd overhead.
Each repetition times cnnext and PyTorch back to back, so both see the same machine load. By
default the caches are flushed (a 64 MiB array is read) before every timed call, so every call
starts from memory, as a layer's input of this size does in training; with --warm each
implementation repeats its call back to back instead, its data staying in cache. Medians are
printed as a Markdown table (ratio = cnnext / torch, below 1 is faster). Never asserts any timing.

Usage: python benchmarks/bench_norm.py [--reps 20] [--threads 1,2] [--dtype float32] [--warm]
       [--shapes 64x16x32x32,64x64x8x8,64x64x32x32] [--no-torch] [--quick]
"""
import argparse
import statistics
import sys
import time

import numpy as np

import cnnext  # first: it sets the OpenMP wait policy before another runtime is loaded
from cnnext.functional.normalization import _batch_norm_backward, _batch_norm_forward

DEFAULT_SHAPES = "64x16x32x32,64x64x8x8,64x64x32x32"  # resnet20 stages 1 and 3, the check


def _parse_shape(text):
    shape = tuple(int(s) for s in text.lower().split("x"))
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r} (want e.g. 64x16x32x32)")
    return shape


_FLUSH = None


def _timed(fn, cold):
    if cold:
        _FLUSH.sum()  # evict the data of earlier calls from the caches
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _measure(ours, theirs, reps, cold):
    """Median ms of each (theirs may be None): interleaved calls when cold, blocks when warm."""
    mine, other = [], []
    if cold:
        for _ in range(reps):
            mine.append(_timed(ours, True))
            if theirs:
                other.append(_timed(theirs, True))
    else:
        mine = [_timed(ours, False) for _ in range(reps)]
        if theirs:
            other = [_timed(theirs, False) for _ in range(reps)]
    return statistics.median(mine), (statistics.median(other) if theirs else None)


def _cases(shape, dtype, rng, torch):
    C = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    saved = {}

    def ours_fwd():
        saved["y"], saved["mean"], saved["invstd"] = _batch_norm_forward(x, rm, rv, w, b, True, 0.1, 1e-5)

    def ours_bwd():
        saved["grads"] = _batch_norm_backward(gy, x, w, saved["mean"], saved["invstd"], True)

    ours = {"fwd": ours_fwd, "bwd": ours_bwd, "fwd+bwd": lambda: (ours_fwd(), ours_bwd())}
    if torch is None:
        return ours, None, None
    tx, tgy, tw, tb = (torch.from_numpy(a) for a in (x, gy, w, b))
    trm, trv = torch.zeros(C, dtype=tx.dtype), torch.ones(C, dtype=tx.dtype)
    tsaved = {}

    def torch_fwd():
        tsaved["out"] = torch.native_batch_norm(tx, tw, tb, trm, trv, True, 0.1, 1e-5)

    def torch_bwd():
        _, m, s = tsaved["out"]
        tsaved["grads"] = torch.ops.aten.native_batch_norm_backward(
            tgy, tx, tw, trm, trv, m, s, True, 1e-5, [True, True, True])

    theirs = {"fwd": torch_fwd, "bwd": torch_bwd, "fwd+bwd": lambda: (torch_fwd(), torch_bwd())}

    def agree():
        ours_fwd(), ours_bwd(), torch_fwd(), torch_bwd()
        pairs = [(saved["y"], tsaved["out"][0])] + list(zip(saved["grads"], tsaved["grads"]))
        return max(float(np.abs(a - t.numpy()).max() / (1 + np.abs(t.numpy()).max())) for a, t in pairs)

    return ours, theirs, agree


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--shapes", default=DEFAULT_SHAPES)
    p.add_argument("--warm", action="store_true", help="repeat calls back to back, data in cache")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--quick", action="store_true", help="small shapes, 3 repetitions (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.shapes = 3, "8x4x6x6,16x8"
    shapes = [_parse_shape(s) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: cnnext only", file=sys.stderr)
    dtype = np.dtype(args.dtype)
    global _FLUSH
    _FLUSH = np.ones(2**23)  # 64 MiB
    print("# cnnext batch_norm benchmark")
    print(f"cnnext {cnnext.__version__}" + (f", torch {torch.__version__}" if torch else "")
          + f", {args.reps} repetitions, medians in ms, "
          + ("warm caches" if args.warm else "caches flushed before every call"))
    print()
    print("| shape | dtype | thr | pass | cnnext ms | torch ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for shape in shapes:
        for n in threads:
            cnnext.set_num_threads(n)
            if torch is not None:
                torch.set_num_threads(n)
            ours, theirs, agree = _cases(shape, dtype, rng, torch)
            if agree is not None:
                err = agree()
                tol = 1e-4 if dtype == np.float32 else 1e-10
                if not err < tol:
                    print(f"MISMATCH {shape} {n} threads: relative difference {err:.2e}")
            for name in ("fwd", "bwd", "fwd+bwd"):
                ours[name]()  # warm-up
                if theirs:
                    theirs[name]()
                a, t = _measure(ours[name], theirs[name] if theirs else None, args.reps,
                                not args.warm)
                if theirs:
                    tail = f"{t:.3f} | {a / t:.2f} |"
                else:
                    tail = "- | - |"
                print(f"| {'x'.join(map(str, shape))} | {dtype.name} | {n} | {name} | {a:.3f} | {tail}",
                      flush=True)


if __name__ == "__main__":
    main()
