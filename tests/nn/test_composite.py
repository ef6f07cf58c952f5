"""Composite modules (issue 14 item 2): blocks whose forward calls sub-modules and nn.ops get an
exact backward from the tape, checked against PyTorch and against finite differences; grad modes."""
import threading

import numpy as np
import pytest

import cnnext
from cnnext import nn

torch = pytest.importorskip("torch")


class Residual(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)), the shortcut a 1x1 conv or the identity."""

    def __init__(self, cin, cout, rng, dtype):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, rng=rng, dtype=dtype)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, rng=rng, dtype=dtype)
        self.shortcut = nn.Conv2d(cin, cout, 1, rng=rng, dtype=dtype) if cin != cout else nn.Identity()
        self.act2 = nn.ReLU()

    def forward(self, x):
        out = self.conv2(self.act1(self.conv1(x)))
        return self.act2(nn.ops.add(out, self.shortcut(x)))


class TorchResidual(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = torch.nn.Conv2d(cin, cout, 1) if cin != cout else torch.nn.Identity()

    def forward(self, x):
        out = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(out + self.shortcut(x))


class Branches(nn.Module):
    """Two branches over one input (fan-out), concatenated on channels, then a shared head."""

    def __init__(self, rng, dtype):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1, rng=rng, dtype=dtype)
        self.b = nn.Sequential(nn.Conv2d(3, 2, 1, rng=rng, dtype=dtype), nn.Tanh())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 5 * 5, 3, rng=rng, dtype=dtype))

    def forward(self, x):
        return self.head(nn.ops.cat([self.a(x), self.b(x)], dim=1))


class TorchBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.Tanh())
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6 * 5 * 5, 3))

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1))


def _compare(model, tmodel, x, dtype, rtol):
    tmodel = tmodel.to(torch.float64 if dtype == np.float64 else torch.float32)
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    out = model(x)
    tx = torch.from_numpy(x).requires_grad_(True)
    tout = tmodel(tx)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=rtol, atol=rtol)
    g = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    model.zero_grad()
    gx = model.backward(g)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=rtol, atol=rtol)
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("cin,cout", [(4, 4), (3, 5)])
def test_residual_block_matches_torch(dtype, rtol, cin, cout):
    rng = np.random.default_rng(0)
    block = Residual(cin, cout, rng, dtype)
    x = rng.standard_normal((2, cin, 6, 6)).astype(dtype)
    _compare(block, TorchResidual(cin, cout), x, dtype, rtol)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-4), (np.float64, 1e-10)])
def test_branches_with_fan_out_and_cat_match_torch(dtype, rtol):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 5, 5)).astype(dtype)
    _compare(Branches(rng, dtype), TorchBranches(), x, dtype, rtol)


def test_composites_nest_inside_sequential_and_blocks():
    rng = np.random.default_rng(2)
    model = nn.Sequential(Residual(3, 4, rng, np.float64), Residual(4, 4, rng, np.float64),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 2, rng=rng, dtype=np.float64))
    tmodel = torch.nn.Sequential(TorchResidual(3, 4), TorchResidual(4, 4), torch.nn.Flatten(),
                                 torch.nn.Linear(64, 2))
    x = rng.standard_normal((2, 3, 4, 4))
    _compare(model, tmodel, x, np.float64, 1e-10)


def test_composite_passes_gradcheck():
    rng = np.random.default_rng(3)
    block = Residual(2, 3, rng, np.float64)
    x = rng.standard_normal((1, 2, 4, 4))
    assert cnnext.gradcheck(block, x)


def test_input_grad_false_still_fills_parameter_grads():
    rng = np.random.default_rng(4)
    block = Residual(3, 4, rng, np.float64)
    x = rng.standard_normal((2, 3, 4, 4))
    g = rng.standard_normal((2, 4, 4, 4))
    block(x)
    block.zero_grad()
    full = block.backward(g)
    want = {n: p.grad.copy() for n, p in block.named_parameters()}
    block.zero_grad()
    block(x)
    assert block.backward(g, input_grad=False) is None
    assert full.shape == x.shape
    for n, p in block.named_parameters():
        np.testing.assert_array_equal(p.grad, want[n], err_msg=n)


class Reuse(nn.Module):
    """One ReLU module called twice in one forward: its caches must be put back for each backward."""

    def __init__(self, rng):
        super().__init__()
        self.fc1 = nn.Linear(4, 4, rng=rng, dtype=np.float64)
        self.fc2 = nn.Linear(4, 4, rng=rng, dtype=np.float64)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(x))))


def test_module_called_twice_in_one_forward():
    rng = np.random.default_rng(6)
    m = Reuse(rng)
    t = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)).double()
    t.load_state_dict({"1.weight": torch.from_numpy(m.fc1.weight.data), "1.bias": torch.from_numpy(m.fc1.bias.data),
                       "3.weight": torch.from_numpy(m.fc2.weight.data), "3.bias": torch.from_numpy(m.fc2.bias.data)})
    x = rng.standard_normal((3, 4))
    tx = torch.from_numpy(x).requires_grad_(True)
    np.testing.assert_allclose(m(x), t(tx).detach().numpy(), rtol=1e-12)
    g = rng.standard_normal((3, 4))
    t(tx).backward(torch.from_numpy(g))
    np.testing.assert_allclose(m.backward(g), tx.grad.numpy(), rtol=1e-12)


class DeadBranch(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.used = nn.Linear(3, 2, rng=rng, dtype=np.float64)
        self.unused = nn.Linear(3, 2, rng=rng, dtype=np.float64)

    def forward(self, x):
        self.unused(x)
        return self.used(x)


def test_unused_branch_gets_no_gradient():
    rng = np.random.default_rng(7)
    m = DeadBranch(rng)
    x = rng.standard_normal((2, 3))
    m(x)
    m.zero_grad()
    gx = m.backward(np.ones((2, 2)))
    np.testing.assert_allclose(gx, np.ones((2, 2)) @ m.used.weight.data)
    assert not m.unused.weight.grad.any()


class NumpyArithmetic(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.fc = nn.Linear(3, 3, rng=rng, dtype=np.float64)

    def forward(self, x):
        return self.fc(x) * 2.0  # not recorded: backward must refuse, not return a wrong gradient


class NumpyBetween(NumpyArithmetic):
    def forward(self, x):
        return self.fc(x + 1.0)


@pytest.mark.parametrize("cls", [NumpyArithmetic, NumpyBetween])
def test_unrecorded_numpy_arithmetic_is_refused(cls):
    m = cls(np.random.default_rng(8))
    m(np.ones((1, 3)))
    with pytest.raises(TypeError, match=rf"{cls.__name__}\.backward: .*does not record"):
        m.backward(np.ones((1, 3)))


def test_backward_before_forward_and_after_no_grad():
    m = Residual(2, 2, np.random.default_rng(9), np.float64)
    with pytest.raises(RuntimeError, match="call forward first"):
        m.backward(np.ones((1, 2, 3, 3)))
    with cnnext.no_grad():
        y = m(np.ones((1, 2, 3, 3)))
    assert y.shape == (1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="no_grad"):
        m.backward(np.ones((1, 2, 3, 3)))


def test_ops_validate_arguments():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"nn\.ops\.add: arrays\[1\] must be an array of shape \(2, 3\)"):
        nn.ops.add(a, np.ones((3, 2)))
    with pytest.raises(TypeError, match="at least two"):
        nn.ops.add(a)
    with pytest.raises(ValueError, match=r"nn\.ops\.cat: arrays\[1\]"):
        nn.ops.cat([a, np.ones((3, 3))], dim=1)
    with pytest.raises(ValueError, match="dim must be in"):
        nn.ops.cat([a, a], dim=2)
    np.testing.assert_array_equal(nn.ops.cat([a, 2 * a], dim=-1), np.concatenate([a, 2 * a], axis=1))


def test_grad_mode_is_per_thread_and_nests():
    assert cnnext.is_grad_enabled()
    seen = {}
    inside, release = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["other"] = cnnext.is_grad_enabled()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with cnnext.no_grad():
        assert not cnnext.is_grad_enabled()
        with cnnext.set_grad_enabled(True):
            assert cnnext.is_grad_enabled()
            with cnnext.inference_mode():
                assert not cnnext.is_grad_enabled()
            assert cnnext.is_grad_enabled()
        inside.set()
        release.wait()
        assert not cnnext.is_grad_enabled()
    t.join()
    assert seen["other"] is True
    assert cnnext.is_grad_enabled()
    with cnnext.inference_mode(False):
        assert cnnext.is_grad_enabled()


def test_grad_mode_decorators_and_function_form():
    @cnnext.no_grad()
    def f():
        return cnnext.is_grad_enabled()

    assert f() is False and cnnext.is_grad_enabled()

    @cnnext.set_grad_enabled(False)
    def g():
        return cnnext.is_grad_enabled()

    assert cnnext.is_grad_enabled()  # decorating does not change the mode
    assert g() is False and cnnext.is_grad_enabled()
    cnnext.set_grad_enabled(False)
    try:
        assert not cnnext.is_grad_enabled()
    finally:
        cnnext.set_grad_enabled(True)
    with pytest.raises(TypeError, match="set_grad_enabled: mode must be a bool"):
        cnnext.set_grad_enabled("no")


def test_module_list_and_dict_keys_match_torch():
    rng = np.random.default_rng(10)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(3, 3, rng=rng), nn.Linear(3, 2, rng=rng)])
            self.heads = nn.ModuleDict({"cls": nn.Linear(2, 4, rng=rng), "reg": nn.Linear(2, 1, rng=rng)})

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return nn.ops.cat([self.heads["cls"](x), self.heads["reg"](x)], dim=1)

    class TNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)])
            self.heads = torch.nn.ModuleDict({"cls": torch.nn.Linear(2, 4), "reg": torch.nn.Linear(2, 1)})

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return torch.cat([self.heads["cls"](x), self.heads["reg"](x)], dim=1)

    net = Net().to(np.float64)
    assert list(net.state_dict()) == list(TNet().state_dict())
    _compare(net, TNet(), rng.standard_normal((4, 3)), np.float64, 1e-12)
    with pytest.raises(TypeError, match="ModuleList.append: module must be a cnnext.nn.Module"):
        nn.ModuleList([3])
    with pytest.raises(ValueError, match="ModuleDict: keys must be"):
        nn.ModuleDict({"a.b": nn.Identity()})


class WithBuffers(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.fc = nn.Linear(2, 2, rng=rng, dtype=np.float64)
        self.register_buffer("running", np.zeros(2))
        self.register_buffer("count", np.zeros((), dtype=np.int64))
        self.register_buffer("scratch", np.ones(3), persistent=False)
        self.scale = nn.Parameter(np.ones(2))

    def forward(self, x):
        return self.fc(x)


class TWithBuffers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(3), persistent=False)
        self.scale = torch.nn.Parameter(torch.ones(2))


def test_buffers_in_state_dict_in_torch_order_and_converted_by_to():
    rng = np.random.default_rng(11)
    outer = nn.Sequential(WithBuffers(rng), WithBuffers(rng))
    touter = torch.nn.Sequential(TWithBuffers(), TWithBuffers())
    assert list(outer.state_dict()) == list(touter.state_dict())
    assert [n for n, _ in outer.named_buffers()] == [n for n, _ in touter.named_buffers()]
    assert [n for n, _ in outer.named_parameters()] == [n for n, _ in touter.named_parameters()]
    touter[1].running.fill_(3.0)
    touter[1].count.fill_(7)
    outer.load_state_dict({k: v for k, v in touter.state_dict().items()})
    np.testing.assert_array_equal(outer[1].running, [3.0, 3.0])
    assert outer[1].count == 7 and outer[1].count.dtype == np.int64
    outer.to(np.float32)
    assert outer[0].running.dtype == np.float32 and outer[0].count.dtype == np.int64
    assert outer[0].scratch.dtype == np.float32 and "0.scratch" not in outer.state_dict()
    sd = outer.state_dict()
    sd["1.count"] = np.array(2.5)
    with pytest.raises(ValueError, match="'1.count' must hold whole numbers"):
        outer.load_state_dict(sd)
    assert outer[1].count == 7  # a failed load changes nothing
    with pytest.raises(TypeError, match="register_buffer: array must be an ndarray"):
        outer[0].register_buffer("bad", [1, 2])
