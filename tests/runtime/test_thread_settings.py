"""Thread settings from every source and the settings' context managers under threads.

- Thread counts: ``OMP_NUM_THREADS`` set to a huge or garbage value must not crash the first kernel
  (issue 13, item 2): every source (the environment, OpenMP's default, ``set_num_threads`` and so the
  CLI) is clamped to the same cap, 1024. Each case runs in a fresh interpreter, where the
  environment is read at import, and its results are checked against the naive oracle.
- ``force_conv_algorithm`` used as a context manager from several threads at once, or nested, must
  restore the setting correctly in every interleaving (issue 13, item 8); barriers force the
  interleavings.
"""
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

import cnnext
import cnnext.functional as F
import naive_oracle as oracle
from cnnext import _config
from cnnext._config import force_conv_algorithm, get_conv_algorithm
from helpers import child_env, run_threads
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
    env = {k: v for k, v in child_env().items() if k != "OMP_NUM_THREADS"}
    if env_value is not None:
        env["OMP_NUM_THREADS"] = env_value
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
    rng = np.random.default_rng(0)  # the child's inputs, drawn in the child's order
    x, w, p = (rng.standard_normal(shape) for shape in ((4, 16, 24, 24), (8, 16, 3, 3), (4, 16, 64, 64)))
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
def test_cli_thread_count_from_the_environment_is_clamped(tmp_path):
    """The CLI's default thread count comes from the environment, clamped like set_num_threads'.
    (An explicit --threads above the cap is refused as a bad argument: tests/cli/test_cli_hostile.py.)"""
    out = _run(["-m", "cnnext", "demo", "--batch", "2", "--repeat", "1"], "200000", tmp_path)
    assert f"{CAP} thread(s)" in out


# ------------------------------------------------------------------ force_conv_algorithm and threads

def _in_thread(fn, *args):
    """Run fn(*args) in a new thread; return its result (re-raising its exception)."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.parametrize("a_leaves_first", [True, False], ids=["A_in_A_out", "B_out_first"])
def test_overlapping_blocks_in_two_threads_restore_auto(a_leaves_first):
    """A enters 'gemm', B enters 'direct'; they leave in either order. Each sees its own block's
    algorithm throughout, and afterwards every thread sees 'auto' again. (Before: A entered, B
    saved 'gemm', A restored 'auto', B restored 'gemm': the process stayed on gemm.)"""
    step = [threading.Barrier(2) for _ in range(4)]
    seen = {"A": [], "B": []}

    def a():
        with force_conv_algorithm("gemm"):
            seen["A"].append(get_conv_algorithm())
            step[0].wait()  # A in
            step[1].wait()  # B in
            seen["A"].append(get_conv_algorithm())
            if not a_leaves_first:
                step[2].wait()  # B out
        if a_leaves_first:
            step[2].wait()  # A out
        step[3].wait()
        seen["A"].append(get_conv_algorithm())

    def b():
        step[0].wait()
        with force_conv_algorithm("direct"):
            step[1].wait()
            seen["B"].append(get_conv_algorithm())
            if a_leaves_first:
                step[2].wait()
                seen["B"].append(get_conv_algorithm())
        if not a_leaves_first:
            step[2].wait()
        step[3].wait()
        seen["B"].append(get_conv_algorithm())
    run_threads([a, b], timeout=60)
    assert seen["A"] == ["gemm", "gemm", "auto"]
    assert seen["B"] == (["direct", "direct", "auto"] if a_leaves_first else ["direct", "auto"])
    assert get_conv_algorithm() == "auto"
    assert _in_thread(get_conv_algorithm) == "auto"


def test_nested_blocks_and_a_reentered_object_restore_exactly():
    """(Before: entering the same object twice overwrote its saved value, so leaving both blocks
    put back the object's own algorithm.)"""
    gemm = force_conv_algorithm("gemm")
    with force_conv_algorithm("direct"):
        with gemm:
            assert get_conv_algorithm() == "gemm"
            with force_conv_algorithm("winograd"):
                with gemm:
                    assert get_conv_algorithm() == "gemm"
                assert get_conv_algorithm() == "winograd"
            assert get_conv_algorithm() == "gemm"
        assert get_conv_algorithm() == "direct"
    assert get_conv_algorithm() == "auto"


def test_blocks_in_two_threads_each_see_their_own():
    """While A holds 'gemm' and B 'winograd', each thread's conv2d uses its own (checked by which
    kernels run in which thread), and a third thread without a block sees the latest one."""
    from cnnext.functional import _conv_dispatch

    ran = []
    real = _conv_dispatch._winograd.input_transform
    both_in, checked = threading.Barrier(3), threading.Barrier(3)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 12, 12))
    w = rng.standard_normal((16, 16, 3, 3))
    want = oracle.conv2d(x, w, padding=1)
    got = {}

    def user(name, algorithm):
        with force_conv_algorithm(algorithm):
            both_in.wait()
            got[name] = get_conv_algorithm(), F.conv2d(x, w, padding=1)
            checked.wait()

    def spy(*a):
        ran.append(threading.current_thread().name)
        return real(*a)
    _conv_dispatch._winograd.input_transform = spy
    try:
        threads = [threading.Thread(target=user, args=(n, a), name=n) for n, a in
                   (("A", "gemm"), ("B", "winograd"))]
        threads[0].start()
        threads[1].start()
        both_in.wait()
        other = _in_thread(get_conv_algorithm)
        checked.wait()
        for t in threads:
            t.join(timeout=60)
    finally:
        _conv_dispatch._winograd.input_transform = real
    assert got["A"][0] == "gemm" and got["B"][0] == "winograd"
    assert "A" not in ran  # A's convolution ran no Winograd transform
    assert ran  # B's did (in B, or in its chunk workers)
    assert other in ("gemm", "winograd")
    for _, y in got.values():
        assert_close(y, want)
    assert get_conv_algorithm() == "auto"


