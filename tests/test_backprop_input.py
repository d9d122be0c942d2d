"""Correctness of ``convbp.conv2d_backprop_input`` (TensorFlow ``Conv2DBackpropInput``).

Every result is checked against an independent reference: the direct float64 loop of
``oracle.py``, the forward convolution through the adjoint identity, or PyTorch autograd.
Arrays are built in logical NHWC order and converted to the layout under test, so one reference
serves every layout, memory order and argument form.
"""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import arrays
from arrays import arrange, out_array
import convbp
from convbp import _engine, _winograd
from convbp._geometry import forward_geometry
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


# ---------------------------------------------------------------------------------------------
# Argument forms: every spelling of one call gives the same (bitwise) result.

FORM_GEOMETRY = dict(n=2, in_hw=(9, 8), c=3, f=4, kernel=(3, 2), strides=(2, 1),
                     dilations=(1, 2))


def form_case(dtype=np.float64, padding="SAME"):
    g = FORM_GEOMETRY
    pads = tf_same_pads(g["in_hw"], g["kernel"], g["strides"], g["dilations"]) if (
        padding == "SAME") else VALID_PADS
    filt, dy = random_operands(np.random.default_rng(7), g["n"], g["in_hw"], g["c"], g["f"],
                               g["kernel"], g["strides"], g["dilations"], pads, dtype)
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"], pads)
    return filt, dy, expected


def input_size_forms(shape_nhwc, data_format):
    sizes = sizes_in(shape_nhwc, data_format)
    h, w = shape_nhwc[1:3]
    return {"list": list(sizes), "tuple": tuple(sizes), "int32": np.array(sizes, np.int32),
            "int64": np.array(sizes, np.int64), "numpy_ints": tuple(np.int64(v) for v in sizes),
            "hw_tuple": (h, w), "hw_list": [h, w], "hw_int32": np.array([h, w], np.int32)}


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("form", list(input_size_forms((1, 2, 3, 4), "NHWC")))
def test_input_sizes_forms(form, data_format):
    g = FORM_GEOMETRY
    filt, dy, expected = form_case()
    sizes = input_size_forms((g["n"],) + g["in_hw"] + (g["c"],), data_format)[form]
    dx = convbp.conv2d_backprop_input(sizes, filt, to_format(dy, data_format), g["strides"],
                                      "SAME", data_format=data_format, dilations=g["dilations"])
    assert dx.shape == sizes_in((g["n"],) + g["in_hw"] + (g["c"],), data_format)
    assert_close(to_logical(dx, data_format), expected, np.float64, g["f"] * 6)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_strides_and_dilations_forms(data_format):
    g = FORM_GEOMETRY
    filt, dy, expected = form_case()
    (sh, sw), (dh, dw) = g["strides"], g["dilations"]
    four = (lambda h, w: [1, 1, h, w]) if data_format == "NCHW" else (lambda h, w: [1, h, w, 1])
    stride_forms = [(sh, sw), [sh, sw], np.array([sh, sw]), four(sh, sw),
                    tuple(np.int32(v) for v in four(sh, sw)), np.array(four(sh, sw), np.int64)]
    dilation_forms = [(dh, dw), [dh, dw], four(dh, dw), np.array(four(dh, dw), np.int32)]
    results = []
    for strides in stride_forms:
        for dilations in dilation_forms:
            results.append(backprop(dy, filt, g["in_hw"], strides, "SAME", data_format,
                                    dilations=dilations))
    assert_close(results[0], expected, np.float64, g["f"] * 6)
    for dx in results[1:]:
        assert np.array_equal(dx, results[0])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_int_strides_and_dilations(data_format):
    filt, dy = random_operands(np.random.default_rng(8), 2, (10, 9), 3, 4, (3, 3), (2, 2),
                               (2, 2), VALID_PADS, np.float64)
    expected = direct_backprop_input(dy, filt, (10, 9), (2, 2), (2, 2), VALID_PADS)
    for strides, dilations in [(2, 2), (np.int64(2), np.int32(2)), ((2, 2), 2), (2, (2, 2))]:
        dx = backprop(dy, filt, (10, 9), strides, "VALID", data_format, dilations=dilations)
        assert_close(dx, expected, np.float64, 4 * 9)
    # dilations defaults to 1
    filt1, dy1 = random_operands(np.random.default_rng(9), 1, (7, 6), 2, 3, (2, 3), (1, 1),
                                 (1, 1), VALID_PADS, np.float64)
    dx = backprop(dy1, filt1, (7, 6), 1, "VALID", data_format)
    assert_close(dx, direct_backprop_input(dy1, filt1, (7, 6)), np.float64, 3 * 6)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_padding_strings(padding, data_format):
    g = FORM_GEOMETRY
    filt, dy, expected = form_case(padding=padding)
    dx = backprop(dy, filt, g["in_hw"], g["strides"], padding, data_format,
                  dilations=g["dilations"])
    assert_close(dx, expected, np.float64, g["f"] * 6)
    # An empty explicit_paddings is what TensorFlow passes with VALID and SAME.
    for empty in ([], ()):
        again = backprop(dy, filt, g["in_hw"], g["strides"], padding, data_format,
                         dilations=g["dilations"], explicit_paddings=empty)
        assert np.array_equal(again, dx)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_explicit_padding_forms(data_format):
    """EXPLICIT with 8 ints in data_format order, and ((top, bottom), (left, right)) directly."""
    pads = ((2, 0), (1, 3))
    in_hw, kernel, strides = (7, 6), (3, 4), (2, 1)
    filt, dy = random_operands(np.random.default_rng(10), 2, in_hw, 3, 5, kernel, strides,
                               (1, 1), pads, np.float64)
    expected = direct_backprop_input(dy, filt, in_hw, strides, (1, 1), pads)
    eight = explicit_8(pads, data_format)
    results = [backprop(dy, filt, in_hw, strides, "EXPLICIT", data_format, explicit_paddings=p)
               for p in (eight, tuple(eight), np.array(eight, np.int32))]
    results += [backprop(dy, filt, in_hw, strides, p, data_format)
                for p in (pads, [list(pads[0]), list(pads[1])])]
    assert_close(results[0], expected, np.float64, 5 * 12)
    for dx in results[1:]:
        assert np.array_equal(dx, results[0])


