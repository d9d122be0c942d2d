"""Grouped convolutions through the TensorFlow entry point, and float16 in every entry point.

References: the direct float64 loop (tests/oracle.py) always, PyTorch autograd through F.conv2d
(with groups) when torch is installed.
"""

import numpy as np
import pytest

import convbp
from oracle import (assert_close, direct_backprop_input, out_size, tf_same_pads, tolerance,
                    torch, torch_backprop_input)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

# (N, H, W, C, F, KH, KW, groups, strides, dilations, padding)
TF_GROUP_CASES = [
    (2, 7, 8, 4, 6, 3, 3, 2, 1, 1, "SAME"),
    (1, 9, 9, 6, 6, 3, 3, 6, 2, 1, "SAME"),          # depthwise, multiplier 1
    (2, 8, 7, 6, 9, 3, 2, 3, (2, 1), (1, 2), "VALID"),
    (1, 6, 6, 4, 8, 2, 2, 4, 1, 2, ((1, 0), (0, 1))),  # depthwise, multiplier 2, explicit
    (2, 10, 9, 6, 4, 3, 3, 2, 3, 2, "SAME"),
]


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def make_tf_group_case(case, dtype, seed=0):
    n, h, w, c, f, kh, kw, groups, strides, dilations, padding = case
    strides, dilations = pair(strides), pair(dilations)
    if padding == "SAME":
        pads = tf_same_pads((h, w), (kh, kw), strides, dilations)
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        pads = padding
    oh, ow = out_size((h, w), (kh, kw), strides, dilations, pads)
    rng = np.random.default_rng(seed)
    filt = rng.standard_normal((kh, kw, c // groups, f)).astype(dtype)
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    expected = direct_backprop_input(dy, filt, (h, w), strides, dilations, pads, groups)
    return (n, h, w, c), filt, dy, dict(strides=strides, padding=padding,
                                        dilations=dilations), pads, expected


# -------------------------------------------------------------------------------------------
# Groups in the TensorFlow entry point: filter in-depth C_in / groups.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TF_GROUP_CASES)
def test_tf_groups_match_direct_loop(case, dtype, data_format):
    size, filt, dy, kwargs, _, expected = make_tf_group_case(case, dtype)
    groups = size[3] // filt.shape[2]
    if data_format == "NHWC":
        dx = convbp.conv2d_backprop_input(size, filt, dy, **kwargs)
    else:
        n, h, w, c = size
        dx = convbp.conv2d_backprop_input((n, c, h, w), filt, dy.transpose(0, 3, 1, 2),
                                          **kwargs, data_format="NCHW").transpose(0, 2, 3, 1)
    assert dx.dtype == dtype
    assert_close(dx, expected, dtype, filt.shape[3] // groups * filt.shape[0] * filt.shape[1])


@needs_torch
@pytest.mark.parametrize("case", TF_GROUP_CASES)
def test_tf_groups_match_torch_autograd(case):
    size, filt, dy, kwargs, pads, _ = make_tf_group_case(case, np.float64, seed=1)
    groups = size[3] // filt.shape[2]
    dx = convbp.conv2d_backprop_input(size, filt, dy, **kwargs)
    expected = torch_backprop_input(dy, filt, size[1:3], kwargs["strides"],
                                    kwargs["dilations"], pads, groups)
    assert_close(dx, expected, np.float64, filt.shape[3] // groups * filt[:, :, 0, 0].size)


def test_tf_groups_agree_with_conv2d_input():
    # The two API families are one operation: HWIO filter == OIHW weight.transpose(2, 3, 1, 0).
    size, filt, dy, kwargs, pads, expected = make_tf_group_case(TF_GROUP_CASES[2], np.float64)
    n, h, w, c = size
    groups = c // filt.shape[2]
    dx = convbp.conv2d_input((n, c, h, w), filt.transpose(3, 2, 0, 1), dy.transpose(0, 3, 1, 2),
                             stride=kwargs["strides"], dilation=kwargs["dilations"],
                             groups=groups)
    assert_close(dx.transpose(0, 2, 3, 1), expected, np.float64, 3 * 3 * 2)
    assert dx.transpose(0, 2, 3, 1).flags.c_contiguous  # NHWC-memory dy -> NHWC-memory dx


def test_tf_groups_with_explicit_paddings_nchw():
    size, filt, dy, _, pads, expected = make_tf_group_case(TF_GROUP_CASES[3], np.float32)
    n, h, w, c = size
    (t, b), (l, r) = pads
    dx = convbp.conv2d_backprop_input((n, c, h, w), filt, dy.transpose(0, 3, 1, 2), 1,
                                      "EXPLICIT", dilations=2, data_format="NCHW",
                                      explicit_paddings=[0, 0, 0, 0, t, b, l, r])
    assert_close(dx.transpose(0, 2, 3, 1), expected, np.float32, 2 * 2 * 2)


@pytest.mark.parametrize("c,f,match", [
    (5, 6, "filter in-depth 2 must divide the input depth 5"),
    (4, 3, "filter out-depth 3 must be divisible by the 2 groups"),
])
def test_tf_groups_errors(c, f, match):
    filt = np.ones((3, 3, 2, f), np.float32)
    with pytest.raises(ValueError, match=match):
        convbp.conv2d_backprop_input((1, 5, 5, c), filt, np.ones((1, 5, 5, f), np.float32), 1,
                                     "SAME")


# -------------------------------------------------------------------------------------------
# float16: accumulated in float32, rounded to float16 once.
#
# Tolerance rationale.  The operands are float16, so the float64 reference computed from the
# same float16 values is exact up to float64 rounding.  convbp widens them to float32 exactly,
# accumulates in float32 -- within delta = tolerance(float32, L) * max|expected| of the exact
# value, the bound every float32 test uses -- and rounds that float32 value r once to float16,
# which moves it by at most half the float16 spacing at r: 2**(floor(log2|r|) - 11), or 2**-25
# below the normal range (2**-14).  With |r| <= |expected| + delta, each element obeys
#     |actual - expected| <= half_ulp16(|expected| + delta) + delta,
# i.e. correct rounding up to the float32 accumulation error.  A float16 accumulation misses it
# (its error grows like sqrt(L) float16 ulps), and so does rounding twice -- for example adding
# the bias after rounding the sum: near a rounding midpoint that moves the result a further
# part of an ulp.


def half_ulp16(x):
    """Half the spacing of float16 numbers at magnitude x (float64 array, x >= 0)."""
    return np.exp2(np.floor(np.log2(np.maximum(x, 2.0**-14))) - 11)


def assert_close_fp16(actual, expected, reduction_length):
    assert actual.dtype == np.float16
    actual = actual.astype(np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    delta = tolerance(np.float32, reduction_length) * np.abs(expected).max(initial=0.0)
    bound = half_ulp16(np.abs(expected) + delta) + delta
    excess = np.abs(actual - expected) / bound
    assert excess.max(initial=0.0) <= 1, f"error {excess.max():.3g} x the float16 bound"


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", TF_GROUP_CASES[:3])
def test_float16_tf(case, data_format):
    size, filt, dy, kwargs, _, expected = make_tf_group_case(case, np.float16, seed=2)
    groups = size[3] // filt.shape[2]
    if data_format == "NHWC":
        dx = convbp.conv2d_backprop_input(size, filt, dy, **kwargs)
    else:
        n, h, w, c = size
        dx = convbp.conv2d_backprop_input((n, c, h, w), filt, dy.transpose(0, 3, 1, 2),
                                          **kwargs, data_format="NCHW").transpose(0, 2, 3, 1)
    assert_close_fp16(dx, expected, filt.shape[3] // groups * filt[:, :, 0, 0].size)


@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
def test_float16_conv2d_input(memory):
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 2, 3, 3)).astype(np.float16)    # groups 2: C_in 4
    grad_output = rng.standard_normal((2, 6, 5, 4)).astype(np.float16)
    if memory == "channels_last":
        grad_output = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1)).transpose(0, 3, 1,
                                                                                         2)
    dx = convbp.conv2d_input((2, 4, 10, 8), weight, grad_output, stride=2, padding=1, groups=2)
    expected = direct_backprop_input(grad_output.transpose(0, 2, 3, 1),
                                     weight.transpose(2, 3, 1, 0), (10, 8), (2, 2), (1, 1),
                                     ((1, 1), (1, 1)), 2)
    assert_close_fp16(dx.transpose(0, 2, 3, 1), expected, 3 * 9)
    if memory == "channels_last":
        assert dx.transpose(0, 2, 3, 1).flags.c_contiguous
    else:
        assert dx.flags.c_contiguous


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_float16_conv_transpose2d(with_bias, data_format):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float16)
    weight = rng.standard_normal((6, 2, 3, 3)).astype(np.float16)    # groups 3: C_out 6
    # A bias far larger than the sum: rounding the sum to float16 before adding it would be
    # off by up to half an ulp of the sum on top of the final rounding.
    bias = (rng.standard_normal(6) * 40).astype(np.float16) if with_bias else None
    kwargs = dict(stride=2, padding=1, output_padding=1, groups=3, dilation=1)
    expected = direct_backprop_input(x.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0),
                                     (8, 10), (2, 2), (1, 1), ((1, 1), (1, 1)), 3)
    if with_bias:
        expected = expected + bias.astype(np.float64)
    if data_format == "NHWC":
        y = convbp.conv_transpose2d(x.transpose(0, 2, 3, 1), weight, bias, **kwargs,
                                    data_format="NHWC")
    else:
        y = convbp.conv_transpose2d(x, weight, bias, **kwargs).transpose(0, 2, 3, 1)
    assert_close_fp16(y, expected, 2 * 9)


