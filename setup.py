"""Build script for cnnext's Cython extensions.

Environment switches (read at build time):

CNNEXT_OPENMP=auto|0|1
    auto (default): compile with OpenMP when the compiler accepts it, serial otherwise.
    0: never.  1: always (the build fails when the compiler cannot).
CNNEXT_CYTHON_DEBUG=1
    Turn Cython's bounds checking, wraparound and initialization checks back on
    (and keep assertions), for a debug or sanitizer run.
CNNEXT_LIBOMP_PREFIX=/path (macOS only)
    Where libomp is installed (include/omp.h, lib/libomp.dylib). Without it, Homebrew's
    /opt/homebrew/opt/libomp and /usr/local/opt/libomp are tried. CFLAGS/CPPFLAGS/LDFLAGS
    are honoured as usual, also by the OpenMP probe.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = ["_im2col", "_direct", "_pool", "_openmp_helpers", "_winograd", "_norm", "_adaptive"]
# C headers an extension includes (rebuilt when they change; shipped in the sdist by MANIFEST.in)
DEPENDS = {"_winograd": ["cnnext/_kernels/_tile_gemm.h"], "_direct": ["cnnext/_kernels/_tile_gemm.h"],
           "_norm": ["cnnext/_kernels/_norm.h"]}


def _flag(name, default):
    return os.environ.get(name, default).strip().lower()


def _openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) when it is off or unsupported."""
    mode = _flag("CNNEXT_OPENMP", "auto")
    if mode not in ("auto", "0", "1"):
        sys.exit(f"CNNEXT_OPENMP must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return [], []
    if sys.platform == "win32":
        compile_args, link_args = ["/openmp"], []
    elif sys.platform == "darwin":
        compile_args, link_args = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
        prefix = _libomp_prefix()
        if prefix:
            compile_args.append(f"-I{os.path.join(prefix, 'include')}")
            link_args.insert(0, f"-L{os.path.join(prefix, 'lib')}")
    else:
        compile_args, link_args = ["-fopenmp"], ["-fopenmp"]
    if mode == "1" or _compiler_accepts(compile_args, link_args):
        return compile_args, link_args
    print("cnnext: the C compiler does not accept OpenMP; building the serial kernels", file=sys.stderr)
    return [], []


def _libomp_prefix():
    """macOS: the libomp install prefix (CNNEXT_LIBOMP_PREFIX or Homebrew's), or None."""
    env = os.environ.get("CNNEXT_LIBOMP_PREFIX", "").strip()
    candidates = [env] if env else ["/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]
    for prefix in candidates:
        if os.path.isfile(os.path.join(prefix, "include", "omp.h")):
            return prefix
    if env:
        sys.exit(f"CNNEXT_LIBOMP_PREFIX={env!r} has no include/omp.h")
    return None


def _compiler_accepts(compile_args, link_args):
    """Try to compile and link a tiny OpenMP program with the compiler Python was built with."""
    if sys.platform == "win32":
        return True  # MSVC always understands /openmp
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        env_cflags = (os.environ.get("CPPFLAGS", "") + " " + os.environ.get("CFLAGS", "")).split()
        env_ldflags = os.environ.get("LDFLAGS", "").split()
        cmd = (cc.split() + env_cflags + compile_args + [src, "-o", os.path.join(tmp, "probe")]
               + env_ldflags + link_args)
        if shutil.which(cmd[0]) is None:
            return False
        return subprocess.run(cmd, capture_output=True).returncode == 0


def _extensions():
    debug = _flag("CNNEXT_CYTHON_DEBUG", "0") in ("1", "true", "yes")
    omp_compile, omp_link = _openmp_flags()
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
    extra_compile = list(omp_compile)
    if sys.platform != "win32":
        extra_compile += ["-O3"]
        if debug:
            extra_compile += ["-O1", "-g", "-UNDEBUG"]
    exts = [
        Extension(
            f"cnnext._kernels.{name}",
            [f"cnnext/_kernels/{name}.pyx"],
            include_dirs=[np.get_include()],
            define_macros=macros,
            extra_compile_args=extra_compile,
            extra_link_args=list(omp_link),
            depends=DEPENDS.get(name, []),
        )
        for name in EXTENSIONS
    ]
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives)


setup(ext_modules=_extensions())
