"""Shape, stride and padding arithmetic shared by every entry point.

Everything is computed in Python integers and checked before any allocation, so a nonsense size
raises a ``ValueError`` naming the argument instead of overflowing in a kernel.
"""

import functools
import operator
from typing import NamedTuple

import numpy as np

# Every size, stride, dilation and padding must stay below this, so that any index the kernels
# form (a sum of a few products of two such numbers) fits comfortably in a 64-bit Py_ssize_t.
MAX_DIM = 2**31 - 1

# Longest integer sequence any argument takes (explicit_paddings has 8); longer is refused
# before its items are read.
_MAX_LIST = 64

_LAYOUT_AXES = {"NHWC": (0, 1, 2, 3), "NCHW": (0, 2, 3, 1)}  # position of N, H, W, C


class ConvGeometry(NamedTuple):
    """One 2-D convolution, in logical NHWC terms.

    ``in_hw`` is the convolution's input (the gradient being computed), ``out_hw`` its output
    (the incoming ``out_backprop``); output pixel (oh, ow) reads input rows
    ``oh*stride_h - pad_top + kh*dilation_h`` for kh < KH (likewise columns).
    """

    in_hw: tuple
    out_hw: tuple
    kernel_hw: tuple
    strides: tuple
    dilations: tuple
    pads: tuple  # ((top, bottom), (left, right))


def check_data_format(data_format, allowed=("NHWC", "NCHW")):
    if not isinstance(data_format, str) or data_format.upper() not in allowed:
        raise ValueError(f"data_format must be one of {', '.join(allowed)}; got {data_format!r}")
    return data_format.upper()


def layout_axes(data_format):
    """Positions of the logical (N, H, W, C) axes in an array of ``data_format`` order."""
    return _LAYOUT_AXES[data_format]


def plain(value):
    """Whether ``value`` is None, a str, an int (not a bool) or a tuple of such, to any depth.

    Arguments of these kinds are checked alike whenever they compare equal (``True == 1`` and
    ``1.0 == 1``, which the checks tell apart, are excluded), so a checked call can be
    remembered by their values.
    """
    kind = type(value)
    if kind is tuple:
        for item in value:
            kind = type(item)
            if not (kind is int or kind is str or item is None or kind is tuple and plain(item)):
                return False
        return True
    return kind is int or kind is str or value is None


def as_int(value, name, *, minimum=None, maximum=MAX_DIM, _item=False):
    """``value`` as a Python int, refusing bools, floats and other non-integers."""
    if type(value) is int and (minimum is None or value >= minimum) and value <= maximum:
        return value  # the common case, without the checks' cost (bool is not exactly int)
    what = f"{name} must contain only integers" if _item else f"{name} must be an integer"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what}, got a bool ({value!r})")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{what}, got {value!r} of type {type(value).__name__}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    if result > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {result}")
    return result


def _plain_ints(value, minimum, maximum):
    """``value`` as a list if it is a short tuple or list of in-range Python ints, else None
    (then the general checks run, and raise where something is wrong)."""
    if type(value) in (tuple, list) and len(value) <= _MAX_LIST:
        for v in value:
            if type(v) is not int or v > maximum or (minimum is not None and v < minimum):
                return None
        return list(value)
    return None


def int_list(value, name, *, minimum=None, maximum=MAX_DIM):
    """A flat sequence (list, tuple or 1-D integer array) of ints."""
    plain = _plain_ints(value, minimum, maximum)
    if plain is not None:
        return plain
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a sequence of integers, got {value!r}")
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got an array of shape {value.shape}")
        value = value.tolist()
    try:
        count = len(value)
    except TypeError:
        count = None
    if count is not None and count > _MAX_LIST:
        # Refused before its items are read: a huge sequence must not be walked.
        raise ValueError(f"{name} must be a short sequence of integers (at most {_MAX_LIST}); "
                         f"actual length = {count}")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of integers, got {value!r}") from None
    if len(items) > _MAX_LIST:
        raise ValueError(f"{name} must be a short sequence of integers (at most {_MAX_LIST}); "
                         f"actual length = {len(items)}")
    return [as_int(v, name, minimum=minimum, maximum=maximum, _item=True) for v in items]


