"""Run under ``mpiexec -n N``: data-parallel training scenarios whose results tests/training/test_distributed.py
compares with single-process training. Not a test module (pytest does not collect it).

Usage: ``mpiexec -n N python distributed_worker.py OUT.npz`` (or ``--fail-one-rank MODEL.npz``,
``--change-after-wrap float64|shape ERR_PREFIX``, ``--mismatches OUT_PREFIX``). Rank 0 writes, per scenario ``s``:
``s/params`` (steps+1, P) rank 0's flattened parameters before the first and after every step,
``s/max_rank_diff`` (steps,) the largest difference between any rank's parameters and rank 0's,
``s/loss`` (steps,) the step's mean loss over all ranks (from ``reduce_metrics``),
``s/count`` (steps,) samples per step over all ranks, ``s/buckets`` the number of gradient buckets.
"""
import json
import sys

import numpy as np

from cnnext import nn, optim
from cnnext import distributed as dist

# name -> (optimizer, options, n_samples, per-rank batch, epochs, drop_last, bucket_cap_mb)
SCENARIOS = {
    "sgd": ("SGD", dict(lr=0.1), 96, 8, 2, False, 25.0),
    "momentum": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), 96, 8, 2, False, 0.001),
    "adam": ("Adam", dict(lr=1e-2), 96, 8, 2, False, 25.0),
    "uneven_pad": ("SGD", dict(lr=0.05, momentum=0.9), 101, 7, 2, False, 0.001),
    "uneven_drop": ("SGD", dict(lr=0.05, momentum=0.9), 101, 7, 2, True, 25.0),
}
MODEL_SEED = 1234
DATA_SEED = 99
SAMPLER_SEED = 7


