"""Data-parallel training over MPI: a gradient-averaging model wrapper, a sharding sampler, metrics.

Needs the optional extra ``pip install "cnnext[mpi]"`` (mpi4py plus the MPICH wheel; on a cluster
build mpi4py against the system MPI instead). ``mpi4py`` is imported only when a communicator is
needed, so ``import cnnext.distributed`` always works and ``DistributedSampler`` with explicit
``num_replicas``/``rank`` runs without MPI.

One training step on every rank::

    from cnnext import distributed as dist
    ddp = dist.DistributedDataParallel(model)        # rank 0's weights are broadcast to all ranks
    sampler = dist.DistributedSampler(len(X), seed=0)
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in sampler.minibatches(X, y, batch_size):   # this rank's shard
            opt.zero_grad()
            loss = criterion(ddp(xb), yb)
            ddp.backward(criterion.backward())               # gradients averaged over the ranks
            opt.step()

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
import os
import sys
import time
from collections import OrderedDict

import numpy as np

from cnnext.nn.module import Module

__all__ = [
    "DistributedDataParallel",
    "DistributedSampler",
    "get_comm",
    "allreduce_sum",
    "reduce_metrics",
    "shard_range",
    "train_cli",
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


def _check_int(value, name, owner, minimum=0):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


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
        owner = "DistributedSampler"
        self.n_samples = _check_int(n_samples, "n_samples", owner, 1)
        if num_replicas is None or rank is None:
            c = get_comm(comm)
            num_replicas = c.Get_size() if num_replicas is None else num_replicas
            rank = c.Get_rank() if rank is None else rank
        self.num_replicas = _check_int(num_replicas, "num_replicas", owner, 1)
        self.rank = _check_int(rank, "rank", owner, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"{owner}: rank must be in [0, num_replicas={self.num_replicas}), got {self.rank}")
        self.seed = _check_int(seed, "seed", owner, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if self.drop_last:
            self.num_samples = self.n_samples // self.num_replicas
            if self.num_samples == 0:
                raise ValueError(f"{owner}: n_samples={self.n_samples} < num_replicas={self.num_replicas} "
                                 f"leaves every rank empty with drop_last=True; use drop_last=False")
        else:
            self.num_samples = -(-self.n_samples // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the epoch whose permutation ``indices`` returns (call it on every rank)."""
        self.epoch = _check_int(epoch, "epoch", "DistributedSampler.set_epoch", 0)

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
        batch_size = _check_int(batch_size, "batch_size", "DistributedSampler.num_batches", 1)
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
        owner = "DistributedSampler.minibatches"
        batch_size = _check_int(batch_size, "batch_size", owner, 1)
        X = np.asarray(X)
        if X.ndim < 1 or X.shape[0] != self.n_samples:
            raise ValueError(f"{owner}: X must have n_samples={self.n_samples} rows, got shape {X.shape}")
        if y is not None:
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != self.n_samples:
                raise ValueError(f"{owner}: y must have n_samples={self.n_samples} rows, got shape {y.shape}")
        idx = self.indices()
        for start in range(0, idx.size, batch_size):
            b = idx[start:start + batch_size]
            yield (X[b], y[b]) if y is not None else X[b]

    def __repr__(self):
        return (f"DistributedSampler(n_samples={self.n_samples}, num_replicas={self.num_replicas}, "
                f"rank={self.rank}, shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")


def shard_range(n, rank, size):
    """Return ``(start, stop)`` of rank ``rank``'s contiguous block of ``range(n)`` among ``size`` ranks.

    The blocks differ in length by at most one and cover ``range(n)`` exactly once (no padding),
    which is what evaluation needs: the summed metrics count every sample once.
    """
    n = _check_int(n, "n", "shard_range", 0)
    size = _check_int(size, "size", "shard_range", 1)
    rank = _check_int(rank, "rank", "shard_range", 0)
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
        owner = "DistributedDataParallel"
        if not isinstance(module, Module):
            raise TypeError(f"{owner}: module must be a cnnext.nn.Module, got {type(module).__name__}")
        if isinstance(bucket_cap_mb, (bool, np.bool_)) or not isinstance(bucket_cap_mb, (int, float, np.number)):
            raise TypeError(f"{owner}: bucket_cap_mb must be a number, got {bucket_cap_mb!r}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"{owner}: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        super().__init__()
        self.module = module
        self.comm = get_comm(comm)
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.bucket_cap_bytes = int(float(bucket_cap_mb) * 2 ** 20)
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


# ---------------------------------------------------------------------------------------------
# ``python -m cnnext train --distributed``
# ---------------------------------------------------------------------------------------------
def _make_optimizer(name, params, lr, weight_decay):
    """The CLI's optimizers: sgd (momentum 0.9), adam, adamw (weight decay 1e-2 by default)."""
    from cnnext import optim

    if name == "sgd":
        wd = weight_decay or 0.0
        return optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd), \
            f"sgd lr={lr:g} momentum=0.9" + (f" weight_decay={wd:g}" if wd else "")
    if name == "adamw":
        wd = 1e-2 if weight_decay is None else weight_decay
        return optim.AdamW(params, lr=lr, weight_decay=wd), f"adamw lr={lr:g} weight_decay={wd:g}"
    wd = weight_decay or 0.0
    return optim.Adam(params, lr=lr, weight_decay=wd), f"adam lr={lr:g}" + (f" weight_decay={wd:g}" if wd else "")


