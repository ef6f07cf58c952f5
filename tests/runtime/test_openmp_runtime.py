"""The OpenMP runtime check at import: a runtime shared with a library loaded earlier (and left
spinning) makes the kernels default to one thread; a private or passive runtime changes nothing.
Which runtimes are loaded comes from threadpoolctl (cnnext/_threads.py); show_config reports what
it sees."""
import json
import sys

import pytest
import threadpoolctl

import cnnext
from cnnext import _config, _threads
from helpers import child_env


@pytest.fixture
def saved_state():
    keys = ("num_threads", "shared_runtime", "serial_by_default")
    old = {k: _config._state[k] for k in keys}
    yield
    _config._state.update(old)


def _note(monkeypatch, before, after, policy, omp_num_threads=None):
    if omp_num_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    _config._state.update(num_threads=2, shared_runtime=None, serial_by_default=False)
    _config._note_openmp_runtime(frozenset(before), frozenset(after), policy)
    return cnnext.show_config(mode="dicts")


@pytest.mark.skipif(not cnnext.show_config(mode="dicts")["openmp"], reason="built without OpenMP")
def test_shared_spinning_runtime_makes_kernels_serial(saved_state, monkeypatch):
    cfg = _note(monkeypatch, {"/x/torch/lib/libgomp.so.1"}, {"/x/torch/lib/libgomp.so.1"}, None)
    assert cfg["num_threads"] == 1 and cfg["serial_by_default"]
    assert cfg["openmp_shared_with"] == ["/x/torch/lib/libgomp.so.1"]
    cnnext.set_num_threads(2)  # the user can still ask for more
    assert cnnext.get_num_threads() == 2


def test_private_or_passive_runtime_changes_nothing(saved_state, monkeypatch):
    # our own runtime appeared: not shared
    cfg = _note(monkeypatch, {"/a/libgomp.so.1"}, {"/a/libgomp.so.1", "/b/libgomp-abc.so.1"}, None)
    assert cfg["num_threads"] == 2 and not cfg["serial_by_default"] and cfg["openmp_shared_with"] is None
    # nothing loaded before
    cfg = _note(monkeypatch, set(), {"/b/libgomp.so.1"}, None)
    assert cfg["num_threads"] == 2 and not cfg["serial_by_default"]
    # shared, but the user made it passive before starting
    cfg = _note(monkeypatch, {"/a/libgomp.so.1"}, {"/a/libgomp.so.1"}, "passive")
    assert cfg["num_threads"] == 2 and not cfg["serial_by_default"] and cfg["openmp_shared_with"]
    # shared and spinning, but OMP_NUM_THREADS chosen explicitly
    cfg = _note(monkeypatch, {"/a/libgomp.so.1"}, {"/a/libgomp.so.1"}, None, omp_num_threads="2")
    assert cfg["num_threads"] == 2 and not cfg["serial_by_default"]


def test_loaded_runtimes_lists_paths():
    found = _threads.loaded_openmp_runtimes()
    assert all(p.startswith("/") for p in found)
    if cnnext.show_config(mode="dicts")["openmp"] and sys.platform.startswith("linux"):
        assert found, "the kernels are built with OpenMP, so a runtime must be loaded"
    # the same set threadpoolctl's own scan reports
    assert found == {i["filepath"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"}


def test_show_config_reports_what_threadpoolctl_sees(capsys):
    cfg = cnnext.show_config(mode="dicts")
    want = threadpoolctl.threadpool_info()
    assert [(i["user_api"], i["filepath"], i["num_threads"]) for i in cfg["threadpools"]] == [
        (i["user_api"], i["filepath"], i["num_threads"]) for i in want]
    if cfg["openmp"] and sys.platform.startswith("linux"):
        assert any(i["user_api"] == "openmp" for i in cfg["threadpools"])
    cnnext.show_config()
    out = capsys.readouterr().out
    for i in want:
        assert i["filepath"] in out


def _fresh_python(code, **env):
    import subprocess
    import sys
    full = {k: v for k, v in child_env().items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}
    for k, v in env.items():  # None: unset
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    # cwd: not the checkout, whose uncompiled cnnext/ would shadow the one under test ("-c" puts
    # the working directory first on sys.path)
    import tempfile
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                             timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


REPORT = ("import os, cnnext; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), "
          "cnnext.show_config(mode='dicts')['blas_thread_timeout'])")


def test_cnnext_first_makes_idle_blas_threads_sleep():
    assert _fresh_python(REPORT) == "4 4"


def test_numpy_first_is_reported_not_changed():
    assert _fresh_python("import numpy; " + REPORT) == "None None"
    assert "OPENBLAS_THREAD_TIMEOUT=4" in _fresh_python("import numpy, cnnext; cnnext.show_config()")


def test_users_blas_thread_timeout_is_kept():
    assert _fresh_python(REPORT, OPENBLAS_THREAD_TIMEOUT="12") == "12 12"


TORCH_FIRST = """
import json, threadpoolctl
import torch
openmp = lambda: sorted(i["filepath"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp")
before = openmp()
import cnnext
cfg = cnnext.show_config(mode="dicts")
print(json.dumps([before, openmp(), cfg["openmp_shared_with"], cfg["serial_by_default"], cfg["num_threads"]]))
"""


@pytest.mark.skipif(not cnnext.show_config(mode="dicts")["openmp"], reason="built without OpenMP")
def test_runtime_shared_with_torch_is_noticed_end_to_end():
    """Import torch first (it loads its own OpenMP runtime), then cnnext, in a fresh interpreter:
    when the kernels got no runtime of their own (a source build linked to the same libgomp), the
    shared spinning runtime makes them serial by default; with a private one (wheels), nothing
    changes. Either way the answer agrees with threadpoolctl's own scans around the import."""
    pytest.importorskip("torch")
    env = {"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}
    before, after, shared, serial, threads = json.loads(_fresh_python(TORCH_FIRST, **env))
    assert before, "torch loads an OpenMP runtime"
    if set(after) == set(before):
        assert shared == before and serial and threads == 1
    else:
        assert shared is None and not serial
