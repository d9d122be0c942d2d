"""The three ops are adjoint: <forward(x, w), dy> == <x, backprop_input(dy, w)> ==
<w, backprop_filter(x, dy)>, each side computed by a different kernel path of the engine.

Also the input gradient's work split: units of (image, band of rows, band of columns), so a
single image of a single row (a 1-D convolution) still feeds every core, with results bitwise
identical for any thread count.
"""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from arrays import LAYOUTS, arrange, conv_cases, out_array
from convbp import _engine
from convbp._geometry import forward_geometry
from oracle import assert_close, direct_backprop_input


def three_products(x, filt, dy, geometry, groups, layout, num_threads=None):
    y, _ = out_array(dy.shape, x.dtype, layout)
    dx, _ = out_array(x.shape, x.dtype, layout)
    dw = np.empty(filt.shape, x.dtype)
    _engine.forward(arrange(x, layout), filt, y, geometry, groups, num_threads)
    _engine.backprop_input(arrange(dy, layout), filt, dx, geometry, groups, num_threads)
    _engine.backprop_filter(arrange(x, layout), arrange(dy, layout), dw, geometry, groups,
                            num_threads)
    return (float(np.vdot(y, dy)), float(np.vdot(x, dx)), float(np.vdot(filt, dw)))


@given(case=conv_cases(), layout=st.sampled_from(LAYOUTS), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_adjoint_identities(case, layout, threads, seed):
    x_shape, f_shape, groups, geometry = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    filt = rng.standard_normal(f_shape)
    dy = rng.standard_normal((x_shape[0],) + tuple(geometry.out_hw) + (f_shape[3],))
    forward, data, weights = three_products(x, filt, dy, geometry, groups, layout, threads)
    # Each is a sum of the same products x*w*dy in a different order, as an inner sum (at most
    # filt.size or dy.size terms) inside an outer one (at most x.size, dy.size or filt.size):
    # each differs from the exact value by at most gamma_n * sum|products|, n <= the total.
    magnitude = three_products(np.abs(x), np.abs(filt), np.abs(dy), geometry, groups, layout)[0]
    n = x.size + filt.size + dy.size
    bound = 2 * 1.01 * n * np.finfo(np.float64).eps / 2 * magnitude + 1e-300
    assert abs(forward - data) <= bound
    assert abs(forward - weights) <= bound


# ---------------------------------------------------------------------------------------------
# The input gradient's work split.

def test_one_row_is_split_into_column_bands():
    """conv_transpose1d (input (1, 1026, 224), weight (1026, 1, 1024), stride 256) as a 2-D
    call: one image, one row, so the units are bands of columns."""
    geometry = forward_geometry((1, 58112), (1, 1024), (1, 256), (1, 1), "VALID")
    assert geometry.out_hw == (1, 224)
    rows, cols = _engine._bands(1, geometry, 2)
    assert rows == 1 and cols < 58112
    assert math.ceil(58112 / cols) % 2 == 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_shape, f_shape, groups, strides, padding", [
    ((1, 1, 6000, 1), (1, 256, 1, 24), 1, (1, 64), "VALID"),   # conv_transpose1d-like
    ((1, 1, 400, 6), (1, 7, 3, 4), 2, (1, 2), ((0, 0), (3, 3))),
    ((1, 3, 300, 4), (3, 5, 4, 5), 1, (1, 3), "SAME"),        # few rows, wide
    ((1, 30, 28, 8), (3, 3, 8, 8), 1, (2, 2), "SAME"),        # N = 1: row bands
    ((2, 1, 500, 4), (1, 1, 4, 6), 1, (1, 1), "VALID"),       # pointwise, column bands
])
def test_input_gradient_bitwise_identical_for_any_thread_count(x_shape, f_shape, groups,
                                                               strides, padding, layout):
    geometry = forward_geometry(x_shape[1:3], f_shape[:2], strides, (1, 1), padding)
    rng = np.random.default_rng(5)
    filt = rng.standard_normal(f_shape).astype(np.float32)
    dy = rng.standard_normal((x_shape[0],) + tuple(geometry.out_hw)
                             + (f_shape[3],)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        dx, _ = out_array(x_shape, np.float32, layout)
        _engine.backprop_input(arrange(dy, layout), filt, dx, geometry, groups, threads)
        results.append(np.ascontiguousarray(dx))
    expected = direct_backprop_input(dy, filt, geometry.in_hw, geometry.strides,
                                     geometry.dilations, geometry.pads, groups)
    assert_close(results[0], expected, np.float32,
                 f_shape[0] * f_shape[1] * f_shape[3] // groups)
    for other in results[1:]:
        assert other.tobytes() == results[0].tobytes()
