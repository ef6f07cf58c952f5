"""learn_dl's own numbers, reproduced through cnnext's learn_dl-compatible API.

Every expected value here is a literal from the learn_dl tutorial (issue 2) / a hand run of the
reference script, never something cnnext computed. The helpers below are written the way a learn_dl
user writes them (the tutorial's init_test, gradient_check, init_pool_test), with cnnext's classes.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnnext
from cnnext import ConvLayer, IdentityActivator, MaxPoolingLayer
from helpers import child_env, numerical_gradient

# --------------------------------------------------------------------------- learn_dl's fixtures

A = [[[0, 1, 1, 0, 2],
      [2, 2, 2, 2, 1],
      [1, 0, 0, 2, 0],
      [0, 1, 1, 0, 0],
      [1, 2, 0, 0, 2]],
     [[1, 0, 2, 2, 0],
      [0, 0, 0, 2, 0],
      [1, 2, 1, 2, 1],
      [1, 0, 0, 0, 0],
      [1, 2, 1, 1, 1]],
     [[2, 1, 2, 0, 0],
      [1, 0, 0, 1, 0],
      [0, 2, 1, 0, 1],
      [0, 1, 2, 2, 2],
      [2, 1, 0, 0, 1]]]
B = [[[0, 1, 1],
      [2, 2, 2],
      [1, 0, 0]],
     [[1, 0, 2],
      [0, 0, 0],
      [1, 2, 1]]]
W0 = [[[-1, 1, 0], [0, 1, 0], [0, 1, 1]],
      [[-1, -1, 0], [0, 0, 0], [0, -1, 0]],
      [[0, 0, -1], [0, 1, 0], [1, -1, -1]]]
W1 = [[[1, 1, -1], [-1, -1, 1], [0, -1, 1]],
      [[0, 1, 0], [-1, 0, -1], [-1, 1, 0]],
      [[-1, 0, 0], [-1, 0, 1], [-1, 0, 0]]]
POOL_IN = [[[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]],
           [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [3, 4, 5, 6]]]
POOL_SENS = [[[1, 2], [2, 4]], [[3, 5], [8, 2]]]


def init_test():
    """learn_dl's init_test, verbatim apart from the import (integer a and b, as in the tutorial)."""
    a = np.array(A)
    b = np.array(B)
    cl = ConvLayer(5, 5, 3, 3, 3, 2, 1, 2, IdentityActivator(), 0.001)
    cl.filters[0].weights = np.array(W0, dtype=np.float64)
    cl.filters[0].bias = 1
    cl.filters[1].weights = np.array(W1, dtype=np.float64)
    return a, b, cl


# --------------------------------------------------------------------------- expected (learn_dl)

FORWARD = [[[6, 7, 5], [3, -1, -1], [2, -1, 4]],
           [[2, -5, -8], [1, -4, -4], [0, -5, -5]]]
DELTA = [[[-1, 1, 1, -2, -1], [1, -1, 3, -1, 1], [2, 0, 2, 0, 2], [4, 3, 4, 1, 3], [0, -1, -2, 1, -1]],
         [[0, -1, 0, -2, 0], [-1, -2, -3, -4, -1], [0, 0, 0, 0, 0], [-2, 0, 0, 0, -1], [0, -3, 0, -3, 0]],
         [[0, 1, 1, -2, 1], [0, -1, -1, -4, -1], [2, 0, 2, 0, 2], [-2, -3, -2, -1, -2], [1, -1, 0, 1, 0]]]
GRAD0 = [[[8, 10, 9], [5, 6, 6], [6, 5, 4]],
         [[4, 1, 4], [10, 9, 12], [2, 2, 2]],
         [[2, 2, 3], [5, 8, 5], [7, 8, 7]]]
GRAD1 = [[[2, 2, 1], [4, 7, 3], [4, 4, 2]],
         [[0, 1, 0], [9, 5, 4], [4, 0, 0]],
         [[4, 6, 5], [2, 5, 2], [2, 1, 0]]]
UPDATED_W0_C0 = [[-1.008, 0.99, -0.009], [-0.005, 0.994, -0.006], [-0.006, 0.995, 0.996]]
UPDATED_W1 = [[[0.998, 0.998, -1.001], [-1.004, -1.007, 0.997], [-0.004, -1.004, 0.998]],
              [[0.0, 0.999, 0.0], [-1.009, -0.005, -1.004], [-1.004, 1.0, 0.0]],
              [[-1.004, -0.006, -0.005], [-1.002, -0.005, 0.998], [-1.002, -0.001, 0.0]]]
GRADCHECK_GRAD0 = [[[5, 6, 5], [5, 7, 5], [5, 6, 5]],
                   [[2, 1, 2], [9, 9, 9], [2, 1, 2]],
                   [[4, 5, 4], [4, 9, 4], [4, 5, 4]]]
