"""The command line, end to end, through subprocesses: `python -m cnnext ...`."""
import gzip
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import cnnext
from cnnext.datasets import load_digits
from helpers import child_env

# Run the same cnnext the tests import (installed or built in place).
_ENV = child_env(PYTHONIOENCODING="utf-8")


def run(*args, cwd=None, timeout=240, python_args=()):
    # Never the repository root: "python -m" puts the working directory first on sys.path, and
    # there the uncompiled source tree would shadow the installed cnnext.
    if cwd is None:
        cwd = tempfile.mkdtemp(prefix="cnnext-cli-")
    proc = subprocess.run([sys.executable, *python_args, "-m", "cnnext", *args], cwd=cwd, env=_ENV,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def accuracy(text, label="test accuracy"):
    m = re.search(label + r" ([\d.]+)% \((\d+)/(\d+)\)", text)
    assert m, text
    return float(m.group(1)), int(m.group(2)), int(m.group(3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch training run on the embedded digits (with the progress bar on)."""
    d = tmp_path_factory.mktemp("cli")
    rc, out, err = run("train", "--epochs", "2", "--seed", "3", "--save", "model.npz", cwd=d)
    assert rc == 0, err
    return d, out, err


def test_train_reaches_better_than_chance(trained):
    d, out, err = trained
    acc, correct, total = accuracy(out)
    assert total == 360 and acc > 50.0, out  # chance is 10%
    assert re.search(r"epoch 1/2  loss [\d.]+  train acc +[\d.]+%  test loss [\d.]+  test acc +[\d.]+%", out)
    assert re.search(r"epoch 2/2 ", out)
    assert re.search(r"after 2 epochs in [\d.]+ s", out)
    assert "model saved to model.npz" in out
    assert (d / "model.npz").is_file()
    # tqdm progress bar with the running loss went to stderr
    assert re.search(r"epoch 1/2: 100%.* 45/45 \[.*loss=[\d.]+", err), err
    assert "Traceback" not in err


def test_saved_model_evaluates_to_the_reported_accuracy(trained):
    d, out, _ = trained
    rc, eout, err = run("evaluate", "model.npz", cwd=d)
    assert rc == 0, err
    assert accuracy(eout)[:2] == accuracy(out)[:2]
    assert "confusion matrix" in eout
    # the same number computed here from the loaded model
    model = cnnext.load(d / "model.npz").eval()
    (_, _), (X, y) = load_digits()
    assert int(np.sum(model(X).argmax(1) == y)) == accuracy(out)[1]


def test_predict_on_test_split_and_on_npy(trained, tmp_path):
    d, _, _ = trained
    rc, out, err = run("predict", str(d / "model.npz"), "--count", "5")
    assert rc == 0, err
    assert len(re.findall(r"#\d+ +predicted \d", out)) == 5
    assert re.search(r"\d/5 correct", out)
    (_, _), (X, y) = load_digits()
    np.save(tmp_path / "x.npy", X[:3, 0])
    rc, out, err = run("predict", str(d / "model.npz"), "--input", str(tmp_path / "x.npy"))
    assert rc == 0, err
    assert len(re.findall(r"#\d+ +predicted \d", out)) == 3
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5)))
    rc, out, err = run("predict", str(d / "model.npz"), "--input", str(tmp_path / "bad.npy"))
    assert rc == 2 and err.count("\n") == 1 and "expected an array of shape" in err


def test_training_is_deterministic_for_a_seed(tmp_path):
    outs = []
    for name in ("a.npz", "b.npz"):
        rc, out, err = run("train", "--epochs", "1", "--seed", "11", "--no-progress", "--save", name,
                           "--optimizer", "sgd", cwd=tmp_path)
        assert rc == 0, err
        outs.append([line for line in out.splitlines() if line.startswith("epoch")])
        assert err == ""
    strip = [[re.sub(r"\([\d.]+ s\)", "", line) for line in o] for o in outs]
    assert strip[0] == strip[1]
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files == b.files
    for k in a.files:
        if k != "__cnnext__":  # the header records the run time
            np.testing.assert_array_equal(a[k], b[k])


def test_version_and_no_arguments(capsys):
    rc, out, _ = run("--version")
    assert rc == 0 and out.strip() == f"cnnext {cnnext.__version__}"
    rc, out, err = run_here([], capsys)
    assert rc == 0 and err == ""
    for cmd in ("train", "evaluate", "predict", "demo"):
        assert re.search(rf"^  {cmd} ", out, re.M), out


def run_here(args, capsys):
    """Run the command line in this process (for the cheap argument checks)."""
    from cnnext.cli import main

    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_and_bad_arguments_in_a_real_process(tmp_path):
    rc, out, err = run("train", "--help")
    assert rc == 0 and out.startswith("usage: cnnext train") and "--epochs" in out and err == ""
    rc, out, err = run("train", "--epochs", "-3", cwd=tmp_path)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "argument --epochs: expected a positive integer, got '-3'" in err


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["predict"], ["demo"]])
def test_help_everywhere(cmd, capsys):
    rc, out, err = run_here([*cmd, "--help"], capsys)
    assert rc == 0 and out.startswith("usage: cnnext") and err == ""


@pytest.mark.parametrize("args,match", [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["train", "--lr", "abc"], "argument --lr: expected a positive number"),
    (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--data", "/nonexistent/mnist"], "--data /nonexistent/mnist: no such directory"),
    (["train", "--download"], "--download and --dataset need --data DIR"),
    (["train", "--save", "/nonexistent/dir/m.npz"], "directory /nonexistent/dir does not exist"),
    (["evaluate"], "the following arguments are required: MODEL"),
    (["evaluate", "missing.npz"], "MODEL missing.npz: no such file"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_status_2(args, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_here(args, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err and err.startswith("cnnext")


def test_evaluate_rejects_a_corrupt_model_in_one_line(tmp_path, capsys):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    rc, _, err = run_here(["evaluate", str(tmp_path / "junk.npz")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "not a valid cnnext model file" in err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rc, out, err = run("train", "--epochs", "1", "--no-progress", "--save", "m.npz", "--plot", "curves.png",
                       cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot saved to curves.png" in out


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from cnnext.cli import main; "
            "sys.exit(main(['train', '--plot', 'x.png']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--plot needs matplotlib" in proc.stderr
    assert not (tmp_path / "cnnext_digits.npz").exists()


def _idx(arr):
    return struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_train_and_evaluate_on_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for stem, n in (("train", 64), ("t10k", 20)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        images[np.arange(n), 2 + 2 * labels, 4:24] = 255  # a learnable stripe per class
        (data / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (data / f"{stem}-labels-idx1-ubyte").write_bytes(_idx(labels))
    rc, out, err = run("train", "--data", str(data), "--epochs", "3", "--batch-size", "16", "--no-progress",
                       "--save", "mn.npz", cwd=tmp_path)
    assert rc == 0, err
    assert "64 train / 20 test images of 28x28" in out
    assert "Linear(in_features=1568, out_features=10" in out
    acc = accuracy(out)
    assert acc[2] == 20
    rc, eout, err = run("evaluate", "mn.npz", cwd=tmp_path)  # finds the data dir from the model file
    assert rc == 0, err
    assert accuracy(eout)[:2] == acc[:2]
    rc, _, err = run("evaluate", "mn.npz", "--data", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert rc == 2 and "no such directory" in err


def test_demo_runs_the_learn_dl_example(tmp_path):
    rc, out, err = run("demo", "--repeat", "1", "--batch", "2", cwd=tmp_path)
    assert rc == 0, err
    flat = re.sub(r"[\s\[\]]+", " ", out)
    # learn_dl's init_test forward result (issue 2)
    assert "6. 7. 5. 3. -1. -1. 2. -1. 4. 2. -5. -8. 1. -4. -4. 0. -5. -5." in flat
    assert "bias: 0.991" in out and "bias: -0.007" in out
    assert re.search(r"largest \|analytic - central difference\| = \d\.\d\de-\d\d", out)
    assert "6. 8. 3. 4. 5. 7. 9. 6." in flat  # max pooling
    assert re.search(r"forward +[\d.]+ ms", out) and re.search(r"backward +[\d.]+ ms", out)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way to inf
def test_a_diverging_loss_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_here(["train", "--optimizer", "sgd", "--lr", "1e9", "--epochs", "2", "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert re.fullmatch(r"cnnext train: error: the loss diverged to (inf|nan) in epoch 1; try a smaller --lr\n", err)
    assert not (tmp_path / "cnnext_digits.npz").exists()


# -- the package layout ---------------------------------------------------------------------------
PKG = os.path.dirname(os.path.abspath(cnnext.__file__))


def test_main_module_only_calls_the_cli():
    import cnnext.__main__
    import cnnext.cli

    assert cnnext.__main__.main is cnnext.cli.main
    assert len(open(os.path.join(PKG, "__main__.py")).read().splitlines()) <= 6


def _imports_of(path, package):
    """Absolute names of the modules (and module attributes) a file imports."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{a.name}" for a in node.names)


def test_no_library_module_imports_the_cli():
    offenders = []
    for root, _, files in os.walk(PKG):
        for f in files:
            path = os.path.join(root, f)
            rel = os.path.relpath(path, PKG)
            if not f.endswith(".py") or rel == "__main__.py" or rel.split(os.sep)[0] == "cli":
                continue
            package = ".".join(["cnnext"] + os.path.dirname(rel).split(os.sep)).rstrip(".")
            offenders += [f"{rel}: {m}" for m in _imports_of(path, package)
                          if m == "cnnext.cli" or m.startswith("cnnext.cli.")]
    assert offenders == []
    # and at run time: the library's modules load without it
    code = ("import sys, cnnext, cnnext.training, cnnext.distributed, cnnext.optim, cnnext.datasets, cnnext.nn, "
            "cnnext.functional, cnnext.serialization, cnnext.gradcheck, cnnext.dask; "
            "print(sorted(m for m in sys.modules if m == 'cnnext.cli' or m.startswith('cnnext.cli.')))")
    proc = subprocess.run([sys.executable, "-c", code], env=_ENV, capture_output=True, text=True, timeout=120,
                          cwd=tempfile.mkdtemp(prefix="cnnext-cli-"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_cli_sets_threads_through_threadpoolctl_only():
    from threadpoolctl import threadpool_info, threadpool_limits

    from cnnext.cli._common import set_threads

    old = cnnext.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS thread counts afterwards
        try:
            set_threads(1)
            assert cnnext.get_num_threads() == 1
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(i["num_threads"] == 1 for i in blas), blas
            set_threads(2)
            assert cnnext.get_num_threads() == 2
            assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
        finally:
            cnnext.set_num_threads(old)
    for root, _, files in os.walk(os.path.join(PKG, "cli")):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(root, f), encoding="utf-8").read()
                assert "ctypes" not in text and "/proc/self/maps" not in text, f


def test_console_script_points_at_cnnext_cli_main():
    from importlib.metadata import PackageNotFoundError, distribution

    import cnnext.cli

    try:
        eps = [ep for ep in distribution("cnnext").entry_points if ep.group == "console_scripts"]
    except PackageNotFoundError:
        pytest.skip("cnnext is not installed (run from a source tree without metadata)")
    (ep,) = [ep for ep in eps if ep.name == "cnnext"]
    assert ep.value == "cnnext.cli:main", f"stale metadata ({ep.value}): reinstall cnnext (pip install -e .)"
    assert ep.load() is cnnext.cli.main
