"""The building blocks of cnnext.nn: ``Parameter``, the ``Module`` base class and ``Sequential``.

A module holds state only (parameters, and in ``forward`` whatever ``backward`` needs); its arithmetic
runs in ``cnnext.functional``. ``backward(grad_output)`` returns the gradient with respect to the input
of the last ``forward`` and *adds* the parameter gradients to each ``Parameter.grad``, like PyTorch's
``.grad``; call ``zero_grad()`` (or the optimizer's) between steps.
"""
import types
from collections import OrderedDict, namedtuple

import numpy as np

from cnnext._grad_mode import is_grad_enabled
from cnnext._validation import check_bool, check_dtype, check_shape, result_dtype
from cnnext.nn import _tape

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "Identity"]

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
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- attribute registration -------------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"{type(self).__name__}: buffer {name!r} must be an ndarray or None, "
                                f"got {type(value).__name__}")
            buffers[name] = value
            return
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
        if name in d.get("_buffers", ()):
            return d["_buffers"][name]
        if name in d.get("_modules", ()):
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._buffers:
            del self._buffers[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    # -- computation ------------------------------------------------------------------------
    def forward(self, *args):
        """Compute the output (subclasses implement it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output, input_grad=True):
        """Return d loss / d input and accumulate parameter gradients.

        Layers implement it. A module that does not (a block whose ``forward`` calls sub-modules
        and ``cnnext.nn.ops``, such as a residual block) gets it from the tape of its last
        ``forward`` (see ``cnnext.nn._tape``): exact, with fan-out summed and unused branches skipped.

        Parameters
        ----------
        grad_output : ndarray
            d loss / d output of the last ``forward``.
        input_grad : bool
            When False the gradient with respect to the input is not needed (first layer of a
            model); a module may then skip computing it and return None.
        """
        tape = self.__dict__.get("_tape")
        if tape is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: call forward first (nothing recorded from a "
                f"forward pass{'; it ran under cnnext.no_grad()' if self.__dict__.get('_no_grad_forward') else ''})"
            )
        return tape.backward(grad_output, input_grad)

    def __call__(self, *args):
        outer = _tape.current()
        enabled = is_grad_enabled()
        if enabled and type(self).backward is Module.backward:
            tape = _tape.Tape(self)
            with tape:
                out = self.forward(*args)
            tape.inputs, tape.output = args, out
            self.__dict__["_tape"] = tape
        elif outer is not None:
            # a module with its own backward: what its forward calls is its own business
            with _tape.suspended():
                out = self.forward(*args)
        else:
            if not enabled:
                self.__dict__["_tape"] = None
            out = self.forward(*args)
        self.__dict__["_no_grad_forward"] = not enabled
        if outer is not None and enabled:
            outer.record_module(self, args, out)
        return out

    def _keep(self, name, value):
        """Cache ``value`` for backward as attribute ``name`` (None under ``cnnext.no_grad()``)."""
        self.__dict__[name] = value if is_grad_enabled() else None

    def _cached(self, name):
        value = self.__dict__.get(name)
        if value is None:
            if self.__dict__.get("_no_grad_forward"):
                raise RuntimeError(
                    f"{type(self).__name__}.backward: the last forward ran under cnnext.no_grad() "
                    "(or inference_mode), which keeps nothing for backward; run forward with "
                    "gradients enabled"
                )
            raise RuntimeError(
                f"{type(self).__name__}.backward: call forward first (nothing cached from a forward pass)"
            )
        return value

    # -- buffers ----------------------------------------------------------------------------
    def register_buffer(self, name, array, persistent=True):
        """Register ``array`` as state that is not a parameter (BatchNorm's running statistics).

        Buffers are saved in ``state_dict`` (unless ``persistent`` is False), converted by ``to()``
        when they hold floats, and reachable as attributes; optimizers never see them.

        Parameters
        ----------
        name : str
        array : ndarray or None
        persistent : bool
        """
        func = f"{type(self).__name__}.register_buffer"
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{func}: name must be a non-empty string without '.', got {name!r}")
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"{func}: array must be an ndarray or None, got {type(array).__name__}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"{func}: {name!r} is already a parameter or sub-module")
        self.__dict__.pop(name, None)
        self._buffers[name] = array
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)
        else:
            self.__dict__.get("_non_persistent", set()).discard(name)

    def named_buffers(self, prefix=""):
        """Iterate over (dotted name, array) pairs of every buffer (None buffers skipped)."""
        for mname, m in self.named_modules(prefix):
            for bname, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def buffers(self):
        """Iterate over the buffer arrays."""
        for _, b in self.named_buffers():
            yield b

    def _named_state(self):
        """(name, owner module, attribute, kind) of every state_dict entry, in PyTorch's order:
        each module's parameters, then its persistent buffers, then its sub-modules'."""
        seen = set()
        for mname, m in self.named_modules():
            for pname, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mname}.{pname}" if mname else pname), m, pname, "parameter"
            skip = m.__dict__.get("_non_persistent", ())
            for bname, b in m._buffers.items():
                if b is not None and bname not in skip:
                    yield (f"{mname}.{bname}" if mname else bname), m, bname, "buffer"

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
            for bname, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[bname] = b.astype(dt)
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
        out = OrderedDict()
        for name, m, attr, kind in self._named_state():
            value = m._parameters[attr].data if kind == "parameter" else m._buffers[attr]
            out[name] = value.copy()
        return out

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
        params = OrderedDict((name, (m, attr, kind)) for name, m, attr, kind in self._named_state())
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
        for name, (m, attr, kind) in params.items():
            if name not in state_dict:
                continue
            target = m._parameters[attr].data if kind == "parameter" else m._buffers[attr]
            value = _to_numpy(state_dict[name])
            if value.dtype.kind not in "fiu" or value.dtype.kind == "c":
                raise TypeError(f"{owner}: {name!r} must be a real numeric array, got dtype {value.dtype}")
            check_shape(value, target.shape, repr(name), owner)
            if target.dtype.kind in "iu" and value.dtype.kind == "f" and not np.all(value == np.round(value)):
                raise ValueError(f"{owner}: {name!r} must hold whole numbers, got {value.ravel()[:4]}")
            staged.append((target, value))
        for target, value in staged:  # all checked first: a failed load changes nothing
            target[...] = value
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


def _check_child(module, what, func):
    if not isinstance(module, Module):
        raise TypeError(f"{func}: {what} must be a cnnext.nn.Module, got {type(module).__name__}")
    return module


class _ModuleSequence(Module):
    """List behaviour shared by Sequential and ModuleList: append, len, iteration, indexing."""

    def append(self, module):
        """Add a module at the end; return self."""
        self._modules[str(len(self._modules))] = _check_child(module, "module", f"{type(self).__name__}.append")
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._slice(list(self._modules.items())[index])
        return list(self._modules.values())[index]


class Sequential(_ModuleSequence):
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

    def _slice(self, items):
        return Sequential(OrderedDict(items))

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


class ModuleList(_ModuleSequence):
    """A list of sub-modules, registered as "0", "1", ... (PyTorch's state_dict keys).

    It holds modules only; the ``forward`` of the module that owns it decides how they are called.

    Parameters
    ----------
    modules : iterable of Module, optional
    """

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def extend(self, modules):
        """Append every module of an iterable; return self."""
        for m in modules:
            self.append(m)
        return self

    def _slice(self, items):
        return ModuleList(m for _, m in items)

    def forward(self, *args):
        raise NotImplementedError("ModuleList has no forward: call its modules from the owner's forward")


class ModuleDict(Module):
    """An ordered mapping of names to sub-modules (keys become state_dict prefixes).

    Parameters
    ----------
    modules : mapping or iterable of (str, Module) pairs, optional
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, name, module):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"ModuleDict: keys must be non-empty strings without '.', got {name!r}")
        self._modules[name] = _check_child(module, f"the value for {name!r}", "ModuleDict")

    def __getitem__(self, name):
        return self._modules[name]

    def __delitem__(self, name):
        del self._modules[name]

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        """The names, in insertion order."""
        return self._modules.keys()

    def values(self):
        """The modules, in insertion order."""
        return self._modules.values()

    def items(self):
        """(name, module) pairs, in insertion order."""
        return self._modules.items()

    def update(self, modules):
        """Add (name, module) pairs from a mapping or an iterable of pairs."""
        items = modules.items() if hasattr(modules, "items") else modules
        for name, m in items:
            self[name] = m

    def forward(self, *args):
        raise NotImplementedError("ModuleDict has no forward: call its modules from the owner's forward")


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. a residual shortcut)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        """Return ``x``."""
        return x

    def backward(self, grad_output, input_grad=True):
        """Return ``grad_output`` (None when ``input_grad`` is False)."""
        return grad_output if input_grad else None

    def _config(self):
        return {}