def test_explicit_paddings_nchw_order():
    """In NCHW the spatial (before, after) pairs are the last four of the eight ints."""
    in_hw, kernel = (6, 5), (2, 2)
    pads = ((0, 3), (2, 1))
    filt, dy = random_operands(np.random.default_rng(11), 1, in_hw, 2, 3, kernel, (1, 1), (1, 1),
                               pads, np.float64)
    dx = convbp.conv2d_backprop_input((1, 2) + in_hw, filt, to_format(dy, "NCHW"), 1,
                                      "EXPLICIT", data_format="NCHW",
                                      explicit_paddings=[0, 0, 0, 0, 0, 3, 2, 1])
    expected = direct_backprop_input(dy, filt, in_hw, pads=pads)
    assert_close(to_logical(dx, "NCHW"), expected, np.float64, 3 * 4)


# ---------------------------------------------------------------------------------------------
# Strided operands: any view must give the reference result.  Each variant holds the values of
# a logical NHWC array in different memory; for NCHW the same memory is passed transposed.

def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def embed(a, big_shape, index):
    """A view equal to ``a`` inside a larger array filled with NaN."""
    big = np.full(big_shape, np.nan, a.dtype)
    big[index] = a
    return big[index]


def reversed_view(a, axes):
    """A negative-stride view equal to ``a`` (the reversal of reversed data)."""
    index = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(a.ndim))
    return np.ascontiguousarray(a[index])[index]


DY_VARIANTS = {
    "every_other_pixel": lambda a: embed(a, (a.shape[0], 2 * a.shape[1], 2 * a.shape[2],
                                            a.shape[3]), np.s_[:, ::2, ::2, :]),
    "every_other_everything": lambda a: embed(a, tuple(2 * s for s in a.shape),
                                              np.s_[::2, ::2, ::2, ::2]),
    "channel_slice_in_place": lambda a: embed(a, a.shape[:3] + (a.shape[3] + 3,),
                                              np.s_[..., 1:a.shape[3] + 1]),
    "image_slice": lambda a: embed(a, (a.shape[0] + 2,) + a.shape[1:], np.s_[1:-1]),
    "nchw_memory_channel_slice": lambda a: embed(
        a.transpose(NCHW_FROM_NHWC), (a.shape[0], a.shape[3] + 2) + a.shape[1:3],
        np.s_[:, 2:]).transpose(NHWC_FROM_NCHW),
    "fortran_order": np.asfortranarray,
    "negative_channels": lambda a: reversed_view(a, (3,)),
    "negative_height_width": lambda a: reversed_view(a, (1, 2)),
    "negative_all": lambda a: reversed_view(a, (0, 1, 2, 3)),
    "negative_batch_in_place": lambda a: reversed_view(a, (0,)),
    "read_only": read_only,
    "crop_along_w": lambda a: embed(a, a.shape[:2] + (a.shape[2] + 3, a.shape[3]),
                                    np.s_[:, :, 1:a.shape[2] + 1, :]),
    "crop_along_h": lambda a: embed(a, (a.shape[0], a.shape[1] + 2) + a.shape[2:],
                                    np.s_[:, 2:, :, :]),
    "nchw_memory_as_nhwc": lambda a: np.ascontiguousarray(
        a.transpose(NCHW_FROM_NHWC)).transpose(NHWC_FROM_NCHW),
    "hwcn_memory": lambda a: np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2),
    "broadcast_batch": lambda a: np.broadcast_to(a[:1], a.shape),
    "broadcast_channels": lambda a: np.broadcast_to(a[..., :1], a.shape),
    "broadcast_width": lambda a: np.broadcast_to(a[:, :, :1], a.shape),
    "broadcast_scalar": lambda a: np.broadcast_to(a[:1, :1, :1, :1], a.shape),
}

