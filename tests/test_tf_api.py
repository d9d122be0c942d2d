"""TensorFlow-convention entry points of the whole layer: convbp.tf.conv2d, conv2d_backprop_filter,
conv2d_transpose, depthwise_conv2d, depthwise_conv2d_backprop_filter, conv1d, conv1d_transpose
(and the existing input gradients where the new ones lean on them).

Every result is checked against the direct float64 loops of tests/oracle.py and, when torch is
installed, against PyTorch float64.  Paddings are worked out here from TensorFlow's documented
rules (oracle.tf_same_pads), independently of convbp's geometry code.
"""

import numpy as np
import pytest

import convbp
from convbp import tf as ctf
from oracle import (assert_close, direct_backprop_filter, direct_backprop_input, direct_conv2d,
                    out_size, tf_same_pads, torch)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
DTYPES = [np.float16, np.float32, np.float64]
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)

# (N, H, W, C, F, KH, KW, strides, dilations, padding, groups)
CASES = [
    (2, 7, 8, 3, 4, 3, 3, (1, 1), (1, 1), "SAME", 1),
    (1, 9, 10, 4, 6, 3, 2, (2, 2), (1, 1), "VALID", 2),
    (2, 8, 7, 6, 6, 2, 3, (2, 3), (2, 1), "SAME", 3),
    (1, 6, 7, 2, 3, 3, 3, (1, 2), (1, 1), ((1, 2), (0, 3)), 1),  # asymmetric explicit
    (1, 5, 5, 4, 4, 1, 1, (3, 3), (1, 1), "VALID", 1),
    (2, 10, 9, 3, 2, 3, 3, (3, 2), (2, 2), "SAME", 1),  # input rows the output never reads
]


def pads_of(padding, in_hw, kernel_hw, strides, dilations):
    if padding == "SAME":
        return tf_same_pads(in_hw, kernel_hw, strides, dilations)
    if padding == "VALID":
        return (0, 0), (0, 0)
    return padding


