"""Winograd F(2x2, 3x3) and F(4x4, 3x3): exact transforms, the generated header, and results
against the float64 direct loop with componentwise error bounds.

The bound for a dot product of length n computed in floating point is
``|dx - exact| <= gamma_n * (|W| conv |dy|)``, gamma_n = n*eps / (1 - n*eps); the tests allow
``2*gamma_n`` (the GEMM path's contract).  Winograd mixes the values of a tile, so on data with
a wide dynamic range (log-uniform magnitudes, sparse spikes) the bound is taken over the output
tile's neighbourhood: the largest ``|W| conv |dy|`` within a tile plus the filter's reach.
"""

import importlib.util
import os
from fractions import Fraction as Fr

import numpy as np
import pytest

import convbp
from convbp import _engine, _choose, _winograd
from oracle import (assert_bounded, direct_backprop_input, direct_conv2d, out_size, torch,
                    torch_backprop_input)

# A build without GNU C vector extensions (-DCONVBP_PLAIN_C, MSVC) has no Winograd kernel;
# tests/test_forward.py checks that "winograd" is then refused and "auto" never picks it.
pytestmark = pytest.mark.skipif(not _winograd.AVAILABLE, reason="built without Winograd")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(REPO, "tools", "gen_winograd.py")
HEADER = os.path.join(REPO, "convbp", "_winograd_transforms.h")
TILES = (2, 4)
DTYPES = (np.float32, np.float64)
LAYOUTS = ("NHWC", "NCHW")


