"""Data-parallel training over MPI: a gradient-averaging model wrapper, a sharding sampler and loader, metrics.

Needs the optional extra ``pip install "cnnext[mpi]"`` (mpi4py plus the MPICH wheel; on a cluster
build mpi4py against the system MPI instead). ``mpi4py`` is imported only when a communicator is
needed, so ``import cnnext.distributed`` always works and ``DistributedSampler`` with explicit
``num_replicas``/``rank`` runs without MPI. This module is a library: the command line's
``train --distributed`` (in ``cnnext.cli.train``) is built on it and on ``cnnext.training.fit``.

Training on every rank (``mpiexec -n N python script.py``), with the one training loop::

    import functools
    from cnnext import distributed as dist, nn, optim, training

    ddp = dist.DistributedDataParallel(model)        # rank 0's weights are broadcast to all ranks
    history = training.fit(
        ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1),
        dist.DistributedLoader(X, y, batch_size=32, seed=0),    # this rank's shard, per epoch
        epochs=5, reduce=functools.partial(dist.reduce_metrics, comm=ddp.comm))  # metrics of all ranks

``ddp.backward`` averages the gradients over the ranks, so every rank's optimizer takes the same
step; ``DistributedSampler.minibatches`` and ``ddp.backward`` also serve hand-written loops.

Design
------
- Gradients live in a few large contiguous buffers ("buckets", one dtype each, up to
  ``bucket_cap_mb``): each ``Parameter.grad`` is rebound to a view into its bucket, so layers keep
  accumulating into ``grad`` in place and the synchronisation is one in-place ``Allreduce`` per
  bucket, with no packing copies. A gradient array the user rebinds is copied back in.
- Averaging the per-rank mean gradients of equal-sized shards gives exactly the mean gradient of
  the union: with the same seed, N ranks with per-rank batch B take the same steps as one process
  with batch N*B (up to floating-point summation order). ``DistributedSampler`` makes the shards
  equal-sized (padding or dropping) and interleaves them, so step k of the N ranks together covers
  exactly the samples of step k of the single process with batch N*B.
- Every collective here (the broadcast of the weights, each gradient synchronisation, every metric
  sum) is preceded by one small fixed-size ``Allreduce`` (MIN of a few int64 and their negatives:
  operation, element count, a digest of names, shapes and dtypes, an error flag). Ranks whose
  buffers would disagree (a model converted or changed on one rank after wrapping, different
  metric names, ranks out of step) or a rank whose local preparation failed then raise a Python
  exception naming the difference on every rank, instead of MPI aborting the job with
  ``Message truncated`` or summing unrelated numbers.
- Every synchronisation is timed (``allreduce_times``); the time includes waiting for the slowest
  rank to reach the collective.
"""
import contextlib
import hashlib
import time
from collections import OrderedDict

import numpy as np

from cnnext._validation import check_float, check_int
from cnnext.nn.module import Module

__all__ = [
    "DistributedDataParallel",
    "DistributedSampler",
    "get_comm",
    "allreduce_sum",
    "reduce_metrics",
    "shard_range",
    "DistributedLoader",
    "INSTALL_HINT",
]

INSTALL_HINT = ('cnnext.distributed needs mpi4py and an MPI runtime: pip install "cnnext[mpi]" '
                '(mpi4py plus the MPICH wheel), or on a cluster pip install mpi4py built against '
                'the system MPI')


def _mpi():
    """Import and return ``mpi4py.MPI``, or raise ImportError naming the ``cnnext[mpi]`` extra."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # mpi4py missing, or present without a loadable MPI library
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return MPI


def get_comm(comm=None):
    """Return ``comm``, or ``MPI.COMM_WORLD`` when it is None (importing mpi4py on first use).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    mpi4py.MPI.Comm
    """
    if comm is not None:
        if not all(hasattr(comm, a) for a in ("Get_rank", "Get_size", "Allreduce", "Bcast")):
            raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), "
                            f"got {type(comm).__name__}")
        return comm
    return _mpi().COMM_WORLD


# ---------------------------------------------------------------------------------------------
# agreement before a collective
# ---------------------------------------------------------------------------------------------
_WRAP, _GRADS, _BCAST, _SUM = 1, 2, 3, 4
_OPERATIONS = {_WRAP: "the wrapping of the model (DistributedDataParallel)",
               _GRADS: "the gradient Allreduce (backward / sync_gradients)",
               _BCAST: "the parameter broadcast (broadcast_parameters)",
               _SUM: "a metric sum (allreduce_sum / reduce_metrics)"}
_HINTS = {_WRAP: "build the same model, with the same bucket_cap_mb, on every rank",
          _GRADS: "after wrapping, change the model (to(), new layers or parameters) on every rank alike "
                  "or not at all",
          _BCAST: "change the model on every rank alike and pass the same root everywhere",
          _SUM: "reduce the same metric names (the same number of values) on every rank"}
_HEADER = 5  # operation, error flag, element count, digest, extra (replaced flag / root)


def _digest(obj):
    """A non-negative 62-bit digest of ``repr(obj)``, the same in every process (``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(repr(obj).encode(), digest_size=8).digest(), "little") >> 2