def make_case(case, dtype, seed=0, depthwise=False):
    """Operands (NHWC, HWIO or depthwise (KH, KW, C, M)) and the geometry of one case."""
    n, h, w, c, f, kh, kw, strides, dilations, padding, groups = case
    rng = np.random.default_rng(seed)
    pads = pads_of(padding, (h, w), (kh, kw), strides, dilations)
    oh, ow = out_size((h, w), (kh, kw), strides, dilations, pads)
    if depthwise:
        groups, f = c, c * 2
        filt = rng.standard_normal((kh, kw, c, 2)).astype(dtype)
        hwio = filt.reshape(kh, kw, 1, f)
    else:
        filt = hwio = rng.standard_normal((kh, kw, c // groups, f)).astype(dtype)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    geo = dict(strides=strides, dilations=dilations, pads=pads, groups=groups)
    kwargs = dict(strides=strides, padding=padding, dilations=dilations)
    return x, filt, hwio, dy, geo, kwargs


def in_format(a, data_format):
    return np.ascontiguousarray(a.transpose(TO_NCHW)) if data_format == "NCHW" else a


def from_format(a, data_format):
    return a.transpose(TO_NHWC) if data_format == "NCHW" else a


def forward_length(hwio, groups):
    return hwio.shape[0] * hwio.shape[1] * hwio.shape[2]


def filter_length(dy):
    return dy.shape[0] * dy.shape[1] * dy.shape[2]


# ---------------------------------------------------------------------------------------------
# conv2d, conv2d_backprop_filter, conv2d_transpose

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_direct_loop(case, data_format, dtype):
    x, filt, hwio, dy, geo, kwargs = make_case(case, dtype)
    expected = direct_conv2d(x, hwio, dy.shape[1:3], **geo)
    y = ctf.conv2d(in_format(x, data_format), filt, data_format=data_format, **kwargs)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(from_format(y, data_format), expected, dtype, forward_length(hwio, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_backprop_filter_matches_direct_loop(case, data_format, dtype):
    x, filt, hwio, dy, geo, kwargs = make_case(case, dtype)
    expected = direct_backprop_filter(x, dy, hwio.shape[:2], **geo)
    dw = ctf.conv2d_backprop_filter(in_format(x, data_format), hwio.shape,
                                    in_format(dy, data_format), data_format=data_format,
                                    **kwargs)
    assert dw.shape == hwio.shape and dw.dtype == dtype and dw.flags.c_contiguous
    assert_close(dw, expected, dtype, filter_length(dy))


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_transpose_is_the_input_gradient(case, data_format):
    x, filt, hwio, dy, geo, kwargs = make_case(case, np.float64)
    expected = direct_backprop_input(dy, hwio, x.shape[1:3], **geo)
    shape = x.shape if data_format == "NHWC" else tuple(x.shape[i] for i in TO_NCHW)
    dx = ctf.conv2d_transpose(in_format(dy, data_format), hwio, shape, kwargs["strides"],
                              kwargs["padding"], data_format, kwargs["dilations"])
    assert dx.shape == shape
    assert_close(from_format(dx, data_format), expected, np.float64, hwio[0, 0].size)
    same = ctf.conv2d_backprop_input(shape, hwio, in_format(dy, data_format),
                                     data_format=data_format, **kwargs)
    np.testing.assert_array_equal(dx, same)


@pytest.mark.parametrize("case", CASES[:4])
def test_adjoint_identity(case):
    # <conv2d(x, w), dy> = <x, backprop_input(dy, w)> = <w, backprop_filter(x, dy)>.
    x, filt, hwio, dy, geo, kwargs = make_case(case, np.float64, seed=1)
    y = ctf.conv2d(x, hwio, **kwargs)
    dx = ctf.conv2d_backprop_input(x.shape, hwio, dy, **kwargs)
    dw = ctf.conv2d_backprop_filter(x, hwio.shape, dy, **kwargs)
    ref = np.vdot(y, dy)
    scale = np.abs(y).sum() * np.abs(dy).max() + 1e-300
    assert abs(np.vdot(x, dx) - ref) <= 1e-12 * scale
    assert abs(np.vdot(hwio, dw) - ref) <= 1e-12 * scale


@needs_torch
@pytest.mark.parametrize("case", CASES)
def test_conv2d_and_filter_gradient_match_torch(case):
    x, filt, hwio, dy, geo, kwargs = make_case(case, np.float64, seed=2)
    (top, bottom), (left, right) = geo["pads"]
    xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 3, 1, 2),
                                 (left, right, top, bottom))
    weight = torch.from_numpy(hwio).permute(3, 2, 0, 1).clone().requires_grad_()
    yt = torch.nn.functional.conv2d(xt, weight, stride=geo["strides"],
                                    dilation=geo["dilations"], groups=geo["groups"])
    y = ctf.conv2d(x, hwio, **kwargs)
    assert_close(y, yt.detach().permute(0, 2, 3, 1).numpy(), np.float64, hwio[:, :, :, 0].size)
    yt.backward(torch.from_numpy(dy).permute(0, 3, 1, 2))
    dw = ctf.conv2d_backprop_filter(x, hwio.shape, dy, **kwargs)
    assert_close(dw, weight.grad.permute(2, 3, 1, 0).numpy(), np.float64, filter_length(dy))


# ---------------------------------------------------------------------------------------------
# depthwise

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", CASES)
def test_depthwise_conv2d_and_filter_gradient(case, data_format, dtype):
    x, filt, hwio, dy, geo, kwargs = make_case(case, dtype, depthwise=True)
    y = ctf.depthwise_conv2d(in_format(x, data_format), filt, data_format=data_format,
                             **kwargs)
    expected = direct_conv2d(x, hwio, dy.shape[1:3], **geo)
    assert_close(from_format(y, data_format), expected, dtype, hwio[:, :, :, 0].size)
    dw = ctf.depthwise_conv2d_backprop_filter(in_format(x, data_format), filt.shape,
                                              in_format(dy, data_format),
                                              data_format=data_format, **kwargs)
    assert dw.shape == filt.shape
    expected = direct_backprop_filter(x, dy, hwio.shape[:2], **geo).reshape(filt.shape)
    assert_close(dw, expected, dtype, filter_length(dy))


def test_depthwise_filter_gradient_into_unmergeable_out():
    # An out whose C and multiplier axes cannot be viewed as one (C*M) axis: computed aside,
    # then copied in; nothing else in the buffer is touched.
    x, filt, hwio, dy, geo, kwargs = make_case(CASES[2], np.float64, depthwise=True)
    big = np.full(filt.shape[:2] + (filt.shape[2], 3 * filt.shape[3]), 7.0)
    out = big[..., ::3]
    result = ctf.depthwise_conv2d_backprop_filter(x, filt.shape, dy, out=out, **kwargs)
    assert result is out
    expected = direct_backprop_filter(x, dy, hwio.shape[:2], **geo).reshape(filt.shape)
    assert_close(out, expected, np.float64, filter_length(dy))
    assert (big[..., 1::3] == 7.0).all() and (big[..., 2::3] == 7.0).all()


# ---------------------------------------------------------------------------------------------
# Strided views, out=, strides of length 1, threads, algorithm

def test_strided_views_and_out():
    x, filt, hwio, dy, geo, kwargs = make_case(CASES[2], np.float32, seed=3)
    # Operands as reversed / sliced views of larger arrays; the result into a strided view.
    xbig = np.zeros((x.shape[0], x.shape[1], 2 * x.shape[2], x.shape[3]), np.float32)
    xbig[:, :, ::2] = x[:, :, ::-1]
    x_view = xbig[:, :, -2::-2]
    np.testing.assert_array_equal(x_view, x)
    expected = direct_conv2d(x, hwio, dy.shape[1:3], **geo)
    big = np.full((dy.shape[0], dy.shape[1] + 1, dy.shape[2], 2 * dy.shape[3]), 7.0, np.float32)
    out = big[:, 1:, :, ::2]
    assert ctf.conv2d(x_view, hwio, **kwargs, out=out) is out
    assert_close(out, expected, np.float32, hwio[:, :, :, 0].size)
    untouched = np.ones(big.shape, bool)
    untouched[:, 1:, :, ::2] = False
    assert (big[untouched] == 7.0).all()
    # Filter gradient into a Fortran-order out, dy a transposed view of NCHW memory.
    dy_view = np.ascontiguousarray(dy.transpose(TO_NCHW)).transpose(TO_NHWC)
    out = np.asfortranarray(np.zeros(hwio.shape, np.float32))
    ctf.conv2d_backprop_filter(x_view, hwio.shape, dy_view, **kwargs, out=out)
    assert_close(out, direct_backprop_filter(x, dy, hwio.shape[:2], **geo), np.float32,
                 filter_length(dy))


def test_conv2d_transpose_explicit_pairs():
    # tf.nn.conv2d_transpose takes explicit padding as four (before, after) pairs.
    x, filt, hwio, dy, geo, kwargs = make_case(CASES[3], np.float64)
    quad = [[0, 0], list(geo["pads"][0]), list(geo["pads"][1]), [0, 0]]
    dx = ctf.conv2d_transpose(dy, hwio, x.shape, kwargs["strides"], quad)
    assert_close(dx, direct_backprop_input(dy, hwio, x.shape[1:3], **geo), np.float64,
                 hwio[0, 0].size)


def test_strides_of_length_one_two_and_four():
    x, filt, hwio, dy, geo, kwargs = make_case(CASES[1], np.float64)  # strides (2, 2)
    expected = direct_conv2d(x, hwio, dy.shape[1:3], **geo)
    for strides in (2, [2], (2, 2), [1, 2, 2, 1]):
        y = ctf.conv2d(x, hwio, strides, "VALID")
        assert_close(y, expected, np.float64, hwio[:, :, :, 0].size)
        dx = ctf.conv2d_transpose(dy, hwio, x.shape, strides, "VALID")
        assert_close(dx, direct_backprop_input(dy, hwio, x.shape[1:3], **geo), np.float64,
                     hwio[0, 0].size)
    # 4 ints in NCHW order: 1 at N and C.
    y = ctf.conv2d(x.transpose(TO_NCHW), hwio, [1, 1, 2, 2], "VALID", data_format="NCHW")
    assert_close(y.transpose(TO_NHWC), expected, np.float64, hwio[:, :, :, 0].size)


ENTRY_POINTS = {
    "conv2d": lambda **k: ctf.conv2d(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 2)), 1, "SAME",
                                     **k),
    "conv2d_backprop_input": lambda **k: ctf.conv2d_backprop_input(
        (1, 4, 4, 2), np.ones((3, 3, 2, 2)), np.ones((1, 4, 4, 2)), 1, "SAME", **k),
    "conv2d_backprop_filter": lambda **k: ctf.conv2d_backprop_filter(
        np.ones((1, 4, 4, 2)), (3, 3, 2, 2), np.ones((1, 4, 4, 2)), 1, "SAME", **k),
    "conv2d_transpose": lambda **k: ctf.conv2d_transpose(
        np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 2)), (1, 4, 4, 2), 1, **k),
    "depthwise_conv2d": lambda **k: ctf.depthwise_conv2d(
        np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 1)), 1, "SAME", **k),
    "depthwise_conv2d_backprop_input": lambda **k: ctf.depthwise_conv2d_backprop_input(
        (1, 4, 4, 2), np.ones((3, 3, 2, 1)), np.ones((1, 4, 4, 2)), 1, "SAME", **k),
    "depthwise_conv2d_backprop_filter": lambda **k: ctf.depthwise_conv2d_backprop_filter(
        np.ones((1, 4, 4, 2)), (3, 3, 2, 1), np.ones((1, 4, 4, 2)), 1, "SAME", **k),
    "conv1d": lambda **k: ctf.conv1d(np.ones((1, 4, 2)), np.ones((3, 2, 2)), 1, "SAME", **k),
    "conv1d_transpose": lambda **k: ctf.conv1d_transpose(
        np.ones((1, 4, 2)), np.ones((3, 2, 2)), (1, 4, 2), 1, **k),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_threads_and_algorithm(name):
    call = ENTRY_POINTS[name]
    reference = call()
    for threads in (1, 2):  # bitwise the same for any thread count
        np.testing.assert_array_equal(call(num_threads=threads), reference)
    for algorithm in ("AUTO", "gemm"):  # each algorithm rounds its own way
        assert_close(call(algorithm=algorithm), reference, np.float64, 3 * 3 * 4)
    with pytest.raises(ValueError, match="algorithm"):
        call(algorithm="fft")
    with pytest.raises(ValueError, match="num_threads"):
        call(num_threads=0)


