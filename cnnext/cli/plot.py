"""The ``--plot`` output of ``cnnext train``: loss and accuracy curves and the first-layer filters.

Not a command of its own: ``cnnext train --plot PATH`` writes the figure (needs matplotlib).
"""
import numpy as np


def plot_training(history, model, path):
    """Write a PNG of the loss and accuracy curves and of the first conv layer's filters.

    Parameters
    ----------
    history : dict of lists
        What ``cnnext.training.fit`` returned, with a validation loader (``val_loss``, ``val_accuracy``).
    model : cnnext.nn.Module
        The trained model (its first ``Conv2d``'s filters are drawn).
    path : str
        The PNG file to write.
    """
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
    ax.plot(history["epoch"], history["val_loss"], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss")
    ax.legend()
    ax = fig.add_subplot(gs[:, 1])
    ax.plot(history["epoch"], np.array(history["accuracy"]) * 100, "o-", label="train")
    ax.plot(history["epoch"], np.array(history["val_accuracy"]) * 100, "s-", label="test")
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
