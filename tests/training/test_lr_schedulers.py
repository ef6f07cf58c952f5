"""StepLR, MultiStepLR, LinearLR, OneCycleLR, SequentialLR and ReduceLROnPlateau against
torch.optim.lr_scheduler, step by step (rates and momentum), with state_dict round trips (issue 14 item 5)."""
import numpy as np
import pytest

from cnnext import nn, optim

torch = pytest.importorskip("torch")


def _opts(kind="sgd", lrs=(0.1, 0.02)):
    ours_params = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
    theirs_params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    if kind == "sgd":
        ours = optim.SGD([{"params": [ours_params[0]], "lr": lrs[0]}, {"params": [ours_params[1]], "lr": lrs[1]}],
                         lr=lrs[0], momentum=0.9)
        theirs = torch.optim.SGD([{"params": [theirs_params[0]], "lr": lrs[0]},
                                  {"params": [theirs_params[1]], "lr": lrs[1]}], lr=lrs[0], momentum=0.9)
    else:
        ours = optim.Adam([{"params": [ours_params[0]], "lr": lrs[0]}, {"params": [ours_params[1]], "lr": lrs[1]}],
                          lr=lrs[0])
        theirs = torch.optim.Adam([{"params": [theirs_params[0]], "lr": lrs[0]},
                                   {"params": [theirs_params[1]], "lr": lrs[1]}], lr=lrs[0])
    return ours, theirs


def _run(make, steps, kind="sgd", metric=None):
    ours_opt, theirs_opt = _opts(kind)
    ours, theirs = make(optim, ours_opt), make(torch.optim, theirs_opt)
    rows = []
    for t in range(steps):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12, err_msg=f"step {t}")
        for og, tg in zip(ours_opt.param_groups, theirs_opt.param_groups):
            assert og["lr"] == pytest.approx(tg["lr"], rel=1e-12), t
            for key in ("momentum", "betas"):
                if key in tg:
                    np.testing.assert_allclose(og[key], tg[key], rtol=1e-12, err_msg=f"{key} step {t}")
        ours_opt.step()
        theirs_opt.step()
        if metric is None:
            ours.step()
            theirs.step()
        else:
            ours.step(metric(t))
            theirs.step(metric(t))
        rows.append(list(ours.get_last_lr()))
    return ours, rows


CASES = {
    "StepLR": lambda m, o: m.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda m, o: m.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "LinearLR": lambda m, o: m.lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=4),
    "LinearLR-default": lambda m, o: m.lr_scheduler.LinearLR(o),
    "OneCycleLR": lambda m, o: m.lr_scheduler.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=12),
    "OneCycleLR-linear-3phase": lambda m, o: m.lr_scheduler.OneCycleLR(
        o, max_lr=0.4, epochs=3, steps_per_epoch=4, anneal_strategy="linear", three_phase=True, pct_start=0.25),
    "Sequential": lambda m, o: m.lr_scheduler.SequentialLR(
        o, [m.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
            m.lr_scheduler.CosineAnnealingLR(o, T_max=5)], milestones=[3]),
    "Sequential-3": lambda m, o: m.lr_scheduler.SequentialLR(
        o, [m.lr_scheduler.StepLR(o, 2, 0.5), m.lr_scheduler.MultiStepLR(o, [1, 3]),
            m.lr_scheduler.LinearLR(o, 0.5, 1.0, 2)], milestones=[4, 7]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedules_match_torch_step_by_step(name):
    _run(CASES[name], 12)


def test_one_cycle_cycles_adam_betas_like_torch():
    _run(CASES["OneCycleLR"], 12, kind="adam")


@pytest.mark.parametrize("kw", [{}, {"mode": "max", "threshold_mode": "abs", "threshold": 0.05},
                                {"patience": 1, "cooldown": 2, "factor": 0.5, "min_lr": [0.01, 0.005]}])
def test_reduce_on_plateau_matches_torch(kw):
    values = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.89, 0.9, 0.9, 0.9, 0.91, 0.92, 0.93, 0.8, 0.81, 0.82]
    _run(lambda m, o: m.lr_scheduler.ReduceLROnPlateau(o, **({"patience": 2} | kw)), len(values),
         metric=lambda t: values[t])


@pytest.mark.parametrize("name", ["StepLR", "OneCycleLR", "Sequential"])
def test_state_dict_resumes_exactly(name):
    _, full = _run(CASES[name], 10)
    opt, _ = _opts()
    sched = CASES[name](optim, opt)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2, _ = _opts()
    for g2, g in zip(opt2.param_groups, opt.param_groups):
        g2.update({k: v for k, v in g.items() if k != "params"})
    sched2 = CASES[name](optim, opt2)
    sched2.load_state_dict(state)
    for g2, g in zip(opt2.param_groups, opt.param_groups):
        g2.update({k: v for k, v in g.items() if k != "params"})
    rest = []
    for _ in range(6):
        opt2.step()
        sched2.step()
        rest.append(sched2.get_last_lr())
    np.testing.assert_allclose(rest, full[4:], rtol=1e-12)


def test_bad_arguments_name_them():
    opt, _ = _opts()
    with pytest.raises(ValueError, match="StepLR: step_size must be >= 1"):
        optim.StepLR(opt, 0)
    with pytest.raises(ValueError, match="OneCycleLR: give total_steps, or epochs and steps_per_epoch"):
        optim.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="OneCycleLR: anneal_strategy must be one of 'cos', 'linear'"):
        optim.OneCycleLR(opt, max_lr=0.1, total_steps=3, anneal_strategy="exp")
    with pytest.raises(ValueError, match=r"SequentialLR: expected len\(milestones\) \+ 1 = 2 schedulers"):
        optim.SequentialLR(opt, [optim.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau: mode must be one of 'min', 'max'"):
        optim.ReduceLROnPlateau(opt, mode="up")
    sched = optim.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    opt.step()
    sched.step()
    opt.step()
    sched.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 3 times, more than total_steps=2"):
        sched.step()