def spatial_pair(value, name, data_format, *, minimum=1):
    """An int, 1 int, an (h, w) pair, or 4 ints in ``data_format`` order with 1 at N and C ->
    (h, w), as ``tf.nn.conv2d`` takes its strides and dilations."""
    if type(value) is int and minimum <= value <= MAX_DIM:
        return value, value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = as_int(value, name, minimum=minimum)
        return v, v
    values = int_list(value, name, minimum=minimum)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return tuple(values)
    if len(values) == 4:
        n, h, w, c = (values[i] for i in layout_axes(data_format))
        if n != 1 or c != 1:
            raise ValueError(f"{name} must be 1 in the batch and channel dimensions, got "
                             f"{values} ({data_format})")
        return h, w
    raise ValueError(f"{name} must be an int, 1 or 2 ints (h, w) or 4 ints in {data_format} "
                     f"order; got {len(values)} values: {values}")


def spatial_single(value, name, data_format, *, minimum=1):
    """An int, 1 int, or 3 ints in ``data_format`` ("NWC" or "NCW") order with 1 at N and C ->
    the width's value, as ``tf.nn.conv1d`` takes its stride and dilations."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return as_int(value, name, minimum=minimum)
    values = int_list(value, name, minimum=minimum)
    if len(values) == 1:
        return values[0]
    if len(values) == 3:
        n, c = (values[0], values[2]) if data_format == "NWC" else (values[0], values[1])
        if n != 1 or c != 1:
            raise ValueError(f"{name} must be 1 in the batch and channel dimensions, got "
                             f"{values} ({data_format})")
        return values[1] if data_format == "NWC" else values[2]
    raise ValueError(f"{name} must be an int, 1 int or 3 ints in {data_format} order; got "
                     f"{len(values)} values: {values}")


def tf_padding(padding, explicit_paddings, data_format):
    """TensorFlow padding arguments -> "VALID", "SAME" or ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("VALID", "SAME", "EXPLICIT"):
            raise ValueError(f"padding must be 'VALID', 'SAME', 'EXPLICIT' or "
                             f"((top, bottom), (left, right)); got {padding!r}")
        if mode != "EXPLICIT":
            if explicit_paddings is not None and len(int_list(explicit_paddings,
                                                              "explicit_paddings")) != 0:
                raise ValueError(f"explicit_paddings must be empty unless padding is 'EXPLICIT' "
                                 f"(padding={padding!r}, explicit_paddings={explicit_paddings!r})")
            return mode
        if explicit_paddings is None:
            raise ValueError("explicit_paddings must be given (8 ints) when padding='EXPLICIT'")
        pads = int_list(explicit_paddings, "explicit_paddings", minimum=0)
        if len(pads) != 8:
            raise ValueError(f"explicit_paddings must have 8 ints, (before, after) for each "
                             f"dimension in {data_format} order; got {len(pads)}: {pads}")
        pairs = [tuple(pads[2 * i:2 * i + 2]) for i in range(4)]
        n, h, w, c = (pairs[i] for i in layout_axes(data_format))
        if n != (0, 0) or c != (0, 0):
            raise ValueError(f"explicit_paddings must be 0 in the batch and channel dimensions, "
                             f"got {pads} ({data_format})")
        return h, w
    if explicit_paddings is not None and len(int_list(explicit_paddings, "explicit_paddings")):
        raise ValueError("explicit_paddings must not be given when padding is a sequence of "
                         "(before, after) pairs")
    pairs = _four_pairs(padding)
    if pairs is not None:  # tf.nn.conv2d's [[0, 0], [top, bottom], [left, right], [0, 0]]
        n, h, w, c = (pairs[i] for i in layout_axes(data_format))
        if n != (0, 0) or c != (0, 0):
            raise ValueError(f"padding must be 0 in the batch and channel dimensions, got "
                             f"{[list(p) for p in pairs]} ({data_format})")
        return h, w
    return explicit_pairs(padding, "padding")


def _four_pairs(padding):
    """Four (before, after) int pairs from a nesting like [[0, 0], [1, 1], [1, 1], [0, 0]] (list,
    tuple or a (4, 2) integer array), else None."""
    if isinstance(padding, np.ndarray) and padding.shape == (4, 2):
        padding = padding.tolist()
    if not isinstance(padding, (list, tuple)) or len(padding) != 4:
        return None
    if not all(isinstance(p, (list, tuple, np.ndarray)) for p in padding):
        return None
    pairs = [tuple(int_list(p, "padding", minimum=0)) for p in padding]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"padding must be (before, after) pairs; got {padding!r}")
    return pairs


