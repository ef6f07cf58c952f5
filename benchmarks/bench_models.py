#!/usr/bin/env python
"""Whole-model benchmark: every model of cnnext.models beside the same PyTorch model (same weights).

Run from a checkout after ``pip install ".[bench]"``::

    python benchmarks/bench_models.py                         # all models, 1 and 2 threads
    python benchmarks/bench_models.py --models cifarnet --threads 2 --reps 10
    python benchmarks/bench_models.py --load                  # one busy process on one core meanwhile
    python benchmarks/bench_models.py --import-order numpy,torch,cnnext

Measured, float32: the training step (batch 64: forward, cross-entropy, backward, SGD with momentum
0.9), inference throughput (no_grad / torch.inference_mode, batch 256) and batch-1 latency, against
PyTorch NCHW, PyTorch channels_last and, for inference, ONNX Runtime (the torch model exported to
ONNX) when onnxruntime and onnx are installed. Contenders alternate within each round; the tables
give medians and each contender's time / the best peer's. ``--layers`` adds a per-layer table: every
distinct convolution, pooling and normalisation shape of the models, forward and forward+backward.
"""
import argparse
import importlib
import os
import sys

_ORDER_DEFAULT = "cnnext,numpy,torch"


def _early_imports(argv):
    """Import numpy, torch and cnnext in the order given by --import-order, before anything else."""
    order = _ORDER_DEFAULT
    for i, a in enumerate(argv):
        if a == "--import-order" and i + 1 < len(argv):
            order = argv[i + 1]
        elif a.startswith("--import-order="):
            order = a.split("=", 1)[1]
    names = [n.strip() for n in order.split(",") if n.strip()]
    if sorted(names) != ["cnnext", "numpy", "torch"]:
        raise SystemExit(f"bench_models.py: --import-order must name numpy, torch and cnnext once each, got {order!r}")
    for n in names:
        importlib.import_module(n)
    return names


if __name__ == "__main__":
    IMPORT_ORDER = _early_imports(sys.argv[1:])

import gc  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cnnext  # noqa: E402
from cnnext import models, nn, optim  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "torch_models.py"


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- machine ----------------------------------------------------------------------------------
def cpu_description():
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16")
           if f in flags]
    return model, isa


def gemm_rate(threads, reps=5, n=1024):
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ a
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def set_threads(n):
    from threadpoolctl import threadpool_limits

    cnnext.set_num_threads(n)
    torch.set_num_threads(n)
    return threadpool_limits(n, user_api="blas")


def busy_load(seconds):
    """One busy Python process pinned to the last core, for at most ``seconds`` (it stops itself)."""
    code = ("import os, time\n"
            "try:\n    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})\nexcept Exception:\n    pass\n"
            f"end = time.time() + {float(seconds)}\n"
            "while time.time() < end:\n    pass\n")
    return subprocess.Popen([sys.executable, "-c", code])


# -- contenders -------------------------------------------------------------------------------
def make_pair(ref, name, seed=0):
    model = models.build(name, rng=seed)
    tmodel = ref.build(name)
    tmodel.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()})
    return model, tmodel


def train_steps(ref, name, batch):
    rng = np.random.default_rng(1)
    shape = (batch,) + models.input_shape(name)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model, tmodel = make_pair(ref, name)
    model.train()
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def ours():
        opt.zero_grad()
        crit(model(x), y)
        model.backward(crit.backward(), input_grad=False)
        opt.step()

    contenders = {"cnnext": ours}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for label, fmt in (("torch", torch.contiguous_format), ("torch-CL", torch.channels_last)):
        tm = ref.build(name).to(memory_format=fmt)
        tm.load_state_dict(tmodel.state_dict())
        tm.train()
        topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        txf = tx.contiguous(memory_format=fmt) if tx.dim() == 4 else tx

        def step(tm=tm, topt=topt, txf=txf):
            topt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tm(txf), ty).backward()
            topt.step()

        contenders[label] = step
    return contenders


def infer_fns(ref, name, batch, onnx_dir):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch,) + models.input_shape(name)).astype(np.float32)
    model, tmodel = make_pair(ref, name)
    model.eval()
    tmodel.eval()

    def ours():
        with cnnext.no_grad():
            model(x)

    contenders = {"cnnext": ours}
    tx = torch.from_numpy(x)
    for label, fmt in (("torch", torch.contiguous_format), ("torch-CL", torch.channels_last)):
        tm = ref.build(name).to(memory_format=fmt).eval()
        tm.load_state_dict(tmodel.state_dict())
        txf = tx.contiguous(memory_format=fmt)

        def run(tm=tm, txf=txf):
            with torch.inference_mode():
                tm(txf)

        contenders[label] = run
    sess = _onnx_session(tmodel, name, onnx_dir)
    if sess is not None:
        feed = {sess.get_inputs()[0].name: x}
        contenders["onnxruntime"] = lambda: sess.run(None, feed)
    return contenders


