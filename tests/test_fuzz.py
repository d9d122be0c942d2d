"""Fuzzing conv2d_backprop_input: random calls, valid and malformed.

:func:`build_case` draws one call -- a valid geometry in random argument spellings, layouts,
memory views and dtypes, then (often) one or two corruptions whose invalidity is certain -- and
:func:`check_case` asserts the outcome: a valid call returns the direct loop's result (written
only where it should be), a malformed one raises ``ValueError`` or ``TypeError`` naming the
corrupted argument.  The hypothesis test here draws cases through hypothesis;
``examples/fuzz.py`` draws many more with NumPy's generator in child processes.
"""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convbp
from oracle import assert_close, direct_backprop_input, tf_same_pads


def _tf_out(size, k, s, d, pads):
    """TensorFlow's output size for VALID/explicit padding, None where it raises:
    (padded - dilated kernel + stride) / stride truncated toward zero, an error below 0; an
    empty input has an empty output rather than an error."""
    excess = size + pads[0] + pads[1] - (k - 1) * d - 1 + s
    if excess <= -s:
        return 0 if size == 0 else None
    return max(excess, 0) // s


NAMES = ("input_sizes", "filter", "out_backprop", "strides", "dilations", "padding",
         "explicit_paddings", "data_format", "out", "num_threads", "dtype")
HUGE = 2**31 - 1


class NumpyDraw:
    """Draws from a NumPy generator (examples/fuzz.py)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def int(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options):
        return options[self.int(0, len(options) - 1)]

    def chance(self, p):
        return self.rng.random() < p


class HypothesisDraw(NumpyDraw):
    """Draws through hypothesis's ``data`` object, so failures shrink."""

    def __init__(self, data):
        self.data = data
        self.rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="values"))

    def int(self, lo, hi):
        return self.data.draw(st.integers(lo, hi))

    def chance(self, p):
        return self.data.draw(st.integers(0, 999)) < p * 1000


def _to_layout(arr_nhwc, data_format):
    return arr_nhwc if data_format == "NHWC" else arr_nhwc.transpose(0, 3, 1, 2)


def _dress(draw, arr):
    """The same values as another array object: a view, copy, byte order or nested list."""
    kind = draw.choice(["plain", "plain", "fortran", "sliced", "negative", "big-endian",
                        "unaligned", "list", "readonly"])
    if kind == "fortran":
        return np.asfortranarray(arr)
    if kind == "sliced":
        big = np.zeros(tuple(2 * s + 1 for s in arr.shape), arr.dtype)
        view = big[tuple(slice(1, 1 + 2 * s, 2) for s in arr.shape)]
        view[...] = arr
        return view
    if kind == "negative":
        flipped = arr[::-1, :, ::-1].copy()
        return flipped[::-1, :, ::-1]
    if kind == "big-endian":
        return arr.astype(arr.dtype.newbyteorder(">"))
    if kind == "unaligned":
        raw = bytearray(b"\0" + arr.tobytes())
        return np.frombuffer(raw, arr.dtype, arr.size, offset=1).reshape(arr.shape)
    if kind == "list" and arr.size and arr.dtype != np.float16:  # lists lose empty axes
        return arr.tolist()
    if kind == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    return np.ascontiguousarray(arr)


def _spatial(draw, pair, data_format):
    """strides / dilations spelled as int, pair, 4 ints in data_format order, or an array."""
    h, w = pair
    kind = draw.int(0, 3)
    if kind == 0 and h == w:
        return h
    if kind == 1:
        return [1, h, w, 1] if data_format == "NHWC" else [1, 1, h, w]
    if kind == 2:
        return np.array(pair, draw.choice([np.int32, np.int64]))
    return (np.int64(h), w) if draw.chance(0.2) else (h, w)


