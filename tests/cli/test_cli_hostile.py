"""The command line under bad and hostile input (issue 13 item 6).

Whatever the arguments, files or sizes, the CLI prints one line on stderr ("cnnext COMMAND: error:
...") and exits with status 2 (argparse usage errors too), or does its job (status 0); never a
traceback. The regression tests come first, one per reproduction of the issue; then a matrix of
hostile values for every command and option.
"""
import contextlib
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest

import cnnext
from cnnext.cli import main
from cnnext.datasets import load_digits

_ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__))),
            PYTHONIOENCODING="utf-8")
_ENV.pop("CNNEXT_DEBUG", None)


def run(*args, cwd=None, timeout=120, **kwargs):
    """``python -m cnnext ARGS`` in a subprocess (never from the repository root: see test_cli.run)."""
    if "stdout" not in kwargs:
        kwargs.setdefault("capture_output", True)
    proc = subprocess.run([sys.executable, "-m", "cnnext", *map(str, args)],
                          cwd=cwd or tempfile.mkdtemp(prefix="cnnext-cli-"), env=_ENV, text=True,
                          timeout=timeout, **kwargs)
    return proc.returncode, proc.stdout, proc.stderr


def cli(args, capsys):
    """Run the command line in this process; return (status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, match=None):
    assert "Traceback" not in err, err
    assert rc == 2, (rc, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("cnnext"), err
    if match is not None:
        assert match in err, err


@pytest.fixture(autouse=True)
def _restore_threads(restore_config):
    """The commands set cnnext's and the BLAS thread counts: put them back after each test."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=None):
        yield


# -- files ----------------------------------------------------------------------------------------
def _idx(arr, magic=None):
    head = magic if magic is not None else struct.pack(">HBB", 0, 8, arr.ndim)
    return head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _mnist_dir(d, n_train=48, n_test=12, size=28, images=None, labels=None, gz=False):
    """An MNIST-format directory; ``images``/``labels``: bytes replacing the files' (train and test)."""
    d.mkdir()
    rng = np.random.default_rng(0)
    if images is not None or labels is not None:
        n_test = n_train  # the same bytes for both splits
    for stem, n in (("train", n_train), ("t10k", n_test)):
        lab = rng.integers(0, 10, n).astype(np.uint8)
        img = (rng.random((n, size, size)) * 255).astype(np.uint8)
        img_bytes = images if images is not None else _idx(img)
        lab_bytes = labels if labels is not None else _idx(lab)
        if gz:
            (d / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(img_bytes))
        else:
            (d / f"{stem}-images-idx3-ubyte").write_bytes(img_bytes)
        (d / f"{stem}-labels-idx1-ubyte").write_bytes(lab_bytes)
    return d


