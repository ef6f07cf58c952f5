"""Batch inference over Dask arrays: run a cnnext model on every chunk of an (N, C, H, W) collection.

Needs the optional extra ``pip install "cnnext[dask]"`` (dask[array] and distributed). The module is
``cnnext.dask``; inside it ``import dask`` is an absolute import and always means the real Dask
package (this file is only reachable as ``cnnext.dask``).

Examples
--------
>>> import dask.array as da
>>> from cnnext.dask import predict
>>> images = da.from_zarr("digits.zarr")                   # (N, 1, 8, 8), chunked along N
>>> labels = predict(model, images, batch_size=4096, return_labels=True)
>>> labels.compute()                                       # threads by default; a Client if one is active

Design
------
- The model is snapshotted (deep copy, eval mode) when ``predict`` is called, so training it further
  does not change a result computed later, and put in the graph once (one key, not one copy per task).
- Every worker thread runs its own copy of the model: layers cache their inputs in ``forward`` for
  ``backward``, so a single shared model instance must not run two chunks at once. The kernels
  release the GIL, so the threaded scheduler runs chunks in parallel.
- The channel and spatial dimensions are rechunked to one block each: a chunk is a batch of whole
  images, and the model sees exactly the arrays it would see in memory.
"""
import copy
import threading

import numpy as np

from cnnext._validation import check_int
from cnnext.nn.module import Module

__all__ = ["predict", "INSTALL_HINT"]

INSTALL_HINT = 'cnnext.dask needs Dask: pip install "cnnext[dask]" (dask[array] and distributed)'


def _dask_array():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return dask, da


class _Predictor:
    """A model snapshot that gives every thread its own copy (picklable: ships to worker processes)."""

    def __init__(self, model):
        self.model = model
        self._local = threading.local()

    def _model(self):
        m = getattr(self._local, "model", None)
        if m is None:
            m = self._local.model = copy.deepcopy(self.model)
        return m

    def logits(self, block):
        return self._model()(block)

    def __getstate__(self):
        return {"model": self.model}

    def __setstate__(self, state):
        self.model = state["model"]
        self._local = threading.local()


def _logits_block(block, predictor, out_ndim):
    y = np.asarray(predictor.logits(block))
    if y.ndim != out_ndim or y.shape[0] != block.shape[0]:
        raise ValueError(f"predict: the model returned shape {y.shape} for a chunk of shape {block.shape}; "
                         f"expected {out_ndim} dimensions with {block.shape[0]} rows")
    return y


def _labels_block(block, predictor, out_ndim):
    y = _logits_block(block, predictor, out_ndim)
    return y.reshape(y.shape[0], -1).argmax(axis=1).astype(np.int64)


def predict(model, images, batch_size=None, return_labels=False):
    """Run ``model`` over a Dask array of images, one chunk of whole images per task.

    Parameters
    ----------
    model : cnnext.nn.Module
        A trained model mapping a (n, C, H, W) batch to (n, ...) outputs, e.g. (n, classes) logits.
        It is copied when ``predict`` is called and run in eval mode; ``model`` itself is not changed.
    images : dask.array.Array or ndarray, shape (N, C, H, W)
        Float images, scaled as in training. A numpy array is wrapped into a Dask array.
    batch_size : int, optional
        Images per chunk (the images are rechunked along N). By default the existing chunks along N
        are kept (a numpy array becomes chunks of 1024 images).
    return_labels : bool
        Return the arg-max class per image (int64, shape (N,)) instead of the model's outputs.

    Returns
    -------
    dask.array.Array
        Lazy (N, ...) outputs in the model's dtype, or (N,) int64 labels; call ``.compute()``.

    Raises
    ------
    ImportError
        Without Dask (the message names the ``cnnext[dask]`` extra).
    TypeError, ValueError
        For a model that is not a cnnext Module, images that are not 4-D floats, or a bad batch_size.

    Examples
    --------
    >>> logits = predict(model, images, batch_size=2048)
    >>> labels = predict(model, images, return_labels=True).compute()
    """
    dask, da = _dask_array()
    if not isinstance(model, Module):
        raise TypeError(f"predict: model must be a cnnext.nn.Module, got {type(model).__name__}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", "predict", minimum=1)
    if not isinstance(images, da.Array):
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            raise TypeError(f"predict: images must be a dask array or a numpy array of shape (N, C, H, W), "
                            f"got {type(images).__name__}")
        images = da.from_array(np.asarray(images), chunks=(batch_size or 1024, -1, -1, -1))
    if images.ndim != 4:
        raise ValueError(f"predict: images must have shape (N, C, H, W), got {images.ndim} dimensions "
                         f"{images.shape}; add the channel axis with images[:, None]")
    if images.dtype.kind not in "fiu":
        raise TypeError(f"predict: images must be real numbers, got dtype {images.dtype}")
    if any(np.isnan(c) for dim in images.chunks for c in dim):
        raise ValueError("predict: images has unknown chunk sizes; call images.compute_chunk_sizes() first")
    images = images.rechunk({0: batch_size if batch_size else images.chunks[0], 1: -1, 2: -1, 3: -1})

    snapshot = copy.deepcopy(model).eval()
    # One tiny forward on one zero image tells the output shape and dtype.
    C, H, W = images.shape[1:]
    dt = images.dtype if images.dtype.kind == "f" else np.float64
    probe = np.asarray(copy.deepcopy(snapshot)(np.zeros((1, C, H, W), dtype=dt)))
    if probe.ndim < 1 or probe.shape[0] != 1:
        raise ValueError(f"predict: the model returned shape {probe.shape} for one image; expected (1, ...)")
    out_ndim = probe.ndim
    predictor = dask.delayed(_Predictor(snapshot), pure=False, traverse=False)

    if return_labels:
        return da.map_blocks(_labels_block, images, predictor, out_ndim, dtype=np.int64,
                             chunks=(images.chunks[0],), drop_axis=[1, 2, 3],
                             meta=np.empty((0,), dtype=np.int64), token="cnnext-predict-labels")
    rest = probe.shape[1:]
    chunks = (images.chunks[0],) + tuple((s,) for s in rest)
    kw = {}
    if out_ndim < 4:
        kw["drop_axis"] = list(range(out_ndim, 4))
    elif out_ndim > 4:
        kw["new_axis"] = list(range(4, out_ndim))
    return da.map_blocks(_logits_block, images, predictor, out_ndim, dtype=probe.dtype, chunks=chunks,
                         meta=np.empty((0,) * out_ndim, dtype=probe.dtype), token="cnnext-predict", **kw)