def explicit_pairs(padding, name):
    """((top, bottom), (left, right)) from that nesting or from 4 ints top, bottom, left, right."""
    if type(padding) in (tuple, list) and len(padding) == 2:  # the common nesting, checked fast
        pairs = [_plain_ints(pair, 0, MAX_DIM) for pair in padding]
        if all(pair is not None and len(pair) == 2 for pair in pairs):
            return tuple(pairs[0]), tuple(pairs[1])
    if padding is None or isinstance(padding, (bytes, bool)):
        raise TypeError(f"{name} must be a string or ((top, bottom), (left, right)); "
                        f"got {padding!r}")
    try:
        items = list(padding)
    except TypeError:
        raise TypeError(f"{name} must be a string or ((top, bottom), (left, right)); "
                        f"got {padding!r}") from None
    if len(items) == 2 and all(not isinstance(v, (int, np.integer)) for v in items):
        flat = [v for pair in items for v in int_list(pair, name, minimum=0)]
        if len(flat) != 4:
            raise ValueError(f"{name} must be ((top, bottom), (left, right)); got {padding!r}")
    else:
        flat = int_list(items, name, minimum=0)
        if len(flat) != 4:
            raise ValueError(f"{name} must be ((top, bottom), (left, right)) or 4 ints; "
                             f"got {padding!r}")
    return (flat[0], flat[1]), (flat[2], flat[3])


def forward_geometry(in_hw, kernel_hw, strides, dilations, padding):
    """:func:`_forward_geometry` of the arguments as tuples of Python ints, remembered: a
    training loop asks for the same few geometries at every step."""
    if not isinstance(padding, str):
        padding = tuple(_ints(pair) for pair in padding)
    return _forward_geometry(_ints(in_hw), _ints(kernel_hw), _ints(strides), _ints(dilations),
                             padding)


def _ints(values):
    return tuple(map(operator.index, values))