def _generator():
    if not os.path.exists(GENERATOR):
        pytest.skip("tools/gen_winograd.py is not beside the tests (installed without sources)")
    spec = importlib.util.spec_from_file_location("gen_winograd", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The transforms, exactly.

def mat(x, y):
    return [[sum(x[i][k] * y[k][j] for k in range(len(y))) for j in range(len(y[0]))]
            for i in range(len(x))]


def basis(n, k):
    """The n x n tile that is 1 at flat position k and 0 elsewhere (exact)."""
    return [[Fr(int(i * n + j == k)) for j in range(n)] for i in range(n)]


def tr(x):
    return [list(row) for row in zip(*x)]


@pytest.mark.parametrize("m", TILES)
def test_transforms_compute_the_correlation_exactly(m):
    """A^T [(G g G^T) * (B^T d B)] A equals the 2-D correlation for every pair of basis tiles
    (so, by bilinearity, for all d and g), in exact rational arithmetic."""
    gen = _generator()
    at, g, bt = gen.matrices(m)
    a, r = m + 2, 3

    for p in range(a * a):
        d = basis(a, p)
        v = mat(mat(bt, d), tr(bt))
        for q in range(r * r):
            w = basis(r, q)
            u = mat(mat(g, w), tr(g))
            y = mat(mat(at, [[u[i][j] * v[i][j] for j in range(a)] for i in range(a)]), tr(at))
            direct = [[sum(d[i + s][j + t] * w[s][t] for s in range(r) for t in range(r))
                       for j in range(m)] for i in range(m)]
            assert y == direct


@pytest.mark.parametrize("m", TILES)
def test_filter_gradient_transforms_compute_the_correlation_exactly(m):
    """G^T [(A dY A^T) * (B^T d B)] G equals the filter gradient of one tile, sum_ij
    d[i + s][j + t] dY[i][j], for every pair of basis tiles, in exact rational arithmetic."""
    gen = _generator()
    at, g, bt = gen.matrices(m)
    a, r = m + 2, 3

    for p in range(a * a):
        d = basis(a, p)
        v = mat(mat(bt, d), tr(bt))
        for q in range(m * m):
            dy = basis(m, q)
            z = mat(mat(tr(at), dy), at)
            dw = mat(mat(tr(g), [[z[i][j] * v[i][j] for j in range(a)] for i in range(a)]), g)
            direct = [[sum(d[i + s][j + t] * dy[i][j] for i in range(m) for j in range(m))
                       for t in range(r)] for s in range(r)]
            assert dw == direct


def test_points_and_scaling():
    """F(4x4) uses {0, 1, -1, 1/2, -2, inf}; B^T rows are coprime integers."""
    gen = _generator()
    assert gen.POINTS[4] == (0, 1, -1, Fr(1, 2), -2)
    for m in TILES:
        _, _, bt = gen.matrices(m)
        for row in bt:
            assert all(v.denominator == 1 for v in row)
            assert np.gcd.reduce([abs(int(v)) for v in row]) == 1


def test_header_is_regenerated_byte_for_byte():
    gen = _generator()
    with open(HEADER) as f:
        assert f.read() == gen.generate()


# ---------------------------------------------------------------------------------------------
# Helpers.


def run(layout, dy, filt, in_shape, pads, dilation=1, algorithm="winograd", dtype=None,
        threads=None, out=None):
    """conv2d_backprop_input in ``layout``; result in logical NHWC."""
    n, h, w, c = in_shape
    (top, bottom), (left, right) = pads
    if layout == "NHWC":
        res = convbp.conv2d_backprop_input(in_shape, filt, dy, 1, "EXPLICIT",
                                           explicit_paddings=[0, 0, top, bottom, left, right,
                                                              0, 0],
                                           dilations=dilation, algorithm=algorithm,
                                           num_threads=threads, out=out)
        return res
    res = convbp.conv2d_backprop_input((n, c, h, w), filt,
                                       np.ascontiguousarray(dy.transpose(0, 3, 1, 2)), 1,
                                       "EXPLICIT", explicit_paddings=[0, 0, 0, 0, top, bottom,
                                                                      left, right],
                                       data_format="NCHW", dilations=dilation,
                                       algorithm=algorithm, num_threads=threads, out=out)
    return res.transpose(0, 2, 3, 1)


def case(rng, n, h, w, c, f, pad, dilation=1, groups=1, dtype=np.float32, data="normal"):
    pads = ((pad, pad), (pad, pad)) if np.isscalar(pad) else pad
    oh, ow = out_size((h, w), (3, 3), (1, 1), (dilation, dilation), pads)
    shape_dy, shape_w = (n, oh, ow, f), (3, 3, c // groups, f)
    if data == "normal":
        dy, filt = rng.standard_normal(shape_dy), rng.standard_normal(shape_w)
    elif data == "wide":  # magnitudes log-uniform over 1e-3 .. 1e3, random signs
        dy = 10.0 ** rng.uniform(-3, 3, shape_dy) * rng.choice([-1, 1], shape_dy)
        filt = 10.0 ** rng.uniform(-3, 3, shape_w) * rng.choice([-1, 1], shape_w)
    else:  # sparse: mostly zeros, a few spikes 1e4 times the rest
        dy = rng.standard_normal(shape_dy) * (rng.random(shape_dy) < 0.1)
        spikes = rng.random(shape_dy) < 0.005
        dy[spikes] = 1e4 * rng.choice([-1, 1], spikes.sum())
        filt = rng.standard_normal(shape_w)
    return dy.astype(dtype), filt.astype(dtype), (n, h, w, c), pads


def bounds(dy, filt, in_shape, pads, dilation, groups):
    """(exact dx, |W| conv |dy|) in float64."""
    dil = (dilation, dilation)
    exact = direct_backprop_input(dy, filt, in_shape[1:3], (1, 1), dil, pads, groups)
    scale = direct_backprop_input(np.abs(dy), np.abs(filt), in_shape[1:3], (1, 1), dil, pads,
                                  groups)
    return exact, scale


def neighbourhood_max(scale, reach):
    """max of scale over the (2*reach+1)^2 pixels around each pixel (per image and channel)."""
    from numpy.lib.stride_tricks import sliding_window_view
    padded = np.pad(scale, ((0, 0), (reach, reach), (reach, reach), (0, 0)))
    windows = sliding_window_view(padded, (2 * reach + 1, 2 * reach + 1), axis=(1, 2))
    return windows.max(axis=(-2, -1))


def assert_winograd_bounded(dx, exact, scale, n_red, dtype, tile=4, dilation=1):
    """Winograd's contract: twice the dot-product bound taken over the output tile's
    neighbourhood -- a tile spans ``tile`` outputs of one polyphase component (tile*dilation
    pixels) and its inputs reach 2*dilation further."""
    local = neighbourhood_max(scale, (tile - 1 + 2) * dilation)
    assert_bounded(dx, exact, 2 * local, n_red, dtype)



# ---------------------------------------------------------------------------------------------
# Accuracy.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", ["auto", "gemm", "winograd"])
def test_normal_data_within_the_dot_product_bound(algorithm, layout, dtype):
    rng = np.random.default_rng(1)
    dy, filt, shape, pads = case(rng, 2, 17, 15, 24, 40, 1, dtype=dtype)
    exact, scale = bounds(dy, filt, shape, pads, 1, 1)
    dx = run(layout, dy, filt, shape, pads, algorithm=algorithm)
    assert_bounded(dx, exact, scale, 40 * 9, dtype)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("data", ["wide", "sparse"])
def test_wide_range_data_within_the_neighbourhood_bound(data, layout, dtype, tile):
    rng = np.random.default_rng(2)
    dilation = 1 if data == "wide" else 2
    dy, filt, shape, pads = case(rng, 2, 19, 18, 20, 24, dilation, dilation, dtype=dtype,
                                 data=data)
    exact, scale = bounds(dy, filt, shape, pads, dilation, 1)
    out = np.empty(shape, dtype)
    dy_l = dy if layout == "NHWC" else np.ascontiguousarray(dy.transpose(0, 3, 1, 2)).transpose(
        0, 2, 3, 1)
    dx = out if layout == "NHWC" else np.empty((shape[0], shape[3]) + shape[1:3], dtype).transpose(
        0, 2, 3, 1)
    (top, _), (left, _) = pads
    _engine.winograd_correlate(dy_l, _engine.flipped_filter(filt, 1), dx,
                               (2 * dilation - top, 2 * dilation - left), (dilation, dilation),
                               None, tile)
    assert_winograd_bounded(dx, exact, scale, 24 * 9, dtype, tile, dilation)


# ---------------------------------------------------------------------------------------------
# Geometry, layouts, views, threads, workspace.

GEOMETRIES = [
    # n, h, w, c, f, pad, dilation, groups
    (1, 1, 1, 3, 5, 1, 1, 1),
    (2, 9, 11, 5, 7, 1, 1, 1),
    (1, 13, 10, 17, 3, 0, 1, 1),
    (1, 13, 10, 17, 19, 2, 2, 1),
    (2, 12, 12, 8, 12, 1, 1, 2),
    (1, 7, 7, 33, 20, 3, 1, 1),
    (3, 6, 5, 18, 18, ((0, 2), (2, 0)), 1, 3),
    (1, 16, 21, 16, 32, 4, 2, 2),
    (2, 11, 8, 40, 24, 3, 3, 1),
    (1, 6, 7, 260, 16, 1, 1, 1),  # few tiles, many output channels: units split the channels
]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_geometries_equal_the_direct_loop(geometry, layout, dtype, tile, monkeypatch):
    n, h, w, c, f, pad, dil, groups = geometry
    rng = np.random.default_rng(3)
    dy, filt, shape, pads = case(rng, n, h, w, c, f, pad, dil, groups, dtype=dtype)
    exact, scale = bounds(dy, filt, shape, pads, dil, groups)
    choice = _choose.Choice("winograd", tile, "test")
    monkeypatch.setattr(_engine, "_algorithm_choice", lambda *args: choice)
    dx = run(layout, dy, filt, shape, pads, dil)
    assert_winograd_bounded(dx, exact, scale, f // groups * 9, dtype, tile, dil)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_views_and_out(layout):
    """dy a strided crop, the filter a strided view, the result written into a view of a
    larger array (nothing outside it touched)."""
    rng = np.random.default_rng(4)
    dy_big = rng.standard_normal((2, 20, 24, 48)).astype(np.float32)
    dy = dy_big[:, 1:17:1, 2:22:1, 3:45:2]  # (2, 16, 20, 21)
    w_big = rng.standard_normal((3, 3, 30, 42)).astype(np.float32)
    filt = w_big[:, :, ::2, ::2]  # (3, 3, 15, 21)
    shape, pads = (2, 16, 20, 15), ((1, 1), (1, 1))
    exact, scale = bounds(dy, filt, shape, pads, 1, 1)
    if layout == "NHWC":
        big = np.full((5, 18, 23, 40), 7.0, np.float32)
        index = (slice(1, 5, 2), slice(1, 17), slice(2, 22), slice(5, 35, 2))
        res = convbp.conv2d_backprop_input(shape, filt, dy, 1, "SAME", out=big[index],
                                           algorithm="winograd")
        logical = res
    else:
        big = np.full((5, 40, 18, 23), 7.0, np.float32)
        index = (slice(1, 5, 2), slice(5, 35, 2), slice(1, 17), slice(2, 22))
        res = convbp.conv2d_backprop_input((2, 15, 16, 20), filt, dy.transpose(0, 3, 1, 2), 1,
                                           "SAME", data_format="NCHW", out=big[index],
                                           algorithm="winograd")
        logical = res.transpose(0, 2, 3, 1)
    assert np.shares_memory(res, big)
    mask = np.ones(big.shape, bool)
    mask[index] = False
    assert np.all(big[mask] == 7.0)
    assert_bounded(logical, exact, scale, 21 * 9, np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_bitwise_equal(layout, dtype):
    rng = np.random.default_rng(5)
    dy, filt, shape, pads = case(rng, 3, 30, 26, 48, 40, 1, dtype=dtype)
    a = run(layout, dy, filt, shape, pads, threads=1)
    b = run(layout, dy, filt, shape, pads, threads=2)
    c = run(layout, dy, filt, shape, pads, threads=2)
    assert np.array_equal(a, b) and np.array_equal(b, c)


def test_channel_split_plan():
    assert _engine.winograd_plan(1, (6, 7), (6, 7), 16, 260, 1, (1, 1), 4, 4, cores=2)[
        "co_split"] == 2


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [1, 40_000, 300_000])
def test_small_workspace_limit(layout, limit):
    """Output-channel blocks, small chunks and fewer threads; same bound, and bitwise equal for
    1 and 2 threads under the same limit."""
    rng = np.random.default_rng(6)
    dy, filt, shape, pads = case(rng, 2, 14, 13, 36, 50, 1, dtype=np.float64)
    exact, scale = bounds(dy, filt, shape, pads, 1, 1)
    previous = convbp.set_workspace_limit(limit)
    try:
        plan = _engine.winograd_plan(2, (14, 13), (14, 13), 50, 36, 1, (1, 1), 4, 8)
        if limit <= 300_000:
            assert plan["filter_block"] < 36 or plan["chunk_tiles"] < 16
        a = run(layout, dy, filt, shape, pads, threads=1)
        b = run(layout, dy, filt, shape, pads, threads=2)
    finally:
        convbp.set_workspace_limit(previous)
    assert np.array_equal(a, b)
    assert_bounded(a, exact, scale, 50 * 9, np.float64)


@pytest.mark.parametrize("tile", TILES)
def test_forward_correlation_with_any_pads(tile):
    """winograd_correlate as the forward convolution (the filter as is), pads negative or
    beyond the filter."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 12, 10, 6))
    filt = rng.standard_normal((3, 3, 3, 8))  # groups=2: C/groups = 3, F = 8
    for pads, dil in [((1, 1), 1), ((-1, 3), 1), ((4, -2), 2), ((0, 0), 1)]:
        (pt, pl) = pads
        oh, ow = 9, 11
        # Reference: direct_conv2d on an input zero-padded (or cropped) by pads.
        big = np.zeros((2, 12 + 2 * 10, 10 + 2 * 10, 6))
        big[:, 10:22, 10:20] = x
        ref = direct_conv2d(big[:, 10 - pt:, 10 - pl:], filt, (oh, ow), (1, 1), (dil, dil),
                            groups=2)
        out = np.empty((2, oh, ow, 8))
        _engine.winograd_correlate(x, _engine.grouped_filter(filt, 2), out, pads, (dil, dil),
                                   None, tile)
        scale = direct_conv2d(np.abs(big[:, 10 - pt:, 10 - pl:]), np.abs(filt), (oh, ow),
                              (1, 1), (dil, dil), groups=2)
        assert_winograd_bounded(out, ref, scale, 27, np.float64, tile, dil)


def test_float16_through_float32():
    rng = np.random.default_rng(8)
    dy, filt, shape, pads = case(rng, 1, 10, 9, 20, 24, 1, dtype=np.float16)
    dx = run("NHWC", dy, filt, shape, pads)
    ref32 = run("NHWC", dy.astype(np.float32), filt.astype(np.float32), shape, pads)
    assert dx.dtype == np.float16
    assert np.array_equal(dx, ref32.astype(np.float16))


# ---------------------------------------------------------------------------------------------
# The choice, and errors.

@pytest.mark.parametrize("kwargs, what", [
    (dict(strides=2), "stride"),
    (dict(kernel=5), "5x5"),
    (dict(depthwise=True), "depthwise"),
])
def test_winograd_where_it_does_not_apply(kwargs, what):
    rng = np.random.default_rng(9)
    k = kwargs.get("kernel", 3)
    c = 4
    filt = rng.standard_normal((k, k, 1 if kwargs.get("depthwise") else c, 8)).astype(
        np.float32)
    dy = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    s = kwargs.get("strides", 1)
    with pytest.raises(ValueError, match="algorithm") as info:
        convbp.conv2d_backprop_input((1, 4 * s, 4 * s, c), filt, dy, s, "SAME",
                                     algorithm="winograd")
    assert what in str(info.value)


def test_bad_algorithm_name():
    with pytest.raises(ValueError, match="algorithm"):
        convbp.conv2d_backprop_input((1, 4, 4, 1), np.ones((3, 3, 1, 1)), np.ones((1, 4, 4, 1)),
                                     1, "SAME", algorithm="fft")


def test_choose_algorithm_explains_itself():
    choice = convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 1, "SAME")
    assert choice.algorithm == "winograd" and choice.tile in TILES and choice.reason
    assert convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 2, "SAME").algorithm \
        == "gemm"
    assert convbp.choose_algorithm((8, 56, 56, 64), (1, 1, 64, 64), 1, "SAME").algorithm \
        == "gemm"
    dw = convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 1, 64), 1, "SAME")
    assert dw.algorithm == "depthwise"


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_torch_front_against_pytorch_float64(algorithm):
    rng = np.random.default_rng(10)
    dy = rng.standard_normal((2, 24, 9, 13))  # NCHW
    weight = rng.standard_normal((24, 16, 3, 3))  # OIHW, groups=2: C_in = 32
    dx = convbp.torch.conv2d_input((2, 32, 9, 13), weight, dy, padding=2, dilation=2, groups=2,
                                   algorithm=algorithm)
    ref = torch_backprop_input(dy.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0),
                               (9, 13), (1, 1), (2, 2), ((2, 2), (2, 2)), 2)
    scale = direct_backprop_input(np.abs(dy.transpose(0, 2, 3, 1)),
                                  np.abs(weight.transpose(2, 3, 1, 0)), (9, 13), (1, 1),
                                  (2, 2), ((2, 2), (2, 2)), 2)
    assert_winograd_bounded(dx.transpose(0, 2, 3, 1), ref, scale, 12 * 9, np.float64, 4, 2)


def test_reads_channels_last_dy_in_place():
    """Winograd reads dy where it is -- an NCHW-shaped view of NHWC memory, even a negative
    stride view (which the GEMM path must copy): the call allocates the result, the
    transformed filter and one thread's scratch, and no copy of dy."""
    import tracemalloc
    rng = np.random.default_rng(11)
    dy = rng.standard_normal((32, 16, 16, 256), dtype=np.float32).transpose(0, 3, 1, 2)
    weight = rng.standard_normal((256, 4, 3, 3), dtype=np.float32)
    plan = _engine.winograd_plan(32, (16, 16), (18, 18), 256, 4, 1, (1, 1), 4, 4)
    own = plan["filter_bytes"] + plan["scratch"] * 4 + 32 * 4 * 18 * 18 * 4

    def peak(grad_output):
        tracemalloc.start()
        try:
            convbp.conv2d_input((32, 4, 18, 18), weight, grad_output, num_threads=1,
                                algorithm="winograd")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(dy) < own + 2**20
    assert peak(dy[:, :, :, ::-1]) < own + 2**20


@pytest.mark.parametrize("layout", LAYOUTS)
def test_negative_strides(layout):
    """dy, the filter and out all reversed along an axis (views, no copies)."""
    rng = np.random.default_rng(12)
    dy = rng.standard_normal((2, 12, 10, 20))[:, ::-1]
    filt = rng.standard_normal((3, 3, 18, 20))[:, :, ::-1]
    shape, pads = (2, 12, 10, 18), ((1, 1), (1, 1))
    exact, scale = bounds(dy, filt, shape, pads, 1, 1)
    if layout == "NHWC":
        out = np.empty(shape)[:, :, ::-1]
        res = convbp.conv2d_backprop_input(shape, filt, dy, 1, "SAME", out=out,
                                           algorithm="winograd")
    else:
        out = np.empty((2, 18, 12, 10))[:, ::-1]
        res = convbp.conv2d_backprop_input((2, 18, 12, 10), filt, dy.transpose(0, 3, 1, 2), 1,
                                           "SAME", data_format="NCHW", out=out,
                                           algorithm="winograd").transpose(0, 2, 3, 1)
    assert_winograd_bounded(res, exact, scale, 20 * 9, np.float64)


AUTO_SIZES = [
    # n, h, w, c (dx), f (dy) -- sizes "auto" runs by Winograd
    (1, 16, 16, 16, 16),
    (2, 12, 14, 3, 32),
    (2, 12, 14, 32, 3),
    (1, 20, 18, 64, 8),
    (1, 9, 30, 48, 17),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", AUTO_SIZES)
def test_auto_winograd_within_the_dot_product_bound(size, dtype):
    n, h, w, c, f = size
    rng = np.random.default_rng(13)
    dy, filt, shape, pads = case(rng, n, h, w, c, f, 1, dtype=dtype)
    choice = convbp.choose_algorithm(shape, filt.shape, 1, "SAME", dtype=dtype)
    assert choice.algorithm == "winograd", choice
    exact, scale = bounds(dy, filt, shape, pads, 1, 1)
    for layout in LAYOUTS:
        dx = run(layout, dy, filt, shape, pads, algorithm="auto")
        assert_bounded(dx, exact, scale, f * 9, dtype)
