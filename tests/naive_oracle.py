"""A naive float64 reference for the functional API, written from the definitions.

Nothing here imports cnnext: every result is computed by direct summation over small shapes, with
plain Python loops over output positions (the kernel-window sum is a small numpy expression).
The semantics follow torch.nn.functional:

- conv2d is a cross-correlation; ``y[n, k, oh, ow] = b[k] + sum_{c, i, j} w[k, c, i, j] *
  x[n, g * Cg + c, oh * sh - pt + i * dh, ow * sw - pl + j * dw]`` with zeros outside the input,
  ``g = k // (K / groups)``. padding='same' puts ``total // 2`` before and the rest after, with
  ``total = dilation * (kernel - 1)``.
- max_pool2d pads with -inf, scans each window row by row and lets an element replace the running
  maximum when it is greater or NaN; the index starts at the window's first in-bounds position.
- avg_pool2d divides by the window clipped to the padded input (count_include_pad) or by the number
  of real elements in it.
- Output sizes use floor division, or with ceil_mode ceil division where a last window must start
  inside the input or its left padding.
"""
import numpy as np

# Per-dtype tolerances: rtol relative to each expected value, atol scaled by the largest magnitude
# of the expected array (sums of many terms lose precision relative to their largest terms).
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-10},
}


def tolerance(dtype):
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, dtype=None, err_msg=""):
    """Compare ``actual`` with the oracle's float64 ``expected`` using the tolerance of ``dtype``.

    ``dtype`` defaults to the dtype of ``actual``. Shapes must match exactly; NaNs must be at the
    same positions; infinities must be equal.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape} {err_msg}"
    tol = tolerance(actual.dtype if dtype is None else dtype)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=tol["rtol"],
                               atol=tol["atol"] * scale, equal_nan=True, err_msg=err_msg)


def pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _batched(x):
    x = np.asarray(x, dtype=np.float64)
    return (x[None], True) if x.ndim == 3 else (x, False)


def conv_padding(padding, kernel, dilation):
    """(top, bottom, left, right) padding of a convolution."""
    (kh, kw), (dh, dw) = kernel, dilation
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = pair(padding)
    return ph, ph, pw, pw


def _conv_setup(x, w, stride, padding, dilation):
    """The zero-padded input and the geometry of a convolution."""
    N, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pt, pb, pl, pr = conv_padding(padding, (kh, kw), (dh, dw))
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.zeros((N, C, H + pt + pb, W + pl + pr))
    xp[:, :, pt:pt + H, pl:pl + W] = x
    return xp, (N, C, H, W, K, Cg, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo)


def _conv_terms(geometry, groups):
    """Yield (n, k, oh, ow, window) for every output element, ``window`` indexing the part of the
    padded input that output element sums over (its group's channels, the dilated kernel footprint)."""
    N, C, H, W, K, Cg, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo = geometry
    Kg = K // groups
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for oh in range(Ho):
                for ow in range(Wo):
                    r0, c0 = oh * sh, ow * sw
                    rows = slice(r0, r0 + dh * (kh - 1) + 1, dh)
                    cols = slice(c0, c0 + dw * (kw - 1) + 1, dw)
                    yield n, k, oh, ow, (n, slice(g * Cg, (g + 1) * Cg), rows, cols)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Reference conv2d (float64)."""
    x, unbatched = _batched(x)
    w = np.asarray(w, dtype=np.float64)
    xp, geometry = _conv_setup(x, w, stride, padding, dilation)
    N, K, Ho, Wo = geometry[0], geometry[4], geometry[14], geometry[15]
    y = np.zeros((N, K, Ho, Wo))
    for n, k, oh, ow, window in _conv_terms(geometry, groups):
        y[n, k, oh, ow] = np.sum(xp[window] * w[k])
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return y[0] if unbatched else y


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """Reference gradients of conv2d: (grad_input, grad_weight, grad_bias), by direct summation."""
    x, unbatched = _batched(x)
    gy = np.asarray(gy, dtype=np.float64)
    if unbatched:
        gy = gy[None]
    w = np.asarray(w, dtype=np.float64)
    xp, geometry = _conv_setup(x, w, stride, padding, dilation)
    H, W, pt, pl = geometry[2], geometry[3], geometry[12], geometry[13]
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for n, k, oh, ow, window in _conv_terms(geometry, groups):
        d = gy[n, k, oh, ow]
        # y[n,k,oh,ow] = sum(xp[window] * w[k]) -> both partials are the other factor.
        gxp[window] += d * w[k]
        gw[k] += d * xp[window]
    gx = gxp[:, :, pt:pt + H, pl:pl + W]
    gb = gy.sum(axis=(0, 2, 3))
    return (gx[0] if unbatched else gx), gw, gb


def pool_output_size(size, k, s, p, d, ceil_mode):
    """Output length of a pooling along one axis (PyTorch's rule)."""
    span = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -((-span) // s) + 1  # ceil(span / s) + 1, also for a negative span
        if (out - 1) * s >= size + p:  # the last window must start inside input or left padding
            out -= 1
    else:
        out = span // s + 1
    return out


def _pool_params(x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    kh, kw = pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    H, W = x_shape[-2:]
    Ho = pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    Wo = pool_output_size(W, kw, sw, pw, dw, ceil_mode)
    return kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Reference max_pool2d; returns (output, int64 indices) with PyTorch's semantics."""
    x, unbatched = _batched(x)
    N, C, H, W = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo = _pool_params(x.shape, kernel_size, stride, padding,
                                                          dilation, ceil_mode)
    y = np.empty((N, C, Ho, Wo))
    idx = np.empty((N, C, Ho, Wo), dtype=np.int64)
    for n in range(N):
        for c in range(C):
            plane = x[n, c]
            for oh in range(Ho):
                for ow in range(Wo):
                    best_val, best_pos = -np.inf, None
                    for i in range(kh):
                        ih = oh * sh - ph + i * dh
                        if not 0 <= ih < H:
                            continue  # padding row: -inf never replaces the running maximum
                        for j in range(kw):
                            iw = ow * sw - pw + j * dw
                            if not 0 <= iw < W:
                                continue
                            v = plane[ih, iw]
                            if best_pos is None:
                                best_pos = ih * W + iw  # first in-bounds position of the window
                            if v > best_val or np.isnan(v):
                                best_val, best_pos = v, ih * W + iw
                    y[n, c, oh, ow] = best_val
                    idx[n, c, oh, ow] = -1 if best_pos is None else best_pos
    return (y[0], idx[0]) if unbatched else (y, idx)


def max_pool2d_backward(gy, indices, input_shape):
    """Reference max_pool2d gradient: scatter-add of gy at the flat indices of each plane."""
    gy = np.asarray(gy, dtype=np.float64)
    indices = np.asarray(indices)
    shape = tuple(input_shape)
    H, W = shape[-2:]
    gx = np.zeros(shape)
    gx2 = gx.reshape(-1, H * W)
    gy2 = gy.reshape(gx2.shape[0], gy.shape[-2] * gy.shape[-1])
    idx2 = indices.reshape(gy2.shape)
    for t in range(gy2.shape[0]):
        for p in range(gy2.shape[1]):
            gx2[t, idx2[t, p]] += gy2[t, p]
    return gx


def _avg_windows(H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, count_include_pad):
    """Yield (oh, ow, row range, col range, divisor) of every average-pooling window."""
    for oh in range(Ho):
        hs = oh * sh - ph
        he = min(hs + kh, H + ph)
        for ow in range(Wo):
            ws = ow * sw - pw
            we = min(ws + kw, W + pw)
            r0, r1 = max(hs, 0), min(he, H)
            c0, c1 = max(ws, 0), min(we, W)
            if count_include_pad:
                divisor = (he - hs) * (we - ws)
            else:
                divisor = (r1 - r0) * (c1 - c0)
            yield oh, ow, (r0, r1), (c0, c1), divisor


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Reference avg_pool2d (float64)."""
    x, unbatched = _batched(x)
    N, C, H, W = x.shape
    kh, kw, sh, sw, ph, pw, _, _, Ho, Wo = _pool_params(x.shape, kernel_size, stride, padding, 1,
                                                        ceil_mode)
    y = np.zeros((N, C, Ho, Wo))
    for oh, ow, (r0, r1), (c0, c1), divisor in _avg_windows(H, W, kh, kw, sh, sw, ph, pw, Ho, Wo,
                                                            count_include_pad):
        y[:, :, oh, ow] = x[:, :, r0:r1, c0:c1].sum(axis=(2, 3)) / divisor
    return y[0] if unbatched else y


def avg_pool2d_backward(gy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Reference avg_pool2d gradient: each output gradient spread evenly over its real elements."""
    gy = np.asarray(gy, dtype=np.float64)
    shape = tuple(input_shape)
    H, W = shape[-2:]
    kh, kw, sh, sw, ph, pw, _, _, Ho, Wo = _pool_params(shape, kernel_size, stride, padding, 1,
                                                        ceil_mode)
    gx = np.zeros(shape)
    for oh, ow, (r0, r1), (c0, c1), divisor in _avg_windows(H, W, kh, kw, sh, sw, ph, pw, Ho, Wo,
                                                            count_include_pad):
        gx[..., r0:r1, c0:c1] += (gy[..., oh, ow] / divisor)[..., None, None]
    return gx


# ---------------------------------------------------------------------------------------------
# Shared test grids (used by the oracle tests, the gradient checks and the torch agreement tests)
# ---------------------------------------------------------------------------------------------
# conv: id -> (N, C, H, W, K, kh, kw, stride, padding, dilation, groups, bias)
CONV_CASES = {
    "basic3x3": (2, 3, 6, 5, 4, 3, 3, 1, 0, 1, 1, True),
    "pad1_nobias": (2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, False),
    "stride21_pad10_nonsquare": (2, 3, 7, 8, 5, 3, 2, (2, 1), (1, 0), 1, 1, True),
    "dilation21": (2, 2, 8, 7, 3, 3, 3, 1, (2, 1), (2, 1), 1, True),
    "groups2_stride2": (2, 4, 6, 7, 6, 3, 2, 2, 1, 1, 2, True),
    "depthwise": (2, 4, 7, 7, 4, 3, 3, 1, 1, 1, 4, True),
    "depthwise_mult2_dilated": (1, 3, 8, 8, 6, 3, 3, (1, 2), 2, 2, 3, False),
    "pointwise": (3, 4, 5, 6, 5, 1, 1, 1, 0, 1, 1, True),
    "pointwise_groups2": (2, 4, 4, 5, 6, 1, 1, 1, 0, 1, 2, True),
    "1x1_stride2": (2, 3, 7, 6, 4, 1, 1, 2, 0, 1, 1, True),
    "1x1_pad1": (2, 3, 4, 5, 2, 1, 1, 1, 1, 1, 1, False),
    "same_odd": (2, 3, 6, 7, 4, 3, 3, 1, "same", 1, 1, True),
    "same_even_asym": (2, 2, 6, 5, 3, 4, 2, 1, "same", 1, 1, True),
    "same_dilated": (1, 2, 7, 6, 3, 2, 3, 1, "same", (2, 3), 1, False),
    "valid": (2, 3, 5, 6, 2, 2, 3, 1, "valid", 1, 1, True),
    "kernel_equals_input": (2, 2, 4, 3, 3, 4, 3, 1, 0, 1, 1, True),
    "stride_gt_kernel": (1, 2, 9, 9, 2, 2, 2, 3, 0, 1, 1, True),
    "lenet_single_channel": (2, 1, 8, 8, 3, 5, 5, 1, 0, 1, 1, True),
    "kernel_gt_input_padded": (1, 2, 3, 3, 2, 5, 5, 1, 1, 1, 1, True),
}

# max pool: id -> (N, C, H, W, kernel_size, stride, padding, dilation, ceil_mode)
MAX_POOL_CASES = {
    "2x2s2_fastpath": (2, 3, 6, 8, 2, 2, 0, 1, False),
    "2x2s2_odd_floor": (2, 2, 7, 5, 2, 2, 0, 1, False),
    "2x2s2_odd_ceil": (2, 2, 7, 5, 2, 2, 0, 1, True),
    "2x2s2_pad1": (1, 2, 6, 6, 2, 2, 1, 1, False),
    "3x3s2_overlap": (2, 3, 7, 7, 3, 2, 0, 1, False),
    "3x3s2_pad1_ceil": (2, 2, 8, 6, 3, 2, 1, 1, True),
    "3x3s1_pad1": (1, 3, 5, 6, 3, 1, 1, 1, False),
    "dilation2": (2, 2, 9, 8, 3, 1, 1, 2, False),
    "dilation_ceil_asym": (1, 2, 9, 10, (3, 2), (2, 3), (1, 1), (2, 1), True),
    "nonsquare": (2, 2, 6, 7, (2, 3), (1, 2), (1, 0), 1, False),
    "global": (2, 3, 4, 5, (4, 5), 1, 0, 1, False),
    "ceil_drops_last_window": (1, 2, 5, 5, 2, 2, 1, 1, True),
    "ceil_kernel_exceeds_input": (1, 2, 2, 2, 3, 2, 0, 1, True),
    "1x1_stride2_ceil": (1, 2, 5, 5, 1, 2, 0, 1, True),
}

# avg pool: id -> (N, C, H, W, kernel_size, stride, padding, ceil_mode, count_include_pad)
AVG_POOL_CASES = {
    "2x2s2": (2, 3, 6, 8, 2, 2, 0, False, True),
    "2x2s2_odd_ceil": (2, 2, 7, 5, 2, 2, 0, True, True),
    "2x2s2_odd_ceil_nopad_count": (2, 2, 7, 5, 2, 2, 0, True, False),
    "3x3s2_pad1": (2, 3, 7, 7, 3, 2, 1, False, True),
    "3x3s2_pad1_nocount": (2, 3, 7, 7, 3, 2, 1, False, False),
    "3x3s2_pad1_ceil": (2, 2, 8, 6, 3, 2, 1, True, True),
    "3x3s2_pad1_ceil_nocount": (2, 2, 8, 6, 3, 2, 1, True, False),
    "3x3s1_pad1_nocount": (1, 3, 5, 6, 3, 1, 1, False, False),
    "nonsquare_ceil": (1, 2, 6, 7, (2, 3), (1, 2), (1, 0), True, True),
    "ceil_drops_last_window": (1, 2, 5, 5, 2, 2, 1, True, True),
    "ceil_drops_last_window_nocount": (1, 2, 5, 5, 2, 2, 1, True, False),
    "ceil_kernel_exceeds_input": (1, 2, 2, 2, 3, 2, 0, True, True),
}
