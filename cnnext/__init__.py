"""cnnext: a small, fast CNN package.

Three ways in, all computing through the same Cython kernels:

- ``cnnext.functional``: batched NCHW conv2d / max_pool2d / avg_pool2d and their backward functions,
  with torch.nn.functional's names and semantics.
- The learn_dl API (``ConvLayer``, ``MaxPoolingLayer``, the activators and module helpers of hanbt's
  learn_dl tutorial), compatible with the tutorial's code, fast and with its bugs fixed.
- ``cnnext.nn``: layers, losses and ``Sequential`` models for training code.
"""
import os as _os

# The kernels' OpenMP threads and numpy's BLAS threads take turns on the same cores. With
# OpenMP's default wait policy, idle OpenMP threads spin after every parallel region and starve
# the BLAS threads that run next (a GEMM of 0.3 ms took 8 ms on 2 cores). Sleeping idle threads
# cost a few microseconds per region instead. libgomp reads this when it is loaded, that is when
# the first kernel module is imported below; a value the user set is kept.
# If another library (PyTorch, say) loaded the same OpenMP runtime first, it is already running
# with that library's policy; _config then notices it and makes the kernels serial by default.
_user_wait_policy = _os.environ.get("OMP_WAIT_POLICY")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The other way round: numpy's OpenBLAS keeps its idle threads spinning (up to 2**28 cycles) after
# every GEMM, and they take the cores the kernels' next parallel region needs (measured: 2-thread
# Winograd transforms ran no faster than 1-thread ones; with idle BLAS threads sleeping, 1.7x).
# OpenBLAS reads OPENBLAS_THREAD_TIMEOUT (2**n cycles) when numpy loads it, so this only helps when
# cnnext is imported before numpy; show_config tells which happened.
import sys as _sys  # noqa: E402

if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_blas_thread_timeout = _os.environ.get("OPENBLAS_THREAD_TIMEOUT")  # as numpy's OpenBLAS read it

from cnnext import _threads  # noqa: E402

_runtimes_before = _threads.loaded_openmp_runtimes()  # before the kernels load theirs

from cnnext._version import __version__  # noqa: E402
from cnnext._config import (  # noqa: E402
    force_conv_algorithm,
    get_num_threads,
    get_workspace_limit,
    set_num_threads,
    set_workspace_limit,
)
from cnnext import _config  # noqa: E402

_config._note_openmp_runtime(_runtimes_before, _threads.loaded_openmp_runtimes(), _user_wait_policy)
from cnnext import functional  # noqa: E402
from cnnext import learn_dl  # noqa: E402
from cnnext.learn_dl import (  # noqa: E402
    ConvLayer,
    Filter,
    IdentityActivator,
    MaxPoolingLayer,
    ReluActivator,
    SigmoidActivator,
    TanhActivator,
    conv,
    element_wise_op,
    get_max_index,
    get_patch,
    padding,
)
from cnnext._grad_mode import inference_mode, is_grad_enabled, no_grad, set_grad_enabled  # noqa: E402
from cnnext import nn, optim  # noqa: E402
from cnnext import models  # noqa: E402
from cnnext.gradcheck import gradcheck  # noqa: E402
from cnnext.serialization import load, save  # noqa: E402

# The learn_dl modules' old import paths (cnnext.layers, cnnext.activators) as aliases.
_sys.modules.setdefault("cnnext.layers", learn_dl.layers)
_sys.modules.setdefault("cnnext.activators", learn_dl.activators)
layers, activators = learn_dl.layers, learn_dl.activators