def test_threads_without_a_block_follow_the_latest_block():
    """As before: worker threads started inside a block (a pool, say) use its algorithm."""
    with force_conv_algorithm("winograd"):
        assert _in_thread(get_conv_algorithm) == "winograd"
        with force_conv_algorithm("direct"):
            assert _in_thread(get_conv_algorithm) == "direct"
        assert _in_thread(get_conv_algorithm) == "winograd"
    assert _in_thread(get_conv_algorithm) == "auto"


def test_block_left_on_an_exception_restores():
    with pytest.raises(ZeroDivisionError):
        with force_conv_algorithm("gemm"):
            1 / 0
    assert get_conv_algorithm() == "auto"


def test_block_left_from_another_thread():
    """Entered in one thread, left in another (an ExitStack handed over, say): it ends for both."""
    cm = force_conv_algorithm("direct")
    entered, left = threading.Event(), threading.Event()
    seen = []

    def holder():
        cm.__enter__()
        entered.set()
        left.wait(timeout=60)
        seen.append(get_conv_algorithm())
    t = threading.Thread(target=holder)
    t.start()
    entered.wait(timeout=60)
    assert get_conv_algorithm() == "direct"
    cm.__exit__(None, None, None)
    left.set()
    t.join(timeout=60)
    assert seen == ["auto"] and get_conv_algorithm() == "auto"


def test_exit_without_enter_is_refused():
    with pytest.raises(RuntimeError, match="force_conv_algorithm"):
        force_conv_algorithm("gemm").__exit__(None, None, None)
    assert get_conv_algorithm() == "auto"


def test_many_threads_nesting_at_random_restore_auto():
    """Eight threads enter and leave nested blocks in random orders at once; inside, each sees its
    innermost block; afterwards everything is 'auto'."""
    names = ("gemm", "direct", "winograd", "auto")
    start = threading.Barrier(8)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        start.wait()
        for _ in range(100):
            depth = int(rng.integers(1, 4))
            chosen = [names[int(i)] for i in rng.integers(0, 4, depth)]

            def nest(level):
                if level == depth:
                    return
                with force_conv_algorithm(chosen[level]):
                    time.sleep(0)  # let the other threads run in between
                    if get_conv_algorithm() != chosen[level]:
                        errors.append((seed, chosen, level, get_conv_algorithm()))
                    nest(level + 1)
                    time.sleep(0)
                    if get_conv_algorithm() != chosen[level]:
                        errors.append((seed, chosen, level, get_conv_algorithm()))
            nest(0)
    run_threads([functools.partial(worker, s) for s in range(8)])
    assert errors == []
    assert get_conv_algorithm() == "auto" and _config._state["conv_algorithm"] == "auto"
