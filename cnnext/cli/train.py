"""``cnnext train``: a small CNN on the embedded digits or MNIST, in one process or over MPI ranks.

Both ways run ``cnnext.training.fit``. With ``--distributed`` (launched as ``mpiexec -n N cnnext
train --distributed``) the model is wrapped in ``cnnext.distributed.DistributedDataParallel``
(gradients averaged over the ranks in ``backward``), every rank trains on its
``DistributedLoader`` shard with ``--batch-size`` samples per step, the epoch metrics are summed
over the ranks with ``reduce_metrics``, and only rank 0 prints and saves. An error on one rank
alone aborts them all (the others would wait in a collective forever).
"""
import functools
import os
import sys
import time

import numpy as np

from cnnext._version import __version__
from cnnext.cli._common import (UsageError, check_memory, check_output_file, check_plot_available, nonneg_float,
                                nonneg_int, path_arg, positive_float, positive_int, set_threads, threads)
from cnnext.cli._data import load_data
from cnnext.training import Callback

DEFAULT_LR = {"adam": 0.01, "adamw": 0.01, "sgd": 0.05}


def add_parser(sub):
    t = sub.add_parser(
        "train", help="train a small CNN on the embedded digits (or MNIST)",
        description="Train conv(3x3)-relu-maxpool x2 + linear on the embedded 8x8 digits (1437 train / "
                    "360 test images) or, with --data, on MNIST-format IDX files. Shows a progress bar "
                    "per epoch, prints loss and accuracies per epoch and saves the model.")
    t.add_argument("--epochs", type=positive_int, default=12, help="passes over the training set (default 12)")
    t.add_argument("--batch-size", type=positive_int, default=32, help="minibatch size (default 32)")
    t.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default 0.01 for adam/adamw, 0.05 for sgd)")
    t.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                   help="adam (default), adamw (weight decay 1e-2) or sgd (momentum 0.9)")
    t.add_argument("--weight-decay", type=nonneg_float, default=None,
                   help="weight decay (default 0, or 1e-2 for adamw)")
    t.add_argument("--channels", type=positive_int, nargs=2, default=(16, 32), metavar=("C1", "C2"),
                   help="channels of the two conv layers (default 16 32)")
    t.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate schedule: cosine decay to 0 over the run (default) or constant")
    t.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the initial weights and the shuffling (default 0); same seed, same run")
    t.add_argument("--threads", type=threads, default=1,
                   help="threads for the kernels and BLAS (default 1: fastest for these small images)")
    t.add_argument("--data", metavar="DIR", type=path_arg, default=None,
                   help="train on MNIST/Fashion-MNIST IDX files in DIR instead of the embedded digits")
    t.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                   help="which published files --download fetches and checks (default mnist)")
    t.add_argument("--download", action="store_true",
                   help="with --data: download missing IDX files into DIR (SHA-256 verified)")
    t.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="train on the first N training images only")
    t.add_argument("--save", metavar="PATH", type=path_arg, default=None,
                   help="where to save the model (default ./cnnext_digits.npz or ./cnnext_mnist.npz)")
    t.add_argument("--plot", metavar="PATH", type=path_arg, default=None,
                   help="write a PNG of the loss/accuracy curves and first-layer filters (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: run as 'mpiexec -n N python -m cnnext train "
                        "--distributed'; --batch-size is per rank; needs pip install 'cnnext[mpi]'")
    t.set_defaults(run=run)


def build_model(in_shape, channels, n_classes, rng):
    """conv(3x3)-relu-maxpool x2 + linear for images of ``in_shape`` (C, H, W)."""
    from cnnext import nn

    c, h, w = in_shape
    c1, c2 = channels
    if h < 4 or w < 4:
        raise UsageError(f"images of size {h}x{w} are too small for two 2x2 poolings")
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (h // 2 // 2) * (w // 2 // 2), n_classes, rng=rng),
    )