# Public subpackages imported on first attribute access (PEP 562), so ``cnnext.datasets`` works
# after ``import cnnext`` without every ``import cnnext`` paying for urllib, gzip and hashlib.
_LAZY_SUBMODULES = ("datasets", "dask", "distributed", "training")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"cnnext.{name}")  # also binds it here: called once
    raise AttributeError(f"module 'cnnext' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))


__all__ = [
    "__version__",
    "functional",
    "get_num_threads",
    "set_num_threads",
    "get_workspace_limit",
    "set_workspace_limit",
    "force_conv_algorithm",
    "show_config",
    # training toolkit
    "nn",
    "optim",
    "models",
    "save",
    "load",
    "gradcheck",
    "no_grad",
    "inference_mode",
    "set_grad_enabled",
    "is_grad_enabled",
    # learn_dl API (cnnext.learn_dl)
    *learn_dl.__all__,
]


def show_config(mode="stdout"):
    """Report cnnext's build and runtime configuration.

    Parameters
    ----------
    mode : {'stdout', 'dicts'}
        Print a readable summary (default) or return it as a dict.

    Returns
    -------
    dict or None
        With ``mode='dicts'``: version, openmp (compiled in or not), winograd_gemm ('avx2' or
        'blas'), num_threads, workspace_bytes, numpy version, numpy's BLAS and the
        OPENBLAS_THREAD_TIMEOUT it was loaded with, and threadpools: threadpoolctl's info on the
        OpenMP and BLAS libraries loaded now (one dict each: user_api, internal_api, prefix,
        filepath, version, num_threads, ...).
    """
    import numpy as np

    from cnnext._kernels._openmp_helpers import openmp_enabled
    from cnnext._kernels._winograd import tile_gemm_level

    blas = "unknown"
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        info = deps.get("blas", {})
        blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # numpy's report format is not part of its API
        pass
    cfg = {
        "version": __version__,
        "openmp": bool(openmp_enabled()),
        # Winograd's GEMMs: 'avx2' (cnnext's AVX2+FMA kernels) or 'blas' (numpy's BLAS)
        "winograd_gemm": "avx2" if tile_gemm_level() == 2 else "blas",
        "openmp_shared_with": _config._state["shared_runtime"],
        "serial_by_default": _config._state["serial_by_default"],
        "num_threads": get_num_threads(),
        "workspace_bytes": get_workspace_limit(),
        "numpy": np.__version__,
        "blas": blas,
        # OPENBLAS_THREAD_TIMEOUT when numpy loaded OpenBLAS (None: its default, idle threads spin)
        "blas_thread_timeout": _blas_thread_timeout,
        "threadpools": _threads.threadpool_info(),
    }
    if mode == "dicts":
        return cfg
    if mode != "stdout":
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    print(f"cnnext {cfg['version']}")
    print(f"  OpenMP:      {'compiled in' if cfg['openmp'] else 'not compiled in (serial kernels)'}")
    print(f"  threads:     {cfg['num_threads']}")
    if cfg["openmp_shared_with"]:
        print(f"  note:        OpenMP runtime shared with a library loaded earlier: {cfg['openmp_shared_with'][0]}")
    if cfg["serial_by_default"]:
        print("               it spins when idle, so the kernels default to 1 thread; import cnnext first, or")
        print("               set OMP_WAIT_POLICY=PASSIVE before starting Python, to use every core")
    print(f"  workspace:   {cfg['workspace_bytes'] // 2**20} MiB per convolution call")
    gemm = "cnnext's AVX2+FMA kernels" if cfg["winograd_gemm"] == "avx2" else "numpy's BLAS (no AVX2)"
    print(f"  Winograd:    GEMMs in {gemm}")
    print(f"  numpy:       {cfg['numpy']} (BLAS: {cfg['blas']})")
    for pool in cfg["threadpools"]:
        version = f" {pool['version']}" if pool.get("version") else ""
        print(f"  {pool['user_api'] + ':':<12} {pool['prefix']}{version}, {pool['num_threads']} threads"
              f" ({pool['filepath']})")
    if cfg["blas_thread_timeout"] is None:
        print("  note:        numpy was imported before cnnext: OpenBLAS's idle threads spin after each")
        print("               GEMM and slow the kernels' threads; import cnnext first, or set")
        print("               OPENBLAS_THREAD_TIMEOUT=4 before starting Python")
    return None