POOL_OUT = [[[6, 8], [3, 4]], [[5, 7], [9, 6]]]
POOL_DELTA = [[[0, 0, 0, 0], [0, 1, 0, 2], [2, 0, 0, 0], [0, 0, 0, 4]],
              [[0, 0, 0, 0], [0, 3, 0, 5], [0, 8, 0, 0], [0, 0, 0, 2]]]


# --------------------------------------------------------------------------- tests

def test_init_test_forward():
    a, b, cl = init_test()
    cl.forward(a)
    assert cl.output_array.shape == (2, 3, 3)
    np.testing.assert_array_equal(cl.output_array, FORWARD)
    assert (cl.output_width, cl.output_height) == (3, 3)


def test_init_test_backward_and_update():
    a, b, cl = init_test()
    cl.forward(a)
    cl.backward(a, b, IdentityActivator())
    assert cl.filters[0].bias_grad == 9
    assert cl.filters[1].bias_grad == 7
    np.testing.assert_array_equal(cl.delta_array[0], DELTA[0])
    np.testing.assert_array_equal(cl.delta_array, DELTA)
    np.testing.assert_array_equal(cl.filters[0].weights_grad, GRAD0)
    np.testing.assert_array_equal(cl.filters[1].weights_grad, GRAD1)
    cl.update()
    assert cl.filters[0].bias == pytest.approx(0.991, abs=1e-12)
    assert cl.filters[1].bias == pytest.approx(-0.007, abs=1e-12)
    assert cl.filters[0].get_bias() == pytest.approx(0.991, abs=1e-12)
    np.testing.assert_allclose(cl.filters[0].weights[0], UPDATED_W0_C0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cl.filters[0].get_weights()[0], UPDATED_W0_C0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cl.filters[1].weights, UPDATED_W1, rtol=0, atol=1e-12)


def test_backward_without_forward_gives_the_same_gradients():
    # learn_dl's test_bp calls backward straight after init_test
    a, b, cl = init_test()
    cl.backward(a, b, IdentityActivator())
    np.testing.assert_array_equal(cl.delta_array, DELTA)
    np.testing.assert_array_equal(cl.filters[0].weights_grad, GRAD0)
    assert [f.bias_grad for f in cl.filters] == [9, 7]


def test_gradient_check_in_place_weight_edits():
    """learn_dl's gradient_check: central differences with in-place edits of filters[0].weights."""
    a, b, cl = init_test()
    cl.forward(a)
    cl.backward(a, np.ones(cl.output_array.shape, dtype=np.float64), IdentityActivator())
    np.testing.assert_array_equal(cl.filters[0].weights_grad, GRADCHECK_GRAD0)

    def error_function():
        cl.forward(a)
        return cl.output_array.sum()

    # learn_dl's epsilon, on filters[0].weights (a view: the edits reach the layer) element by element;
    # test_learn_dl_user_script runs learn_dl's own loop
    expected = numerical_gradient(error_function, cl.filters[0].weights, eps=10e-4)
    np.testing.assert_allclose(expected, GRADCHECK_GRAD0, rtol=0, atol=1e-8)
    np.testing.assert_allclose(expected, cl.filters[0].weights_grad, rtol=0, atol=1e-8)
    # the edits were undone: the weights are the seed's again
    np.testing.assert_allclose(cl.filters[0].weights, W0, rtol=0, atol=1e-12)


def test_pool_forward():
    mpl = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mpl.forward(np.array(POOL_IN, dtype=np.float64))
    np.testing.assert_array_equal(mpl.output_array, POOL_OUT)


def test_pool_forward_integer_input():
    mpl = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mpl.forward(np.array(POOL_IN))
    np.testing.assert_array_equal(mpl.output_array, POOL_OUT)


def test_pool_backward_without_forward():
    # learn_dl's test_pool_bp: backward on a fresh layer
    mpl = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mpl.backward(np.array(POOL_IN, dtype=np.float64), np.array(POOL_SENS, dtype=np.float64))
    np.testing.assert_array_equal(mpl.delta_array, POOL_DELTA)


def test_calculate_output_size_is_a_static_method():
    assert ConvLayer.calculate_output_size(5, 3, 1, 2) == 3
    assert ConvLayer.calculate_output_size(28, 5, 0, 1) == 24
    assert ConvLayer.calculate_output_size(7, 2, 0, 2) == 3
    a, b, cl = init_test()
    assert cl.calculate_output_size(5, 3, 1, 2) == 3


