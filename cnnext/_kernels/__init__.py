"""cnnext's compiled kernels (Cython extensions and the SIMD C header); see ARCHITECTURE.md.

Importing this package checks that the extensions were built, so that a source checkout without them
fails with a hint instead of a bare ``No module named ...``.
"""
import importlib as _importlib

try:
    _importlib.import_module("cnnext._kernels._openmp_helpers")  # the smallest extension
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"cnnext's compiled kernels are not built in {_here} ({exc}). If this is a source checkout "
        "(for example a script run from the repository root), build them with "
        "`pip install -e .` or `python setup.py build_ext --inplace`, or run the script from another "
        "folder so that the installed cnnext is imported."
    ) from exc
