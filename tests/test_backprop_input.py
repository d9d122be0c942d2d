"""Correctness of ``convbp.conv2d_backprop_input`` (TensorFlow ``Conv2DBackpropInput``).

Every result is checked against an independent reference: the direct float64 loop of
``oracle.py``, the forward convolution through the adjoint identity, or PyTorch autograd.
Arrays are built in logical NHWC order and converted to the layout under test, so one reference
serves every layout, memory order and argument form.
"""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import convbp
from oracle import (assert_close, direct_backprop_input, direct_conv2d, out_size, tf_same_pads,
                    tolerance, torch_backprop_input)

NCHW_FROM_NHWC = (0, 3, 1, 2)
NHWC_FROM_NCHW = (0, 2, 3, 1)
VALID_PADS = ((0, 0), (0, 0))


def to_format(a, data_format):
    """A logical NHWC array as a C-contiguous array in ``data_format`` order."""
    if data_format == "NHWC":
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(NCHW_FROM_NHWC))


def view_as(a, data_format):
    """A logical NHWC array viewed (no copy) in ``data_format`` order."""
    return a if data_format == "NHWC" else a.transpose(NCHW_FROM_NHWC)


def to_logical(a, data_format):
    """A ``data_format`` array viewed in logical NHWC order."""
    return a if data_format == "NHWC" else a.transpose(NHWC_FROM_NCHW)


def sizes_in(shape_nhwc, data_format):
    """4 ints (N, H, W, C) in ``data_format`` order."""
    return tuple(shape_nhwc[i] for i in NCHW_FROM_NHWC) if data_format == "NCHW" else tuple(
        shape_nhwc)


def explicit_8(pads, data_format):
    """((top, bottom), (left, right)) as TensorFlow's 8-int explicit_paddings."""
    (top, bottom), (left, right) = pads
    if data_format == "NHWC":
        return [0, 0, top, bottom, left, right, 0, 0]
    return [0, 0, 0, 0, top, bottom, left, right]


