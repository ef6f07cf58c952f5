#!/usr/bin/env python
"""cnnext speed and memory benchmark: cnnext beside PyTorch CPU, plain numpy and learn_dl.

Run from a checkout after ``pip install .`` (PyTorch and threadpoolctl optional:
``pip install ".[bench]"``)::

    python benchmarks/bench.py                      # everything, float32 and float64, 1 and 2 threads
    python benchmarks/bench.py --quick              # smoke run, few repetitions
    python benchmarks/bench.py --shapes cifar,pool2 --dtype float32 --threads 2 --markdown out.md

Every section prints one Markdown table on stdout; progress goes to stderr. See benchmarks/README.md
for what the columns mean. This script puts the sections together; the harness (timing, threads,
memory, tables, machine) is benchmarks/_harness.py, the contenders benchmarks/contenders.py, the
shapes and targets benchmarks/cases.py.

Method:
- Timings are medians of repeated single calls, taken round-robin over the contenders
  (``for rep: for contender: time one call``) after a warm-up call of each, so slow drifts of a shared
  machine hit every contender alike. The garbage collector is off while timing.
- Threads: cnnext through ``cnnext.set_num_threads``, PyTorch through ``torch.set_num_threads``,
  numpy's BLAS (which cnnext's GEMMs also use) through threadpoolctl.
- Correctness, untimed, once per shape and dtype: every contender against the suite's naive float64
  oracle (tests/naive_oracle.py) on the batch's first sample.
- Peak extra memory comes from a separate pass under tracemalloc (numpy reports its allocations to
  it): peak traced bytes during one call minus the arrays the call returns. Inputs exist before the
  pass starts, so they are not counted. PyTorch's allocator is invisible to tracemalloc: "n/a".
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

# Fairness between contenders that take turns on the same cores: numpy's OpenBLAS keeps its idle
# threads spinning for up to 2**28 cycles after every GEMM (cnnext's, the numpy contender's), and
# they slowed the PyTorch call timed next by up to 2.8x (measured: torch strided fwd+bwd 63 ms
# alone, 139 ms right after a numpy GEMM). With this, they sleep at once. OpenBLAS reads it when
# numpy loads it, so it is set before importing numpy (the harness imports it); a value given by the
# user is kept. (PyTorch's OpenMP threads get OMP_WAIT_POLICY=PASSIVE from cnnext, imported first:
# see _harness.import_libraries.)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402

from _harness import (MIB, Report, Threads, check, fmt, import_libraries, log, md_table,  # noqa: E402
                      measure, notes_text, ratio, time_round_robin)
import _harness  # noqa: E402
from cases import (CONV_SHAPES, LARGE_3X3, LEARN_DL_LAYER, POOL_SHAPES, TARGET_CONV_RATIO,  # noqa: E402
                   TARGET_F64_RATIO, TARGET_GEMM_FRACTION, TARGET_LEARN_DL_SPEEDUP, TARGET_LENET_RATIO,
                   TARGET_POOL_RATIO, conv_case, learn_dl_case, lenet_case, lenet_flops, pool_case)
import contenders  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LEARN_DL = REPO_ROOT.parent / "shared" / "reference" / "learn_dl_cnn.py"
SECTIONS = ("conv", "pool", "lenet", "learn_dl", "gemm")
ORACLE_CHECKED = "the naive float64 oracle (tests/naive_oracle.py) on the batch's first sample"


def timed_passes(libs, threads, passes, reps, label):
    """Yield (threads, pass name, {contender: Stat}) for each thread count and each ``(pass name,
    {contender: call})`` of ``passes``, the contenders of a pass timed round-robin."""
    for t in threads:
        with Threads(t, libs):
            for pname, fns in passes:
                log(f"{label} threads={t} {pname}")
                yield t, pname, measure(fns, reps, traced=contenders.traced)


def _median(stats, name):
    return stats[name].median if name in stats else None


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
def gemm_rates(libs, gemms, threads, reps):
    """{(dtype name, threads): (median GFLOP/s, best GFLOP/s, n)} of each dtype's square matmul."""
    rates = {}
    for dname, gemm in gemms.items():
        for t in threads:
            log(f"gemm {dname} threads={t}")
            with Threads(t, libs):
                s = time_round_robin({"gemm": gemm}, max(reps, 3))["gemm"]
            rates[(dname, t)] = (gemm.flops / statistics.median(s) / 1e9, gemm.flops / min(s) / 1e9, gemm.n)
    return rates


