"""convbp.depthwise_conv2d_backprop_input against the direct loop (grouped, groups = C), PyTorch
and the grouped convbp.conv2d_backprop_input."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import convbp
from oracle import (assert_close, direct_backprop_input, out_size, tf_same_pads, torch,
                    torch_backprop_input)

dwbi = convbp.depthwise_conv2d_backprop_input
DTYPES = [np.float32, np.float64]


def _case(rng, n, h, w, c, mult, kernel, strides=(1, 1), dilations=(1, 1), padding="SAME",
          dtype=np.float64):
    """Random operands (NHWC) and the float64 reference for one depthwise geometry."""
    kh, kw = kernel
    if padding == "SAME":
        pads = tf_same_pads((h, w), kernel, strides, dilations)
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        pads = padding
    oh, ow = out_size((h, w), kernel, strides, dilations, pads)
    filt = rng.standard_normal((kh, kw, c, mult)).astype(dtype)
    dy = rng.standard_normal((n, oh, ow, c * mult)).astype(dtype)
    expected = direct_backprop_input(dy, filt.reshape(kh, kw, 1, c * mult), (h, w), strides,
                                     dilations, pads, groups=c)
    return filt, dy, pads, expected


def _run(filt, dy, sizes_nhwc, strides, padding, data_format, **kwargs):
    """Call in data_format with NHWC-ordered operands; return the result in NHWC order."""
    if isinstance(padding, tuple):
        (t, b), (l, r) = padding
        kwargs["explicit_paddings"] = ([0, 0, t, b, l, r, 0, 0] if data_format == "NHWC"
                                       else [0, 0, 0, 0, t, b, l, r])
        padding = "EXPLICIT"
    if data_format == "NHWC":
        return dwbi(sizes_nhwc, filt, dy, strides, padding, **kwargs)
    n, h, w, c = sizes_nhwc
    dx = dwbi((n, c, h, w), filt, dy.transpose(0, 3, 1, 2), strides, padding,
              data_format="NCHW", **kwargs)
    return dx.transpose(0, 2, 3, 1)


# ---------------------------------------------------------------------------------------------
# Against the direct loop.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mult", [1, 3])
def test_matches_direct_loop(data_format, dtype, mult):
    rng = np.random.default_rng(0)
    n, h, w, c, k, s = 2, 23, 37, 5, 3, 2
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (s, s), dtype=dtype)
    dx = _run(filt, dy, (n, h, w, c), s, "SAME", data_format)
    assert dx.dtype == dtype
    assert_close(dx, expected, dtype, mult * k * k)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dilation_2_is_not_computed_as_dilation_1(data_format, dtype):
    # TensorFlow 2.21's CPU DepthwiseConv2dNativeBackpropInput ignores dilations and returns the
    # dilation-1 answer.  With SAME padding and stride 1 both answers have the same shape, so a
    # kernel with that bug passes every shape check: the values must be the dilated ones.
    rng = np.random.default_rng(1)
    n, h, w, c, mult, k = 2, 30, 40, 8, 2, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), dilations=(2, 2), dtype=dtype)
    undilated = direct_backprop_input(dy, filt.reshape(k, k, 1, c * mult), (h, w),
                                      pads=tf_same_pads((h, w), (k, k), (1, 1), (1, 1)),
                                      groups=c)
    dx = _run(filt, dy, (n, h, w, c), 1, "SAME", data_format, dilations=2)
    assert_close(dx, expected, dtype, mult * k * k)
    assert np.abs(dx - undilated).max() > 0.5 * np.abs(undilated).max()


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_wide_image_many_channels(data_format):
    # Long rows and many channels: the vectorized runs, their remainders and the row edges.
    rng = np.random.default_rng(2)
    n, h, w, c, mult, k = 1, 9, 75, 70, 1, 5
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), dtype=np.float32)
    dx = _run(filt, dy, (n, h, w, c), 1, "SAME", data_format)
    assert_close(dx, expected, np.float32, mult * k * k)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_float16_accumulates_in_float32(data_format):
    rng = np.random.default_rng(3)
    n, h, w, c, mult, k = 2, 12, 17, 6, 2, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (2, 1), dtype=np.float16)
    dx = _run(filt, dy, (n, h, w, c), (2, 1), "SAME", data_format)
    assert dx.dtype == np.float16
    assert_close(dx, expected, np.float16, mult * k * k)


def test_matches_grouped_conv2d_backprop_input():
    # The depthwise filter (KH, KW, C, M) is the grouped HWIO filter (KH, KW, 1, C*M).
    rng = np.random.default_rng(4)
    n, h, w, c, mult, k = 2, 11, 13, 4, 3, 3
    filt, dy, _, _ = _case(rng, n, h, w, c, mult, (k, k), (2, 2), (1, 2))
    expected = convbp.conv2d_backprop_input((n, h, w, c), filt.reshape(k, k, 1, c * mult), dy,
                                            2, "SAME", dilations=(1, 2))
    dx = dwbi((n, h, w, c), filt, dy, 2, "SAME", dilations=(1, 2))
    assert_close(dx, expected, np.float64, mult * k * k)


# ---------------------------------------------------------------------------------------------
# Against PyTorch.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strides,dilations", [((1, 1), (2, 2)), ((2, 3), (1, 2)),
                                               ((3, 1), (3, 1))])
def test_matches_pytorch_grouped_conv(data_format, dtype, strides, dilations):
    if torch is None:
        pytest.skip("torch is not installed")
    rng = np.random.default_rng(5)
    n, h, w, c, mult, k = 2, 19, 22, 6, 2, 3
    pads = ((2, 1), (0, 3))
    filt, dy, _, _ = _case(rng, n, h, w, c, mult, (k, k), strides, dilations, pads, dtype)
    expected = torch_backprop_input(dy, filt.reshape(k, k, 1, c * mult), (h, w), strides,
                                    dilations, pads, groups=c)
    dx = _run(filt, dy, (n, h, w, c), strides, pads, data_format, dilations=dilations)
    assert_close(dx, expected, dtype, mult * k * k)


# ---------------------------------------------------------------------------------------------
# Geometry, property-based.

@settings(max_examples=50)
@given(data=st.data())
def test_geometry_property(data):
    draw = data.draw
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    mode = draw(st.sampled_from(["VALID", "SAME", "EXPLICIT"]))
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if mode == "EXPLICIT":
        padding = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(2))
    else:
        padding = mode
    low = [max(1, r - (sum(padding[i]) if mode == "EXPLICIT" else 0 if mode == "VALID"
                       else r)) for i, r in enumerate(reach)]
    h = draw(st.integers(low[0], low[0] + 12))
    w = draw(st.integers(low[1], low[1] + 24))
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 4))
    mult = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    data_format = draw(st.sampled_from(["NHWC", "NCHW"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, kernel, strides, dilations, padding,
                                  dtype)
    dx = _run(filt, dy, (n, h, w, c), strides, padding, data_format, dilations=dilations)
    assert dx.shape == (n, h, w, c)
    assert_close(dx, expected, dtype, mult * kernel[0] * kernel[1])


# ---------------------------------------------------------------------------------------------
# Strides in and out, threads.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_strided_negative_and_readonly_inputs(data_format):
    rng = np.random.default_rng(6)
    n, h, w, c, mult, k = 2, 10, 14, 3, 2, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (1, 2))
    # out_backprop: every other element of a bigger array, reversed along W (negative stride),
    # read-only; filter: Fortran order, read-only.
    big = np.zeros((n, dy.shape[1], 2 * dy.shape[2], 2 * dy.shape[3]))
    big[:, :, ::2, ::2] = dy[:, :, ::-1, :]
    dy_view = big[:, :, ::2, ::2][:, :, ::-1, :]
    dy_view.flags.writeable = False
    filt_f = np.asfortranarray(filt)
    filt_f.flags.writeable = False
    dx = _run(filt_f, dy_view, (n, h, w, c), (1, 2), "SAME", data_format)
    assert_close(dx, expected, np.float64, mult * k * k)


@pytest.mark.parametrize("mult", [1, 2])
@pytest.mark.parametrize("memory", ["NHWC", "NCHW"])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_out_into_a_strided_view(memory, data_format, mult):
    # out: a strided view of a bigger array in either memory order; nothing outside is touched.
    rng = np.random.default_rng(7)
    n, h, w, c, k = 2, 9, 12, 4, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (2, 1), (1, 2))
    if memory == "NHWC":
        big = np.full((n, 2 * h, w + 3, 3 * c), np.nan)
        index = (slice(None), slice(None, None, 2), slice(1, w + 1), slice(None, None, 3))
        view_nhwc = big[index]
    else:
        big = np.full((n, 3 * c, 2 * h, w + 3), np.nan)
        index = (slice(None), slice(None, None, 3), slice(None, None, 2), slice(1, w + 1))
        view_nhwc = big[index].transpose(0, 2, 3, 1)
    out = view_nhwc if data_format == "NHWC" else view_nhwc.transpose(0, 3, 1, 2)
    before = big.copy()
    result = _run(filt, dy, (n, h, w, c), (2, 1), "SAME", data_format, dilations=(1, 2),
                  out=out)
    assert np.shares_memory(result, big)
    assert_close(view_nhwc, expected, np.float64, mult * k * k)
    outside = np.ones(big.shape, bool)
    outside[index] = False
    np.testing.assert_array_equal(big[outside], before[outside])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_out_with_negative_strides(data_format):
    rng = np.random.default_rng(10)
    n, h, w, c, mult, k = 2, 7, 20, 3, 1, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k))
    shape = (n, h, w, c) if data_format == "NHWC" else (n, c, h, w)
    out = np.zeros(shape)[:, ::-1, :, ::-1]
    result = _run(filt, dy, (n, h, w, c), 1, "SAME", data_format, out=out)
    assert np.shares_memory(result, out)
    assert_close(result, expected, np.float64, mult * k * k)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_bitwise_equal(data_format, dtype):
    rng = np.random.default_rng(8)
    n, h, w, c, mult, k = 3, 21, 40, 19, 2, 3
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (1, 2), (2, 1), dtype=dtype)
    one = _run(filt, dy, (n, h, w, c), (1, 2), "SAME", data_format, dilations=(2, 1),
               num_threads=1)
    two = _run(filt, dy, (n, h, w, c), (1, 2), "SAME", data_format, dilations=(2, 1),
               num_threads=2)
    assert_close(one, expected, dtype, mult * k * k)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 13, 17, 24, 37])
def test_every_vector_block_length(data_format, dtype, size):
    # The sums run in blocks of 64, 32 and 16 bytes with an overlapping last block, then single
    # elements: along channels (NHWC, size = C*multiplier) or along a row's stride phase (NCHW,
    # size = W).  Every length from below the narrowest block to past the widest, strides 1
    # and 2 (phases of different lengths), edges and interior; along channels, odd and even runs
    # of pixels (summed in pairs when there are 2 or 3 blocks).
    rng = np.random.default_rng(size)
    c, mult, w = (size, 1, 7) if data_format == "NHWC" else (2, 1, size)
    for strides in ((1, 1), (2, 2), (1, 3)):
        filt, dy, _, expected = _case(rng, 2, 7, w, c, mult, (3, 3), strides, dtype=dtype)
        dx = _run(filt, dy, (2, 7, w, c), strides, "SAME", data_format)
        assert_close(dx, expected, dtype, mult * 9)
        dx1 = _run(filt, dy, (2, 7, w, c), strides, "SAME", data_format, num_threads=1)
        assert np.array_equal(dx, dx1)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_runs_of_rows_and_columns_with_gaps(data_format):
    # Rows (NCHW) and columns (NHWC) whose taps repeat shifted by one output row (column) share
    # one tap list; dilation 3, stride 2 and explicit uneven padding break those runs in the
    # middle of the image as well as at its borders.
    rng = np.random.default_rng(7)
    padding = ((4, 1), (0, 5))
    filt, dy, _, expected = _case(rng, 2, 19, 23, 3, 2, (3, 2), (2, 3), (3, 2), padding)
    dx = _run(filt, dy, (2, 19, 23, 3), (2, 3), padding, data_format, dilations=(3, 2))
    assert_close(dx, expected, np.float64, 2 * 6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, strides, dilations", [
    ((5, 5), (1, 1), (1, 1)), ((7, 5), (2, 2), (1, 1)), ((5, 7), (1, 3), (2, 1))])
def test_zero_padded_copy_of_out_backprop(monkeypatch, dtype, kernel, strides, dilations):
    # NCHW with a wide filter: each channel's out_backprop is copied into a zero-padded buffer
    # so every column is interior.  Same values as reading it in place (edges summed apart).
    from convbp import _engine
    rng = np.random.default_rng(11)
    n, h, w, c, mult = 2, 13, 17, 3, 2
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, kernel, strides, dilations,
                                  dtype=dtype)
    padded = _run(filt, dy, (n, h, w, c), strides, "SAME", "NCHW", dilations=dilations)
    assert_close(padded, expected, dtype, mult * kernel[0] * kernel[1])
    monkeypatch.setattr(_engine, "_MAX_PADDED_ELEMENTS", 0)
    in_place = _run(filt, dy, (n, h, w, c), strides, "SAME", "NCHW", dilations=dilations)
    np.testing.assert_array_equal(padded, in_place)


def test_infinite_filter_never_meets_padding_zeros():
    # 0 * inf is NaN: with a non-finite filter the zero-padded copy is not used, so a tap that
    # falls outside out_backprop contributes nothing, as in the direct loop.
    rng = np.random.default_rng(12)
    n, h, w, c, k = 1, 9, 11, 2, 5
    filt, dy, _, _ = _case(rng, n, h, w, c, 1, (k, k))
    filt[:, 0] = np.inf  # kw = 0 reads column iw + 2: outside for the last two columns
    with np.errstate(invalid="ignore"):  # inf - inf in the reference's sums
        expected = direct_backprop_input(dy, filt.reshape(k, k, 1, c), (h, w),
                                         pads=tf_same_pads((h, w), (k, k), (1, 1), (1, 1)),
                                         groups=c)
    dx = _run(filt, dy, (n, h, w, c), 1, "SAME", "NCHW")
    assert np.isfinite(expected[:, :, -2:]).all()
    np.testing.assert_array_equal(np.isfinite(dx), np.isfinite(expected))
    finite = np.isfinite(expected)
    assert_close(dx[finite], expected[finite], np.float64, k * k)


def test_two_int_input_sizes_and_4_int_strides():
    rng = np.random.default_rng(9)
    n, h, w, c, mult, k = 2, 8, 9, 3, 2, 2
    filt, dy, _, expected = _case(rng, n, h, w, c, mult, (k, k), (2, 3), padding="VALID")
    dx = dwbi((h, w), filt, dy, [1, 2, 3, 1], "VALID", dilations=[1, 1, 1, 1])
    assert_close(dx, expected, np.float64, mult * k * k)
    dx = dwbi((h, w), filt, dy.transpose(0, 3, 1, 2), [1, 1, 2, 3], "VALID",
              data_format="NCHW")
    assert_close(dx.transpose(0, 2, 3, 1), expected, np.float64, mult * k * k)


def test_empty_sizes():
    filt = np.ones((3, 3, 4, 0))
    dx = dwbi((2, 5, 5, 4), filt, np.ones((2, 5, 5, 0)), 1, "SAME")  # multiplier 0
    np.testing.assert_array_equal(dx, np.zeros((2, 5, 5, 4)))
    dx = dwbi((0, 5, 5, 4), np.ones((3, 3, 4, 2)), np.ones((0, 5, 5, 8)), 1, "SAME")
    assert dx.shape == (0, 5, 5, 4)


def test_lists_are_accepted():
    dx = dwbi([1, 2, 2, 1], [[[[1.0]]]], [[[[1.0], [2.0]], [[3.0], [4.0]]]], 1, "VALID")
    np.testing.assert_array_equal(dx, [[[[1.0], [2.0]], [[3.0], [4.0]]]])


# ---------------------------------------------------------------------------------------------
# Errors name the parameter.

def _ok():
    return dict(input_sizes=(2, 6, 6, 3), filter=np.ones((3, 3, 3, 2)),
                out_backprop=np.ones((2, 6, 6, 6)), strides=1, padding="SAME")


@pytest.mark.parametrize("change,exc,match", [
    (dict(filter=np.ones((3, 3, 4, 2))), ValueError, "filter"),
    (dict(filter=np.ones((3, 3, 3))), ValueError, "filter"),
    (dict(filter=np.ones((0, 3, 3, 2))), ValueError, "filter"),
    (dict(out_backprop=np.ones((2, 6, 6, 3))), ValueError, "out_backprop"),
    (dict(out_backprop=np.ones((2, 6, 6, 7))), ValueError, "out_backprop"),
    (dict(out_backprop=np.ones((2, 5, 6, 6))), ValueError, "out_backprop"),
    (dict(out_backprop=np.ones((6, 6, 6))), ValueError, "out_backprop"),
    (dict(out_backprop=np.ones((2, 6, 6, 6), np.float32)), TypeError, "out_backprop"),
    (dict(out_backprop=np.ones((2, 6, 6, 6), np.int64)), TypeError, "out_backprop"),
    (dict(input_sizes=(2, 6, 6)), ValueError, "input_sizes"),
    (dict(input_sizes=(2, 6, 6, -3)), ValueError, "input_sizes"),
    (dict(strides=0), ValueError, "strides"),
    (dict(strides=(1, 2, 1)), ValueError, "strides"),
    (dict(strides=[2, 1, 1, 1]), ValueError, "strides"),
    (dict(dilations=0), ValueError, "dilations"),
    (dict(dilations=1.5), TypeError, "dilations"),
    (dict(padding="FULL"), ValueError, "padding"),
    (dict(padding="EXPLICIT"), ValueError, "explicit_paddings"),
    (dict(padding="EXPLICIT", explicit_paddings=[0] * 6), ValueError, "explicit_paddings"),
    (dict(data_format="NWHC"), ValueError, "data_format"),
    (dict(num_threads=0), ValueError, "num_threads"),
    (dict(out=np.empty((2, 6, 6, 4))), ValueError, "out"),
    (dict(out=np.empty((2, 6, 6, 3), np.float32)), TypeError, "out"),
])
def test_errors_name_the_parameter(change, exc, match):
    kwargs = _ok()
    kwargs.update(change)
    args = [kwargs.pop(k) for k in ("input_sizes", "filter", "out_backprop", "strides",
                                    "padding")]
    with pytest.raises(exc, match=match):
        dwbi(*args, **kwargs)


def test_out_overlapping_an_input_is_refused():
    kwargs = _ok()
    dy = np.ones((2, 6, 6, 6))
    with pytest.raises(ValueError, match="out"):
        dwbi(kwargs["input_sizes"], kwargs["filter"], dy, 1, "SAME", out=dy[..., :3])


def test_kernel_larger_than_padded_input_is_refused():
    with pytest.raises(ValueError, match="filter"):
        dwbi((1, 4, 4, 2), np.ones((3, 3, 2, 1)), np.ones((1, 1, 1, 2)), 1, "VALID",
             dilations=2)