def random_operands(rng, n, in_hw, c, f, kernel_hw, strides, dilations, pads, dtype,
                    groups=1):
    """Random filter (HWIO) and out_backprop (logical NHWC) of the right shapes."""
    oh, ow = out_size(in_hw, kernel_hw, strides, dilations, pads)
    filt = rng.standard_normal(kernel_hw + (c // groups, f)).astype(dtype)
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    return filt, dy


def backprop(dy, filt, in_hw, strides, padding, data_format="NHWC", **kwargs):
    """convbp on a logical NHWC dy converted to C-contiguous ``data_format`` memory; the result
    is returned as a logical NHWC view."""
    n, c = dy.shape[0], filt.shape[2] * kwargs.pop("groups", 1)
    sizes = sizes_in((n,) + tuple(in_hw) + (c,), data_format)
    dx = convbp.conv2d_backprop_input(sizes, filt, to_format(dy, data_format), strides, padding,
                                      data_format=data_format, **kwargs)
    assert dx.shape == sizes
    assert dx.dtype == dy.dtype
    return to_logical(dx, data_format)


# ---------------------------------------------------------------------------------------------
# Geometry, by hypothesis, against the direct loop.

@st.composite
def geometries(draw, max_cost=2500):
    """A valid convolution geometry whose direct loop stays cheap (OH*OW*KH*KW <= max_cost)."""
    kernel = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    strides = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilations = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    in_hw = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    mode = draw(st.sampled_from(["VALID", "SAME", "EXPLICIT", "pairs"]))
    if mode == "VALID":
        pads = VALID_PADS
    elif mode == "SAME":
        pads = tf_same_pads(in_hw, kernel, strides, dilations)
    else:
        pads = tuple((draw(st.integers(0, 6)), draw(st.integers(0, 6))) for _ in range(2))
    for size, k, d, (before, after) in zip(in_hw, kernel, dilations, pads):
        assume(size + before + after >= (k - 1) * d + 1)
    oh, ow = out_size(in_hw, kernel, strides, dilations, pads)
    assume(oh * ow * kernel[0] * kernel[1] <= max_cost)
    return dict(in_hw=in_hw, kernel=kernel, strides=strides, dilations=dilations, mode=mode,
                pads=pads)


def spatial_arg(draw, pair, data_format):
    """An (h, w) pair as an int, a pair or 4 ints in ``data_format`` order."""
    forms = ["pair", "four"] + (["int"] if pair[0] == pair[1] else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return pair[0]
    if form == "pair":
        return tuple(pair)
    return [1, 1, pair[0], pair[1]] if data_format == "NCHW" else [1, pair[0], pair[1], 1]


def padding_args(geometry, data_format):
    """(padding, explicit_paddings) for a geometry drawn by :func:`geometries`."""
    mode, pads = geometry["mode"], geometry["pads"]
    if mode == "EXPLICIT":
        return "EXPLICIT", explicit_8(pads, data_format)
    if mode == "pairs":
        return pads, None
    return mode, None


@given(geometry=geometries(), n=st.integers(1, 3), c=st.integers(1, 9), f=st.integers(1, 9),
       data_format=st.sampled_from(["NHWC", "NCHW"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_geometry_matches_direct_loop(geometry, n, c, f, data_format, dtype, seed, data):
    g = geometry
    rng = np.random.default_rng(seed)
    filt, dy = random_operands(rng, n, g["in_hw"], c, f, g["kernel"], g["strides"],
                               g["dilations"], g["pads"], dtype)
    padding, explicit = padding_args(g, data_format)
    strides = spatial_arg(data.draw, g["strides"], data_format)
    dilations = spatial_arg(data.draw, g["dilations"], data_format)
    dx = backprop(dy, filt, g["in_hw"], strides, padding, data_format, dilations=dilations,
                  explicit_paddings=explicit)
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"],
                                     g["pads"])
    assert_close(dx, expected, dtype, f * g["kernel"][0] * g["kernel"][1])


@given(geometry=geometries(), n=st.integers(1, 3), c=st.integers(1, 9), f=st.integers(1, 9),
       data_format=st.sampled_from(["NHWC", "NCHW"]), seed=st.integers(0, 2**32 - 1))
def test_adjoint_identity(geometry, n, c, f, data_format, seed):
    """<conv2d(x, w), dy> == <x, conv2d_backprop_input(dy, w)> in float64."""
    g = geometry
    rng = np.random.default_rng(seed)
    filt, dy = random_operands(rng, n, g["in_hw"], c, f, g["kernel"], g["strides"],
                               g["dilations"], g["pads"], np.float64)
    x = rng.standard_normal((n,) + g["in_hw"] + (c,))
    padding, explicit = padding_args(g, data_format)
    dx = backprop(dy, filt, g["in_hw"], g["strides"], padding, data_format,
                  dilations=g["dilations"], explicit_paddings=explicit)
    conv = dict(strides=g["strides"], dilations=g["dilations"], pads=g["pads"])
    y = direct_conv2d(x, filt, dy.shape[1:3], **conv)
    lhs, rhs = np.vdot(y, dy), np.vdot(x, dx)
    # Both sides are sums of the same products x*w*dy; scale by the sum of their magnitudes.
    scale = np.vdot(direct_conv2d(np.abs(x), np.abs(filt), dy.shape[1:3], **conv), np.abs(dy))
    kh, kw = g["kernel"]
    length = (c + f) * kh * kw + max(x.size, dy.size)
    assert abs(lhs - rhs) <= tolerance(np.float64, length) * max(scale, 1e-300), (lhs, rhs)


# ---------------------------------------------------------------------------------------------
# PyTorch cross-check, including shapes big enough for several column-buffer chunks and bands.

TORCH_CASES = {
    # name: (N, H, W, C, F), (KH, KW), strides, dilations, padding, groups
    "same_even_kernel_asym": ((2, 8, 7, 3, 4), (4, 2), (2, 2), (1, 1), "SAME", 1),
    "same_stride3_odd_extra": ((1, 10, 11, 2, 3), (2, 3), (3, 3), (1, 1), "SAME", 1),
    "dilation_with_stride": ((2, 13, 12, 3, 5), (3, 3), (2, 3), (2, 2), "VALID", 1),
    "dilation_with_stride_same": ((1, 11, 9, 4, 2), (3, 2), (2, 1), (3, 2), "SAME", 1),
    "one_by_one": ((3, 6, 5, 7, 9), (1, 1), (1, 1), (1, 1), "VALID", 1),
    "one_by_one_stride2_same": ((2, 7, 8, 4, 6), (1, 1), (2, 2), (1, 1), "SAME", 1),
    "stride_larger_than_kernel": ((2, 11, 10, 3, 4), (2, 1), (4, 3), (1, 1), "VALID", 1),
    "large_kernel_7x7": ((1, 20, 18, 2, 3), (7, 7), (1, 1), (1, 1), "SAME", 1),
    "kernel_equals_input": ((2, 5, 6, 3, 2), (5, 6), (1, 1), (1, 1), "VALID", 1),
    "explicit_asymmetric": ((2, 9, 10, 3, 4), (3, 5), (2, 2), (1, 1), ((2, 0), (1, 3)), 1),
    "explicit_pad_beyond_kernel": ((1, 4, 5, 2, 3), (2, 2), (1, 2), (1, 1), ((3, 4), (0, 5)), 1),
    "grouped": ((2, 9, 8, 6, 4), (3, 3), (1, 1), (1, 1), "SAME", 2),
    "big_5x5": ((2, 32, 32, 16, 24), (5, 5), (1, 1), (1, 1), "SAME", 1),
    "big_5x5_stride2": ((2, 32, 32, 16, 24), (5, 5), (2, 2), (1, 1), "SAME", 1),
    "big_single_image_bands": ((1, 64, 48, 8, 12), (3, 3), (1, 1), (1, 1), "SAME", 1),
}


def torch_case(name, dtype, seed=0):
    (n, h, w, c, f), kernel, strides, dilations, padding, groups = TORCH_CASES[name]
    pads = tf_same_pads((h, w), kernel, strides, dilations) if padding == "SAME" else (
        VALID_PADS if padding == "VALID" else padding)
    rng = np.random.default_rng(seed)
    filt, dy = random_operands(rng, n, (h, w), c, f, kernel, strides, dilations, pads, dtype,
                               groups)
    return dict(dy=dy, filt=filt, in_hw=(h, w), strides=strides, dilations=dilations,
                padding=padding, pads=pads, groups=groups,
                length=f // groups * kernel[0] * kernel[1])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_matches_torch(name, dtype, data_format):
    pytest.importorskip("torch")
    k = torch_case(name, dtype)
    dx = backprop(k["dy"], k["filt"], k["in_hw"], k["strides"], k["padding"], data_format,
                  dilations=k["dilations"], groups=k["groups"])
    expected = torch_backprop_input(k["dy"], k["filt"], k["in_hw"], k["strides"],
                                    k["dilations"], k["pads"], k["groups"])
    assert_close(dx, expected, dtype, k["length"])


@pytest.fixture
def workspace_limit():
    """Set convbp's workspace limit for one test; the original is restored afterwards."""
    saved = []

    def set_limit(nbytes):
        previous = convbp.set_workspace_limit(nbytes)
        assert convbp.get_workspace_limit() == nbytes
        if not saved:
            saved.append(previous)
        return previous

    yield set_limit
    if saved:
        convbp.set_workspace_limit(saved[0])


def test_set_workspace_limit_returns_previous(workspace_limit):
    original = convbp.get_workspace_limit()
    assert workspace_limit(12345) == original
    assert convbp.set_workspace_limit(777) == 12345
    assert convbp.get_workspace_limit() == 777


# One geometry whose output rows (OW = 7) are split by chunks of 3 pixels, and one dilated.
WORKSPACE_CASES = {
    "same_stride2": ((2, 11, 13, 3, 4), (3, 4), (2, 2), (1, 1), "SAME"),
    "dilated_explicit": ((3, 12, 9, 2, 5), (2, 3), (1, 2), (2, 1), ((1, 2), (3, 0))),
}


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("chunk", ["below_one_row", 1, 3, 10])
@pytest.mark.parametrize("name", list(WORKSPACE_CASES))
def test_tiny_workspace(name, chunk, num_threads, data_format, workspace_limit):
    """Column buffers of 1 pixel, of 3 (splitting output rows) or of 10 (spanning rows)."""
    dtype = np.float32
    (n, h, w, c, f), kernel, strides, dilations, padding = WORKSPACE_CASES[name]
    pads = tf_same_pads((h, w), kernel, strides, dilations) if padding == "SAME" else padding
    filt, dy = random_operands(np.random.default_rng(3), n, (h, w), c, f, kernel, strides,
                               dilations, pads, dtype)
    row_bytes = kernel[0] * kernel[1] * c * np.dtype(dtype).itemsize
    workspace_limit(1 if chunk == "below_one_row" else chunk * row_bytes * num_threads)
    dx = backprop(dy, filt, (h, w), strides, padding, data_format, dilations=dilations,
                  num_threads=num_threads)
    expected = direct_backprop_input(dy, filt, (h, w), strides, dilations, pads)
    assert_close(dx, expected, dtype, f * kernel[0] * kernel[1])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("name", ["big_5x5_stride2", "big_single_image_bands"])
def test_tiny_workspace_big_shapes_match_torch(name, data_format, workspace_limit):
    pytest.importorskip("torch")
    k = torch_case(name, np.float32)
    kh, kw, c, _ = k["filt"].shape
    workspace_limit(5 * kh * kw * c * 4 * 2)  # 5-pixel chunks, 2 threads
    dx = backprop(k["dy"], k["filt"], k["in_hw"], k["strides"], k["padding"], data_format,
                  dilations=k["dilations"], num_threads=2)
    expected = torch_backprop_input(k["dy"], k["filt"], k["in_hw"], k["strides"],
                                    k["dilations"], k["pads"])
    assert_close(dx, expected, np.float32, k["length"])