_ORT_THREADS = [1]


def _onnx_session(tmodel, name, onnx_dir):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = os.path.join(onnx_dir, f"{name}.onnx")
    if not os.path.exists(path):
        try:
            torch.onnx.export(tmodel, torch.zeros((1,) + models.input_shape(name)), path,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        except Exception as exc:  # exporter missing pieces (onnx not installed, ...)
            log(f"  ONNX export of {name} failed ({type(exc).__name__}: {exc}); no ONNX Runtime column")
            return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = _ORT_THREADS[0]
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def round_robin(contenders, reps, warmup=2):
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in contenders}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            for k, fn in contenders.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    finally:
        if gc_was:
            gc.enable()
    return {k: statistics.median(v) for k, v in times.items()}


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def ratio_row(label, medians, extra, peers):
    best = min(medians[p] for p in peers if p in medians)
    row = [label] + extra
    for k in ("cnnext", "torch", "torch-CL", "onnxruntime"):
        row.append(f"{1e3 * medians[k]:.2f}" if k in medians else "-")
    row.append(f"{medians['cnnext'] / best:.2f}")
    return row


# -- per layer --------------------------------------------------------------------------------
def layer_shapes(names, batch):
    """Distinct (kind, config, input shape) of the conv, pool and norm layers of the models."""
    seen = {}
    for name in names:
        model = models.build(name, rng=0)
        shapes = {}

        def hook(m, x, shapes=shapes):
            shapes[id(m)] = x.shape

        # run once recording each layer's input shape through a wrapper on forward
        originals = {}
        for _, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) or type(m).__name__.startswith(
                    ("BatchNorm", "AdaptiveAvg")):
                originals[id(m)] = m
                m.forward = (lambda f, m: (lambda x: (hook(m, x), f(x))[1]))(m.forward, m)
        with cnnext.no_grad():
            model.eval()(np.zeros((batch,) + models.input_shape(name), np.float32))
        for key, m in originals.items():
            cfg = m.extra_repr()
            sig = (type(m).__name__, cfg, shapes.get(key))
            seen.setdefault(sig, (name, m))
    return seen


