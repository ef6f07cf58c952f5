"""The training loop: ``fit`` a model over minibatches, ``evaluate`` it, ``predict`` with it.

One loop for everything that trains a cnnext model: user code, ``cnnext train`` and
``cnnext train --distributed`` (which passes a ``DistributedDataParallel`` model, a
``DistributedLoader`` and ``reduce=`` the MPI sum of the metrics)::

    from cnnext import nn, optim, training
    from cnnext.datasets import DataLoader, load_digits

    (X, y), (Xt, yt) = load_digits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = optim.Adam(model.parameters(), lr=0.01)
    history = training.fit(model, nn.CrossEntropyLoss(), opt,
                           DataLoader(X, y, batch_size=32, shuffle=True, seed=0), epochs=5,
                           scheduler=optim.CosineAnnealingLR(opt, T_max=5),
                           val_loader=DataLoader(Xt, yt, batch_size=256))
    history["val_accuracy"][-1]

Metrics
-------
A metric is ``"accuracy"`` (the fraction of samples whose largest output is the target class) or
a callable ``f(output, target)`` returning the *sum* of a per-sample score over the batch; the
loop adds these sums and the sample counts up and reports their ratio, so an epoch's value is the
exact mean over its samples however the batches fall (and over all workers, with ``reduce``).
"""
import math
import sys
import time

import numpy as np

from cnnext._validation import check_bool, check_choice, check_int
from cnnext.nn.module import Module

