"""Independent references for the tests: a direct float64 loop and, when installed, PyTorch.

Everything here is logical NHWC with an HWIO filter (KH, KW, C_in/groups, C_out) and explicit
pads ((top, bottom), (left, right)); tests convert layouts themselves.
"""

import math

import numpy as np

try:
    import torch
except ImportError:  # the PyTorch cross-checks skip
    torch = None


def direct_backprop_input(dy, filt, in_hw, strides=(1, 1), dilations=(1, 1),
                          pads=((0, 0), (0, 0)), groups=1):
    """dx (N, H, W, C) by the definition: a loop over output pixels and taps, float64."""
    dy = np.asarray(dy, np.float64)
    filt = np.asarray(filt, np.float64)
    n, oh_size, ow_size, f = dy.shape
    kh_size, kw_size, c_group, _ = filt.shape
    h, w = in_hw
    f_group = f // groups
    dx = np.zeros((n, h, w, c_group * groups))
    for g in range(groups):
        cs, fs = slice(g * c_group, (g + 1) * c_group), slice(g * f_group, (g + 1) * f_group)
        for oh in range(oh_size):
            for kh in range(kh_size):
                ih = oh * strides[0] - pads[0][0] + kh * dilations[0]
                if not 0 <= ih < h:
                    continue
                for ow in range(ow_size):
                    for kw in range(kw_size):
                        iw = ow * strides[1] - pads[1][0] + kw * dilations[1]
                        if 0 <= iw < w:
                            dx[:, ih, iw, cs] += dy[:, oh, ow, fs] @ filt[kh, kw, :, fs].T
    return dx


def direct_conv2d(x, filt, out_hw, strides=(1, 1), dilations=(1, 1), pads=((0, 0), (0, 0)),
                  groups=1):
    """The forward convolution y (N, OH, OW, F) by the definition, float64."""
    x = np.asarray(x, np.float64)
    filt = np.asarray(filt, np.float64)
    n, h, w, c = x.shape
    kh_size, kw_size, c_group, f = filt.shape
    f_group = f // groups
    y = np.zeros((n,) + tuple(out_hw) + (f,))
    for g in range(groups):
        cs, fs = slice(g * c_group, (g + 1) * c_group), slice(g * f_group, (g + 1) * f_group)
        for oh in range(out_hw[0]):
            for kh in range(kh_size):
                ih = oh * strides[0] - pads[0][0] + kh * dilations[0]
                if not 0 <= ih < h:
                    continue
                for ow in range(out_hw[1]):
                    for kw in range(kw_size):
                        iw = ow * strides[1] - pads[1][0] + kw * dilations[1]
                        if 0 <= iw < w:
                            y[:, oh, ow, fs] += x[:, ih, iw, cs] @ filt[kh, kw, :, fs]
    return y