FILTER_VARIANTS = {
    "fortran_order": np.asfortranarray,
    "negative_strides": lambda a: reversed_view(a, (0, 1, 2, 3)),
    "negative_out_depth": lambda a: reversed_view(a, (3,)),
    "read_only": read_only,
    "sliced": lambda a: embed(a, tuple(2 * s for s in a.shape), np.s_[::2, 1::2, ::2, 1::2]),
    "transposed_memory": lambda a: np.ascontiguousarray(a.transpose(3, 2, 1, 0)).transpose(
        3, 2, 1, 0),
}

STRIDED_GEOMETRY = dict(in_hw=(9, 8), kernel=(3, 2), strides=(2, 1), dilations=(1, 2))


def strided_case(dtype, n=2, c=3, f=5):
    g = STRIDED_GEOMETRY
    pads = tf_same_pads(g["in_hw"], g["kernel"], g["strides"], g["dilations"])
    filt, dy = random_operands(np.random.default_rng(12), n, g["in_hw"], c, f, g["kernel"],
                               g["strides"], g["dilations"], pads, dtype)
    return filt, dy, pads


def strided_call(dy, filt, data_format, **kwargs):
    """convbp on exactly the memory of ``dy`` (a logical NHWC array), in ``data_format``."""
    g = STRIDED_GEOMETRY
    sizes = sizes_in((dy.shape[0],) + g["in_hw"] + (filt.shape[2],), data_format)
    dx = convbp.conv2d_backprop_input(sizes, filt, view_as(dy, data_format), g["strides"],
                                      "SAME", data_format=data_format,
                                      dilations=g["dilations"], **kwargs)
    return to_logical(dx, data_format)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(DY_VARIANTS))
def test_strided_out_backprop(variant, dtype, data_format):
    g = STRIDED_GEOMETRY
    filt, dy, pads = strided_case(dtype)
    strided = DY_VARIANTS[variant](dy)
    values = np.array(strided)  # the logical values the variant holds
    assert not np.isnan(values).any()
    before = strided.copy()
    dx = strided_call(strided, filt, data_format)
    expected = direct_backprop_input(values, filt, g["in_hw"], g["strides"], g["dilations"], pads)
    assert_close(dx, expected, dtype, dy.shape[3] * 6)
    assert np.array_equal(strided, before)  # the operand is not modified


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", list(FILTER_VARIANTS))
def test_strided_filter(variant, dtype, data_format):
    g = STRIDED_GEOMETRY
    filt, dy, pads = strided_case(dtype)
    strided = FILTER_VARIANTS[variant](filt)
    assert np.array_equal(strided, filt)
    dx = strided_call(dy, strided, data_format)
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"], pads)
    assert_close(dx, expected, dtype, dy.shape[3] * 6)
    assert np.array_equal(strided, filt)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 5), (2, 1, 4, 5), (2, 5, 1, 3), (1, 3, 4, 1)],
                         ids=["one_pixel", "one_row", "one_column", "one_channel"])
@pytest.mark.parametrize("variant", ["every_other_everything", "negative_all",
                                     "nchw_memory_as_nhwc", "channel_slice_in_place",
                                     "nchw_memory_channel_slice", "fortran_order"])
