"""cnnext.functional.conv2d / conv2d_backward against the naive float64 oracle."""
import numpy as np
import pytest

import cnnext
import cnnext.functional as F
from cnnext._config import force_conv_algorithm
import naive_oracle as oracle
from helpers import make_data, result_dtype, rng_for, same_at_thread_counts, with_layout
from naive_oracle import CONV_CASES, assert_close

DTYPES = [np.float32, np.float64, np.int64]
LAYOUTS = ["C", "F", "slice", "negative", "readonly"]


@pytest.fixture(params=["gemm", "direct", "winograd"])
def algorithm(request):
    """Run the test once with each conv2d algorithm forced (im2col + GEMM, direct, Winograd)."""
    with force_conv_algorithm(request.param):
        yield request.param


def conv_inputs(case_id, dtype):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups, has_bias = CONV_CASES[case_id]
    rng = rng_for(case_id, np.dtype(dtype).name)
    x = make_data(rng, (N, C, H, W), dtype)
    w = make_data(rng, (K, C // groups, kh, kw), dtype)
    b = make_data(rng, (K,), dtype) if has_bias else None
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, params


def out_shape(x, w, params):
    y = oracle.conv2d(x[:1] if x.shape[0] else np.zeros((1,) + x.shape[1:]), w, None, **params)
    return (x.shape[0],) + y.shape[1:]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(CONV_CASES))
def test_conv2d_forward_matches_oracle(case_id, dtype, algorithm):
    x, w, b, params = conv_inputs(case_id, dtype)
    y = F.conv2d(x, w, b, **params)
    assert y.dtype == result_dtype(dtype)
    assert_close(y, oracle.conv2d(x, w, b, **params))
    if params["padding"] == "same":
        assert y.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(CONV_CASES))
def test_conv2d_backward_matches_oracle(case_id, dtype, algorithm):
    x, w, _, params = conv_inputs(case_id, dtype)
    gy = make_data(rng_for(case_id, "gy", np.dtype(dtype).name), out_shape(x, w, params), dtype)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **params)
    ex, ew, eb = oracle.conv2d_backward(gy, x, w, **params)
    for got, want, name in ((gx, ex, "grad_input"), (gw, ew, "grad_weight"), (gb, eb, "grad_bias")):
        assert got.dtype == result_dtype(dtype), name
        assert_close(got, want, err_msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case_id", ["groups2_stride2", "pointwise", "same_even_asym"])
def test_conv2d_memory_layouts(case_id, layout, algorithm):
    x, w, b, params = conv_inputs(case_id, np.float64)
    gy = make_data(rng_for(case_id, "gy-layout"), out_shape(x, w, params), np.float64)
    lx, lw, lgy = (with_layout(a, layout) for a in (x, w, gy))
    lb = None if b is None else with_layout(b[:, None], layout)[:, 0]
    assert_close(F.conv2d(lx, lw, lb, **params), oracle.conv2d(x, w, b, **params))
    for got, want in zip(F.conv2d_backward(lgy, lx, lw, **params),
                         oracle.conv2d_backward(gy, x, w, **params)):
        assert_close(got, want)
    if layout == "readonly":  # the inputs were not modified
        np.testing.assert_array_equal(lx, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["basic3x3", "pointwise", "depthwise"])
def test_conv2d_unbatched(case_id, dtype, algorithm):
    x, w, b, params = conv_inputs(case_id, dtype)
    x3 = x[0]
    y = F.conv2d(x3, w, b, **params)
    assert y.ndim == 3 and y.dtype == result_dtype(dtype)
    assert_close(y, oracle.conv2d(x, w, b, **params)[0])
    gy = make_data(rng_for(case_id, "gy3"), y.shape, dtype)
    gx, gw, gb = F.conv2d_backward(gy, x3, w, **params)
    ex, ew, eb = oracle.conv2d_backward(gy[None], x[:1], w, **params)
    assert gx.shape == x3.shape
    assert_close(gx, ex[0])
    assert_close(gw, ew)
    assert_close(gb, eb)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["basic3x3", "pointwise", "depthwise", "same_even_asym"])
def test_conv2d_empty_batch(case_id, dtype, algorithm):
    x, w, b, params = conv_inputs(case_id, dtype)
    x0 = x[:0]
    expected_shape = out_shape(x0, w, params)
    assert expected_shape[0] == 0
    y = F.conv2d(x0, w, b, **params)
    assert y.shape == expected_shape and y.dtype == np.dtype(dtype)
    gx, gw, gb = F.conv2d_backward(np.zeros(expected_shape, dtype=dtype), x0, w, **params)
    assert gx.shape == x0.shape and gx.dtype == np.dtype(dtype)
    # sums over an empty batch are zero
    assert gw.shape == w.shape and gw.dtype == np.dtype(dtype) and not gw.any()
    assert gb.shape == (w.shape[0],) and gb.dtype == np.dtype(dtype) and not gb.any()