def read_model(path):
    """(header dict, arrays) of a model file, read as plain .npz."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__cnnext__"}
        header = json.loads(str(z["__cnnext__"][()]))
    return header, arrays


def write_model(path, header, arrays):
    """Write a model file by hand: the arrays plus the JSON header (cnnext/serialization.py's layout)."""
    np.savez(path, __cnnext__=np.array(json.dumps(header)), **arrays)
    return path


def crafted(src, dst, metadata=None, children=None):
    """A copy of model ``src`` with its metadata updated and/or only the first ``children`` layers."""
    header, arrays = read_model(src)
    if metadata is not None:
        header["metadata"].update(metadata)
    if children is not None:
        kept = header["architecture"]["children"][:children]
        header["architecture"]["children"] = kept
        names = {name for name, _ in kept}
        arrays = {k: v for k, v in arrays.items() if k.split(".")[0] in names}
    return write_model(dst, header, arrays)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A digits model, an MNIST model and the bad files the tests feed the commands."""
    d = tmp_path_factory.mktemp("hostile")
    threads = cnnext.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--epochs", "1", "--no-progress", "--save", str(d / "model.npz")]) == 0
            mnist = _mnist_dir(d / "mnist")
            assert main(["train", "--data", str(mnist), "--epochs", "1", "--no-progress",
                         "--save", str(d / "mnist_model.npz")]) == 0
    finally:
        cnnext.set_num_threads(threads)
    f = {"dir": d, "model": d / "model.npz", "mnist_model": d / "mnist_model.npz", "mnist": mnist}
    (_, _), (X, _) = load_digits()
    f["digits_x"] = X[:3, 0]
    (d / "adir").mkdir()
    f["adir"] = d / "adir"
    f["missing"] = d / "missing.npz"
    f["empty_file"] = d / "empty.npz"
    f["empty_file"].write_bytes(b"")
    f["text"] = d / "text.npz"
    f["text"].write_text("not a model\n")
    raw = f["model"].read_bytes()
    f["truncated"] = d / "truncated.npz"
    f["truncated"].write_bytes(raw[:len(raw) // 2])
    f["plain_npz"] = d / "plain.npz"
    np.savez(f["plain_npz"], a=np.zeros(3))
    f["npy_as_model"] = d / "x.npy"
    np.save(f["npy_as_model"], X[:3, 0])
    f["file_as_dir"] = d / "text.npz" / "m.npz"  # a path through a regular file
    # models with a bad output or metadata, written by hand
    f["conv_only"] = crafted(f["model"], d / "conv_only.npz", children=5)  # output (N, 32, 2, 2)
    f["no_layers"] = crafted(f["model"], d / "no_layers.npz", children=0)  # identity
    for name, meta in {"shape_int": {"input_shape": 5}, "shape_2": {"input_shape": [8, 8]},
                       "shape_4": {"input_shape": [1, 1, 8, 8]}, "shape_zero": {"input_shape": [1, 0, 8]},
                       "shape_float": {"input_shape": [1.0, 8, 8]}, "shape_str": {"input_shape": "1x8x8"},
                       "shape_bool": {"input_shape": [True, 8, 8]}, "shape_neg": {"input_shape": [1, -8, 8]},
                       "shape_huge": {"input_shape": [1, 10**30, 8]},
                       "data_dir_int": {"dataset": "mnist", "data_dir": 5},
                       "data_dir_list": {"dataset": "mnist", "data_dir": ["/tmp"]},
                       "data_dir_gone": {"dataset": "mnist", "data_dir": str(d / "gone")},
                       "data_dir_none": {"dataset": "mnist", "data_dir": None},
                       "dataset_int": {"dataset": 7}, "dataset_unknown": {"dataset": "cifar10"}}.items():
        f[name] = crafted(f["model"], d / f"{name}.npz", metadata=meta)
    header, arrays = read_model(f["model"])
    f["nan_weights"] = write_model(d / "nan_weights.npz", header,
                                   {k: np.full_like(v, np.nan) if k == "7.bias" else v for k, v in arrays.items()})
    f["huge_weights"] = write_model(d / "huge_weights.npz", header,
                                    {k: np.full_like(v, 3e38) for k, v in arrays.items()})
    few = dict(header, architecture=json.loads(json.dumps(header["architecture"])))
    few["architecture"]["children"][7][1]["config"]["out_features"] = 3
    f["three_classes"] = write_model(d / "three_classes.npz", few,
                                     dict(arrays, **{"7.weight": arrays["7.weight"][:3], "7.bias": arrays["7.bias"][:3]}))
    # --input arrays
    for name, arr in {"x_ok": X[:3, 0], "x_nan": _with(X[:3, 0], 0, np.nan), "x_inf": _with(X[:3, 0], 1, np.inf),
                      "x_ninf": _with(X[:3, 0], 2, -np.inf), "x_f64_huge": np.full((2, 8, 8), 1e300),
                      "x_empty": np.zeros((0, 8, 8), np.float32), "x_empty4": np.zeros((0, 1, 8, 8), np.float32),
                      "x_zero_hw": np.zeros((2, 0, 0)), "x_scalar": np.array(1.0), "x_1d": np.zeros(64),
                      "x_5d": np.zeros((1, 1, 1, 8, 8)), "x_wrong_hw": np.zeros((2, 5, 5)),
                      "x_wrong_c": np.zeros((2, 3, 8, 8)), "x_complex": np.zeros((1, 8, 8), complex),
                      "x_str": np.full((1, 8, 8), "a"), "x_struct": np.zeros((1, 8, 8), dtype=[("a", "f4")]),
                      "x_bytes": np.full((1, 8, 8), b"a"), "x_datetime": np.zeros((1, 8, 8), "M8[s]"),
                      "x_bool": np.zeros((1, 8, 8), bool), "x_uint8": np.zeros((1, 8, 8), np.uint8),
                      "x_int64_big": np.full((1, 8, 8), 2**62, np.int64)}.items():
        f[name] = d / f"{name}.npy"
        np.save(f[name], arr)
    f["x_object"] = d / "x_object.npy"
    np.save(f["x_object"], np.array([None, 1], dtype=object), allow_pickle=True)
    f["x_pickle"] = d / "x_pickle.npy"
    f["x_pickle"].write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    f["x_truncated"] = d / "x_truncated.npy"
    f["x_truncated"].write_bytes(f["x_ok"].read_bytes()[:-10])
    header = io.BytesIO()  # a header declaring 4 PB of float32, with 64 data bytes
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**6, 10**4, 10**5)})
    f["x_huge_header"] = d / "x_huge_header.npy"
    f["x_huge_header"].write_bytes(b"".join([header.getvalue(), bytes(64)]))
    f["x_bad_header"] = d / "x_bad_header.npy"
    f["x_bad_header"].write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4'}   \n")
    # MNIST-format directories
    img = (np.random.default_rng(1).random((48, 28, 28)) * 255).astype(np.uint8)
    f["idx_magic"] = _mnist_dir(d / "idx_magic", images=_idx(img, magic=b"\x00\x01\x08\x03"))
    f["idx_type"] = _mnist_dir(d / "idx_type", images=_idx(img, magic=b"\x00\x00\x42\x03"))
    f["idx_ndim"] = _mnist_dir(d / "idx_ndim", images=_idx(img.reshape(48, 784)))
    f["idx_truncated"] = _mnist_dir(d / "idx_truncated", images=_idx(img)[:-7])
    f["idx_long"] = _mnist_dir(d / "idx_long", images=_idx(img) + b"xx")
    f["idx_short"] = _mnist_dir(d / "idx_short", images=b"\x00\x00")
    f["idx_huge"] = _mnist_dir(d / "idx_huge", images=struct.pack(">HBB3I", 0, 8, 3, 2**31, 2**16, 2**16))
    f["idx_gz_truncated"] = _mnist_dir(d / "idx_gz_truncated", gz=True)
    f["idx_not_gz"] = _mnist_dir(d / "idx_not_gz")
    for stem in ("train", "t10k"):
        gzf = f["idx_gz_truncated"] / f"{stem}-images-idx3-ubyte.gz"
        gzf.write_bytes(gzf.read_bytes()[:-30])
        os.unlink(f["idx_not_gz"] / f"{stem}-images-idx3-ubyte")
        (f["idx_not_gz"] / f"{stem}-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    f["idx_labels"] = _mnist_dir(d / "idx_labels", labels=_idx(np.full(48, 200, np.uint8)))
    f["idx_count"] = _mnist_dir(d / "idx_count", labels=_idx(np.zeros(40, np.uint8)))
    f["idx_label_dtype"] = _mnist_dir(d / "idx_label_dtype",
                                      labels=struct.pack(">HBB", 0, 0x0C, 1) + struct.pack(">I", 48) + bytes(4 * 48))
    f["idx_small"] = _mnist_dir(d / "idx_small", size=3)
    f["idx_empty"] = _mnist_dir(d / "idx_empty", n_train=0, n_test=0)
    f["idx_none"] = d / "idx_none"
    f["idx_none"].mkdir()
    f["idx_dir_entry"] = d / "idx_dir_entry"
    (f["idx_dir_entry"] / "train-images-idx3-ubyte").mkdir(parents=True)
    return f


def _with(arr, i, value):
    arr = np.array(arr, dtype=np.float32)
    arr[i, 3, 4] = value
    return arr


# -- the reproductions of the issue ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["x_nan", "x_inf", "x_ninf", "x_f64_huge"])
def test_predict_refuses_non_finite_pixels(files, name, capsys):
    # before: IndexError in the ASCII drawing, a traceback
    rc, out, err = cli(["predict", files["model"], "--input", files[name]], capsys)
    assert_one_line_error(rc, err, "holds NaN or infinite values")
    assert out == ""


@pytest.mark.parametrize("name", ["x_empty", "x_empty4"])
def test_predict_refuses_an_empty_input(files, name, capsys):
    # before: "zero-size array to reduction operation maximum which has no identity"
    rc, _, err = cli(["predict", files["model"], "--input", files[name]], capsys)
    assert_one_line_error(rc, err, "holds no images")


def test_predict_shape_error_reports_the_users_shape(files, capsys):
    # before: "got (2, 1, 5, 5)", the array after the channel axis was added
    rc, _, err = cli(["predict", files["model"], "--input", files["x_wrong_hw"]], capsys)
    assert_one_line_error(rc, err, "expected an array of shape (N, 8, 8) or (N, 1, 8, 8), got (2, 5, 5)\n")


def test_ascii_drawing_stays_in_range():
    from cnnext.cli.predict import _ascii

    # float32's extremes: the span overflows no float64; 0 and 1 sit in the middle shade
    rows = _ascii(np.array([[0.0, 1.0], [3e38, -3e38]], np.float32))
    assert rows == ["====", "@@  "]
    assert _ascii(np.zeros((2, 2))) == ["    ", "    "]
    assert _ascii(np.array([[1.0, 2.0]])) == ["  @@"]


@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["predict", "--input", "x_ok"]])
@pytest.mark.parametrize("name", ["conv_only", "no_layers"])
def test_a_model_whose_output_is_not_2d(files, name, command, capsys):
    # before: TypeError from the output formatting (predict), cross_entropy's message (evaluate)
    args = [command[0], files[name]] + [files.get(a, a) for a in command[1:]]
    rc, out, err = cli(args, capsys)
    assert_one_line_error(rc, err, f"MODEL {files[name]}: its output for ")
    assert "a classifier must output (images, classes)" in err and out == ""


@pytest.mark.parametrize("name,match", [
    ("shape_int", "input_shape must be [channels, height, width], got 5"),
    ("shape_2", "input_shape must be [channels, height, width], got [8, 8]"),
    ("shape_4", "input_shape must be [channels, height, width], got [1, 1, 8, 8]"),
    ("shape_str", "input_shape must be [channels, height, width], got '1x8x8'"),
    ("shape_zero", "input_shape[1] must be >= 1, got 0"),
    ("shape_neg", "input_shape[1] must be >= 1, got -8"),
    ("shape_float", "input_shape[0] must be an int, got float 1.0"),
    ("shape_bool", "input_shape[0] must be an int, got bool True"),
    ("data_dir_int", "data_dir must be a string, got int 5"),
    ("data_dir_list", "data_dir must be a string, got list"),
    ("dataset_int", "dataset must be a string, got int 7"),
])
@pytest.mark.parametrize("command", [["evaluate"], ["predict"], ["predict", "--input", "x_ok"]])
def test_crafted_metadata_is_refused(files, name, match, command, capsys):
    # before: TypeError or IndexError tracebacks ('int' object is not iterable, list index out of range, ...)
    args = [command[0], files[name]] + [files.get(a, a) for a in command[1:]]
    rc, _, err = cli(args, capsys)
    assert_one_line_error(rc, err, f"MODEL {files[name]}: metadata: {match}")


@pytest.mark.parametrize("name,match", [
    ("data_dir_gone", "was trained on mnist in {dir}/gone, no such directory now; pass --data DIR"),
    ("data_dir_none", "was not trained on the digits; pass --data DIR"),
    ("dataset_unknown", "was trained on 'cifar10', which cnnext cannot load; pass --data DIR"),
    ("shape_huge", "the model expects images of shape (1, 1000000000000000000000000000000, 8)"),
])
def test_metadata_pointing_nowhere(files, name, match, capsys):
    rc, _, err = cli(["evaluate", files[name]], capsys)
    assert_one_line_error(rc, err, match.format(dir=files["dir"]))


@pytest.mark.parametrize("args,option", [
    (["train", "--channels", "200000", "200000"], "--channels 200000 200000 with --batch-size 32"),
    (["train", "--channels", "1", "30000000000"], "--channels 1 30000000000 with --batch-size 32"),
    (["demo", "--batch", "1000000000"], "--batch 1000000000"),
    (["demo", "--batch", str(10**30)], f"--batch {10**30}"),
])
def test_sizes_beyond_memory_are_refused_before_allocating(args, option, tmp_path, capsys, monkeypatch):
    # before: MemoryError tracebacks; now refused before the model or the arrays exist: nothing printed,
    # nothing saved
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(args, capsys)
    assert_one_line_error(rc, err, f"{option}: this needs about ")
    assert "of memory, more than the" in err and out == "" and os.listdir(tmp_path) == []


def test_memory_check_uses_the_machines_memory(monkeypatch, capsys, tmp_path):
    from cnnext.cli import _common

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_common, "memory_limit", lambda: 10**6)  # 1 MB: the default demo needs more
    rc, out, err = cli(["demo", "--repeat", "1"], capsys)
    assert_one_line_error(rc, err, "--batch 64: this needs about 67.1 MB of memory, more than the 1.0 MB")
    from cnnext.cli.demo import conv_bytes

    assert conv_bytes(64) == 4 * 64 * (2 * 32 * 32 * 32 + 3 * 64 * 32 * 32)  # x, dx; y, dy, y again


@pytest.mark.parametrize("in_shape,channels,n_classes", [((1, 8, 8), (16, 32), 10), ((1, 28, 28), (5, 7), 10),
                                                         ((3, 9, 13), (2, 3), 4)])
def test_training_bytes_counts_parameters_and_activations(in_shape, channels, n_classes):
    from cnnext.cli.train import build_model, training_bytes

    model = build_model(in_shape, channels, n_classes, np.random.default_rng(0))
    params = sum(p.size for p in model.parameters())
    # weights, gradients, two Adam moments (float32) and the float64 draw of the initial weights
    assert training_bytes(in_shape, channels, n_classes, 0) == 4 * 6 * params
    # per image at least every layer's output and its gradient (float32)
    x = np.zeros((1, *in_shape), np.float32)
    sizes = []
    for layer in model.children():
        x = layer(x)
        sizes.append(x.size)
    per_image = training_bytes(in_shape, channels, n_classes, 1) - training_bytes(in_shape, channels, n_classes, 0)
    assert per_image >= 4 * 2 * sum(sizes)
    assert training_bytes(in_shape, channels, n_classes, 100) == 4 * 6 * params + 100 * per_image


def test_evaluate_the_digits_model_on_idx_files(files, capsys):
    # before: "load_mnist: dataset must be one of ['fashion-mnist', 'mnist'], got 'digits'"
    rc, _, err = cli(["evaluate", files["model"], "--data", files["mnist"]], capsys)
    assert_one_line_error(rc, err, "the model expects images of shape (1, 8, 8), the test data has (1, 28, 28)")
    # and an MNIST model on an explicit --data directory works
    rc, out, err = cli(["evaluate", files["mnist_model"], "--data", files["mnist"]], capsys)
    assert rc == 0 and err == "" and "test split of mnist IDX files in" in out


def _closed_pipe():
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write: like `| head` having exited
    return w


@pytest.mark.parametrize("args", [["predict", "{model}", "--count", "200"], ["train", "--help"], [],
                                  ["evaluate", "{model}"]])
def test_a_closed_output_pipe_exits_quietly_with_141(files, args):
    # before: "[Errno 32] Broken pipe" with status 2 (the except OSError clause came first); status 0
    # after the help (argparse ignores the failed write) or the command list
    w = _closed_pipe()
    try:
        rc, _, err = run(*[a.format(model=files["model"]) for a in args], stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert rc == 141 and err == "", (rc, err)


def test_broken_pipe_is_not_reported_as_an_os_error(monkeypatch, capsys):
    from cnnext.cli import demo

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(demo, "run", broken)
    rc, _, err = cli(["demo"], capsys)
    assert rc == 141 and err == ""


def _save_target(kind, d):
    if kind == "directory":
        (d / "adir").mkdir()
        return "adir"
    if kind == "fifo":
        os.mkfifo(d / "fifo")
        return "fifo"
    if kind == "through a file":
        (d / "f").write_text("x")
        return "f/m.npz"
    return {"missing directory": "nowhere/m.npz", "device": "/dev/null", "proc": "/proc/cnnext-model.npz"}[kind]


@pytest.mark.parametrize("kind,match", [
    ("directory", "--save: path 'adir' is a directory"),
    ("missing directory", "--save nowhere/m.npz: directory {cwd}/nowhere does not exist"),
    ("through a file", "--save f/m.npz: Not a directory"),
    ("fifo", "--save: path 'fifo' is a FIFO (named pipe)"),
    ("device", "--save: path '/dev/null' is a character device"),
    ("proc", "--save /proc/cnnext-model.npz: cannot create a file in /proc"),
])
def test_a_bad_save_path_is_refused_before_training(kind, match, tmp_path, capsys, monkeypatch):
    # before: a directory, FIFO or unwritable place was found after training, by save, naming the
    # temporary file (.cnnext-....tmp)
    if kind == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux /proc")
    monkeypatch.chdir(tmp_path)
    target = _save_target(kind, tmp_path)
    rc, out, err = cli(["train", "--epochs", "1", "--no-progress", "--save", target], capsys)
    assert_one_line_error(rc, err, match.format(cwd=os.getcwd()))
    assert out == "", "refused before the training started"
    assert ".cnnext-" not in err
    if str(target) == "/dev/null":
        assert not os.path.isfile("/dev/null")


def test_a_bad_plot_path_is_refused_before_training(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    for plot, match in (("adir", "--plot adir: is a directory"),
                        ("nowhere/p.png", f"--plot nowhere/p.png: directory {os.getcwd()}/nowhere does not exist"),
                        ("curves.xyz", "--plot curves.xyz: matplotlib cannot write .xyz images"),
                        ("m.npz", "--plot m.npz: is the file --save writes the model to")):
        rc, out, err = cli(["train", "--epochs", "1", "--no-progress", "--save", "m.npz", "--plot", plot], capsys)
        assert_one_line_error(rc, err, match)
        assert out == ""
    assert sorted(os.listdir(tmp_path)) == ["adir"]


@pytest.mark.parametrize("args", [["predict", "{model}", "--input", "{fifo}"], ["evaluate", "{fifo}"],
                                  ["predict", "{fifo}"], ["train", "--save", "{fifo}"],
                                  ["train", "--data", "{fifo}"]])
def test_fifos_are_refused_without_blocking(files, args, tmp_path):
    # before: predict --input FIFO blocked forever in np.load (and --save FIFO trained first)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, out, err = run(*[a.format(model=files["model"], fifo=fifo) for a in args], timeout=60)
    assert_one_line_error(rc, err)
    assert out == ""


def test_numpy_warnings_do_not_add_lines_to_a_diverging_run(tmp_path):
    # before: RuntimeWarning lines (overflow / invalid value) came before the one-line error
    rc, _, err = run("train", "--lr", "1e308", "--epochs", "1", "--no-progress", cwd=tmp_path)
    assert_one_line_error(rc, err, "the loss diverged")


def test_thread_counts_are_checked_as_arguments(capsys):
    # before: "set_num_threads: n must be <= 1024", a library message
    for cmd in (["train"], ["evaluate", "m.npz"], ["predict", "m.npz"], ["demo"]):
        rc, _, err = cli([*cmd, "--threads", "1025"], capsys)
        assert_one_line_error(rc, err, "argument --threads: expected an integer from 1 to 1024, got '1025'")


def test_an_internal_error_is_one_line_with_status_1(monkeypatch, capsys):
    from cnnext.cli import demo

    def bug(args):
        raise TypeError("something the checks missed")

    monkeypatch.setattr(demo, "run", bug)
    monkeypatch.delenv("CNNEXT_DEBUG", raising=False)
    rc, _, err = cli(["demo"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cnnext demo: internal error: TypeError: something the checks missed")
    monkeypatch.setenv("CNNEXT_DEBUG", "1")
    with pytest.raises(TypeError, match="something the checks missed"):
        main(["demo"])


def test_multi_line_messages_are_printed_on_one_line(monkeypatch, capsys):
    from cnnext.cli import demo
    from cnnext.cli._common import UsageError

    def bad(args):
        raise UsageError("a path\nwith a newline")

    monkeypatch.setattr(demo, "run", bad)
    rc, _, err = cli(["demo"], capsys)
    assert rc == 2 and err == "cnnext demo: error: a path\\nwith a newline\n"


# -- hostile values everywhere --------------------------------------------------------------------
_INT_BAD = ["-1", "0", "-0", "nan", "inf", "abc", "", "1.5", "1e3", "0x10", "1_0x", "--"]
_FLOAT_BAD = ["-1", "nan", "inf", "-inf", "1e400", "abc", "", "0x1p3x"]
_FAST = ["--epochs", "1", "--no-progress", "--limit", "64"]


def _cases():
    cases = []  # (id, argv, expected status, text the error must contain or None)
    int_options = {"train": ["--epochs", "--batch-size", "--limit", "--threads"],
                   "evaluate": ["--batch-size", "--threads"], "predict": ["--count", "--threads"],
                   "demo": ["--batch", "--repeat", "--threads"]}
    for cmd, options in int_options.items():
        model = ["{model}"] if cmd in ("evaluate", "predict") else []
        for opt in options:
            for v in _INT_BAD:
                cases.append((f"{cmd}{opt}={v!r}", [cmd, *model, opt, v], 2, f"argument {opt}: expected"))
    for v in ["-1", "-0x1", "abc", "", "1.5", "nan"]:
        cases.append((f"train--seed={v!r}", ["train", "--seed", v], 2, "argument --seed: expected"))
    for v in ["1025", str(2**63), str(10**100)]:
        for cmd in ("train", "demo"):
            cases.append((f"{cmd}--threads={v}", [cmd, "--threads", v], 2, "from 1 to 1024"))
    for opt in ("--lr", "--weight-decay"):
        for v in _FLOAT_BAD + (["0", "-0"] if opt == "--lr" else ["-1e-300"]):
            cases.append((f"train{opt}={v!r}", ["train", opt, v], 2, f"argument {opt}: expected"))
    for v in (["0", "1"], ["1", "-1"], ["a", "b"], ["1"], ["", ""], ["nan", "1"], ["1", "x"]):
        cases.append((f"train--channels={v}", ["train", "--channels", *v], 2, "argument --channels"))
    cases.append(("train--channels=1-2-3", ["train", "--channels", "1", "2", "3"], 2, "unrecognized arguments: 3"))
    cases += [
        ("train--channels=huge", ["train", "--channels", "100000", "100000"], 2, "of memory"),
        ("train--channels=2**40", ["train", "--channels", str(2**40), "1"], 2, "of memory"),
        ("train--channels=huge-on-mnist", ["train", "--data", "{mnist}", "--channels", "20000", "20000"], 2,
         "of memory"),
        ("demo--batch=huge", ["demo", "--batch", str(2**62)], 2, "of memory"),
        ("train--lr=1e308", ["train", "--lr", "1e308", *_FAST], 2, "the loss diverged"),
        ("train--lr=1e38-sgd", ["train", "--optimizer", "sgd", "--lr", "1e38", *_FAST], 2, "the loss diverged"),
        ("train--weight-decay=1e308", ["train", "--weight-decay", "1e308", *_FAST], 2, "the loss diverged"),
        ("train--optimizer=bad", ["train", "--optimizer", "lbfgs"], 2, "invalid choice"),
        ("train--optimizer=empty", ["train", "--optimizer", ""], 2, "invalid choice"),
        ("train--schedule=bad", ["train", "--schedule", "step"], 2, "invalid choice"),
        ("train--dataset=bad", ["train", "--dataset", "cifar"], 2, "invalid choice"),
        ("train--dataset-without-data", ["train", "--dataset", "fashion-mnist"], 2, "need --data DIR"),
        ("train--download-without-data", ["train", "--download"], 2, "need --data DIR"),
        ("train-unknown-option", ["train", "--epoch", "1", "--bogus"], 2, "unrecognized arguments"),
        ("train-positional", ["train", "extra"], 2, "unrecognized arguments"),
        ("no-command-option", ["--epochs", "1"], 2, None),
        ("bad-command", ["trian"], 2, "invalid choice"),
        ("empty-command", [""], 2, "invalid choice"),
        ("evaluate-no-model", ["evaluate"], 2, "required: MODEL"),
        ("predict-two-models", ["predict", "{model}", "{model}"], 2, "unrecognized arguments"),
        # paths given to train
        ("train--save=empty", ["train", "--save", ""], 2, "argument --save: expected a path, got ''"),
        ("train--save=dir", ["train", "--save", "{adir}"], 2, "is a directory"),
        ("train--save=missing-dir", ["train", "--save", "{dir}/no/m.npz"], 2, "does not exist"),
        ("train--save=through-file", ["train", "--save", "{file_as_dir}"], 2, "Not a directory"),
        ("train--save=dev-null", ["train", "--save", "/dev/null"], 2, "is a character device"),
        ("train--save=dev-zero", ["train", "--save", "/dev/zero"], 2, "is a character device"),
        ("train--plot=empty", ["train", "--plot", ""], 2, "argument --plot: expected a path"),
        ("train--data=empty", ["train", "--data", ""], 2, "argument --data: expected a path"),
        ("train--data=missing", ["train", "--data", "{dir}/nowhere"], 2, "no such directory"),
        ("train--data=file", ["train", "--data", "{text}"], 2, "no such directory"),
        ("train--data=no-idx-files", ["train", "--data", "{idx_none}"], 2, "not found"),
        ("train--data=dir-entry", ["train", "--data", "{idx_dir_entry}"], 2, "not found"),
        ("train--data=dev-null", ["train", "--data", "/dev/null"], 2, "no such directory"),
    ]
    for name, match in (("idx_magic", "invalid IDX magic number"), ("idx_type", "invalid IDX magic number"),
                        ("idx_ndim", "must hold uint8 images of shape (N, rows, cols)"),
                        ("idx_truncated", "is truncated"), ("idx_long", "is longer than its header says"),
                        ("idx_short", "too short to be an IDX file"), ("idx_huge", "over max_bytes"),
                        ("idx_gz_truncated", "corrupt or truncated gzip"), ("idx_not_gz", "gzip"),
                        ("idx_labels", "labels must be 0..9"), ("idx_count", "48 images but 40 labels"),
                        ("idx_label_dtype", "must hold uint8 labels"),
                        ("idx_small", "too small for two 2x2 poolings"),
                        ("idx_empty", "training needs at least one of each")):
        cases.append((f"train--data={name}", ["train", "--data", "{%s}" % name, *_FAST], 2, match))
        if name not in ("idx_small", "idx_empty"):
            cases.append((f"evaluate--data={name}", ["evaluate", "{mnist_model}", "--data", "{%s}" % name], 2,
                          match))
    cases += [("evaluate--data=idx_small", ["evaluate", "{mnist_model}", "--data", "{idx_small}"], 2,
               "the test data has (1, 3, 3)"),
              ("evaluate--data=idx_empty", ["evaluate", "{mnist_model}", "--data", "{idx_empty}"], 2,
               "holds no images")]
    # model files given to evaluate and predict
    for name, match in (("missing", "no such file"), ("adir", "is a directory, not a file"),
                        ("empty_file", "not an .npz (zip) archive"), ("text", "not an .npz (zip) archive"),
                        ("truncated", "not a valid cnnext model file"), ("plain_npz", "no '__cnnext__' entry"),
                        ("npy_as_model", "not an .npz (zip) archive"),
                        ("file_as_dir", "Not a directory"),
                        ("conv_only", "a classifier must output"), ("no_layers", "a classifier must output"),
                        ("nan_weights", "is not finite"), ("huge_weights", "is not finite"),
                        ("shape_int", "input_shape must be"), ("data_dir_int", "data_dir must be a string")):
        for cmd in ("evaluate", "predict"):
            cases.append((f"{cmd}-MODEL={name}", [cmd, "{%s}" % name], 2, match))
    cases += [
        ("evaluate-MODEL=empty", ["evaluate", ""], 2, "argument MODEL: expected a path"),
        ("evaluate-MODEL=dev-null", ["evaluate", "/dev/null"], 2, "is a character device, not a file"),
        ("evaluate-MODEL=three-classes", ["evaluate", "{three_classes}"], 2, "outputs 3 class scores"),
        ("evaluate--data=empty", ["evaluate", "{model}", "--data", ""], 2, "argument --data: expected a path"),
        ("evaluate--data=missing", ["evaluate", "{model}", "--data", "{dir}/nowhere"], 2, "no such directory"),
        ("evaluate--data=digits-model", ["evaluate", "{model}", "--data", "{mnist}"], 2, "expects images of shape"),
        ("predict-MODEL=three-classes", ["predict", "{three_classes}"], 0, None),  # 3 scores: predictions
    ]
    # --input arrays
    for name, match in (("missing", "no such file"), ("adir", "is a directory"), ("empty_file", "cannot read"),
                        ("text", "cannot read"), ("plain_npz", "is an .npz archive"),
                        ("model", "is an .npz archive"), ("x_pickle", "cannot read"),
                        ("x_object", "cannot read"), ("x_truncated", "cannot read"),
                        ("x_huge_header", "cannot read"), ("x_bad_header", "cannot read"),
                        ("x_nan", "image #0 holds NaN or infinite"), ("x_inf", "image #1 holds NaN or infinite"),
                        ("x_ninf", "image #2 holds NaN"), ("x_f64_huge", "beyond float32's range"),
                        ("x_empty", "holds no images"), ("x_empty4", "holds no images"),
                        ("x_zero_hw", "got (2, 0, 0)"), ("x_scalar", "got ()"), ("x_1d", "got (64,)"),
                        ("x_5d", "got (1, 1, 1, 8, 8)"), ("x_wrong_hw", "got (2, 5, 5)"),
                        ("x_wrong_c", "got (2, 3, 8, 8)"), ("x_complex", "holds complex128 values"),
                        ("x_str", "holds <U1 values"), ("x_struct", "expected real numbers"),
                        ("x_bytes", "holds |S1 values"), ("x_datetime", "holds datetime64[s] values"),
                        ("file_as_dir", "Not a directory")):
        cases.append((f"predict--input={name}", ["predict", "{model}", "--input", "{%s}" % name], 2, match))
    cases += [
        ("predict--input=empty", ["predict", "{model}", "--input", ""], 2, "argument --input: expected a path"),
        ("predict--input=dev-zero", ["predict", "{model}", "--input", "/dev/zero"], 2, "is a character device"),
        ("predict--input-no-metadata-3d", ["predict", "{conv_only}", "--input", "{x_ok}"], 2, "a classifier"),
        ("predict--input-model-cannot-take", ["predict", "{shape_huge}", "--input", "{x_ok}"], 2,
         "expected an array of shape"),
        # legitimate: status 0
        ("predict--input=bool", ["predict", "{model}", "--input", "{x_bool}"], 0, None),
        ("predict--input=uint8", ["predict", "{model}", "--input", "{x_uint8}"], 0, None),
        ("predict--input-int64-huge", ["predict", "{model}", "--input", "{x_int64_big}"], 0, None),  # finite
        ("predict--input=ok", ["predict", "{model}", "--input", "{x_ok}"], 0, None),
        ("predict--count=huge", ["predict", "{model}", "--count", str(10**30)], 0, None),
        ("evaluate--batch-size=huge", ["evaluate", "{model}", "--batch-size", str(10**30)], 0, None),
        ("evaluate--batch-size=1", ["evaluate", "{model}", "--batch-size", "1"], 0, None),
        ("train--batch-size=huge", ["train", "--batch-size", str(10**30), *_FAST, "--save", "{dir}/t1.npz"], 0, None),
        ("train--limit=huge", ["train", "--limit", str(10**30), "--epochs", "1", "--no-progress",
                               "--save", "{dir}/t2.npz"], 0, None),
        ("train--seed=huge", ["train", "--seed", str(10**30), *_FAST, "--save", "{dir}/t3.npz"], 0, None),
        ("train--channels=1-1", ["train", "--channels", "1", "1", *_FAST, "--save", "{dir}/t4.npz"], 0, None),
        ("train--epochs=+1", ["train", "--epochs", "+1", "--no-progress", "--limit", "64", "--save",
                              "{dir}/t5.npz"], 0, None),
        ("train--threads=' 2'", ["train", "--threads", " 2", *_FAST, "--save", "{dir}/t6.npz"], 0, None),
    ]
    return cases


_CASES = _cases()


@pytest.mark.parametrize("args,status,match", [c[1:] for c in _CASES], ids=[c[0] for c in _CASES])
def test_hostile_arguments(files, args, status, match, capsys, monkeypatch):
    monkeypatch.chdir(files["dir"])
    argv = [a.format(**files) if "{" in a else a for a in args]
    rc, _, err = cli(argv, capsys)
    assert "Traceback" not in err, err
    if status == 0:
        assert rc == 0 and err == "", err
    else:
        assert_one_line_error(rc, err, match)

