"""cnnext.distributed: the sampler (no MPI needed), the wrapper on one rank, and real MPI runs.

The MPI tests launch tests/distributed_worker.py with ``mpiexec -n 2`` and ``-n 3`` on this machine
(loopback only) and compare every step's weights with single-process training on batches N times
larger, computed here without cnnext.distributed. They skip, saying why, where mpi4py or mpiexec
is missing (``pip install "cnnext[mpi]"`` brings both).
"""
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import cnnext
from cnnext import nn, optim
from cnnext import distributed as dist

import distributed_worker as worker
from helpers import child_env

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, with distributed_worker.py


# ---------------------------------------------------------------------------------------------
# sampler and helpers (no MPI)
# ---------------------------------------------------------------------------------------------
def shards(n, R, epoch=0, **kw):
    out = []
    for r in range(R):
        s = dist.DistributedSampler(n, num_replicas=R, rank=r, **kw)
        s.set_epoch(epoch)
        out.append(s.indices())
    return out


@pytest.mark.parametrize("n,R", [(12, 3), (10, 3), (7, 4), (1, 2), (5, 1), (100, 7)])
def test_sampler_pads_to_equal_shards_covering_everything(n, R):
    parts = shards(n, R, seed=3)
    per = -(-n // R)
    assert [len(p) for p in parts] == [per] * R
    counts = np.bincount(np.concatenate(parts), minlength=n)
    assert counts.size == n and counts.min() >= 1            # every sample is used
    assert counts.sum() == per * R                          # padding only adds the missing few
    assert (counts > 1).sum() == per * R - n                # ... each repeated once
    if n % R == 0:
        assert counts.max() == 1                            # disjoint when the sizes divide


@pytest.mark.parametrize("n,R", [(12, 3), (10, 3), (101, 2), (9, 4)])
def test_sampler_drop_last_is_disjoint(n, R):
    parts = shards(n, R, seed=3, drop_last=True)
    assert [len(p) for p in parts] == [n // R] * R
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == allidx.size == (n // R) * R


def test_sampler_follows_the_documented_permutation_interleaved():
    n, R, seed, epoch = 23, 3, 5, 4
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    padded = np.concatenate([perm, perm[:24 - 23]])
    for r in range(R):
        s = dist.DistributedSampler(n, num_replicas=R, rank=r, seed=seed)
        s.set_epoch(epoch)
        np.testing.assert_array_equal(s.indices(), padded[r::R])
        assert list(s) == padded[r::R].tolist() and len(s) == 8
    # step k of all ranks together = the k-th contiguous block of N*B of the permutation
    B = 3
    batches = [None] * R
    for r in range(R):
        s = dist.DistributedSampler(n, R, r, seed=seed)
        s.set_epoch(epoch)
        batches[r] = list(s.minibatches(np.arange(n), batch_size=B))
    assert [len(b) for b in batches] == [3, 3, 3]
    for k in range(3):
        union = np.sort(np.concatenate([batches[r][k] for r in range(R)]))
        np.testing.assert_array_equal(union, np.sort(padded[k * R * B:(k + 1) * R * B]))


def test_sampler_deterministic_and_new_each_epoch():
    a = dist.DistributedSampler(50, 2, 0, seed=1)
    b = dist.DistributedSampler(50, 2, 0, seed=1)
    np.testing.assert_array_equal(a.indices(), b.indices())
    first = a.indices()
    a.set_epoch(1)
    assert not np.array_equal(first, a.indices())
    a.set_epoch(0)
    np.testing.assert_array_equal(first, a.indices())
    c = dist.DistributedSampler(50, 2, 0, seed=2)
    assert not np.array_equal(first, c.indices())
    plain = dist.DistributedSampler(10, 2, 1, shuffle=False)
    np.testing.assert_array_equal(plain.indices(), [1, 3, 5, 7, 9])


def test_sampler_minibatches_and_last_partial_batch():
    X = np.arange(20 * 2).reshape(20, 2)
    y = np.arange(20)
    s = dist.DistributedSampler(20, 3, 2, seed=0)       # 7 per rank (one padded)
    got = list(s.minibatches(X, y, batch_size=3))
    assert [len(yb) for _, yb in got] == [3, 3, 1] == [3, 3, 7 - 6]
    assert s.num_batches(3) == 3
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), s.indices())


def test_sampler_errors_name_the_argument():
    with pytest.raises(ValueError, match="rank"):
        dist.DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="n_samples"):
        dist.DistributedSampler(0, num_replicas=2, rank=0)
    with pytest.raises(TypeError, match="seed"):
        dist.DistributedSampler(10, 2, 0, seed=1.5)
    with pytest.raises(ValueError, match="drop_last"):
        dist.DistributedSampler(1, 2, 0, drop_last=True)
    s = dist.DistributedSampler(10, 2, 0)
    with pytest.raises(ValueError, match="X must have n_samples=10"):
        list(s.minibatches(np.zeros((9, 1)), None, 2))
    with pytest.raises(ValueError, match="batch_size"):
        list(s.minibatches(np.zeros((10, 1)), None, 0))


