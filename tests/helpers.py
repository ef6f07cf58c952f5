"""Helpers shared by the test modules: seeded data, memory layouts, result dtypes, central differences,
results across thread counts, threads run at once, seeded learn_dl layers, the environment of a child Python, a local HTTP
server.

Importable by name (``from helpers import rng_for``) because pyproject.toml's pytest settings put
tests/ on sys.path. The reference results themselves come from tests/naive_oracle.py, never from here.
"""
import contextlib
import functools
import http.server
import os
import threading
import zlib
from pathlib import Path

import numpy as np

import cnnext
from cnnext import ConvLayer, IdentityActivator

# The directory the cnnext under test was imported from (the checkout with an in-place build, or
# site-packages for an installed wheel).
PKG_PARENT = str(Path(cnnext.__file__).resolve().parent.parent)


def rng_for(*key):
    """A generator seeded by ``key`` (case id, dtype name, ...): the same data for the same case on every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_data(rng, shape, dtype, int_low=-3, int_high=4):
    """Random values of ``shape`` in ``dtype``: normal floats, or integers in [int_low, int_high)."""
    if np.dtype(dtype).kind in "iu":
        return rng.integers(int_low, int_high, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def result_dtype(dtype):
    """The dtype the functional API returns for input ``dtype``: floats keep theirs, the rest is float64."""
    return np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)


def with_layout(a, layout):
    """The same values as ``a`` in memory layout ``layout`` (checked, so the test means it).

    "C", "F", "slice" (every other element of a twice-as-wide last axis), "negative" (negative
    stride along axis -2) or "readonly". An array too small to differ in a layout passes as it is.
    """
    a = np.asarray(a)
    if layout == "C":
        out = np.ascontiguousarray(a)
        assert out.flags.c_contiguous
    elif layout == "F":
        out = np.asfortranarray(a)
        # C and F order coincide when at most one axis is longer than 1
        assert out.flags.f_contiguous and (not out.flags.c_contiguous or sum(n > 1 for n in a.shape) <= 1)
    elif layout == "slice":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
        assert not out.flags.c_contiguous or a.size <= 1
    elif layout == "negative":
        out = np.flip(np.ascontiguousarray(np.flip(a, axis=-2)), axis=-2)  # x[:, :, ::-1]
        assert out.strides[-2] < 0 or a.shape[-2] <= 1
    elif layout == "readonly":
        out = a.copy()
        out.setflags(write=False)
    else:
        raise AssertionError(layout)
    np.testing.assert_array_equal(out, a)
    return out


def numerical_gradient(loss, a, eps=1e-6):
    """d loss() / d a by central differences, perturbing one element of ``a`` in place at a time."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)  # views: a must be contiguous
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = loss()
        flat[i] = saved - eps
        minus = loss()
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * eps)
    return grad



def same_at_thread_counts(run, counts=(1, 2)):
    """``run()`` (a sequence of arrays) once per kernel thread count in ``counts``; every result must
    be bitwise equal to the first count's. Returns the last count's results.

    It sets the process-wide thread count: use it in tests with the ``restore_config`` fixture.
    """
    first = None
    for n in counts:
        cnnext.set_num_threads(n)
        assert cnnext.get_num_threads() == n
        results = tuple(run())
        if first is None:
            first = results
        assert len(results) == len(first)
        for i, (a, b) in enumerate(zip(first, results)):
            assert a.dtype == b.dtype and np.array_equal(a, b), \
                f"result {i} differs between {counts[0]} and {n} threads"
    return results


def run_threads(targets, timeout=120):
    """Run each callable of ``targets`` on a Python thread of its own, all at once; wait for them, and
    fail if one is still running after ``timeout`` seconds."""
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
        assert not t.is_alive(), f"a thread was still running after {timeout} s"


def assert_partial_backward(backward, x, w, gy, g, want):
    """``backward(x, w, gy, g, need_input=..., need_weight=...)`` computes what is asked only:
    grad_input alone, then grad_weight alone (grad_bias both times), each close to ``want`` =
    (grad_input, grad_weight, grad_bias) of the oracle."""
    from naive_oracle import assert_close

    gx, gw, gb = backward(x, w, gy, g, need_input=True, need_weight=False)
    assert gw is None
    assert_close(gx, want[0])
    assert_close(gb, want[2])
    gx, gw, gb = backward(x, w, gy, g, need_input=False, need_weight=True)
    assert gx is None
    assert_close(gw, want[1])
    assert_close(gb, want[2])


def random_conv_layer(iw, ih, c, fw, fh, k, zp, stride, act=None, lr=0.1, seed=0):
    """A learn_dl ConvLayer (ConvLayer's arguments) with seeded standard-normal weights and biases."""
    rng = np.random.default_rng(seed)
    layer = ConvLayer(iw, ih, c, fw, fh, k, zp, stride, act or IdentityActivator(), lr)
    for f in layer.filters:
        f.weights = rng.standard_normal((c, fh, fw))
        f.bias = rng.standard_normal()
    return layer


def layer_params(layer):
    """A ConvLayer's filters as arrays: weights (K, C, fh, fw) and biases (K,)."""
    return np.stack([f.weights for f in layer.filters]), np.array([f.bias for f in layer.filters])


def layer_grads(layer):
    """A ConvLayer's last gradients as arrays: weights_grad (K, C, fh, fw) and bias_grad (K,)."""
    return np.stack([f.weights_grad for f in layer.filters]), np.array([f.bias_grad for f in layer.filters])


def child_env(*paths, **variables):
    """``os.environ`` plus ``variables`` for a child Python that imports the same cnnext as the tests.

    The directory cnnext came from goes first on PYTHONPATH, then ``paths``, then the caller's own
    PYTHONPATH. Run the child outside the checkout (``cwd``): ``python -c`` and ``python -m`` put the
    working directory first on sys.path, and there the source tree would shadow the cnnext under test.
    """
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join([PKG_PARENT, *map(str, paths), *filter(None, [env.get("PYTHONPATH")])])
    return env


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging each request to stderr."""

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(directory, handler=QuietHandler):
    """Serve ``directory`` over HTTP on 127.0.0.1 while the block runs; yields the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