def training_bytes(in_shape, channels, n_classes, batch):
    """Estimated peak memory of training ``build_model``'s network with Adam on batches of ``batch``.

    Parameters, gradients and two optimizer moments (4 float32 each, plus the float64 draw of the
    initial weights), and per image the activations kept for backward, their gradients and the
    im2col columns of both convolutions.
    """
    c, h, w = in_shape
    c1, c2 = channels
    h2, w2 = h // 2, w // 2
    params = c1 * c * 9 + c1 + c2 * c1 * 9 + c2 + n_classes * c2 * (h2 // 2) * (w2 // 2) + n_classes
    per_image = 3 * (c1 * h * w + c2 * h2 * w2) + 9 * (c * h * w + c1 * h2 * w2)
    return 4 * (4 * params + 2 * params + 2 * batch * per_image)


def check_save_path(path):
    """Raise UsageError unless the model can be saved to ``path`` (``--save``), before any training."""
    from cnnext.serialization import save_target

    try:
        target = save_target(path, func="--save")
    except FileNotFoundError:
        raise UsageError(f"--save {path}: directory {os.path.dirname(os.path.realpath(path))} "
                         f"does not exist") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--save {path}: {exc.strerror or exc}") from None
    check_output_file(path, "--save", target)


def check_plot_path(path, save_path):
    """Raise UsageError unless ``--plot path`` can be written as an image matplotlib knows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_output_file(path, "--plot")
    if os.path.realpath(path) == os.path.realpath(save_path):
        raise UsageError(f"--plot {path}: is the file --save writes the model to")
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    ext = os.path.splitext(path)[1][1:].lower()
    if ext and ext not in formats:
        raise UsageError(f"--plot {path}: matplotlib cannot write .{ext} images (known: "
                         f"{', '.join('.' + f for f in sorted(formats))})")


def make_optimizer(name, params, lr, weight_decay):
    """The command's optimizer settings (sgd: momentum 0.9; adamw: weight decay 1e-2 unless given).

    Returns
    -------
    (Optimizer, str)
        The optimizer and its description for the header line.
    """
    from cnnext.optim import create_optimizer

    options = {"lr": lr}
    if name == "sgd":
        options["momentum"] = 0.9
    if name == "adamw":
        options["weight_decay"] = 1e-2 if weight_decay is None else weight_decay
    elif weight_decay:
        options["weight_decay"] = weight_decay
    desc = " ".join([name] + [f"{k}={v:g}" for k, v in options.items()])
    return create_optimizer(name, params, **options), desc


class _EpochReport(Callback):
    """The per-epoch line of the command, printed by ``say``; ``t0`` is the start of the training."""

    def __init__(self, epochs, say):
        self.epochs, self.say, self.t0 = epochs, say, None

    def on_train_begin(self, info):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs):
        width = len(str(self.epochs))
        self.say(f"epoch {epoch:>{width}}/{self.epochs}  loss {logs['loss']:.4f}  "
                 f"train acc {100 * logs['accuracy']:5.1f}%  test loss {logs['val_loss']:.4f}  "
                 f"test acc {100 * logs['val_accuracy']:5.1f}%  ({time.perf_counter() - self.t0:.1f} s)")


def run(args):
    """Run the command (on every rank, with ``--distributed``); return the exit status."""
    comm = None
    if args.distributed:
        from cnnext.distributed import get_comm

        try:
            comm = get_comm()
        except ImportError as exc:
            raise UsageError(f"--distributed: {exc}") from None
    lead = comm is None or comm.Get_rank() == 0
    if args.plot is not None:
        check_plot_available()
    if (args.download or args.dataset != "mnist") and args.data is None:
        raise UsageError("--download and --dataset need --data DIR")
    save_path = args.save if args.save is not None else (
        "cnnext_digits.npz" if args.data is None else "cnnext_mnist.npz")
    # before the data is read and the model trained (on every rank alike): a bad path is found at once
    check_save_path(save_path)
    if args.plot is not None:
        check_plot_path(args.plot, save_path)
    set_threads(args.threads)
    download = args.download
    if download and comm is not None:  # one rank downloads, the others then read the verified files
        if lead:
            load_data(args.data, args.dataset, True)
        comm.Barrier()
        download = False
    train, test, source, meta = load_data(args.data, args.dataset, download)
    X, y = train
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    if X.shape[0] == 0 or test.X.shape[0] == 0:
        raise UsageError(f"{source} hold{'s' * (args.data is None)} {X.shape[0]} training and "
                         f"{test.X.shape[0]} test images; training needs at least one of each")
    n_classes = int(max(y.max(), test.y.max())) + 1
    batch = max(min(args.batch_size, X.shape[0]), min(256, test.X.shape[0]))  # 256: the test batches
    c1, c2 = args.channels
    check_memory(training_bytes(X.shape[1:], args.channels, n_classes, batch),
                 f"--channels {c1} {c2} with --batch-size {args.batch_size}",
                 "use fewer --channels or a smaller --batch-size")
    if comm is None:
        return _train(args, X, y, test, source, meta, save_path)
    try:  # from here on, an error on one rank must stop all of them
        return _train(args, X, y, test, source, meta, save_path, comm)
    except UsageError:  # raised alike on every rank (e.g. a diverged loss, reduced over the ranks)
        raise
    except Exception as exc:  # one rank failing alone would leave the others waiting forever
        try:
            print(f"cnnext train --distributed: rank {comm.Get_rank()}: {type(exc).__name__}: {exc}; "
                  f"aborting all ranks", file=sys.stderr, flush=True)
        except Exception:  # stderr itself may be the broken pipe
            pass
        comm.Abort(1)
        raise


def _train(args, X, y, test, source, meta, save_path, comm=None):
    from cnnext import nn, save
    from cnnext.datasets import DataLoader
    from cnnext.optim import CosineAnnealingLR
    from cnnext.training import NonFiniteLossError, ProgressBar, fit

    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    lead = rank == 0

    def say(*a):
        if lead:
            print(*a, flush=True)

    n_classes = int(max(y.max(), test.y.max())) + 1
    model = build_model(X.shape[1:], args.channels, n_classes, np.random.default_rng(args.seed))
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    Xt, yt = test
    if comm is None:
        net, reduce = model, None
        loader = DataLoader(X, y, batch_size=args.batch_size, shuffle=True, seed=args.seed + 1)
    else:
        from cnnext import distributed as dist

        net = dist.DistributedDataParallel(model, comm=comm)
        loader = dist.DistributedLoader(X, y, batch_size=args.batch_size, seed=args.seed, comm=comm)
        start, stop = dist.shard_range(Xt.shape[0], rank, size)  # each rank scores a block, once each
        Xt, yt = Xt[start:stop], yt[start:stop]
        reduce = functools.partial(dist.reduce_metrics, comm=comm)
    opt, opt_desc = make_optimizer(args.optimizer, net.parameters(), lr, args.weight_decay)
    steps = len(loader)

    n_params = sum(p.size for p in model.parameters())
    h, w = X.shape[2:]
    threads = f"{args.threads} thread{'s' * (args.threads > 1)}"
    if comm is None:
        what, batch, tail = "training on", f"batch size {args.batch_size}", ""
    else:
        nb = len(net.buckets)
        what = f"distributed training on {size} MPI rank{'s' * (size > 1)},"
        batch = f"batch size {args.batch_size} per rank ({args.batch_size * size} global); {steps} steps/epoch"
        threads += " per rank"
        tail = f"; {nb} gradient bucket{'s' * (nb > 1)}"
    say(f"cnnext {__version__}: {what} {source}: {X.shape[0]} train / {test.X.shape[0]} test images of "
        f"{h}x{w}, {n_classes} classes")
    say(f"model: {model}".replace("\n", "\n       "))
    say(f"       {n_params:,} parameters; {opt_desc}; {batch}; {args.epochs} epochs; {args.schedule} lr schedule; "
        f"seed {args.seed}; {threads}{tail}")

    callbacks = []
    if lead and not args.no_progress:
        # ASCII under MPI: some launchers (gforker) drop UTF-8; the running loss there is rank 0's
        callbacks.append(ProgressBar() if comm is None else ProgressBar(ascii=True, loss_format="{:.4f} (rank 0)"))
    report = _EpochReport(args.epochs, say)
    callbacks.append(report)
    scheduler = CosineAnnealingLR(opt, T_max=args.epochs * steps) if args.schedule == "cosine" else None
    try:
        history = fit(net, nn.CrossEntropyLoss(), opt, loader, args.epochs, scheduler=scheduler,
                      scheduler_interval="batch", val_loader=DataLoader(Xt, yt, batch_size=256),
                      callbacks=callbacks, progress=False, reduce=reduce)
    except NonFiniteLossError as exc:
        diverged = "diverged" if comm is not None else f"diverged to {exc.loss}"
        raise UsageError(f"the loss {diverged} in epoch {exc.epoch}; try a smaller --lr") from None
    elapsed = time.perf_counter() - report.t0
    final_acc = history["val_accuracy"][-1]
    n_test = test.X.shape[0]
    meta.update({"input_shape": list(X.shape[1:]), "classes": n_classes, "epochs": args.epochs,
                 "optimizer": args.optimizer, "lr": lr, "batch_size": args.batch_size, "seed": args.seed,
                 "test_accuracy": final_acc, "train_seconds": round(elapsed, 3)})
    if comm is not None:
        meta.update({"mpi_ranks": size, "global_batch_size": args.batch_size * size})
        ar = net.allreduce_stats()
        train_time = sum(history["seconds"])
        # per-rank figures averaged over the ranks: [allreduce seconds, steps, training seconds]
        sums = dist.allreduce_sum([ar["total_s"], ar["steps"], train_time], comm)
        ar_ms = 1e3 * sums[0] / max(sums[1], 1)
        step_ms = 1e3 * sums[2] / max(sums[1], 1)
    if lead:
        model.eval()
        try:
            save(model, save_path, metadata=meta)
        except OSError as exc:  # e.g. the disk filled up while training: name the user's path
            raise UsageError(f"--save {save_path}: cannot write the model ({exc.strerror or exc})") from None
    say(f"test accuracy {100 * final_acc:.2f}% ({int(round(final_acc * n_test))}/{n_test}) "
        f"after {args.epochs} epochs in {elapsed:.1f} s")
    if comm is not None:
        say(f"throughput {sum(history['samples']) / train_time:,.0f} images/s on {size} rank{'s' * (size > 1)} "
            f"({train_time:.2f} s of training steps); gradient Allreduce {ar_ms:.3f} ms per step "
            f"of {step_ms:.2f} ms ({100 * ar_ms / step_ms if step_ms else 0:.1f}%)")
    say(f"model saved to {save_path}")
    if lead and args.plot is not None:
        from cnnext.cli.plot import plot_training

        try:
            plot_training(history, model, args.plot)
        except OSError as exc:
            raise UsageError(f"--plot {args.plot}: cannot write it ({exc.strerror or exc}); "
                             f"the model was saved to {save_path}") from None
        say(f"plot saved to {args.plot}")
    if comm is not None:
        comm.Barrier()  # rank 0 has saved: every rank exits with the file in place
    return 0
