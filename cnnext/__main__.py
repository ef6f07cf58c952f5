"""The ``cnnext`` command line: ``python -m cnnext COMMAND`` (or the ``cnnext`` script).

Commands
--------
train      train a small CNN (conv-relu-pool x2, linear) on the embedded 8x8 digits or on MNIST
evaluate   accuracy, loss and confusion matrix of a saved model on the test split
predict    predictions of a saved model for test images or for an .npy file
demo       the learn_dl tutorial example run on cnnext, and a timed batched convolution

Every command has ``--help``. Wrong arguments print one line on stderr and exit with status 2.
"""
import argparse
import os
import sys
import time

import numpy as np

from cnnext._version import __version__

_PROG = "cnnext"
_DESCRIPTION = f"""\
cnnext {__version__}: a small, fast CNN package (Cython kernels, a torch-style API).

commands:
  train      train a small CNN on the embedded 8x8 handwritten digits (or MNIST with --data)
  evaluate   test accuracy, loss and confusion matrix of a saved model
  predict    predictions of a saved model on test images or an .npy file
  demo       the learn_dl tutorial example on cnnext, and a timed batched convolution

examples:
  python -m cnnext train                          # ~98% test accuracy in a few seconds
  python -m cnnext train --epochs 5 --optimizer sgd --lr 0.05 --plot curves.png
  python -m cnnext evaluate cnnext_digits.npz
  python -m cnnext predict cnnext_digits.npz --count 8
  python -m cnnext train --data ~/mnist --download --epochs 3   # MNIST IDX files

run 'python -m cnnext COMMAND --help' for the options of a command."""


class _UsageError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(text, minimum, expected):
    try:
        v = int(text)
    except ValueError:
        v = minimum - 1
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return v


def _positive_int(text):
    return _int_at_least(text, 1, "a positive integer")


def _nonneg_int(text):
    return _int_at_least(text, 0, "an integer >= 0")


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (v >= 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


_DEFAULT_LR = {"adam": 0.01, "adamw": 0.01, "sgd": 0.05}


def _build_parser():
    parser = _Parser(prog=_PROG, description=_DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser(
        "train", help="train a small CNN on the embedded digits (or MNIST)",
        description="Train conv(3x3)-relu-maxpool x2 + linear on the embedded 8x8 digits (1437 train / "
                    "360 test images) or, with --data, on MNIST-format IDX files. Shows a progress bar "
                    "per epoch, prints loss and accuracies per epoch and saves the model.")
    t.add_argument("--epochs", type=_positive_int, default=12, help="passes over the training set (default 12)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="minibatch size (default 32)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default 0.01 for adam/adamw, 0.05 for sgd)")
    t.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                   help="adam (default), adamw (weight decay 1e-2) or sgd (momentum 0.9)")
    t.add_argument("--weight-decay", type=_nonneg_float, default=None,
                   help="weight decay (default 0, or 1e-2 for adamw)")
    t.add_argument("--channels", type=_positive_int, nargs=2, default=(16, 32), metavar=("C1", "C2"),
                   help="channels of the two conv layers (default 16 32)")
    t.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate schedule: cosine decay to 0 over the run (default) or constant")
    t.add_argument("--seed", type=_nonneg_int, default=0,
                   help="seed of the initial weights and the shuffling (default 0); same seed, same run")
    t.add_argument("--threads", type=_positive_int, default=1,
                   help="threads for the kernels and BLAS (default 1: fastest for these small images)")
    t.add_argument("--data", metavar="DIR", default=None,
                   help="train on MNIST/Fashion-MNIST IDX files in DIR instead of the embedded digits")
    t.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist",
                   help="which published files --download fetches and checks (default mnist)")
    t.add_argument("--download", action="store_true",
                   help="with --data: download missing IDX files into DIR (SHA-256 verified)")
    t.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="train on the first N training images only")
    t.add_argument("--save", metavar="PATH", default=None,
                   help="where to save the model (default ./cnnext_digits.npz or ./cnnext_mnist.npz)")
    t.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of the loss/accuracy curves and first-layer filters (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: run as 'mpiexec -n N python -m cnnext train "
                        "--distributed'; --batch-size is per rank; needs pip install 'cnnext[mpi]'")

    for name, helptext, desc in (
        ("evaluate", "test accuracy, loss and confusion matrix of a saved model",
         "Evaluate a model saved by 'cnnext train' on the test split of the data it was trained on "
         "(or of --data DIR)."),
        ("predict", "predictions of a saved model",
         "Print the predictions of a saved model for the first test images (or for the images of an "
         ".npy file given with --input: shape (N, H, W) or (N, 1, H, W), values scaled as in training, "
         "[0, 1])."),
    ):
        p = sub.add_parser(name, help=helptext, description=desc)
        p.add_argument("model", metavar="MODEL", help="a .npz file written by 'cnnext train' or cnnext.save")
        p.add_argument("--data", metavar="DIR", default=None,
                       help="MNIST IDX directory (default: the data the model was trained on)")
        p.add_argument("--threads", type=_positive_int, default=1, help="threads (default 1)")
        if name == "predict":
            p.add_argument("--input", metavar="FILE.npy", default=None, help="images to classify")
            p.add_argument("--count", type=_positive_int, default=10,
                           help="number of test images to show (default 10)")
        else:
            p.add_argument("--batch-size", type=_positive_int, default=256, help="batch size (default 256)")

    d = sub.add_parser("demo", help="learn_dl example on cnnext and a timed batched convolution",
                       description="Run hanbt's learn_dl CNN tutorial example (init_test, backward, update, "
                                   "gradient check, max pooling) on cnnext's learn_dl API and print its "
                                   "results, then time a batched conv2d forward+backward.")
    d.add_argument("--threads", type=_positive_int, default=None,
                   help="threads for the timed convolution (default: cnnext's default)")
    d.add_argument("--repeat", type=_positive_int, default=5, help="timing repetitions (default 5)")
    d.add_argument("--batch", type=_positive_int, default=64,
                   help="batch size of the timed convolution (default 64)")
    return parser