def test_strided_out_backprop_degenerate_shapes(variant, shape, data_format):
    """Single-pixel, single-row, single-column and single-channel images (the strides of unit
    dimensions are arbitrary) read in place or copied."""
    n, oh, ow, f = shape
    in_hw, kernel = (oh + 1, ow + 2), (2, 3)
    rng = np.random.default_rng(13)
    filt = rng.standard_normal(kernel + (2, f))
    dy = rng.standard_normal(shape)
    strided = DY_VARIANTS[variant](dy)
    sizes = sizes_in((n,) + in_hw + (2,), data_format)
    dx = convbp.conv2d_backprop_input(sizes, filt, view_as(strided, data_format), 1, "VALID",
                                      data_format=data_format)
    expected = direct_backprop_input(dy, filt, in_hw)
    assert_close(to_logical(dx, data_format), expected, np.float64, f * 6)


# ---------------------------------------------------------------------------------------------
# out=: written in place through any strides, nothing outside it touched, returned as is.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["strided_slices", "negative_strides", "mixed_signs",
                                   "channels_last_view", "fortran_order"])
def test_out_strided_view(where, dtype, data_format):
    """``out`` is a view of a NaN-filled larger array in ``data_format`` memory, except
    ``channels_last_view``: NHWC memory, passed as an (N, C, H, W) view when data_format is NCHW.
    """
    filt, dy, _ = strided_case(dtype)
    n, (h, w), c = dy.shape[0], STRIDED_GEOMETRY["in_hw"], filt.shape[2]
    big_shape, index = {
        "strided_slices": ((n + 1, 2 * h, 3 * w + 1, c + 2), np.s_[1:, ::2, 1::3, 1:c + 1]),
        "negative_strides": ((n, h + 1, 2 * w, c), np.s_[::-1, h:0:-1, ::-2, ::-1]),
        "mixed_signs": ((n + 1, h, w + 4, 2 * c), np.s_[-1:0:-1, :, 2:w + 2, ::2]),
        "channels_last_view": ((n, h, w + 2, c + 1), np.s_[:, :, 1:w + 1, :c]),
        "fortran_order": ((n, h, w, c), np.s_[:, :, :, :]),
    }[where]
    big = np.full(big_shape, np.nan, dtype, order="F" if where == "fortran_order" else "C")
    view = big[index]  # logical NHWC
    if data_format == "NCHW" and where != "channels_last_view":
        # NCHW memory: the same spans in a (N, C, H, W) array.
        big = np.full(tuple(big_shape[i] for i in NCHW_FROM_NHWC), np.nan, dtype,
                      order="F" if where == "fortran_order" else "C")
        index = tuple(index[i] for i in NCHW_FROM_NHWC)
        view = big[index].transpose(NHWC_FROM_NCHW)
    assert view.shape == (n, h, w, c)
    out = view_as(view, data_format)
    original = big.copy()
    g = STRIDED_GEOMETRY
    result = convbp.conv2d_backprop_input(
        sizes_in((n, h, w, c), data_format), filt, view_as(dy, data_format), g["strides"], "SAME",
        data_format=data_format, dilations=g["dilations"], out=out)
    assert result is out
    pads = tf_same_pads(g["in_hw"], g["kernel"], g["strides"], g["dilations"])
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"], pads)
    assert_close(view, expected, dtype, dy.shape[3] * 6)
    outside = np.ones(big.shape, bool)
    outside[index] = False
    assert np.array_equal(big[outside], original[outside], equal_nan=True)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_out_is_fully_overwritten(data_format):
    """A contiguous out full of garbage (NaN and large values) is overwritten, not added to."""
    filt, dy, pads = strided_case(np.float64)
    g = STRIDED_GEOMETRY
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"], pads)
    sizes = sizes_in((dy.shape[0],) + g["in_hw"] + (filt.shape[2],), data_format)
    for fill in (np.nan, 1e30, -7.0):
        out = np.full(sizes, fill)
        result = convbp.conv2d_backprop_input(sizes, filt, to_format(dy, data_format),
                                              g["strides"], "SAME", data_format=data_format,
                                              dilations=g["dilations"], out=out)
        assert result is out
        assert_close(to_logical(out, data_format), expected, np.float64, dy.shape[3] * 6)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_out_untouched_rows_beyond_reach(data_format):
    """Input rows and columns no output pixel reads (VALID, stride > kernel) get zeros in out."""
    in_hw, kernel, strides = (11, 10), (2, 1), (4, 3)
    filt, dy = random_operands(np.random.default_rng(14), 2, in_hw, 3, 4, kernel, strides,
                               (1, 1), VALID_PADS, np.float32)
    sizes = sizes_in((2,) + in_hw + (3,), data_format)
    out = np.full(sizes, np.nan, np.float32)
    convbp.conv2d_backprop_input(sizes, filt, to_format(dy, data_format), strides, "VALID",
                                 data_format=data_format, out=out)
    expected = direct_backprop_input(dy, filt, in_hw, strides)
    assert (expected[:, 2::4] == 0).all() and (expected[:, :, 1::3] == 0).all()
    assert_close(to_logical(out, data_format), expected, np.float32, 4 * 2)
    assert np.array_equal(to_logical(out, data_format)[:, 2::4], expected[:, 2::4])