def gemm_section(report, rates, threads_note):
    rows = []
    for (dname, t), (med, best, n) in rates.items():
        rows.append([f"{n}x{n} @ {n}x{n}", dname, t, fmt(med, 1), fmt(best, 1)])
    report.add("## numpy GEMM rate (the reference for the '% GEMM' columns)\n\n"
               + md_table(["matmul", "dtype", "threads", "GFLOP/s (median)", "GFLOP/s (best)"], rows,
                          ["l", "l", "r", "r", "r"])
               + "\n\nMeasured on its own before the other sections. The '% GEMM' column of the conv table "
                 "uses the same matmul timed again inside each row's round-robin (so a busy phase of the "
                 "machine slows both alike): a contender's GFLOP/s / that median rate." + threads_note)


def check_conv(name, dname, libs, oracle, case, both, notes):
    """Every contender against the oracle on the batch's first sample: forward and grad_input from the
    timed batch call, grad_weight and grad_bias from a call on that sample alone."""
    x, w, b, gy, s, p = case[:6]
    ey = oracle.conv2d(x[:1], w, b, s, p)
    egx, egw, egb = oracle.conv2d_backward(gy[:1], x[:1], w, s, p)
    _, one = contenders.conv_contenders(libs, x[:1], w, b, gy[:1], s, p)
    for impl, call in both.items():
        y, (gx, _, _) = call()
        _, (_, gw, gb) = one[impl]()
        for label, got, want in (("forward", y[:1], ey), ("grad_input", gx[:1], egx),
                                 ("grad_weight", gw, egw), ("grad_bias", gb, egb)):
            check(f"{name} {dname} {impl} {label} vs oracle", got, want, x.dtype, notes)


def conv_section(report, libs, oracle, shapes, dtypes, threads, reps, gemms, results, torch_note):
    rows, notes = [], []
    for name in shapes:
        for dname in dtypes:
            case = conv_case(name, dname)
            fwd, both = contenders.conv_contenders(libs, *case[:6])
            if oracle is not None:  # correctness, once per shape and dtype, untimed
                check_conv(name, dname, libs, oracle, case, both, notes)
            gemm = gemms[dname]  # the yardstick, timed in the same rounds
            passes = (("fwd", {**fwd, "gemm": gemm}), ("fwd+bwd", {**both, "gemm": gemm}))
            for t, pname, stats in timed_passes(libs, threads, passes, reps, f"conv {name} {dname}"):
                flops = case.flops_fwd * (1 if pname == "fwd" else 3)
                peak = gemm.flops / stats.pop("gemm").median / 1e9
                t_torch, t_cl = _median(stats, "torch"), _median(stats, "torch-CL")
                for impl, st in stats.items():
                    gf = flops / st.median / 1e9
                    rows.append([name, dname, t, pname, impl, fmt(st.median * 1e3), fmt(gf, 1),
                                 fmt(100 * gf / peak, 0), ratio(st.median, t_torch), ratio(st.median, t_cl),
                                 fmt(st.mib, 1), fmt(st.spread, 0)])
                    results[("conv", name, dname, t, pname, impl)] = {
                        "ms": st.median * 1e3, "gflops": gf, "gemm_fraction": gf / peak, "gemm_gflops": peak,
                        "ratio_torch": st.median / t_torch if t_torch else None}
    headers = ["shape", "dtype", "thr", "pass", "impl", "ms", "GFLOP/s", "% GEMM", "x torch",
               "x torch-CL", "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "l", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r"])
    legend = ("\n\nShapes (N, C, H, W, K, kernel, stride, padding): "
              + ", ".join(f"{n} {CONV_SHAPES[n]}" for n in shapes)
              + ". GFLOP/s counts direct-convolution FLOPs (2*N*K*C*kh*kw*Ho*Wo forward, 3x that for "
                "fwd+bwd). '% GEMM' = GFLOP/s / the rate of the GEMM-table matmul, timed again in each "
                "row's round-robin. 'x torch' = time / PyTorch NCHW time, 'x torch-CL' = time / PyTorch "
                "channels_last time (< 1: faster than PyTorch). fwd+bwd computes grad_input, "
                "grad_weight and grad_bias.")
    report.add("## conv2d\n\n" + body + legend + torch_note + _oracle_notes(notes, oracle))