def layer_contenders(kind, m, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    tm = _torch_layer(kind, m)
    tx = torch.from_numpy(x)
    y = m(x)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    fwd = {"cnnext": lambda: m(x)}
    both = {"cnnext": lambda: (m(x), m.backward(gy))}
    for label, fmt in (("torch", torch.contiguous_format), ("torch-CL", torch.channels_last)):
        tml = tm.to(memory_format=fmt) if hasattr(tm, "to") else tm
        txf = tx.contiguous(memory_format=fmt).requires_grad_(True)
        tgy = torch.from_numpy(gy).contiguous(memory_format=fmt)

        def f(tml=tml, txf=txf):
            with torch.no_grad():
                tml(txf)

        def fb(tml=tml, txf=txf, tgy=tgy):
            params = [p for p in tml.parameters()] if hasattr(tml, "parameters") else []
            torch.autograd.grad(tml(txf), [txf] + params, tgy)

        fwd[label], both[label] = f, fb
    return fwd, both


def _torch_layer(kind, m):
    if kind == "Conv2d":
        t = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, bias=m.bias is not None)
        t.weight.data = torch.from_numpy(m.weight.data.copy())
        if m.bias is not None:
            t.bias.data = torch.from_numpy(m.bias.data.copy())
        return t
    if kind == "MaxPool2d":
        return torch.nn.MaxPool2d(m.kernel_size, m.stride, m.padding)
    if kind == "AvgPool2d":
        return torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding)
    if kind.startswith("BatchNorm"):
        return torch.nn.BatchNorm2d(m.num_features)
    if kind.startswith("AdaptiveAvg"):
        return torch.nn.AdaptiveAvgPool2d(m.output_size)
    raise ValueError(kind)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models.MODELS), help="comma-separated zoo names")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--reps", type=int, default=15, help="timed rounds per case (default 15)")
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--layers", action="store_true", help="also the per-layer table")
    p.add_argument("--load", action="store_true",
                   help="run one busy process on one core while measuring (stops by itself)")
    p.add_argument("--load-seconds", type=float, default=1800.0,
                   help="upper bound on the busy process's life (default 1800)")
    p.add_argument("--import-order", default=_ORDER_DEFAULT,
                   help=f"order in which numpy, torch and cnnext are imported (default {_ORDER_DEFAULT})")
    p.add_argument("--reference", default=str(REFERENCE), help="path of torch_models.py")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    for m in args.models:
        if m not in models.MODELS:
            p.error(f"--models: unknown model {m!r} (known: {', '.join(models.MODELS)})")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads must be comma-separated ints, got {args.threads!r}")
    if min(args.threads) < 1 or args.reps < 1 or args.load_seconds <= 0:
        p.error("--threads, --reps and --load-seconds must be positive")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ref = load_reference(args.reference)
    cpu, isa = cpu_description()
    loader = busy_load(args.load_seconds) if args.load else None
    onnx_dir = tempfile.mkdtemp(prefix="cnnext-bench-")
    lines = [f"# cnnext model benchmark\n",
             f"CPU: {cpu}; SIMD: {', '.join(isa) or 'none of AVX2/AVX-512'}; cores: {os.cpu_count()}; "
             f"load average at start: {os.getloadavg()[0]:.2f}; busy process: {'yes' if loader else 'no'}; "
             f"import order: {','.join(globals().get('IMPORT_ORDER', _ORDER_DEFAULT.split(',')))}; "
             f"cnnext {cnnext.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
             f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
             f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', 'unset')}\n"]
    try:
        for threads in args.threads:
            limiter = set_threads(threads)
            _ORT_THREADS[0] = threads
            rate = gemm_rate(threads)
            lines.append(f"\n## {threads} thread(s), float32 (numpy GEMM {rate:.0f} GFLOP/s)\n")
            train_rows, infer_rows, lat_rows = [], [], []
            for name in args.models:
                log(f"{threads} thr: {name} train step")
                med = round_robin(train_steps(ref, name, args.train_batch), args.reps)
                train_rows.append(ratio_row(name, med, [], ("torch", "torch-CL")))
                log(f"{threads} thr: {name} inference")
                med = round_robin(infer_fns(ref, name, args.infer_batch, onnx_dir), max(3, args.reps // 2))
                row = ratio_row(name, med, [f"{args.infer_batch / med['cnnext']:.0f}"], ("torch", "torch-CL"))
                row.append(f"{med['cnnext'] / med['onnxruntime']:.2f}" if "onnxruntime" in med else "-")
                infer_rows.append(row)
                med = round_robin(infer_fns(ref, name, 1, onnx_dir), args.reps * 4)
                row = ratio_row(name, med, [], ("torch", "torch-CL"))
                row.append(f"{med['cnnext'] / med['onnxruntime']:.2f}" if "onnxruntime" in med else "-")
                lat_rows.append(row)
            cols = ["cnnext ms", "torch ms", "torch-CL ms", "ORT ms"]
            lines.append(f"### Training step (batch {args.train_batch}, SGD momentum)\n")
            lines.append(table(["model"] + cols + ["cnnext / best torch"], train_rows))
            lines.append(f"\n### Inference, batch {args.infer_batch}\n")
            lines.append(table(["model", "cnnext img/s"] + cols + ["cnnext / best torch", "cnnext / ORT"],
                               infer_rows))
            lines.append("\n### Inference latency, batch 1\n")
            lines.append(table(["model"] + cols + ["cnnext / best torch", "cnnext / ORT"], lat_rows))
            if args.layers:
                rows = []
                for (kind, cfg, shape), (name, m) in layer_shapes(args.models, args.train_batch).items():
                    fwd, both = layer_contenders(kind, m, shape)
                    f = round_robin(fwd, args.reps)
                    fb = round_robin(both, args.reps)
                    rows.append(ratio_row(f"{name} {kind}({cfg}) {shape}", f, [], ("torch", "torch-CL"))[:1]
                                + [f"{1e3 * f['cnnext']:.2f}", f"{f['cnnext'] / min(f['torch'], f['torch-CL']):.2f}",
                                   f"{1e3 * fb['cnnext']:.2f}",
                                   f"{fb['cnnext'] / min(fb['torch'], fb['torch-CL']):.2f}"])
                lines.append(f"\n### Per layer (batch {args.train_batch})\n")
                lines.append(table(["layer", "fwd ms", "fwd / best torch", "fwd+bwd ms", "fwd+bwd / best torch"],
                                   rows))
            limiter.restore_original_limits()
    finally:
        if loader is not None:
            loader.kill()
            loader.wait()
    lines.append(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