def test_result_is_c_contiguous_in_data_format():
    filt, dy, _ = strided_case(np.float32)
    for data_format in ("NHWC", "NCHW"):
        dx = convbp.conv2d_backprop_input(
            sizes_in((dy.shape[0],) + STRIDED_GEOMETRY["in_hw"] + (filt.shape[2],), data_format),
            filt, view_as(dy, data_format), STRIDED_GEOMETRY["strides"], "SAME",
            data_format=data_format, dilations=STRIDED_GEOMETRY["dilations"])
        assert dx.flags.c_contiguous and dx.flags.writeable and dx.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Threads: the split of work depends on the geometry only, so any thread count gives the same
# bits.  N=1 splits one image into bands of rows, N=3 shares images and bands, N=8 whole images.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_threads_bitwise_identical(n, data_format):
    in_hw, c, f, kernel, strides = (40, 36), 8, 6, (3, 3), (2, 2)
    pads = tf_same_pads(in_hw, kernel, strides, (1, 1))
    filt, dy = random_operands(np.random.default_rng(15), n, in_hw, c, f, kernel, strides,
                               (1, 1), pads, np.float32)
    results = [backprop(dy, filt, in_hw, strides, "SAME", data_format, num_threads=t)
               for t in (1, 2, None)]
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])
    if n == 1:
        expected = direct_backprop_input(dy, filt, in_hw, strides, pads=pads)
        assert_close(results[0], expected, np.float32, f * 9)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_threads_bitwise_identical_single_image_stride1(data_format):
    """One tall image, stride 1: bands of rows share output rows at their edges."""
    in_hw, c, f, kernel = (64, 20), 5, 7, (5, 3)
    pads = tf_same_pads(in_hw, kernel, (1, 1), (1, 1))
    filt, dy = random_operands(np.random.default_rng(16), 1, in_hw, c, f, kernel, (1, 1),
                               (1, 1), pads, np.float32)
    results = [backprop(dy, filt, in_hw, 1, "SAME", data_format, num_threads=t)
               for t in (1, 2, None)]
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])
    expected = direct_backprop_input(dy, filt, in_hw, pads=pads)
    assert_close(results[0], expected, np.float32, f * 15)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_threads_bitwise_identical_under_workspace_limit(data_format, workspace_limit):
    """The README promises the same bits for any thread count; a workspace limit must not
    change that (here it allows 14 pixels of column buffer in all)."""
    in_hw, c, f, kernel, strides = (40, 36), 8, 6, (3, 3), (2, 2)
    pads = tf_same_pads(in_hw, kernel, strides, (1, 1))
    filt, dy = random_operands(np.random.default_rng(17), 3, in_hw, c, f, kernel, strides,
                               (1, 1), pads, np.float32)
    workspace_limit(14 * kernel[0] * kernel[1] * c * 4)
    results = [backprop(dy, filt, in_hw, strides, "SAME", data_format, num_threads=t)
               for t in (1, 2)]
    expected = direct_backprop_input(dy, filt, in_hw, strides, pads=pads)
    assert_close(results[0], expected, np.float32, f * 9)
    assert_close(results[1], expected, np.float32, f * 9)
    assert np.array_equal(results[0], results[1])


# ---------------------------------------------------------------------------------------------
# Empty sizes and float16.

