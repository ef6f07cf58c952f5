"""The public API: every public name of cnnext and its public subpackages imports and exists.

``PUBLIC`` is the contract (issue 12: public behaviour does not change while the package is
restructured): a name may be added to a module's ``__all__``, but none listed here may disappear.
The attribute checks run in a fresh interpreter, so imports done by other tests cannot mask a
subpackage that ``import cnnext`` alone does not make available.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile

import pytest

import cnnext

PUBLIC = {
    "cnnext": [
        "__version__", "functional", "get_num_threads", "set_num_threads", "get_workspace_limit",
        "set_workspace_limit", "force_conv_algorithm", "show_config", "nn", "optim", "models", "save",
        "load", "gradcheck", "no_grad", "inference_mode", "set_grad_enabled", "is_grad_enabled",
        "ConvLayer", "MaxPoolingLayer", "Filter", "IdentityActivator", "ReluActivator",
        "SigmoidActivator", "TanhActivator", "padding", "conv", "get_patch", "element_wise_op",
        "get_max_index",
    ],
    "cnnext.nn": [
        "Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "Identity", "ops", "utils",
        "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "ReLU", "Sigmoid", "Tanh", "Flatten",
        "BatchNorm1d", "BatchNorm2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Dropout",
        "CrossEntropyLoss", "MSELoss",
    ],
    "cnnext.functional": [
        "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
        "avg_pool2d_backward", "relu", "relu_derivative", "sigmoid", "sigmoid_derivative", "tanh",
        "tanh_derivative", "linear", "linear_backward", "log_softmax", "softmax", "cross_entropy",
        "cross_entropy_backward", "mse_loss", "mse_loss_backward", "dropout", "dropout_backward",
        "batch_norm", "batch_norm_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
        "adaptive_max_pool2d", "adaptive_max_pool2d_backward",
    ],
    "cnnext.optim": [
        "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "OPTIMIZERS", "create_optimizer", "LRScheduler",
        "CosineAnnealingLR", "StepLR", "MultiStepLR", "LinearLR", "OneCycleLR", "SequentialLR",
        "ReduceLROnPlateau", "lr_scheduler",
    ],
    "cnnext.datasets": [
        "load_digits", "load_mnist", "load_cifar10", "read_idx", "iterate_minibatches", "DataLoader",
        "Dataset", "Split", "MNIST_CHECKSUMS", "FASHION_MNIST_CHECKSUMS", "CIFAR10_CLASSES",
        "CIFAR10_MD5", "CIFAR10_URL", "transforms",
    ],
    "cnnext.dask": ["predict", "INSTALL_HINT"],
    "cnnext.distributed": [
        "DistributedDataParallel", "DistributedSampler", "get_comm", "allreduce_sum",
        "reduce_metrics", "shard_range", "DistributedLoader", "INSTALL_HINT",
    ],
    "cnnext.learn_dl": [
        "ConvLayer", "MaxPoolingLayer", "Filter", "IdentityActivator", "ReluActivator",
        "SigmoidActivator", "TanhActivator", "padding", "conv", "get_patch", "element_wise_op",
        "get_max_index",
    ],
    "cnnext.models": [
        "LeNet5", "CifarNet", "BasicBlock", "ResNet20", "MobileNetCifar", "lenet5", "cifarnet",
        "resnet20", "mobilenet", "build", "input_shape", "MODELS",
    ],
    "cnnext.training": ["fit", "evaluate", "predict", "Callback", "ProgressBar", "NonFiniteLossError"],
}
SUBPACKAGES = [m.split(".", 1)[1] for m in PUBLIC if m != "cnnext"]
OLD_PATHS = {"cnnext.layers": ["ConvLayer", "MaxPoolingLayer", "Filter", "padding", "conv"],
             "cnnext.activators": ["ReluActivator", "IdentityActivator", "SigmoidActivator",
                                   "TanhActivator"]}


@pytest.mark.parametrize("module", list(PUBLIC))
def test_public_names_are_listed_and_import(module):
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if n not in mod.__all__]
    assert not missing, f"{module}.__all__ lost {missing}"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ lists {name!r}, which does not exist"
        exec(f"from {module} import {name}", {})
    assert len(set(mod.__all__)) == len(mod.__all__), f"{module}.__all__ has duplicates"


@pytest.mark.parametrize("module", list(OLD_PATHS))
def test_old_import_paths_still_work(module):
    mod = importlib.import_module(module)
    for name in OLD_PATHS[module]:
        assert getattr(mod, name) is getattr(cnnext.learn_dl, name)


def _fresh_python(code):
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnnext.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as cwd:  # not the checkout: "-c" puts cwd first on sys.path
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_import_cnnext_alone_makes_every_public_subpackage_an_attribute():
    code = (
        "import json, types, cnnext\n"
        f"subs = {SUBPACKAGES!r}\n"
        "res = {}\n"
        "for s in subs:\n"
        "    m = getattr(cnnext, s)\n"
        "    res[s] = [isinstance(m, types.ModuleType) and m.__name__ == 'cnnext.' + s, s in dir(cnnext)]\n"
        "res['hasattr_nope'] = hasattr(cnnext, 'nope')\n"
        "print(json.dumps(res))\n"
    )
    res = _fresh_python(code)
    assert res.pop("hasattr_nope") is False
    assert res == {s: [True, True] for s in SUBPACKAGES}


def test_every_public_name_through_attributes_only():
    """cnnext.<sub>.<name> for every public name, in a fresh interpreter that only ran import cnnext."""
    code = (
        "import json, cnnext\n"
        f"public = {PUBLIC!r}\n"
        "bad = []\n"
        "for module, names in public.items():\n"
        "    obj = cnnext\n"
        "    for part in module.split('.')[1:]:\n"
        "        obj = getattr(obj, part)\n"
        "    bad += [module + '.' + n for n in names if not hasattr(obj, n)]\n"
        "print(json.dumps(bad))\n"
    )
    assert _fresh_python(code) == []


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'cnnext' has no attribute 'datasetz'"):
        cnnext.datasetz  # noqa: B018
