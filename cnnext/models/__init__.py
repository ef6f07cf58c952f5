"""The model zoo: LeNet-5, a CIFAR CNN, ResNet-20 and a MobileNet for 32x32 images.

Each model has PyTorch's state_dict keys, shapes and dtypes for the same architecture, so weights
move both ways with ``load_state_dict`` and the two give the same outputs and gradients:

=========== ================= ==========================================================
name        input (C, H, W)   architecture
=========== ================= ==========================================================
lenet5      (1, 28, 28)       conv6 5x5, relu, maxpool2, conv16 5x5, relu, maxpool2,
                              linear 256-120-84-classes with relu between
cifarnet    (3, 32, 32)       [conv3x3 p1, relu, maxpool2] x 3 (32, 64, 128 ch), linear 2048-classes
resnet20    (3, 32, 32)       He et al. (2016) CIFAR ResNet-20: 3 stages x 3 basic blocks (16, 32,
                              64 ch), BatchNorm, 1x1 projection shortcuts, global average pool
mobilenet   (3, 32, 32)       MobileNet-v1 style: conv3x3 32 ch, depthwise-separable blocks to 512
                              ch, global average pool, linear 512-classes
=========== ================= ==========================================================

Examples
--------
>>> import numpy as np
>>> import cnnext
>>> model = cnnext.models.resnet20(num_classes=10, rng=0)
>>> model(np.zeros((2, 3, 32, 32), np.float32)).shape
(2, 10)
"""
from cnnext import nn
from cnnext._validation import check_choice, check_dtype, check_int, check_rng

__all__ = ["LeNet5", "CifarNet", "BasicBlock", "ResNet20", "MobileNetCifar",
           "lenet5", "cifarnet", "resnet20", "mobilenet", "build", "input_shape", "MODELS"]


class _Zoo(nn.Module):
    """Shared constructor checks and saved configuration of the zoo models.

    Every zoo model takes ``num_classes`` (int, default 10), ``dtype`` (np.float32 or np.float64)
    and ``rng`` (a numpy Generator, an int seed or None: the source of the initial weights, drawn
    as PyTorch's default initialisation does).
    """

    def _setup(self, num_classes, dtype, rng):
        name = type(self).__name__
        self.num_classes = check_int(num_classes, "num_classes", name, minimum=1)
        self.dtype = check_dtype(dtype, "dtype", name)
        return check_rng(rng, "rng", name)

    def _config(self):
        return dict(num_classes=self.num_classes)


class LeNet5(_Zoo):
    """LeNet-5 for (N, 1, 28, 28) images.

    Takes ``num_classes``, ``dtype`` and ``rng`` (see ``_Zoo``).
    """

    def __init__(self, num_classes=10, dtype="float32", rng=None):
        super().__init__()
        rng = self._setup(num_classes, dtype, rng)
        kw = dict(dtype=self.dtype, rng=rng)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, **kw), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, **kw), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 120, **kw), nn.ReLU(),
            nn.Linear(120, 84, **kw), nn.ReLU(), nn.Linear(84, self.num_classes, **kw),
        )

    def forward(self, x):
        """Logits (N, num_classes) of a (N, 1, 28, 28) batch."""
        return self.classifier(self.features(x))


class CifarNet(_Zoo):
    """A plain CNN for (N, 3, 32, 32) images: three conv-relu-maxpool stages and a linear head.

    Takes ``num_classes``, ``dtype`` and ``rng`` (see ``_Zoo``).
    """

    def __init__(self, num_classes=10, dtype="float32", rng=None):
        super().__init__()
        rng = self._setup(num_classes, dtype, rng)
        layers = []
        for cin, cout in ((3, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, dtype=self.dtype, rng=rng), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(),
                                        nn.Linear(128 * 4 * 4, self.num_classes, dtype=self.dtype, rng=rng))

    def forward(self, x):
        """Logits (N, num_classes) of a (N, 3, 32, 32) batch."""
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    The shortcut is the identity, or a 1x1 convolution with stride and BatchNorm where the shape
    changes (an empty ``Sequential``, as in the PyTorch reference, when it does not).

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    stride : int
        Stride of the first convolution (and of the projection).
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator, int or None
    """

    def __init__(self, cin, cout, stride, dtype="float32", rng=None):
        super().__init__()
        self.cin = check_int(cin, "cin", "BasicBlock", minimum=1)
        self.cout = check_int(cout, "cout", "BasicBlock", minimum=1)
        self.stride = check_int(stride, "stride", "BasicBlock", minimum=1)
        self.dtype = check_dtype(dtype, "dtype", "BasicBlock")
        rng = check_rng(rng, "rng", "BasicBlock")
        kw = dict(bias=False, dtype=self.dtype, rng=rng)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, **kw)
        self.bn1 = nn.BatchNorm2d(cout, dtype=self.dtype)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, **kw)
        self.bn2 = nn.BatchNorm2d(cout, dtype=self.dtype)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, **kw),
                                          nn.BatchNorm2d(cout, dtype=self.dtype))
        else:
            self.shortcut = nn.Sequential()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        """The block's output, (N, cout, H / stride, W / stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(nn.ops.add(out, self.shortcut(x)))

    def _config(self):
        return dict(cin=self.cin, cout=self.cout, stride=self.stride)