def _first_difference(label, a, b, r):
    if isinstance(a, list) and isinstance(b, list):
        parts = [] if len(a) == len(b) else [f"{len(a)} on rank 0, {len(b)} on rank {r}"]
        i = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), None)
        if i is not None:
            parts.append(f"first difference {a[i]!r} on rank 0, {b[i]!r} on rank {r}")
        return f"{label}: {'; '.join(parts)}"
    return f"{label}: {a!r} on rank 0, {b!r} on rank {r}"


def _agree(comm, func, operation, count, digest, details, error=None, extra=0, exc_type=RuntimeError):
    """Check that every rank is about to run the same collective on matching buffers; raise on all if not.

    One ``Allreduce`` (MIN) of a fixed-size int64 header and its negation gives the minimum and
    maximum of each field over the ranks. Only when they differ (or a rank reports a local error)
    are the ranks' descriptions gathered, to build the message every rank raises.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    func : str
        The caller, as the user sees it (starts the message).
    operation : int
        ``_WRAP``, ``_GRADS``, ``_BCAST`` or ``_SUM``.
    count : int
        Elements the collective will move on this rank.
    digest : int
        ``_digest`` of the buffers' layout (names, shapes, dtypes), in [0, 2**62).
    details : callable
        Returns a dict label -> value describing the layout; called only on a mismatch.
    error : Exception, optional
        A local failure while preparing the buffers: this rank re-raises it, the others raise
        ``exc_type`` naming it, and no rank runs the collective.
    extra : int
        One more field that must agree (the root of a broadcast, a "parameters replaced" flag).
    exc_type : type
        The exception raised for a mismatch.
    """
    if comm.Get_size() == 1:
        if error is not None:
            raise error
        return
    MPI = _mpi()
    head = [operation, int(error is not None), count, digest, extra]
    buf = np.array(head + [-v for v in head], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MIN)
    low = buf.tolist()
    if low[1] == 0 and low[:_HEADER] == [-v for v in low[_HEADER:]]:
        return  # min == max for every field: the same on every rank
    # Every rank got the same minima and maxima, so every rank is here: one more collective is safe.
    try:
        mine = dict(details())
    except Exception as exc:  # describing must not fail on one rank alone
        mine = {"layout": f"not available ({type(exc).__name__}: {exc})"}
    mine = {"operation": operation, "error": None if error is None else f"{type(error).__name__}: {error}",
            "details": mine}
    everyone = comm.allgather(mine)
    rank = comm.Get_rank()
    if error is not None:
        raise error
    where = f"(raised on rank {rank} of {comm.Get_size()})"
    failed = [(r, e["error"]) for r, e in enumerate(everyone) if e["error"] is not None]
    if failed:
        r, msg = failed[0]
        raise exc_type(f"{func}: rank {r} failed before {_OPERATIONS[everyone[r]['operation']]}, so no rank "
                       f"ran it: {msg} {where}")
    ops = [e["operation"] for e in everyone]
    r = next(r for r, e in enumerate(everyone) if e != everyone[0])
    if ops[r] != ops[0]:
        raise exc_type(f"{func}: the ranks are out of step: rank 0 is in {_OPERATIONS[ops[0]]}, rank {r} in "
                       f"{_OPERATIONS[ops[r]]}; every rank must make the same calls in the same order (the same "
                       f"number of steps: same dataset size, batch size and epochs everywhere) {where}")
    a, b = everyone[0]["details"], everyone[r]["details"]
    diffs = [_first_difference(k, a.get(k), b.get(k), r) for k in list(a) + [k for k in b if k not in a]
             if a.get(k) != b.get(k)]
    raise exc_type(f"{func}: rank {r} does not match rank 0 for {_OPERATIONS[operation]}: {'; '.join(diffs)}; "
                   f"{_HINTS[operation]} {where}")