def _evaluate_sharded(model, X, y, comm, batch_size=256):
    """Test loss and accuracy with each rank scoring a contiguous block (every sample counted once)."""
    from cnnext.functional import cross_entropy

    start, stop = shard_range(X.shape[0], comm.Get_rank(), comm.Get_size())
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(start, stop, batch_size):
        j = min(i + batch_size, stop)
        logits = model(X[i:j])
        loss_sum += float(cross_entropy(logits, y[i:j], "sum"))
        correct += int(np.sum(logits.argmax(axis=1) == y[i:j]))
    t = reduce_metrics({"loss_sum": loss_sum, "correct": correct, "count": stop - start}, comm)
    return t["loss_sum"] / t["count"], t["correct"] / t["count"]


def train_cli(args, cli):
    """Run ``python -m cnnext train --distributed`` on every rank of ``MPI.COMM_WORLD``.

    Launch with ``mpiexec -n N python -m cnnext train --distributed [options]``. The model, data and
    options are those of the plain ``train`` command; ``--batch-size`` is the batch of each rank
    (the global batch is N times larger). Each rank trains on its ``DistributedSampler`` shard,
    gradients are averaged with ``DistributedDataParallel``, per-epoch metrics are reduced over
    the ranks, and only rank 0 prints and saves the model. At the end rank 0 reports the training
    throughput and the time spent in the gradient ``Allreduce``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``train`` options.
    cli : module
        ``cnnext.__main__`` (its data loading, model builder, thread setting, plotting and the
        ``_UsageError`` it reports as one line).

    Returns
    -------
    int
        Exit status (0).
    """
    from tqdm import tqdm

    from cnnext import nn, save
    from cnnext._version import __version__

    try:
        comm = get_comm()
    except ImportError as exc:
        raise cli._UsageError(f"--distributed: {exc}") from None
    rank, size = comm.Get_rank(), comm.Get_size()
    lead = rank == 0

    def say(*a, **k):
        if lead:
            print(*a, **k, flush=True)

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise cli._UsageError("--plot needs matplotlib: pip install 'cnnext[plot]' (or matplotlib)") from None
    if (args.download or args.dataset != "mnist") and args.data is None:
        raise cli._UsageError("--download and --dataset need --data DIR")
    save_path = args.save or ("cnnext_digits.npz" if args.data is None else "cnnext_mnist.npz")
    save_dir = os.path.dirname(os.path.abspath(save_path))
    if not os.path.isdir(save_dir):
        raise cli._UsageError(f"--save {save_path}: directory {save_dir} does not exist")
    cli._set_threads(args.threads)
    if args.download:  # one rank downloads, the others then read the verified files
        if lead:
            cli._load_data(args.data, args.dataset, True)
        comm.Barrier()
    train, test, source, meta = cli._load_data(args.data, args.dataset, False)
    X, y = train
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    n_classes = int(max(y.max(), test.y.max())) + 1

    def run():  # from here on, an error on one rank must stop all of them (below)
        model = cli._build_model(X.shape[1:], args.channels, n_classes, np.random.default_rng(args.seed))
        ddp = DistributedDataParallel(model, comm=comm)
        lr = args.lr if args.lr is not None else cli._DEFAULT_LR[args.optimizer]
        opt, opt_desc = _make_optimizer(args.optimizer, ddp.parameters(), lr, args.weight_decay)
        criterion = nn.CrossEntropyLoss()
        sampler = DistributedSampler(X.shape[0], seed=args.seed, comm=comm)
        steps = sampler.num_batches(args.batch_size)

        n_params = sum(p.size for p in model.parameters())
        h, w = X.shape[2:]
        say(f"cnnext {__version__}: distributed training on {size} MPI rank{'s' * (size > 1)}, {source}: "
            f"{X.shape[0]} train / {test.X.shape[0]} test images of {h}x{w}, {n_classes} classes")
        say(f"model: {model}".replace("\n", "\n       "))
        say(f"       {n_params:,} parameters; {opt_desc}; batch size {args.batch_size} per rank "
            f"({args.batch_size * size} global); {steps} steps/epoch; {args.epochs} epochs; {args.schedule} "
            f"lr schedule; seed {args.seed}; {args.threads} thread{'s' * (args.threads > 1)} per rank; "
            f"{len(ddp.buckets)} gradient bucket{'s' * (len(ddp.buckets) > 1)}")
        history = {"epoch": [], "loss": [], "train_acc": [], "test_acc": [], "test_loss": []}
        width = len(str(args.epochs))
        t0 = time.perf_counter()
        train_time, images = 0.0, 0
        for epoch in range(1, args.epochs + 1):
            ddp.train()
            sampler.set_epoch(epoch - 1)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(total=steps, desc=f"epoch {epoch:>{width}}/{args.epochs}", unit="batch", leave=False,
                       file=sys.stderr, disable=args.no_progress or not lead, dynamic_ncols=True,
                       mininterval=0.1, ascii=True)  # ASCII: some MPI launchers (gforker) drop UTF-8
            te = time.perf_counter()
            for i, (xb, yb) in enumerate(sampler.minibatches(X, y, args.batch_size)):
                if args.schedule == "cosine":
                    frac = ((epoch - 1) * steps + i) / (args.epochs * steps)
                    for group in opt.param_groups:
                        group["lr"] = 0.5 * lr * (1.0 + np.cos(np.pi * frac))
                opt.zero_grad()
                logits = ddp(xb)
                loss = criterion(logits, yb)
                ddp.backward(criterion.backward(), input_grad=False)
                opt.step()
                loss_sum += loss * yb.shape[0]
                correct += int(np.sum(logits.argmax(axis=1) == yb))
                seen += yb.shape[0]
                if lead and not bar.disable:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f} (rank 0)", refresh=False)
                    bar.update(1)
            bar.refresh()
            bar.close()
            train_time += time.perf_counter() - te
            tot = reduce_metrics({"loss_sum": loss_sum, "correct": correct, "count": seen}, comm)
            images += int(tot["count"])
            if not np.isfinite(tot["loss_sum"]):  # the same verdict on every rank
                raise cli._UsageError(f"the loss diverged in epoch {epoch}; try a smaller --lr")
            test_loss, test_acc = _evaluate_sharded(model, *test, comm)
            history["epoch"].append(epoch)
            history["loss"].append(tot["loss_sum"] / tot["count"])
            history["train_acc"].append(tot["correct"] / tot["count"])
            history["test_acc"].append(test_acc)
            history["test_loss"].append(test_loss)
            say(f"epoch {epoch:>{width}}/{args.epochs}  loss {history['loss'][-1]:.4f}  "
                f"train acc {100 * history['train_acc'][-1]:5.1f}%  test loss {test_loss:.4f}  "
                f"test acc {100 * test_acc:5.1f}%  ({time.perf_counter() - t0:.1f} s)")
        elapsed = time.perf_counter() - t0
        ar = ddp.allreduce_stats()
        # per-rank figures averaged over the ranks: [allreduce seconds, steps, training seconds]
        sums = allreduce_sum([ar["total_s"], ar["steps"], train_time], comm)
        ar_ms = 1e3 * sums[0] / max(sums[1], 1)
        step_ms = 1e3 * sums[2] / max(sums[1], 1)
        final_acc = history["test_acc"][-1]
        n_test = test.X.shape[0]
        if lead:
            meta.update({"input_shape": list(X.shape[1:]), "classes": n_classes, "epochs": args.epochs,
                         "optimizer": args.optimizer, "lr": lr, "batch_size": args.batch_size, "seed": args.seed,
                         "test_accuracy": final_acc, "train_seconds": round(elapsed, 3),
                         "mpi_ranks": size, "global_batch_size": args.batch_size * size})
            model.eval()
            save(model, save_path, metadata=meta)
        say(f"test accuracy {100 * final_acc:.2f}% ({int(round(final_acc * n_test))}/{n_test}) "
            f"after {args.epochs} epochs in {elapsed:.1f} s")
        say(f"throughput {images / train_time:,.0f} images/s on {size} rank{'s' * (size > 1)} "
            f"({train_time:.2f} s of training steps); gradient Allreduce {ar_ms:.3f} ms per step "
            f"of {step_ms:.2f} ms ({100 * ar_ms / step_ms if step_ms else 0:.1f}%)")
        say(f"model saved to {save_path}")
        if lead and args.plot is not None:
            cli._plot(history, model, args.plot)
            say(f"plot saved to {args.plot}")
        comm.Barrier()  # rank 0 has saved: every rank exits with the file in place
        return 0

    try:
        return run()
    except cli._UsageError:  # raised alike on every rank (e.g. a diverged loss, reduced over the ranks)
        raise
    except Exception as exc:  # one rank failing alone would leave the others waiting forever
        try:
            print(f"cnnext train --distributed: rank {rank}: {type(exc).__name__}: {exc}; aborting all ranks",
                  file=sys.stderr, flush=True)
        except Exception:  # stderr itself may be the broken pipe
            pass
        comm.Abort(1)
        raise
