"""The filter gradient in the engine: convbp._engine.backprop_filter (GEMM and depthwise).

References: the direct float64 loop (tests/oracle.py) always, torch.nn.grad.conv2d_weight in
float64 when PyTorch is installed.  The reduction runs over N*OH*OW output pixels.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from arrays import (LAYOUTS, MEMORY, arrange, conv_cases, float16_bound, out_array,
                    workspace_limit)
from convbp import _engine
from convbp._geometry import forward_geometry
from oracle import assert_close, direct_backprop_filter, torch, torch_backprop_filter

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def run(x, dy, f_shape, geometry, groups, dtype, view=False, num_threads=None,
        f_layout="NHWC"):
    dw, check = out_array(f_shape, dtype, f_layout, view)
    dw[...] = np.nan  # every element must be overwritten
    assert _engine.backprop_filter(x, dy, dw, geometry, groups, num_threads) is dw
    check()
    return dw


def reference(x, dy, geometry, groups):
    return direct_backprop_filter(x, dy, geometry.kernel_hw, geometry.strides,
                                  geometry.dilations, geometry.pads, groups)


def make(x_shape, f_shape, geometry, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dy_shape = (x_shape[0],) + tuple(geometry.out_hw) + (f_shape[3],)
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(dy_shape).astype(dtype))


def reduction(x, geometry):
    return x.shape[0] * geometry.out_hw[0] * geometry.out_hw[1]


@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS), x_memory=st.sampled_from(MEMORY),
       dy_memory=st.sampled_from(MEMORY), dtype=st.sampled_from([np.float32, np.float64]),
       view=st.booleans(), dw_layout=st.sampled_from(LAYOUTS),
       limit=st.sampled_from([None, 1, 5000]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_matches_direct_loop(case, layout, x_memory, dy_memory, dtype, view, dw_layout, limit,
                             threads, seed):
    x_shape, f_shape, groups, geometry = case
    x, dy = make(x_shape, f_shape, geometry, dtype, seed)
    expected = reference(x, dy, geometry, groups)
    x, dy = arrange(x, layout, x_memory), arrange(dy, layout, dy_memory)
    with workspace_limit(limit):
        dw = run(x, dy, f_shape, geometry, groups, dtype, view, threads, dw_layout)
    assert_close(dw, expected, dtype, reduction(x, geometry))


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


@needs_torch
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_matches_torch(case, layout):
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, dy = make(x_shape, f_shape, geometry, np.float64)
    expected = torch_backprop_filter(x, dy, f_shape[:2], strides, dilations, geometry.pads,
                                     groups)
    assert_close(reference(x, dy, geometry, groups), expected, np.float64, 1)
    dw = run(arrange(x, layout), arrange(dy, layout), f_shape, geometry, groups, np.float64)
    assert_close(dw, expected, np.float64, reduction(x, geometry))


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[5], CASES[6]])
def test_pointwise_every_memory(case, layout, view, memory):
    """1x1, stride 1, unpadded: the GEMM reads x and dy in place where BLAS can."""
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, dy = make(x_shape, f_shape, geometry, np.float64, seed=3)
    dw = run(arrange(x, layout, memory), arrange(dy, layout, memory), f_shape, geometry,
             groups, np.float64, view)
    assert_close(dw, reference(x, dy, geometry, groups), np.float64, reduction(x, geometry))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES)
def test_float16_rounds_the_float32_result_once(case, layout):
    x_shape, f_shape, groups, strides, dilations, padding = case
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, dilations, padding)
    x, dy = make(x_shape, f_shape, geometry, np.float16, seed=1)
    dw = run(arrange(x, layout), arrange(dy, layout), f_shape, geometry, groups, np.float16)
    assert dw.dtype == np.float16
    expected = reference(x, dy, geometry, groups)
    bound = float16_bound(expected, reduction(x, geometry))
    assert (np.abs(dw.astype(np.float64) - expected) <= bound).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("x_shape, f_shape, groups", [
    ((0, 5, 5, 3), (3, 3, 3, 4), 1),   # no images: dw is zero
    ((2, 5, 5, 0), (3, 3, 0, 4), 1),   # no input channels
    ((2, 5, 5, 3), (3, 3, 3, 0), 1),   # no output channels: dy is empty
    ((2, 0, 5, 3), (3, 3, 3, 4), 1),   # no rows: dw is zero
    ((2, 5, 5, 4), (2, 2, 1, 0), 4),   # depthwise, multiplier 0
    ((0, 5, 5, 4), (2, 2, 1, 8), 4),   # depthwise, no images
])
def test_empty_shapes(x_shape, f_shape, groups, dtype):
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], (1, 1), (1, 1), "SAME")
    x, dy = make(x_shape, f_shape, geometry, dtype)
    dw = run(x, dy, f_shape, geometry, groups, dtype)
    assert dw.shape == f_shape
    assert (dw == 0).all()


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
    x, dy = make(x_shape, f_shape, geometry, np.float32, seed=2)
    x, dy = arrange(x, layout), arrange(dy, layout)
    with workspace_limit(limit):
        results = [run(x, dy, f_shape, geometry, groups, np.float32, num_threads=t)
                   for t in (1, 2, 3)]
    assert_close(results[0], reference(x, dy, geometry, groups), np.float32,
                 reduction(x, geometry))
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes()


def test_partials_fit_a_tiny_workspace():
    """A limit below one partial sum still computes (one unit), and correctly."""
    geometry = forward_geometry((9, 9), (3, 3), (1, 1), (1, 1), "SAME")
    x, dy = make((3, 9, 9, 6), (3, 3, 6, 7), geometry, np.float64)
    with workspace_limit(1):
        dw = run(x, dy, (3, 3, 6, 7), geometry, 1, np.float64, num_threads=2)
    assert_close(dw, reference(x, dy, geometry, 1), np.float64, reduction(x, geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_nhwc(dtype):
    """1x1 stride 1 in NHWC memory: x copied chunk by chunk (its im2col), matching the direct
    loop, bitwise alike for 1 and 2 threads, across several chunks (a chunk holds 1024
    pixels)."""
    geometry = forward_geometry((40, 30), (1, 1), (1, 1), (1, 1), "VALID")
    x, dy = make((2, 40, 30, 24), (1, 1, 24, 20), geometry, dtype, seed=3)
    one = run(x, dy, (1, 1, 24, 20), geometry, 1, dtype, num_threads=1)
    two = run(x, dy, (1, 1, 24, 20), geometry, 1, dtype, num_threads=2)
    np.testing.assert_array_equal(one, two)
    assert_close(one, reference(x, dy, geometry, 1), dtype, reduction(x, geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("limit", [None, 20000])
def test_small_nchw_images_span_chunks(dtype, limit):
    """Channel-major (NCHW) images smaller than a chunk: dy copied a chunk at a time so that a
    GEMM sums over several images, across image and unit boundaries (the chunk ends mid-image),
    within the workspace limit; bitwise alike for 1 and 2 threads."""
    geometry = forward_geometry((7, 5), (3, 3), (2, 2), (1, 1), "SAME")
    x, dy = make((37, 7, 5, 6), (3, 3, 3, 8), geometry, dtype, seed=4)
    x, dy = arrange(x, "NCHW"), arrange(dy, "NCHW")
    with workspace_limit(limit):
        one = run(x, dy, (3, 3, 3, 8), geometry, 2, dtype, num_threads=1)
        two = run(x, dy, (3, 3, 3, 8), geometry, 2, dtype, num_threads=2)
    np.testing.assert_array_equal(one, two)
    assert_close(one, reference(x, dy, geometry, 2), dtype, reduction(x, geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("limit", [None, 30000, 1])
def test_small_strided_nchw_images_restaged(dtype, limit):
    """Channel-major images smaller than a chunk, stride 2, 16+ channels a group: the input
    rows are restaged in NHWC order and out_backprop copied pixel-major (refused for a tiny
    workspace); chunks end mid-image; bitwise alike for 1 and 2 threads."""
    geometry = forward_geometry((7, 9), (3, 3), (2, 2), (1, 1), "SAME")
    x, dy = make((29, 7, 9, 32), (3, 3, 16, 6), geometry, dtype, seed=5)
    x, dy = arrange(x, "NCHW"), arrange(dy, "NCHW")
    with workspace_limit(limit):
        _, plan = _engine._filter_plan(x.shape, x.strides, dy.shape, dy.strides, (3, 3, 16, 6),
                                       np.dtype(dtype), geometry, 2, "gemm", False, 2,
                                       _engine.get_workspace_limit())
        one = run(x, dy, (3, 3, 16, 6), geometry, 2, dtype, num_threads=1)
        two = run(x, dy, (3, 3, 16, 6), geometry, 2, dtype, num_threads=2)
    assert (plan.params["restage_rows"] > 0) == (limit is None)
    np.testing.assert_array_equal(one, two)
    assert_close(one, reference(x, dy, geometry, 2), dtype, reduction(x, geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_cut_to_small_gemms(dtype):
    """Pixel-major out_backprop (NHWC) and a small filter matrix (108 taps x 64 filters): the
    sums run over chunks of 144 pixels, each GEMM within OpenBLAS's small-matrix kernels, across
    images; channel-major out_backprop (NCHW) keeps cache-sized chunks.  Both match the direct
    loop, bitwise alike for 1 and 2 threads."""
    geometry = forward_geometry((15, 13), (3, 3), (1, 1), (1, 1), "SAME")
    f_shape = (3, 3, 12, 64)
    x, dy = make((3, 15, 13, 12), f_shape, geometry, dtype, seed=6)
    expected = reference(x, dy, geometry, 1)
    for layout in LAYOUTS:
        ax, ady = arrange(x, layout), arrange(dy, layout)
        one = run(ax, ady, f_shape, geometry, 1, dtype, num_threads=1)
        two = run(ax, ady, f_shape, geometry, 1, dtype, num_threads=2)
        _, plan = _engine._filter_plan(ax.shape, ax.strides, ady.shape, ady.strides, f_shape,
                                       np.dtype(dtype), geometry, 1, "gemm", False, 2,
                                       _engine.get_workspace_limit())
        chunk = plan.params["chunk_pixels"]
        assert chunk == 144 if layout == "NHWC" else chunk > 144
        np.testing.assert_array_equal(one, two)
        assert_close(one, expected, dtype, reduction(x, geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_large_filter_matrix_gemms_in_column_blocks(dtype, groups):
    """A filter matrix too large for whole small-matrix GEMMs (1000 taps x 48 filters a group),
    pixel-major out_backprop (NHWC or a strided view of it, then copied), float32: sums over
    chunks of 128 pixels whose GEMMs compute 162 taps at a time; float64 and channel-major
    out_backprop (NCHW) keep whole GEMMs.  All match the direct loop, bitwise alike for 1 and
    2 threads."""
    geometry = forward_geometry((12, 11), (5, 5), (1, 1), (1, 1), "SAME")
    f_shape = (5, 5, 40, 48 * groups)
    x, dy = make((2, 12, 11, 40 * groups), f_shape, geometry, dtype, seed=10)
    expected = reference(x, dy, geometry, groups)
    for layout, memory in (("NHWC", None), ("NHWC", "strided"), ("NCHW", None)):
        ax = arrange(x, layout)
        ady = arrange(dy, layout) if memory is None else arrange(dy, layout, memory)
        one = run(ax, ady, f_shape, geometry, groups, dtype, num_threads=1)
        two = run(ax, ady, f_shape, geometry, groups, dtype, num_threads=2)
        _, plan = _engine._filter_plan(ax.shape, ax.strides, ady.shape, ady.strides, f_shape,
                                       np.dtype(dtype), geometry, groups, "gemm", False, 2,
                                       _engine.get_workspace_limit())
        blocks = dtype == np.float32 and layout == "NHWC"
        assert plan.params["gemm_taps"] == (162 if blocks else 0)
        np.testing.assert_array_equal(one, two)
        assert_close(one, expected, dtype, reduction(x, geometry))