@pytest.mark.parametrize("n,size", [(10, 3), (2, 4), (0, 2), (9, 3)])
def test_shard_range_covers_once(n, size):
    ranges = [dist.shard_range(n, r, size) for r in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    lengths = [b - a for a, b in ranges]
    assert max(lengths) - min(lengths) <= 1


# ---------------------------------------------------------------------------------------------
# the wrapper on a single rank, with a stand-in communicator (no MPI library involved)
# ---------------------------------------------------------------------------------------------
class OneRank:
    """The part of an mpi4py communicator the wrapper uses, for a world of one rank."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Allreduce(self, *a, **k):
        raise AssertionError("no Allreduce in a world of one")

    Bcast = Allreduce

    def allgather(self, obj):
        return [obj]


def test_wrapper_single_rank_matches_plain_training_and_buckets_gradients():
    plain = worker.build_model(1)
    wrapped_model = worker.build_model(1)
    ddp = dist.DistributedDataParallel(wrapped_model, comm=OneRank(), bucket_cap_mb=0.002)
    assert len(ddp.buckets) > 1
    assert sum(n for _, n, _ in ddp.buckets) == len(list(plain.parameters()))
    X, y = worker.make_data(16)
    c1, c2 = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    o1 = optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    o2 = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        o1.zero_grad(), o2.zero_grad()
        c1(plain(X), y)
        plain.backward(c1.backward())
        c2(ddp(X), y)
        ddp.backward(c2.backward())
        o1.step(), o2.step()
    for (k1, a), (k2, b) in zip(plain.state_dict().items(), ddp.state_dict().items()):
        assert k2 == "module." + k1
        np.testing.assert_array_equal(a, b)
    assert ddp.allreduce_stats()["steps"] == 3


def test_wrapper_copies_back_a_rebound_gradient_and_follows_dtype_changes():
    model = worker.build_model(2)
    ddp = dist.DistributedDataParallel(model, comm=OneRank())
    p = next(iter(model.parameters()))
    p.grad = np.full_like(p.data, 3.0)           # user code rebinding .grad
    ddp.sync_gradients()
    np.testing.assert_array_equal(p.grad, 3.0)
    assert np.shares_memory(p.grad, ddp._buckets[-1].buffer)
    ddp.to(np.float32)
    ddp.sync_gradients()
    assert ddp.buckets[0][0] == np.float32 and p.grad.dtype == np.float32


def test_single_rank_refuses_bad_local_state_with_the_local_error():
    """The checks run before every collective raise this rank's own error in a world of one too."""
    ddp = dist.DistributedDataParallel(worker.build_model(2), comm=OneRank())
    with pytest.raises(ValueError, match=r"broadcast_parameters: root must be in \[0, world_size=1\), got 1"):
        ddp.broadcast_parameters(root=1)
    with pytest.raises(TypeError, match="broadcast_parameters: root must be an int"):
        ddp.broadcast_parameters(root=0.5)
    p = next(iter(ddp.module.parameters()))
    p.grad = np.float64(2.0)          # would have been spread over the whole view by broadcasting
    with pytest.raises(ValueError, match=r"gradient of parameter '0.weight' must be an array of its shape "
                                         r"\(4, 1, 3, 3\), got float64"):
        ddp.sync_gradients()
    p.grad = np.ones((4, 1, 3, 3))
    ddp.sync_gradients()
    np.testing.assert_array_equal(p.grad, 1.0)
    with pytest.raises(TypeError, match="allreduce_sum: values must be a vector of numbers"):
        dist.allreduce_sum(["a"], comm=OneRank())
    with pytest.raises(TypeError, match="reduce_metrics: every metric must be a number"):
        dist.reduce_metrics({"count": "many"}, comm=OneRank())
    np.testing.assert_array_equal(dist.allreduce_sum([1, 2.5], comm=OneRank()), [1.0, 2.5])


def test_no_sync_skips_communication():
    ddp = dist.DistributedDataParallel(worker.build_model(3), comm=OneRank())
    X, y = worker.make_data(4)
    c = nn.CrossEntropyLoss()
    with ddp.no_sync():
        c(ddp(X), y)
        ddp.backward(c.backward())
    assert ddp.allreduce_times == []
    c(ddp(X), y)
    ddp.backward(c.backward())
    assert len(ddp.allreduce_times) == 1


def test_reduce_metrics_single_rank_and_errors():
    out = dist.reduce_metrics({"count": 3, "correct": 2, "loss_sum": 1.5}, comm=OneRank())
    assert out == {"correct": 2.0, "count": 3.0, "loss_sum": 1.5}
    with pytest.raises(TypeError, match="metrics"):
        dist.reduce_metrics([1, 2], comm=OneRank())
    with pytest.raises(TypeError, match="DistributedDataParallel: module"):
        dist.DistributedDataParallel(object(), comm=OneRank())
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        dist.DistributedDataParallel(worker.build_model(0), comm=OneRank(), bucket_cap_mb=0)
    with pytest.raises(TypeError, match="comm"):
        dist.DistributedDataParallel(worker.build_model(0), comm=object())


def test_checks_are_the_package_ones():
    # cnnext._validation's check_int / check_float: numpy integers pass, bools and inf do not
    s = dist.DistributedSampler(np.int64(10), num_replicas=np.int32(2), rank=np.int64(1), seed=np.uint8(3))
    assert (s.n_samples, s.num_replicas, s.rank, s.seed) == (10, 2, 1, 3)
    with pytest.raises(TypeError, match="DistributedSampler: seed must be an int, got bool True"):
        dist.DistributedSampler(10, 2, 0, seed=True)
    with pytest.raises(ValueError, match="shard_range: size must be >= 1, got 0"):
        dist.shard_range(4, 0, 0)
    with pytest.raises(ValueError, match="DistributedDataParallel: bucket_cap_mb must be finite"):
        dist.DistributedDataParallel(worker.build_model(0), comm=OneRank(), bucket_cap_mb=float("inf"))
    with pytest.raises(TypeError, match="bucket_cap_mb must be a real number"):
        dist.DistributedDataParallel(worker.build_model(0), comm=OneRank(), bucket_cap_mb=True)
    assert "train_cli" not in dist.__all__ and not hasattr(dist, "train_cli")   # the CLI is cnnext.cli's


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # makes "from mpi4py import MPI" fail
    with pytest.raises(ImportError, match=r"cnnext\[mpi\]"):
        dist.DistributedDataParallel(worker.build_model(0))
    with pytest.raises(ImportError, match=r"cnnext\[mpi\]"):
        dist.DistributedSampler(10)
    dist.DistributedSampler(10, num_replicas=2, rank=1)     # explicit ranks need no MPI


def test_loader_gives_the_sampler_shards_and_fit_sets_the_epoch():
    X, y = worker.make_data(20)
    loader = dist.DistributedLoader(X, y, batch_size=3, seed=4, num_replicas=3, rank=1)
    s = dist.DistributedSampler(20, 3, 1, seed=4)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        s.set_epoch(epoch)
        got = list(loader)
        assert len(got) == len(loader) == 3                   # 7 per rank: batches of 3, 3, 1
        np.testing.assert_array_equal(np.concatenate([xb for xb, _ in got]), X[s.indices()])
        np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), y[s.indices()])
    with pytest.raises(ValueError, match="DistributedLoader: y must have one entry per sample"):
        dist.DistributedLoader(X, y[:5], num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="DistributedLoader: batch_size must be >= 1"):
        dist.DistributedLoader(X, y, batch_size=0, num_replicas=1, rank=0)


