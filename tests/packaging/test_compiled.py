"""The tests run against the compiled kernels, never against a source tree without them."""
import importlib.machinery
import importlib.util
import os

import pytest

import cnnext

KERNELS = ["_im2col", "_pool", "_direct", "_openmp_helpers", "_winograd"]
SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_is_a_compiled_extension(name):
    module = importlib.import_module(f"cnnext._kernels.{name}")
    assert module.__file__.endswith(SUFFIXES), module.__file__
    assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)
    spec = importlib.util.find_spec(f"cnnext._kernels.{name}")
    assert spec.origin == module.__file__
    assert os.path.dirname(os.path.abspath(module.__file__)) == os.path.join(
        os.path.dirname(os.path.abspath(cnnext.__file__)), "_kernels")


@pytest.mark.parametrize("name", KERNELS)
def test_no_pure_python_fallback_next_to_the_kernels(name):
    package_dir = os.path.join(os.path.dirname(os.path.abspath(cnnext.__file__)), "_kernels")
    entries = os.listdir(package_dir)
    fallbacks = [e for e in entries
                 if e.startswith(name + ".")
                 and e.endswith(tuple(importlib.machinery.SOURCE_SUFFIXES)
                                + tuple(importlib.machinery.BYTECODE_SUFFIXES))]
    assert fallbacks == []
    assert not os.path.isdir(os.path.join(package_dir, name))  # no package shadowing the module
    pycache = os.path.join(package_dir, "__pycache__")
    if os.path.isdir(pycache):
        assert not [e for e in os.listdir(pycache) if e.startswith(name + ".")]


def test_functional_uses_the_compiled_kernels():
    from cnnext.functional import conv, pooling
    from cnnext.functional import _conv_dispatch

    assert _conv_dispatch._im2col is importlib.import_module("cnnext._kernels._im2col")
    assert _conv_dispatch._direct is importlib.import_module("cnnext._kernels._direct")
    assert pooling._pool is importlib.import_module("cnnext._kernels._pool")
    for module in (_conv_dispatch._im2col, _conv_dispatch._direct, pooling._pool):
        assert module.__file__.endswith(SUFFIXES)
