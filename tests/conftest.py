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