def test_fit_with_the_wrapper_on_one_rank_is_plain_fit():
    """The pieces ``train --distributed`` hands to training.fit, in a world of one rank."""
    import functools

    from cnnext import training

    X, y = worker.make_data(30)
    plain = worker.build_model(7)
    order = []
    for epoch in range(2):   # the sampler's documented permutation, built here
        perm = np.random.default_rng([5, epoch]).permutation(30)
        order += [(X[perm[i:i + 8]], y[perm[i:i + 8]]) for i in range(0, 30, 8)]
    opt = optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    for xb, yb in order:
        opt.zero_grad()
        crit(plain(xb), yb)
        plain.backward(crit.backward(), input_grad=False)
        opt.step()
    comm = OneRank()
    ddp = dist.DistributedDataParallel(worker.build_model(7), comm=comm)
    hist = training.fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9),
                        dist.DistributedLoader(X, y, batch_size=8, seed=5, comm=comm), 2, progress=False,
                        reduce=functools.partial(dist.reduce_metrics, comm=comm))
    np.testing.assert_array_equal(worker.flat(ddp.module), worker.flat(plain))
    assert hist["samples"] == [30, 30] and len(ddp.allreduce_times) == 8


# ---------------------------------------------------------------------------------------------
# real MPI runs
# ---------------------------------------------------------------------------------------------
def find_mpiexec():
    """mpiexec next to this Python (the MPICH wheel's), else on PATH; None when there is none."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), shutil.which("mpiexec")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            # MPICH's fork-based launcher starts local ranks without listening on any interface.
            gforker = c + ".gforker"
            return gforker if os.path.isfile(gforker) else c
    return None


def mpi_env():
    """Environment for local runs: loopback only, one thread per rank, Open MPI allowed as root."""
    lo = "lo0" if platform.system() == "Darwin" else "lo"
    # The ranks import the cnnext this process imported (the source tree or an installed wheel).
    return child_env(HERE, **{
        "UCX_NET_DEVICES": lo, "FI_TCP_IFACE": lo, "FI_SOCKETS_IFACE": lo,
        "OMPI_MCA_btl_tcp_if_include": lo, "OMPI_MCA_oob_tcp_if_include": lo,
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1", "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    })


def mpi_skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return 'mpi4py is not installed (pip install "cnnext[mpi]")'
    if find_mpiexec() is None:
        return 'no mpiexec next to this Python or on PATH (pip install mpich, or "cnnext[mpi]")'
    return None


needs_mpi = pytest.mark.skipif(mpi_skip_reason() is not None, reason=str(mpi_skip_reason()))


def mpirun(n, args, timeout=180, check=True):
    cmd = [find_mpiexec(), "-n", str(n), sys.executable] + list(args)
    # A session of its own, so a hung run is ended with all its ranks, not just mpiexec.
    # cwd: "python -m cnnext" from the repository root would import the uncompiled source tree.
    popen = subprocess.Popen(cmd, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=HERE, start_new_session=(os.name == "posix"))
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if os.name == "posix":
            os.killpg(popen.pid, signal.SIGKILL)
        else:
            popen.kill()
        stdout, stderr = popen.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{stdout}\n{stderr}")
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def mpi_results(request, tmp_path_factory):
    reason = mpi_skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp(f"mpi{request.param}") / "out.npz"
    mpirun(request.param, [os.path.join(HERE, "distributed_worker.py"), str(out)])
    with np.load(out) as d:
        return request.param, dict(d)


def reference(name, world):
    """One process, batch world*B, over the permutation the sampler documents (built here)."""
    opt_name, opt_kw, n, B, epochs, drop_last, _ = worker.SCENARIOS[name]
    model = worker.build_model(worker.MODEL_SEED)
    X, y = worker.make_data(n)
    opt = getattr(optim, opt_name)(model.parameters(), **opt_kw)
    crit = nn.CrossEntropyLoss()
    total = (n // world if drop_last else -(-n // world)) * world
    params, losses, counts = [worker.flat(model)], [], []
    for epoch in range(epochs):
        perm = np.random.default_rng([worker.SAMPLER_SEED, epoch]).permutation(n)
        order = perm[:total] if total <= n else np.concatenate([perm, perm[:total - n]])
        for start in range(0, total, world * B):
            idx = order[start:start + world * B]
            opt.zero_grad()
            losses.append(crit(model(X[idx]), y[idx]))
            model.backward(crit.backward())
            opt.step()
            params.append(worker.flat(model))
            counts.append(len(idx))
    return np.array(params), np.array(losses), np.array(counts)


@needs_mpi
@pytest.mark.parametrize("name", list(worker.SCENARIOS))
def test_n_ranks_equal_one_process_with_n_times_the_batch(mpi_results, name):
    world, res = mpi_results
    assert int(res["world_size"]) == world
    ref_params, ref_losses, ref_counts = reference(name, world)
    got = res[f"{name}/params"]
    assert got.shape == ref_params.shape, "different number of steps"
    np.testing.assert_array_equal(got[0], ref_params[0])    # rank 0's weights were broadcast
    np.testing.assert_array_equal(res[f"{name}/count"], ref_counts)
    np.testing.assert_allclose(res[f"{name}/loss"], ref_losses, rtol=1e-10)
    np.testing.assert_allclose(got, ref_params, rtol=1e-9, atol=1e-11)
    assert np.abs(got[-1] - got[0]).max() > 1e-3             # training moved the weights


@needs_mpi
@pytest.mark.parametrize("name", list(worker.SCENARIOS))
def test_all_ranks_identical_after_every_step(mpi_results, name):
    _, res = mpi_results
    diffs = res[f"{name}/max_rank_diff"]
    assert diffs.size > 0 and np.all(diffs == 0.0), diffs
    assert float(res["float32/max_rank_diff"]) == 0.0


@needs_mpi
def test_gradients_travel_in_few_buckets(mpi_results):
    _, res = mpi_results
    assert int(res["sgd/buckets"]) == 1                     # 25 MiB cap: one buffer for the model
    assert int(res["momentum/buckets"]) == 5                # 1 KiB cap: split, still one call per bucket


# ---------------------------------------------------------------------------------------------
# ranks that disagree: a Python exception on every rank, never an MPI abort
# ---------------------------------------------------------------------------------------------
CHANGED = {
    "float64": "parameter dtypes: first difference '0.weight: float32' on rank 0, '0.weight: float64' on rank 1",
    "shape": "parameter shapes: first difference '6.weight: (10, 96)' on rank 0, '6.weight: (11, 96)' on rank 1",
}


@needs_mpi
@pytest.mark.parametrize("how", list(CHANGED))
def test_one_rank_changing_its_model_after_wrapping_raises_on_every_rank(tmp_path, how):
    # Before the check: the gradient Allreduce aborted the job ("Message truncated", exit 142).
    prefix = str(tmp_path / "rank")
    proc = mpirun(2, [os.path.join(HERE, "distributed_worker.py"), "--change-after-wrap", how, prefix],
                  timeout=90, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)   # Python's, not MPI's 142
    assert "the step went through" not in proc.stdout
    assert "Message truncated" not in proc.stderr and "Abort" not in proc.stderr, proc.stderr
    for rank in (0, 1):
        with open(f"{prefix}.{rank}.err") as f:
            err = f.read()
        last = err.strip().splitlines()[-1]      # the uncaught exception of this rank
        assert last.startswith("RuntimeError: DistributedDataParallel.sync_gradients: rank 1 does not "
                               "match rank 0 for the gradient Allreduce"), err
        assert CHANGED[how] in last and last.endswith(f"(raised on rank {rank} of 2)"), last
        if how == "shape":
            assert "gradient elements: 1232 on rank 0, 1329 on rank 1" in last   # 10*96+10 vs 11*96+11


MISMATCHES = {   # case -> what every rank's message names (rank 1 is the odd one out)
    "wrap_bucket_cap": ("ValueError", "DistributedDataParallel: rank 1 does not match rank 0 for the wrapping",
                        "gradient buckets (dtype x elements): 1 on rank 0, 5 on rank 1"),
    "wrap_other_model": ("ValueError", "DistributedDataParallel: rank 1 does not match rank 0",
                         "parameter shapes: first difference '2.weight: (6, 4, 3, 3)' on rank 0, "
                         "'2.weight: (6, 4, 5, 5)' on rank 1"),
    "broadcast_root": ("RuntimeError", "broadcast_parameters: rank 1 does not match rank 0",
                       "root: 0 on rank 0, 1 on rank 1"),
    "replaced_same_shapes": ("RuntimeError", "sync_gradients: rank 1 does not match rank 0",
                             "parameters replaced or converted since the last synchronisation: 'no' on rank 0, "
                             "'yes' on rank 1"),
    "metric_names": ("RuntimeError", "reduce_metrics: rank 1 does not match rank 0",
                     "metric names: first difference 'count' on rank 0, 'correct' on rank 1"),
    "sum_length": ("RuntimeError", "allreduce_sum: rank 1 does not match rank 0",
                   "number of values: 3 on rank 0, 2 on rank 1"),
    "out_of_step": ("RuntimeError", "the ranks are out of step: rank 0 is in the gradient Allreduce",
                    "rank 1 in a metric sum"),          # each rank's message starts with its own call
}
LOCAL_FAILURES = {   # case -> rank 1's own error; the other ranks name it
    "rebound_gradient": ("ValueError", "sync_gradients: the gradient of parameter '0.weight' must be an array "
                                       "of its shape (4, 1, 3, 3), got float64"),
    "metric_not_a_number": ("TypeError", "reduce_metrics: every metric must be a number"),
}


@needs_mpi
def test_mismatched_collectives_raise_on_every_rank_and_the_ranks_stay_in_step(tmp_path):
    import json

    world = 3
    prefix = str(tmp_path / "got")
    mpirun(world, [os.path.join(HERE, "distributed_worker.py"), "--mismatches", prefix], timeout=120)
    got = []
    for rank in range(world):
        with open(f"{prefix}.{rank}.json") as f:
            got.append(json.load(f))
    for rank, g in enumerate(got):
        suffix = f"(raised on rank {rank} of {world})"
        for case, (kind, head, detail) in MISMATCHES.items():
            msg = g[case]
            assert msg is not None and msg.startswith(f"{kind}: ") and head in msg and detail in msg, (case, msg)
            assert msg.endswith(suffix), (case, msg)
        for case, (kind, own) in LOCAL_FAILURES.items():
            msg = g[case]
            if rank == 1:
                assert msg.startswith(f"{kind}: ") and own in msg, (case, msg)
            else:
                assert msg.startswith("RuntimeError: ") and "rank 1 failed before" in msg, (case, msg)
                assert f"{kind}: " in msg and own in msg and msg.endswith(suffix), (case, msg)
        assert g["all_ranks_convert"] is None            # the same change on every rank is allowed
        assert g["max_rank_diff_after"] == 0.0           # ... and after all the errors the ranks train in step
    for case in set(MISMATCHES) - {"out_of_step"}:      # the same message everywhere, but for the rank
        assert len({g[case].rsplit(" (raised on", 1)[0] for g in got}) == 1, case


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------
@needs_mpi
def test_cli_train_distributed_two_ranks(tmp_path):
    model_path = tmp_path / "ddp.npz"
    proc = mpirun(2, ["-m", "cnnext", "train", "--distributed", "--epochs", "3", "--save", str(model_path)])
    out = proc.stdout
    assert "epoch 3/3: 100%" in proc.stderr                  # rank 0's progress bar got through the launcher
    assert "distributed training on 2 MPI ranks" in out
    assert "batch size 32 per rank (64 global)" in out
    # only rank 0 prints: every line once
    for line in ("epoch 1/3", "epoch 3/3", "test accuracy", "throughput", "model saved to"):
        assert out.count(line) == 1, out
    assert "gradient Allreduce" in out
    from cnnext.datasets import load_digits

    model, meta = cnnext.load(str(model_path), return_metadata=True)
    assert meta["mpi_ranks"] == 2 and meta["global_batch_size"] == 64
    (_, _), (Xt, yt) = load_digits()
    acc = float(np.mean(model.eval()(Xt).argmax(axis=1) == yt))
    assert acc > 0.8, acc                                    # chance is 0.1
    assert abs(acc - meta["test_accuracy"]) < 1e-12          # the reported accuracy is the saved model's


def test_cli_distributed_without_mpi4py_is_one_line(monkeypatch, capsys, tmp_path):
    from cnnext.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    status = main(["train", "--distributed", "--epochs", "1", "--save", str(tmp_path / "m.npz")])
    err = capsys.readouterr().err
    assert status == 2 and "cnnext[mpi]" in err and len(err.strip().splitlines()) == 1, err


@needs_mpi
def test_cli_one_failing_rank_stops_all_ranks(tmp_path):
    model_path = tmp_path / "never.npz"
    proc = mpirun(2, [os.path.join(HERE, "distributed_worker.py"), "--fail-one-rank", str(model_path)],
                  timeout=90, check=False)
    assert proc.returncode != 0
    assert "rank 1: RuntimeError: injected failure on rank 1; aborting all ranks" in proc.stderr, proc.stderr
    assert not model_path.exists()
