"""``cnnext predict MODEL``: predictions of a saved model for test images or an .npy file."""
import numpy as np

from cnnext.cli._common import UsageError, positive_int, set_threads
from cnnext.cli._data import add_model_arguments, load_model, load_test_split


def add_parser(sub):
    p = sub.add_parser("predict", help="predictions of a saved model",
                       description="Print the predictions of a saved model for the first test images (or for "
                                   "the images of an .npy file given with --input: shape (N, H, W) or "
                                   "(N, 1, H, W), values scaled as in training, [0, 1]).")
    add_model_arguments(p)
    p.add_argument("--input", metavar="FILE.npy", default=None, help="images to classify")
    p.add_argument("--count", type=positive_int, default=10, help="number of test images to show (default 10)")
    p.set_defaults(run=run)


def _ascii(img):
    shades = " .:-=+*#%@"
    img = np.asarray(img, dtype=np.float64)
    span = img.max() - img.min()
    q = np.zeros(img.shape, dtype=int) if span == 0 else ((img - img.min()) / span * 9).round().astype(int)
    return ["".join(shades[v] * 2 for v in row) for row in q]


def _read_input(path, shape):
    try:
        X = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--input {path}: cannot read it as an .npy array ({exc})") from None
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4 or (shape is not None and list(X.shape[1:]) != list(shape)):
        want = f"(N, {shape[1]}, {shape[2]}) or (N, {', '.join(map(str, shape))})" if shape else "(N, 1, H, W)"
        raise UsageError(f"--input {path}: expected an array of shape {want}, got {X.shape}")
    return X.astype(np.float32)


def run(args):
    from cnnext.functional import softmax
    from cnnext.training import predict

    set_threads(args.threads)
    model, meta = load_model(args.model)
    if args.input is not None:
        X, y, source = _read_input(args.input, meta.get("input_shape")), None, args.input
    else:
        (X, y), source = load_test_split(meta, args.data, args.model)
        X, y = X[:args.count], y[:args.count]
    probs = softmax(predict(model, X), dim=1)
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
