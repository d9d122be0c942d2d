"""Plain NumPy versions of the convolution and its two gradients (logical NHWC, HWIO filter).

They are what convbp replaces -- the col2im a NumPy framework writes by hand -- and serve the
demo and the benchmark as a baseline.  One tap (kh, kw) at a time: a matmul with that tap's
filter slice, scatter-added into a strided slice of a padded gradient.  Slow but simple, and
independent of the compiled kernel.
"""

import numpy as np

__all__ = ["conv2d_backprop_filter_nhwc", "conv2d_backprop_input_nhwc", "conv2d_nhwc"]


def _tap_slices(kh, kw, out_hw, strides, dilations):
    """The padded-input slices that tap (kh, kw) of every output pixel reads."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, strides, dilations
    return (slice(kh * dh, kh * dh + (oh - 1) * sh + 1, sh),
            slice(kw * dw, kw * dw + (ow - 1) * sw + 1, sw))


def conv2d_backprop_input_nhwc(input_hw, filter, out_backprop, strides=(1, 1), dilations=(1, 1),
                               pads=((0, 0), (0, 0)), groups=1):
    """dx of shape (N, H, W, C) from dy (N, OH, OW, F) and filter (KH, KW, C/groups, F)."""
    n, oh, ow, f = out_backprop.shape
    kh_size, kw_size, c_group, _ = filter.shape
    (h, w), ((top, bottom), (left, right)) = input_hw, pads
    f_group = f // groups
    # Room for every tap of every output pixel, even where dy reaches past the padded input.
    ph = max(top + h + bottom, (oh - 1) * strides[0] + (kh_size - 1) * dilations[0] + 1)
    pw = max(left + w + right, (ow - 1) * strides[1] + (kw_size - 1) * dilations[1] + 1)
    dx = np.zeros((n, ph, pw, c_group * groups), np.result_type(filter, out_backprop))
    for g in range(groups):
        dy_g = out_backprop[..., g * f_group:(g + 1) * f_group]
        for kh in range(kh_size):
            for kw in range(kw_size):
                rows, cols = _tap_slices(kh, kw, (oh, ow), strides, dilations)
                w_tap = filter[kh, kw, :, g * f_group:(g + 1) * f_group]
                dx[:, rows, cols, g * c_group:(g + 1) * c_group] += dy_g @ w_tap.T
    return dx[:, top:top + h, left:left + w, :]


def _padded_input(x, out_hw, kernel_hw, strides, dilations, pads):
    """x zero-padded by pads, and at the end far enough that every tap slice fits."""
    n, h, w, c = x.shape
    (top, bottom), (left, right) = pads
    ph = max(top + h + bottom, (out_hw[0] - 1) * strides[0] + (kernel_hw[0] - 1) * dilations[0] + 1)
    pw = max(left + w + right, (out_hw[1] - 1) * strides[1] + (kernel_hw[1] - 1) * dilations[1] + 1)
    xp = np.zeros((n, ph, pw, c), x.dtype)
    xp[:, top:top + h, left:left + w, :] = x
    return xp


def conv2d_nhwc(x, filter, out_hw, strides=(1, 1), dilations=(1, 1), pads=((0, 0), (0, 0)),
                groups=1):
    """The forward convolution y (N, OH, OW, F) of x (N, H, W, C) -- the adjoint of the above."""
    n = x.shape[0]
    kh_size, kw_size, c_group, f = filter.shape
    oh, ow = out_hw
    xp = _padded_input(x.astype(np.result_type(x, filter), copy=False), out_hw,
                       (kh_size, kw_size), strides, dilations, pads)
    f_group = f // groups
    y = np.zeros((n, oh, ow, f), xp.dtype)
    for g in range(groups):
        for kh in range(kh_size):
            for kw in range(kw_size):
                rows, cols = _tap_slices(kh, kw, (oh, ow), strides, dilations)
                w_tap = filter[kh, kw, :, g * f_group:(g + 1) * f_group]
                y[..., g * f_group:(g + 1) * f_group] += (
                    xp[:, rows, cols, g * c_group:(g + 1) * c_group] @ w_tap)
    return y


def conv2d_backprop_filter_nhwc(x, filter_shape, out_backprop, strides=(1, 1),
                                dilations=(1, 1), pads=((0, 0), (0, 0)), groups=1):
    """dw of shape (KH, KW, C/groups, F) from x (N, H, W, C) and dy (N, OH, OW, F)."""
    kh_size, kw_size, c_group, f = filter_shape
    n, oh, ow, _ = out_backprop.shape
    dtype = np.result_type(x, out_backprop)
    xp = _padded_input(x.astype(dtype, copy=False), (oh, ow), (kh_size, kw_size), strides,
                       dilations, pads)
    f_group = f // groups
    dw = np.zeros((kh_size, kw_size, c_group, f), dtype)
    for g in range(groups):
        dy_g = out_backprop[..., g * f_group:(g + 1) * f_group].reshape(-1, f_group)
        for kh in range(kh_size):
            for kw in range(kw_size):
                rows, cols = _tap_slices(kh, kw, (oh, ow), strides, dilations)
                x_tap = xp[:, rows, cols, g * c_group:(g + 1) * c_group].reshape(-1, c_group)
                dw[kh, kw, :, g * f_group:(g + 1) * f_group] = x_tap.T @ dy_g
    return dw
