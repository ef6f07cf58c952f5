"""Normalisation layers: ``BatchNorm1d`` and ``BatchNorm2d``, as in torch.nn.

State (``weight``, ``bias``; buffers ``running_mean``, ``running_var``, ``num_batches_tracked``)
has PyTorch's names, so state_dicts move both ways. The arithmetic is
``cnnext.functional.batch_norm`` and its backward (one fused kernel pass per direction).
"""
import numpy as np

from cnnext._validation import check_bool, check_dtype, check_float, check_int
from cnnext.functional import normalization as _bn
from cnnext.nn.module import Module, Parameter, own_methods

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    _ndims = ()
    _expected = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own_methods(cls)  # errors name BatchNorm2d.__init__, not _BatchNorm.__init__

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(num_features, "num_features", name, minimum=1)
        self.eps = check_float(eps, "eps", name, minimum=0.0)
        self.momentum = None if momentum is None else check_float(momentum, "momentum", name, 0.0, 1.0)
        check_bool(affine, "affine", name)
        check_bool(track_running_stats, "track_running_stats", name)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = check_dtype(dtype, "dtype", name)
        C = self.num_features
        self.weight = Parameter(np.ones(C, self.dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(C, self.dtype)) if self.affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, self.dtype))
            self.register_buffer("running_var", np.ones(C, self.dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(b, None)
        self._x = None
        self._saved = None

    def reset_running_stats(self):
        """Running mean to 0, running variance to 1, ``num_batches_tracked`` to 0."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        """Normalise with the batch's statistics (training, or no running statistics) or the
        running ones (evaluation); in training the running statistics are updated in place."""
        name = type(self).__name__
        if isinstance(x, np.ndarray) and x.dtype != self.dtype and x.dtype.kind in "fiub":
            x = x.astype(self.dtype)
        if getattr(x, "ndim", None) not in self._ndims:
            raise ValueError(f"{name}: input must be {self._expected}, got "
                             f"{getattr(x, 'ndim', type(x).__name__)}-D input of shape {getattr(x, 'shape', None)}")
        training = self.training or self.running_mean is None
        use_running = not self.training or self.track_running_stats
        y, mean, invstd = _bn._batch_norm_forward(
            x, self.running_mean if use_running else None, self.running_var if use_running else None,
            self.weight.data if self.affine else None, self.bias.data if self.affine else None,
            training=training, momentum=self.momentum, eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if use_running and training else None,
            func=name)
        self._keep("_x", x)
        self._keep("_saved", (mean, invstd, training))
        return y

    def backward(self, grad_output, input_grad=True):
        """Accumulate weight and bias gradients; return d loss / d input (None if not input_grad)."""
        x = self._cached("_x")
        mean, invstd, training = self._saved
        gx, gw, gb = _bn._batch_norm_backward(
            grad_output, x, self.weight.data if self.affine else None, mean, invstd, training,
            need_input=bool(input_grad), func=f"{type(self).__name__}.backward")
        if self.affine:
            self.weight.grad += gw
            self.bias.grad += gb
        return gx

    def _config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum,
                    affine=self.affine, track_running_stats=self.track_running_stats)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


_DOC = """Batch normalisation over {inputs} input, as torch.nn.{name}.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float
        Added to the variance (default 1e-5).
    momentum : float or None
        Weight of the new batch in the running statistics (default 0.1); None keeps a cumulative
        average.
    affine : bool
        Learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
    track_running_stats : bool
        Keep running statistics (used in evaluation); without them, evaluation uses the batch's.
    dtype : np.float32 or np.float64
    """


class BatchNorm1d(_BatchNorm):
    __doc__ = _DOC.format(inputs="(N, C) or (N, C, L)", name="BatchNorm1d")
    _ndims = (2, 3)
    _expected = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    __doc__ = _DOC.format(inputs="(N, C, H, W)", name="BatchNorm2d")
    _ndims = (4,)
    _expected = "4-D (N, C, H, W)"