class ResNet20(_Zoo):
    """ResNet-20 for CIFAR (He et al., 2016): 0.27 M parameters.

    Takes ``num_classes``, ``dtype`` and ``rng`` (see ``_Zoo``) and ``blocks``, the basic blocks
    per stage (3 gives ResNet-20; n gives ResNet-(6n+2)).
    """

    def __init__(self, num_classes=10, blocks=3, dtype="float32", rng=None):
        super().__init__()
        rng = self._setup(num_classes, dtype, rng)
        self.blocks = check_int(blocks, "blocks", "ResNet20", minimum=1)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False, dtype=self.dtype, rng=rng)
        self.bn1 = nn.BatchNorm2d(16, dtype=self.dtype)
        self.relu = nn.ReLU()
        cin = 16
        for index, (cout, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
            stage = []
            for i in range(self.blocks):
                stage.append(BasicBlock(cin, cout, stride if i == 0 else 1, dtype=self.dtype, rng=rng))
                cin = cout
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, self.num_classes, dtype=self.dtype, rng=rng)

    def forward(self, x):
        """Logits (N, num_classes) of a (N, 3, 32, 32) batch."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))

    def _config(self):
        return dict(num_classes=self.num_classes, blocks=self.blocks)


def _conv_bn_relu(cin, cout, kernel, stride, groups, dtype, rng):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups,
                                   bias=False, dtype=dtype, rng=rng),
                         nn.BatchNorm2d(cout, dtype=dtype), nn.ReLU())


class MobileNetCifar(_Zoo):
    """MobileNet-v1 style network for (N, 3, 32, 32) images (depthwise-separable blocks).

    Takes ``num_classes``, ``dtype`` and ``rng`` (see ``_Zoo``).
    """

    PLAN = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1))

    def __init__(self, num_classes=10, dtype="float32", rng=None):
        super().__init__()
        rng = self._setup(num_classes, dtype, rng)
        layers, cin = [_conv_bn_relu(3, 32, 3, 1, 1, self.dtype, rng)], 32
        for cout, stride in self.PLAN:
            layers.append(nn.Sequential(_conv_bn_relu(cin, cin, 3, stride, cin, self.dtype, rng),  # depthwise
                                        _conv_bn_relu(cin, cout, 1, 1, 1, self.dtype, rng)))       # pointwise
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, self.num_classes, dtype=self.dtype, rng=rng)

    def forward(self, x):
        """Logits (N, num_classes) of a (N, 3, 32, 32) batch."""
        return self.fc(self.flatten(self.pool(self.features(x))))


MODELS = {"lenet5": (LeNet5, (1, 28, 28)), "cifarnet": (CifarNet, (3, 32, 32)),
          "resnet20": (ResNet20, (3, 32, 32)), "mobilenet": (MobileNetCifar, (3, 32, 32))}


def lenet5(num_classes=10, dtype="float32", rng=None):
    """LeNet-5 (see ``LeNet5``)."""
    return LeNet5(num_classes, dtype=dtype, rng=rng)


def cifarnet(num_classes=10, dtype="float32", rng=None):
    """The CIFAR CNN (see ``CifarNet``)."""
    return CifarNet(num_classes, dtype=dtype, rng=rng)


def resnet20(num_classes=10, dtype="float32", rng=None):
    """ResNet-20 (see ``ResNet20``)."""
    return ResNet20(num_classes, dtype=dtype, rng=rng)


def mobilenet(num_classes=10, dtype="float32", rng=None):
    """MobileNet for 32x32 images (see ``MobileNetCifar``)."""
    return MobileNetCifar(num_classes, dtype=dtype, rng=rng)


def build(name, num_classes=10, dtype="float32", rng=None):
    """The zoo model called ``name`` (one of ``MODELS``), in train mode."""
    check_choice(name, "name", "cnnext.models.build", tuple(MODELS))
    return MODELS[name][0](num_classes, dtype=dtype, rng=rng)


def input_shape(name):
    """(C, H, W) of one input image of model ``name``."""
    check_choice(name, "name", "cnnext.models.input_shape", tuple(MODELS))
    return MODELS[name][1]
