"""cnnext.functional max_pool2d / avg_pool2d and their backward functions against the naive oracle."""
import numpy as np
import pytest

import cnnext.functional as F
import helpers
import naive_oracle as oracle
from helpers import result_dtype, rng_for, same_at_thread_counts, with_layout
from naive_oracle import AVG_POOL_CASES, MAX_POOL_CASES, assert_close

DTYPES = [np.float32, np.float64, np.int64]
LAYOUTS = ["C", "F", "slice", "negative", "readonly"]


def make_data(rng, shape, dtype):
    # few distinct integers: many ties, so the first-maximum rule is exercised
    return helpers.make_data(rng, shape, dtype, int_low=-2, int_high=3)


def every_case_and_dtype(cases):
    """Parametrize a test over every case id of ``cases`` and every dtype of DTYPES."""
    def mark(test):
        test = pytest.mark.parametrize("case_id", list(cases))(test)
        return pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)(test)
    return mark


def max_args(case_id):
    N, C, H, W, k, s, p, d, ceil = MAX_POOL_CASES[case_id]
    return (N, C, H, W), dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


def avg_args(case_id):
    N, C, H, W, k, s, p, ceil, cip = AVG_POOL_CASES[case_id]
    return (N, C, H, W), dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil,
                              count_include_pad=cip)


def assert_max_equal(y, idx, x, kw):
    """max pooling is exact: values (NaN included) and indices equal the oracle's."""
    ey, eidx = oracle.max_pool2d(x, **kw)
    assert y.shape == ey.shape and idx.shape == eidx.shape
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(y, ey.astype(y.dtype))  # NaNs compare equal here
    np.testing.assert_array_equal(idx, eidx)


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------
@every_case_and_dtype(MAX_POOL_CASES)
def test_max_pool2d_matches_oracle(case_id, dtype):
    shape, kw = max_args(case_id)
    x = make_data(rng_for(case_id, np.dtype(dtype).name), shape, dtype)
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert y.dtype == result_dtype(dtype)
    assert_max_equal(y, idx, x, kw)
    y_only = F.max_pool2d(x, **kw)
    assert isinstance(y_only, np.ndarray)
    np.testing.assert_array_equal(y_only, y)


@every_case_and_dtype(MAX_POOL_CASES)
def test_max_pool2d_backward_matches_oracle(case_id, dtype):
    shape, kw = max_args(case_id)
    x = make_data(rng_for(case_id, np.dtype(dtype).name), shape, dtype)
    _, eidx = oracle.max_pool2d(x, **kw)
    gy = make_data(rng_for(case_id, "gy"), eidx.shape, dtype)
    expected = oracle.max_pool2d_backward(gy, eidx, x.shape)
    # with the oracle's indices (independent of the forward kernel) ...
    gx = F.max_pool2d_backward(gy, eidx, x.shape)
    assert gx.shape == x.shape and gx.dtype == result_dtype(dtype)
    assert_close(gx, expected)
    # ... and with cnnext's own
    _, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert_close(F.max_pool2d_backward(gy, idx, x.shape), expected)


def test_max_pool2d_backward_accumulates_overlapping_windows():
    # 3x3 stride 1 on a plane whose maximum is in the centre: all 9 windows pick it.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    y, idx = F.max_pool2d(x, 3, stride=1, return_indices=True)
    assert (idx == 12).all()
    gy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    assert gx[0, 0, 2, 2] == 45.0 and gx.sum() == 45.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2_fastpath", "2x2s2_odd_ceil", "3x3s2_overlap",
                                     "3x3s1_pad1", "dilation2"])
def test_max_pool2d_nan_propagates(case_id, dtype):
    shape, kw = max_args(case_id)
    x = make_data(rng_for(case_id, "nan"), shape, dtype)
    plane = x[0, 0]
    plane[0, 0] = np.nan           # first element of the first window
    plane[1, 1] = np.nan           # a second NaN in the same window: its index wins (PyTorch)
    plane[-1, -1] = np.nan         # a lone NaN in a corner
    x[-1, -1, 2, 1] = np.nan
    x[-1, -1, 2, 3] = 1e30         # a huge value after the NaN does not replace it
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert np.isnan(y).any()
    assert_max_equal(y, idx, x, kw)
    gy = np.ones(y.shape, dtype=dtype)
    assert_close(F.max_pool2d_backward(gy, idx, x.shape), oracle.max_pool2d_backward(gy, idx, x.shape))


def test_max_pool2d_two_nans_in_a_window_gives_the_last_nan():
    x = np.array([[[[np.nan, 1.0], [np.nan, 2.0]]]])
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 2
    y, idx = F.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)  # general path
    assert idx[0, 0, 1, 1] == 2 and np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2_fastpath", "2x2s2_pad1", "3x3s2_pad1_ceil",
                                     "dilation2", "nonsquare"])
