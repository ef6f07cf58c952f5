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
- Every synchronisation is timed (``allreduce_times``); the time includes waiting for the slowest
  rank to reach the collective.
"""
import contextlib
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
        The same length on every rank.
    comm : mpi4py.MPI.Comm, optional

    Returns
    -------
    ndarray of float64, shape (k,)
        Identical on every rank.
    """
    comm = get_comm(comm)
    buf = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if comm.Get_size() > 1:
        comm.Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)
    return buf


def reduce_metrics(metrics, comm=None):
    """Sum named metrics (loss sums, correct counts, sample counts) over all ranks.

    Parameters
    ----------
    metrics : mapping of str to float
        The same keys on every rank (they are sorted, so the order need not match).
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
    if not hasattr(metrics, "items"):
        raise TypeError(f"reduce_metrics: metrics must be a mapping of names to numbers, "
                        f"got {type(metrics).__name__}")
    keys = sorted(metrics)
    try:
        vals = [float(metrics[k]) for k in keys]
    except (TypeError, ValueError):
        raise TypeError(f"reduce_metrics: every metric must be a number, got {dict(metrics)!r}") from None
    sums = allreduce_sum(vals, comm)
    return OrderedDict(zip(keys, sums.tolist()))


# ---------------------------------------------------------------------------------------------
# the model wrapper
# ---------------------------------------------------------------------------------------------
class _Bucket:
    """One contiguous gradient buffer of a single dtype and the parameters whose grads view it."""

    __slots__ = ("dtype", "buffer", "params", "views")

    def __init__(self, dtype, params):
        self.dtype = dtype
        self.params = params
        self.buffer = np.zeros(sum(p.data.size for p in params), dtype=dtype)
        self.views = []
        off = 0
        for p in params:
            v = self.buffer[off:off + p.data.size].reshape(p.data.shape)
            v[...] = p.grad
            p.grad = v
            self.views.append(v)
            off += p.data.size

    def attach(self):
        """Make every ``p.grad`` the bucket's view again (copying a rebound array in)."""
        for p, v in zip(self.params, self.views):
            if p.grad is not v:
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
        Seconds spent in the gradient ``Allreduce`` calls, one entry per synchronisation (step).

    Notes
    -----
    Gradients are averaged (summed then divided by ``world_size``), which matches a mean-reduced
    loss over the union of equal-sized per-rank batches. Use ``no_sync()`` to accumulate local
    gradients over several backward passes before one synchronised pass. Parameters must not be
    added or removed after wrapping.

    Examples
    --------
    >>> ddp = DistributedDataParallel(model)
    >>> loss = criterion(ddp(xb), yb)
    >>> _ = ddp.backward(criterion.backward())
    >>> opt.step()
    """

    def __init__(self, module, comm=None, bucket_cap_mb=25.0, broadcast_parameters=True):
        func = "DistributedDataParallel"
        if not isinstance(module, Module):
            raise TypeError(f"{func}: module must be a cnnext.nn.Module, got {type(module).__name__}")
        bucket_cap_mb = check_float(bucket_cap_mb, "bucket_cap_mb", func, minimum=0.0, open_min=True)
        super().__init__()
        self.module = module
        self.comm = get_comm(comm)
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.bucket_cap_bytes = int(bucket_cap_mb * 2 ** 20)
        self.allreduce_times = []
        self._sync = True
        self._buckets = []
        self._layout = None
        self._check_same_model()
        self._build_buckets()
        if broadcast_parameters:
            self.broadcast_parameters()

    # -- setup ------------------------------------------------------------------------------
    def _signature(self):
        return [(name, tuple(p.data.shape), p.data.dtype.str) for name, p in self.module.named_parameters()]

    def _check_same_model(self):
        sig = self._signature()
        if self.world_size == 1:
            return
        all_sigs = self.comm.allgather(sig)  # every rank compares, so every rank raises alike
        for r, s in enumerate(all_sigs):
            if s != all_sigs[0]:
                raise ValueError(f"DistributedDataParallel: the model on rank {r} differs from rank 0's "
                                 f"(parameters {s} vs {all_sigs[0]}); build the same model on every rank")

    def _layout_key(self):
        return tuple((id(p), p.data.shape, p.data.dtype.str) for p in self.module.parameters())

    def _build_buckets(self):
        # Reverse registration order: the last layers' gradients come first in backward.
        params = list(self.module.parameters())[::-1]
        buckets = []
        for dt in sorted({p.data.dtype.str for p in params}):
            group, nbytes = [], 0
            for p in params:
                if p.data.dtype.str != dt:
                    continue
                if group and nbytes + p.data.nbytes > self.bucket_cap_bytes:
                    buckets.append(_Bucket(np.dtype(dt), group))
                    group, nbytes = [], 0
                group.append(p)
                nbytes += p.data.nbytes
            if group:
                buckets.append(_Bucket(np.dtype(dt), group))
        self._buckets = buckets
        self._layout = self._layout_key()

    @property
    def buckets(self):
        """List of (dtype, number of parameters, bytes) of the gradient buckets."""
        return [(b.dtype, len(b.params), b.nbytes) for b in self._buckets]

    def broadcast_parameters(self, root=0):
        """Copy the parameters of rank ``root`` to every rank (one ``Bcast`` per bucket)."""
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
        """Average every parameter gradient over the ranks in place; return the seconds spent."""
        if self._layout != self._layout_key():  # parameters converted (``to``) or replaced
            self._build_buckets()
        for b in self._buckets:
            b.attach()
        if self.world_size == 1:
            self.allreduce_times.append(0.0)
            return 0.0
        MPI = _mpi()
        t0 = time.perf_counter()
        for b in self._buckets:
            self.comm.Allreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
        elapsed = time.perf_counter() - t0
        for b in self._buckets:
            b.buffer /= self.world_size
        self.allreduce_times.append(elapsed)
        return elapsed

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
