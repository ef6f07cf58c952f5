"""cnnext.optim: CosineAnnealingLR step by step against torch.optim.lr_scheduler and closed forms."""
import math

import numpy as np
import pytest

from cnnext import nn, optim
from cnnext.optim.lr_scheduler import CosineAnnealingLR, LRScheduler


def cnnext_opt(lrs, kind="SGD"):
    groups = [{"params": [nn.Parameter(np.zeros(2))], "lr": lr} for lr in lrs]
    return getattr(optim, kind)(groups)


def torch_opt(torch, lrs, kind="SGD"):
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return getattr(torch.optim, kind)(groups)


def test_is_exported_from_cnnext_optim():
    import cnnext.optim.lr_scheduler as mod

    assert optim.CosineAnnealingLR is mod.CosineAnnealingLR is CosineAnnealingLR
    assert optim.lr_scheduler is mod and issubclass(CosineAnnealingLR, LRScheduler)


def test_closed_form_over_the_first_half_period():
    # lr_t = eta_min + (base - eta_min) * (1 + cos(pi t / T)) / 2, computed here independently
    opt = cnnext_opt([0.1])
    sched = CosineAnnealingLR(opt, T_max=8, eta_min=0.01)
    assert opt.param_groups[0]["lr"] == 0.1 and sched.get_last_lr() == [0.1]  # construction keeps it
    for t in range(1, 9):
        sched.step()
        want = 0.01 + 0.09 * (1 + math.cos(math.pi * t / 8)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(want, rel=1e-12)
        assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
    assert sched.get_last_lr()[0] == pytest.approx(0.01, rel=1e-12)  # eta_min at t = T_max


@pytest.mark.parametrize("T_max,eta_min,lrs,steps", [
    (10, 0.0, [0.1], 35),             # past T_max: the cosine rises again (period 2 * T_max)
    (7, 1e-3, [0.05, 0.3], 30),        # two parameter groups, a floor
    (1, 0.0, [1.0], 6),                # the shortest period
    (50, 0.0, [0.01], 50),
])
def test_matches_torch_step_by_step(T_max, eta_min, lrs, steps):
    torch = pytest.importorskip("torch")
    ours = cnnext_opt(lrs)
    theirs = torch_opt(torch, lrs)
    s1 = CosineAnnealingLR(ours, T_max=T_max, eta_min=eta_min)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=T_max, eta_min=eta_min)
    assert s1.get_last_lr() == pytest.approx(s2.get_last_lr(), rel=1e-15)
    for _ in range(steps):
        ours.step()
        theirs.step()
        s1.step()
        s2.step()
        np.testing.assert_allclose(s1.get_last_lr(), s2.get_last_lr(), rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose([g["lr"] for g in ours.param_groups],
                                   [g["lr"] for g in theirs.param_groups], rtol=1e-13, atol=1e-16)
    assert s1.last_epoch == s2.last_epoch == steps


def test_state_dict_resumes_like_an_uninterrupted_run_and_like_torch():
    torch = pytest.importorskip("torch")
    full_opt = cnnext_opt([0.2, 0.02], "Adam")
    full = CosineAnnealingLR(full_opt, T_max=12, eta_min=1e-4)
    torch_o = torch_opt(torch, [0.2, 0.02], "Adam")
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(torch_o, T_max=12, eta_min=1e-4)
    for _ in range(5):
        torch_o.step()
        full.step()
        ref.step()
    saved_opt, saved = full_opt.state_dict(), full.state_dict()
    assert saved["last_epoch"] == 5 and saved["T_max"] == 12
    # a fresh optimizer + scheduler, restored: the same rates from here on
    opt2 = cnnext_opt([0.7, 0.7], "Adam")
    opt2.load_state_dict(saved_opt)
    again = CosineAnnealingLR(opt2, T_max=3)
    again.load_state_dict(saved)
    assert again.T_max == 12 and again.get_last_lr() == full.get_last_lr()
    for _ in range(15):
        full.step()
        again.step()
        torch_o.step()
        ref.step()
        assert again.get_last_lr() == full.get_last_lr()
        np.testing.assert_allclose(again.get_last_lr(), ref.get_last_lr(), rtol=1e-13)
    # mutating what state_dict returned does not reach into the scheduler
    saved["base_lrs"][0] = 99.0
    assert again.base_lrs[0] == 0.2


def test_last_epoch_resume_follows_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = cnnext_opt([0.1]), torch_opt(torch, [0.1])
    for o in (ours, theirs):
        o.param_groups[0]["initial_lr"] = 0.4     # as restored from a checkpoint taken mid-schedule
    s1 = CosineAnnealingLR(ours, T_max=6, last_epoch=2)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=6, last_epoch=2)
    assert s1.base_lrs == [0.4] and s1.last_epoch == s2.last_epoch == 3
    for _ in range(8):
        theirs.step()
        s1.step()
        s2.step()
        np.testing.assert_allclose(s1.get_last_lr(), s2.get_last_lr(), rtol=1e-13)


def test_bad_arguments_name_the_argument():
    opt = cnnext_opt([0.1])
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be >= 1, got 0"):
        CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(TypeError, match="T_max must be an int"):
        CosineAnnealingLR(opt, T_max=2.5)
    with pytest.raises(ValueError, match="eta_min must be >= 0"):
        CosineAnnealingLR(opt, T_max=3, eta_min=-1.0)
    with pytest.raises(TypeError, match="optimizer must be a cnnext.optim optimizer"):
        CosineAnnealingLR([0.1], T_max=3)
    with pytest.raises(KeyError, match="initial_lr"):
        CosineAnnealingLR(cnnext_opt([0.1]), T_max=3, last_epoch=4)
    with pytest.raises(ValueError, match="last_epoch must be >= -1"):
        CosineAnnealingLR(opt, T_max=3, last_epoch=-2)
    sched = CosineAnnealingLR(opt, T_max=3)
    with pytest.raises(ValueError, match="lacks"):
        sched.load_state_dict({"T_max": 3})
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        sched.load_state_dict([1])

