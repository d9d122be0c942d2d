"""The forward convolution in the engine: convbp._engine.forward (GEMM and depthwise kernels).

References: the direct float64 loop (tests/oracle.py) always, torch.nn.functional.conv2d in
float64 when PyTorch is installed.  The engine takes logical NHWC views of any strides and a
ConvGeometry from _geometry.forward_geometry, exactly as the public fronts call it.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from arrays import (LAYOUTS, MEMORY, arrange, conv_cases, float16_bound, out_array,
                    workspace_limit)
import convbp
from convbp import _engine, _winograd
from convbp._geometry import forward_geometry
from oracle import assert_close, direct_conv2d, torch, torch_conv2d

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def run(x, filt, geometry, groups, dtype, layout="NHWC", view=False, num_threads=None):
    shape = (x.shape[0],) + tuple(geometry.out_hw) + (filt.shape[3],)
    y, check = out_array(shape, dtype, layout, view)
    y[...] = np.nan  # every element must be overwritten
    assert _engine.forward(x, filt, y, geometry, groups, num_threads) is y
    check()
    return y


def reference(x, filt, geometry, groups):
    return direct_conv2d(x, filt, geometry.out_hw, geometry.strides, geometry.dilations,
                         geometry.pads, groups)


def make(x_shape, f_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(f_shape).astype(dtype))


@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS), x_memory=st.sampled_from(MEMORY),
       f_memory=st.sampled_from(MEMORY), dtype=st.sampled_from([np.float32, np.float64]),
       view=st.booleans(), limit=st.sampled_from([None, 1, 5000]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_matches_direct_loop(case, layout, x_memory, f_memory, dtype, view, limit, threads,
                             seed):
    x_shape, f_shape, groups, geometry = case
    x, filt = make(x_shape, f_shape, dtype, seed)
    expected = reference(x, filt, geometry, groups)
    x, filt = arrange(x, layout, x_memory), arrange(filt, "NHWC", f_memory)
    with workspace_limit(limit):
        y = run(x, filt, geometry, groups, dtype, layout, view, threads)
    assert_close(y, expected, dtype, f_shape[0] * f_shape[1] * f_shape[2])


# (x shape, filter shape, groups, strides, dilations, padding)
CASES = [
    ((2, 9, 8, 4), (3, 3, 4, 5), 1, (1, 1), (1, 1), "SAME"),
    ((2, 9, 8, 6), (3, 2, 3, 4), 2, (2, 1), (1, 2), ((1, 2), (0, 1))),
    ((1, 7, 11, 3), (2, 3, 3, 6), 1, (3, 2), (2, 1), "VALID"),
    ((2, 8, 8, 4), (3, 3, 1, 8), 4, (2, 2), (1, 1), "SAME"),     # depthwise, multiplier 2
    ((1, 6, 9, 5), (3, 3, 1, 5), 5, (1, 2), (2, 1), ((2, 0), (1, 3))),  # depthwise
    ((2, 5, 6, 8), (1, 1, 8, 6), 1, (1, 1), (1, 1), "VALID"),    # pointwise: GEMM on x
    ((2, 5, 6, 8), (1, 1, 4, 6), 2, (1, 1), (1, 1), "VALID"),    # grouped pointwise
    ((1, 1, 200, 2), (1, 16, 2, 3), 1, (1, 8), (1, 1), "VALID"),  # 1-D, wide filter
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_pytorch_layout_filter(case, layout, dtype):
    """A filter that is a view of PyTorch's contiguous (F, C/groups, KH, KW) memory (whose GEMM
    matrix is made by a 2-D transpose, then a row reordering) gives the contiguous filter's
    result bit for bit."""
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, filt = make(x_shape, f_shape, dtype, seed=7)
    torch_memory = np.ascontiguousarray(filt.transpose(3, 2, 0, 1)).transpose(2, 3, 1, 0)
    assert torch_memory.transpose(3, 2, 0, 1).flags.c_contiguous
    x = arrange(x, layout)
    y = run(x, torch_memory, geometry, groups, dtype, layout)
    np.testing.assert_array_equal(y, run(x, filt, geometry, groups, dtype, layout))
    assert_close(y, reference(x, filt, geometry, groups), dtype,
                 f_shape[0] * f_shape[1] * f_shape[2])


@pytest.mark.skipif(not _winograd.AVAILABLE, reason="this build has no Winograd kernel")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels", [(16, 16), (64, 128), (96, 96)])
def test_winograd_pytorch_layout_filter(channels, layout, dtype):
    """Winograd's transformed filter is (C, F) for a PyTorch-layout weight of at most
    _WINOGRAD_SMALL_FILTER channel pairs (then the contiguous filter's result bit for bit),
    (F, C) beyond: both within the dot-product bound (2*gamma_n of |x| conv |w|) of the float64
    loop on standard-normal data, as the GEMM path."""
    c, f = channels
    geometry = forward_geometry((18, 17), (3, 3), (1, 1), (1, 1), "SAME")
    x, filt = make((2, 18, 17, c), (3, 3, c, f), dtype, seed=3)
    torch_memory = np.ascontiguousarray(filt.transpose(3, 2, 0, 1)).transpose(2, 3, 1, 0)
    x = arrange(x, layout)
    shape = (2,) + tuple(geometry.out_hw) + (f,)
    ys = []
    for weight in (torch_memory, filt):
        y, check = out_array(shape, dtype, layout, False)
        _engine.forward(x, weight, y, geometry, 1, algorithm="winograd")
        check()
        ys.append(y)
    if c * f <= _engine._WINOGRAD_SMALL_FILTER:
        np.testing.assert_array_equal(ys[0], ys[1])
    exact = reference(x, filt, geometry, 1)
    magnitude = reference(np.abs(x), np.abs(filt), geometry, 1)
    n, eps = 9 * c, np.finfo(dtype).eps
    bound = 2 * n * eps / (1 - n * eps) * magnitude
    for y in ys:
        assert np.all(np.abs(y - exact) <= bound)


@needs_torch
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_matches_torch(case, layout):
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, filt = make(x_shape, f_shape, np.float64)
    expected = torch_conv2d(x, filt, strides, dilations, geometry.pads, groups)
    assert_close(reference(x, filt, geometry, groups), expected, np.float64, 1)
    y = run(arrange(x, layout), filt, geometry, groups, np.float64, layout)
    assert_close(y, expected, np.float64, f_shape[0] * f_shape[1] * f_shape[2])


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[5], CASES[6]])
def test_pointwise_every_memory(case, layout, view, memory):
    """1x1, stride 1, unpadded: the GEMM reads x (and writes y) in place where BLAS can."""
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, filt = make(x_shape, f_shape, np.float64, seed=3)
    y = run(arrange(x, layout, memory), filt, geometry, groups, np.float64, layout, view)
    assert_close(y, reference(x, filt, geometry, groups), np.float64, f_shape[2])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_float16_rounds_the_float32_result_once(case, layout):
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, filt = make(x_shape, f_shape, np.float16, seed=1)
    y = run(arrange(x, layout), filt, geometry, groups, np.float16, layout)
    assert y.dtype == np.float16
    expected = reference(x, filt, geometry, groups)
    bound = float16_bound(expected, f_shape[0] * f_shape[1] * f_shape[2])
    assert (np.abs(y.astype(np.float64) - expected) <= bound).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("x_shape, f_shape, groups", [
    ((0, 5, 5, 3), (3, 3, 3, 4), 1),   # no images
    ((2, 5, 5, 0), (3, 3, 0, 4), 1),   # no input channels: y is zero
    ((2, 5, 5, 3), (3, 3, 3, 0), 1),   # no output channels
    ((2, 0, 5, 3), (3, 3, 3, 4), 1),   # no rows
    ((2, 5, 5, 4), (2, 2, 2, 0), 2),   # groups, no output channels
])
def test_empty_shapes(x_shape, f_shape, groups, dtype):
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], (1, 1), (1, 1), "SAME")
    x, filt = make(x_shape, f_shape, dtype)
    y = run(x, filt, geometry, groups, dtype)
    assert y.shape == (x_shape[0],) + geometry.out_hw + (f_shape[3],)
    assert (y == 0).all()


# Cases whose work is split into several units: N = 1, a single row (1-D), many images.
THREAD_CASES = [
    ((1, 24, 20, 8), (3, 3, 8, 16), 1, (1, 1), "SAME"),
    ((1, 1, 3000, 1), (1, 64, 1, 40), 1, (1, 16), "VALID"),  # conv1d-like, one row
    ((5, 9, 7, 6), (3, 3, 2, 6), 3, (2, 2), "SAME"),
    ((1, 12, 10, 6), (3, 3, 1, 12), 6, (1, 1), "SAME"),      # depthwise
    ((3, 10, 10, 16), (1, 1, 16, 8), 1, (1, 1), "VALID"),    # pointwise
]


@pytest.mark.parametrize("limit", [None, 20000])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", THREAD_CASES)
def test_bitwise_identical_for_any_thread_count(case, layout, limit):
    x_shape, f_shape, groups, strides, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, (1, 1), padding)
    x, filt = make(x_shape, f_shape, np.float32, seed=2)
    x = arrange(x, layout)
    with workspace_limit(limit):
        results = [run(x, filt, geometry, groups, np.float32, layout, num_threads=t)
                   for t in (1, 2, 3)]
    assert_close(results[0], reference(x, filt, geometry, groups), np.float32,
                 f_shape[0] * f_shape[1] * f_shape[2])
    for other in results[1:]:
        assert np.ascontiguousarray(other).tobytes() == np.ascontiguousarray(
            results[0]).tobytes()


@pytest.mark.parametrize("kernel, strides", [((5, 5), (1, 1)), ((3, 3), (2, 2)),
                                              ((1, 3), (1, 1))])
def test_winograd_where_it_does_not_apply_is_a_value_error_naming_algorithm(kernel, strides):
    geometry = forward_geometry((6, 6), kernel, strides, (1, 1), "SAME")
    x, filt = make((1, 6, 6, 2), kernel + (2, 2), np.float32)
    y = np.empty((1,) + geometry.out_hw + (2,), np.float32)
    with pytest.raises(ValueError, match="algorithm"):
        _engine.forward(x, filt, y, geometry, algorithm="winograd")


@pytest.mark.skipif(not _winograd.AVAILABLE, reason="built without Winograd")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups, dilations, padding", [
    (1, (1, 1), "SAME"), (1, (2, 1), "VALID"), (2, (1, 1), ((2, 0), (1, 3))),
    (1, (2, 2), "SAME")])
def test_winograd_forward_equals_the_direct_loop(layout, dtype, groups, dilations, padding):
    # The forward 3x3 stride-1 convolution through the Winograd correlation, within the
    # dot-product bound of the GEMM path (2*gamma_n of |x| conv |w|) on standard-normal data.
    c, f = 16 * groups, 24 * groups
    geometry = forward_geometry((13, 17), (3, 3), (1, 1), dilations, padding)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 13, 17, c)).astype(dtype)
    filt = rng.standard_normal((3, 3, c // groups, f)).astype(dtype)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    results = {}
    for algorithm in ("winograd", "gemm"):
        y = np.empty((2,) + geometry.out_hw + (f,), dtype)
        if layout == "NCHW":
            y = np.empty((2, f) + geometry.out_hw, dtype).transpose(0, 2, 3, 1)
        results[algorithm] = _engine.forward(x, filt, y, geometry, groups,
                                             algorithm=algorithm)
    exact = reference(x, filt, geometry, groups)
    magnitude = reference(np.abs(x), np.abs(filt), geometry, groups)
    n = c // groups * 9
    eps = np.finfo(dtype).eps
    bound = 2 * n * eps / (1 - n * eps) * magnitude
    for algorithm, y in results.items():
        assert np.all(np.abs(y - exact) <= bound), algorithm
    auto = _engine.forward(x, filt, np.empty_like(results["gemm"]), geometry, groups)
    choice = _engine.choose_for("forward", x.shape, auto.shape, geometry, groups, dtype)
    np.testing.assert_array_equal(auto, results[choice.algorithm])


@pytest.mark.skipif(not _winograd.AVAILABLE, reason="built without Winograd")
def test_a_remembered_choice_follows_the_winograd_kernel_being_there(monkeypatch):
    # The engine remembers each call's plan; whether the kernel is built is part of its key.
    geometry = forward_geometry((16, 16), (3, 3), (1, 1), (1, 1), "SAME")
    x, filt = make((2, 16, 16, 32), (3, 3, 32, 32), np.float32)
    y = np.empty((2, 16, 16, 32), np.float32)
    assert _engine.choose_for("forward", x.shape, y.shape, geometry, 1,
                              np.float32).algorithm == "winograd"
    _engine.forward(x, filt, y, geometry)
    monkeypatch.setattr(_winograd, "AVAILABLE", False)

    def no_winograd(*args, **kwargs):
        raise AssertionError("Winograd ran although the kernel is not there")

    monkeypatch.setattr(_engine, "winograd_correlate", no_winograd)
    assert_close(_engine.forward(x, filt, y, geometry), reference(x, filt, geometry, 1),
                 np.float32, 9 * 32)


def test_without_the_winograd_kernel_it_is_refused_and_never_chosen(monkeypatch):
    # As in a build without GNU C vector extensions (-DCONVBP_PLAIN_C, MSVC).
    monkeypatch.setattr(_winograd, "AVAILABLE", False)
    geometry = forward_geometry((16, 16), (3, 3), (1, 1), (1, 1), "SAME")
    x, filt = make((2, 16, 16, 32), (3, 3, 32, 32), np.float32)
    y = np.empty((2, 16, 16, 32), np.float32)
    with pytest.raises(ValueError, match="algorithm.*no Winograd kernel"):
        _engine.forward(x, filt, y, geometry, algorithm="winograd")
    for op in ("forward", "input"):
        assert _engine.choose_for(op, x.shape, y.shape, geometry, 1, np.float32).algorithm \
            == "gemm"
    assert_close(_engine.forward(x, filt, y, geometry), reference(x, filt, geometry, 1),
                 np.float32, 9 * 32)


# 16-18 input channels a group: NCHW memory restages the input rows.
@given(case=conv_cases(channels=(16, 18), max_groups=2, max_kernel=4, depthwise=False),
       x_memory=st.sampled_from(MEMORY),
       y_layout=st.sampled_from(LAYOUTS), view=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]),
       limit=st.sampled_from([None, 1, 40000]), seed=st.integers(0, 2**16))
def test_restaged_nchw_rows_match_direct_loop(case, x_memory, y_layout, view, dtype, limit,
                                              seed):
    """NCHW input of many channels a group, its rows copied a chunk at a time in NHWC order
    (also refused: a tiny workspace); y in either layout, or a view; 1 and 2 threads bitwise
    alike."""
    x_shape, f_shape, groups, geometry = case
    x, filt = make(x_shape, f_shape, dtype, seed)
    expected = reference(x, filt, geometry, groups)
    x = arrange(x, "NCHW", x_memory)
    with workspace_limit(limit):
        one = run(x, filt, geometry, groups, dtype, y_layout, view, num_threads=1)
        two = run(x, filt, geometry, groups, dtype, y_layout, view, num_threads=2)
    assert_close(one, expected, dtype, f_shape[0] * f_shape[1] * f_shape[2])
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("x_shape, f_shape, across", [
    ((3, 11, 9, 32), (3, 3, 32, 8), False),     # images larger than a chunk's half
    ((37, 6, 6, 64), (3, 3, 64, 64), True),     # small images, GEMMs across them
    ((40, 8, 8, 16), (3, 3, 16, 16), True),     # ... small GEMMs, but over 64 pixels or fewer
    ((6, 10, 10, 16), (3, 3, 16, 8), False),    # small GEMMs over 100 pixels: image by image
])
def test_restaged_rows_are_the_nchw_plan(x_shape, f_shape, across):
    """The plans that restage: NCHW x, 16 or more channels a group (small images with a large
    or narrow GEMM an image: chunks across images); NHWC x never."""
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], (1, 1), (1, 1), "SAME")
    x, filt = make(x_shape, f_shape, np.float32, seed=3)
    for layout in LAYOUTS:
        arranged = arrange(x, layout)
        y = run(arranged, filt, geometry, 1, np.float32, layout)
        y_strides = y.strides
        _, plan = _engine._forward_plan(arranged.shape, arranged.strides, filt.shape, y.shape,
                                        y_strides, np.dtype(np.float32), geometry, 1, "gemm",
                                        _winograd.AVAILABLE, 2, _engine.get_workspace_limit())
        assert (plan.params["restage_rows"] > 0) == (layout == "NCHW")
        if layout == "NCHW":
            assert plan.layout[4] == across
        assert_close(y, reference(x, filt, geometry, 1), np.float32,
                     f_shape[0] * f_shape[1] * f_shape[2])


@pytest.mark.parametrize("limit", [None, 2**20, 200_000])
@pytest.mark.parametrize("x_shape, f_shape, strides", [
    ((4, 20, 20, 32), (3, 3, 32, 16), (1, 1)),   # restaged NCHW rows
    ((48, 6, 6, 64), (3, 3, 64, 64), (1, 1)),    # ... and GEMMs across the small images
    ((2, 40, 40, 3), (7, 7, 3, 16), (2, 2)),     # few channels: the column buffer alone
])
def test_extra_memory_within_the_workspace_limit(x_shape, f_shape, strides, limit):
    """What a GEMM-path forward call allocates beside its result (workspace, filter matrix,
    plan) stays within the workspace limit, NCHW input rows restaged or not."""
    import tracemalloc
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, (1, 1), "SAME")
    x, filt = make(x_shape, f_shape, np.float32, seed=6)
    x = arrange(x, "NCHW")
    y, _ = out_array((x_shape[0],) + tuple(geometry.out_hw) + (f_shape[3],), np.float32,
                     "NCHW")
    with workspace_limit(limit):
        budget = convbp.get_workspace_limit()
        _engine.forward(x, filt, y, geometry, 1, 2, "gemm")  # the plan, remembered
        tracemalloc.start()
        try:
            _engine.forward(x, filt, y, geometry, 1, 2, "gemm")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak <= budget + 4096  # a few Python objects beside the arrays
    assert_close(y, reference(x, filt, geometry, 1), np.float32,
                 f_shape[0] * f_shape[1] * f_shape[2])


def run_with_plan(x, filt, geometry, groups, dtype, layout):
    """y by 1 thread, checked bitwise equal to 2 threads' y, and the call's GEMM plan."""
    one = run(x, filt, geometry, groups, dtype, layout, num_threads=1)
    two = run(x, filt, geometry, groups, dtype, layout, num_threads=2)
    np.testing.assert_array_equal(one, two)
    _, plan = _engine._forward_plan(x.shape, x.strides, filt.shape, one.shape, one.strides,
                                    np.dtype(dtype), geometry, groups, "gemm",
                                    _winograd.AVAILABLE, 2, _engine.get_workspace_limit())
    return one, plan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_channel_nchw_pointwise_copies_its_rows(dtype):
    """A 1x1 layer of 128 channels from NCHW float32 memory is copied a chunk at a time (its
    im2col: one run a channel) instead of read in place; float64 and NHWC memory are read in
    place.  Channel-major x keeps cache-sized chunks either way.  Both match the direct loop,
    bitwise alike for 1 and 2 threads."""
    geometry = forward_geometry((24, 24), (1, 1), (1, 1), (1, 1), "VALID")
    x, filt = make((2, 24, 24, 128), (1, 1, 128, 32), dtype, seed=7)
    expected = reference(x, filt, geometry, 1)
    for layout in LAYOUTS:
        one, plan = run_with_plan(arrange(x, layout), filt, geometry, 1, dtype, layout)
        copied = layout == "NCHW" and dtype == np.float32
        assert (plan.layout[1] == 0) == copied  # x_ld
        if layout == "NCHW":  # channel runs, copied or in place: chunks not cut to 244 pixels
            assert plan.params["chunk_pixels"] > _engine._small_gemm_pixels(128, 32) == 244
        assert_close(one, expected, dtype, 128)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_cut_to_small_gemms(dtype):
    """A small filter matrix (108 taps x 64 filters): chunks of at most 144 pixels, so that
    each GEMM fits OpenBLAS's small-matrix kernels, within images and across them (NHWC),
    whichever the columns' orientation (NCHW: too few channels to restage, channel-major).
    Both match the direct loop, bitwise alike for 1 and 2 threads."""
    geometry = forward_geometry((15, 13), (3, 3), (1, 1), (1, 1), "SAME")
    x, filt = make((3, 15, 13, 12), (3, 3, 12, 64), dtype, seed=8)
    expected = reference(x, filt, geometry, 1)
    assert _engine._small_gemm_pixels(108, 64) == 144
    for layout in LAYOUTS:
        one, plan = run_with_plan(arrange(x, layout), filt, geometry, 1, dtype, layout)
        assert 32 <= plan.params["chunk_pixels"] <= 144
        assert_close(one, expected, dtype, 108)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_large_filter_matrix_gemms_split_along_their_sum(dtype, groups):
    """A filter matrix too large for whole small-matrix GEMMs (1000 taps x 48 filters a group):
    float32 chunks of 128 pixels whose GEMMs sum 162 taps at a time, adding into y (NaN
    beforehand: the first piece must overwrite it); float64 keeps whole GEMMs.  Both layouts
    match the direct loop within the bound of the full sum, bitwise alike for 1 and 2
    threads."""
    geometry = forward_geometry((12, 11), (5, 5), (1, 1), (1, 1), "SAME")
    f_shape = (5, 5, 40, 48 * groups)
    x, filt = make((2, 12, 11, 40 * groups), f_shape, dtype, seed=9)
    expected = reference(x, filt, geometry, groups)
    for layout in LAYOUTS:
        one, plan = run_with_plan(arrange(x, layout), filt, geometry, groups, dtype, layout)
        assert plan.params["gemm_taps"] == (162 if dtype == np.float32 else 0)
        assert plan.params["chunk_pixels"] <= (128 if dtype == np.float32 else 1024)
        assert_close(one, expected, dtype, 1000)
