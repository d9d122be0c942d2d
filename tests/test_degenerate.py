"""Valid but degenerate calls return the mathematically right array.

Empty batches, channels and images; NaN and inf; strides and dilations far larger than the
image; byte-swapped, unaligned and nested-list inputs.  Each result is checked against the
direct float64 loop (tests/oracle.py).
"""

import numpy as np
import pytest

import convbp
from oracle import assert_close, direct_backprop_input, out_size, tf_same_pads


def _run(sizes_nhwc, filt, dy_nhwc, strides, padding, data_format, **kwargs):
    """Call convbp in ``data_format`` with NHWC test data; return the NHWC result."""
    if data_format == "NHWC":
        return convbp.conv2d_backprop_input(sizes_nhwc, filt, dy_nhwc, strides, padding,
                                            **kwargs)
    n, h, w, c = sizes_nhwc
    dx = convbp.conv2d_backprop_input((n, c, h, w), filt, dy_nhwc.transpose(0, 3, 1, 2),
                                      strides, padding, data_format="NCHW", **kwargs)
    assert dx.shape == (n, c, h, w)
    return dx.transpose(0, 2, 3, 1)


def _same(in_hw, kernel_hw, strides, dilations=(1, 1)):
    pads = tf_same_pads(in_hw, kernel_hw, strides, dilations)
    return pads, tuple(-(-size // s) for size, s in zip(in_hw, strides))


FORMATS = pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


@FORMATS
@DTYPES
@pytest.mark.parametrize("sizes, kernel, padding", [
    ((0, 5, 5, 2), (3, 3, 2, 4), "SAME"),    # N = 0
    ((0, 5, 5, 2), (3, 3, 2, 4), "VALID"),
    ((2, 5, 5, 0), (3, 3, 0, 4), "SAME"),    # C_in = 0
    ((2, 0, 5, 2), (3, 3, 2, 4), "SAME"),    # H = 0: SAME output ceil(0 / s) = 0
    ((2, 5, 0, 2), (3, 3, 2, 4), "SAME"),    # W = 0
    ((2, 0, 0, 2), (1, 1, 2, 4), "VALID"),   # empty image, 1x1 kernel
    ((2, 0, 5, 2), (3, 3, 2, 4), "VALID"),   # empty image: empty output, as TensorFlow
    ((0, 0, 0, 0), (1, 1, 0, 0), "SAME"),
])
def test_empty_result(sizes, kernel, padding, data_format, dtype):
    n, h, w, c = sizes
    filt = np.ones(kernel, dtype)
    if padding == "SAME":
        oh, ow = -(-h // 1), -(-w // 1)
    else:
        oh, ow = (0 if h == 0 else h - kernel[0] + 1), (0 if w == 0 else w - kernel[1] + 1)
    dy = np.ones((n, oh, ow, kernel[3]), dtype)
    dx = _run(sizes, filt, dy, 1, padding, data_format)
    assert dx.shape == sizes and dx.size == 0 and dx.dtype == dtype


@FORMATS
@DTYPES
def test_cout_zero_gives_zeros(data_format, dtype):
    filt = np.ones((3, 3, 2, 0), dtype)
    dy = np.ones((2, 3, 3, 0), dtype)
    out = np.full((2, 6, 5, 2) if data_format == "NHWC" else (2, 2, 6, 5), np.nan, dtype)
    dx = _run((2, 6, 5, 2), filt, dy, 2, "SAME", data_format, out=out.copy())
    assert dx.shape == (2, 6, 5, 2) and np.array_equal(dx, np.zeros_like(dx))


@FORMATS
def test_two_int_input_sizes_with_empty_batch(data_format):
    filt = np.ones((3, 3, 2, 4), np.float32)
    dy = np.ones((0, 4, 4, 4), np.float32)
    if data_format == "NCHW":
        dy = dy.transpose(0, 3, 1, 2)
    dx = convbp.conv2d_backprop_input((4, 4), filt, dy, 1, "SAME", data_format=data_format)
    assert dx.shape == ((0, 4, 4, 2) if data_format == "NHWC" else (0, 2, 4, 4))


def _check_nonfinite(actual, expected, dtype, reduction):
    actual = np.asarray(actual, np.float64)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    assert np.array_equal(actual[~finite], expected[~finite], equal_nan=True)
    assert_close(np.where(finite, actual, 0), np.where(finite, expected, 0), dtype, reduction)


@FORMATS
@DTYPES
@pytest.mark.parametrize("where", ["dy-nan", "dy-inf", "filter-nan", "filter-inf",
                                   "dy-nan-in-padding-only"])
def test_nan_and_inf_propagate(where, data_format, dtype):
    rng = np.random.default_rng(7)
    n, h, w, c, f, k, s = 2, 7, 6, 3, 4, 3, 2
    filt = rng.standard_normal((k, k, c, f)).astype(dtype)
    pads, (oh, ow) = _same((h, w), (k, k), (s, s))
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    if where == "dy-nan":
        dy[1, 2, 1, 3] = np.nan
    elif where == "dy-inf":
        dy[0, 0, 2, 1] = np.inf
        dy[1, 3, 0, 0] = -np.inf
    elif where == "filter-nan":
        filt[1, 2, 0, 3] = np.nan
    elif where == "filter-inf":
        filt[0, 1, 2, 2] = np.inf
    else:
        # A NaN that only meets taps falling in the padding never reaches the result; with
        # strides 2 and a 1x1 kernel, odd input rows and columns receive nothing at all.
        filt = filt[:1, :1]
        dy = rng.standard_normal((n, 4, 3, f)).astype(dtype)
        dx = _run((n, h, w, c), filt, dy, s, "VALID", data_format)
        expected = direct_backprop_input(dy, filt, (h, w), (s, s))
        assert not np.isnan(dx).any()
        assert np.array_equal(dx[:, 1::2], np.zeros_like(dx[:, 1::2]))
        assert_close(dx, expected, dtype, f)
        return
    expected = direct_backprop_input(dy, filt, (h, w), (s, s), pads=pads)
    assert not np.isfinite(expected).all()
    dx = _run((n, h, w, c), filt, dy, s, "SAME", data_format)
    _check_nonfinite(dx, expected, dtype, f * k * k)


@FORMATS
@pytest.mark.parametrize("strides, dilations, kernel, in_hw", [
    ((2**30, 2**30), (1, 1), (3, 3), (5, 6)),
    ((2**31 - 1, 1), (1, 1), (3, 2), (4, 5)),
    ((1, 1), (2**30, 2**30), (3, 3), (5, 6)),
    ((1, 3), (2**31 - 1, 2), (2, 3), (4, 7)),
    ((2**31 - 1, 2**31 - 1), (2**31 - 1, 2**31 - 1), (3, 3), (5, 5)),
    ((7, 1), (5, 1), (4, 1), (3, 2)),
])
def test_huge_strides_and_dilations_with_same(strides, dilations, kernel, in_hw, data_format):
    # Only taps landing inside the image contribute; the padding is near 2**62 at worst.
    rng = np.random.default_rng(11)
    n, c, f = 2, 3, 2
    filt = rng.standard_normal(kernel + (c, f))
    pads, out_hw = _same(in_hw, kernel, strides, dilations)
    assert out_size(in_hw, kernel, strides, dilations, pads) == out_hw
    dy = rng.standard_normal((n,) + out_hw + (f,))
    dx = _run((n,) + in_hw + (c,), filt, dy, strides, "SAME", data_format,
              dilations=dilations)
    expected = direct_backprop_input(dy, filt, in_hw, strides, dilations, pads)
    assert_close(dx, expected, np.float64, f * kernel[0] * kernel[1])


@FORMATS
def test_huge_explicit_padding(data_format):
    # Padding of 2**31 - 1 on top: the first output rows read only padding.
    rng = np.random.default_rng(12)
    big = 2**31 - 1
    filt = rng.standard_normal((2, 2, 1, 1))
    pads = ((big, 0), (0, 0))
    out_hw = out_size((3, 4), (2, 2), (big, 1), (1, 1), pads)
    assert out_hw == (2, 3)
    dy = rng.standard_normal((1,) + out_hw + (1,))
    dx = _run((1, 3, 4, 1), filt, dy, (big, 1), pads, data_format)
    expected = direct_backprop_input(dy, filt, (3, 4), (big, 1), pads=pads)
    assert_close(dx, expected, np.float64, 4)


def _unaligned(arr):
    """A copy of ``arr`` at an odd byte offset of a bytes buffer (read-only, unaligned)."""
    raw = b"\0" + arr.tobytes()
    out = np.frombuffer(raw, arr.dtype, arr.size, offset=1).reshape(arr.shape)
    assert not out.flags.aligned
    return out


@FORMATS
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8", ">f8"])
@pytest.mark.parametrize("make", ["plain", "unaligned"])
def test_byte_order_and_alignment(make, dtype, data_format):
    rng = np.random.default_rng(5)
    filt64 = rng.standard_normal((3, 3, 2, 4))
    pads, out_hw = _same((6, 5), (3, 3), (2, 2))
    dy64 = rng.standard_normal((2,) + out_hw + (4,))
    filt, dy = filt64.astype(dtype), dy64.astype(dtype)
    if make == "unaligned":
        filt, dy = _unaligned(filt), _unaligned(dy)
    dx = _run((2, 6, 5, 2), filt, dy, 2, "SAME", data_format)
    native = np.dtype(dtype).newbyteorder("=")
    assert dx.dtype == native and dx.dtype.isnative
    expected = direct_backprop_input(dy.astype(np.float64), filt.astype(np.float64), (6, 5),
                                     (2, 2), pads=pads)
    assert_close(dx, expected, native, 4 * 9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nested_lists(dtype):
    rng = np.random.default_rng(6)
    filt = rng.standard_normal((2, 2, 1, 3)).astype(dtype)
    dy = rng.standard_normal((1, 3, 3, 3)).astype(dtype)
    expected = direct_backprop_input(dy, filt, (4, 4))
    # A list meeting an array takes the array's dtype; either operand may be the list.
    for f_arg, dy_arg in ((filt.tolist(), dy), (filt, dy.tolist())):
        dx = convbp.conv2d_backprop_input([1, 4, 4, 1], f_arg, dy_arg, [1, 1], "VALID")
        assert dx.dtype == dtype
        assert_close(dx, expected, dtype, 3 * 4)
    # Two lists: float64, like NumPy functions; integer lists become float64 too.
    dx = convbp.conv2d_backprop_input((1, 4, 4, 1), filt.tolist(), dy.tolist(), 1, "VALID")
    assert dx.dtype == np.float64
    assert_close(dx, direct_backprop_input(dy.astype(np.float64), filt.astype(np.float64),
                                           (4, 4)), np.float64, 12)
    filt_i = [[[[2, -1]]]]                                   # (1, 1, 1, 2)
    dy_i = [[[[1, 3], [5, 7]], [[0, 1], [2, 2]]]]            # (1, 2, 2, 2)
    dx = convbp.conv2d_backprop_input((1, 2, 2, 1), filt_i, dy_i, 1, "VALID")
    assert dx.dtype == np.float64
    assert np.array_equal(dx[0, :, :, 0], [[-1.0, 3.0], [-1.0, 2.0]])


@FORMATS
def test_tf_four_pair_padding(data_format):
    # tf.nn.conv2d's explicit padding: one (before, after) pair per dimension, data_format order.
    rng = np.random.default_rng(8)
    filt = rng.standard_normal((3, 2, 2, 3))
    pads = ((2, 0), (1, 3))
    out_hw = out_size((5, 4), (3, 2), (2, 1), (1, 1), pads)
    dy = rng.standard_normal((1,) + out_hw + (3,))
    pairs = [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]
    if data_format == "NCHW":
        pairs = [pairs[0], pairs[3], pairs[1], pairs[2]]
    dx = _run((1, 5, 4, 2), filt, dy, (2, 1), pairs, data_format)
    expected = direct_backprop_input(dy, filt, (5, 4), (2, 1), pads=pads)
    assert_close(dx, expected, np.float64, 18)


@FORMATS
def test_float16(data_format):
    rng = np.random.default_rng(9)
    filt = rng.standard_normal((3, 3, 2, 2)).astype(np.float16)
    dy = rng.standard_normal((1, 4, 4, 2)).astype(np.float16)
    pads, _ = _same((4, 4), (3, 3), (1, 1))
    dx = _run((1, 4, 4, 2), filt, dy, 1, "SAME", data_format)
    assert dx.dtype == np.float16
    expected = direct_backprop_input(dy, filt, (4, 4), pads=pads)
    assert_close(dx, expected, np.float16, 18)


@FORMATS
def test_out_with_negative_strides(data_format):
    rng = np.random.default_rng(10)
    filt = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    pads, _ = _same((5, 6), (3, 3), (2, 2))
    shape = (2, 5, 6, 2) if data_format == "NHWC" else (2, 2, 5, 6)
    big = np.full((shape[0], shape[1], 2 * shape[2], shape[3] + 2), 99.0, np.float32)
    out = big[::-1, ::-1, ::2, 1:-1]
    dx = _run((2, 5, 6, 2), filt, dy, 2, "SAME", data_format, out=out)
    assert np.shares_memory(dx, big)
    assert np.all(big[:, :, 1::2] == 99.0) and np.all(big[..., [0, -1]] == 99.0)
    expected = direct_backprop_input(dy, filt, (5, 6), (2, 2), pads=pads)
    assert_close(dx, expected, np.float32, 27)
