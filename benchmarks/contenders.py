"""The contenders of the benchmarks, and the reference they are checked against.

Each factory takes one case's inputs (benchmarks/cases.py) and returns the calls to time, keyed by
contender name: cnnext, a plain numpy im2col written here, PyTorch with NCHW tensors ("torch") and with
channels_last tensors ("torch-CL", PyTorch's fastest CPU layout), numpy's GEMM as the yardstick,
cnnext.nn against torch.nn, and learn_dl's own code loaded from its file. Forward calls return the
output; forward+backward calls return (output, gradients). The reference is tests/naive_oracle.py, the
suite's one naive float64 oracle (``naive_oracle()``).
"""
import importlib.util
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from _harness import check
from cases import DTYPES

ORACLE = Path(__file__).resolve().parent.parent / "tests" / "naive_oracle.py"


def naive_oracle():
    """tests/naive_oracle.py as a module (the checkout's, loaded from its path), or None when the
    benchmarks run without the tests beside them."""
    if not ORACLE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("naive_oracle", ORACLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def traced(name):
    """Whether contender ``name`` gets a memory figure: not PyTorch's (its allocator is invisible to
    tracemalloc), nor the GEMM yardstick's."""
    return not name.startswith("torch") and name != "gemm"


# --------------------------------------------------------------------------------------------------
# Plain numpy: sliding_window_view + tensordot (an im2col without any loop over pixels)
# --------------------------------------------------------------------------------------------------
def _np_windows(x, kh, kw, stride, padding):
    """(N, C, Ho, Wo, kh, kw) view of the zero-padded input's windows."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def np_conv2d(x, w, b, stride, padding):
    K, _, kh, kw = w.shape
    win = _np_windows(x, kh, kw, stride, padding)
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, K)
    y += b
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def np_conv2d_backward(gy, x, w, stride, padding):
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    Ho, Wo = gy.shape[2:]
    win = _np_windows(x, kh, kw, stride, padding)
    gw = np.tensordot(gy, win, axes=([0, 2, 3], [0, 2, 3]))  # (K, C, kh, kw)
    gb = gy.sum(axis=(0, 2, 3))
    dcols = np.tensordot(gy, w, axes=([1], [0]))  # (N, Ho, Wo, C, kh, kw)
    gxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    for i in range(kh):  # col2im: one strided add per kernel tap
        for j in range(kw):
            gxp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    gx = gxp[:, :, padding:padding + H, padding:padding + W] if padding else gxp
    return np.ascontiguousarray(gx), gw, gb


def np_max_pool2d(x, k, s, return_indices=False):
    N, C = x.shape[:2]
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    Ho, Wo = win.shape[2:4]
    flat = win.reshape(N, C, Ho, Wo, k * k)  # copies: the pooling im2col
    if not return_indices:
        return flat.max(axis=-1)
    arg = flat.argmax(axis=-1)
    return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], arg


def np_max_pool2d_backward(gy, arg, x_shape, k, s):
    gx = np.zeros(x_shape, dtype=gy.dtype)
    Ho, Wo = gy.shape[2:]
    for i in range(k):
        for j in range(k):
            gx[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s] += \
                np.where(arg == i * k + j, gy, 0)
    return gx


# --------------------------------------------------------------------------------------------------
# conv2d and max_pool2d
# --------------------------------------------------------------------------------------------------
def conv_contenders(libs, x, w, b, gy, s, p):
    """({name: forward}, {name: forward+backward returning (y, (grad_input, grad_weight, grad_bias))})."""
    F = libs.cnnext.functional
    fwd = {"cnnext": lambda: F.conv2d(x, w, b, s, p),
           "numpy": lambda: np_conv2d(x, w, b, s, p)}
    both = {"cnnext": lambda: (F.conv2d(x, w, b, s, p), F.conv2d_backward(gy, x, w, s, p, 1, 1)),
            "numpy": lambda: (np_conv2d(x, w, b, s, p), np_conv2d_backward(gy, x, w, s, p))}
    torch = libs.torch
    if torch is not None:
        tf = torch.nn.functional
        tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
        cl = torch.channels_last
        cx, cw, cgy = (a.contiguous(memory_format=cl) for a in (tx, tw, tgy))
        gx_, gw_, gb_ = (a.clone().requires_grad_() for a in (tx, tw, tb))
        # clone() keeps the memory format: these stay channels_last
        cgx, cgw, cgb = (a.clone().requires_grad_() for a in (cx, cw, tb))

        def t_fwd(xx=tx, ww=tw):
            with torch.no_grad():
                return tf.conv2d(xx, ww, tb, s, p)

        def t_both(xx=gx_, ww=gw_, bb=gb_, g=tgy):
            y = tf.conv2d(xx, ww, bb, s, p)
            return y, torch.autograd.grad(y, (xx, ww, bb), g)

        fwd["torch"] = t_fwd
        fwd["torch-CL"] = lambda: t_fwd(cx, cw)
        both["torch"] = t_both
        both["torch-CL"] = lambda: t_both(cgx, cgw, cgb, cgy)
    return fwd, both


def pool_contenders(libs, x, gy, k, s):
    """({name: forward}, {name: forward+backward returning (y, grad_input)}) of max_pool2d."""
    F = libs.cnnext.functional

    def c_both():
        y, idx = F.max_pool2d(x, k, s, return_indices=True)
        return y, F.max_pool2d_backward(gy, idx, x.shape)

    def n_both():
        y, arg = np_max_pool2d(x, k, s, return_indices=True)
        return y, np_max_pool2d_backward(gy, arg, x.shape, k, s)

    fwd = {"cnnext": lambda: F.max_pool2d(x, k, s), "numpy": lambda: np_max_pool2d(x, k, s)}
    both = {"cnnext": c_both, "numpy": n_both}
    torch = libs.torch
    if torch is not None:
        tf = torch.nn.functional
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        cx, cgy = (a.contiguous(memory_format=torch.channels_last) for a in (tx, tgy))
        gx_ = tx.clone().requires_grad_()
        cgx = cx.detach().clone(memory_format=torch.channels_last).requires_grad_()

        def t_fwd(xx=tx):
            with torch.no_grad():
                return tf.max_pool2d(xx, k, s)

        def t_both(xx=gx_, g=tgy):
            y = tf.max_pool2d(xx, k, s)
            return y, torch.autograd.grad(y, xx, g)[0]

        fwd["torch"] = t_fwd
        fwd["torch-CL"] = lambda: t_fwd(cx)
        both["torch"] = t_both
        both["torch-CL"] = lambda: t_both(cgx, cgy)
    return fwd, both


class Gemm:
    """A square numpy matmul with a preallocated output: the machine's GEMM rate at one dtype."""

    def __init__(self, dname, quick):
        self.n = 512 if quick else 1024
        rng = np.random.default_rng(1)
        dt = DTYPES[dname]
        self.a = rng.standard_normal((self.n, self.n)).astype(dt)
        self.b = rng.standard_normal((self.n, self.n)).astype(dt)
        self.c = np.empty((self.n, self.n), dtype=dt)
        self.flops = 2.0 * self.n ** 3

    def __call__(self):
        return np.matmul(self.a, self.b, out=self.c)


# --------------------------------------------------------------------------------------------------
# LeNet-5 (cnnext.nn, torch.nn) and learn_dl
# --------------------------------------------------------------------------------------------------
def lenet_torch(torch, dt):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10)).to(dt)


