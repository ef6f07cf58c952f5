"""The tape behind composite modules: exact backward for blocks with several paths.

A module that does not write its own ``backward`` (a residual block, a model whose ``forward`` calls
sub-modules in any order) gets one from a tape: while its ``forward`` runs, every sub-module call and
every ``cnnext.nn.ops`` operation (``add``, ``cat``) is recorded with the arrays it took and returned.
``backward`` replays the records in reverse, routing gradients by array identity: an array used twice
(fan-out) receives the sum of both gradients, a branch whose output is not used receives none, and a
module called twice in one forward has its caches put back before each of its backward calls.

Only recorded operations are differentiated. An array computed in ``forward`` with numpy arithmetic
(``a + b``, ``x.reshape(...)``) and then passed on has no record, and ``backward`` raises a TypeError
that names the module and says what to use instead, rather than return a wrong gradient.
"""
import threading

__all__ = ["Tape", "current", "record_op"]

_local = threading.local()

# attributes of a Module that are structure, not per-call caches
_STRUCTURE = frozenset(("_parameters", "_modules", "_buffers", "training", "_tape"))


def current():
    """The tape recording in this thread, or None."""
    return getattr(_local, "tape", None)


class _Recording:
    """Context manager base: makes ``self._active()`` the thread's tape inside, restores after."""

    __slots__ = ("_previous",)

    def _active(self):
        return self

    def __enter__(self):
        self._previous = current()
        _local.tape = self._active()
        return self

    def __exit__(self, *exc):
        _local.tape = self._previous
        return False


class suspended(_Recording):
    """Context manager: nothing is recorded inside (a module with its own backward runs its forward)."""

    __slots__ = ()

    def _active(self):
        return None


class _Record:
    __slots__ = ("module", "backward", "inputs", "output", "state", "name")

    def __init__(self, module, backward, inputs, output, state, name):
        self.module = module
        self.backward = backward
        self.inputs = inputs
        self.output = output
        self.state = state
        self.name = name


class Tape(_Recording):
    """Records the operations of one forward call of a composite module (see the module docstring)."""

    __slots__ = ("records", "inputs", "output", "owner")

    def __init__(self, owner):
        self.records = []
        self.inputs = ()
        self.output = None
        self.owner = owner

    def record_module(self, module, inputs, output):
        """Record a sub-module call; its per-call state is snapshotted for the replay."""
        state = {k: v for k, v in module.__dict__.items() if k not in _STRUCTURE}
        tape = module.__dict__.get("_tape")
        if tape is not None:
            state["_tape"] = tape
        self.records.append(_Record(module, None, inputs, output, state, type(module).__name__))

    def record_op(self, backward, inputs, output, name):
        """Record an operation: ``backward(grad_output, needs)`` returns one gradient per input."""
        self.records.append(_Record(None, backward, inputs, output, None, name))

    def backward(self, grad_output, input_grad=True):
        """Replay the records in reverse; return the gradient of the owner's input(s)."""
        owner = type(self.owner).__name__
        produced = {id(a) for a in self.inputs}
        for rec in self.records:
            for a in rec.inputs:
                if id(a) not in produced:
                    raise TypeError(
                        f"{owner}.backward: an input of {rec.name} was computed in {owner}.forward "
                        "by an operation cnnext does not record (numpy arithmetic or reshaping); "
                        "use modules and cnnext.nn.ops (add, cat) between layers, wrap a constant "
                        f"in a module, or write {owner}.backward yourself"
                    )
            produced.add(id(rec.output))
        if id(self.output) not in produced:
            raise TypeError(
                f"{owner}.backward: the output of {owner}.forward was computed by an operation "
                "cnnext does not record (numpy arithmetic or reshaping); use modules and "
                f"cnnext.nn.ops (add, cat), or write {owner}.backward yourself"
            )
        # which arrays need a gradient: those on a path from the owner's inputs (when input_grad)
        # or from a module with parameters
        input_ids = {id(a) for a in self.inputs} if input_grad else set()
        needs = set(input_ids)
        for rec in self.records:
            if rec.module is not None and any(True for _ in rec.module.parameters()):
                needs.add(id(rec.output))
            elif any(id(a) in needs for a in rec.inputs):
                needs.add(id(rec.output))
            elif rec.module is not None and rec.module.__dict__.get("_tape") is not None:
                needs.add(id(rec.output))
        grads = {id(self.output): grad_output}
        for rec in reversed(self.records):
            g = grads.pop(id(rec.output), None)
            if g is None:
                continue  # nothing downstream used this output
            want = [id(a) in needs for a in rec.inputs]
            if rec.module is not None:
                rec.module.__dict__.update(rec.state)
                gin = rec.module.backward(g, input_grad=want[0])
                gins = (gin,)
            else:
                gins = rec.backward(g, want)
            for a, w, ga in zip(rec.inputs, want, gins):
                if not w or ga is None:
                    continue
                key = id(a)
                if key in grads:
                    grads[key] = grads[key] + ga
                else:
                    grads[key] = ga
        if not input_grad:
            return None
        result = [grads.get(id(a)) for a in self.inputs]
        for i, (a, g) in enumerate(zip(self.inputs, result)):
            if g is None:  # the output does not depend on this input
                import numpy as np

                result[i] = np.zeros_like(a)
        return result[0] if len(result) == 1 else tuple(result)


def record_op(backward, inputs, output, name):
    """Record an operation on the current tape, if one is recording."""
    tape = current()
    if tape is not None:
        tape.record_op(backward, inputs, output, name)
