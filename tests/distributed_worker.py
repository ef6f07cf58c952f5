"""Run under ``mpiexec -n N``: data-parallel training scenarios whose results tests/test_distributed.py
compares with single-process training. Not a test module (pytest does not collect it).

Usage: ``mpiexec -n N python distributed_worker.py OUT.npz`` (or ``--fail-one-rank MODEL.npz``). Rank 0 writes, per scenario ``s``:
``s/params`` (steps+1, P) rank 0's flattened parameters before the first and after every step,
``s/max_rank_diff`` (steps,) the largest difference between any rank's parameters and rank 0's,
``s/loss`` (steps,) the step's mean loss over all ranks (from ``reduce_metrics``),
``s/count`` (steps,) samples per step over all ranks, ``s/buckets`` the number of gradient buckets.
"""
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


if __name__ == "__main__":
    if sys.argv[1] == "--fail-one-rank":
        sys.exit(fail_one_rank(sys.argv[2]))
    main(sys.argv[1])
