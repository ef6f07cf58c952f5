"""conv2d's dispatch: algorithm choice, chunk planning and kernel calls, for checked arguments.

Entry points (for ``cnnext.functional.conv`` and for layers that validated their input already):

- ``forward_checked(x, weight, bias, g)``
- ``backward_checked(x, weight, grad_output, g, need_input, need_weight, out_weight=None, out_bias=None)``

where ``g`` is the ``ConvGeometry`` returned by ``cnnext._validation.check_conv2d`` for these arrays,
and every array is C-contiguous in one float dtype (float32 or float64). Nothing here validates again.

Algorithms: 'gemm' (im2col + one BLAS GEMM per chunk of the batch, chunks bounded by the workspace
cap; 1x1 stride-1 convolutions skip the im2col), 'direct' (the Cython direct kernels, for thin
problems such as depthwise), 'small' (the C kernels for one small sample), 'winograd' (F(4x4, 3x3)
for 3x3 stride-1 convolutions). ``_algorithm`` chooses; ``cnnext.force_conv_algorithm`` overrides.
"""
import contextlib
import functools

import numpy as np

from cnnext import _threads
from cnnext._config import get_conv_algorithm, get_workspace_limit, threads_for
from cnnext._kernels import _direct, _im2col, _winograd

__all__ = ["forward_checked", "backward_checked"]


def backward_checked(x, weight, gy, g, need_input, need_weight, out_weight=None, out_bias=None):
    """conv2d's gradients for arguments already checked against geometry ``g`` (x and gy 4-D, all
    C-contiguous in one float dtype): (grad_input or None, grad_weight or None, grad_bias).

    out_weight, out_bias: optional C-contiguous arrays of the gradients' shapes and dtype that
    receive them (then returned); the kernels write into them directly where they can."""
    gx, gw, gb = _backward_kernels(x, weight, gy, g, need_input, need_weight, out_weight, out_bias)
    if out_weight is not None and gw is not None and gw is not out_weight:
        out_weight[...] = gw
        gw = out_weight
    if gb is None:
        gb = gy.sum(axis=(0, 2, 3), out=out_bias)
    return gx, gw, gb


def _algorithm(g, dtype):
    """'direct', 'small', 'gemm' or 'winograd' for this geometry and dtype (a forced choice wins;
    see force_conv_algorithm; a forced 'winograd' falls back to 'gemm' where it does not apply).
    'small' is the direct algorithm computed by the small-convolution kernels (_small_direct).

    im2col + GEMM pays for writing and re-reading the column matrix, and BLAS runs thin matrices
    slowly. 'direct' is chosen when each group's GEMM is thin: at most 4 filters per group with
    groups > 1 (depthwise and the like; measured 3x faster on a 64-channel depthwise 3x3), or, in
    float64, at most 8 filters per group with a reduction (channels per group * kh * kw) of at most
    32, such as LeNet's first layer. Measured fwd+bwd on LeNet conv1, direct / GEMM time: float64
    0.65 on one 1x28x28 sample, 0.7-0.77 on batches of 4-64 (1 and 2 threads); but float32 1.04 on
    one sample and 1.3-2.0 on batches, where OpenBLAS's float32 GEMM is twice as fast; 1.0 and
    slower on LeNet's second layer (16 filters over 150 taps).
    """
    return _choice(g, dtype)[0]


def _choice(g, dtype):
    """(_algorithm's choice, True when it is the automatic one rather than forced).

    The workspace cap is checked here, not in the cached _auto_algorithm (it may change): the
    direct kernels need one sample's padded planes to fit (else 'gemm', also when forced), and so
    does the automatic choice of Winograd for one sample's transforms (a forced 'winograd' runs
    with one-sample chunks whatever the cap)."""
    forced = get_conv_algorithm()
    limit = get_workspace_limit()
    itemsize = np.dtype(dtype).itemsize
    if forced == "auto":
        algorithm = _auto_algorithm(g, dtype == np.float64)
        if algorithm == "winograd" and _winograd_sample_bytes(g, itemsize) > limit:
            algorithm = "gemm"
    elif forced == "winograd":
        return ("winograd" if _winograd_eligible(g) else "gemm"), False
    else:
        algorithm = "small" if forced == "direct" and _small_direct(g) else forced
    if algorithm == "small" and _small_padded_bytes(g, itemsize) > limit:
        algorithm = "direct"
    if algorithm == "direct" and _direct_sample_bytes(g, itemsize) > limit:
        algorithm = "gemm"
    return algorithm, forced == "auto"