@functools.lru_cache(maxsize=256)
def _forward_geometry(in_hw, kernel_hw, strides, dilations, padding):
    """Geometry of the forward convolution over ``in_hw`` (TensorFlow's size rules).

    ``padding`` is "VALID", "SAME" (output ceil(in/stride), the odd extra pad at the bottom and
    right) or explicit ((top, bottom), (left, right)).  "VALID" and explicit padding give
    TensorFlow's ``(padded - dilated kernel + stride) / stride`` rows, the division truncated
    toward zero as in C: a kernel overhanging the padded input by less than a stride gives an
    empty output (CVE-2022-35999's case), more is a ``ValueError``.  An empty input axis has an
    empty output.
    """
    out, pads = [], []
    for axis, name in enumerate(("height", "width")):
        size, k, s, d = in_hw[axis], kernel_hw[axis], strides[axis], dilations[axis]
        for value, what in ((k, f"filter {name}"), (s, "strides"), (d, "dilations")):
            if value > MAX_DIM:  # callers normally check strides and dilations already
                raise ValueError(f"{what} must be <= {MAX_DIM}, got {value}")
        effective = (k - 1) * d + 1
        if padding == "SAME":
            o = -(-size // s)  # an empty input (o = 0) has an empty output and no padding
            total = max((o - 1) * s + effective - size, 0) if o else 0
            out.append(o)
            pads.append((total // 2, total - total // 2))
            continue
        before, after = (0, 0) if padding == "VALID" else padding[axis]
        if max(before, after) > MAX_DIM:
            raise ValueError(f"padding must be <= {MAX_DIM}, got {padding}")
        padded = size + before + after
        excess = padded - effective + s
        o = excess // s if excess >= 0 else -(-excess // s)  # C's division
        if o < 0 and size == 0:
            o = 0  # nothing to convolve: an empty output
        if o < 0:
            raise ValueError(
                f"filter: the dilated kernel {name} ({k} taps, dilation {d}: {effective}) is "
                f"larger than the padded input {name} {padded} ({size} + padding {before} + "
                f"{after}) by a stride ({s}) or more; the output size would be negative")
        out.append(o)
        pads.append((before, after))
    return ConvGeometry(tuple(in_hw), tuple(out), tuple(kernel_hw), tuple(strides),
                        tuple(dilations), tuple(pads))


# =============================================================================================
# PyTorch geometry: torch.nn.grad.conv2d_input and torch.nn.functional.conv_transpose2d.
#
# PyTorch pads symmetrically by an int or an (h, w) pair, or by "valid" (no padding) or "same"
# (stride 1 only; total padding dilation*(k-1), left = total//2, the odd extra at the end).
# An input size is not determined by the output size when stride > 1: every size in
# [min, min + stride - 1] gives the same output, and conv2d_input's input_size picks one.

def torch_pair(value, name, *, minimum):
    """PyTorch's ``_pair``: an int, or a sequence of 1 or 2 ints -> (h, w)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = as_int(value, name, minimum=minimum)
        return v, v
    values = int_list(value, name, minimum=minimum)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return tuple(values)
    raise ValueError(f"{name} must be an int or 2 ints (h, w); got {len(values)} values: "
                     f"{values}")


def torch_single(value, name, *, minimum):
    """PyTorch's ``_single``: an int, or a sequence of 1 int."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return as_int(value, name, minimum=minimum)
    values = int_list(value, name, minimum=minimum)
    if len(values) != 1:
        raise ValueError(f"{name} must be an int or 1 int for a 1-D convolution; got "
                         f"{len(values)} values: {values}")
    return values[0]


def torch_padding(padding, kernel_hw, strides, dilations):
    """PyTorch's ``padding`` of a convolution -> ((top, bottom), (left, right)).

    An int or (h, w) pads both sides; "valid" is no padding; "same" (stride 1 only) pads
    ``dilation*(k - 1)`` in total, ``total // 2`` before and the rest after, as ``F.conv2d``.
    Strings are case-insensitive.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            if tuple(strides) != (1, 1):
                raise ValueError(f"padding='same' is not supported for strided convolutions "
                                 f"(stride={tuple(strides)})")
            pads = []
            for k, d in zip(kernel_hw, dilations):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"padding must be an int, 2 ints (h, w), 'valid' or 'same'; "
                         f"got {padding!r}")
    ph, pw = torch_pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def torch_forward_geometry(in_hw, kernel_hw, strides, dilations, pads):
    """Geometry of ``F.conv2d`` over an input of spatial size ``in_hw`` with explicit ``pads``.

    Output ``(in + pads - dilation*(k - 1) - 1) // stride + 1`` per axis; a dilated kernel
    larger than the padded input is PyTorch's error ("Kernel size can't be greater than actual
    input size").
    """
    padded = tuple(size + p[0] + p[1] for size, p in zip(in_hw, pads))
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilations))
    if any(p < e for p, e in zip(padded, effective)):
        raise ValueError(f"input: calculated padded input size per channel: {padded}. Kernel "
                         f"size (dilated): {effective}. Kernel size can't be greater than "
                         f"actual input size (input {tuple(in_hw)}, padding {tuple(pads)})")
    out = tuple((p - e) // s + 1 for p, e, s in zip(padded, effective, strides))
    return ConvGeometry(tuple(in_hw), out, tuple(kernel_hw), tuple(strides), tuple(dilations),
                        tuple(pads))


def torch_input_size_range(out_hw, kernel_hw, strides, dilations, pads):
    """The input sizes (per axis, [lo, hi]) whose convolution has output size ``out_hw``."""
    lo = tuple((o - 1) * s + (k - 1) * d + 1 - p[0] - p[1]
               for o, k, s, d, p in zip(out_hw, kernel_hw, strides, dilations, pads))
    hi = tuple(m + s - 1 for m, s in zip(lo, strides))
    return lo, hi


def torch_grad_input_geometry(in_hw, out_hw, kernel_hw, strides, dilations, pads):
    """Geometry of ``conv2d_input``: ``in_hw`` must be an input size giving ``out_hw``.

    Raises ``ValueError`` with PyTorch's message ("requested an input grad size of ...") when
    ``in_hw`` is outside the valid range, and when ``out_hw`` is empty (no convolution has an
    empty output).
    """
    in_hw, out_hw = tuple(in_hw), tuple(out_hw)
    if min(out_hw) < 1:
        raise ValueError(f"grad_output must have a non-empty spatial size, got {out_hw}; "
                         f"a convolution's output has at least one row and column")
    lo, hi = torch_input_size_range(out_hw, kernel_hw, strides, dilations, pads)
    if not all(a <= size <= b for size, a, b in zip(in_hw, lo, hi)):
        raise ValueError(f"input_size: requested an input grad size of {list(in_hw)}, but "
                         f"valid sizes range from {list(lo)} to {list(hi)} (for a grad_output "
                         f"of {out_hw}, stride {tuple(strides)}, dilation {tuple(dilations)}, "
                         f"padding {tuple(pads)}, kernel {tuple(kernel_hw)})")
    return ConvGeometry(in_hw, out_hw, tuple(kernel_hw), tuple(strides), tuple(dilations),
                        tuple(pads))


def torch_transpose_geometry(in_hw, kernel_hw, strides, padding, output_padding, dilations):
    """Geometry of ``conv_transpose2d`` over an input of spatial size ``in_hw``.

    The transposed convolution's input is the forward convolution's output and its output the
    forward input, of size ``(in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``
    per axis.  ``output_padding`` must be smaller than either the stride or the dilation (per
    axis), and the output size at least 1, as PyTorch requires.  The returned geometry's
    ``out_hw`` is ``in_hw`` -- the rows of the incoming gradient -- and its pads are ``padding``
    on both sides (only the top/left pads position anything).
    """
    for op, s, d in zip(output_padding, strides, dilations):
        if not (op < s or op < d):
            raise ValueError(f"output_padding must be smaller than either stride or dilation, "
                             f"but got output_padding {tuple(output_padding)}, stride "
                             f"{tuple(strides)}, dilation {tuple(dilations)}")
    out = tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, op, d
                in zip(in_hw, kernel_hw, strides, padding, output_padding, dilations))
    if min(out) < 1:
        raise ValueError(f"padding {tuple(padding)} is too large: given input size per channel "
                         f"{tuple(in_hw)}, the calculated output size per channel is {out}. "
                         f"Output size is too small")
    if max(out) > MAX_DIM:
        raise ValueError(f"stride {tuple(strides)}, dilation {tuple(dilations)} and kernel "
                         f"{tuple(kernel_hw)} give an output size per channel {out} above "
                         f"{MAX_DIM} for an input of size {tuple(in_hw)}")
    return ConvGeometry(out, tuple(in_hw), tuple(kernel_hw), tuple(strides), tuple(dilations),
                        tuple((p, p) for p in padding))


# =============================================================================================
# Blocks (convbp.dask): which rows of one operand a block of rows of another needs.

class TapWindow(NamedTuple):
    """The input rows ``[start, stop)`` that a run of output rows reads, and the explicit
    padding (before, after) under which the convolution of exactly those input rows gives
    exactly that run of output rows."""

    start: int
    stop: int
    pads: tuple


def tap_window(out_start, out_stop, kernel, stride, dilation, pad_before, lo, hi):
    """The :class:`TapWindow` of output rows ``[out_start, out_stop)`` (non-empty) within input
    rows ``[lo, hi)``: output row ``o`` reads input rows ``o*stride - pad_before + k*dilation``
    for ``k < kernel``; the rows outside ``[lo, hi)`` become padding.  Empty (``stop <=
    start``) when every tap of the run falls outside ``[lo, hi)``."""
    first = out_start * stride - pad_before  # the run's taps cover input rows [first, last)
    last = (out_stop - 1) * stride - pad_before + (kernel - 1) * dilation + 1
    start, stop = max(lo, first), min(hi, last)
    return TapWindow(start, stop, (start - first, last - stop))


class AxisHalo(NamedTuple):
    """What rows ``[lo, hi)`` of the input gradient need along one axis.

    out_backprop rows ``[out_start, out_stop)`` reach the block; they land in its rows
    ``[start, stop)`` (relative to ``lo``; the block's other rows are zero), which are the
    in-memory gradient of that region with explicit padding ``pads`` (before, after).  An empty
    ``[out_start, out_stop)`` means nothing reaches the block.
    """

    out_start: int
    out_stop: int
    start: int
    stop: int
    pads: tuple


def axis_halo(lo, hi, out_size, kernel, stride, dilation, pad_before):
    """The :class:`AxisHalo` of input rows ``[lo, hi)``: output row ``o`` reaches input rows
    ``o*stride - pad_before + k*dilation`` for ``k < kernel``."""
    reach = (kernel - 1) * dilation  # from the first tap to the last
    out_start = max(0, -(-(lo + pad_before - reach) // stride))  # first o whose last tap >= lo
    out_stop = min(out_size, (hi - 1 + pad_before) // stride + 1)  # past the last o, first tap < hi
    if hi <= lo or out_start >= out_stop:
        return AxisHalo(0, 0, 0, 0, (0, 0))
    # Padded to the run's whole window, its forward output is exactly out_stop - out_start rows.
    window = tap_window(out_start, out_stop, kernel, stride, dilation, pad_before, lo, hi)
    return AxisHalo(out_start, out_stop, window.start - lo, window.stop - lo, window.pads)
