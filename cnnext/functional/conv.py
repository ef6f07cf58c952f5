"""2-D convolution, forward and backward: the public functions.

They validate their arguments (``cnnext._validation.check_conv2d``) and hand the checked arrays and
geometry to ``cnnext.functional._conv_dispatch``, which chooses the algorithm (im2col + GEMM, direct,
Winograd), plans chunks within the workspace cap and calls the kernels.
"""
from cnnext._validation import check_batch_grad, check_conv2d
from cnnext.functional._conv_dispatch import backward_checked, forward_checked

__all__ = ["conv2d", "conv2d_backward"]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Apply a 2-D convolution (cross-correlation, as PyTorch) over a batch of images.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
        Input images.
    weight : array_like, shape (K, C // groups, kH, kW)
        Filters.
    bias : array_like, shape (K,), optional
        Added to every output position of each filter.
    stride, dilation : int or (int, int)
        Step between windows and between kernel taps, >= 1.
    padding : int, (int, int), 'valid' or 'same'
        Implicit zero padding on both sides; 'same' (stride 1 only) keeps the spatial size.
    groups : int
        Split input and output channels into this many independent groups.

    Returns
    -------
    ndarray, shape (N, K, Ho, Wo) or (K, Ho, Wo)
        In the input's float dtype (float64 for integer input).
    """
    x, weight, bias, g, unbatched = check_conv2d("conv2d", input, weight, bias, stride, padding,
                                                 dilation, groups)
    y = forward_checked(x, weight, bias, g)
    return y[0] if unbatched else y


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of ``conv2d`` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, shape (N, K, Ho, Wo) or (K, Ho, Wo)
        Gradient of the loss with respect to conv2d's output.
    input, weight, stride, padding, dilation, groups
        As given to ``conv2d``.

    Returns
    -------
    grad_input : ndarray, shape of ``input``
    grad_weight : ndarray, shape of ``weight``
    grad_bias : ndarray, shape (K,)
    """
    func = "conv2d_backward"
    x, weight, _, g, unbatched = check_conv2d(func, input, weight, None, stride, padding,
                                              dilation, groups)
    gy = check_batch_grad(grad_output, "grad_output", func, g.output_shape, unbatched, dtype=x.dtype)
    gx, gw, gb = backward_checked(x, weight, gy, g, need_input=True, need_weight=True)
    return (gx[0] if unbatched else gx), gw, gb
