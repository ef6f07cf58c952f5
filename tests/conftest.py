"""Shared fixtures: cnnext's process-wide settings are restored after every test that changes them."""
import pytest

import cnnext


@pytest.fixture
def restore_config():
    """Yield, then restore the thread count and workspace limit to what they were."""
    threads, workspace = cnnext.get_num_threads(), cnnext.get_workspace_limit()
    try:
        yield
    finally:
        cnnext.set_num_threads(threads)
        cnnext.set_workspace_limit(workspace)


@pytest.fixture(autouse=True)
def parallel_even_for_small_work(monkeypatch):
    """The suite's inputs are small, and cnnext runs small kernel calls on one thread
    (cnnext._config.threads_for): lower that threshold to 0 so every test runs the parallel
    kernels at the configured thread count. Tests of the threshold itself set it back."""
    from cnnext import _config
    monkeypatch.setitem(_config._state, "min_parallel_work", 0)
    yield
    # force_conv_algorithm is process-wide: a test that leaves it set changes every later test
    leaked = _config._state["conv_algorithm"]
    _config._state["conv_algorithm"] = "auto"
    assert leaked == "auto", f"the test left force_conv_algorithm({leaked!r}) in effect"