def build_case(draw):
    """One call: (args, kwargs, expect); expect is ("result", info) or ("error", names)."""
    rng = draw.rng
    dtype = np.dtype(draw.choice([np.float32, np.float64, np.float32, np.float16]))
    data_format = draw.choice(["NHWC", "NCHW"])
    n = draw.choice([0, 1, 1, 2, 3])
    groups = draw.choice([1, 1, 1, 2, 3])
    cg, fg = draw.choice([0, 1, 1, 2, 3]), draw.choice([0, 1, 1, 2, 3])
    if cg == 0:
        groups = 1
    c, f = cg * groups, fg * groups
    kernel = (draw.int(1, 4), draw.int(1, 4))
    in_hw = (draw.choice([0, 1, 2, 3, 5, 6, 7, 8]), draw.choice([0, 1, 2, 3, 4, 6, 8]))
    if draw.chance(0.05):  # tall images with few of them: the kernel splits them into bands
        n, in_hw = draw.int(1, 2), (draw.int(16, 48), draw.int(1, 10))
    huge_axis = draw.int(0, 1) if draw.chance(0.1) else None
    strides, dilations = [], []
    for axis in range(2):
        s, d = draw.int(1, 3), draw.choice([1, 1, 1, 2, 3])
        if axis == huge_axis:
            s = draw.choice([2**30, HUGE, s])
            d = draw.choice([2**30, HUGE, d])
        strides.append(s)
        dilations.append(d)
    strides, dilations = tuple(strides), tuple(dilations)

    mode = draw.choice(["SAME", "VALID", "EXPLICIT", "pairs", "flat", "tf-pairs"])
    pads = ((0, 0), (0, 0))
    if mode not in ("SAME", "VALID"):
        pads = tuple((draw.int(0, 3), draw.int(0, 3)) for _ in range(2))
        if huge_axis is not None and strides[huge_axis] >= 2**30 and draw.chance(0.5):
            pads = tuple((HUGE, p[1]) if a == huge_axis else p for a, p in enumerate(pads))
    fits = all(_tf_out(size, k, s, d, p) is not None
               for size, k, s, d, p in zip(in_hw, kernel, strides, dilations, pads))
    if not fits and draw.chance(0.8):
        mode = "SAME"  # keep most calls valid; the rest test "kernel larger than the input"
    if mode == "SAME":
        pads = tf_same_pads(in_hw, kernel, strides, dilations)
        out_hw = tuple(-(-size // s) for size, s in zip(in_hw, strides))
    else:
        out_hw = tuple(_tf_out(size, k, s, d, p)
                       for size, k, s, d, p in zip(in_hw, kernel, strides, dilations, pads))

    filt = rng.standard_normal(kernel + (cg, f)).astype(dtype)
    dy = rng.standard_normal((n,) + tuple(o or 0 for o in out_hw) + (f,)).astype(dtype)
    if draw.chance(0.05) and dy.size:
        dy.flat[draw.int(0, dy.size - 1)] = draw.choice([np.nan, np.inf, -np.inf])
    if draw.chance(0.03) and filt.size:
        filt.flat[draw.int(0, filt.size - 1)] = draw.choice([np.nan, np.inf])

    # Spell the arguments.
    sizes_nhwc = (n,) + in_hw + (c,)
    sizes = sizes_nhwc if data_format == "NHWC" else (n, c) + in_hw
    if groups == 1 and draw.chance(0.2):
        input_sizes = list(in_hw)
    else:
        input_sizes = draw.choice([tuple, list, np.array])(sizes)
    padding, explicit = mode, None
    if mode == "EXPLICIT":
        flat = [0, 0, *pads[0], *pads[1], 0, 0]
        explicit = flat if data_format == "NHWC" else flat[:2] + flat[6:] + flat[2:6]
    elif mode == "pairs":
        padding = tuple(tuple(p) for p in pads)
    elif mode == "flat":
        padding = [*pads[0], *pads[1]]
    elif mode == "tf-pairs":
        quad = [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]
        padding = quad if data_format == "NHWC" else [quad[0], quad[3], quad[1], quad[2]]
    filter_arg = _dress(draw, filt)
    dy_arg = _dress(draw, _to_layout(dy, data_format))
    kwargs = dict(data_format=data_format, num_threads=draw.choice([None, 1, 1, 1, 2, 3]))
    if not (dilations == (1, 1) and draw.chance(0.5)):
        kwargs["dilations"] = _spatial(draw, dilations, data_format)
    if explicit is not None:
        kwargs["explicit_paddings"] = explicit
    elif draw.chance(0.1):
        kwargs["explicit_paddings"] = draw.choice([None, []])
    result_dtype = dtype
    if isinstance(filter_arg, list) and isinstance(dy_arg, list):
        result_dtype = np.dtype(np.float64)
    out_shape = tuple(sizes)
    out_info = None
    if draw.chance(0.3):
        big = np.full(tuple(s + 2 for s in out_shape), 77.0, result_dtype)
        view = big[tuple(slice(1, 1 + s) for s in out_shape)]
        if draw.chance(0.5):
            view = view[::-1]
        kwargs["out"] = view
        out_info = big
    args = [input_sizes, filter_arg, dy_arg, _spatial(draw, strides, data_format),
            padding]

    valid_geometry = all(o is not None for o in out_hw)
    if not valid_geometry:
        return args, kwargs, ("error", ("filter",))

    expect = ("result", dict(filt=filt, dy=dy, in_hw=in_hw, strides=strides,
                             dilations=dilations, pads=pads, groups=groups,
                             dtype=result_dtype, data_format=data_format, big=out_info,
                             reduction=max(fg * kernel[0] * kernel[1], 1)))
    names = set()
    for _ in range(draw.choice([0, 0, 0, 1, 1, 2])):
        with np.errstate(invalid="ignore"):  # NaN cast to int in a corrupted copy
            names.update(_corrupt(draw, args, kwargs, dict(
                sizes=sizes, filt=filt, dy=_to_layout(dy, data_format), dtype=dtype, c=c,
                data_format=data_format, out_shape=out_shape, result_dtype=result_dtype,
                two_int=len(input_sizes) == 2)))
    if names:
        expect = ("error", tuple(sorted(names)))
    return args, kwargs, expect


def _corrupt(draw, args, kwargs, base):
    """Break one argument in a way that is certainly invalid; return the names to expect."""
    target = draw.choice(["input_sizes", "filter", "out_backprop", "strides", "dilations",
                          "padding", "explicit_paddings", "data_format", "out", "num_threads",
                          "dtype"])
    sizes = list(base["sizes"])
    if target == "input_sizes":
        args[0] = draw.choice([
            sizes[:1], sizes[:3], sizes + [1], sizes * 3 + [1], [], None, "NHWC", 3, 3.0,
            np.array(4), np.array([sizes, sizes]), sizes[:1] + [-1] + sizes[2:],
            sizes[:1] + [2**62] + sizes[2:], sizes[:1] + [float(sizes[1])] + sizes[2:],
            sizes[:1] + [None] + sizes[2:], [True] + sizes[1:], range(10**12)])
        return {"input_sizes"}
    if target == "filter":
        filt = base["filt"]
        args[1] = draw.choice([
            None, 1.0, filt[0], filt[None], filt[:0], filt[:, :0],
            filt.astype(np.int32), filt.astype(np.complex64), filt > 0,
            filt.astype(object), [[["x"]]], {"a": 1}] + ([] if base["two_int"] else [
                # in-depth larger than the input depth (with (H, W) sizes C follows the filter)
                np.zeros(filt.shape[:2] + (base["c"] + 1, filt.shape[3]), filt.dtype)]))
        return {"filter", "dtype"}
    if target == "out_backprop":
        dy = base["dy"]
        axis = draw.int(0 if not base["two_int"] else 1, 3)
        shape = list(dy.shape)
        shape[axis] += 1 if shape[axis] == 0 or draw.chance(0.5) else -1
        args[2] = draw.choice([
            None, 1.0, np.zeros(dy.shape[1:], dy.dtype), dy[None], np.zeros(shape, dy.dtype),
            dy.astype(np.int64),
            dy.astype(complex), dy.astype(bool), dy.astype(object)])
        return {"out_backprop", "dtype"}
    if target in ("strides", "dilations"):
        junk = draw.choice([0, -1, 1.5, None, "2", [1, 1, 1], [1] * 5, 2**62, HUGE + 1,
                            [2, 1, 1, 1], [1, 0], True, np.array([[1, 1]]), [1, 2.0]])
        if target == "strides":
            args[3] = junk
        else:
            kwargs["dilations"] = junk
        return {target}
    if target == "padding":
        bad = draw.choice(["FULL", "", 5, None, b"SAME", object(), [[1, -1], [0, 0]], [1, 1],
                           [[1.0, 1], [1, 1]], [[0, 1], [1, 1], [1, 1], [0, 0]],
                           [[1, 2**40], [0, 0]], "EXPLICIT"])
        args[4] = bad
        kwargs.pop("explicit_paddings", None)
        return {"padding", "explicit_paddings"} if bad == "EXPLICIT" else {"padding"}
    if target == "explicit_paddings":
        good = [0, 0, 1, 1, 1, 1, 0, 0]
        if draw.chance(0.3):
            args[4] = draw.choice(["SAME", "VALID", ((1, 1), (1, 1))])
            kwargs["explicit_paddings"] = good
        else:
            args[4] = "EXPLICIT"
            kwargs["explicit_paddings"] = draw.choice([
                good[:4], [], good + [0], [0, 0, -1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1, 0, 0],
                [0, 0, 1, 1, 1, 1, 0, 2], [0, 0, 2**40, 0, 0, 0, 0, 0], "abc",
                [0, 0, 1.0, 1, 1, 1, 0, 0]])
        return {"explicit_paddings"}
    if target == "data_format":
        kwargs["data_format"] = draw.choice(["NCWH", "NCHW_VECT_C", "", None, 4, b"NHWC"])
        return {"data_format"}
    if target == "out":
        shape, rdtype = base["out_shape"], base["result_dtype"]
        other = np.float64 if rdtype != np.float64 else np.float32
        ro = np.zeros(shape, rdtype)
        ro.flags.writeable = False
        options = [np.zeros(shape + (1,), rdtype), np.zeros(shape, other),
                   np.zeros(shape, rdtype.newbyteorder(">")), ro, np.zeros(shape).tolist(),
                   np.zeros(shape[:3] + (shape[3] + 1,), rdtype)]
        if np.prod(shape) > 1:
            options.append(np.lib.stride_tricks.as_strided(
                np.zeros(1, rdtype), shape, (0, 0, 0, 0), writeable=True))
        kwargs["out"] = draw.choice(options)
        return {"out"}
    if target == "num_threads":
        kwargs["num_threads"] = draw.choice([0, -1, 1.5, "2", True, 2**40])
        return {"num_threads"}
    # dtype: two arrays of different (valid) float dtypes
    dtype = base["dtype"]
    other = draw.choice([t for t in (np.float16, np.float32, np.float64) if t != dtype])
    args[1] = base["filt"].astype(dtype)
    args[2] = base["dy"].astype(other)
    return {"dtype"}


def check_case(case):
    """Run one case; raise AssertionError if the outcome is wrong.  Returns a short label."""
    args, kwargs, (kind, info) = case
    try:
        result = convbp.conv2d_backprop_input(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert kind == "error", f"valid call raised {type(exc).__name__}: {message}"
        assert any(re.search(rf"\b{name}\b", message) for name in info), (
            f"message names none of {info}: {message}")
        return type(exc).__name__
    assert kind == "result", f"malformed call (expected an error naming {info}) returned"
    if "out" in kwargs:
        assert result is kwargs["out"]
    assert result.dtype == info["dtype"], (result.dtype, info["dtype"])
    dx = result if info["data_format"] == "NHWC" else result.transpose(0, 2, 3, 1)
    expected = direct_backprop_input(info["dy"], info["filt"], info["in_hw"], info["strides"],
                                     info["dilations"], info["pads"], info["groups"])
    assert dx.shape == expected.shape, (dx.shape, expected.shape)
    finite = np.isfinite(expected)
    actual = dx.astype(np.float64)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN positions differ"
    assert np.array_equal(actual[~finite], expected[~finite], equal_nan=True)
    assert_close(np.where(finite, actual, 0), np.where(finite, expected, 0), info["dtype"],
                 info["reduction"])
    if info["big"] is not None:
        inner = tuple(slice(1, -1) for _ in range(4))
        border = info["big"].copy()
        border[inner] = 77.0
        assert np.all(border == 77.0), "out= wrote outside its view"
    return "result"


def describe(case):
    """A readable reproducer for one case."""
    args, kwargs, (kind, info) = case

    def show(value):
        if isinstance(value, np.ndarray):
            return (f"<ndarray shape={value.shape} dtype={value.dtype} strides={value.strides} "
                    f"aligned={value.flags.aligned} writeable={value.flags.writeable}>")
        if isinstance(value, list) and len(repr(value)) > 200:
            return f"<nested list, array shape {np.shape(value)}>"
        return repr(value)

    names = ("input_sizes", "filter", "out_backprop", "strides", "padding")
    parts = [f"{k}={show(v)}" for k, v in zip(names, args)]
    parts += [f"{k}={show(v)}" for k, v in kwargs.items()]
    expected = f"error naming {info}" if kind == "error" else "result"
    return f"conv2d_backprop_input({', '.join(parts)})  # expected: {expected}"


@given(st.data())
def test_random_calls(data):
    # Example count from the conftest profile (60 in CI).
    case = build_case(HypothesisDraw(data))
    check_case(case)


@pytest.mark.parametrize("seed", range(40))
def test_fixed_seeds(seed):
    # A fixed sample from the same generator examples/fuzz.py uses.
    check_case(build_case(NumpyDraw(seed)))
