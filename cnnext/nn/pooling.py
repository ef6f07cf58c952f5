"""Adaptive pooling layers: ``AdaptiveAvgPool2d`` and ``AdaptiveMaxPool2d``, as in torch.nn."""
import numpy as np

from cnnext import functional as F
from cnnext._grad_mode import is_grad_enabled
from cnnext._validation import check_bool
from cnnext.nn.module import Module

__all__ = ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


def _size_config(size):
    return list(size) if isinstance(size, (tuple, list)) else size


class AdaptiveAvgPool2d(Module):
    """Average over PyTorch's adaptive bins to a fixed output size.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        (Ho, Wo); None keeps the input's size along that axis.
    """

    def __init__(self, output_size):
        super().__init__()
        F.adaptive._output_size(output_size, 1, 1, "AdaptiveAvgPool2d")  # checks the argument
        self.output_size = tuple(output_size) if isinstance(output_size, list) else output_size
        self._shape = None

    def forward(self, x):
        """Pool a (N, C, H, W) batch or a (C, H, W) sample."""
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._keep("_shape", np.shape(x))
        return y

    def backward(self, grad_output, input_grad=True):
        """Spread each output's gradient evenly over its bin."""
        shape = self._cached("_shape")
        return F.adaptive_avg_pool2d_backward(grad_output, shape) if input_grad else None

    def _config(self):
        return dict(output_size=_size_config(self.output_size))

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Maximum over PyTorch's adaptive bins to a fixed output size.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
    return_indices : bool
        ``forward`` returns ``(output, indices)``, as PyTorch's layer does.
    """

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        F.adaptive._output_size(output_size, 1, 1, "AdaptiveMaxPool2d")
        check_bool(return_indices, "return_indices", "AdaptiveMaxPool2d")
        self.output_size = tuple(output_size) if isinstance(output_size, list) else output_size
        self.return_indices = bool(return_indices)
        self._shape = self._indices = None

    def forward(self, x):
        """Pool a (N, C, H, W) batch or a (C, H, W) sample (indices kept for backward)."""
        if not (is_grad_enabled() or self.return_indices):
            self._keep("_shape", None)
            return F.adaptive_max_pool2d(x, self.output_size)
        y, idx = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._keep("_shape", np.shape(x))
        self._keep("_indices", idx)
        return (y, idx) if self.return_indices else y

    def backward(self, grad_output, input_grad=True):
        """Route each output's gradient to the position of its maximum."""
        shape = self._cached("_shape")
        return F.adaptive_max_pool2d_backward(grad_output, self._indices, shape) if input_grad else None

    def _config(self):
        return dict(output_size=_size_config(self.output_size), return_indices=self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"
