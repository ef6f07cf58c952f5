"""``cnnext demo``: the learn_dl tutorial example on cnnext's learn_dl API, and a timed batched conv2d."""
import time

import numpy as np

from cnnext._version import __version__
from cnnext.cli._common import UsageError, check_memory, positive_int, threads

# the timed convolution: x (N, C, H, W), weight (K, C, 3, 3), padding 1
C, H, W, K = 32, 32, 32, 64


def conv_bytes(n):
    """Estimated memory of the timed convolution on a batch of ``n``: the input and its gradient,
    the output, its gradient and the one being recomputed (float32)."""
    return 4 * n * (2 * C * H * W + 3 * K * H * W)


def add_parser(sub):
    d = sub.add_parser("demo", help="learn_dl example on cnnext and a timed batched convolution",
                       description="Run hanbt's learn_dl CNN tutorial example (init_test, backward, update, "
                                   "gradient check, max pooling) on cnnext's learn_dl API and print its "
                                   "results, then time a batched conv2d forward+backward.")
    d.add_argument("--threads", type=threads, default=None,
                   help="threads for the timed convolution (default: cnnext's default)")
    d.add_argument("--repeat", type=positive_int, default=5, help="timing repetitions (default 5)")
    d.add_argument("--batch", type=positive_int, default=64,
                   help="batch size of the timed convolution (default 64)")
    d.set_defaults(run=run)


def run(args):
    import cnnext
    from cnnext import functional as F

    try:
        from cnnext import ConvLayer, IdentityActivator, MaxPoolingLayer
    except ImportError as exc:
        raise UsageError(f"the learn_dl API is not available in this build ({exc})") from None
    check_memory(conv_bytes(args.batch), f"--batch {args.batch}", "use a smaller --batch")
    np.set_printoptions(precision=4, suppress=True)
    print(f"cnnext {__version__}: the learn_dl CNN tutorial example, run on cnnext's learn_dl API\n")
    a = np.array([[[0, 1, 1, 0, 2], [2, 2, 2, 2, 1], [1, 0, 0, 2, 0], [0, 1, 1, 0, 0], [1, 2, 0, 0, 2]],
                  [[1, 0, 2, 2, 0], [0, 0, 0, 2, 0], [1, 2, 1, 2, 1], [1, 0, 0, 0, 0], [1, 2, 1, 1, 1]],
                  [[2, 1, 2, 0, 0], [1, 0, 0, 1, 0], [0, 2, 1, 0, 1], [0, 1, 2, 2, 2], [2, 1, 0, 0, 1]]])
    b = np.array([[[0, 1, 1], [2, 2, 2], [1, 0, 0]], [[1, 0, 2], [0, 0, 0], [1, 2, 1]]])
    w0 = np.array([[[-1, 1, 0], [0, 1, 0], [0, 1, 1]], [[-1, -1, 0], [0, 0, 0], [0, -1, 0]],
                   [[0, 0, -1], [0, 1, 0], [1, -1, -1]]], dtype=np.float64)
    w1 = np.array([[[1, 1, -1], [-1, -1, 1], [0, -1, 1]], [[0, 1, 0], [-1, 0, -1], [-1, 1, 0]],
                   [[-1, 0, 0], [-1, 0, 1], [-1, 0, 0]]], dtype=np.float64)

    def init_test():
        cl = ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, IdentityActivator(), 0.001)
        cl.filters[0].weights = w0.copy()
        cl.filters[0].bias = 1
        cl.filters[1].weights = w1.copy()
        return cl

    cl = init_test()
    cl.forward(a)
    print("ConvLayer(5, 5, 3, 3, 3, 2, zero_padding=1, stride=2) forward:")
    print(cl.output_array)
    cl.backward(a, b, IdentityActivator())
    cl.update()
    print("\nafter backward with the 2x3x3 sensitivity map and update():")
    print(cl.filters[0])
    print(cl.filters[1])
    print("delta_array[0] (sensitivity passed to the previous layer):")
    print(cl.delta_array[0])

    cl = init_test()
    cl.forward(a)
    sens = np.ones(cl.output_array.shape, dtype=np.float64)
    cl.backward(a, sens, IdentityActivator())
    eps, worst = 1e-3, 0.0
    for d in range(w0.shape[0]):
        for i in range(w0.shape[1]):
            for j in range(w0.shape[2]):
                cl.filters[0].weights[d, i, j] += eps
                cl.forward(a)
                up = cl.output_array.sum()
                cl.filters[0].weights[d, i, j] -= 2 * eps
                cl.forward(a)
                down = cl.output_array.sum()
                cl.filters[0].weights[d, i, j] += eps
                worst = max(worst, abs((up - down) / (2 * eps) - cl.filters[0].weights_grad[d, i, j]))
    print("\ngradient check (learn_dl's, sensitivity all ones), filter 0 weights_grad:")
    print(cl.filters[0].weights_grad)
    print(f"largest |analytic - central difference| = {worst:.2e}")

    pool_in = np.array([[[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]],
                        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [3, 4, 5, 6]]], dtype=np.float64)
    mp = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mp.forward(pool_in)
    print("\nMaxPoolingLayer(4, 4, 2, 2, 2, 2) forward:")
    print(mp.output_array)

    if args.threads is not None:
        cnnext.set_num_threads(args.threads)
    N = args.batch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    wt = rng.standard_normal((K, C, 3, 3), dtype=np.float32)
    bias = np.zeros(K, dtype=np.float32)
    y = F.conv2d(x, wt, bias, padding=1)
    gy = np.ones_like(y)
    F.conv2d_backward(gy, x, wt, padding=1)
    fwd, bwd = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        F.conv2d(x, wt, bias, padding=1)
        t1 = time.perf_counter()
        F.conv2d_backward(gy, x, wt, padding=1)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    flop = 2.0 * N * K * H * W * C * 9
    f, bk = min(fwd), min(bwd)
    print(f"\nbatched conv2d, float32, x {(N, C, H, W)}, weight {(K, C, 3, 3)}, padding 1, "
          f"{cnnext.get_num_threads()} thread(s), best of {args.repeat}:")
    print(f"  forward   {1e3 * f:8.1f} ms  ({flop / f / 1e9:6.1f} GFLOP/s)")
    print(f"  backward  {1e3 * bk:8.1f} ms  ({2 * flop / bk / 1e9:6.1f} GFLOP/s, grad_input + grad_weight)")
    print(f"  total     {1e3 * (f + bk):8.1f} ms")
    return 0