def lenet_cnnext(dname):
    """The cnnext.nn LeNet-5 in ``dname``; raises ImportError/AttributeError until cnnext.nn exists."""
    import cnnext.nn as cnn

    dt = DTYPES[dname]
    return cnn.Sequential(
        cnn.Conv2d(1, 6, 5, dtype=dt), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(6, 16, 5, dtype=dt), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Flatten(), cnn.Linear(256, 120, dtype=dt), cnn.ReLU(), cnn.Linear(120, 84, dtype=dt), cnn.ReLU(),
        cnn.Linear(84, 10, dtype=dt))


def lenet_contenders(libs, dname, x, target, notes):
    """({name: forward}, {name: train step}) of LeNet-5 on a batch, cnnext.nn and torch.nn with the
    same weights where cnnext.nn loads torch's state_dict (the forward outputs are then checked)."""
    import cnnext.nn as cnn
    import cnnext.optim as coptim

    model = lenet_cnnext(dname)
    crit = cnn.CrossEntropyLoss()
    opt = coptim.SGD(model.parameters(), lr=0.01)

    def c_fwd():
        return model(x)

    def c_step():
        opt.zero_grad()
        out = model(x)
        loss = crit(out, target)
        model.backward(crit.backward())
        opt.step()
        return loss

    fwd, step = {"cnnext": c_fwd}, {"cnnext": c_step}
    torch = libs.torch
    if torch is not None:
        tmodel = lenet_torch(torch, torch.float32 if dname == "float32" else torch.float64)
        tcrit = torch.nn.CrossEntropyLoss()
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(x), torch.from_numpy(target)
        try:
            model.load_state_dict({k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()})
            with torch.no_grad():
                check(f"lenet {dname} forward vs torch", c_fwd(), tmodel(tx).numpy(), DTYPES[dname], notes)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            notes.append(f"weights not shared with torch ({type(exc).__name__}: {exc}); outputs not compared")

        def t_fwd():
            with torch.no_grad():
                return tmodel(tx)

        def t_step():
            topt.zero_grad()
            loss = tcrit(tmodel(tx), ty)
            loss.backward()
            topt.step()
            return loss

        fwd["torch"], step["torch"] = t_fwd, t_step
    return fwd, step



def load_learn_dl(path):
    """learn_dl's cnn.py, loaded from ``path`` as a module (never copied into this repository)."""
    spec = importlib.util.spec_from_file_location("learn_dl_reference_cnn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def learn_dl_contenders(libs, ref, args, x, sens):
    """({name: forward}, {name: forward+backward}) of cnnext.ConvLayer and, with ``ref`` (learn_dl's
    module), learn_dl's ConvLayer with the same weights; returns the layers too, for the checks."""
    cnnext = libs.cnnext
    layer = cnnext.ConvLayer(*args, cnnext.ReluActivator(), 0.01)
    fwd = {"cnnext": lambda: layer.forward(x)}
    both = {"cnnext": lambda: (layer.forward(x), layer.backward(x, sens, cnnext.IdentityActivator()))}
    rlayer = None
    if ref is not None:
        rlayer = ref.ConvLayer(*args, ref.ReluActivator(), 0.01)
        for f_c, f_r in zip(layer.filters, rlayer.filters):  # same weights: compare outputs once
            f_r.weights = np.array(f_c.weights, dtype=np.float64)
            f_r.bias = float(f_c.bias)
        fwd["learn_dl"] = lambda: rlayer.forward(x)
        both["learn_dl"] = lambda: (rlayer.forward(x), rlayer.backward(x, sens, ref.IdentityActivator()))
    return fwd, both, layer, rlayer
