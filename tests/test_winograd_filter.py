"""The filter gradient by Winograd F(2x2, 3x3) and F(4x4, 3x3): against the float64 direct loop
with componentwise error bounds, every layout, view, group, dilation and thread count.

The filter gradient is a dot product over the N*OH*OW output pixels: ``|dw - exact| <= gamma_n *
(|x| corr |dy|)``; the tests allow ``2*gamma_n`` (the GEMM path's contract).  Winograd sums a
tile's products in the transformed domain, mixing the 3x3 taps of one filter, so on data with a
wide dynamic range (log-uniform magnitudes, sparse spikes) the bound is taken over the filter's
taps: the largest ``|x| corr |dy|`` among the 9 taps of the same (input, output) channel pair.
"""

import numpy as np
import pytest

import convbp
from convbp import _choose, _engine, _winograd
from oracle import assert_bounded, direct_backprop_filter, out_size, torch, torch_backprop_filter

pytestmark = pytest.mark.skipif(not _winograd.AVAILABLE, reason="built without Winograd")

TILES = (2, 4)
DTYPES = (np.float32, np.float64)
LAYOUTS = ("NHWC", "NCHW")



def case(rng, n, h, w, c, f, pad, dilation=1, groups=1, dtype=np.float32, data="normal"):
    """(x, dy, pads) for a 3x3 stride-1 layer; data "normal", "wide" or "sparse"."""
    pads = ((pad, pad), (pad, pad)) if np.isscalar(pad) else pad
    oh, ow = out_size((h, w), (3, 3), (1, 1), (dilation, dilation), pads)
    shape_x, shape_dy = (n, h, w, c), (n, oh, ow, f)
    if data == "normal":
        x, dy = rng.standard_normal(shape_x), rng.standard_normal(shape_dy)
    elif data == "wide":  # magnitudes log-uniform over 1e-3 .. 1e3, random signs
        x = 10.0 ** rng.uniform(-3, 3, shape_x) * rng.choice([-1, 1], shape_x)
        dy = 10.0 ** rng.uniform(-3, 3, shape_dy) * rng.choice([-1, 1], shape_dy)
    else:  # sparse: mostly zeros, a few spikes 1e4 times the rest
        x = rng.standard_normal(shape_x) * (rng.random(shape_x) < 0.1)
        spikes = rng.random(shape_x) < 0.005
        x[spikes] = 1e4 * rng.choice([-1, 1], spikes.sum())
        dy = rng.standard_normal(shape_dy)
    return x.astype(dtype), dy.astype(dtype), pads


def bounds(x, dy, pads, dilation, groups):
    """(exact dw, |x| corr |dy|) in float64."""
    dil = (dilation, dilation)
    exact = direct_backprop_filter(x, dy, (3, 3), (1, 1), dil, pads, groups)
    scale = direct_backprop_filter(np.abs(x), np.abs(dy), (3, 3), (1, 1), dil, pads, groups)
    return exact, scale



def assert_winograd_bounded(dw, exact, scale, n_red, dtype):
    """Winograd's contract: twice the bound of the filter's largest tap, and exact zeros for
    taps that only meet the padding."""
    taps_max = np.broadcast_to(scale.max(axis=(0, 1), keepdims=True), scale.shape)
    assert_bounded(dw, exact, 2 * taps_max, n_red, dtype)
    dead = (scale == 0).all(axis=(2, 3))
    assert np.all(np.asarray(dw)[dead] == 0)


def explicit(pads, layout):
    (top, bottom), (left, right) = pads
    if layout == "NHWC":
        return [0, 0, top, bottom, left, right, 0, 0]
    return [0, 0, 0, 0, top, bottom, left, right]


