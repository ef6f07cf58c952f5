"""cnnext.training: fit / evaluate / predict against loops written out here, callbacks, errors."""
import io
import math

import numpy as np
import pytest

from cnnext import functional as F
from cnnext import nn, optim, training
from cnnext.datasets import DataLoader


def make_model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 4, rng=rng))


def make_data(n, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 4, n)
    X[np.arange(n), 0, y, :] += 2.0  # learnable: a bright row per class
    return X, y


def flat(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def cosine(base, t, T):
    return base * (1 + math.cos(math.pi * t / T)) / 2


def test_fit_is_the_loop_written_out_with_a_per_batch_cosine_schedule():
    X, y = make_data(50)
    epochs, B, lr = 3, 8, 0.05
    steps = -(-50 // B)
    # reference: the loop by hand, closed-form cosine set before each step
    ref = make_model()
    opt = optim.SGD(ref.parameters(), lr=lr, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    loader = DataLoader(X, y, batch_size=B, shuffle=True, seed=4)
    want_loss, want_acc = [], []
    for e in range(epochs):
        ref.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for i, (xb, yb) in enumerate(loader):
            opt.param_groups[0]["lr"] = cosine(lr, e * steps + i, epochs * steps)
            opt.zero_grad()
            out = ref(xb)
            loss = crit(out, yb)
            ref.backward(crit.backward(), input_grad=False)
            opt.step()
            loss_sum += loss * len(yb)
            correct += int(np.sum(out.argmax(1) == yb))
            seen += len(yb)
        want_loss.append(loss_sum / seen)
        want_acc.append(correct / seen)

    model = make_model()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs * steps)
    hist = training.fit(model, nn.CrossEntropyLoss(), opt, DataLoader(X, y, batch_size=B, shuffle=True, seed=4),
                        epochs, scheduler=sched, scheduler_interval="batch", progress=False)
    np.testing.assert_allclose(flat(model), flat(ref), rtol=1e-6, atol=1e-7)
    assert hist["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(hist["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(hist["accuracy"], want_acc, rtol=1e-12)
    assert hist["samples"] == [50, 50, 50]
    np.testing.assert_allclose(hist["lr"], [cosine(lr, e * steps, epochs * steps) for e in range(3)], rtol=1e-12)
    assert all(s >= 0 for s in hist["seconds"])
    assert hist["accuracy"][-1] > hist["accuracy"][0]


def test_epoch_schedule_validation_and_history():
    X, y = make_data(40)
    Xv, yv = make_data(17, seed=2)
    model = make_model(3)
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.CosineAnnealingLR(opt, T_max=4)
    hist = training.fit(model, nn.CrossEntropyLoss(), opt, DataLoader(X, y, batch_size=16), 4, scheduler=sched,
                        val_loader=DataLoader(Xv, yv, batch_size=5), progress=False)
    np.testing.assert_allclose(hist["lr"], [cosine(0.02, t, 4) for t in range(4)], rtol=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)   # after T_max epoch steps
    # the last epoch's validation numbers, computed here from the trained model
    logits = model.eval()(Xv)
    assert hist["val_loss"][-1] == pytest.approx(float(F.cross_entropy(logits, yv)), rel=1e-5)
    assert hist["val_accuracy"][-1] == pytest.approx(np.mean(logits.argmax(1) == yv), rel=1e-12)
    assert sorted(hist) == ["accuracy", "epoch", "loss", "lr", "samples", "seconds", "val_accuracy", "val_loss"]
    assert all(len(v) == 4 for v in hist.values())


def test_evaluate_predict_and_custom_metrics():
    X, y = make_data(23)
    model = make_model(5)
    model.train()
    logits = model(X)

    def top2(output, target):  # a metric returns the batch's sum
        return int(np.sum(np.argsort(output, axis=1)[:, -2:] == target[:, None]))

    res = training.evaluate(model, DataLoader(X, y, batch_size=7), nn.CrossEntropyLoss(),
                            metrics=["accuracy", top2], return_outputs=True)
    assert model.training                                           # mode restored
    assert res["count"] == 23
    assert res["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert res["accuracy"] == np.mean(logits.argmax(1) == y)
    assert res["top2"] == np.mean(np.any(np.argsort(logits, 1)[:, -2:] == y[:, None], axis=1))
    np.testing.assert_allclose(res["outputs"], logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(training.predict(model, X, batch_size=4), logits, rtol=1e-6, atol=1e-6)
    assert training.predict(model, X[:0]).shape == (0, 0)
    # reduce sees the sums: a stand-in for two identical workers doubles them, the means stay
    seen = []

    def twice(sums):
        seen.append(dict(sums))
        return {k: 2 * v for k, v in sums.items()}

    res2 = training.evaluate(model, DataLoader(X, y, batch_size=7), metrics="accuracy", reduce=twice)
    assert seen == [{"accuracy": float(np.sum(logits.argmax(1) == y)), "count": 23}]
    assert res2 == {"accuracy": res["accuracy"], "count": 46}


def test_sum_reduction_loss_is_not_scaled_again():
    X, y = make_data(12)
    model = make_model(6)
    res = training.evaluate(model, DataLoader(X, y, batch_size=5), nn.CrossEntropyLoss(reduction="sum"))
    assert res["loss"] == pytest.approx(float(F.cross_entropy(model(X), y)), rel=1e-5)


class Recorder(training.Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, info):
        self.calls.append(("train_begin", info["epochs"], info["steps"]))

    def on_epoch_begin(self, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, step, logs):
        self.calls.append(("batch", step, logs["batch_size"]))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, history):
        self.calls.append(("train_end", len(history["epoch"])))


def test_callbacks_in_order_and_train_end_also_on_error():
    X, y = make_data(10)
    rec = Recorder()
    model = make_model()
    training.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01),
                 DataLoader(X, y, batch_size=4), 2, callbacks=[rec], progress=False)
    keys = ["accuracy", "loss", "lr", "samples", "seconds"]
    assert rec.calls == [("train_begin", 2, 3),
                         ("epoch_begin", 1), ("batch", 0, 4), ("batch", 1, 4), ("batch", 2, 2), ("epoch_end", 1, keys),
                         ("epoch_begin", 2), ("batch", 0, 4), ("batch", 1, 4), ("batch", 2, 2), ("epoch_end", 2, keys),
                         ("train_end", 2)]

    class Stop(training.Callback):
        def on_batch_end(self, step, logs):
            if step == 1:
                raise KeyboardInterrupt

    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        training.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01),
                     DataLoader(X, y, batch_size=4), 2, callbacks=[Stop(), rec], progress=False)
    assert rec.calls[-1] == ("train_end", 0)