# ---------------------------------------------------------------------------------------------
# TensorFlow's empty-output rule: (padded - dilated kernel + stride) / stride, truncated.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_empty_output_is_valid_and_its_gradients_are_zero(data_format):
    # CVE-2022-35999's case: input 1 wide, kernel 3 wide, stride 2, VALID: (1 - 3 + 2) / 2 = 0.
    sizes, filt = [3, 1, 1, 2], np.ones((1, 3, 2, 3), np.float32)
    strides, dy = [1, 1, 2, 1], np.zeros((3, 1, 0, 3), np.float32)
    x = np.ones(sizes, np.float32)
    if data_format == "NCHW":
        sizes, strides = [3, 2, 1, 1], [1, 1, 1, 2]
        dy, x = dy.transpose(TO_NCHW), x.transpose(TO_NCHW)
    dx = ctf.conv2d_backprop_input(sizes, filt, dy, strides, "VALID", data_format=data_format)
    assert dx.shape == tuple(sizes)
    np.testing.assert_array_equal(dx, np.zeros(sizes))
    y = ctf.conv2d(x, filt, strides, "VALID", data_format=data_format)
    assert y.shape == dy.shape
    dw = ctf.conv2d_backprop_filter(x, filt.shape, dy, strides, "VALID",
                                    data_format=data_format)
    np.testing.assert_array_equal(dw, np.zeros(filt.shape))
    out = np.full(filt.shape, 7.0, np.float32)
    ctf.conv2d_backprop_filter(x, filt.shape, dy, strides, "VALID", data_format=data_format,
                               out=out)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("in_w, k, stride, dilation, out_w", [
    (2, 3, 1, 1, 0),    # (2 - 3 + 1) / 1 = 0
    (1, 4, 3, 1, 0),    # (1 - 4 + 3) / 3 = 0
    (1, 2, 2, 2, 0),    # dilated kernel 3: (1 - 3 + 2) / 2 = 0
    (3, 3, 5, 1, 1),
])
def test_truncated_output_size(in_w, k, stride, dilation, out_w):
    x = np.ones((1, 1, in_w, 1))
    y = ctf.conv2d(x, np.ones((1, k, 1, 2)), (1, stride), "VALID", dilations=(1, dilation))
    assert y.shape == (1, 1, out_w, 2)
    assert_close(y, direct_conv2d(x, np.ones((1, k, 1, 2)), (1, out_w), (1, stride),
                                  (1, dilation)), np.float64, k)