def _per_sample_bytes(x, w, params):
    N, C = x.shape[:2]
    kh, kw = w.shape[2:]
    Ho, Wo = out_shape(x, w, params)[2:]
    return C * kh * kw * Ho * Wo * x.dtype.itemsize


@pytest.mark.parametrize("chunking", ["one_sample", "partial_last_chunk", "tiny_1000_bytes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["basic3x3", "groups2_stride2", "depthwise", "same_even_asym"])
def test_conv2d_chunked_batch(case_id, dtype, chunking, restore_config):
    """The GEMM path processes the batch in chunks that fit the workspace limit."""
    x, w, b, params = conv_inputs(case_id, dtype)
    x = np.concatenate([x, x[::-1] * 0.5, x[:1] - 1.0]).astype(dtype)  # N = 2 * N0 + 1, odd
    gy = make_data(rng_for(case_id, "gy-chunk"), out_shape(x, w, params), dtype)
    with force_conv_algorithm("gemm"):
        cnnext.set_workspace_limit(2**30)
        y_full = F.conv2d(x, w, b, **params)
        g_full = F.conv2d_backward(gy, x, w, **params)
        per_sample = _per_sample_bytes(x, w, params)
        limit = {"one_sample": per_sample, "partial_last_chunk": 2 * per_sample,
                 "tiny_1000_bytes": 1000}[chunking]
        cnnext.set_workspace_limit(limit)
        y = F.conv2d(x, w, b, **params)
        g = F.conv2d_backward(gy, x, w, **params)
    assert_close(y, oracle.conv2d(x, w, b, **params))
    assert_close(y, y_full)
    for got, full, want in zip(g, g_full, oracle.conv2d_backward(gy, x, w, **params)):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want)
        assert_close(got, full)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", ["basic3x3", "groups2_stride2", "depthwise", "pointwise",
                                     "same_dilated"])
def test_conv2d_thread_counts_bitwise_identical(case_id, dtype, restore_config, algorithm):
    x, w, b, params = conv_inputs(case_id, dtype)
    x = np.concatenate([x, -x, x * 2]).astype(dtype)  # a few more planes to split among threads
    gy = make_data(rng_for(case_id, "gy-threads"), out_shape(x, w, params), dtype)
    y, *grads = same_at_thread_counts(
        lambda: (F.conv2d(x, w, b, **params),) + F.conv2d_backward(gy, x, w, **params))
    assert_close(y, oracle.conv2d(x, w, b, **params))
    for got, want in zip(grads, oracle.conv2d_backward(gy, x, w, **params)):
        assert_close(got, want)


def test_conv2d_does_not_modify_inputs(algorithm):
    x, w, b, params = conv_inputs("groups2_stride2", np.float64)
    gy = make_data(rng_for("gy-nomod"), out_shape(x, w, params), np.float64)
    copies = [a.copy() for a in (x, w, b, gy)]
    F.conv2d(x, w, b, **params)
    F.conv2d_backward(gy, x, w, **params)
    for a, c in zip((x, w, b, gy), copies):
        np.testing.assert_array_equal(a, c)


def test_conv2d_accepts_lists_and_int_bias_with_float32_input(algorithm):
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    w = [[[[1, 0], [0, -1]], [[0, 2], [1, 0]]]]  # nested lists, ints
    y = F.conv2d(x, w, [3])
    assert y.dtype == np.float32
    assert_close(y, oracle.conv2d(x, np.array(w), np.array([3])))


@pytest.mark.parametrize("need", [(True, False), (False, True)], ids=["input_only", "weight_only"])
@pytest.mark.parametrize("case_id", ["basic3x3", "groups2_stride2", "depthwise", "pointwise"])
def test_conv2d_partial_backward_matches_oracle(case_id, need, algorithm):
    """nn layers ask for grad_input or grad_weight alone (frozen weights, first layer): each
    algorithm then computes only that one, and it equals the oracle's."""
    from cnnext._validation import check_conv2d
    from cnnext.functional._conv_dispatch import backward_checked
    x, w, _, params = conv_inputs(case_id, np.float64)
    gy = rng_for("partial", case_id).standard_normal(out_shape(x, w, params))
    x, w, _, g, _ = check_conv2d("t", x, w, None, params.get("stride", 1), params.get("padding", 0),
                                 params.get("dilation", 1), params.get("groups", 1))
    gx, gw, gb = backward_checked(x, w, gy, g, *need)
    want = oracle.conv2d_backward(gy, x, w, **params)
    assert (gx is None) != need[0] and (gw is None) != need[1]
    assert_close(gx if need[0] else gw, want[0] if need[0] else want[1])
    assert_close(gb, want[2])