def direct_backprop_filter(x, dy, kernel_hw, strides=(1, 1), dilations=(1, 1),
                           pads=((0, 0), (0, 0)), groups=1):
    """dw (KH, KW, C/groups, F) by the definition: a loop over output pixels and taps, float64."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, h, w, c = x.shape
    _, oh_size, ow_size, f = dy.shape
    kh_size, kw_size = kernel_hw
    c_group, f_group = c // groups, f // groups
    dw = np.zeros((kh_size, kw_size, c_group, f))
    for g in range(groups):
        cs, fs = slice(g * c_group, (g + 1) * c_group), slice(g * f_group, (g + 1) * f_group)
        for oh in range(oh_size):
            for kh in range(kh_size):
                ih = oh * strides[0] - pads[0][0] + kh * dilations[0]
                if not 0 <= ih < h:
                    continue
                for ow in range(ow_size):
                    for kw in range(kw_size):
                        iw = ow * strides[1] - pads[1][0] + kw * dilations[1]
                        if 0 <= iw < w:
                            dw[kh, kw, :, fs] += x[:, ih, iw, cs].T @ dy[:, oh, ow, fs]
    return dw


def _torch_padded_input(x, pads):
    (top, bottom), (left, right) = pads
    x_t = torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2)
    return torch.nn.functional.pad(x_t, (left, right, top, bottom))


def torch_conv2d(x, filt, strides=(1, 1), dilations=(1, 1), pads=((0, 0), (0, 0)), groups=1):
    """y (N, OH, OW, F) from torch.nn.functional.conv2d on an explicitly padded input, float64."""
    weight = torch.from_numpy(np.asarray(filt, np.float64)).permute(3, 2, 0, 1)  # OIHW
    y = torch.nn.functional.conv2d(_torch_padded_input(x, pads), weight, stride=tuple(strides),
                                   dilation=tuple(dilations), groups=groups)
    return y.permute(0, 2, 3, 1).numpy()


def torch_backprop_filter(x, dy, kernel_hw, strides=(1, 1), dilations=(1, 1),
                          pads=((0, 0), (0, 0)), groups=1):
    """dw (KH, KW, C/groups, F) from torch.nn.grad.conv2d_weight on a padded input, float64."""
    c, f = x.shape[3], dy.shape[3]
    dw = torch.nn.grad.conv2d_weight(
        _torch_padded_input(x, pads), (f, c // groups) + tuple(kernel_hw),
        torch.from_numpy(np.asarray(dy, np.float64)).permute(0, 3, 1, 2), stride=tuple(strides),
        dilation=tuple(dilations), groups=groups)
    return dw.permute(2, 3, 1, 0).numpy()


def torch_backprop_input(dy, filt, in_hw, strides=(1, 1), dilations=(1, 1),
                         pads=((0, 0), (0, 0)), groups=1):
    """dx (N, H, W, C) from PyTorch autograd through F.conv2d on an explicitly padded input."""
    (top, bottom), (left, right) = pads
    n, _, _, f = dy.shape
    h, w = in_hw
    c = filt.shape[2] * groups
    x = torch.zeros((n, c, h + top + bottom, w + left + right), dtype=torch.float64,
                    requires_grad=True)
    weight = torch.from_numpy(np.asarray(filt, np.float64)).permute(3, 2, 0, 1)  # OIHW
    y = torch.nn.functional.conv2d(x, weight, stride=tuple(strides), dilation=tuple(dilations),
                                   groups=groups)
    assert tuple(y.shape[2:]) == tuple(dy.shape[1:3]), (y.shape, dy.shape)
    y.backward(torch.from_numpy(np.asarray(dy, np.float64)).permute(0, 3, 1, 2))
    return x.grad[:, :, top:top + h, left:left + w].permute(0, 2, 3, 1).numpy()


def tf_same_pads(in_hw, kernel_hw, strides, dilations):
    """TensorFlow SAME: output ceil(in/stride), the odd extra pad at the bottom/right."""
    pads = []
    for size, k, s, d in zip(in_hw, kernel_hw, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def out_size(in_hw, kernel_hw, strides, dilations, pads):
    return tuple((size + p[0] + p[1] - (k - 1) * d - 1) // s + 1
                 for size, k, s, d, p in zip(in_hw, kernel_hw, strides, dilations, pads))


def tolerance(dtype, reduction_length):
    """Relative-to-max-magnitude tolerance for comparing with a float64 reference.

    float32 rounding error of a sum grows like sqrt(length) in practice and at worst linearly;
    the bound below is a small multiple of eps*sqrt(length), float64 near machine precision.
    """
    eps = np.finfo(dtype).eps
    return 8 * eps * math.sqrt(max(reduction_length, 1)) + 4 * eps


def assert_close(actual, expected, dtype, reduction_length):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-300)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    tol = tolerance(dtype, reduction_length)
    assert err <= tol, f"relative error {err:.3e} > tolerance {tol:.3e}"


def gamma(n, dtype):
    """gamma_n = n*eps / (1 - n*eps): the dot-product error bound's factor for length n."""
    u = np.finfo(dtype).eps
    return n * u / (1 - n * u)


def assert_bounded(result, exact, scale, n_red, dtype):
    """|result - exact| <= 2*gamma_n * scale componentwise (scale: the |operands| product)."""
    err = np.abs(np.asarray(result, np.float64) - exact)
    bound = 2 * gamma(n_red, dtype) * scale
    worst = (err / np.where(bound > 0, bound, np.inf)).max()
    assert np.all(err <= bound), f"error {worst:.3g} x the componentwise bound"