__all__ = ["fit", "evaluate", "predict", "Callback", "ProgressBar", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became inf or NaN (the learning rate is usually too large).

    Attributes
    ----------
    loss : float
        The non-finite value: a batch's loss, or the epoch's mean loss when ``fit`` had ``reduce``.
    epoch : int
        The epoch, counted from 1.
    step : int or None
        The minibatch of the epoch, counted from 0 (None: detected on the epoch's reduced loss).
    """

    def __init__(self, loss, epoch, step=None):
        where = f"epoch {epoch}" + ("" if step is None else f", step {step}")
        super().__init__(f"fit: the training loss became {loss} in {where}; try a smaller learning rate")
        self.loss, self.epoch, self.step = loss, epoch, step


class Callback:
    """Base class of ``fit``'s callbacks; override the hooks you need (each does nothing here).

    The hooks are called in this order: ``on_train_begin(info)``; per epoch ``on_epoch_begin(epoch)``,
    ``on_batch_end(step, logs)`` after every optimizer step, ``on_epoch_end(epoch, logs)`` after
    the validation pass; ``on_train_end(history)`` when ``fit`` returns or raises. ``epoch`` counts
    from 1, ``step`` from 0. A callback may raise to stop the training.
    """

    def on_train_begin(self, info):
        """``info``: dict with ``epochs`` and ``steps`` (minibatches per epoch, None if unknown)."""

    def on_epoch_begin(self, epoch):
        """Called before the first minibatch of ``epoch``."""

    def on_batch_end(self, step, logs):
        """``logs``: ``loss`` (this worker's running mean over the epoch), ``batch_loss``, ``batch_size``."""

    def on_epoch_end(self, epoch, logs):
        """``logs``: the values ``fit`` appends to the history for this epoch."""

    def on_train_end(self, history):
        """``history``: the dict ``fit`` returns (complete up to the last finished epoch)."""


class ProgressBar(Callback):
    """A tqdm progress bar per epoch with the running loss (``fit(progress=True)`` adds one).

    Parameters
    ----------
    file : file object, optional
        Where to draw (default: ``sys.stderr`` at the time the bar starts).
    loss_format : str
        ``str.format`` pattern of the running loss shown after the bar.
    **tqdm_options
        Passed to ``tqdm.tqdm`` (e.g. ``ascii=True``, ``disable=True``), over the defaults
        ``unit="batch", leave=False, dynamic_ncols=True, mininterval=0.1``.
    """

    def __init__(self, file=None, loss_format="{:.4f}", **tqdm_options):
        self.file = file
        self.loss_format = loss_format
        self.options = dict(unit="batch", leave=False, dynamic_ncols=True, mininterval=0.1)
        self.options.update(tqdm_options)
        self.bar = None
        self.epochs = self.steps = None

    def on_train_begin(self, info):
        self.epochs, self.steps = info["epochs"], info["steps"]

    def on_epoch_begin(self, epoch):
        from tqdm import tqdm

        self._close()
        width = len(str(self.epochs))
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch:>{width}}/{self.epochs}",
                        file=self.file if self.file is not None else sys.stderr, **self.options)

    def on_batch_end(self, step, logs):
        self.bar.set_postfix(loss=self.loss_format.format(logs["loss"]), refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, epoch, logs):
        if self.bar is not None:
            self.bar.refresh()  # show the finished epoch (all batches, final running loss) before clearing
        self._close()

    def on_train_end(self, history):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _count_correct(output, target):
    return int(np.count_nonzero(np.asarray(output).argmax(axis=1) == target))


_METRICS = {"accuracy": _count_correct}


def _metric_functions(metrics, func):
    """Return {name: function} for ``metrics`` (a name, a callable, a sequence of them or a dict)."""
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        if isinstance(metrics, str) or callable(metrics):
            metrics = (metrics,)
        items = [(getattr(m, "__name__", None), m) if callable(m) else (m, None) for m in metrics]
    out = {}
    for name, fn in items:
        if fn is None:
            name = check_choice(name, "metrics", func, tuple(_METRICS))
            fn = _METRICS[name]
        elif not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{func}: metrics must be names, named functions or a dict of them, got {fn!r}")
        elif not callable(fn):
            raise TypeError(f"{func}: metric {name!r} must be callable, got {type(fn).__name__}")
        out[name] = fn
    return out


def _loss_sum(loss_fn, loss, n):
    """The batch's summed loss from what ``loss_fn`` returned (a mean unless reduction='sum')."""
    return loss if getattr(loss_fn, "reduction", "mean") == "sum" else loss * n


def _means(sums, reduce):
    """Reduce the sums (over workers) and divide by the sample count; NaN when there were none."""
    if reduce is not None:
        sums = dict(reduce(dict(sums)))
    count = sums.pop("count")
    means = {k: (v / count if count else math.nan) for k, v in sums.items()}
    return means, int(count)


def _eval_batches(model, batches):
    """Yield ``(output, batch)`` for each batch with ``model`` in eval mode, restoring its mode after."""
    mode = getattr(model, "training", True)
    model.eval()
    try:
        for batch in batches:
            yield model(batch[0] if isinstance(batch, tuple) else batch), batch
    finally:
        model.train(mode)


def _check_model(model, func):
    if not isinstance(model, Module):
        raise TypeError(f"{func}: model must be a cnnext.nn.Module, got {type(model).__name__}")


def predict(model, X, batch_size=256):
    """Return the model's outputs for the samples of ``X``, computed ``batch_size`` at a time.

    The model runs in eval mode (Dropout off); its training mode is restored afterwards.

    Parameters
    ----------
    model : cnnext.nn.Module
    X : ndarray, shape (N, ...)
    batch_size : int

    Returns
    -------
    ndarray, shape (N, ...)
        The outputs concatenated (an empty (0, 0) array when N is 0).
    """
    _check_model(model, "predict")
    batch_size = check_int(batch_size, "batch_size", "predict", minimum=1)
    X = np.asarray(X)
    slices = (X[i:i + batch_size] for i in range(0, X.shape[0], batch_size))
    out = [o for o, _ in _eval_batches(model, slices)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(model, loader, loss_fn=None, metrics=("accuracy",), reduce=None, return_outputs=False):
    """Return the mean loss and metrics of ``model`` over the ``(inputs, targets)`` batches of ``loader``.

    The model runs in eval mode; its training mode is restored afterwards.

    Parameters
    ----------
    model : cnnext.nn.Module
    loader : iterable of (ndarray, ndarray)
        E.g. ``cnnext.datasets.DataLoader(X, y, batch_size=256)``.
    loss_fn : cnnext.nn loss module, optional
        ``loss_fn(output, target)`` returns the batch's mean loss (or its sum, with
        ``reduction='sum'``); without it no ``loss`` is reported.
    metrics : sequence of str or callable
        See the module docstring; default: accuracy.
    reduce : callable, optional
        Maps the dict of sums (metric sums, ``"loss"``, ``"count"``) to their totals over all
        workers, e.g. ``functools.partial(cnnext.distributed.reduce_metrics, comm=comm)``, when
        each worker evaluates its own part of the data.
    return_outputs : bool
        Also return this worker's outputs, concatenated, under ``"outputs"``.

    Returns
    -------
    dict
        ``"loss"`` (with ``loss_fn``), one entry per metric (means per sample, NaN for no
        samples), ``"count"`` (the number of samples) and, if asked, ``"outputs"``.
    """
    func = "evaluate"
    _check_model(model, func)
    check_bool(return_outputs, "return_outputs", func)
    return _evaluate(model, loader, loss_fn, _metric_functions(metrics, func), reduce, return_outputs)


def _evaluate(model, loader, loss_fn, fns, reduce, return_outputs=False):
    sums = dict.fromkeys((["loss"] if loss_fn is not None else []) + list(fns), 0.0)
    sums["count"] = 0
    outputs = []
    for out, (_, yb) in _eval_batches(model, loader):
        n = len(yb)
        if loss_fn is not None:
            sums["loss"] += _loss_sum(loss_fn, float(loss_fn(out, yb)), n)
        for name, fn in fns.items():
            sums[name] += fn(out, yb)
        sums["count"] += n
        if return_outputs:
            outputs.append(out)
    result, result["count"] = _means(sums, reduce)
    if return_outputs:
        result["outputs"] = np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)
    return result


def fit(model, loss_fn, optimizer, loader, epochs, scheduler=None, scheduler_interval="epoch",
        metrics=("accuracy",), val_loader=None, callbacks=(), progress=True, reduce=None):
    """Train ``model`` for ``epochs`` passes over ``loader``; return the per-epoch history.

    Each minibatch ``(xb, yb)``: ``optimizer.zero_grad()``, ``out = model(xb)``,
    ``loss_fn(out, yb)``, ``model.backward(loss_fn.backward(), input_grad=False)``,
    ``optimizer.step()``, then ``scheduler.step()`` when ``scheduler_interval='batch'``. After
    each epoch: the scheduler's epoch step, the validation pass over ``val_loader`` and the
    callbacks' ``on_epoch_end``.

    Parameters
    ----------
    model : cnnext.nn.Module
        Put in training mode at the start of every epoch.
    loss_fn : cnnext.nn loss module
        E.g. ``nn.CrossEntropyLoss()``; ``loss_fn(out, yb)`` returns a float and
        ``loss_fn.backward()`` the gradient of the last call.
    optimizer : cnnext.optim.Optimizer
    loader : iterable of (ndarray, ndarray)
        Iterated once per epoch (``cnnext.datasets.DataLoader`` reshuffles each time). A loader
        with ``set_epoch`` (``cnnext.distributed.DistributedLoader``) is told the epoch, from 0,
        before each pass.
    epochs : int
        Number of passes, >= 1.
    scheduler : cnnext.optim.lr_scheduler.LRScheduler, optional
        E.g. ``CosineAnnealingLR(optimizer, T_max=epochs)``, or with ``T_max=epochs * len(loader)``
        and ``scheduler_interval='batch'``.
    scheduler_interval : {'epoch', 'batch'}
        Step the scheduler after every epoch (default) or after every optimizer step.
    metrics : sequence of str or callable
        Training (and validation) metrics; see the module docstring. Default: accuracy.
    val_loader : iterable of (ndarray, ndarray), optional
        Evaluated after every epoch; its results appear as ``val_loss`` and ``val_<metric>``.
    callbacks : sequence of Callback
    progress : bool
        Show a ``ProgressBar`` (on stderr) before the other callbacks.
    reduce : callable, optional
        Maps a dict of sums to their totals over all workers (see ``evaluate``). With it the
        epoch metrics are those of all workers, and a non-finite loss is detected on the
        reduced epoch loss, so every worker stops at the same point.

    Returns
    -------
    dict of lists
        One entry per epoch under ``epoch`` (from 1), ``loss``, each metric, ``val_loss`` and
        ``val_<metric>`` (with ``val_loader``), ``lr`` (the first group's rate at the start of the
        epoch), ``samples`` (training samples of the epoch, over all workers with ``reduce``) and
        ``seconds`` (this worker's time in the training pass).

    Raises
    ------
    NonFiniteLossError
        When the training loss becomes inf or NaN (after the step that produced it).
    """
    func = "fit"
    _check_model(model, func)
    epochs = check_int(epochs, "epochs", func, minimum=1)
    interval = check_choice(scheduler_interval, "scheduler_interval", func, ("epoch", "batch"))
    check_bool(progress, "progress", func)
    fns = _metric_functions(metrics, func)
    for obj, name, needs in ((loss_fn, "loss_fn", ("backward",)), (optimizer, "optimizer", ("step", "zero_grad")),
                             (scheduler, "scheduler", ("step",))):
        if (obj is not None or name != "scheduler") and not all(callable(getattr(obj, a, None)) for a in needs):
            raise TypeError(f"{func}: {name} must have {' and '.join(f'{a}()' for a in needs)}, "
                            f"got {type(obj).__name__}")
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"{func}: loader must be an iterable of (inputs, targets) batches, got "
                        f"{type(loader).__name__}")
    callbacks = ([ProgressBar()] if progress else []) + list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"{func}: callbacks must be cnnext.training.Callback objects, got "
                            f"{type(cb).__name__}")
    steps = len(loader) if hasattr(loader, "__len__") else None

    history = {"epoch": []}
    for cb in callbacks:
        cb.on_train_begin({"epochs": epochs, "steps": steps})
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            if callable(getattr(loader, "set_epoch", None)):
                loader.set_epoch(epoch - 1)
            lr = float(optimizer.param_groups[0]["lr"]) if getattr(optimizer, "param_groups", None) else math.nan
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            t0 = time.perf_counter()
            sums = dict.fromkeys(["loss"] + list(fns), 0.0)
            sums["count"] = 0
            for step, (xb, yb) in enumerate(loader):
                optimizer.zero_grad()
                out = model(xb)
                loss = float(loss_fn(out, yb))
                model.backward(loss_fn.backward(), input_grad=False)
                optimizer.step()
                if scheduler is not None and interval == "batch":
                    scheduler.step()
                if reduce is None and not math.isfinite(loss):
                    raise NonFiniteLossError(loss, epoch, step)
                n = len(yb)
                sums["loss"] += _loss_sum(loss_fn, loss, n)
                for name, fn in fns.items():
                    sums[name] += fn(out, yb)
                sums["count"] += n
                logs = {"loss": sums["loss"] / sums["count"], "batch_loss": loss, "batch_size": n}
                for cb in callbacks:
                    cb.on_batch_end(step, logs)
            seconds = time.perf_counter() - t0
            logs, samples = _means(sums, reduce)
            if samples == 0:  # with reduce: the same verdict on every worker
                raise ValueError(f"{func}: loader gave no samples in epoch {epoch}")
            if not math.isfinite(logs["loss"]):  # with reduce: the same verdict on every worker
                raise NonFiniteLossError(logs["loss"], epoch)
            if scheduler is not None and interval == "epoch":
                scheduler.step()
            if val_loader is not None:
                val = _evaluate(model, val_loader, loss_fn, fns, reduce)
                logs.update({f"val_{k}": v for k, v in val.items() if k != "count"})
            logs.update(lr=lr, samples=samples, seconds=seconds)
            history["epoch"].append(epoch)
            for k, v in logs.items():
                history.setdefault(k, []).append(v)
            for cb in callbacks:
                cb.on_epoch_end(epoch, dict(logs))
    finally:
        for cb in callbacks:
            cb.on_train_end(history)
    return history