@pytest.mark.parametrize("in_w, k, stride, pads", [
    (1, 3, 1, (0, 0)),  # (1 - 3 + 1) / 1 = -1
    (1, 5, 2, (0, 0)),  # (1 - 5 + 2) / 2 = -1
    (1, 4, 1, (1, 0)),  # explicit: (2 - 4 + 1) / 1 = -1
])
def test_overhang_of_a_stride_is_an_error(in_w, k, stride, pads):
    with pytest.raises(ValueError, match="filter"):
        ctf.conv2d(np.ones((1, 1, in_w, 1)), np.ones((1, k, 1, 1)), (1, stride),
                   ((0, 0), pads))


# ---------------------------------------------------------------------------------------------
# 1-D

CASES_1D = [  # (N, W, C, F, K, stride, dilation, padding)
    (2, 11, 3, 4, 3, 1, 1, "SAME"),
    (1, 12, 4, 2, 4, 3, 1, "VALID"),
    (2, 9, 2, 3, 2, 2, 3, "SAME"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
@pytest.mark.parametrize("case", CASES_1D)
def test_conv1d_and_transpose(case, data_format, dtype):
    n, w, c, f, k, stride, dilation, padding = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, w, c)).astype(dtype)
    filters = rng.standard_normal((k, c, f)).astype(dtype)
    (pads,) = [p for p in pads_of(padding, (1, w), (1, k), (1, stride), (1, dilation))[1:]]
    (ow,) = out_size((w,), (k,), (stride,), (dilation,), (pads,))
    geo = dict(strides=(1, stride), dilations=(1, dilation), pads=((0, 0), pads))
    expected = direct_conv2d(x[:, None], filters[None], (1, ow), **geo)[:, 0]
    as_fmt = (lambda a: np.ascontiguousarray(a.transpose(0, 2, 1))) if data_format == "NCW" \
        else (lambda a: a)
    y = ctf.conv1d(as_fmt(x), filters, stride, padding, data_format, dilation)
    assert_close(as_fmt(y) if data_format == "NCW" else y, expected, dtype, k * c)
    three = [1, stride, 1] if data_format == "NWC" else [1, 1, stride]  # 1 at N and C
    y3 = ctf.conv1d(as_fmt(x), filters, three, padding, data_format, [dilation])
    np.testing.assert_array_equal(y3, y)

    dy = rng.standard_normal((n, ow, f)).astype(dtype)
    expected = direct_backprop_input(dy[:, None], filters[None], (1, w), **geo)[:, 0]
    shape = (n, w, c) if data_format == "NWC" else (n, c, w)
    out = np.full(shape, 7.0, dtype)
    dx = ctf.conv1d_transpose(as_fmt(dy), filters, shape, stride, padding, data_format,
                              dilation, out=out)
    assert dx is out
    assert_close(dx.transpose(0, 2, 1) if data_format == "NCW" else dx, expected, dtype, k * f)