def _oracle_notes(notes, oracle):
    if oracle is None:
        return f"\n\nResults not checked: {contenders.ORACLE} not found."
    return notes_text(notes, against=ORACLE_CHECKED)


def check_pool(name, dname, oracle, case, both, notes):
    """Every contender's forward and grad_input against the oracle on the batch's first sample."""
    x, gy, k, s = case
    ey, eidx = oracle.max_pool2d(x[:1], k, s)
    egx = oracle.max_pool2d_backward(gy[:1], eidx, x[:1].shape)
    for impl, call in both.items():
        y, gx = call()
        check(f"{name} {dname} {impl} forward vs oracle", y[:1], ey, x.dtype, notes)
        check(f"{name} {dname} {impl} grad_input vs oracle", gx[:1], egx, x.dtype, notes)


def pool_section(report, libs, oracle, shapes, dtypes, threads, reps, results, torch_note):
    rows, notes = [], []
    for name in shapes:
        for dname in dtypes:
            case = pool_case(name, dname)
            fwd, both = contenders.pool_contenders(libs, *case)
            if oracle is not None:
                check_pool(name, dname, oracle, case, both, notes)
            gbytes = case.x.nbytes / 1e9
            passes = (("fwd", fwd), ("fwd+bwd", both))
            for t, pname, stats in timed_passes(libs, threads, passes, reps, f"pool {name} {dname}"):
                t_torch, t_cl = _median(stats, "torch"), _median(stats, "torch-CL")
                for impl, st in stats.items():
                    rows.append([name, dname, t, pname, impl, fmt(st.median * 1e3), fmt(gbytes / st.median, 1),
                                 ratio(st.median, t_torch), ratio(st.median, t_cl), fmt(st.mib, 1),
                                 fmt(st.spread, 0)])
                    results[("pool", name, dname, t, pname, impl)] = {
                        "ms": st.median * 1e3, "ratio_torch": st.median / t_torch if t_torch else None}
    headers = ["shape", "dtype", "thr", "pass", "impl", "ms", "GB/s in", "x torch", "x torch-CL",
               "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "l", "r", "l", "l", "r", "r", "r", "r", "r", "r"])
    legend = ("\n\nShapes (N, C, H, W, kernel, stride): "
              + ", ".join(f"{n} {POOL_SHAPES[n]}" for n in shapes)
              + ". Pooling is memory-bound: 'GB/s in' is the input's size divided by the time. "
                "fwd is inference (no indices kept); fwd+bwd keeps the argmax and computes grad_input.")
    report.add("## max_pool2d\n\n" + body + legend + torch_note + _oracle_notes(notes, oracle))


def lenet_section(report, libs, dtypes, threads, reps, results, torch_note):
    try:
        import cnnext.nn as cnn
        import cnnext.optim as coptim
        for attr in ("Sequential", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Flatten", "CrossEntropyLoss"):
            getattr(cnn, attr)
        coptim.SGD  # noqa: B018
        contenders.lenet_cnnext("float32")
    except (ImportError, AttributeError, TypeError) as exc:
        report.add(f"## LeNet-5 training step\n\nSkipped: cnnext.nn / cnnext.optim not available yet ({exc}).")
        return
    rows, notes = [], []
    layer_flops = lenet_flops()
    for dname in dtypes:
        x, target = lenet_case(dname)
        fwd, step = contenders.lenet_contenders(libs, dname, x, target, notes)
        passes = (("fwd", fwd), ("train step", step))
        for t, pname, stats in timed_passes(libs, threads, passes, reps, f"lenet {dname}"):
            flops = layer_flops * (1 if pname == "fwd" else 3)
            t_torch = _median(stats, "torch")
            for impl, st in stats.items():
                rows.append([dname, t, pname, impl, fmt(st.median * 1e3, 3), fmt(flops / st.median / 1e9, 1),
                             ratio(st.median, t_torch), fmt(st.mib, 1), fmt(st.spread, 0)])
                results[("lenet", dname, t, pname, impl)] = {
                    "ms": st.median * 1e3, "ratio_torch": st.median / t_torch if t_torch else None}
    headers = ["dtype", "thr", "pass", "impl", "ms", "GFLOP/s", "x torch", "extra MiB", "spread %"]
    body = md_table(headers, rows, ["l", "r", "l", "l", "r", "r", "r", "r", "r"])
    legend = ("\n\nLeNet-5 on a batch of 64 1x28x28 images: conv(1->6,5)-relu-maxpool2-conv(6->16,5)-relu-"
              "maxpool2-flatten-linear(256->120)-relu-linear(120->84)-relu-linear(84->10). 'train step' = "
              "zero_grad, forward, cross-entropy loss, backward, SGD step (lr 0.01). GFLOP/s counts the "
              "conv and linear layers only (3x for a step). 'x torch' = time / the same torch.nn model's.")
    report.add("## LeNet-5 training step (cnnext.nn vs torch.nn)\n\n" + body + legend + torch_note
               + notes_text(notes, checked=libs.torch is not None))


def learn_dl_section(report, libs, threads, reps_slow, learn_dl_path, learn_dl_note, results):
    if not all(hasattr(libs.cnnext, n) for n in ("ConvLayer", "ReluActivator", "IdentityActivator")):
        report.add("## learn_dl API, single sample\n\nSkipped: cnnext's learn_dl API is not available yet.")
        return
    ref = None
    if learn_dl_path is not None:
        try:
            ref = contenders.load_learn_dl(learn_dl_path)
        except Exception as exc:  # any failure of third-party code: report it, keep benchmarking
            learn_dl_note = f"learn_dl code at {learn_dl_path} failed to load ({type(exc).__name__}: {exc})"
    rows, notes = [], []
    x, sens = learn_dl_case()
    fwd, both, layer, rlayer = contenders.learn_dl_contenders(libs, ref, LEARN_DL_LAYER, x, sens)
    if rlayer is not None:
        both["cnnext"]()
        both["learn_dl"]()
        check("ConvLayer output vs learn_dl", layer.output_array, rlayer.output_array, np.float64, notes)
        check("ConvLayer delta_array vs learn_dl", layer.delta_array, rlayer.delta_array, np.float64, notes)
        for i, (f_c, f_r) in enumerate(zip(layer.filters, rlayer.filters)):
            check(f"filter {i} weights_grad vs learn_dl", f_c.weights_grad, f_r.weights_grad, np.float64,
                  notes)
    for t in threads:
        with Threads(t, libs):
            for pname, fns in (("fwd", fwd), ("fwd+bwd", both)):
                log(f"learn_dl {pname} threads={t}")
                once = min(time_round_robin({"c": fns["cnnext"]}, 5, warmup=2)["c"])
                inner = {"cnnext": max(1, int(0.02 / max(once, 1e-7)))}
                rounds = reps_slow if "learn_dl" in fns else max(reps_slow, 5)
                stats = measure(fns, rounds, inner=inner)
                t_ref = _median(stats, "learn_dl")
                for impl, st in stats.items():
                    rows.append([t, pname, impl, fmt(st.median * 1e3, 3),
                                 fmt(t_ref / st.median, 0) if t_ref else "n/a",
                                 fmt(st.mib, 2), st.rounds, fmt(st.spread, 0)])
                    results[("learn_dl", t, pname, impl)] = {"ms": st.median * 1e3,
                                                             "speedup": t_ref / st.median if t_ref else None}
    headers = ["thr", "pass", "impl", "ms", "speedup vs learn_dl", "extra MiB", "rounds", "spread %"]
    body = md_table(headers, rows, ["r", "l", "l", "r", "r", "r", "r", "r"])
    legend = ("\n\nLeNet conv1 on one float64 sample: ConvLayer(28, 28, 1, 5, 5, 6, 0, 1, ReluActivator(), "
              "0.01), input 1x28x28, sensitivity 6x24x24; fwd+bwd = forward(x) then backward(x, sensitivity, "
              "IdentityActivator()) (learn_dl's backward recomputes the forward). cnnext's time per round is "
              "the mean of many calls; learn_dl runs once per round. learn_dl's threads do not matter "
              "(pure Python).")
    if learn_dl_note:
        legend += f"\n\nlearn_dl contender skipped: {learn_dl_note}."
    report.add("## learn_dl API, single sample (cnnext.ConvLayer vs the learn_dl code)\n\n" + body + legend
               + notes_text(notes, checked=ref is not None))


def targets_section(report, results, threads, dtypes):
    t = 2 if 2 in threads else max(threads)
    rows = []

    def add(what, value, target, ok, fmt_v):
        if value is not None:  # rows of shapes/sections not run are left out
            rows.append([what, fmt_v(value), target, "yes" if ok(value) else "**no**"])

    as_ratio = lambda v: fmt(v)  # noqa: E731
    if "float32" in dtypes:
        for name, lim in TARGET_CONV_RATIO.items():
            r = results.get(("conv", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"conv {name} fwd+bwd / torch", r, f"<= {lim}", lambda v, lim=lim: v <= lim, as_ratio)
        for name in POOL_SHAPES:
            r = results.get(("pool", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"max_pool {name} fwd+bwd / torch", r, f"<= {TARGET_POOL_RATIO}",
                lambda v: v <= TARGET_POOL_RATIO, as_ratio)
        for name in LARGE_3X3:
            r = results.get(("conv", name, "float32", t, "fwd+bwd", "cnnext"), {}).get("gemm_fraction")
            add(f"conv {name} fwd+bwd, % of the GEMM rate", r, f">= {TARGET_GEMM_FRACTION:.0%}",
                lambda v: v >= TARGET_GEMM_FRACTION, lambda v: f"{100 * v:.0f}%")
        r = results.get(("lenet", "float32", t, "train step", "cnnext"), {}).get("ratio_torch")
        add("LeNet-5 train step / torch", r, f"<= {TARGET_LENET_RATIO}", lambda v: v <= TARGET_LENET_RATIO,
            as_ratio)
    if "float64" in dtypes:
        for name in CONV_SHAPES:
            r = results.get(("conv", name, "float64", t, "fwd+bwd", "cnnext"), {}).get("ratio_torch")
            add(f"conv {name} float64 fwd+bwd / torch", r, f"<= {TARGET_F64_RATIO}",
                lambda v: v <= TARGET_F64_RATIO, as_ratio)
    r = results.get(("learn_dl", t, "fwd+bwd", "cnnext"), {}).get("speedup")
    add("learn_dl ConvLayer fwd+bwd speedup", r, f">= {TARGET_LEARN_DL_SPEEDUP:.0f}x",
        lambda v: v >= TARGET_LEARN_DL_SPEEDUP, lambda v: f"{v:,.0f}x")
    if not rows:
        return
    caveat = "" if t == 2 else "\n\nThe targets are defined at 2 threads; this run's largest thread count is used."
    report.add(f"## Targets (issue 3; float32 unless stated, {t} thread{'s' if t > 1 else ''}, medians)\n\n"
               + md_table(["target", "measured", "goal", "met"], rows, ["l", "r", "r", "l"]) + caveat)


# --------------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------------
def header(args, libs, learn_dl_note):
    cnnext, torch = libs.cnnext, libs.torch
    cfg = cnnext.show_config(mode="dicts")
    lines = [
        "# cnnext benchmark",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_harness.cpu_model()} ({_harness.cpu_flags() or 'flags unknown'}), {os.cpu_count()} "
        f"logical cores, {_harness.usable_cores()} usable; {platform.system()} {platform.release()}",
        f"- load average at start: {_harness.loadavg_text()}",
        f"- Python {platform.python_version()}, numpy {np.__version__} "
        f"(BLAS: {_harness.blas_info() or cfg.get('blas', 'unknown')}; OPENBLAS_THREAD_TIMEOUT="
        f"{os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset: idle BLAS threads spin')})",
        f"- PyTorch: {torch.__version__ if torch is not None else libs.torch_note}"
        + (f" (oneDNN: {'yes' if torch.backends.mkldnn.is_available() else 'no'})" if torch is not None else ""),
        f"- cnnext {cfg['version']} from {Path(cnnext.__file__).parent}: OpenMP "
        f"{'compiled in' if cfg['openmp'] else 'NOT compiled in (serial kernels)'}, "
        f"workspace cap {cfg['workspace_bytes'] / MIB:.0f} MiB",
        f"- OpenMP runtimes loaded: {_harness.openmp_info() or 'unknown (threadpoolctl missing)'}; "
        f"import order {args.import_order}",
        f"- learn_dl: {args.learn_dl if learn_dl_note is None else learn_dl_note}",
        f"- run: dtype {','.join(args.dtypes)}, threads {','.join(map(str, args.threads))}, "
        f"reps {args.reps} (learn_dl {args.reps_slow}), sections {','.join(args.sections)}"
        + (", --quick" if args.quick else ""),
    ]
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        lines.append("- WARNING: threadpoolctl is not installed: numpy's BLAS thread count is not controlled")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _csv(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark cnnext against PyTorch CPU, a plain numpy im2col and the learn_dl code; "
                    "prints Markdown tables.")
    ap.add_argument("--shapes", default=",".join([*CONV_SHAPES, *POOL_SHAPES]),
                    help="comma-separated conv and pool shape names (default: all): "
                         + ", ".join([*CONV_SHAPES, *POOL_SHAPES]))
    ap.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repetitions per contender (default 10, 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="few repetitions, smaller GEMM: a smoke run")
    ap.add_argument("--no-torch", action="store_true", help="do not import or time PyTorch")
    ap.add_argument("--no-learn-dl", action="store_true", help="do not time the learn_dl code")
    ap.add_argument("--learn-dl", metavar="PATH", default=None,
                    help=f"path of learn_dl's cnn.py (default: {DEFAULT_LEARN_DL} when it exists)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated sections to run (default: all): " + ", ".join(SECTIONS))
    ap.add_argument("--import-order", choices=["cnnext-first", "torch-first"], default="cnnext-first",
                    help="load cnnext before PyTorch (default) or after: which OpenMP runtime a source "
                         "build of cnnext shares with torch depends on it (see the header)")
    ap.add_argument("--markdown", metavar="PATH", default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)

    args.shape_names = _csv(args.shapes)
    unknown = [s for s in args.shape_names if s not in CONV_SHAPES and s not in POOL_SHAPES]
    if unknown:
        ap.error(f"unknown shape name(s): {', '.join(unknown)}; known: {', '.join([*CONV_SHAPES, *POOL_SHAPES])}")
    args.sections = _csv(args.sections)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad or not args.sections:
        ap.error(f"unknown section(s): {', '.join(bad) or '(none given)'}; known: {', '.join(SECTIONS)}")
    try:
        threads = [int(t) for t in _csv(args.threads)]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        ap.error(f"--threads must be comma-separated positive integers, got {args.threads!r}")
    args.threads = list(dict.fromkeys(threads))
    if args.reps is None:
        args.reps = 3 if args.quick else 10
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")
    args.reps_slow = 1 if args.quick else min(args.reps, 3)
    args.dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    return args


def main(argv=None):
    args = parse_args(argv)
    # cnnext before torch unless asked otherwise: see _harness.import_libraries
    libs = import_libraries(args.import_order, not args.no_torch)

    learn_dl_note = None
    if args.no_learn_dl:
        learn_dl_note, args.learn_dl = "disabled (--no-learn-dl)", None
    else:
        path = Path(args.learn_dl) if args.learn_dl else DEFAULT_LEARN_DL
        if path.is_file():
            args.learn_dl = str(path)
        else:
            learn_dl_note = f"{path} not found (pass --learn-dl PATH)"
            args.learn_dl = None

    report = Report()
    report.add(header(args, libs, learn_dl_note))
    conv_shapes = [s for s in args.shape_names if s in CONV_SHAPES]
    pool_shapes = [s for s in args.shape_names if s in POOL_SHAPES]
    results = {}
    threads_note = "" if _harness.blas_info() else "\n\n(threadpoolctl missing: BLAS threads not controlled.)"
    torch_skip = f"\n\nPyTorch: {libs.torch_note}." if libs.torch is None else ""
    oracle = contenders.naive_oracle() if {"conv", "pool"} & set(args.sections) else None

    gemms = {d: contenders.Gemm(d, args.quick) for d in args.dtypes}
    if "gemm" in args.sections:
        gemm_section(report, gemm_rates(libs, gemms, args.threads, args.reps), threads_note)
    if "conv" in args.sections:
        if conv_shapes:
            conv_section(report, libs, oracle, conv_shapes, args.dtypes, args.threads, args.reps, gemms,
                         results, torch_skip)
        else:
            report.add("## conv2d\n\nSkipped: no conv shape among --shapes.")
    if "pool" in args.sections:
        if pool_shapes:
            pool_section(report, libs, oracle, pool_shapes, args.dtypes, args.threads, args.reps, results,
                         torch_skip)
        else:
            report.add("## max_pool2d\n\nSkipped: no pool shape among --shapes.")
    if "lenet" in args.sections:
        lenet_section(report, libs, args.dtypes, args.threads, args.reps, results, torch_skip)
    if "learn_dl" in args.sections:
        learn_dl_section(report, libs, args.threads, args.reps_slow, args.learn_dl, learn_dl_note, results)
    if results:
        targets_section(report, results, args.threads, args.dtypes)
    report.add(f"_load average at end: {_harness.loadavg_text()}_")

    if args.markdown:
        Path(args.markdown).write_text(report.text(), encoding="utf-8")
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
