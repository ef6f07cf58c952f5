"""cnnext.optim: closed-form single steps, and several steps of training against torch.optim."""
import numpy as np
import pytest

from cnnext import nn, optim


def param(values, grad):
    p = nn.Parameter(np.array(values, dtype=np.float64))
    p.grad[...] = grad
    return p


# -- closed forms (no torch) ----------------------------------------------------------------
def test_sgd_plain_momentum_nesterov_closed_form():
    p = param([1.0, -2.0], [0.5, 1.0])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.1])

    p = param([1.0], [2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    opt.step()  # g = 2 + 0.5*1 = 2.5, buf = 2.5
    np.testing.assert_allclose(p.data, [1.0 - 0.25])
    p.grad[...] = 2.0
    opt.step()  # g = 2 + 0.5*0.75 = 2.375, buf = 0.9*2.5 + 2.375 = 4.625
    np.testing.assert_allclose(p.data, [0.75 - 0.4625])

    p = param([0.0], [1.0])
    opt = optim.SGD([p], lr=1.0, momentum=0.5, nesterov=True)
    opt.step()  # buf = 1, g = 1 + 0.5 = 1.5
    np.testing.assert_allclose(p.data, [-1.5])
    opt.step()  # buf = 0.5 + 1 = 1.5, g = 1 + 0.75
    np.testing.assert_allclose(p.data, [-3.25])


def test_adam_first_step_is_lr_times_sign():
    # with bias correction the first step is lr * g / (|g| + eps') = lr * sign(g)
    p = param([1.0, 1.0, 1.0], [3.0, -0.02, 0.0])
    optim.Adam([p], lr=0.01, eps=1e-12).step()
    np.testing.assert_allclose(p.data, [0.99, 1.01, 1.0], rtol=1e-9)


def test_adamw_decoupled_decay_closed_form():
    p = param([2.0], [0.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.5).step()  # zero gradient: only the decay acts
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.05)])
    p = param([2.0], [0.0])
    optim.Adam([p], lr=0.1, weight_decay=0.5).step()  # L2 in the gradient: g = 1 -> lr * sign
    np.testing.assert_allclose(p.data, [1.9], rtol=1e-7)


def test_zero_grad_and_param_groups():
    a, b = param([1.0], [1.0]), param([1.0], [1.0])
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    opt.step()
    np.testing.assert_allclose([a.data[0], b.data[0]], [0.9, 0.5])
    opt.zero_grad()
    assert a.grad[0] == 0 and b.grad[0] == 0


def test_state_dict_round_trip_continues_identically():
    def run(split):
        p = param([1.0, -1.0], [0.0, 0.0])
        opt = optim.Adam([p], lr=0.1)
        for i in range(4):
            if i == split:
                sd = opt.state_dict()
                opt = optim.Adam([p], lr=0.1)
                opt.load_state_dict(sd)
            p.grad[...] = [np.sin(i + p.data[0]), np.cos(i * p.data[1])]
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=2), run(split=-1))


@pytest.mark.parametrize("make,exc,match", [
    (lambda ps: optim.SGD(ps, lr=-1), ValueError, "lr must be >= 0"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (lambda ps: optim.SGD(ps, lr="fast"), TypeError, "lr must be a real number"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0.0, 1.0\)"),
    (lambda ps: optim.Adam(ps, betas=0.9), ValueError, "betas must be a pair"),
    (lambda ps: optim.AdamW(ps, eps=-1e-8), ValueError, "eps must be >= 0"),
    (lambda ps: optim.Adam([]), ValueError, "empty parameter list"),
    (lambda ps: optim.Adam([np.zeros(3)]), TypeError, "Parameter objects"),
    (lambda ps: optim.SGD(ps[0], lr=0.1), TypeError, "single Parameter"),
    (lambda ps: optim.SGD([{"params": ps, "momentun": 0.9}], lr=0.1), ValueError, "unknown option"),
])
def test_optimizer_argument_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make([param([1.0], [0.0])])


# -- against torch ----------------------------------------------------------------------------
OPTIMIZERS = [
    ("sgd", dict(lr=0.1)),
    ("sgd_momentum_dampening", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("sgd_nesterov_wd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2)),
    ("adam", dict(lr=0.01)),
    ("adam_wd_betas_amsgrad", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True)),
    ("adamw", dict(lr=0.01)),
    ("adamw_wd", dict(lr=0.02, weight_decay=0.1, betas=(0.85, 0.95))),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_training_steps_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    kind = name.split("_")[0]
    ours_cls = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}[kind]
    theirs_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    rng = np.random.default_rng(0)
    ours = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, dtype=np.float64, rng=rng), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4, dtype=np.float64, rng=rng))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(48, 4)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    opt = ours_cls(ours.parameters(), **kwargs)
    topt = theirs_cls(theirs.parameters(), **kwargs)
    crit = nn.CrossEntropyLoss()
    for step in range(6):
        x = rng.standard_normal((5, 1, 8, 8))
        y = rng.integers(0, 4, 5)
        opt.zero_grad()
        loss = crit(ours(x), y)
        ours.backward(crit.backward(), input_grad=False)
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-9)
        tstate = theirs.state_dict()
        for k, v in ours.state_dict().items():
            np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name}: {k} after step {step + 1}")
    if kind == "sgd" and kwargs.get("momentum"):
        p0 = next(iter(theirs.parameters()))
        np.testing.assert_allclose(opt.state[next(iter(ours.parameters()))]["momentum_buffer"],
                                   topt.state[p0]["momentum_buffer"].numpy(), rtol=1e-9, atol=1e-12)


def test_float32_adam_matches_torch_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    lin = nn.Linear(6, 3, rng=rng)
    tlin = torch.nn.Linear(6, 3)
    tlin.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    opt, topt = optim.Adam(lin.parameters(), lr=0.05), torch.optim.Adam(tlin.parameters(), lr=0.05)
    crit = nn.MSELoss()
    for _ in range(5):
        x = rng.standard_normal((4, 6)).astype(np.float32)
        t = rng.standard_normal((4, 3)).astype(np.float32)
        opt.zero_grad()
        crit(lin(x), t)
        lin.backward(crit.backward())
        opt.step()
        topt.zero_grad()
        torch.nn.functional.mse_loss(tlin(torch.from_numpy(x)), torch.from_numpy(t)).backward()
        topt.step()
    assert lin.weight.data.dtype == np.float32
    np.testing.assert_allclose(lin.weight.data, tlin.weight.detach().numpy(), rtol=1e-4, atol=1e-5)