# -- threads -----------------------------------------------------------------------------------
def _set_threads(n):
    """Use ``n`` threads in cnnext's kernels and, where it can be reached, in numpy's BLAS."""
    import cnnext

    cnnext.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
        return
    except Exception:  # optional dependency; fall back to numpy's bundled OpenBLAS below
        pass
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
        for path in libs:
            lib = ctypes.CDLL(path)
            for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                        "openblas_set_num_threads64_", "openblas_set_num_threads"):
                fn = getattr(lib, sym, None)
                if fn is not None:
                    fn(ctypes.c_int(n))
                    break
    except OSError:
        pass


# -- data --------------------------------------------------------------------------------------
def _load_data(data_dir, dataset="mnist", download=False):
    """Return (train, test, description, metadata) for the digits or an MNIST directory."""
    from cnnext.datasets import load_digits, load_mnist

    if data_dir is None:
        train, test = load_digits()
        return train, test, "digits", {"dataset": "digits"}
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not download and not os.path.isdir(data_dir):
        raise _UsageError(f"--data {data_dir}: no such directory")
    train = load_mnist(data_dir, "train", download=download, dataset=dataset)
    test = load_mnist(data_dir, "test", download=download, dataset=dataset)
    return train, test, f"{dataset} IDX files in {data_dir}", {"dataset": dataset, "data_dir": data_dir}


def _build_model(in_shape, channels, n_classes, rng):
    from cnnext import nn

    c, h, w = in_shape
    c1, c2 = channels
    if h < 4 or w < 4:
        raise _UsageError(f"images of size {h}x{w} are too small for two 2x2 poolings")
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (h // 2 // 2) * (w // 2 // 2), n_classes, rng=rng),
    )


