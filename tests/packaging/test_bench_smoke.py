"""Smoke test of benchmarks/bench.py: it runs and prints its tables. Never asserts any timing.

The script runs in a subprocess with this interpreter and helpers.child_env(), so it imports the
same cnnext the tests do: the installed package (CI) or the in-place build.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import child_env

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
ARGS = ["--quick", "--no-learn-dl", "--shapes", "lenet2", "--sections", "conv,pool", "--threads", "1",
        "--dtype", "float32", "--reps", "1"]


def _run(*extra):
    if not BENCH.is_file():
        pytest.skip(f"{BENCH} not found (the benchmark script is not part of this tree)")
    proc = subprocess.run([sys.executable, str(BENCH), *ARGS, *extra], capture_output=True, text=True,
                          env=child_env(), timeout=120)
    assert proc.returncode == 0, f"bench.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _check_output(out):
    assert "# cnnext benchmark" in out
    assert "## conv2d" in out
    assert "| shape | dtype | thr | pass | impl | ms | GFLOP/s |" in out
    assert "| lenet2 | float32 | 1 | fwd+bwd | cnnext |" in out
    assert "MISMATCH" not in out


def test_bench_quick_runs():
    pytest.importorskip("torch")
    out = _run()
    _check_output(out)
    assert "| lenet2 | float32 | 1 | fwd | torch |" in out


def test_bench_quick_runs_without_torch():
    out = _run("--no-torch")
    _check_output(out)
    assert "| torch |" not in out
    assert "disabled (--no-torch)" in out


def test_bench_unknown_shape_is_a_clear_error():
    if not BENCH.is_file():
        pytest.skip(f"{BENCH} not found")
    proc = subprocess.run([sys.executable, str(BENCH), "--shapes", "lenet2,nosuchshape"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2
    assert "nosuchshape" in proc.stderr
