"""``cnnext evaluate MODEL``: test loss, accuracy and confusion matrix of a saved model."""
import time

import numpy as np

from cnnext.cli._common import UsageError, positive_int, set_threads
from cnnext.cli._data import add_model_arguments, check_outputs, load_model, load_test_split, model_outputs


def add_parser(sub):
    p = sub.add_parser("evaluate", help="test accuracy, loss and confusion matrix of a saved model",
                       description="Evaluate a model saved by 'cnnext train' on the test split of the data it "
                                   "was trained on (or of --data DIR).")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.set_defaults(run=run)


def run(args):
    from cnnext import nn
    from cnnext.datasets import DataLoader
    from cnnext.training import evaluate

    set_threads(args.threads)
    model, meta = load_model(args.model)
    (X, y), source = load_test_split(meta, args.data, args.model)
    n_classes = model_outputs(model, X[:1], args.model).shape[1]  # a classifier taking these images?
    if y.max() >= n_classes:
        raise UsageError(f"MODEL {args.model} outputs {n_classes} class scores, but the labels of the test "
                         f"split of {source} go up to {int(y.max())}")
    t0 = time.perf_counter()
    res = evaluate(model, DataLoader(X, y, batch_size=args.batch_size), nn.CrossEntropyLoss(),
                   return_outputs=True)
    elapsed = time.perf_counter() - t0
    logits = res["outputs"]
    check_outputs(logits, X.shape[0], args.model)
    pred = logits.argmax(axis=1)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    print(f"model {args.model}: {sum(p.size for p in model.parameters()):,} parameters")
    print(f"test split of {source}: {X.shape[0]} images")
    print(f"test loss {res['loss']:.4f}  test accuracy {100 * res['accuracy']:.2f}% "
          f"({int(np.sum(pred == y))}/{X.shape[0]})  in {elapsed:.2f} s")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("      " + "".join(f"{j:>5}" for j in range(n_classes)) + "   recall")
    for i in range(n_classes):
        total = cm[i].sum()
        recall = f"{100 * cm[i, i] / total:6.1f}%" if total else "     -"
        print(f"  {i:>3} " + "".join(f"{v:>5}" for v in cm[i]) + f"  {recall}")
    return 0