@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("n, in_hw, c, f, padding", [
    (0, (5, 4), 2, 3, "SAME"),
    (2, (5, 4), 0, 3, "SAME"),
    (2, (5, 4), 2, 0, "SAME"),
    (2, (5, 4), 2, 0, "VALID"),
    # TensorFlow's SAME gives an output of ceil(0/stride) = 0 for an empty input dimension.
    (2, (0, 4), 2, 3, "SAME"),
    (1, (6, 0), 2, 3, "SAME"),
])
def test_empty_sizes(n, in_hw, c, f, padding, data_format):
    """Zero-sized batch, channels or output channels give zeros of the right shape in ``out``."""
    kernel, strides = (3, 2), (2, 1)
    pads = tf_same_pads(in_hw, kernel, strides, (1, 1)) if padding == "SAME" else VALID_PADS
    oh, ow = out_size(in_hw, kernel, strides, (1, 1), pads)
    filt = np.ones(kernel + (c, f), np.float32)
    dy = np.ones((n, oh, ow, f), np.float32)
    sizes = sizes_in((n,) + in_hw + (c,), data_format)
    out = np.full(sizes, np.nan, np.float32)
    result = convbp.conv2d_backprop_input(sizes, filt, to_format(dy, data_format), strides,
                                          padding, data_format=data_format, out=out)
    assert result is out
    expected = direct_backprop_input(dy, filt, in_hw, strides, pads=pads)
    assert np.array_equal(to_logical(out, data_format), expected)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_float16_rounds_a_float32_result(data_format):
    """float16 operands are computed in float32 and the result rounded to float16."""
    filt, dy, pads = strided_case(np.float16)
    g = STRIDED_GEOMETRY
    sizes = sizes_in((dy.shape[0],) + g["in_hw"] + (filt.shape[2],), data_format)
    out = np.full(sizes, np.nan, np.float16)
    for result in (strided_call(dy, filt, data_format),
                   strided_call(dy, filt, data_format, out=view_as(to_logical(out, data_format),
                                                                   data_format))):
        assert result.dtype == np.float16
        exact = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"], pads)
        assert_close(result, exact, np.float16, dy.shape[3] * 6)
        # As good as rounding the float32 result: within one float16 ulp of the exact value.
        rounded = exact.astype(np.float16).astype(np.float64)
        ulp = np.spacing(np.abs(rounded).astype(np.float16)).astype(np.float64)
        assert (np.abs(result.astype(np.float64) - exact) <= ulp).all()
    assert not np.isnan(out).any()


# ---------------------------------------------------------------------------------------------
# Tall images: bands of rows (split by geometry) and column-buffer chunks (split by workspace).

@st.composite
def tall_geometries(draw):
    g = draw(st.fixed_dictionaries({
        "kernel": st.tuples(st.integers(1, 7), st.integers(1, 4)),
        "strides": st.tuples(st.integers(1, 4), st.integers(1, 3)),
        "dilations": st.tuples(st.integers(1, 3), st.integers(1, 2)),
        "in_hw": st.tuples(st.integers(16, 96), st.integers(1, 6)),
        "mode": st.sampled_from(["VALID", "SAME", "pairs"]),
    }))
    if g["mode"] == "VALID":
        g["pads"] = VALID_PADS
    elif g["mode"] == "SAME":
        g["pads"] = tf_same_pads(g["in_hw"], g["kernel"], g["strides"], g["dilations"])
    else:
        g["pads"] = tuple((draw(st.integers(0, 8)), draw(st.integers(0, 3))) for _ in range(2))
    for size, k, d, (before, after) in zip(g["in_hw"], g["kernel"], g["dilations"], g["pads"]):
        assume(size + before + after >= (k - 1) * d + 1)
    return g


@given(geometry=tall_geometries(), n=st.integers(1, 2), c=st.integers(1, 5),
       f=st.integers(1, 5), data_format=st.sampled_from(["NHWC", "NCHW"]),
       chunk=st.one_of(st.none(), st.integers(1, 20)), seed=st.integers(0, 2**32 - 1))
def test_tall_images_bands_and_chunks(geometry, n, c, f, data_format, chunk, seed):
    """One or two tall images split into bands of rows, with and without small column-buffer
    chunks."""
    g = geometry
    filt, dy = random_operands(np.random.default_rng(seed), n, g["in_hw"], c, f, g["kernel"],
                               g["strides"], g["dilations"], g["pads"], np.float32)
    padding, _ = padding_args(g, data_format)
    call = dict(dilations=g["dilations"])
    expected = direct_backprop_input(dy, filt, g["in_hw"], g["strides"], g["dilations"],
                                     g["pads"])
    length = f * g["kernel"][0] * g["kernel"][1]
    if chunk is None:
        results = [backprop(dy, filt, g["in_hw"], g["strides"], padding, data_format,
                            num_threads=t, **call) for t in (1, 2)]
        assert np.array_equal(results[0], results[1])
    else:
        row_bytes = g["kernel"][0] * g["kernel"][1] * c * 4
        previous = convbp.set_workspace_limit(chunk * row_bytes * 2)
        try:
            results = [backprop(dy, filt, g["in_hw"], g["strides"], padding, data_format,
                                num_threads=2, **call)]
        finally:
            convbp.set_workspace_limit(previous)
    assert_close(results[0], expected, np.float32, length)


