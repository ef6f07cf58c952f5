"""Operations between layers that composite modules may use in ``forward`` (recorded for backward).

``add`` (residual sums) and ``cat`` (concatenating branches) are recorded on the tape of the
module whose ``forward`` calls them, so its ``backward`` needs no code; see ``cnnext.nn.Module``.
"""
import numpy as np

from cnnext._validation import as_float_array, check_int
from cnnext.nn._tape import record_op

__all__ = ["add", "cat"]

_ANY_ND = tuple(range(0, 33))


def add(*arrays):
    """Elementwise sum of arrays of one shape and dtype (a residual connection).

    Parameters
    ----------
    *arrays : ndarray
        Two or more arrays of the same shape and float dtype.

    Returns
    -------
    ndarray
        A new array; inside a composite module's ``forward`` the sum is recorded for ``backward``.
    """
    func = "nn.ops.add"
    if len(arrays) < 2:
        raise TypeError(f"{func}: needs at least two arrays, got {len(arrays)}")
    first = as_float_array(arrays[0], "arrays[0]", func, ndims=_ANY_ND)
    for i, a in enumerate(arrays[1:], 1):
        if not isinstance(a, np.ndarray) or a.shape != first.shape or a.dtype != first.dtype:
            raise ValueError(
                f"{func}: arrays[{i}] must be an array of shape {first.shape} and dtype {first.dtype} "
                f"like arrays[0], got {getattr(a, 'shape', type(a).__name__)} "
                f"{getattr(a, 'dtype', '')}".rstrip()
            )
    out = first + arrays[1]
    for a in arrays[2:]:
        out += a
    record_op(lambda g, needs: tuple(g if n else None for n in needs), arrays, out, "nn.ops.add")
    return out


def cat(arrays, dim=1):
    """Concatenate arrays along ``dim`` (default: channels), like ``torch.cat``.

    Parameters
    ----------
    arrays : sequence of ndarray
        Arrays of one dtype whose shapes agree except along ``dim``.
    dim : int
        The axis to join along (negative counts from the end).

    Returns
    -------
    ndarray
    """
    func = "nn.ops.cat"
    if isinstance(arrays, np.ndarray) or not hasattr(arrays, "__len__") or len(arrays) == 0:
        raise TypeError(f"{func}: arrays must be a non-empty list or tuple of arrays")
    arrays = tuple(arrays)
    first = as_float_array(arrays[0], "arrays[0]", func, ndims=tuple(range(1, 33)))
    dim = check_int(dim, "dim", func, -first.ndim, first.ndim - 1) % first.ndim
    for i, a in enumerate(arrays):
        if (not isinstance(a, np.ndarray) or a.dtype != first.dtype or a.ndim != first.ndim
                or a.shape[:dim] + a.shape[dim + 1:] != first.shape[:dim] + first.shape[dim + 1:]):
            raise ValueError(
                f"{func}: arrays[{i}] must have dtype {first.dtype} and the shape of arrays[0] "
                f"{first.shape} except along dim {dim}, got {getattr(a, 'shape', type(a).__name__)}"
            )
    out = np.concatenate(arrays, axis=dim)
    bounds = np.cumsum([0] + [a.shape[dim] for a in arrays])

    def backward(g, needs):
        index = [slice(None)] * g.ndim
        parts = []
        for n, lo, hi in zip(needs, bounds[:-1], bounds[1:]):
            index[dim] = slice(int(lo), int(hi))
            parts.append(np.ascontiguousarray(g[tuple(index)]) if n else None)
        return tuple(parts)

    record_op(backward, arrays, out, "nn.ops.cat")
    return out