def test_max_pool2d_all_minus_inf_windows(case_id, dtype):
    shape, kw = max_args(case_id)
    x = np.full(shape, -np.inf, dtype=dtype)
    x[:, :, -1, -1] = 5.0  # one finite value, so only some windows see it
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert np.isneginf(y).any()
    assert_max_equal(y, idx, x, kw)  # a -inf window keeps its first in-bounds position


def test_max_pool2d_ties_first_maximum_wins_fast_path():
    x = np.zeros((2, 3, 4, 6))
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    oh, ow = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    np.testing.assert_array_equal(idx, np.broadcast_to(2 * oh * 6 + 2 * ow, idx.shape))


def test_max_pool2d_ties_first_maximum_wins_general_path():
    x = np.ones((1, 1, 5, 5), dtype=np.float32)
    y, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    # windows start at rows/cols -1, 1, 3; the first in-bounds position is max(start, 0)
    starts = np.array([0, 1, 3])
    np.testing.assert_array_equal(idx[0, 0], starts[:, None] * 5 + starts[None, :])
    np.testing.assert_array_equal(y, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_max_pool2d_fast_path_agrees_with_general_path(dtype):
    """2x2 s2 without padding (fast path) on x == 2x2 s2 with padding 1 (general) on x's interior."""
    rng = rng_for("fast-vs-general", np.dtype(dtype).name)
    inner = rng.integers(-3, 4, size=(2, 3, 6, 8)).astype(dtype)  # many ties
    inner[0, 0, 2, 3] = np.nan
    inner[1, 2, 0, 0] = np.nan
    inner[1, 2, 1, 1] = np.nan
    padded = np.full((2, 3, 8, 10), -np.inf, dtype=dtype)
    padded[:, :, 1:-1, 1:-1] = inner
    y_fast, i_fast = F.max_pool2d(padded, 2, 2, return_indices=True)
    y_gen, i_gen = F.max_pool2d(inner, 2, 2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y_fast, y_gen)
    # translate the fast path's positions in the padded plane into positions in the inner plane
    r, c = np.divmod(i_fast, 10)
    np.testing.assert_array_equal((r - 1) * 8 + (c - 1), i_gen)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case_id", ["2x2s2_fastpath", "3x3s2_pad1_ceil"])
def test_max_pool2d_memory_layouts(case_id, layout):
    shape, kw = max_args(case_id)
    x = make_data(rng_for(case_id, "layout"), shape, np.float64)
    y, idx = F.max_pool2d(with_layout(x, layout), return_indices=True, **kw)
    assert_max_equal(y, idx, x, kw)
    gy = make_data(rng_for(case_id, "gy-layout"), y.shape, np.float64)
    gx = F.max_pool2d_backward(with_layout(gy, layout), with_layout(idx, layout), x.shape)
    assert_close(gx, oracle.max_pool2d_backward(gy, idx, x.shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2_fastpath", "3x3s2_pad1_ceil"])
def test_max_pool2d_unbatched(case_id, dtype):
    shape, kw = max_args(case_id)
    x = make_data(rng_for(case_id, "3d"), shape, dtype)
    y, idx = F.max_pool2d(x[0], return_indices=True, **kw)
    assert y.ndim == 3 and idx.ndim == 3 and y.dtype == result_dtype(dtype)
    assert_max_equal(y[None], idx[None], x[:1], kw)
    gy = make_data(rng_for(case_id, "gy3"), y.shape, dtype)
    gx = F.max_pool2d_backward(gy, idx, x[0].shape)
    assert gx.shape == x[0].shape
    assert_close(gx, oracle.max_pool2d_backward(gy, idx, x[0].shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2_fastpath", "3x3s2_pad1_ceil"])
def test_max_pool2d_empty_batch(case_id, dtype):
    shape, kw = max_args(case_id)
    x = np.zeros((0,) + shape[1:], dtype=dtype)
    ey, _ = oracle.max_pool2d(np.zeros((1,) + shape[1:]), **kw)
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert y.shape == (0,) + ey.shape[1:] and y.dtype == np.dtype(dtype)
    assert idx.shape == y.shape and idx.dtype == np.int64
    gx = F.max_pool2d_backward(np.zeros(y.shape, dtype=dtype), idx, x.shape)
    assert gx.shape == x.shape and gx.dtype == np.dtype(dtype)


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------
@every_case_and_dtype(AVG_POOL_CASES)
def test_avg_pool2d_matches_oracle(case_id, dtype):
    shape, kw = avg_args(case_id)
    x = make_data(rng_for(case_id, np.dtype(dtype).name), shape, dtype)
    y = F.avg_pool2d(x, **kw)
    assert y.dtype == result_dtype(dtype)
    assert_close(y, oracle.avg_pool2d(x, **kw))


@every_case_and_dtype(AVG_POOL_CASES)
def test_avg_pool2d_backward_matches_oracle(case_id, dtype):
    shape, kw = avg_args(case_id)
    ey = oracle.avg_pool2d(np.zeros(shape), **kw)
    gy = make_data(rng_for(case_id, "gy", np.dtype(dtype).name), ey.shape, dtype)
    gx = F.avg_pool2d_backward(gy, shape, **kw)
    assert gx.shape == shape and gx.dtype == result_dtype(dtype)
    assert_close(gx, oracle.avg_pool2d_backward(gy, shape, **kw))


def test_avg_pool2d_divisors_by_hand():
    x = np.ones((1, 1, 3, 3))
    # 2x2 windows, stride 2, padding 1: every window holds 1 real element (corner), 2 or 4
    y_incl = F.avg_pool2d(x, 2, stride=2, padding=1, count_include_pad=True)
    y_excl = F.avg_pool2d(x, 2, stride=2, padding=1, count_include_pad=False)
    np.testing.assert_allclose(y_incl[0, 0], [[0.25, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(y_excl[0, 0], np.ones((2, 2)))
    # ceil_mode: a window running past the padded input divides by its clipped size
    y_ceil = F.avg_pool2d(np.ones((1, 1, 5, 5)), 2, stride=2, ceil_mode=True)
    np.testing.assert_allclose(y_ceil[0, 0], np.ones((3, 3)))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case_id", ["2x2s2", "3x3s2_pad1_ceil_nocount"])
def test_avg_pool2d_memory_layouts(case_id, layout):
    shape, kw = avg_args(case_id)
    x = make_data(rng_for(case_id, "layout"), shape, np.float64)
    y = F.avg_pool2d(with_layout(x, layout), **kw)
    assert_close(y, oracle.avg_pool2d(x, **kw))
    gy = make_data(rng_for(case_id, "gy-layout"), y.shape, np.float64)
    gx = F.avg_pool2d_backward(with_layout(gy, layout), shape, **kw)
    assert_close(gx, oracle.avg_pool2d_backward(gy, shape, **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2", "3x3s2_pad1_ceil_nocount"])
def test_avg_pool2d_unbatched(case_id, dtype):
    shape, kw = avg_args(case_id)
    x = np.abs(make_data(rng_for(case_id, "3d"), shape, dtype))
    y = F.avg_pool2d(x[0], **kw)
    assert y.ndim == 3 and y.dtype == result_dtype(dtype)
    assert_close(y, oracle.avg_pool2d(x[0], **kw))
    gy = make_data(rng_for(case_id, "gy3"), y.shape, np.float64).astype(result_dtype(dtype))
    gx = F.avg_pool2d_backward(gy, x[0].shape, **kw)
    assert gx.shape == x[0].shape
    assert_close(gx, oracle.avg_pool2d_backward(gy, x[0].shape, **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["2x2s2", "3x3s2_pad1_ceil_nocount"])
def test_avg_pool2d_empty_batch(case_id, dtype):
    shape, kw = avg_args(case_id)
    ey = oracle.avg_pool2d(np.zeros((1,) + shape[1:]), **kw)
    x = np.zeros((0,) + shape[1:], dtype=dtype)
    y = F.avg_pool2d(x, **kw)
    assert y.shape == (0,) + ey.shape[1:] and y.dtype == np.dtype(dtype)
    gx = F.avg_pool2d_backward(np.zeros(y.shape, dtype=dtype), x.shape, **kw)
    assert gx.shape == x.shape and gx.dtype == np.dtype(dtype)


# ---------------------------------------------------------------------------------------------
# both
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op, case_id", [("max", c) for c in ("2x2s2_fastpath", "3x3s2_overlap", "dilation_ceil_asym")]
                         + [("avg", c) for c in ("2x2s2", "3x3s2_pad1_ceil_nocount", "nonsquare_ceil")])
def test_pool2d_thread_counts_bitwise_identical(op, case_id, dtype, restore_config):
    """Forward (and max pooling's indices) and backward are bitwise the same on 1 and 2 threads."""
    shape, kw = (max_args if op == "max" else avg_args)(case_id)
    x = make_data(rng_for(case_id, "threads"), (3,) + shape[1:], dtype)

    def run():
        if op == "max":
            y, idx = F.max_pool2d(x, return_indices=True, **kw)
            gy = make_data(rng_for(case_id, "gy-threads"), y.shape, dtype)
            return y, idx, F.max_pool2d_backward(gy, idx, x.shape)
        y = F.avg_pool2d(x, **kw)
        gy = make_data(rng_for(case_id, "gy-threads"), y.shape, dtype)
        return y, F.avg_pool2d_backward(gy, x.shape, **kw)
    y, *rest = same_at_thread_counts(run)
    if op == "max":
        assert_max_equal(y, rest[0], x, kw)
    else:
        assert_close(y, oracle.avg_pool2d(x, **kw))