# ---------------------------------------------------------------------------------------------
# sharding
# ---------------------------------------------------------------------------------------------
class DistributedSampler:
    """Give each rank a disjoint, equal-sized shard of a shuffled permutation, new every epoch.

    All ranks draw the same permutation of ``range(n_samples)`` from ``(seed, epoch)``; rank ``r``
    takes every ``num_replicas``-th index starting at ``r``. When ``n_samples`` is not a multiple
    of ``num_replicas``, the permutation is padded by repeating its first indices (default) or its
    tail is dropped (``drop_last=True``), so every rank has ``num_samples`` indices and runs the
    same number of steps (an unequal count would leave ranks waiting in a collective forever).

    Parameters
    ----------
    n_samples : int
        Size of the dataset, >= 1.
    num_replicas : int, optional
        Number of ranks; by default the size of ``comm`` (needs mpi4py).
    rank : int, optional
        This rank, in ``[0, num_replicas)``; by default the rank in ``comm``.
    shuffle : bool
        Shuffle every epoch (otherwise the order is ``0, 1, 2, ...``).
    seed : int
        Non-negative seed, the same on every rank.
    drop_last : bool
        Drop the tail instead of padding when the sizes do not divide.
    comm : mpi4py.MPI.Comm, optional
        Used only for the defaults of ``num_replicas`` and ``rank``.

    Attributes
    ----------
    num_samples : int
        Indices per rank and epoch.
    total_size : int
        ``num_samples * num_replicas``.

    Examples
    --------
    >>> s = DistributedSampler(10, num_replicas=3, rank=1, seed=0)
    >>> s.set_epoch(0)
    >>> len(s.indices())
    4
    """

    def __init__(self, n_samples, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False, comm=None):
        func = "DistributedSampler"
        self.n_samples = check_int(n_samples, "n_samples", func, minimum=1)
        if num_replicas is None or rank is None:
            c = get_comm(comm)
            num_replicas = c.Get_size() if num_replicas is None else num_replicas
            rank = c.Get_rank() if rank is None else rank
        self.num_replicas = check_int(num_replicas, "num_replicas", func, minimum=1)
        self.rank = check_int(rank, "rank", func, minimum=0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"{func}: rank must be in [0, num_replicas={self.num_replicas}), got {self.rank}")
        self.seed = check_int(seed, "seed", func, minimum=0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if self.drop_last:
            self.num_samples = self.n_samples // self.num_replicas
            if self.num_samples == 0:
                raise ValueError(f"{func}: n_samples={self.n_samples} < num_replicas={self.num_replicas} "
                                 f"leaves every rank empty with drop_last=True; use drop_last=False")
        else:
            self.num_samples = -(-self.n_samples // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the epoch whose permutation ``indices`` returns (call it on every rank)."""
        self.epoch = check_int(epoch, "epoch", "DistributedSampler.set_epoch", minimum=0)

    def global_order(self):
        """Return the padded (or truncated) permutation shared by all ranks, length ``total_size``."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_samples)
        else:
            order = np.arange(self.n_samples)
        if self.total_size <= self.n_samples:
            return order[:self.total_size]
        return np.resize(order, self.total_size)  # np.resize repeats the array cyclically

    def indices(self):
        """Return this rank's ``num_samples`` indices for the current epoch (int64 array)."""
        return self.global_order()[self.rank::self.num_replicas].astype(np.int64, copy=False)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def num_batches(self, batch_size):
        """Steps per epoch with minibatches of ``batch_size`` (the last one may be partial)."""
        batch_size = check_int(batch_size, "batch_size", "DistributedSampler.num_batches", minimum=1)
        return -(-self.num_samples // batch_size)

    def minibatches(self, X, y=None, batch_size=32):
        """Yield this rank's minibatches ``(X[idx], y[idx])`` (or ``X[idx]``) for the current epoch.

        Parameters
        ----------
        X : ndarray, shape (n_samples, ...)
        y : ndarray, shape (n_samples, ...), optional
        batch_size : int
            Per-rank batch size; the last batch holds ``num_samples % batch_size`` samples when that
            is not zero (the same on every rank).
        """
        func = "DistributedSampler.minibatches"
        batch_size = check_int(batch_size, "batch_size", func, minimum=1)
        X = np.asarray(X)
        if X.ndim < 1 or X.shape[0] != self.n_samples:
            raise ValueError(f"{func}: X must have n_samples={self.n_samples} rows, got shape {X.shape}")
        if y is not None:
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != self.n_samples:
                raise ValueError(f"{func}: y must have n_samples={self.n_samples} rows, got shape {y.shape}")
        idx = self.indices()
        for start in range(0, idx.size, batch_size):
            b = idx[start:start + batch_size]
            yield (X[b], y[b]) if y is not None else X[b]

    def __repr__(self):
        return (f"DistributedSampler(n_samples={self.n_samples}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")


class DistributedLoader:
    """This rank's minibatches of in-memory arrays, from a ``DistributedSampler`` shard per epoch.

    A loader for ``cnnext.training.fit``: iterating gives ``(X[idx], y[idx])`` for this rank's
    indices of the current epoch, ``len`` is the number of steps per epoch (the same on every
    rank), and ``set_epoch`` (which ``fit`` calls before every pass) selects the permutation.

    Parameters
    ----------
    X : array_like, shape (n_samples, ...)
        The whole dataset, the same on every rank.
    y : array_like, shape (n_samples, ...), optional
    batch_size : int
        Per-rank batch size (the global batch is ``num_replicas`` times larger).
    shuffle, seed, drop_last, num_replicas, rank, comm
        As for ``DistributedSampler``.

    Attributes
    ----------
    sampler : DistributedSampler

    Examples
    --------
    >>> ddp = DistributedDataParallel(model)
    >>> loader = DistributedLoader(X, y, batch_size=32, seed=0)
    >>> history = training.fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1),
    ...                        loader, epochs=5, reduce=functools.partial(reduce_metrics, comm=ddp.comm))
    """

    def __init__(self, X, y=None, batch_size=32, shuffle=True, seed=0, drop_last=False, num_replicas=None,
                 rank=None, comm=None):
        func = "DistributedLoader"
        X = np.asarray(X)
        if X.ndim < 1:
            raise ValueError(f"{func}: X must have a sample axis, got a 0-d array")
        if y is not None:
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != X.shape[0]:
                raise ValueError(f"{func}: y must have one entry per sample of X ({X.shape[0]}), got shape {y.shape}")
        self.batch_size = check_int(batch_size, "batch_size", func, minimum=1)
        self.sampler = DistributedSampler(X.shape[0], num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                          seed=seed, drop_last=drop_last, comm=comm)
        self.X, self.y = X, y

    def set_epoch(self, epoch):
        """Select the epoch (from 0) whose shard the next iteration gives."""
        self.sampler.set_epoch(epoch)

    def __len__(self):
        return self.sampler.num_batches(self.batch_size)

    def __iter__(self):
        return self.sampler.minibatches(self.X, self.y, self.batch_size)

    def __repr__(self):
        return f"DistributedLoader(batch_size={self.batch_size}, sampler={self.sampler!r})"


def shard_range(n, rank, size):
    """Return ``(start, stop)`` of rank ``rank``'s contiguous block of ``range(n)`` among ``size`` ranks.

    The blocks differ in length by at most one and cover ``range(n)`` exactly once (no padding),
    which is what evaluation needs: the summed metrics count every sample once.
    """
    n = check_int(n, "n", "shard_range", minimum=0)
    size = check_int(size, "size", "shard_range", minimum=1)
    rank = check_int(rank, "rank", "shard_range", minimum=0)
    if rank >= size:
        raise ValueError(f"shard_range: rank must be in [0, size={size}), got {rank}")
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def allreduce_sum(values, comm=None):
    """Sum a 1-D float64 vector of values over all ranks in one ``Allreduce``.

    Parameters
    ----------
    values : array_like of float, shape (k,)
        The same length on every rank (checked first: a different length, or a rank whose
        ``values`` are not numbers, raises on every rank).
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    ndarray of float64, shape (k,)
        Identical on every rank.
    """
    comm = get_comm(comm)
    buf, error = None, None
    try:
        buf = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    except (TypeError, ValueError) as exc:
        error = TypeError(f"allreduce_sum: values must be a vector of numbers, got {values!r} ({exc})")
    return _sum(buf, comm, "allreduce_sum", None, error)


def _sum(buf, comm, func, names, error=None):
    """Agree on the length (and ``names``) of the vector ``buf`` over the ranks, then sum it in place."""
    count = 0 if buf is None else buf.size
    _agree(comm, func, _SUM, count, _digest(names),
           lambda: {"number of values": count, "metric names": names}, error)
    if comm.Get_size() > 1:
        comm.Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)
    return buf


def reduce_metrics(metrics, comm=None):
    """Sum named metrics (loss sums, correct counts, sample counts) over all ranks.

    Parameters
    ----------
    metrics : mapping of str to float
        The same keys on every rank (they are sorted, so the order need not match; different
        keys raise on every rank).
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    dict of str to float
        The sums, identical on every rank (counts below 2**53 are exact).

    Examples
    --------
    >>> totals = reduce_metrics({"loss_sum": loss * n, "correct": c, "count": n})
    >>> accuracy = totals["correct"] / totals["count"]
    """
    comm = get_comm(comm)
    keys, buf, error = None, None, None
    try:
        if not hasattr(metrics, "items"):
            raise TypeError(f"reduce_metrics: metrics must be a mapping of names to numbers, "
                            f"got {type(metrics).__name__}")
        keys = sorted(metrics)
        try:
            buf = np.array([float(metrics[k]) for k in keys], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"reduce_metrics: every metric must be a number, got {dict(metrics)!r}") from None
    except Exception as exc:  # raised on every rank by _sum, not only here
        error = exc
    sums = _sum(buf, comm, "reduce_metrics", [str(k) for k in keys or ()], error)
    return OrderedDict(zip(keys, sums.tolist()))


# ---------------------------------------------------------------------------------------------
# the model wrapper
# ---------------------------------------------------------------------------------------------
def _check_grad(name, p, func):
    """The gradient must have the parameter's shape (a broadcastable one would be silently spread)."""
    g = p.grad
    if not isinstance(g, np.ndarray) or g.shape != p.data.shape:
        what = f"shape {g.shape}" if isinstance(g, np.ndarray) else type(g).__name__
        raise ValueError(f"{func}: the gradient of parameter {name!r} must be an array of its shape "
                         f"{p.data.shape}, got {what}")


class _Bucket:
    """One contiguous gradient buffer of a single dtype and the parameters whose grads view it."""

    __slots__ = ("dtype", "buffer", "params", "names", "views")

    def __init__(self, dtype, params, names, func):
        self.dtype = dtype
        self.params = params
        self.names = names
        self.buffer = np.zeros(sum(p.data.size for p in params), dtype=dtype)
        self.views = []
        off = 0
        for name, p in zip(names, params):
            _check_grad(name, p, func)
            v = self.buffer[off:off + p.data.size].reshape(p.data.shape)
            v[...] = p.grad
            p.grad = v
            self.views.append(v)
            off += p.data.size

    def attach(self, func):
        """Make every ``p.grad`` the bucket's view again (copying a rebound array in)."""
        for name, p, v in zip(self.names, self.params, self.views):
            if p.grad is not v:
                _check_grad(name, p, func)
                v[...] = p.grad
                p.grad = v

    @property
    def nbytes(self):
        return self.buffer.nbytes


class DistributedDataParallel(Module):
    """Wrap a cnnext model for data-parallel training: same weights everywhere, averaged gradients.

    At construction rank 0's parameters are broadcast to every rank. ``backward`` runs the wrapped
    model's backward and then averages the parameter gradients over all ranks with one in-place
    ``Allreduce`` per bucket, so every rank's optimizer takes the same step.

    Parameters
    ----------
    module : cnnext.nn.Module
        The model, built the same way on every rank (checked: names, shapes and dtypes).
    comm : mpi4py.MPI.Comm, optional
        Defaults to ``MPI.COMM_WORLD``.
    bucket_cap_mb : float
        Largest gradient bucket in MiB (a parameter larger than that gets a bucket of its own).
    broadcast_parameters : bool
        Copy rank 0's parameters to the other ranks at construction.

    Attributes
    ----------
    module : Module
        The wrapped model (save ``ddp.module`` to get the plain model's ``state_dict`` keys).
    rank, world_size : int
    allreduce_times : list of float
        Seconds spent in the gradient ``Allreduce`` calls (with the small check before them), one
        entry per synchronisation (step).

    Notes
    -----
    Gradients are averaged (summed then divided by ``world_size``), which matches a mean-reduced
    loss over the union of equal-sized per-rank batches. Use ``no_sync()`` to accumulate local
    gradients over several backward passes before one synchronised pass.

    Change the model after wrapping on every rank alike or not at all. Before each collective the
    ranks compare their parameter names, shapes and dtypes and their buckets (one small fixed-size
    ``Allreduce``); a model converted or changed on some ranks only raises RuntimeError on every
    rank. Layers replaced on every rank get their new weights broadcast only by
    ``broadcast_parameters()``; replacing them on some ranks only is refused like the rest.

    Examples
    --------
    >>> ddp = DistributedDataParallel(model)
    >>> loss = criterion(ddp(xb), yb)
    >>> _ = ddp.backward(criterion.backward())
    >>> opt.step()
    """

    def __init__(self, module, comm=None, bucket_cap_mb=25.0, broadcast_parameters=True):
        func = "DistributedDataParallel"
        super().__init__()
        self.comm = get_comm(comm)
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.allreduce_times = []
        self._sync = True
        self._buckets, self._layout, self._replaced = [], None, False
        self._numel, self._layout_digest, self._description = 0, 0, {}
        error = None
        try:  # a failure here on one rank is raised on every rank by _agree (the others would hang)
            if not isinstance(module, Module):
                raise TypeError(f"{func}: module must be a cnnext.nn.Module, got {type(module).__name__}")
            bucket_cap_mb = check_float(bucket_cap_mb, "bucket_cap_mb", func, minimum=0.0, open_min=True)
            self.bucket_cap_bytes = int(bucket_cap_mb * 2 ** 20)
            self.module = module
            self._build_buckets(func)
        except Exception as exc:
            error = exc
        # the same names, shapes, dtypes and buckets on every rank
        _agree(self.comm, func, _WRAP, self._numel, self._layout_digest, lambda: self._description, error,
               exc_type=ValueError)
        self._replaced = False
        if broadcast_parameters:
            self.broadcast_parameters()

    # -- setup ------------------------------------------------------------------------------
    def _layout_key(self):
        return tuple((id(p), p.data.shape, p.data.dtype) for p in self.module.parameters())

    def _build_buckets(self, func):
        self._layout = None  # until the new buckets are complete: a failure rebuilds next time
        named = list(self.module.named_parameters())
        key = tuple((id(p), p.data.shape, p.data.dtype) for _, p in named)
        # Reverse registration order: the last layers' gradients come first in backward.
        rev = named[::-1]
        buckets = []
        for dt in sorted({p.data.dtype.str for _, p in rev}):
            group, nbytes = [], 0
            for item in rev:
                p = item[1]
                if p.data.dtype.str != dt:
                    continue
                if group and nbytes + p.data.nbytes > self.bucket_cap_bytes:
                    buckets.append(_Bucket(np.dtype(dt), [q for _, q in group], [n for n, _ in group], func))
                    group, nbytes = [], 0
                group.append(item)
                nbytes += p.data.nbytes
            if group:
                buckets.append(_Bucket(np.dtype(dt), [q for _, q in group], [n for n, _ in group], func))
        desc = {"number of parameters": len(named),
                "parameter dtypes": [f"{n}: {p.data.dtype.name}" for n, p in named],
                "parameter shapes": [f"{n}: {tuple(p.data.shape)}" for n, p in named],
                "gradient elements": int(sum(p.data.size for _, p in named)),
                "gradient buckets (dtype x elements)": [f"{b.dtype.name} x {b.buffer.size}" for b in buckets]}
        self._buckets = buckets
        self._description = desc
        self._numel = desc["gradient elements"]
        self._layout_digest = _digest(desc)
        self._layout = key
        self._replaced = True

    def _refresh(self, func):
        """Rebuild the buckets if the parameters were converted (``to``) or replaced; re-attach the grads."""
        if self._layout != self._layout_key():
            self._build_buckets(func)
        for b in self._buckets:
            b.attach(func)

    @property
    def buckets(self):
        """List of (dtype, number of parameters, bytes) of the gradient buckets."""
        return [(b.dtype, len(b.params), b.nbytes) for b in self._buckets]

    def broadcast_parameters(self, root=0):
        """Copy the parameters of rank ``root`` to every rank (one ``Bcast`` per bucket).

        Every rank must hold the same parameter names, shapes and dtypes (checked first, raising
        on every rank); call it on every rank, e.g. after changing the model alike everywhere.
        """
        func = "DistributedDataParallel.broadcast_parameters"
        error = None
        try:
            root = check_int(root, "root", func, minimum=0)
            if root >= self.world_size:
                raise ValueError(f"{func}: root must be in [0, world_size={self.world_size}), got {root}")
            self._refresh(func)
        except Exception as exc:
            error = exc
        _agree(self.comm, func, _BCAST, self._numel, self._layout_digest,
               lambda: dict(self._description, root=root), error, extra=root if error is None else 0)
        self._replaced = False  # the weights are the same everywhere again
        if self.world_size == 1:
            return
        for b in self._buckets:
            buf = np.concatenate([p.data.reshape(-1) for p in b.params])
            self.comm.Bcast(buf, root=root)
            off = 0
            for p in b.params:
                p.data[...] = buf[off:off + p.data.size].reshape(p.data.shape)
                off += p.data.size

    # -- computation ------------------------------------------------------------------------
    def forward(self, *args):
        """Run the wrapped model's forward."""
        return self.module(*args)

    def backward(self, grad_output, input_grad=True):
        """Back-propagate through the wrapped model, then average the gradients over the ranks.

        Parameters
        ----------
        grad_output : ndarray
            d loss / d output of the last forward.
        input_grad : bool
            Passed to the wrapped model (False: the input gradient may be skipped).

        Returns
        -------
        ndarray or None
            The wrapped model's input gradient (local to this rank, not averaged).
        """
        g = self.module.backward(grad_output, input_grad=input_grad)
        if self._sync:
            self.sync_gradients()
        return g

    def sync_gradients(self):
        """Average every parameter gradient over the ranks in place; return the seconds spent.

        First one small fixed-size ``Allreduce`` checks that every rank's gradient buffers match
        (the parameters' names, shapes and dtypes, and the buckets): a model converted or changed
        on some ranks only after wrapping, or a rank whose gradients cannot be gathered, raises
        RuntimeError (or that rank's own error) on every rank instead of aborting the MPI job.
        """
        func = "DistributedDataParallel.sync_gradients"
        error = None
        try:
            self._refresh(func)
        except Exception as exc:
            error = exc
        t0 = time.perf_counter()
        _agree(self.comm, func, _GRADS, self._numel, self._layout_digest, self._grad_details, error,
               extra=int(self._replaced))
        self._replaced = False
        if self.world_size == 1:
            self.allreduce_times.append(0.0)
            return 0.0
        MPI = _mpi()
        for b in self._buckets:
            self.comm.Allreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
        elapsed = time.perf_counter() - t0
        for b in self._buckets:
            b.buffer /= self.world_size
        self.allreduce_times.append(elapsed)
        return elapsed

    def _grad_details(self):
        return dict(self._description, **{"parameters replaced or converted since the last synchronisation":
                                          "yes" if self._replaced else "no"})

    @contextlib.contextmanager
    def no_sync(self):
        """Context manager: backward passes inside accumulate local gradients without communicating.

        The next ``backward`` outside the block averages the accumulated gradients.
        """
        old = self._sync
        self._sync = False
        try:
            yield self
        finally:
            self._sync = old

    def allreduce_stats(self):
        """Summary of ``allreduce_times``: steps, total seconds, mean and median milliseconds per step."""
        t = np.asarray(self.allreduce_times, dtype=np.float64)
        if t.size == 0:
            return {"steps": 0, "total_s": 0.0, "mean_ms": 0.0, "median_ms": 0.0}
        return {"steps": int(t.size), "total_s": float(t.sum()), "mean_ms": float(t.mean() * 1e3),
                "median_ms": float(np.median(t) * 1e3)}

    def extra_repr(self):
        return f"world_size={self.world_size}, rank={self.rank}, buckets={len(self._buckets)}"