class BlowsUp(nn.CrossEntropyLoss):
    """Cross-entropy that returns inf on its call number ``at`` (from 1)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.n = at, 0

    def forward(self, output, target):
        self.n += 1
        value = super().forward(output, target)
        return math.inf if self.n == self.at else value


def test_non_finite_loss_stops_at_the_step_or_on_the_reduced_epoch():
    X, y = make_data(20)
    model = make_model()
    with pytest.raises(training.NonFiniteLossError, match="epoch 2, step 1") as info:
        training.fit(model, BlowsUp(7), optim.SGD(model.parameters(), lr=0.01), DataLoader(X, y, batch_size=4),
                     3, progress=False)
    assert (info.value.epoch, info.value.step, info.value.loss) == (2, 1, math.inf)
    assert isinstance(info.value, FloatingPointError)
    reduced = []
    with pytest.raises(training.NonFiniteLossError) as info:
        training.fit(model, BlowsUp(7), optim.SGD(model.parameters(), lr=0.01), DataLoader(X, y, batch_size=4),
                     3, progress=False, reduce=lambda s: reduced.append(1) or s)
    assert (info.value.epoch, info.value.step) == (2, None) and len(reduced) == 2  # the whole epoch ran


def test_progress_bar_draws_each_epoch_with_the_running_loss():
    X, y = make_data(10)
    model = make_model()
    buf = io.StringIO()
    training.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01),
                 DataLoader(X, y, batch_size=5), 2, progress=False,
                 callbacks=[training.ProgressBar(file=buf, loss_format="{:.3f} here", ascii=True)])
    text = buf.getvalue()
    assert "epoch 1/2: 100%" in text and "epoch 2/2: 100%" in text and "2/2 [" in text
    assert " here]" in text and "#" in text


def test_set_epoch_is_called_on_loaders_that_have_it():
    X, y = make_data(8)

    class Loader:
        def __init__(self):
            self.epochs = []

        def set_epoch(self, e):
            self.epochs.append(e)

        def __iter__(self):
            return iter([(X, y)])

    loader = Loader()
    model = make_model()
    training.fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01), loader, 3, progress=False)
    assert loader.epochs == [0, 1, 2]


def test_bad_arguments_name_the_argument():
    X, y = make_data(8)
    model = make_model()
    opt = optim.SGD(model.parameters(), lr=0.01)
    loss = nn.CrossEntropyLoss()
    dl = DataLoader(X, y, batch_size=4)
    with pytest.raises(ValueError, match="fit: epochs must be >= 1"):
        training.fit(model, loss, opt, dl, 0)
    with pytest.raises(ValueError, match="scheduler_interval must be one of 'epoch', 'batch'"):
        training.fit(model, loss, opt, dl, 1, scheduler_interval="step")
    with pytest.raises(TypeError, match="fit: model must be a cnnext.nn.Module"):
        training.fit(lambda x: x, loss, opt, dl, 1)
    with pytest.raises(TypeError, match="fit: optimizer must have step"):
        training.fit(model, loss, None, dl, 1)
    with pytest.raises(TypeError, match="fit: loss_fn must have backward"):
        training.fit(model, F.cross_entropy, opt, dl, 1)
    with pytest.raises(TypeError, match="loader must be an iterable"):
        training.fit(model, loss, opt, 5, 1)
    with pytest.raises(TypeError, match="callbacks must be cnnext.training.Callback"):
        training.fit(model, loss, opt, dl, 1, callbacks=[print])
    with pytest.raises(ValueError, match="metrics must be one of 'accuracy'"):
        training.evaluate(model, dl, metrics=["f1"])
    with pytest.raises(ValueError, match="named functions"):
        training.evaluate(model, dl, metrics=[lambda o, t: 0])
    with pytest.raises(ValueError, match="loader gave no samples in epoch 1"):
        training.fit(model, loss, opt, [], 1, progress=False)
    with pytest.raises(ValueError, match="predict: batch_size must be >= 1"):
        training.predict(model, X, batch_size=0)


def test_create_optimizer_by_name():
    params = [nn.Parameter(np.zeros(3))]
    opt = optim.create_optimizer("sgd", params, lr=0.05, momentum=0.9)
    assert type(opt) is optim.SGD and opt.param_groups[0]["momentum"] == 0.9
    assert type(optim.create_optimizer("adamw", params)) is optim.AdamW
    assert optim.create_optimizer("adamw", params).param_groups[0]["weight_decay"] == 1e-2
    assert type(optim.create_optimizer("adam", params, lr=0.01)) is optim.Adam
    with pytest.raises(ValueError, match="create_optimizer: name must be one of 'sgd', 'adam', 'adamw', 'rmsprop'"):
        optim.create_optimizer("adagrad", params)