def _all_finite(a):
    """True when no element of ``a`` is NaN or infinite (two reductions, no temporary array)."""
    return a.size == 0 or bool(np.isfinite(a.max()) and np.isfinite(a.min()))


@functools.lru_cache(maxsize=256)
def _auto_algorithm(g, double):
    """_algorithm's 'auto' choice, cached per geometry and precision (layers call it with the
    same ones)."""
    if g.pointwise:
        return "gemm"
    if _winograd_eligible(g) and any(min(g.Ho, g.Wo) >= size and min(g.C, g.K) >= channels
                                     for size, channels in _WINOGRAD_AUTO):
        return "winograd"
    Kg = g.K // g.groups
    thin = (g.groups > 1 and Kg <= 4) or (double and Kg <= 8 and (g.C // g.groups) * g.kh * g.kw <= 32)
    if thin and _direct_padding_pays(g):
        return "small" if _small_direct(g) else "direct"
    return "gemm"


def _direct_padding_pays(g):
    """False when the direct kernels' zero-padded copy of the input would be larger than im2col's
    column matrix (both per channel): huge padding or a dilation far past the input (e.g.
    padding='same' with dilation 1024 on a 32x32 input, 4.2 million elements per plane against
    9 * 1024), where the direct algorithm would mostly move zeros."""
    if g.pt == g.pb == g.pl == g.pr == 0:
        return True
    return (g.H + g.pt + g.pb) * (g.W + g.pl + g.pr) <= g.kh * g.kw * g.Ho * g.Wo


def _direct_sample_bytes(g, itemsize):
    """One sample's zero-padded planes for the direct kernels: the input (forward, grad_weight) or,
    at stride 1, grad_output padded for the "full" correlation (grad_input), whichever is larger;
    0 when neither needs padding. The passes pad that many samples at a time."""
    return max(_padded_input_bytes(g, itemsize, 1), _padded_grad_output_bytes(g, itemsize, 1))


def _padded_input_bytes(g, itemsize, n):
    if g.pt == g.pb == g.pl == g.pr == 0:
        return 0
    return n * g.C * (g.H + g.pt + g.pb) * (g.W + g.pl + g.pr) * itemsize


def _padded_grad_output_bytes(g, itemsize, n):
    if g.sh != 1 or g.sw != 1:
        return 0  # the strided grad_input scatters into grad_input directly
    eh, ew = (g.kh - 1) * g.dh, (g.kw - 1) * g.dw
    if eh == g.pt == g.pb and ew == g.pl == g.pr:
        return 0
    return n * g.K * (g.Ho + 2 * eh - g.pt - g.pb) * (g.Wo + 2 * ew - g.pl - g.pr) * itemsize


def _small_padded_bytes(g, itemsize):
    """The small kernels' padded copies (of the input, or grad_output for grad_input), the largest."""
    return itemsize * max(g.N * g.C * (g.Ho + g.kh - 1) * (g.Wo + g.kw - 1),
                          g.N * g.K * (g.H + g.kh - 1) * (g.W + g.kw - 1))


def _winograd_sample_bytes(g, itemsize):
    """The workspace of one sample's Winograd transforms (the smallest chunk)."""
    tiles = ((g.Ho + 3) // 4) * ((g.Wo + 3) // 4)
    return _winograd_workspace_bytes(g.C, g.K, _winograd_pitch(tiles), itemsize)


# Target size of one chunk's column matrix plus GEMM output: bounded so the workspace stays small,
# large enough for an efficient GEMM (on the 2-core dev machine 4 to 256 MiB measured within noise
# on cifar; 16 MiB was 10-20% faster than 4 MiB on the deep and strided forward passes).
_CACHE_TARGET_BYTES = 16 * 2**20


def _gemm_plan(g, itemsize):
    """(samples, output rows) per chunk of im2col + GEMM, whose workspace is the chunk's column
    matrix plus its GEMM output: whole samples, as many as fit the cache target and the workspace
    cap (at least one) when one sample fits the cap, else one sample at a time in bands of as many
    output rows as fit it (at least one)."""
    per_row = (g.C * g.kh * g.kw + g.K) * g.Wo * itemsize
    per_sample = per_row * g.Ho
    limit = get_workspace_limit()
    if per_sample <= limit:
        budget = min(limit, _CACHE_TARGET_BYTES) // max(per_sample, 1)
        return int(max(1, min(g.N, budget))), g.Ho
    return 1, int(max(1, min(g.Ho, limit // max(per_row, 1))))


def _gemm_chunks(g, samples, rows):
    """(first sample, samples, first row, end row) of each chunk, in order."""
    if rows == g.Ho:
        return [(n0, min(samples, g.N - n0), 0, g.Ho) for n0 in range(0, g.N, samples)]
    return [(n, 1, r0, min(g.Ho, r0 + rows)) for n in range(g.N) for r0 in range(0, g.Ho, rows)]


def _head(buf, rows, cols):
    """A C-contiguous (rows, cols) view on the start of a flat workspace buffer."""
    return buf[: rows * cols].reshape(rows, cols)


def _im2col_args(g, r0=0, r1=None):
    """im2col/col2im's geometry arguments for output rows [r0, r1) (default all): a band of rows
    is the convolution whose top padding is r0 * stride less."""
    r1 = g.Ho if r1 is None else r1
    return (g.kh, g.kw, g.sh, g.sw, g.pt - r0 * g.sh, g.pl, g.dh, g.dw, r1 - r0, g.Wo)


def forward_checked(x, weight, bias, g):
    """conv2d for arguments already checked: x (N, C, H, W), weight, bias (or None) C-contiguous in
    one float dtype, ``g`` their ConvGeometry (from ``check_conv2d``). Returns y (N, K, Ho, Wo)."""
    dtype = x.dtype
    y = np.empty(g.output_shape, dtype=dtype)
    if y.size == 0:
        return y
    nt = threads_for(g.N * g.C * g.kh * g.kw * g.Ho * g.Wo)  # the column matrix's size
    has_bias = bias is not None
    b = bias if has_bias else np.empty(0, dtype=dtype)
    algorithm, automatic = _choice(g, dtype)
    if algorithm == "small":
        _direct.small_conv(x, g.pt, g.pl, weight, False, y, b, has_bias)
        return y
    if algorithm == "direct":
        for n0, n1, xp in _padded_chunks(x, g.pt, g.pb, g.pl, g.pr):
            _direct.direct_forward(xp, weight, y[n0:n1], b, has_bias, g.sh, g.sw, g.dh, g.dw,
                                   g.groups, nt)
        return y
    if algorithm == "winograd":
        if not automatic:
            _winograd_conv(x, weight, False, b, has_bias, y, g.pt, g.pl, nt)
            return y
        with np.errstate(over="ignore", invalid="ignore"):
            _winograd_conv(x, weight, False, b, has_bias, y, g.pt, g.pl, nt)
        if _all_finite(y):
            return y
        # Winograd overflowed (see the note by _WINOGRAD_AUTO): again by im2col + GEMM below
    G, K, P = g.groups, g.K, g.Ho * g.Wo
    Kg, Cg = K // G, g.C // G
    R = Cg * g.kh * g.kw
    w = weight.reshape(G, Kg, R)
    if g.pointwise:
        # 1x1, stride 1, no padding: the input already is the column matrix of each sample.
        np.matmul(w, x.reshape(g.N, G, Cg, P), out=y.reshape(g.N, G, Kg, P))
        if has_bias:
            y += b.reshape(1, K, 1, 1)
        return y
    samples, rows = _gemm_plan(g, dtype.itemsize)
    cols = np.empty(G * R * samples * rows * g.Wo, dtype=dtype)
    out = np.empty(K * samples * rows * g.Wo, dtype=dtype)
    y3 = y.reshape(g.N, K, P)
    for n0, nc, r0, r1 in _gemm_chunks(g, samples, rows):
        m = nc * (r1 - r0) * g.Wo
        c = _head(cols, G * R, m)
        o = _head(out, K, m)
        _im2col.im2col(x, c, n0, *_im2col_args(g, r0, r1), nt)
        np.matmul(w, c.reshape(G, R, m), out=o.reshape(G, Kg, m))
        if r1 - r0 == g.Ho:
            _im2col.gemm_to_nchw(o, y3, n0, b, has_bias, nt)
        elif has_bias:
            np.add(o.reshape(K, r1 - r0, g.Wo), b.reshape(K, 1, 1), out=y[n0, :, r0:r1])
        else:
            np.copyto(y[n0, :, r0:r1], o.reshape(K, r1 - r0, g.Wo))
    return y


def _backward_kernels(x, weight, gy, g, need_input, need_weight, out_weight=None, out_bias=None):
    """(grad_input or None, grad_weight or None, grad_bias or None). The direct kernels write
    grad_weight into ``out_weight`` when given (the other algorithms return a new array) and, with
    grad_weight, compute grad_bias too (into ``out_bias`` when given); otherwise it is None."""
    dtype = x.dtype
    K = g.K
    algorithm, automatic = _choice(g, dtype)
    # Winograd and direct at stride 1 write every element of grad_input; the others accumulate
    gx = None
    if need_input:
        overwrites = g.N * K > 0 and (algorithm in ("winograd", "small")
                                      or (algorithm == "direct" and g.sh == g.sw == 1))
        gx = (np.empty if overwrites else np.zeros)(g.input_shape, dtype=dtype)
    if g.N == 0 or K == 0:
        return gx, (np.zeros(weight.shape, dtype=dtype) if need_weight else None), None
    nt = threads_for(g.N * g.C * g.kh * g.kw * g.Ho * g.Wo)
    gw = None
    if algorithm == "small":
        return _small_direct_backward(x, weight, gy, gx, g, need_input, need_weight, out_weight,
                                      out_bias)
    if algorithm == "direct":
        if need_input:
            if g.sh == 1 and g.sw == 1:
                _direct_grad_input_full(gy, weight, gx, g, nt)
            else:
                _direct.direct_grad_input(gy, weight, gx, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw,
                                          g.groups, nt)
        gb = None
        if need_weight:
            gw = np.empty(weight.shape, dtype=dtype) if out_weight is None else out_weight
            gb = np.empty(K, dtype=dtype) if out_bias is None else out_bias
            parts = None
            for n0, n1, xp in _padded_chunks(x, g.pt, g.pb, g.pl, g.pr):
                if n0 == 0:
                    _direct.direct_grad_weight(gy[n0:n1], xp, gw, gb, True, g.sh, g.sw, g.dh, g.dw,
                                               g.groups, nt)
                    continue
                # a later chunk of samples (see _padded_chunks): its sums are added on in order
                parts = parts or (np.empty_like(gw), np.empty_like(gb))
                _direct.direct_grad_weight(gy[n0:n1], xp, parts[0], parts[1], True, g.sh, g.sw,
                                           g.dh, g.dw, g.groups, nt)
                gw += parts[0]
                gb += parts[1]
        return gx, gw, gb
    if algorithm == "winograd":
        with np.errstate(over="ignore", invalid="ignore") if automatic else contextlib.nullcontext():
            if need_input:
                # dx is the stride-1 3x3 convolution of dy padded by 2 - p, with W'[c, k] = W[k, c, ::-1, ::-1]
                _winograd_conv(gy, weight, True, np.empty(0, dtype=dtype), False, gx, 2 - g.pt, 2 - g.pl, nt)
            if need_weight:
                gw = _winograd_grad_weight(x, gy, g.pt, g.pl, nt)
        if automatic:
            # a gradient that is not all finite is computed again by GEMM (see by _WINOGRAD_AUTO)
            redo_input = need_input and not _all_finite(gx)
            redo_weight = need_weight and not _all_finite(gw)
            if redo_input or redo_weight:
                if redo_input:
                    gx[...] = 0  # col2im accumulates
                _, gw2, _ = _gemm_backward(x, weight, gy, g, redo_input, redo_weight, gx, nt)
                gw = gw2 if redo_weight else gw
        return gx, gw, None
    return _gemm_backward(x, weight, gy, g, need_input, need_weight, gx, nt)


def _gemm_backward(x, weight, gy, g, need_input, need_weight, gx, nt):
    """_backward_kernels by im2col + GEMM: grad_input accumulated into ``gx`` (zeroed, or None
    when not needed), grad_weight a new array; returns (gx, grad_weight or None, None)."""
    dtype = x.dtype
    K = g.K
    G, P = g.groups, g.Ho * g.Wo
    Kg, Cg = K // G, g.C // G
    R = Cg * g.kh * g.kw
    w = weight.reshape(G, Kg, R)
    wt = np.ascontiguousarray(w.transpose(0, 2, 1)) if need_input else None
    samples, rows = _gemm_plan(g, dtype.itemsize)
    chunks = _gemm_chunks(g, samples, rows)
    cols = np.empty(G * R * samples * rows * g.Wo, dtype=dtype)
    gbuf = np.empty(K * samples * rows * g.Wo, dtype=dtype)
    # dW^T = cols @ dY^T, (R, Kg) per group: OpenBLAS runs this orientation 1.1-2.5x faster than
    # dY @ cols^T on the reference shapes (the long inner dimension is contiguous in both operands)
    gwt = np.empty((G, R, Kg), dtype=dtype) if need_weight else None
    tmp = np.empty_like(gwt) if need_weight and len(chunks) > 1 else None
    gy3 = gy.reshape(g.N, K, P)
    for i, (n0, nc, r0, r1) in enumerate(chunks):
        m = nc * (r1 - r0) * g.Wo
        c = _head(cols, G * R, m)
        d = _head(gbuf, K, m)
        if r1 - r0 == g.Ho:
            _im2col.nchw_to_gemm(gy3, d, n0, nt)
        else:
            np.copyto(d.reshape(K, r1 - r0, g.Wo), gy[n0, :, r0:r1])
        d3 = d.reshape(G, Kg, m)
        if need_weight:
            _im2col.im2col(x, c, n0, *_im2col_args(g, r0, r1), nt)
            c3 = c.reshape(G, R, m)
            if i == 0:
                np.matmul(c3, d3.transpose(0, 2, 1), out=gwt)
            else:
                np.matmul(c3, d3.transpose(0, 2, 1), out=tmp)
                gwt += tmp
        if need_input:
            # the columns are no longer needed: reuse their buffer for d(cols)
            np.matmul(wt, d3, out=c.reshape(G, R, m))
            _im2col.col2im(c, gx, n0, *_im2col_args(g, r0, r1), nt)
    gw = np.ascontiguousarray(gwt.transpose(0, 2, 1)).reshape(weight.shape) if need_weight else None
    return gx, gw, None


def _pad_planes(a, top, bottom, left, right, out=None):
    """``a`` (N, C, H, W) zero-padded by the given amounts on each side (a negative amount crops);
    ``a`` itself when all are 0. ``out``: a flat buffer to write it into (large enough)."""
    if top == bottom == left == right == 0:
        return a
    N, C, H, W = a.shape
    shape = (N, C, H + top + bottom, W + left + right)
    if out is None:
        out = np.empty(shape, dtype=a.dtype)
    else:
        out = out[: N * C * shape[2] * shape[3]].reshape(shape)
    _direct.pad_planes(a, out, top, left)
    return out


def _padded_chunks(a, top, bottom, left, right):
    """Yield (n0, n1, a[n0:n1] padded as _pad_planes pads it) over the batch, in chunks of as many
    samples as fit the workspace cap (at least one), all written into one buffer; one chunk of
    ``a`` itself when nothing is padded."""
    N, C, H, W = a.shape
    sample = C * (H + top + bottom) * (W + left + right) * a.itemsize
    if sample == 0 or top == bottom == left == right == 0:
        yield 0, N, a
        return
    n = int(max(1, min(N, get_workspace_limit() // sample)))
    buf = np.empty(n * sample // a.itemsize, dtype=a.dtype)
    for n0 in range(0, N, n):
        n1 = min(N, n0 + n)
        yield n0, n1, _pad_planes(a[n0:n1], top, bottom, left, right, buf)


# Small stride-1 direct convolutions (one LeNet sample: a column matrix under _SMALL_WORK
# elements, one thread anyway) run in the register-blocked C kernels of cnnext/_kernels/_tile_gemm.h where
# the CPU has AVX2+FMA (algorithm 'small'). Measured on LeNet conv1, one float64 sample, forward /
# grad_input / grad_weight (+ grad_bias): 25 / 35 / 42 us in the blocked Cython kernels (built
# for the baseline ISA), 16 / 30 / 20 us here.
_SMALL_WORK = 2**17
_NATIVE_DIRECT = _winograd.tile_gemm_level() == 2


def _small_direct(g):
    return (_NATIVE_DIRECT and g.groups == 1 and g.sh == g.sw == 1 and g.dh == g.dw == 1
            and g.N * g.C * g.kh * g.kw * g.Ho * g.Wo < _SMALL_WORK)


def _small_direct_backward(x, weight, gy, gx, g, need_input, need_weight, out_weight, out_bias):
    """_backward_kernels' direct branch for _small_direct geometries (gx, if any, is overwritten)."""
    gw = gb = None
    if need_input:
        # the "full" correlation of gy, padded by kernel - 1 - padding, with the filters turned
        _direct.small_conv(gy, g.kh - 1 - g.pt, g.kw - 1 - g.pl, weight, True, gx,
                           np.empty(0, dtype=x.dtype), False)
    if need_weight:
        gw = np.empty(weight.shape, dtype=x.dtype) if out_weight is None else out_weight
        gb = np.empty(g.K, dtype=x.dtype) if out_bias is None else out_bias
        _direct.small_grad_weight(x, g.pt, g.pl, gy, gw, gb, True)
    return gx, gw, gb


def _direct_grad_input_full(gy, weight, gx, g, nt):
    """Stride-1 grad_input by the direct kernels: the "full" correlation of gy, padded by
    dilation * (kernel - 1) - padding on each side, with the weights turned by 180 degrees."""
    eh, ew = (g.kh - 1) * g.dh, (g.kw - 1) * g.dw
    for n0, n1, gyp in _padded_chunks(gy, eh - g.pt, eh - g.pb, ew - g.pl, ew - g.pr):
        _direct.direct_grad_input_full(gyp, weight, gx[n0:n1], g.dh, g.dw, g.groups, nt)


# Winograd F(4x4, 3x3) (cnnext/_kernels/_winograd.pyx): 3x3, stride 1, dilation 1, groups 1, any padding.
# It does 4x fewer multiplies than im2col + GEMM, as 36 GEMMs whose inner dimension is only C (K
# for grad_input), which BLAS runs at a lower rate, plus the transforms. All three passes use it:
# forward, grad_input (a convolution of grad_output with the rotated weights) and grad_weight (36
# GEMMs dM @ V^T whose inner dimension is the number of tiles). 'auto' picks it when the output is
# at least `size` on each side and both channel counts are >= `channels`, for one of the pairs in
# _WINOGRAD_AUTO. Measured against im2col + GEMM (2-core dev machine, float32, batch 32, pad 1, one
# thread, CPU time of fwd / bwd): 8 channels 16x16 0.93 / 0.86, 32x32 0.64 / 0.65; 16 channels 8x8
# 0.90 / 1.12, 16x16 0.64 / 0.74; 32 channels 8x8 0.69 / 0.97; 64 channels 8x8 0.81 / 0.92, 32x32
# 0.45 / 0.40; slower (1.0-2.2) on 4x4 and 6x6 outputs and below 32 channels on 8x8.
_WINOGRAD_AUTO = ((16, 8), (8, 32))
# Winograd's transforms scale values up before the products are summed (the input transform by up
# to 100, the output transform by up to 361), so near the top of the float range it overflows to
# inf, and inf - inf to NaN, where im2col + GEMM (products summed directly) stays finite: float32
# inputs of magnitude 1e37 gave NaN everywhere. The automatic choice therefore checks each result
# (the output, grad_input, grad_weight) for a non-finite element, two reductions over it, and
# computes one that has any again by im2col + GEMM, which also gives exactly GEMM's NaN and inf
# where the input holds them (Winograd spreads one NaN over its whole 4x4 output tile). A forced
# 'winograd' is left as it computes.
# Target size of one chunk's transformed input V plus GEMM output M. Each of the threads that share
# the chunks (cnnext/_threads.py) holds one. Measured on the 2-core dev machine at 2 threads,
# fwd+bwd / PyTorch's in the same run: cifar 1-2 MiB 0.63-0.70, 4 MiB 0.81-0.89, 7 MiB 0.76-0.92;
# deep 0.78-0.95 at every size (OpenBLAS runs the grad_weight GEMMs, whose inner dimension is the
# chunk's tile count, erratically slower at some sizes, e.g. cifar's 256 tiles).
_WINOGRAD_CACHE_TARGET_BYTES = 2 * 2**20


# The 36 GEMMs per chunk run in cnnext's own register-blocked kernel (cnnext/_kernels/_tile_gemm.h) with the
# weights packed once per call, where it has AVX2+FMA: at these sizes BLAS spends as long packing
# its operands, on every call, as multiplying (deep's GEMMs: ~20 GFLOP/s in OpenBLAS, 31 in the
# kernel, one thread, float32). Elsewhere (no AVX2, or a compiler without vector extensions) numpy's
# BLAS runs them. Tests switch this to cover both.
_NATIVE_TILE_GEMM = _winograd.tile_gemm_level() == 2


def _winograd_eligible(g):
    return (g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1
            and g.groups == 1)


def _winograd_chunks(N, C, K, Ho, Wo, dtype):
    """(tiles per sample, row pitch, [(first sample, samples), ...]) of the batch's chunks; the
    pitch (the leading dimension the GEMMs see) is the largest chunk's tile count, rounded up to
    TILE_GEMM_PAD.

    As many chunks as the cache target needs, at least 4 when the batch allows, and their count
    rounded up to a multiple of 4 (of 2 below 4), with sizes differing by at most one sample, so
    that 2 or 4 threads get equal shares (deep: 12 chunks of 2-3 samples, not 10 of 3 and one of
    2). The chunks never depend on the thread count: grad_weight sums over them, in their order.
    A chunk's workspace (_winograd_workspace_bytes, with the buffers' row padding) stays within
    the workspace cap unless a chunk is one sample.
    """
    tiles = ((Ho + 3) // 4) * ((Wo + 3) // 4)
    per_sample = 36 * (C + K) * tiles * dtype.itemsize
    budget = max(1, min(get_workspace_limit(), _WINOGRAD_CACHE_TARGET_BYTES) // max(per_sample, 1))
    while True:
        count = max(4, -(-N // budget))
        count = min(N, -(-count // 4) * 4)
        if count < N and count % 2:
            count += 1
        count = max(count, 1)
        bounds = [N * i // count for i in range(count + 1)]
        chunks = [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)]
        largest = max(nc for _, nc in chunks)
        ld = _winograd_pitch(largest * tiles)
        if largest == 1 or _winograd_workspace_bytes(C, K, ld, dtype.itemsize) <= get_workspace_limit():
            return tiles, ld, chunks
        budget = min(budget, largest) - 1  # the padding made it too large: smaller chunks


def _winograd_pitch(tiles):
    """The row pitch for a chunk of ``tiles`` tiles: rounded up to TILE_GEMM_PAD, which the tile
    GEMM reads each row up to."""
    pad = _winograd.TILE_GEMM_PAD
    return -(-tiles // pad) * pad


def _winograd_buffer_columns(rows, ld, itemsize):
    """Columns of a _winograd_buffer: rows * ld, plus the padding that puts its rows 64 bytes past
    a multiple of 4 KiB apart."""
    cols = rows * ld
    return cols + ((64 - cols * itemsize) % 4096) // itemsize


def _winograd_workspace_bytes(C, K, ld, itemsize):
    """Bytes of one thread's _winograd_workspace."""
    return 36 * itemsize * (_winograd_buffer_columns(C, ld, itemsize)
                            + _winograd_buffer_columns(K, ld, itemsize))


def _winograd_buffer(rows, ld, dtype):
    """A (36, >= rows*ld) workspace whose rows start 64 bytes past a multiple of 4 KiB apart.

    The transforms write (or read) 36 runs per plane, one in each row. Rows a multiple of 4 KiB
    apart map to the same few cache sets, so those runs would evict each other; 64 bytes more per
    row spreads them out."""
    return np.empty((36, _winograd_buffer_columns(rows, ld, dtype.itemsize)), dtype=dtype)


def _winograd_workspace(C, K, ld, dtype):
    """One thread's buffers for a chunk's transformed input (C rows) and products (K rows)."""
    return _winograd_buffer(C, ld, dtype), _winograd_buffer(K, ld, dtype)


def _as_gemm(buf, rows, ld, T):
    """The (36, rows, T) matrices, leading dimension ld, at the start of a _winograd_buffer."""
    return buf[:, : rows * ld].reshape(36, rows, ld)[:, :, :T]


def _winograd_conv(x, weight, rotate, bias, has_bias, y, pt, pl, nt):
    """y = conv2d(x, w) (+ bias), 3x3 stride 1, top/left padding pt, pl (may be negative), where
    w is weight, or with rotate the transposed convolution's weight[:, :, ::-1, ::-1] with its
    two channel axes swapped (for grad_input)."""
    N, C = x.shape[:2]
    K, Ho, Wo = y.shape[1:]
    dtype = x.dtype
    native = _NATIVE_TILE_GEMM
    mr = _winograd.TILE_GEMM_MR if native else 1  # rows per packed block (1: plain for BLAS)
    u = np.empty((36, -(-K // mr), C, mr), dtype=dtype)
    _winograd.filter_transform(weight, u, rotate, nt)
    if not native:
        u = u.reshape(36, K, C)
    tiles, ld, chunks = _winograd_chunks(N, C, K, Ho, Wo, dtype)

    def job(ws, i, threads):
        vbuf, mbuf = ws
        n0, nc = chunks[i]
        T = nc * tiles
        _winograd.input_transform(x, vbuf, n0, pt, pl, Ho, Wo, nc, ld, threads)
        if native:
            _winograd.tile_gemm(u, vbuf, mbuf, K, T, ld, threads)
        else:
            _threads.matmul(u, _as_gemm(vbuf, C, ld, T), _as_gemm(mbuf, K, ld, T), threads)
        _winograd.output_transform(mbuf, y, n0, bias, has_bias, nc, ld, threads)

    for _ in _threads.map_chunks(job, len(chunks), nt, lambda: _winograd_workspace(C, K, ld, dtype),
                                  _winograd_workspace_bytes(C, K, ld, dtype.itemsize),
                                  uses_blas=not native):
        pass


def _winograd_grad_weight(x, gy, pt, pl, nt):
    """grad_weight (K, C, 3, 3) of y = conv2d(x, weight), 3x3 stride 1, top/left padding pt, pl:
    dU[e] = sum over tiles of dM[e] @ V[e]^T (V: x's input transform, dM: gy's adjoint output
    transform), then grad_weight = G^T dU G. The chunks' dU are summed in chunk order."""
    N, C = x.shape[:2]
    K, Ho, Wo = gy.shape[1:]
    dtype = x.dtype
    tiles, ld, chunks = _winograd_chunks(N, C, K, Ho, Wo, dtype)
    native = _NATIVE_TILE_GEMM

    def job(ws, i, threads):
        vbuf, mbuf = ws
        n0, nc = chunks[i]
        _winograd.input_transform(x, vbuf, n0, pt, pl, Ho, Wo, nc, ld, threads)
        _winograd.output_grad_transform(gy, mbuf, n0, nc, ld, threads)
        T = nc * tiles
        du = np.empty((36, K, C), dtype=dtype)
        if native:
            _winograd.tile_gemm_grad(mbuf, vbuf, du, T, ld, threads)
            return du
        return _threads.matmul(_as_gemm(mbuf, K, ld, T), _as_gemm(vbuf, C, ld, T).transpose(0, 2, 1),
                                du, threads)

    du = None
    for part in _threads.map_chunks(job, len(chunks), nt, lambda: _winograd_workspace(C, K, ld, dtype),
                                     _winograd_workspace_bytes(C, K, ld, dtype.itemsize),
                                     uses_blas=not native):
        if du is None:
            du = part
        else:
            du += part
    gw = np.empty((K, C, 3, 3), dtype=dtype)
    _winograd.filter_grad_transform(du, gw, nt)
    return gw