def test_float16_out_strided():
    rng = np.random.default_rng(5)
    filt = rng.standard_normal((3, 3, 2, 4)).astype(np.float16)
    dy = rng.standard_normal((1, 6, 6, 4)).astype(np.float16)
    big = np.full((1, 8, 8, 4), 3, np.float16)
    out = big[:, 1:7, 1:7, ::2]
    result = convbp.conv2d_backprop_input((1, 6, 6, 2), filt, dy, 1, "SAME", out=out)
    assert result is out
    expected = direct_backprop_input(dy, filt, (6, 6), pads=((1, 1), (1, 1)))
    assert_close_fp16(out, expected, 4 * 9)
    assert (big[:, :, :, 1::2] == 3).all() and (big[:, 0] == 3).all() and (big[:, 7] == 3).all()


@needs_torch
def test_float16_matches_torch_autograd_groups_dilation():
    # PyTorch autograd (float64, on the same float16 values) through F.conv2d with groups and
    # dilation, channels_last tensors.
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((8, 1, 3, 3)).astype(np.float16)    # depthwise, multiplier 2
    x = torch.zeros((2, 4, 9, 9), dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    y = torch.nn.functional.conv2d(x, torch.from_numpy(weight).double(), padding="same",
                                   dilation=2, groups=4)
    dy16 = rng.standard_normal(tuple(y.shape)).astype(np.float16)
    y.backward(torch.from_numpy(dy16).double())
    dy_cl = torch.from_numpy(dy16).contiguous(memory_format=torch.channels_last).numpy()
    dx = convbp.conv2d_input((2, 4, 9, 9), weight, dy_cl, padding="same", dilation=2, groups=4)
    assert dx.dtype == np.float16 and dx.transpose(0, 2, 3, 1).flags.c_contiguous
    assert_close_fp16(dx, x.grad.numpy(), 2 * 9)


def test_float16_mixed_with_float32_is_an_error():
    with pytest.raises(TypeError, match="grad_output"):
        convbp.conv2d_input((1, 1, 3, 3), np.ones((1, 1, 1, 1), np.float16),
                            np.ones((1, 1, 3, 3), np.float32))
    with pytest.raises(TypeError, match="bias"):
        convbp.conv_transpose2d(np.ones((1, 1, 3, 3), np.float16),
                                np.ones((1, 1, 1, 1), np.float16), np.ones(1, np.float32))
