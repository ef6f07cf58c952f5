"""``cnnext predict MODEL``: predictions of a saved model for test images or an .npy file."""
import numpy as np

from cnnext.cli._common import UsageError, check_input_file, path_arg, positive_int, set_threads
from cnnext.cli._data import add_model_arguments, load_model, load_test_split, model_outputs


def add_parser(sub):
    p = sub.add_parser("predict", help="predictions of a saved model",
                       description="Print the predictions of a saved model for the first test images (or for "
                                   "the images of an .npy file given with --input: shape (N, H, W) or "
                                   "(N, 1, H, W), values scaled as in training, [0, 1]).")
    add_model_arguments(p)
    p.add_argument("--input", metavar="FILE.npy", type=path_arg, default=None, help="images to classify")
    p.add_argument("--count", type=positive_int, default=10, help="number of test images to show (default 10)")
    p.set_defaults(run=run)


def _ascii(img):
    """Rows of text drawing a 2-D image of finite values, darker characters for larger values."""
    shades = " .:-=+*#%@"
    img = np.asarray(img, dtype=np.float64)
    lo, span = img.min(), img.max() - img.min()
    q = np.zeros(img.shape, dtype=int) if not span > 0 else ((img - lo) / span * 9).round().astype(int)
    q = np.clip(q, 0, len(shades) - 1)
    return ["".join(shades[v] * 2 for v in row) for row in q]


def _read_input(path, shape):
    """The images of ``--input``: a real-valued .npy array of shape (N, H, W) or (N, C, H, W), N >= 1,
    finite once in float32; ``shape`` (C, H, W) from the model's metadata, or None."""
    check_input_file(path, "--input")
    try:  # memory-mapped: a header declaring more data than the file holds is refused, not allocated
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"--input {path}: cannot read it as an .npy array ({exc})") from None
    if not isinstance(X, np.ndarray):  # an .npz archive
        X.close()
        raise UsageError(f"--input {path}: is an .npz archive; --input takes one array saved with numpy.save (.npy)")
    if X.dtype.kind not in "biuf":
        raise UsageError(f"--input {path}: holds {X.dtype} values; expected real numbers (float or integer)")
    given = X.shape
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4 or (shape is not None and list(X.shape[1:]) != list(shape)):
        want = f"(N, {shape[1]}, {shape[2]}) or (N, {', '.join(map(str, shape))})" if shape else "(N, H, W) or (N, C, H, W)"
        raise UsageError(f"--input {path}: expected an array of shape {want}, got {given}")
    if X.size == 0:
        raise UsageError(f"--input {path}: holds no images (shape {given})")
    X = np.array(X, dtype=np.float32)
    bad = ~np.isfinite(X).reshape(X.shape[0], -1).all(axis=1)
    if bad.any():
        raise UsageError(f"--input {path}: image #{int(np.argmax(bad))} holds NaN or infinite values "
                         f"(or values beyond float32's range)")
    return X


def run(args):
    from cnnext.functional import softmax

    set_threads(args.threads)
    model, meta = load_model(args.model)
    if args.input is not None:
        X, y, source = _read_input(args.input, meta.get("input_shape")), None, args.input
    else:
        (X, y), source = load_test_split(meta, args.data, args.model)
        X, y = X[:args.count], y[:args.count]
    probs = softmax(model_outputs(model, X, args.model), dim=1)
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