def to_layout(a, layout):
    return a if layout == "NHWC" else np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def run(layout, x, dy, pads, dilation=1, groups=1, algorithm="winograd", threads=None,
        out=None):
    """conv2d_backprop_filter in ``layout`` (the filter is HWIO in both)."""
    c, f = x.shape[3], dy.shape[3]
    return convbp.tf.conv2d_backprop_filter(
        to_layout(x, layout), (3, 3, c // groups, f), to_layout(dy, layout), 1, "EXPLICIT",
        explicit_paddings=explicit(pads, layout), data_format=layout, dilations=dilation,
        algorithm=algorithm, num_threads=threads, out=out)


def pixels(dy):
    return dy.shape[0] * dy.shape[1] * dy.shape[2]


# ---------------------------------------------------------------------------------------------
# Accuracy.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", ["auto", "gemm", "winograd"])
def test_normal_data_within_the_dot_product_bound(algorithm, layout, dtype):
    rng = np.random.default_rng(1)
    x, dy, pads = case(rng, 2, 17, 15, 24, 40, 1, dtype=dtype)
    exact, scale = bounds(x, dy, pads, 1, 1)
    dw = run(layout, x, dy, pads, algorithm=algorithm)
    assert_bounded(dw, exact, scale, pixels(dy), dtype)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("data", ["wide", "sparse"])
def test_wide_range_data_within_the_taps_bound(data, layout, dtype, tile):
    rng = np.random.default_rng(2)
    dilation = 1 if data == "wide" else 2
    x, dy, pads = case(rng, 2, 19, 18, 20, 24, dilation, dilation, dtype=dtype, data=data)
    exact, scale = bounds(x, dy, pads, dilation, 1)
    x_l = to_layout(x, layout)
    dy_l = to_layout(dy, layout)
    if layout == "NCHW":
        x_l, dy_l = x_l.transpose(0, 2, 3, 1), dy_l.transpose(0, 2, 3, 1)
    dw = np.empty((3, 3, 20, 24), dtype)
    _engine.winograd_filter_gradient(x_l, dy_l, dw, (dilation, dilation), (dilation, dilation),
                                     None, tile)
    assert_winograd_bounded(dw, exact, scale, pixels(dy), dtype)


AUTO_SIZES = [  # shapes "auto" sends to Winograd: the strict bound holds there
    (2, 28, 28, 64, 64),
    (4, 14, 14, 128, 96),
    (1, 40, 36, 32, 48),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", AUTO_SIZES)
def test_auto_winograd_within_the_dot_product_bound(size, dtype):
    n, h, w, c, f = size
    rng = np.random.default_rng(13)
    x, dy, pads = case(rng, n, h, w, c, f, 1, dtype=dtype)
    choice = convbp.choose_algorithm(x.shape, (3, 3, c, f), 1, "SAME", dtype=dtype,
                                     op="filter")
    assert choice.algorithm == "winograd", choice
    exact, scale = bounds(x, dy, pads, 1, 1)
    for layout in LAYOUTS:
        assert_bounded(run(layout, x, dy, pads, algorithm="auto"), exact, scale, pixels(dy),
                       dtype)


# ---------------------------------------------------------------------------------------------
# Geometry, layouts, views, threads, workspace.

GEOMETRIES = [
    # n, h, w, c, f, pad, dilation, groups
    (1, 1, 1, 3, 5, 1, 1, 1),
    (2, 9, 11, 5, 7, 1, 1, 1),
    (1, 13, 10, 17, 3, 0, 1, 1),
    (1, 13, 10, 17, 19, 2, 2, 1),
    (2, 12, 12, 8, 12, 1, 1, 2),
    (1, 7, 7, 33, 20, 3, 1, 1),         # padding beyond the filter's reach
    (3, 6, 5, 18, 18, ((0, 2), (2, 0)), 1, 3),
    (1, 16, 21, 16, 32, 4, 2, 2),
    (2, 11, 8, 40, 24, 3, 3, 1),
    (1, 6, 7, 260, 16, 1, 1, 1),
    (5, 3, 40, 9, 11, ((1, 0), (0, 1)), 1, 1),
]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_geometries_equal_the_direct_loop(geometry, layout, dtype, tile, monkeypatch):
    n, h, w, c, f, pad, dil, groups = geometry
    rng = np.random.default_rng(3)
    x, dy, pads = case(rng, n, h, w, c, f, pad, dil, groups, dtype=dtype)
    exact, scale = bounds(x, dy, pads, dil, groups)
    choice = _choose.Choice("winograd", tile, "test")
    monkeypatch.setattr(_engine, "_algorithm_choice", lambda *args: choice)
    dw = run(layout, x, dy, pads, dil, groups)
    assert_winograd_bounded(dw, exact, scale, pixels(dy), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_views_and_out(layout):
    """x and dy strided crops, the gradient written into a view of a larger array (nothing
    outside it touched)."""
    rng = np.random.default_rng(4)
    x_big = rng.standard_normal((3, 20, 24, 40)).astype(np.float32)
    dy_big = rng.standard_normal((3, 20, 24, 48)).astype(np.float32)
    x = x_big[::2, 2:18, 1:21, 1:31:2]      # (2, 16, 20, 15)
    dy = dy_big[::2, 1:17, 2:22, 3:45:2]    # (2, 16, 20, 21)
    pads = ((1, 1), (1, 1))
    exact, scale = bounds(x, dy, pads, 1, 1)
    big = np.full((5, 4, 40, 50), 7.0, np.float32)
    index = (slice(1, 4), slice(0, 3), slice(2, 32, 2), slice(5, 47, 2))
    if layout == "NHWC":
        res = convbp.tf.conv2d_backprop_filter(x, (3, 3, 15, 21), dy, 1, "SAME",
                                               out=big[index], algorithm="winograd")
    else:
        res = convbp.tf.conv2d_backprop_filter(x.transpose(0, 3, 1, 2), (3, 3, 15, 21),
                                               dy.transpose(0, 3, 1, 2), 1, "SAME",
                                               data_format="NCHW", out=big[index],
                                               algorithm="winograd")
    assert np.shares_memory(res, big)
    mask = np.ones(big.shape, bool)
    mask[index] = False
    assert np.all(big[mask] == 7.0)
    assert_bounded(res, exact, scale, pixels(dy), np.float32)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_front_weight_layout_against_pytorch_float64(layout):
    """convbp.torch.conv2d_weight (an OIHW gradient: no unit channel stride) against PyTorch."""
    rng = np.random.default_rng(7)
    x, dy, pads = case(rng, 2, 15, 17, 12, 20, 1, dilation=2, groups=2, dtype=np.float32)
    x_t, dy_t = x.transpose(0, 3, 1, 2), dy.transpose(0, 3, 1, 2)
    if layout == "NCHW":
        x_t, dy_t = np.ascontiguousarray(x_t), np.ascontiguousarray(dy_t)
    dw = convbp.torch.conv2d_weight(x_t, (20, 6, 3, 3), dy_t, 1, 1, 2, 2, algorithm="winograd")
    exact = torch_backprop_filter(x, dy, (3, 3), (1, 1), (2, 2), pads, 2)
    scale = torch_backprop_filter(np.abs(x), np.abs(dy), (3, 3), (1, 1), (2, 2), pads, 2)
    assert_bounded(dw.transpose(2, 3, 1, 0), exact, scale, pixels(dy), np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_bitwise_equal(layout, dtype):
    rng = np.random.default_rng(5)
    x, dy, pads = case(rng, 3, 30, 26, 48, 40, 1, dtype=dtype)
    a = run(layout, x, dy, pads, threads=1)
    b = run(layout, x, dy, pads, threads=2)
    c = run(layout, x, dy, pads, threads=2)
    assert np.array_equal(a, b) and np.array_equal(b, c)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [1, 40_000, 300_000])
def test_small_workspace_limit(layout, limit):
    """Output-channel blocks (the partial sums over the limit): same bound, and bitwise equal
    for 1 and 2 threads under the same limit."""
    rng = np.random.default_rng(6)
    x, dy, pads = case(rng, 2, 14, 13, 36, 50, 1, dtype=np.float64)
    exact, scale = bounds(x, dy, pads, 1, 1)
    previous = convbp.set_workspace_limit(limit)
    try:
        plan = _engine.winograd_filter_plan(2, (14, 13), (14, 13), 36, 50, 1, (1, 1), 4, 8)
        assert plan["filter_block"] < 50
        a = run(layout, x, dy, pads, threads=1)
        b = run(layout, x, dy, pads, threads=2)
    finally:
        convbp.set_workspace_limit(previous)
    assert np.array_equal(a, b)
    assert_bounded(a, exact, scale, pixels(dy), np.float64)


def test_float16_through_float32():
    rng = np.random.default_rng(8)
    x, dy, pads = case(rng, 2, 12, 12, 16, 16, 1, dtype=np.float16)
    dw = run("NHWC", x, dy, pads)
    assert dw.dtype == np.float16
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    expected = run("NHWC", x32, dy32, pads).astype(np.float16)
    assert np.array_equal(dw, expected)


@pytest.mark.parametrize("kwargs, what", [
    (dict(filter_sizes=(5, 5, 4, 6)), "5x5"),
    (dict(strides=2), "stride"),
])
def test_winograd_where_it_does_not_apply(kwargs, what):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 9, 9, 4)).astype(np.float32)
    sizes = kwargs.get("filter_sizes", (3, 3, 4, 6))
    strides = kwargs.get("strides", 1)
    oh = -(-9 // strides)
    dy = rng.standard_normal((1, oh, oh, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="algorithm") as info:
        convbp.tf.conv2d_backprop_filter(x, sizes, dy, strides, "SAME", algorithm="winograd")
    assert what in str(info.value)


def test_depthwise_refuses_winograd():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((1, 9, 9, 4)).astype(np.float32)
    dy = rng.standard_normal((1, 9, 9, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="algorithm"):
        convbp.tf.depthwise_conv2d_backprop_filter(x, (3, 3, 4, 2), dy, [1, 1, 1, 1], "SAME",
                                                   algorithm="winograd")


@pytest.mark.parametrize("x_shape, c_out, expected", [
    ((8, 28, 28, 64), 64, ("winograd", 4)),
    ((2, 8, 8, 64), 64, ("winograd", 2)),      # 128 pixels: F(2x2)
    ((1, 8, 8, 64), 64, ("gemm", None)),        # 64 pixels
    ((8, 28, 28, 1), 32, ("gemm", None)),       # one input channel
    ((8, 28, 28, 4), 64, ("winograd", 4)),      # a narrow side beside a wide one
])
def test_choice_for_the_filter_gradient(x_shape, c_out, expected):
    choice = convbp.choose_algorithm(x_shape, (3, 3, x_shape[3], c_out), 1, "SAME",
                                     op="filter")
    assert (choice.algorithm, choice.tile) == expected, choice.reason
    assert choice.reason


def test_choice_for_the_filter_gradient_at_stride_2():
    choice = convbp.choose_algorithm((8, 28, 28, 64), (3, 3, 64, 64), 2, "SAME", op="filter")
    assert choice.algorithm == "gemm" and "stride" in choice.reason


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [2**20, 8 * 2**20])
def test_extra_memory_within_the_workspace_limit(layout, limit):
    """Partial sums, per-thread chunks and scratch: the call's traced peak (beyond its result)
    stays within the workspace limit, x and dy read in place."""
    import tracemalloc
    rng = np.random.default_rng(14)
    x, dy, pads = case(rng, 4, 20, 20, 128, 96, 1)
    x_l, dy_l = to_layout(x, layout), to_layout(dy, layout)
    previous = convbp.set_workspace_limit(limit)
    tracemalloc.start()
    try:
        dw = convbp.tf.conv2d_backprop_filter(x_l, (3, 3, 128, 96), dy_l, 1, "SAME",
                                              data_format=layout, algorithm="winograd")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        convbp.set_workspace_limit(previous)
    assert peak - dw.nbytes <= limit
    exact, scale = bounds(x, dy, pads, 1, 1)
    assert_bounded(dw, exact, scale, pixels(dy), np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_negative_strides(layout):
    """x, dy and out reversed along an axis (views, no copies)."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 12, 10, 18))[:, ::-1]
    dy = rng.standard_normal((2, 12, 10, 20))[:, :, ::-1]
    pads = ((1, 1), (1, 1))
    exact, scale = bounds(x, dy, pads, 1, 1)
    out = np.empty((3, 3, 18, 20))[:, :, ::-1]
    if layout == "NHWC":
        res = convbp.tf.conv2d_backprop_filter(x, (3, 3, 18, 20), dy, 1, "SAME", out=out,
                                               algorithm="winograd")
    else:
        res = convbp.tf.conv2d_backprop_filter(x.transpose(0, 3, 1, 2), (3, 3, 18, 20),
                                               dy.transpose(0, 3, 1, 2), 1, "SAME",
                                               data_format="NCHW", out=out,
                                               algorithm="winograd")
    assert res is out or np.shares_memory(res, out)
    assert_bounded(res, exact, scale, pixels(dy), np.float64)
