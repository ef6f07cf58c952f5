"""The building blocks of cnnext.nn: ``Parameter``, the ``Module`` base class and ``Sequential``.

A module holds state only (parameters, and in ``forward`` whatever ``backward`` needs); its arithmetic
runs in ``cnnext.functional``. ``backward(grad_output)`` returns the gradient with respect to the input
of the last ``forward`` and *adds* the parameter gradients to each ``Parameter.grad``, like PyTorch's
``.grad``; call ``zero_grad()`` (or the optimizer's) between steps.
"""
import types
from collections import OrderedDict, namedtuple

import numpy as np

from cnnext._validation import check_bool, check_dtype, check_shape, result_dtype

__all__ = ["Parameter", "Module", "Sequential"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter:
    """A trainable array and its accumulated gradient.

    Parameters
    ----------
    data : array_like
        Initial value; stored as a C-contiguous float32 or float64 array.

    Attributes
    ----------
    data : ndarray
        The value, updated in place by optimizers.
    grad : ndarray
        Same shape and dtype as ``data``; ``backward`` adds to it and ``zero_grad`` clears it.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        data = np.array(data, copy=True, order="C")
        dt = result_dtype(data, "data", "Parameter")
        self.data = data if data.dtype == dt else data.astype(dt)
        self.grad = np.zeros_like(data)

    @property
    def shape(self):
        """Shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self):
        """dtype of ``data``."""
        return self.data.dtype

    @property
    def size(self):
        """Number of elements of ``data``."""
        return self.data.size

    def zero_grad(self):
        """Set ``grad`` to zero in place."""
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def own_methods(cls, names=("__init__", "forward", "backward")):
    """Give ``cls`` its own copies of the inherited methods ``names``, named after ``cls``.

    Called from ``__init_subclass__`` of a private base class (``_Loss``, ``_Activation``): Python's
    own argument errors then name the class the user called, "MSELoss.forward() missing 1 required
    positional argument: 'target'", not the private base ("_Loss.forward() ..."), as in PyTorch.
    """
    for name in names:
        if name in cls.__dict__:
            continue
        f = getattr(cls, name)
        g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
        g.__kwdefaults__, g.__doc__, g.__module__ = f.__kwdefaults__, f.__doc__, f.__module__
        g.__dict__.update(f.__dict__)
        g.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, g)


def _indent(text, spaces=2):
    return text.replace("\n", "\n" + " " * spaces)