def _predict_logits(model, X, batch_size=256):
    model.eval()
    out = [model(X[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _evaluate(model, X, y, batch_size=256):
    from cnnext.functional import cross_entropy

    logits = _predict_logits(model, X, batch_size)
    return float(cross_entropy(logits, y)), float(np.mean(logits.argmax(axis=1) == y)), logits


# -- train -------------------------------------------------------------------------------------
def _cmd_train(args):
    if args.distributed:  # the MPI training loop lives in cnnext.distributed
        from cnnext.distributed import train_cli

        return train_cli(args, sys.modules[__name__])
    from tqdm import tqdm

    from cnnext import nn, optim, save
    from cnnext.datasets import DataLoader

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _UsageError("--plot needs matplotlib: pip install 'cnnext[plot]' (or matplotlib)") from None
    if (args.download or args.dataset != "mnist") and args.data is None:
        raise _UsageError("--download and --dataset need --data DIR")
    _set_threads(args.threads)
    train, test, source, meta = _load_data(args.data, args.dataset, args.download)
    X, y = train
    if args.limit is not None:
        X, y = X[:args.limit], y[:args.limit]
    n_classes = int(max(y.max(), test.y.max())) + 1
    rng = np.random.default_rng(args.seed)
    model = _build_model(X.shape[1:], args.channels, n_classes, rng)
    lr = args.lr if args.lr is not None else _DEFAULT_LR[args.optimizer]
    if args.optimizer == "sgd":
        wd = args.weight_decay or 0.0
        opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
        opt_desc = f"sgd lr={lr:g} momentum=0.9" + (f" weight_decay={wd:g}" if wd else "")
    elif args.optimizer == "adamw":
        wd = 1e-2 if args.weight_decay is None else args.weight_decay
        opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        opt_desc = f"adamw lr={lr:g} weight_decay={wd:g}"
    else:
        wd = args.weight_decay or 0.0
        opt = optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        opt_desc = f"adam lr={lr:g}" + (f" weight_decay={wd:g}" if wd else "")
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(X, y, batch_size=args.batch_size, shuffle=True, seed=args.seed + 1)
    save_path = args.save or ("cnnext_digits.npz" if args.data is None else "cnnext_mnist.npz")
    save_dir = os.path.dirname(os.path.abspath(save_path))
    if not os.path.isdir(save_dir):
        raise _UsageError(f"--save {save_path}: directory {save_dir} does not exist")
    n_params = sum(p.size for p in model.parameters())
    h, w = X.shape[2:]
    print(f"cnnext {__version__}: training on {source}: {X.shape[0]} train / {test.X.shape[0]} test "
          f"images of {h}x{w}, {n_classes} classes")
    print(f"model: {model}".replace("\n", "\n       "))
    print(f"       {n_params:,} parameters; {opt_desc}; batch size {args.batch_size}; "
          f"{args.epochs} epochs; {args.schedule} lr schedule; seed {args.seed}; {args.threads} thread{'s' * (args.threads > 1)}")
    history = {"epoch": [], "loss": [], "train_acc": [], "test_acc": [], "test_loss": []}
    width = len(str(args.epochs))
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(total=len(loader), desc=f"epoch {epoch:>{width}}/{args.epochs}", unit="batch",
                   leave=False, disable=args.no_progress, file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.1)
        for i, (xb, yb) in enumerate(loader):
            if args.schedule == "cosine":
                frac = ((epoch - 1) * len(loader) + i) / (args.epochs * len(loader))
                for group in opt.param_groups:
                    group["lr"] = 0.5 * lr * (1.0 + np.cos(np.pi * frac))
            opt.zero_grad()
            logits = model(xb)
            loss = criterion(logits, yb)
            model.backward(criterion.backward(), input_grad=False)
            opt.step()
            if not np.isfinite(loss):
                bar.close()
                raise _UsageError(f"the loss diverged to {loss} in epoch {epoch}; try a smaller --lr")
            total_loss += loss * xb.shape[0]
            correct += int(np.sum(logits.argmax(axis=1) == yb))
            seen += xb.shape[0]
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
            bar.update(1)
        bar.refresh()  # show the finished epoch (all batches, final running loss) before clearing
        bar.close()
        test_loss, test_acc, _ = _evaluate(model, *test)
        history["epoch"].append(epoch)
        history["loss"].append(total_loss / seen)
        history["train_acc"].append(correct / seen)
        history["test_acc"].append(test_acc)
        history["test_loss"].append(test_loss)
        print(f"epoch {epoch:>{width}}/{args.epochs}  loss {total_loss / seen:.4f}  "
              f"train acc {100 * correct / seen:5.1f}%  test loss {test_loss:.4f}  "
              f"test acc {100 * test_acc:5.1f}%  ({time.perf_counter() - t0:.1f} s)", flush=True)
    elapsed = time.perf_counter() - t0
    final_acc = history["test_acc"][-1]
    n_test = test.X.shape[0]
    meta.update({"input_shape": list(X.shape[1:]), "classes": n_classes, "epochs": args.epochs,
                 "optimizer": args.optimizer, "lr": lr, "batch_size": args.batch_size, "seed": args.seed,
                 "test_accuracy": final_acc, "train_seconds": round(elapsed, 3)})
    model.eval()
    save(model, save_path, metadata=meta)
    print(f"test accuracy {100 * final_acc:.2f}% ({int(round(final_acc * n_test))}/{n_test}) "
          f"after {args.epochs} epochs in {elapsed:.1f} s")
    print(f"model saved to {save_path}")
    if args.plot is not None:
        _plot(history, model, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


def _plot(history, model, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cnnext import nn

    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    w = conv.weight.data[:, 0]  # (K, kH, kW), first input channel
    k = w.shape[0]
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    fig = plt.figure(figsize=(12, 4))
    gs = fig.add_gridspec(rows, 2 + cols, width_ratios=[4, 4] + [4 / cols] * cols)
    ax = fig.add_subplot(gs[:, 0])
    ax.plot(history["epoch"], history["loss"], "o-", label="train")
    ax.plot(history["epoch"], history["test_loss"], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss")
    ax.legend()
    ax = fig.add_subplot(gs[:, 1])
    ax.plot(history["epoch"], np.array(history["train_acc"]) * 100, "o-", label="train")
    ax.plot(history["epoch"], np.array(history["test_acc"]) * 100, "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy")
    ax.legend()
    for a in fig.axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    lim = float(np.abs(w).max()) or 1.0
    for i in range(k):
        a = fig.add_subplot(gs[i // cols, 2 + i % cols])
        a.imshow(w[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle("cnnext training: loss, accuracy and the first conv layer's filters")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- evaluate / predict -----------------------------------------------------------------------
def _load_model(path):
    from cnnext import load

    if not os.path.isfile(path):
        raise _UsageError(f"MODEL {path}: no such file")
    model, meta = load(path, return_metadata=True)
    return model, meta


def _test_split(meta, data_dir, model_path):
    if data_dir is None and meta.get("dataset", "digits") != "digits":
        data_dir = meta.get("data_dir")
        if not data_dir:
            raise _UsageError(f"{model_path} was not trained on the digits; pass --data DIR")
    _, test, source, _ = _load_data(data_dir, meta.get("dataset", "mnist") if data_dir else "mnist")
    shape = meta.get("input_shape")
    if shape is not None and list(test.X.shape[1:]) != list(shape):
        raise _UsageError(f"the model expects images of shape {tuple(shape)}, the test data has "
                          f"{tuple(test.X.shape[1:])}")
    return test, source


def _cmd_evaluate(args):
    _set_threads(args.threads)
    model, meta = _load_model(args.model)
    (X, y), source = _test_split(meta, args.data, args.model)
    t0 = time.perf_counter()
    loss, acc, logits = _evaluate(model, X, y, args.batch_size)
    elapsed = time.perf_counter() - t0
    pred = logits.argmax(axis=1)
    n_classes = logits.shape[1]
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    print(f"model {args.model}: {sum(p.size for p in model.parameters()):,} parameters")
    print(f"test split of {source}: {X.shape[0]} images")
    print(f"test loss {loss:.4f}  test accuracy {100 * acc:.2f}% ({int(np.sum(pred == y))}/{X.shape[0]})  "
          f"in {elapsed:.2f} s")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("      " + "".join(f"{j:>5}" for j in range(n_classes)) + "   recall")
    for i in range(n_classes):
        total = cm[i].sum()
        recall = f"{100 * cm[i, i] / total:6.1f}%" if total else "     -"
        print(f"  {i:>3} " + "".join(f"{v:>5}" for v in cm[i]) + f"  {recall}")
    return 0


def _ascii(img):
    shades = " .:-=+*#%@"
    img = np.asarray(img, dtype=np.float64)
    span = img.max() - img.min()
    q = np.zeros(img.shape, dtype=int) if span == 0 else ((img - img.min()) / span * 9).round().astype(int)
    return ["".join(shades[v] * 2 for v in row) for row in q]


def _cmd_predict(args):
    from cnnext.functional import softmax

    _set_threads(args.threads)
    model, meta = _load_model(args.model)
    if args.input is not None:
        try:
            X = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _UsageError(f"--input {args.input}: cannot read it as an .npy array ({exc})") from None
        if X.ndim == 3:
            X = X[:, None]
        shape = meta.get("input_shape")
        if X.ndim != 4 or (shape is not None and list(X.shape[1:]) != list(shape)):
            want = f"(N, {shape[1]}, {shape[2]}) or (N, {', '.join(map(str, shape))})" if shape else "(N, 1, H, W)"
            raise _UsageError(f"--input {args.input}: expected an array of shape {want}, got {X.shape}")
        X, y, source = X.astype(np.float32), None, args.input
    else:
        (X, y), source = _test_split(meta, args.data, args.model)
        X, y = X[:args.count], y[:args.count]
    probs = softmax(_predict_logits(model, X), dim=1)
    pred = probs.argmax(axis=1)
    print(f"predictions of {args.model} for {X.shape[0]} images of {source}:")
    small = X.shape[2] * X.shape[3] <= 64
    for i in range(X.shape[0]):
        line = f"  #{i:<4} predicted {pred[i]}  (p={probs[i, pred[i]]:.3f})"
        if y is not None:
            line += f"  true {y[i]}  " + ("ok" if pred[i] == y[i] else "WRONG")
        print(line)
        if small and i < 3:
            for row in _ascii(X[i, 0]):
                print("        |" + row + "|")
    if y is not None and X.shape[0]:
        print(f"{int(np.sum(pred == y))}/{X.shape[0]} correct")
    return 0


# -- demo ----------------------------------------------------------------------------------------
def _cmd_demo(args):
    import cnnext
    from cnnext import functional as F

    try:
        from cnnext import ConvLayer, IdentityActivator, MaxPoolingLayer
    except ImportError as exc:
        raise _UsageError(f"the learn_dl API is not available in this build ({exc})") from None
    np.set_printoptions(precision=4, suppress=True)
    print(f"cnnext {__version__}: the learn_dl CNN tutorial example, run on cnnext's learn_dl API\n")
    a = np.array([[[0, 1, 1, 0, 2], [2, 2, 2, 2, 1], [1, 0, 0, 2, 0], [0, 1, 1, 0, 0], [1, 2, 0, 0, 2]],
                  [[1, 0, 2, 2, 0], [0, 0, 0, 2, 0], [1, 2, 1, 2, 1], [1, 0, 0, 0, 0], [1, 2, 1, 1, 1]],
                  [[2, 1, 2, 0, 0], [1, 0, 0, 1, 0], [0, 2, 1, 0, 1], [0, 1, 2, 2, 2], [2, 1, 0, 0, 1]]])
    b = np.array([[[0, 1, 1], [2, 2, 2], [1, 0, 0]], [[1, 0, 2], [0, 0, 0], [1, 2, 1]]])
    w0 = np.array([[[-1, 1, 0], [0, 1, 0], [0, 1, 1]], [[-1, -1, 0], [0, 0, 0], [0, -1, 0]],
                   [[0, 0, -1], [0, 1, 0], [1, -1, -1]]], dtype=np.float64)
    w1 = np.array([[[1, 1, -1], [-1, -1, 1], [0, -1, 1]], [[0, 1, 0], [-1, 0, -1], [-1, 1, 0]],
                   [[-1, 0, 0], [-1, 0, 1], [-1, 0, 0]]], dtype=np.float64)

    def init_test():
        cl = ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, IdentityActivator(), 0.001)
        cl.filters[0].weights = w0.copy()
        cl.filters[0].bias = 1
        cl.filters[1].weights = w1.copy()
        return cl

    cl = init_test()
    cl.forward(a)
    print("ConvLayer(5, 5, 3, 3, 3, 2, zero_padding=1, stride=2) forward:")
    print(cl.output_array)
    cl.backward(a, b, IdentityActivator())
    cl.update()
    print("\nafter backward with the 2x3x3 sensitivity map and update():")
    print(cl.filters[0])
    print(cl.filters[1])
    print("delta_array[0] (sensitivity passed to the previous layer):")
    print(cl.delta_array[0])

    cl = init_test()
    cl.forward(a)
    sens = np.ones(cl.output_array.shape, dtype=np.float64)
    cl.backward(a, sens, IdentityActivator())
    eps, worst = 1e-3, 0.0
    for d in range(w0.shape[0]):
        for i in range(w0.shape[1]):
            for j in range(w0.shape[2]):
                cl.filters[0].weights[d, i, j] += eps
                cl.forward(a)
                up = cl.output_array.sum()
                cl.filters[0].weights[d, i, j] -= 2 * eps
                cl.forward(a)
                down = cl.output_array.sum()
                cl.filters[0].weights[d, i, j] += eps
                worst = max(worst, abs((up - down) / (2 * eps) - cl.filters[0].weights_grad[d, i, j]))
    print("\ngradient check (learn_dl's, sensitivity all ones), filter 0 weights_grad:")
    print(cl.filters[0].weights_grad)
    print(f"largest |analytic - central difference| = {worst:.2e}")

    pool_in = np.array([[[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]],
                        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [3, 4, 5, 6]]], dtype=np.float64)
    mp = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mp.forward(pool_in)
    print("\nMaxPoolingLayer(4, 4, 2, 2, 2, 2) forward:")
    print(mp.output_array)

    if args.threads is not None:
        cnnext.set_num_threads(args.threads)
    N, C, H, W, K = args.batch, 32, 32, 32, 64
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    wt = rng.standard_normal((K, C, 3, 3), dtype=np.float32)
    bias = np.zeros(K, dtype=np.float32)
    y = F.conv2d(x, wt, bias, padding=1)
    gy = np.ones_like(y)
    F.conv2d_backward(gy, x, wt, padding=1)
    fwd, bwd = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        F.conv2d(x, wt, bias, padding=1)
        t1 = time.perf_counter()
        F.conv2d_backward(gy, x, wt, padding=1)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    flop = 2.0 * N * K * H * W * C * 9
    f, bk = min(fwd), min(bwd)
    print(f"\nbatched conv2d, float32, x {(N, C, H, W)}, weight {(K, C, 3, 3)}, padding 1, "
          f"{cnnext.get_num_threads()} thread(s), best of {args.repeat}:")
    print(f"  forward   {1e3 * f:8.1f} ms  ({flop / f / 1e9:6.1f} GFLOP/s)")
    print(f"  backward  {1e3 * bk:8.1f} ms  ({2 * flop / bk / 1e9:6.1f} GFLOP/s, grad_input + grad_weight)")
    print(f"  total     {1e3 * (f + bk):8.1f} ms")
    return 0


_COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "demo": _cmd_demo}


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        try:
            print(_DESCRIPTION)
        except BrokenPipeError:
            _silence_stdout()
        return 0
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is required: train, evaluate, predict or demo")
    prog = f"{_PROG} {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except _UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        _silence_stdout()
        return 1


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