@pytest.mark.parametrize("limit", [None, 3000, 61000, 100000])
@pytest.mark.parametrize("groups, strides, pads", [
    (1, (1, 1), ((1, 1), (1, 1))),
    (2, (2, 2), ((1, 0), (0, 1))),
    (1, (2, 1), ((0, 0), (2, 2))),
])
def test_many_small_images_one_gemm_across_them(groups, strides, pads, limit):
    """Units of several whole images (a GEMM spanning them, col2im image by image), chunks
    that need not divide an image: equal to the direct loop, bitwise equal for 1 and 2 threads,
    in NHWC and NCHW."""
    rng = np.random.default_rng(21)
    n, h, w, c, f = 37, 5, 4, 6, 8
    oh, ow = out_size((h, w), (3, 3), strides, (1, 1), pads)
    dy = rng.standard_normal((n, oh, ow, f))
    filt = rng.standard_normal((3, 3, c // groups, f))
    expected = direct_backprop_input(dy, filt, (h, w), strides, (1, 1), pads, groups)
    explicit = [0, 0, *pads[0], *pads[1], 0, 0]
    previous = convbp.set_workspace_limit(limit) if limit else None
    try:
        results = [convbp.tf.conv2d_backprop_input((n, h, w, c), filt, dy, [1, *strides, 1],
                                                   "EXPLICIT", explicit_paddings=explicit,
                                                   num_threads=threads, algorithm="gemm")
                   for threads in (1, 2)]
    finally:
        if limit:
            convbp.set_workspace_limit(previous)
    assert np.array_equal(results[0], results[1])
    assert_close(results[0], expected, np.float64, 9 * f // groups)


# Small NCHW images: units of several images whose GEMMs span them, out_backprop copied a chunk
# at a time; with 16 or more channels a group col2im adds into the unit's images in NHWC order.
@pytest.mark.parametrize("limit", [None, 3000, 61000])
@pytest.mark.parametrize("c, f, groups, strides, pads", [
    (6, 8, 1, (2, 2), ((1, 1), (1, 1))),      # few channels: no copy of the images
    (32, 24, 1, (2, 2), ((1, 1), (1, 1))),
    (36, 16, 2, (2, 1), ((1, 0), (0, 2))),
    (16, 8, 1, (1, 1), ((0, 0), (1, 1))),
])
@pytest.mark.parametrize("dy_memory", ["contiguous", "strided"])
@pytest.mark.parametrize("dx_layout, dx_view", [("NCHW", False), ("NCHW", True),
                                                 ("NHWC", False)])
def test_small_nchw_images_across_units(c, f, groups, strides, pads, dy_memory, dx_layout,
                                        dx_view, limit):
    """Channel-major out_backprop of small images: equal to the direct loop, bitwise equal for
    1 and 2 threads, whichever dx memory (a view left untouched outside), whatever the
    workspace limit (a tiny one refuses the copies)."""
    rng = np.random.default_rng(5)
    n, h, w = 37, 8, 7
    geometry = forward_geometry((h, w), (3, 3), strides, (1, 1), pads)
    dy = rng.standard_normal((n,) + tuple(geometry.out_hw) + (f,))
    filt = rng.standard_normal((3, 3, c // groups, f))
    expected = direct_backprop_input(dy, filt, (h, w), strides, (1, 1), pads, groups)
    dy = arrange(dy.astype(np.float32), "NCHW", dy_memory)
    filt = filt.astype(np.float32)
    results = []
    with arrays.workspace_limit(limit):
        for threads in (1, 2):
            dx, check = out_array((n, h, w, c), np.float32, dx_layout, dx_view)
            dx[...] = np.nan  # every element must be overwritten
            _engine.backprop_input(dy, filt, dx, geometry, groups, threads, "gemm")
            check()
            results.append(dx)
    np.testing.assert_array_equal(results[0], results[1])
    assert_close(results[0], expected, np.float32, 9 * f // groups)


@pytest.mark.parametrize("c, staged", [(6, False), (32, True)])
def test_small_nchw_images_plan(c, staged):
    """The plan of small NCHW images: units of several images (out_backprop copied a chunk at
    a time), their gradient staged in NHWC order from 16 channels a group; NHWC memory, whose
    out_backprop is one matrix, needs neither copy."""
    n, h, w, f = 64, 8, 8, 64
    geometry = forward_geometry((h, w), (3, 3), (2, 2), (1, 1), "SAME")
    dy = np.zeros((n, 4, 4, f), np.float32)
    for layout in ("NHWC", "NCHW"):
        dy_l = arrange(dy, layout)
        dx = arrange(np.zeros((n, h, w, c), np.float32), layout)
        _, plan = _engine._input_plan(dy_l.shape, dy_l.strides, (3, 3, c, f), dx.shape,
                                      dx.strides, np.dtype(np.float32), geometry, 1, "gemm",
                                      _winograd.AVAILABLE, 2, _engine.get_workspace_limit())
        assert plan.params["unit_images"] > 1
        assert plan.params["restage_rows"] == (h if staged and layout == "NCHW" else 0)
        assert plan.workspace_cols >= plan.params["chunk_pixels"] * 9 * c + (
            plan.params["chunk_pixels"] * f if layout == "NCHW" else 0) + (
            plan.params["unit_images"] * h * w * c if plan.params["restage_rows"] else 0)


@pytest.mark.parametrize("limit", [None, 2**20, 200_000])
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_extra_memory_within_the_workspace_limit(data_format, limit):
    """What a GEMM-path input-gradient call allocates beside its result (workspace with the
    out_backprop copy and the staged images, filter matrix, plan) stays within the limit."""
    import tracemalloc
    rng = np.random.default_rng(8)
    dy = to_format(rng.standard_normal((96, 4, 4, 64), dtype=np.float32), data_format)
    filt = rng.standard_normal((3, 3, 32, 64), dtype=np.float32)
    sizes = sizes_in((96, 8, 8, 32), data_format)
    kwargs = dict(data_format=data_format, num_threads=2, algorithm="gemm")
    with arrays.workspace_limit(limit):
        budget = convbp.get_workspace_limit()
        dx = convbp.tf.conv2d_backprop_input(sizes, filt, dy, 2, "SAME", **kwargs)
        tracemalloc.start()
        try:
            convbp.tf.conv2d_backprop_input(sizes, filt, dy, 2, "SAME", out=dx, **kwargs)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak <= budget + 4096  # a few Python objects beside the arrays
    expected = direct_backprop_input(to_logical(dy, data_format).astype(np.float64), filt,
                                     (8, 8), (2, 2), (1, 1), ((0, 1), (0, 1)))
    assert_close(to_logical(dx, data_format), expected, np.float32, 9 * 64)


@pytest.mark.parametrize("limit", [None, 200_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_filter_matrix_in_small_gemm_blocks(groups, dtype, limit):
    """Pixel-major columns (NHWC dx), 48 out_backprop channels and 1000 taps a group: the
    columns come from the transposed filter matrix, 160 taps a GEMM, over chunks of whole
    rows (121 pixels); channel-major columns (NCHW dx), or a workspace limit too small for the
    transposed copy, keep whole GEMMs.  dx NaN beforehand; equal to the direct loop, bitwise
    equal for 1 and 2 threads."""
    rng = np.random.default_rng(11)
    n, h, w, c, f = 2, 12, 11, 40 * groups, 48 * groups
    geometry = forward_geometry((h, w), (5, 5), (1, 1), (1, 1), "SAME")
    dy = rng.standard_normal((n, h, w, f))
    filt = rng.standard_normal((5, 5, 40, f))
    expected = direct_backprop_input(dy, filt, (h, w), (1, 1), (1, 1), geometry.pads, groups)
    dy, filt = dy.astype(dtype), filt.astype(dtype)
    with arrays.workspace_limit(limit):
        for layout in ("NHWC", "NCHW"):
            dy_l = arrange(dy, layout)
            results = []
            for threads in (1, 2):
                dx, check = out_array((n, h, w, c), dtype, layout, False)
                dx[...] = np.nan  # every element must be overwritten
                _engine.backprop_input(dy_l, filt, dx, geometry, groups, threads, "gemm")
                check()
                results.append(dx)
            _, plan = _engine._input_plan(dy_l.shape, dy_l.strides, filt.shape, dx.shape,
                                          dx.strides, np.dtype(dtype), geometry, groups, "gemm",
                                          _winograd.AVAILABLE, 2, _engine.get_workspace_limit())
            blocks = layout == "NHWC" and limit is None
            assert plan.params["gemm_taps"] == (160 if blocks else 0)
            if blocks:
                assert plan.params["chunk_pixels"] == 121
            np.testing.assert_array_equal(results[0], results[1])
            assert_close(results[0], expected, dtype, 25 * 48)