class Module:
    """Base class of every cnnext.nn layer, loss and model.

    Subclasses assign ``Parameter`` and ``Module`` attributes in ``__init__`` (after calling
    ``super().__init__()``); they are registered in assignment order, which fixes the key order of
    ``state_dict`` and ``parameters``. Subclasses implement ``forward`` and ``backward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- attribute registration -------------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if not isinstance(value, (Parameter, Module)) and name in d:
            d[name] = value  # fast path: plain attribute already set (caches in forward)
            return
        params = d.get("_parameters")
        modules = self.__dict__.get("_modules")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning {name!r}"
            )
        if params is not None:
            params.pop(name, None)
            modules.pop(name, None)
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("_parameters", ()):
            return d["_parameters"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    # -- computation ------------------------------------------------------------------------
    def forward(self, *args):
        """Compute the output (subclasses implement it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output, input_grad=True):
        """Return d loss / d input and accumulate parameter gradients (subclasses implement it).

        Parameters
        ----------
        grad_output : ndarray
            d loss / d output of the last ``forward``.
        input_grad : bool
            When False the gradient with respect to the input is not needed (first layer of a
            model); a module may then skip computing it and return None.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args):
        return self.forward(*args)

    def _cached(self, name):
        value = self.__dict__.get(name)
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: call forward first (nothing cached from a forward pass)"
            )
        return value

    # -- traversal --------------------------------------------------------------------------
    def children(self):
        """Iterate over the direct sub-modules."""
        yield from self._modules.values()

    def named_children(self):
        """Iterate over (name, module) pairs of the direct sub-modules."""
        yield from self._modules.items()

    def named_modules(self, prefix=""):
        """Iterate over (dotted name, module) for this module and all sub-modules, depth first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """Iterate over this module and all sub-modules."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix=""):
        """Iterate over (dotted name, Parameter) pairs, PyTorch's names ("0.weight", "fc.bias")."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self):
        """Iterate over the Parameters (pass them to an optimizer)."""
        for _, p in self.named_parameters():
            yield p

    def zero_grad(self):
        """Set every parameter gradient to zero."""
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        """Set training mode (affects Dropout) on this module and its sub-modules; return self."""
        mode = check_bool(mode, "mode", f"{type(self).__name__}.train")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Set evaluation mode (``train(False)``); return self."""
        return self.train(False)

    def to(self, dtype):
        """Convert every parameter (and its gradient) to ``dtype`` (float32 or float64); return self."""
        dt = check_dtype(dtype, "dtype", f"{type(self).__name__}.to")
        for p in self.parameters():
            p.data = p.data.astype(dt)
            p.grad = p.grad.astype(dt)
        for m in self.modules():
            if "dtype" in m.__dict__:
                object.__setattr__(m, "dtype", dt)
        return self

    def double(self):
        """Convert the parameters to float64; return self."""
        return self.to(np.float64)

    def float(self):
        """Convert the parameters to float32; return self."""
        return self.to(np.float32)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Return an OrderedDict of parameter name -> copy of its array, with PyTorch's key names.

        The arrays have PyTorch's layouts (Conv2d weight (out, in/groups, kH, kW); Linear weight
        (out, in)), so ``torch_model.load_state_dict({k: torch.from_numpy(v) ...})`` accepts it.
        """
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, by name.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            As returned by ``state_dict()`` here or by a torch module (CPU tensors are accepted).
        strict : bool
            When True, missing or unexpected keys raise ValueError.

        Returns
        -------
        namedtuple (missing_keys, unexpected_keys)
        """
        owner = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"{owner}: state_dict must be a mapping of names to arrays, "
                            f"got {type(state_dict).__name__}")
        params = OrderedDict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"{owner}: state_dict does not match the model: {'; '.join(parts)} "
                             f"(the model has {list(params)})")
        staged = []
        for name, p in params.items():
            if name not in state_dict:
                continue
            value = _to_numpy(state_dict[name])
            if value.dtype.kind not in "fiu" or value.dtype.kind == "c":
                raise TypeError(f"{owner}: {name!r} must be a real numeric array, got dtype {value.dtype}")
            check_shape(value, p.data.shape, repr(name), owner)
            staged.append((p, value))
        for p, value in staged:  # all checked first: a failed load changes nothing
            p.data[...] = value
        return IncompatibleKeys(missing, unexpected)

    # -- display ----------------------------------------------------------------------------
    def extra_repr(self):
        """Text shown inside the parentheses of ``repr`` (the constructor arguments)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [extra] if extra else []
        lines += [f"({name}): {_indent(repr(m))}" for name, m in self._modules.items()]
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _to_numpy(value):
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class Sequential(Module):
    """A chain of modules: ``forward`` runs them in order, ``backward`` in reverse.

    Parameters
    ----------
    *modules : Module
        The layers, named "0", "1", ... (PyTorch's state_dict keys: "0.weight", ...). A single
        OrderedDict of name -> module gives them names instead.

    Examples
    --------
    >>> from cnnext import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ...                       nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: every layer must be a cnnext.nn.Module, got "
                                f"{type(m).__name__} for {name!r}")
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"Sequential: layer names must be non-empty strings without '.', got {name!r}")
            self._modules[name] = m

    def append(self, module):
        """Add a module at the end; return self."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: module must be a cnnext.nn.Module, got {type(module).__name__}")
        self._modules[str(len(self._modules))] = module
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        mods = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return mods[index]

    def forward(self, x):
        """Run every layer in order and return the last output."""
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad_output, input_grad=True):
        """Back-propagate through the layers in reverse order; return d loss / d input.

        With ``input_grad=False`` the first layer may skip its input gradient (returns None).
        """
        g = grad_output
        mods = list(self._modules.values())
        for i in range(len(mods) - 1, -1, -1):
            g = mods[i].backward(g, input_grad=input_grad or i > 0)
        return g
