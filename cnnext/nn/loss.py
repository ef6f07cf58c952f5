"""Loss modules: ``loss = criterion(output, target)`` then ``grad = criterion.backward()``."""
from cnnext._validation import check_choice, check_cross_entropy, check_float, check_mse
from cnnext.functional import loss as _floss
from cnnext.nn.module import Module, own_methods

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own_methods(cls)  # errors name CrossEntropyLoss.__init__, not _Loss.__init__

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = check_choice(reduction, "reduction", type(self).__name__, ("mean", "sum"))
        self._input = None
        self._target = None

    _check = None  # (func, output, target) -> the checked (output, target)

    def forward(self, output, target):
        """Return the loss as a Python float and remember the arguments for ``backward``."""
        x, t = type(self)._check(type(self).__name__, output, target)
        loss = self._loss(x, t)
        self._keep("_input", x)
        self._keep("_target", t)
        return float(loss)

    def backward(self, grad_output=1.0, input_grad=True):
        """Gradient of the loss with respect to ``output`` of the last call (times ``grad_output``)."""
        x = self._cached("_input")
        go = check_float(grad_output, "grad_output", f"{type(self).__name__}.backward", finite=False)
        return self._grad(x, self._target, go)

    def _config(self):
        return dict(reduction=self.reduction)

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy on (N, C) logits and (N,) integer class targets.

    log-softmax and the negative log-likelihood are fused and computed from max-shifted logits, so
    large logits neither overflow nor lose precision.

    Parameters
    ----------
    reduction : {'mean', 'sum'}
        Average or sum the per-sample losses.

    Examples
    --------
    >>> criterion = CrossEntropyLoss()
    >>> loss = criterion(logits, labels)      # a Python float
    >>> model.backward(criterion.backward())  # d loss / d logits into the model
    """

    _check = staticmethod(check_cross_entropy)

    def _loss(self, output, target):
        return _floss.cross_entropy_checked(output, target, self.reduction)

    def _grad(self, output, target, grad_output):
        return _floss.cross_entropy_backward_checked(output, target, self.reduction, grad_output)


class MSELoss(_Loss):
    """Mean squared error between ``output`` and a target of the same shape.

    Parameters
    ----------
    reduction : {'mean', 'sum'}
    """

    _check = staticmethod(check_mse)

    def _loss(self, output, target):
        return _floss.mse_loss_checked(output, target, self.reduction)

    def _grad(self, output, target, grad_output):
        return _floss.mse_loss_backward_checked(output, target, self.reduction, grad_output)