def test_nothing_is_printed(capsys):
    """learn_dl printed debug output in the constructor, get_patch and bp_sensitivity_map."""
    a, b, cl = init_test()
    cl.forward(a)
    cl.backward(a, b, IdentityActivator())
    cl.bp_sensitivity_map(b, IdentityActivator())
    cl.bp_gradient(b)
    cl.update()
    mpl = MaxPoolingLayer(4, 4, 2, 2, 2, 2)
    mpl.forward(np.array(POOL_IN))
    mpl.backward(np.array(POOL_IN), np.array(POOL_SENS))
    patch = cnnext.get_patch(np.array(A), 1, 1, 3, 3, 2)
    out = np.zeros((3, 3))
    cnnext.conv(cnnext.padding(np.array(A), 1), np.array(W0), out, 2, 1)
    cnnext.element_wise_op(out, IdentityActivator().forward)
    cnnext.get_max_index(patch[0])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_learn_dl_user_script(tmp_path):
    """A learn_dl user's script, with the tutorial's classes imported from cnnext, run as a program."""
    script = tmp_path / "user_cnn.py"
    script.write_text(textwrap.dedent(f'''
        import json
        import numpy as np
        from cnnext import (ConvLayer, MaxPoolingLayer, IdentityActivator, ReluActivator,
                            SigmoidActivator, element_wise_op, padding, conv, get_patch,
                            get_max_index)

        def init_test():
            a = np.array({A!r})
            b = np.array({B!r})
            cl = ConvLayer(5,5,3,3,3,2,1,2,IdentityActivator(),0.001)
            cl.filters[0].weights = np.array({W0!r}, dtype=np.float64)
            cl.filters[0].bias=1
            cl.filters[1].weights = np.array({W1!r}, dtype=np.float64)
            return a, b, cl

        def test():
            a, b, cl = init_test()
            cl.forward(a)
            forward = cl.output_array.tolist()
            cl.backward(a, b, IdentityActivator())
            cl.update()
            return dict(forward=forward, delta0=cl.delta_array[0].tolist(),
                        bias=[cl.filters[0].bias, cl.filters[1].bias],
                        bias_grad=[cl.filters[0].bias_grad, cl.filters[1].bias_grad],
                        w00=cl.filters[0].weights[0].tolist())

        def gradient_check():
            error_function = lambda o: o.sum()
            a, b, cl = init_test()
            cl.forward(a)
            sensitivity_array = np.ones(cl.output_array.shape, dtype=np.float64)
            cl.backward(a, sensitivity_array, IdentityActivator())
            epsilon = 10e-4
            worst = 0.0
            for d in range(cl.filters[0].weights_grad.shape[0]):
                for i in range(cl.filters[0].weights_grad.shape[1]):
                    for j in range(cl.filters[0].weights_grad.shape[2]):
                        cl.filters[0].weights[d,i,j] += epsilon
                        cl.forward(a)
                        err1 = error_function(cl.output_array)
                        cl.filters[0].weights[d,i,j] -= 2*epsilon
                        cl.forward(a)
                        err2 = error_function(cl.output_array)
                        expect_grad = (err1 - err2) / (2 * epsilon)
                        cl.filters[0].weights[d,i,j] += epsilon
                        worst = max(worst, abs(expect_grad - cl.filters[0].weights_grad[d,i,j]))
            return dict(grad=cl.filters[0].weights_grad.tolist(), worst=worst)

        def test_pool():
            a = np.array({POOL_IN!r}, dtype=np.float64)
            b = np.array({POOL_SENS!r}, dtype=np.float64)
            mpl = MaxPoolingLayer(4,4,2,2,2,2)
            mpl.forward(a)
            mpl2 = MaxPoolingLayer(4,4,2,2,2,2)
            mpl2.backward(a, b)
            return dict(out=mpl.output_array.tolist(), delta=mpl2.delta_array.tolist())

        def relu_net():
            # a two-layer forward/backward as a student would chain them
            np.random.seed(1)
            x = np.random.uniform(-1, 1, (1, 6, 6))
            c1 = ConvLayer(6, 6, 1, 3, 3, 2, 1, 1, ReluActivator(), 0.01)
            p1 = MaxPoolingLayer(6, 6, 2, 2, 2, 2)
            c1.forward(x)
            p1.forward(c1.output_array)
            p1.backward(c1.output_array, np.ones(p1.output_array.shape))
            c1.backward(x, p1.delta_array * ReluActivator().backward(c1.output_array),
                        IdentityActivator())
            c1.update()
            return dict(pool_shape=list(p1.output_array.shape),
                        delta_shape=list(c1.delta_array.shape))

        print(json.dumps(dict(test=test(), gradient_check=gradient_check(),
                              pool=test_pool(), relu_net=relu_net())))
    '''))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=child_env(),
                          cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    res = json.loads(proc.stdout)  # the only output is the script's own print
    t = res["test"]
    np.testing.assert_array_equal(t["forward"], FORWARD)
    np.testing.assert_array_equal(t["delta0"], DELTA[0])
    np.testing.assert_allclose(t["bias"], [0.991, -0.007], rtol=0, atol=1e-12)
    assert t["bias_grad"] == [9, 7]
    np.testing.assert_allclose(t["w00"], UPDATED_W0_C0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res["gradient_check"]["grad"], GRADCHECK_GRAD0)
    assert res["gradient_check"]["worst"] < 1e-8
    np.testing.assert_array_equal(res["pool"]["out"], POOL_OUT)
    np.testing.assert_array_equal(res["pool"]["delta"], POOL_DELTA)
    assert res["relu_net"] == {"pool_shape": [2, 3, 3], "delta_shape": [1, 6, 6]}
