"""Worker functions for the multiprocessing tests of tests/runtime/test_concurrency.py.

They live in a plain module (importable by name from the tests directory, which pytest puts on
sys.path and multiprocessing passes on to spawned children) so that the spawn and forkserver start
methods can find them.
"""
import numpy as np


def inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    return x, w


def conv_job(args):
    """conv2d forward + backward and a max pool of the inputs for ``seed``, with ``threads`` kernel threads."""
    seed, threads = args
    import cnnext
    import cnnext.functional as F

    cnnext.set_num_threads(threads)
    x, w = inputs(seed)
    y = F.conv2d(x, w, padding=1)
    gx, gw, gb = F.conv2d_backward(y, x, w, padding=1)
    p, idx = F.max_pool2d(y, 2, return_indices=True)
    return y, gx, gw, gb, p, idx


def threads_after(n):
    """cnnext.get_num_threads() after cnnext.set_num_threads(n), in this (worker) process."""
    import cnnext

    cnnext.set_num_threads(n)
    return cnnext.get_num_threads()
