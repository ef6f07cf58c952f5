"""Agreement with torch.nn.functional (forward, and backward through autograd), where torch is installed.

torch is a test oracle only, never a runtime dependency of cnnext. The same grids as the naive-oracle
tests are used; the naive oracle itself is also checked against torch here.
"""
import numpy as np
import pytest

import cnnext.functional as F
import naive_oracle as oracle
from helpers import rng_for
from naive_oracle import AVG_POOL_CASES, CONV_CASES, MAX_POOL_CASES, assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional

DTYPES = [np.float32, np.float64]


def t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def conv_setup(case_id, dtype):
    N, C, H, W, K, kh, kw, stride, padding, dilation, groups, has_bias = CONV_CASES[case_id]
    rng = rng_for("torch", case_id, np.dtype(dtype).name)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if has_bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def torch_conv(x, w, b, params, gy=None):
    tx, tw = t(x, True), t(w, True)
    tb = t(b, True) if b is not None else None
    ty = TF.conv2d(tx, tw, tb, **params)
    if gy is None:
        return ty.detach().numpy()
    ty.backward(t(gy))
    gb = tb.grad.numpy() if tb is not None else t(gy).sum(dim=(0, 2, 3)).numpy()
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), gb


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(CONV_CASES))
def test_conv2d_agrees_with_torch(case_id, dtype):
    x, w, b, params = conv_setup(case_id, dtype)
    y = F.conv2d(x, w, b, **params)
    gy = rng_for("torch-gy", case_id).standard_normal(y.shape).astype(dtype)
    ty, tgx, tgw, tgb = torch_conv(x, w, b, params, gy)
    assert y.dtype == ty.dtype
    assert_close(y, ty)
    gx, gw, gb = F.conv2d_backward(gy, x, w, **params)
    for got, want, name in ((gx, tgx, "grad_input"), (gw, tgw, "grad_weight"), (gb, tgb, "grad_bias")):
        assert got.dtype == want.dtype, name
        assert_close(got, want, err_msg=name)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case_id", list(CONV_CASES))
def test_naive_conv_oracle_agrees_with_torch(case_id):
    x, w, b, params = conv_setup(case_id, np.float64)
    gy = rng_for("torch-gy", case_id).standard_normal(oracle.conv2d(x, w, b, **params).shape)
    ty, tgx, tgw, tgb = torch_conv(x, w, b, params, gy)
    assert_close(oracle.conv2d(x, w, b, **params), ty)
    for got, want in zip(oracle.conv2d_backward(gy, x, w, **params), (tgx, tgw, tgb)):
        assert_close(got, want)


def max_setup(case_id, dtype, nan=False):
    N, C, H, W, k, s, p, d, ceil = MAX_POOL_CASES[case_id]
    rng = rng_for("torch-max", case_id, np.dtype(dtype).name)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    if nan:
        x[0, 0, :2, :2] = np.nan   # several NaNs in one window
        x[-1, -1, -1, ::3] = np.nan
        x[0, -1] = -np.inf         # a whole plane of -inf
    return x, dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)


@pytest.mark.parametrize("nan", [False, True], ids=["finite", "nan_inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(MAX_POOL_CASES))
def test_max_pool2d_agrees_with_torch(case_id, dtype, nan):
    x, kw = max_setup(case_id, dtype, nan)
    tx = t(x, True)
    ty, tidx = TF.max_pool2d(tx, return_indices=True, **kw)
    gy = rng_for("torch-max-gy", case_id).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(t(gy))
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    assert y.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    gx = F.max_pool2d_backward(gy, idx, x.shape)
    assert_close(gx, tx.grad.numpy())
    # the naive oracle agrees too
    ey, eidx = oracle.max_pool2d(x, **kw)
    np.testing.assert_array_equal(ey.astype(dtype), ty.detach().numpy())
    np.testing.assert_array_equal(eidx, tidx.numpy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case_id", list(AVG_POOL_CASES))
def test_avg_pool2d_agrees_with_torch(case_id, dtype):
    N, C, H, W, k, s, p, ceil, cip = AVG_POOL_CASES[case_id]
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
    x = rng_for("torch-avg", case_id, np.dtype(dtype).name).standard_normal((N, C, H, W)).astype(dtype)
    tx = t(x, True)
    ty = TF.avg_pool2d(tx, **kw)
    gy = rng_for("torch-avg-gy", case_id).standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(t(gy))
    y = F.avg_pool2d(x, **kw)
    assert y.dtype == x.dtype
    assert_close(y, ty.detach().numpy())
    gx = F.avg_pool2d_backward(gy, x.shape, **kw)
    assert gx.dtype == x.dtype
    assert_close(gx, tx.grad.numpy())
    assert_close(oracle.avg_pool2d(x, **kw), ty.detach().numpy(), dtype=dtype)
    assert_close(oracle.avg_pool2d_backward(gy, x.shape, **kw), tx.grad.numpy(), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_unbatched_agrees_with_torch(dtype):
    x, w, b, params = conv_setup("groups2_stride2", dtype)
    assert_close(F.conv2d(x[0], w, b, **params), torch_conv(x[:1], w, b, params)[0])
    xm, kw = max_setup("3x3s2_pad1_ceil", dtype)
    y, idx = F.max_pool2d(xm[0], return_indices=True, **kw)
    ty, tidx = TF.max_pool2d(t(xm[0]), return_indices=True, **kw)  # torch takes (C, H, W) too
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert_close(F.avg_pool2d(xm[0], 3, 2, 1), TF.avg_pool2d(t(xm[0]), 3, 2, 1).numpy())
