"""cnnext.dask.predict against the same model run in memory; skipped without dask and distributed.

The cluster is a dask.distributed LocalCluster with processes=False: scheduler and workers share
this process and talk over in-process queues, so no socket is opened.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from cnnext import nn
from helpers import child_env

da = pytest.importorskip("dask.array", reason='dask is not installed (pip install "cnnext[dask]")')
distributed = pytest.importorskip("distributed", reason='dask.distributed is not installed (pip install "cnnext[dask]")')

from cnnext import dask as cdask  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def make_model(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, dtype=dtype, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10, dtype=dtype, rng=rng), nn.Dropout(0.5, rng=1))


def images(n=301, dtype=np.float32, seed=1):
    return (3 * np.random.default_rng(seed).standard_normal((n, 1, 8, 8))).astype(dtype)


def in_memory(model, X, batch=None):
    model.eval()
    if batch is None:
        return model(X)
    return np.concatenate([model(X[i:i + batch]) for i in range(0, X.shape[0], batch)])


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_logits_on_local_cluster_match_in_memory(client, dtype, rtol):
    model, X = make_model(dtype), images(dtype=dtype)
    # Chunked along every axis: predict must hand the model whole images.
    dX = da.from_array(X, chunks=(50, 1, 4, 3))
    out = cdask.predict(model, dX)
    assert isinstance(out, da.Array) and out.shape == (301, 10) and out.dtype == dtype
    assert out.chunks[0] == dX.chunks[0]
    got = client.compute(out).result()
    # Same batches as the chunks: the same arithmetic as in memory.
    np.testing.assert_allclose(got, in_memory(make_model(dtype), X, batch=50), rtol=1e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-7 if dtype == np.float32 else 1e-15)
    # One big batch in memory: equal up to the GEMM's summation order.
    np.testing.assert_allclose(got, in_memory(make_model(dtype), X), rtol=rtol, atol=rtol)


def test_labels_and_batch_size(client):
    model, X = make_model(np.float64), images(n=257, dtype=np.float64)
    labels = cdask.predict(model, da.from_array(X, chunks=100), batch_size=64, return_labels=True)
    assert labels.shape == (257,) and labels.dtype == np.int64
    assert labels.chunks == ((64, 64, 64, 64, 1),)
    want = in_memory(make_model(np.float64), X).argmax(axis=1)
    np.testing.assert_array_equal(client.compute(labels).result(), want)
    assert len(np.unique(want)) >= 3  # a real comparison, not all one class


def test_threaded_scheduler_many_chunks_and_numpy_input():
    model, X = make_model(np.float64), images(n=400, dtype=np.float64, seed=5)
    out = cdask.predict(model, X, batch_size=7)       # numpy in, 58 chunks over 4 threads
    got = out.compute(scheduler="threads", num_workers=4)
    np.testing.assert_allclose(got, in_memory(make_model(np.float64), X, batch=7), rtol=1e-14, atol=1e-15)


def test_model_is_snapshotted_and_left_alone():
    model, X = make_model(np.float64), images(n=40, dtype=np.float64)
    model.train()
    out = cdask.predict(model, X, batch_size=16)
    assert model.training                              # predict did not switch the user's model to eval
    before = in_memory(make_model(np.float64), X)
    for p in model.parameters():                       # "training continues" after predict() returned
        p.data += 1.0
    np.testing.assert_allclose(out.compute(scheduler="sync"), before, rtol=1e-14, atol=1e-15)


def test_output_shapes_other_than_logits():
    X = images(n=30)
    fmap = nn.Sequential(nn.Conv2d(1, 3, 3, rng=0))           # (N, 3, 6, 6) feature maps
    out = cdask.predict(fmap, da.from_array(X, chunks=(8, 1, 4, 5)))   # spatial chunks: rejoined
    assert out.shape == (30, 3, 6, 6) and out.chunks[1:] == ((3,), (6,), (6,))
    np.testing.assert_allclose(out.compute(scheduler="sync"), fmap(X), rtol=1e-6, atol=1e-7)
    flat = cdask.predict(nn.Sequential(nn.Flatten(start_dim=2)), X, batch_size=8)
    assert flat.shape == (30, 1, 64)
    np.testing.assert_array_equal(flat.compute(scheduler="sync"), X.reshape(30, 1, 64))


def test_predictor_pickles_for_worker_processes():
    model, X = make_model(np.float64), images(n=5, dtype=np.float64)
    pred = pickle.loads(pickle.dumps(cdask._Predictor(model.eval())))
    np.testing.assert_array_equal(pred.logits(X), make_model(np.float64).eval()(X))


def test_errors_name_the_argument():
    model = make_model()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cdask.predict(model, da.zeros((4, 8, 8), chunks=2))
    with pytest.raises(ValueError, match="batch_size"):
        cdask.predict(model, images(4), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        cdask.predict(model, images(4), batch_size=2.5)
    with pytest.raises(TypeError, match="model"):
        cdask.predict(lambda x: x, images(4))
    with pytest.raises(TypeError, match="images"):
        cdask.predict(model, [[1.0]])
    with pytest.raises(TypeError, match="dtype"):
        cdask.predict(model, da.zeros((4, 1, 8, 8), dtype=bool, chunks=2))
    bad = cdask.predict(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0)), images(4), batch_size=2)
    assert bad.shape == (4, 2, 6, 6)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"cnnext\[dask\]"):
        cdask.predict(make_model(), images(4))


def test_module_does_not_shadow_the_real_dask():
    code = ("import cnnext.dask as m, dask, dask.array, sys; "
            "assert dask.__name__ == 'dask' and dask.__file__ != m.__file__, dask.__file__; "
            "assert sys.modules['dask'] is dask and m.__name__ == 'cnnext.dask'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                         cwd=HERE, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
