"""Gradient mode: ``no_grad``, ``inference_mode``, ``set_grad_enabled``, ``is_grad_enabled``.

The mode is per thread, as in PyTorch: a ``with cnnext.no_grad():`` block in one thread does not
change what layers running in another thread keep. With gradients disabled, layers keep no input
caches (so memory is freed as soon as a layer's output is computed), max pooling computes no
indices, and ``backward`` raises a RuntimeError that says why.
"""
import functools
import threading

__all__ = ["no_grad", "inference_mode", "set_grad_enabled", "is_grad_enabled"]

_local = threading.local()


def is_grad_enabled():
    """Return True unless gradients are disabled in this thread (``no_grad``, ``inference_mode``)."""
    return getattr(_local, "enabled", True)


def _set(enabled):
    _local.enabled = enabled


class _GradMode:
    """Base of the context managers: sets the mode on entry, restores the previous one on exit.

    Instances are also decorators: the wrapped function runs in the mode, whatever the caller's.
    """

    _enabled = True

    def __enter__(self):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(is_grad_enabled())
        _set(self._enabled)
        return self

    def __exit__(self, *exc):
        _set(_local.stack.pop())
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"{type(self).__name__}: can decorate a function, got {type(func).__name__}")

        enabled = self._enabled

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with _Scoped(enabled):
                return func(*args, **kwargs)

        return wrapper


class _Scoped(_GradMode):
    def __init__(self, enabled):
        self._enabled = enabled


class no_grad(_GradMode):
    """Context manager (and decorator) that disables gradients in this thread.

    Examples
    --------
    >>> import cnnext
    >>> with cnnext.no_grad():
    ...     assert not cnnext.is_grad_enabled()
    """

    _enabled = False


class inference_mode(_GradMode):
    """Like ``no_grad`` (cnnext keeps no autograd state beyond layer caches, so the two are the same).

    Parameters
    ----------
    mode : bool
        ``inference_mode(False)`` leaves gradients enabled, as in PyTorch.
    """

    def __init__(self, mode=True):
        from cnnext._validation import check_bool

        check_bool(mode, "mode", "inference_mode")
        self._enabled = not bool(mode)


class set_grad_enabled(_GradMode):
    """Enable or disable gradients: as a function call (for this thread, until changed), or as a
    context manager / decorator (restored afterwards).

    Parameters
    ----------
    mode : bool
        True enables gradients, False disables them.
    """

    def __init__(self, mode):
        from cnnext._validation import check_bool

        check_bool(mode, "mode", "set_grad_enabled")
        self._enabled = bool(mode)
        self._previous = is_grad_enabled()
        _set(self._enabled)  # the function-call form takes effect at once

    def __call__(self, func):
        _set(self._previous)  # used as a decorator: only calls of the function change the mode
        return super().__call__(func)

    def __enter__(self):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(self._previous)
        _set(self._enabled)
        return self