def build_model(seed, dtype=np.float64):
    """The small CNN every scenario trains (the test builds the same one for its reference)."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 10, dtype=dtype, rng=rng))


def make_data(n, dtype=np.float64):
    """Random 8x8 images and labels, the same on every rank."""
    rng = np.random.default_rng(DATA_SEED)
    return rng.standard_normal((n, 1, 8, 8)).astype(dtype), rng.integers(0, 10, n)


def flat(model):
    return np.concatenate([p.data.reshape(-1) for p in model.parameters()])


def run(name, comm):
    opt_name, opt_kw, n, batch, epochs, drop_last, cap = SCENARIOS[name]
    rank = comm.Get_rank()
    # Ranks other than 0 start from different weights: the broadcast must overwrite them.
    model = build_model(MODEL_SEED if rank == 0 else MODEL_SEED + 1000 + rank)
    ddp = dist.DistributedDataParallel(model, comm=comm, bucket_cap_mb=cap)
    X, y = make_data(n)
    sampler = dist.DistributedSampler(n, seed=SAMPLER_SEED, drop_last=drop_last, comm=comm)
    opt = getattr(optim, opt_name)(ddp.parameters(), **opt_kw)
    criterion = nn.CrossEntropyLoss()
    params, diffs, losses, counts = [flat(model)], [], [], []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in sampler.minibatches(X, y, batch):
            opt.zero_grad()
            loss = criterion(ddp(xb), yb)
            ddp.backward(criterion.backward(), input_grad=False)
            opt.step()
            totals = dist.reduce_metrics({"loss_sum": loss * len(yb), "count": len(yb)}, comm)
            losses.append(totals["loss_sum"] / totals["count"])
            counts.append(totals["count"])
            everyone = comm.allgather(flat(model))
            diffs.append(max(float(np.max(np.abs(p - everyone[0]))) for p in everyone))
            params.append(everyone[0])
    assert len(ddp.allreduce_times) == len(losses)
    return {f"{name}/params": np.array(params), f"{name}/max_rank_diff": np.array(diffs),
            f"{name}/loss": np.array(losses), f"{name}/count": np.array(counts),
            f"{name}/buckets": np.array(len(ddp.buckets))}


def main(out):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    results = {}
    for name in SCENARIOS:
        results.update(run(name, comm))
    # float32 model: broadcast and averaging keep the ranks identical too.
    m32 = build_model(MODEL_SEED + comm.Get_rank(), dtype=np.float32)
    ddp32 = dist.DistributedDataParallel(m32, comm=comm)
    X, y = make_data(24, np.float32)
    crit = nn.CrossEntropyLoss()
    opt = optim.SGD(ddp32.parameters(), lr=0.1)
    sampler = dist.DistributedSampler(24, seed=SAMPLER_SEED, comm=comm)
    for xb, yb in sampler.minibatches(X, y, 4):
        opt.zero_grad()
        crit(ddp32(xb), yb)
        ddp32.backward(crit.backward())
        opt.step()
    everyone = comm.allgather(flat(m32))
    results["float32/max_rank_diff"] = np.array(max(float(np.max(np.abs(p - everyone[0]))) for p in everyone))
    results["world_size"] = np.array(comm.Get_size())
    if comm.Get_rank() == 0:
        np.savez(out, **results)


def fail_one_rank(save_path):
    """``train --distributed`` where rank 1 alone raises at its third step: all ranks must stop."""
    from mpi4py import MPI

    from cnnext.cli import main

    if MPI.COMM_WORLD.Get_rank() == 1:
        backward, calls = dist.DistributedDataParallel.backward, []

        def failing(self, *a, **k):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("injected failure on rank 1")
            return backward(self, *a, **k)

        dist.DistributedDataParallel.backward = failing
    return main(["train", "--distributed", "--epochs", "2", "--no-progress", "--save", save_path])


def change_after_wrap(how, prefix):
    """Rank 1 alone changes its wrapped model, then every rank trains a step: no rank catches the error.

    Each rank's stderr goes to PREFIX.RANK.err (the launcher would interleave the ranks' lines).
    """
    import os

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    err = open(f"{prefix}.{comm.Get_rank()}.err", "w")
    os.dup2(err.fileno(), 2)
    model = build_model(MODEL_SEED, dtype=np.float32)
    ddp = dist.DistributedDataParallel(model, comm=comm)
    if comm.Get_rank() == 1:
        if how == "float64":
            model.to(np.float64)
        else:  # "shape": a new last layer with 11 outputs instead of 10
            model._modules["6"] = nn.Linear(6 * 4 * 4, 11, dtype=np.float32, rng=np.random.default_rng(0))
    X, y = make_data(8, np.float32)
    crit = nn.CrossEntropyLoss()
    crit(ddp(X), y)
    ddp.backward(crit.backward())
    print(f"rank {comm.Get_rank()}: the step went through", flush=True)
    return 0


def mismatches(prefix):
    """Cases where the ranks' buffers would disagree; each rank records what it raised in PREFIX.RANK.json.

    Rank 1 is the odd one out; the others behave alike. Each case must raise on every rank, which
    leaves the ranks in step for the next case (and for the training step at the end).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    odd = rank == 1
    crit = nn.CrossEntropyLoss()
    X, y = make_data(8)
    got = {}

    def case(name, fn):
        try:
            fn()
        except Exception as exc:
            got[name] = f"{type(exc).__name__}: {exc}"
        else:
            got[name] = None

    def wrap(**kw):
        return dist.DistributedDataParallel(build_model(MODEL_SEED), comm=comm, **kw)

    def step(ddp):
        crit(ddp(X), y)
        ddp.backward(crit.backward())

    case("wrap_bucket_cap", lambda: wrap(bucket_cap_mb=0.001 if odd else 25.0))

    def other_model():
        m = build_model(MODEL_SEED)
        if odd:
            m._modules["2"] = nn.Conv2d(4, 6, 5, padding=2, dtype=np.float64, rng=np.random.default_rng(0))
        dist.DistributedDataParallel(m, comm=comm)
    case("wrap_other_model", other_model)

    ddp = wrap()
    case("broadcast_root", lambda: ddp.broadcast_parameters(root=1 if odd else 0))

    def same_shape_layer():
        if odd:  # new weights of the same shapes on rank 1 only: the ranks would silently diverge
            ddp.module._modules["6"] = nn.Linear(6 * 4 * 4, 10, dtype=np.float64, rng=np.random.default_rng(5))
        step(ddp)
    case("replaced_same_shapes", same_shape_layer)
    ddp = wrap()

    def wrong_grad():
        step(ddp)
        if odd:
            next(iter(ddp.module.parameters())).grad = np.float64(1.0)  # would broadcast silently
        ddp.sync_gradients()
    case("rebound_gradient", wrong_grad)
    ddp = wrap()

    case("metric_names", lambda: dist.reduce_metrics({"loss_sum": 1.0, ("correct" if odd else "count"): 2.0}, comm))
    case("sum_length", lambda: dist.allreduce_sum([1.0, 2.0, 3.0][:2 if odd else 3], comm))
    case("metric_not_a_number", lambda: dist.reduce_metrics({"count": "many" if odd else 2.0}, comm))
    case("out_of_step", lambda: dist.reduce_metrics({"count": 1.0}, comm) if odd else step(ddp))

    def all_convert():  # the same change on every rank is fine
        ddp.to(np.float32)
        step(ddp)
    case("all_ranks_convert", all_convert)

    # after all that the ranks still train in step
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    X32 = X.astype(np.float32)
    for _ in range(2):
        opt.zero_grad()
        crit(ddp(X32[rank::comm.Get_size()]), y[rank::comm.Get_size()])
        ddp.backward(crit.backward())
        opt.step()
    everyone = comm.allgather(flat(ddp.module))
    got["max_rank_diff_after"] = max(float(np.max(np.abs(p - everyone[0]))) for p in everyone)
    with open(f"{prefix}.{rank}.json", "w") as f:
        json.dump(got, f)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--change-after-wrap":
        sys.exit(change_after_wrap(sys.argv[2], sys.argv[3]))
    if sys.argv[1] == "--mismatches":
        sys.exit(mismatches(sys.argv[2]))
    if sys.argv[1] == "--fail-one-rank":
        sys.exit(fail_one_rank(sys.argv[2]))
    main(sys.argv[1])