def test_conv1d_result_is_a_view_of_the_2d_result():
    # One 2-D path with a height-1 view: the 1-D result is that 4-D array without its H axis.
    y = ctf.conv1d(np.ones((2, 6, 3)), np.ones((3, 3, 4)), 1, "SAME")
    assert y.shape == (2, 6, 4) and y.base is not None and y.base.ndim == 4


# ---------------------------------------------------------------------------------------------
# Errors: one per malformed argument of every new entry point (type, and the argument's name).

X = np.ones((1, 5, 5, 2), np.float32)
F = np.ones((3, 3, 2, 4), np.float32)
DY = np.ones((1, 5, 5, 4), np.float32)
DWF = np.ones((3, 3, 2, 2), np.float32)  # depthwise (KH, KW, C, multiplier)
X1, F1 = np.ones((1, 5, 2), np.float32), np.ones((3, 2, 4), np.float32)
XB = np.ones((1, 5, 5, 4), np.float32)


def _call(fn, *args, **kwargs):
    return lambda: fn(*args, **kwargs)


ERRORS = [
    # conv2d
    ("conv2d-input-3d", _call(ctf.conv2d, X[0], F, 1, "SAME"), ValueError, "input"),
    ("conv2d-input-int", _call(ctf.conv2d, X.astype(int), F, 1, "SAME"), TypeError, "input"),
    ("conv2d-input-dtype", _call(ctf.conv2d, X.astype(np.float64), F, 1, "SAME"), TypeError,
     "dtype"),
    ("conv2d-filter-3d", _call(ctf.conv2d, X, F[0], 1, "SAME"), ValueError, "filter"),
    ("conv2d-filter-depth", _call(ctf.conv2d, X, F[:, :, :1].repeat(3, 2), 1, "SAME"),
     ValueError, "filter"),
    ("conv2d-filter-empty", _call(ctf.conv2d, X, F[:0], 1, "SAME"), ValueError, "filter"),
    ("conv2d-strides", _call(ctf.conv2d, X, F, [1, 1, 1], "SAME"), ValueError, "strides"),
    ("conv2d-strides-N", _call(ctf.conv2d, X, F, [2, 1, 1, 1], "SAME"), ValueError, "strides"),
    ("conv2d-strides-float", _call(ctf.conv2d, X, F, 1.0, "SAME"), TypeError, "strides"),
    ("conv2d-padding", _call(ctf.conv2d, X, F, 1, "FULL"), ValueError, "padding"),
    ("conv2d-padding-none", _call(ctf.conv2d, X, F, 1, None), TypeError, "padding"),
    ("conv2d-explicit", _call(ctf.conv2d, X, F, 1, "EXPLICIT"), ValueError,
     "explicit_paddings"),
    ("conv2d-explicit-len", _call(ctf.conv2d, X, F, 1, "EXPLICIT", explicit_paddings=[1] * 4),
     ValueError, "explicit_paddings"),
    ("conv2d-data_format", _call(ctf.conv2d, X, F, 1, "SAME", data_format="NWC"), ValueError,
     "data_format"),
    ("conv2d-dilations", _call(ctf.conv2d, X, F, 1, "SAME", dilations=0), ValueError,
     "dilations"),
    ("conv2d-kernel-too-large", _call(ctf.conv2d, X, F, 1, "VALID", dilations=3), ValueError,
     "filter"),
    ("conv2d-out-shape", _call(ctf.conv2d, X, F, 1, "SAME", out=np.empty((1, 5, 5, 2),
                                                                          np.float32)),
     ValueError, "out"),
    ("conv2d-out-dtype", _call(ctf.conv2d, X, F, 1, "SAME", out=np.empty((1, 5, 5, 4))),
     TypeError, "out"),
    ("conv2d-out-overlap", _call(ctf.conv2d, XB[..., :2], F[..., :2], 1, "SAME",
                                 out=XB[..., 1:3]), ValueError, "out overlaps input"),
    ("conv2d-num_threads", _call(ctf.conv2d, X, F, 1, "SAME", num_threads=-1), ValueError,
     "num_threads"),
    ("conv2d-algorithm", _call(ctf.conv2d, X, F, 1, "SAME", algorithm=3), ValueError,
     "algorithm"),
    # conv2d_backprop_filter
    ("bf-filter_sizes-len", _call(ctf.conv2d_backprop_filter, X, (3, 3, 2), DY, 1, "SAME"),
     ValueError, "filter_sizes"),
    ("bf-filter_sizes-float", _call(ctf.conv2d_backprop_filter, X, (3, 3, 2, 4.0), DY, 1,
                                    "SAME"), TypeError, "filter_sizes"),
    ("bf-filter_sizes-neg", _call(ctf.conv2d_backprop_filter, X, (3, -3, 2, 4), DY, 1,
                                  "SAME"), ValueError, "filter_sizes"),
    ("bf-filter_sizes-0d", _call(ctf.conv2d_backprop_filter, X, np.array(3), DY, 1, "SAME"),
     ValueError, "filter_sizes"),
    ("bf-filter_sizes-depth", _call(ctf.conv2d_backprop_filter, X, (3, 3, 3, 4), DY, 1,
                                    "SAME"), ValueError, "filter_sizes"),
    ("bf-filter_sizes-empty-kernel", _call(ctf.conv2d_backprop_filter, X, (0, 3, 2, 4), DY, 1,
                                           "SAME"), ValueError, "filter_sizes"),
    ("bf-input-3d", _call(ctf.conv2d_backprop_filter, X[0], F.shape, DY, 1, "SAME"),
     ValueError, "input"),
    ("bf-out_backprop-3d", _call(ctf.conv2d_backprop_filter, X, F.shape, DY[0], 1, "SAME"),
     ValueError, "out_backprop"),
    ("bf-out_backprop-size", _call(ctf.conv2d_backprop_filter, X, F.shape, DY[:, 1:], 1,
                                   "SAME"), ValueError, "Size of out_backprop"),
    ("bf-out_backprop-depth", _call(ctf.conv2d_backprop_filter, X, F.shape, DY[..., 1:], 1,
                                    "SAME"), ValueError, "out_backprop"),
    ("bf-dtype", _call(ctf.conv2d_backprop_filter, X, F.shape, DY.astype(np.float16), 1,
                       "SAME"), TypeError, "dtype"),
    ("bf-out-shape", _call(ctf.conv2d_backprop_filter, X, F.shape, DY, 1, "SAME",
                           out=np.empty((3, 3, 4, 2), np.float32)), ValueError, "out"),
    ("bf-out-overlap", _call(ctf.conv2d_backprop_filter, X, X.shape[1:3] + (1, 2), X, 1,
                             "SAME", out=X[0].reshape(5, 5, 1, 2)), ValueError, "out overlaps"),
    ("bf-algorithm", _call(ctf.conv2d_backprop_filter, X, F.shape, DY, 1, "SAME",
                           algorithm="fft"), ValueError, "algorithm"),
    # conv2d_transpose
    ("ct-output_shape-len", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5), 1), ValueError,
     "output_shape"),
    ("ct-output_shape-float", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5.0, 2), 1),
     TypeError, "output_shape"),
    ("ct-output_shape-wrong", _call(ctf.conv2d_transpose, DY, F, (1, 6, 5, 2), 1), ValueError,
     "Size of input doesn't match computed"),
    ("ct-output_shape-depth", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 3), 1), ValueError,
     "filters"),
    ("ct-filters-3d", _call(ctf.conv2d_transpose, DY, F[0], (1, 5, 5, 2), 1), ValueError,
     "filters"),
    ("ct-input-3d", _call(ctf.conv2d_transpose, DY[0], F, (1, 5, 5, 2), 1), ValueError,
     "input"),
    ("ct-input-depth", _call(ctf.conv2d_transpose, DY[..., :3], F, (1, 5, 5, 2), 1),
     ValueError, "input"),
    ("ct-strides-len3", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), [1, 1, 1]),
     ValueError, "strides"),
    ("ct-padding", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), 1, "same!"), ValueError,
     "padding"),
    ("ct-padding-explicit", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), 1, "EXPLICIT"),
     ValueError, "padding"),
    ("ct-data_format", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), 1, "SAME", "CHWN"),
     ValueError, "data_format"),
    ("ct-dilations", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), 1, "SAME", "NHWC",
                           -1), ValueError, "dilations"),
    ("ct-out", _call(ctf.conv2d_transpose, DY, F, (1, 5, 5, 2), 1, out=np.empty(3)),
     ValueError, "out"),
    # depthwise
    ("dw-filter-depth", _call(ctf.depthwise_conv2d, X, DWF[:, :, :1], 1, "SAME"), ValueError,
     "filter"),
    ("dw-filter-3d", _call(ctf.depthwise_conv2d, X, DWF[0], 1, "SAME"), ValueError, "filter"),
    ("dw-input-3d", _call(ctf.depthwise_conv2d, X[0], DWF, 1, "SAME"), ValueError, "input"),
    ("dw-strides", _call(ctf.depthwise_conv2d, X, DWF, [1, 2, 2, 2], "SAME"), ValueError,
     "strides"),
    ("dw-padding", _call(ctf.depthwise_conv2d, X, DWF, 1, 3), TypeError, "padding"),
    ("dw-data_format", _call(ctf.depthwise_conv2d, X, DWF, 1, "SAME", "NCWH"), ValueError,
     "data_format"),
    ("dw-algorithm", _call(ctf.depthwise_conv2d, X, DWF, 1, "SAME", algorithm=""),
     ValueError, "algorithm"),
    ("dwbf-filter_sizes-depth", _call(ctf.depthwise_conv2d_backprop_filter, X, (3, 3, 1, 2),
                                      DY, 1, "SAME"), ValueError, "filter_sizes"),
    ("dwbf-filter_sizes-len", _call(ctf.depthwise_conv2d_backprop_filter, X, (3, 3, 2),
                                    DY, 1, "SAME"), ValueError, "filter_sizes"),
    ("dwbf-out_backprop-depth", _call(ctf.depthwise_conv2d_backprop_filter, X, (3, 3, 2, 2),
                                      DY[..., :3], 1, "SAME"), ValueError, "out_backprop"),
    ("dwbf-out", _call(ctf.depthwise_conv2d_backprop_filter, X, (3, 3, 2, 2), DY, 1, "SAME",
                       out=np.empty((3, 3, 2, 2))), TypeError, "out"),
    # conv1d
    ("c1-input-4d", _call(ctf.conv1d, X, F1, 1, "SAME"), ValueError, "input"),
    ("c1-input-list", _call(ctf.conv1d, [["a"]], F1, 1, "SAME"), TypeError, "input"),
    ("c1-filters-2d", _call(ctf.conv1d, X1, F1[0], 1, "SAME"), ValueError, "filters"),
    ("c1-filters-depth", _call(ctf.conv1d, X1, F1[:, :1].repeat(3, 1), 1, "SAME"), ValueError,
     "filters"),
    ("c1-stride-len2", _call(ctf.conv1d, X1, F1, [1, 1], "SAME"), ValueError, "stride"),
    ("c1-stride-N", _call(ctf.conv1d, X1, F1, [2, 1, 1], "SAME"), ValueError, "stride"),
    ("c1-stride-zero", _call(ctf.conv1d, X1, F1, 0, "SAME"), ValueError, "stride"),
    ("c1-padding", _call(ctf.conv1d, X1, F1, 1, "EXPLICIT"), ValueError, "padding"),
    ("c1-padding-pairs", _call(ctf.conv1d, X1, F1, 1, [[1, 1]]), ValueError, "padding"),
    ("c1-data_format", _call(ctf.conv1d, X1, F1, 1, "SAME", "NHWC"), ValueError,
     "data_format"),
    ("c1-dilations", _call(ctf.conv1d, X1, F1, 1, "SAME", "NWC", [1, 2, 2]), ValueError,
     "dilations"),
    ("c1-out-ndim", _call(ctf.conv1d, X1, F1, 1, "SAME", out=np.empty((1, 1, 5, 4),
                                                                        np.float32)),
     ValueError, "out"),
    ("c1-out-type", _call(ctf.conv1d, X1, F1, 1, "SAME", out=[0.0]), TypeError, "out"),
    ("c1-out-shape", _call(ctf.conv1d, X1, F1, 1, "SAME", out=np.empty((1, 5, 3),
                                                                        np.float32)),
     ValueError, "out"),
    # conv1d_transpose
    ("c1t-output_shape-len", _call(ctf.conv1d_transpose, X1[..., :1].repeat(4, 2), F1,
                                   (1, 1, 5, 2), 1), ValueError, "output_shape"),
    ("c1t-output_shape-wrong", _call(ctf.conv1d_transpose, X1[..., :1].repeat(4, 2), F1,
                                     (1, 7, 2), 1), ValueError, "input"),
    ("c1t-input-2d", _call(ctf.conv1d_transpose, X1[0], F1, (1, 5, 2), 1), ValueError,
     "input"),
    ("c1t-strides", _call(ctf.conv1d_transpose, X1[..., :1].repeat(4, 2), F1, (1, 5, 2),
                          (1, 1)), ValueError, "strides"),
    ("c1t-padding", _call(ctf.conv1d_transpose, X1[..., :1].repeat(4, 2), F1, (1, 5, 2), 1,
                          "FULL"), ValueError, "padding"),
    ("c1t-algorithm", _call(ctf.conv1d_transpose, X1[..., :1].repeat(4, 2), F1, (1, 5, 2), 1,
                            algorithm="winograd!"), ValueError, "algorithm"),
]


@pytest.mark.parametrize("call, error, match", [c[1:] for c in ERRORS],
                         ids=[c[0] for c in ERRORS])
def test_malformed_call_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_top_level_names():
    # Today's names keep working; the families are modules; nothing new at the top level.
    assert convbp.conv2d_backprop_input is ctf.conv2d_backprop_input
    assert convbp.depthwise_conv2d_backprop_input is ctf.depthwise_conv2d_backprop_input
    assert convbp.conv2d_input is convbp.torch.conv2d_input
    assert convbp.conv_transpose2d is convbp.torch.conv_transpose2d
    assert convbp.tf.conv2d is not convbp.torch.conv2d
    assert not hasattr(convbp, "conv2d") and not hasattr(convbp, "conv1d")
