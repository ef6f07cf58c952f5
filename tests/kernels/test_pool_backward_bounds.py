"""Out-of-bounds input is stopped by validation, never by memory corruption (issue 6, item 2).

max_pool2d_backward is the one public function that takes positions from the caller (the argmax
indices) and writes through them. Every index outside [0, H*W) must give a ValueError, and nothing
may be written anywhere, inside or outside the result. tools/sanitize.sh runs this file on its
own under AddressSanitizer + UndefinedBehaviorSanitizer and reports that it raised ValueError with
no sanitizer report; in a normal run the canary test below shows the kernel itself never writes
outside its output row, whatever the index.
"""
import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext._kernels import _pool

pytestmark = pytest.mark.usefixtures("restore_config")

BAD_INDICES = [-1, -2**31, -2**63, 16, 17, 2**31, 2**32 + 3, 2**63 - 1]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", BAD_INDICES)
def test_out_of_bounds_index_is_a_value_error(bad, threads):
    cnnext.set_num_threads(threads)
    gy = np.ones((2, 3, 2, 2))
    idx = np.zeros((2, 3, 2, 2), dtype=np.int64)
    idx[1, 2, 1, 0] = bad
    with pytest.raises(ValueError, match=r"max_pool2d_backward: 1 indices lie outside \[0, H\*W\) = \[0, 16\)"):
        F.max_pool2d_backward(gy, idx, (2, 3, 4, 4))
    idx[:] = bad  # every index bad
    with pytest.raises(ValueError, match=r"max_pool2d_backward: 24 indices lie outside"):
        F.max_pool2d_backward(gy, idx, (2, 3, 4, 4))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int8, np.uint64])
def test_out_of_bounds_index_in_other_integer_dtypes(dtype):
    gy = np.ones((1, 1, 2, 2))
    idx = np.array([[[[0, 1], [2, np.iinfo(dtype).max]]]], dtype=dtype)
    with pytest.raises(ValueError, match="1 indices lie outside"):
        F.max_pool2d_backward(gy, idx, (1, 1, 2, 2))


def test_kernel_never_writes_outside_its_row_whatever_the_index():
    """The compiled kernel, called directly on a row with canaries around it, skips bad indices."""
    planes, HW, P, margin = 3, 16, 4, 64
    canary = np.float64(-12345.0)
    buf = np.full(margin + planes * HW + margin, canary)
    gx = buf[margin:margin + planes * HW].reshape(planes, HW)
    gx[...] = 0
    gy = np.arange(1, planes * P + 1, dtype=np.float64).reshape(planes, P)
    idx = np.array([[0, -1, 15, 16], [-HW, 2 * HW, 5, 5], [2**62, -2**62, 3, 1]], dtype=np.int64)
    bad = _pool.max_pool2d_backward(gy, idx, gx, 2)
    assert bad == 6
    assert (buf[:margin] == canary).all() and (buf[margin + planes * HW:] == canary).all()
    want = np.zeros((planes, HW))
    want[0, 0], want[0, 15] = 1, 3
    want[1, 5] = 7 + 8  # the same position twice: accumulated
    want[2, 3], want[2, 1] = 11, 12
    np.testing.assert_array_equal(gx, want)


def test_valid_indices_at_the_edges_are_accepted():
    gy = np.ones((1, 2, 1, 2))
    idx = np.array([[[[0, 15]], [[15, 15]]]])
    gx = F.max_pool2d_backward(gy, idx, (1, 2, 4, 4))
    assert gx[0, 0, 0, 0] == 1 and gx[0, 0, 3, 3] == 1 and gx[0, 1, 3, 3] == 2
