"""TensorFlow-convention entry points (``convbp.tf``): the names and semantics of ``tf.raw_ops``
and ``tf.nn``.

Every entry point goes through :func:`tf_call`, which checks the arguments, views the arrays in
logical NHWC order (``np.transpose``, never a copy) with an HWIO filter, allocates or checks the
result, and runs one engine function.  The 1-D functions view their arrays with a height of 1
and call the 2-D ones; the depthwise functions are grouped convolutions with C groups.
"""

import functools
from typing import Any, Literal, NamedTuple, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _engine
from ._geometry import (ConvGeometry, check_data_format, forward_geometry, int_list,
                        layout_axes, plain, spatial_pair, spatial_single, tf_padding)

__all__ = ["choose_algorithm", "conv1d", "conv1d_transpose", "conv2d", "conv2d_backprop_filter",
           "conv2d_backprop_input", "conv2d_transpose", "depthwise_conv2d",
           "depthwise_conv2d_backprop_filter", "depthwise_conv2d_backprop_input"]

FloatArray = npt.NDArray[np.floating[Any]]
Ints = Union[int, Sequence[int], npt.NDArray[np.integer[Any]]]
Padding = Union[Literal["VALID", "SAME", "EXPLICIT"], Sequence[Any]]
Padding1D = Literal["VALID", "SAME"]
DataFormat = Literal["NHWC", "NCHW"]
DataFormat1D = Literal["NWC", "NCW"]
Algorithm = Literal["auto", "gemm", "winograd"]

# What each op computes and the API names of its three operands, in the order
# (convolution input or its size, filter or its size, output gradient).
_OPERANDS = {"forward": ("input", "filter", None),
             "input": ("input_sizes", "filter", "out_backprop"),
             "filter": ("input", "filter_sizes", "out_backprop")}
_ARRAYS = {"forward": (0, 1), "input": (1, 2), "filter": (0, 2)}  # which operands are arrays


def tf_sizes(sizes, name, data_format, n, c):
    """A shape argument (``input_sizes``, ``output_shape``): 4 ints in ``data_format`` order, or
    (H, W) with N and C given.  Returns logical (N, H, W, C)."""
    if isinstance(sizes, np.ndarray) and sizes.ndim == 0:
        raise ValueError(f"{name} must be a 1-D sequence of 4 (or 2) ints, got a 0-d array "
                         f"({sizes!r})")
    values = int_list(sizes, name, minimum=0)
    if len(values) == 4:
        return tuple(values[i] for i in layout_axes(data_format))
    if len(values) == 2:
        return (n, values[0], values[1], c)
    raise ValueError(f"{name} must have 4 ints ({data_format} order) or 2 ints (H, W): "
                     f"actual length = {len(values)}, expected 4 or 2 ({values})")


def _in_order(logical, axes):
    """A logical (N, H, W, C) shape in the order of the layout whose axes are ``axes``."""
    return tuple(logical[axes.index(i)] for i in range(4))


def _filter_sizes(filter_sizes, name):
    if isinstance(filter_sizes, np.ndarray) and filter_sizes.ndim == 0:
        raise ValueError(f"{name} must be a 1-D sequence of 4 ints, got a 0-d array")
    values = int_list(filter_sizes, name, minimum=0)
    if len(values) != 4:
        raise ValueError(f"{name} must have 4 ints (KH, KW, in-depth, out-depth): actual "
                         f"length = {len(values)} ({values})")
    return tuple(values)


def _conv2d_depth(c, filter_shape, names):
    """Check a Conv2D filter (KH, KW, C_in/groups, C_out) against input depth c -> groups."""
    c_group, f = filter_shape[2:]
    if c_group == 0 and c != 0 or c_group != 0 and c % c_group != 0 or c_group > c:
        # Equal depths, or a grouped convolution (C / C_in groups); an empty input depth
        # needs an empty filter in-depth.
        raise ValueError(f"{names[1]} in-depth {c_group} must divide the input depth {c} "
                         f"({names[0]}) and be at most it: actual = {c_group} (filter shape "
                         f"{filter_shape}), expected {c} or, for a grouped convolution, a "
                         f"divisor of {c}")
    groups = c // c_group if c_group else 1
    if groups > 1 and f % groups != 0:
        raise ValueError(f"{names[1]} out-depth {f} must be divisible by the {groups} groups "
                         f"that input depth {c} / filter in-depth {c_group} gives (filter "
                         f"shape {filter_shape})")
    return groups


def _depthwise_depth(c, filter_shape, names):
    """Check a depthwise filter (KH, KW, C, multiplier) against input depth c -> groups (C)."""
    if filter_shape[2] != c:
        raise ValueError(f"{names[1]} in-depth {filter_shape[2]} must equal the input depth "
                         f"{c} ({names[0]}); filter shape {filter_shape} is (KH, KW, C, "
                         f"multiplier)")
    return max(c, 1)


class TFCall:
    """A validated TensorFlow-convention call, ready to run.

    ``x`` (N, H, W, C), ``filter`` (KH, KW, C/groups, F) and ``y`` (N, OH, OW, F) are the
    logical NHWC / HWIO views the engine takes, one of them the result (a view of ``out``, the
    array returned, or a scratch array copied into ``out`` by :meth:`run`).
    """

    def __init__(self, op, x, filter, y, out, geometry, groups, threads, algorithm, scratch):
        self.op, self.x, self.filter, self.y, self.out = op, x, filter, y, out
        self.geometry, self.groups, self.threads, self.algorithm = (geometry, groups, threads,
                                                                    algorithm)
        self.scratch = scratch

    def run(self):
        _engine.compute(self.op, self.x, self.filter, self.y, self.geometry, self.groups,
                        self.threads, self.algorithm)
        if self.scratch is not None:
            self.out[...] = self.scratch
        return self.out


class _TFPlan(NamedTuple):
    """What the checks of a call find: the result's shape (``data_format`` order), the logical
    axes, the filter's shape and the engine's arguments."""

    axes: tuple
    shape: tuple
    filter_shape: tuple
    geometry: ConvGeometry
    groups: int
    threads: Optional[int]
    algorithm: str


def _tf_plan(op, shapes, dtype, sizes, strides, padding, data_format, dilations,
             explicit_paddings, num_threads, algorithm, depthwise, names):
    """The checks of :func:`tf_call` after its arrays are converted: ``shapes`` holds the
    operands' shapes (None for the size argument and the unused operand), ``sizes`` the size
    argument as given.  A function of its arguments' values only: remembered by
    ``_remembered_tf_plan`` when they are :func:`plain`."""
    axes = layout_axes(data_format)
    given = _ARRAYS[op]
    filter_axes = "(KH, KW, C, multiplier)" if depthwise else "(KH, KW, C_in, C_out)"
    for i in given:
        what = filter_axes if i == 1 else f"({data_format})"
        if len(shapes[i]) != 4:
            raise ValueError(f"{names[i]} must be 4-D {what}: actual shape = "
                             f"{shapes[i]}, expected 4 dimensions")

    filter_shape = _filter_sizes(sizes, names[1]) if op == "filter" else shapes[1]
    if op == "input":
        n, h, w, c = tf_sizes(sizes, names[0], data_format, shapes[2][axes[0]], filter_shape[2])
    else:
        n, h, w, c = (shapes[0][i] for i in axes)
    strides = spatial_pair(strides, "strides", data_format)
    dilations = spatial_pair(dilations, "dilations", data_format)
    pad = tf_padding(padding, explicit_paddings, data_format)
    threads = _engine.check_threads(num_threads)
    algorithm = _engine.check_algorithm(algorithm)

    kh, kw, _, f = filter_shape
    if kh == 0 or kw == 0:
        raise ValueError(f"{names[1]} must have a non-empty spatial size (KH, KW >= 1): actual "
                         f"shape = {filter_shape}")
    groups = (_depthwise_depth if depthwise else _conv2d_depth)(c, filter_shape, names)
    depth = c * f if depthwise else f
    if op == "input":
        _engine.check_result_size((n, h, w, c), dtype, names[0])
    elif op == "filter":
        _engine.check_result_size(filter_shape, dtype, names[1])
    for i in given:  # either may be copied (a strided view, or float16 widened to float32)
        _engine.check_result_size(shapes[i], dtype, names[i], "operand")
    geometry = forward_geometry((h, w), (kh, kw), strides, dilations, pad)
    y_shape = (n,) + geometry.out_hw + (depth,)
    if op == "forward":
        _engine.check_result_size(y_shape, dtype, f"{names[0]} and {names[1]}: the output of "
                                  f"shape", "output")
    else:
        y = tuple(shapes[2][i] for i in axes)  # the logical NHWC shape
        if y != y_shape:
            axis = next(i for i in range(4) if y[i] != y_shape[i])
            what = ("batch", "height", "width", "depth")[axis]
            raise ValueError(
                f"Size of {names[2]} doesn't match computed: {what}: actual = "
                f"{y[axis]}, computed = {y_shape[axis]} ({names[0]} "
                f"{(n, h, w, c)} NHWC, filter {filter_shape} {filter_axes}, strides "
                f"{strides}, dilations {dilations}, padding {padding!r})")

    if op == "filter":
        shape = tuple(filter_shape)
    else:
        shape = _in_order(y_shape if op == "forward" else (n, h, w, c), axes)
    return _TFPlan(axes, shape, tuple(filter_shape), geometry, groups, threads, algorithm)


# A training loop makes the same few calls at every step.  Exceptions are not remembered.
_remembered_tf_plan = functools.lru_cache(maxsize=256)(_tf_plan)


def tf_call(op, input, filter, out_backprop, strides, padding, data_format, dilations,
            explicit_paddings, out, num_threads, algorithm, *, depthwise=False, names=None):
    """Validate a TensorFlow-convention call of ``op`` and prepare it (:class:`TFCall`).

    ``op`` is "forward" (``input`` and ``filter`` arrays; ``out_backprop`` unused), "input"
    (``input`` is the input's sizes) or "filter" (``filter`` is the filter's sizes).  The
    filter is (KH, KW, C_in/groups, C_out) (groups implied by the depths), or with
    ``depthwise`` (KH, KW, C, multiplier).  ``names`` are the API's names of the three
    operands, for messages (default ``_OPERANDS[op]``).
    """
    names = names or _OPERANDS[op]
    data_format = check_data_format(data_format)
    operands = [input, filter, out_backprop]
    first, second = _ARRAYS[op]
    operands[first], operands[second] = _engine.common_dtype(
        operands[first], operands[second], (names[first], names[second]))
    input, filter, out_backprop = operands
    dtype = operands[first].dtype
    shapes = [None, None, None]
    shapes[first], shapes[second] = operands[first].shape, operands[second].shape
    sizes = input if op == "input" else filter if op == "filter" else None
    args = (op, tuple(shapes), dtype, sizes, strides, padding, data_format, dilations,
            explicit_paddings, num_threads, algorithm, depthwise, names)
    if plain((sizes, strides, padding, dilations, explicit_paddings, num_threads, algorithm)):
        plan = _remembered_tf_plan(*args)
    else:
        plan = _tf_plan(*args)

    axes = plan.axes
    if out is None:
        out = np.empty(plan.shape, dtype)
    else:
        _engine.check_out(out, plan.shape, dtype,
                          ((names[first], operands[first]), (names[second], operands[second])))
    result = out if op == "filter" else out.transpose(axes)
    x = result if op == "input" else input.transpose(axes)
    y = result if op == "forward" else out_backprop.transpose(axes)
    filt, scratch = (result if op == "filter" else filter), None
    if depthwise:  # (KH, KW, C, M) is the grouped filter (KH, KW, 1, C*M)
        kh, kw, c, m = plan.filter_shape
        if op == "filter" and c > 1 and m > 1 and filt.strides[2] != m * filt.strides[3]:
            # out's strides do not merge C and M into one axis: compute aside, then copy
            scratch = np.empty(plan.filter_shape, dtype)
            filt = scratch
        filt = filt.reshape(kh, kw, 1, c * m)  # a view (of an operand: a copy at worst)
    return TFCall(op, x, filt, y, out, plan.geometry, plan.groups, plan.threads, plan.algorithm,
                  scratch)


def _with_height(array, data_format):
    """A 3-D NWC / NCW array as the 4-D NHWC / NCHW view of height 1 (no copy)."""
    return array[:, None] if data_format == "NWC" else array[:, :, None]


def _out_1d(out, data_format):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.ndim != 3:
        raise ValueError(f"out has the wrong shape: actual = {out.shape}, expected 3 "
                         f"dimensions ({data_format})")
    return _with_height(out, data_format)


def _one_d(input, filters, data_format, stride, stride_name, dilations, padding, out):
    """Checks and height-1 views shared by the 1-D entry points: (2-D data_format, filter,
    input, strides, dilations, out), all 4-D views of the arguments."""
    data_format = check_data_format(data_format, ("NWC", "NCW"))
    filters, input = _engine.common_dtype(filters, input, ("filters", "input"))
    if input.ndim != 3:
        raise ValueError(f"input must be 3-D ({data_format}): actual shape = {input.shape}")
    if filters.ndim != 3:
        raise ValueError(f"filters must be 3-D (KW, in-depth, out-depth): actual shape = "
                         f"{filters.shape}")
    if not isinstance(padding, str) or padding.upper() not in ("VALID", "SAME"):
        raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
    stride = spatial_single(stride, stride_name, data_format)
    dilations = spatial_single(1 if dilations is None else dilations, "dilations", data_format)
    return ("NHWC" if data_format == "NWC" else "NCHW", filters[None],
            _with_height(input, data_format), (1, stride), (1, dilations),
            _out_1d(out, data_format))


def _without_height(result, out, data_format):
    """The 1-D result: ``out`` itself when given, else the 3-D view of the 4-D result."""
    if out is not None:
        return out
    return result[:, 0] if data_format == "NHWC" else result[:, :, 0]


def conv2d(input: npt.ArrayLike, filter: npt.ArrayLike, strides: Ints, padding: Padding, *,
           data_format: DataFormat = "NHWC", dilations: Ints = 1,
           explicit_paddings: Optional[Sequence[int]] = None, out: Optional[FloatArray] = None,
           num_threads: Optional[int] = None, algorithm: Algorithm = "auto") -> FloatArray:
    """2-D convolution, TensorFlow conventions.

    The semantics of ``tf.raw_ops.Conv2D`` (and ``tf.nn.conv2d``), in NHWC and NCHW alike:
    ``y[n, oh, ow, f] = sum x[n, ih, iw, c] * filter[kh, kw, c, f]`` over every
    ``ih = oh*stride_h - pad_top + kh*dilation_h`` inside the input (likewise columns).

    Parameters
    ----------
    input : array_like of shape (N, H, W, C) or (N, C, H, W)
        In ``data_format`` order, float16, float32 or float64, any strides.
    filter : array_like of shape (KH, KW, C_in, C_out)
        HWIO; C_in may divide C (a grouped convolution with C / C_in groups, C_out a multiple
        of the groups).  Same dtype as ``input``.
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input``, the result and the 4-int strides.
    dilations : int, 1 int, (int, int) or 4 ints, default 1
        Dilation of the filter, as ``strides``.
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``: (before, after) for each dimension in ``data_format``
        order, zeros at N and C.
    out : ndarray, optional
        Where to write the result (its shape in ``data_format`` order, the operands' dtype),
        any strides; written in place and returned.  It must not overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        In ``data_format`` order, C-contiguous unless ``out`` was given, with the operands'
        dtype (float16 is computed in float32 and rounded once).

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    See Also
    --------
    conv2d_backprop_input, conv2d_backprop_filter : its gradients.
    convbp.torch.conv2d : the same operation in PyTorch's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 3, 3, 1), np.float32)           # NHWC
    >>> w = np.ones((2, 2, 1, 1), np.float32)           # HWIO
    >>> convbp.tf.conv2d(x, w, 1, "SAME")[0, :, :, 0]
    array([[4., 4., 2.],
           [4., 4., 2.],
           [2., 2., 1.]], dtype=float32)
    """
    return tf_call("forward", input, filter, None, strides, padding, data_format, dilations,
                   explicit_paddings, out, num_threads, algorithm).run()


def conv2d_backprop_input(input_sizes: Ints, filter: npt.ArrayLike,
                          out_backprop: npt.ArrayLike, strides: Ints, padding: Padding, *,
                          data_format: DataFormat = "NHWC", dilations: Ints = 1,
                          explicit_paddings: Optional[Sequence[int]] = None,
                          out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                          algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a 2-D convolution with respect to its input.

    The semantics of TensorFlow's ``tf.raw_ops.Conv2DBackpropInput`` (and of
    ``tf.nn.conv2d_transpose``), in NHWC and NCHW alike: the result is
    ``dx[n, ih, iw, c] = sum dy[n, oh, ow, f] * filter[kh, kw, c, f]`` over every
    ``ih = oh*stride_h - pad_top + kh*dilation_h`` (likewise for columns).

    Parameters
    ----------
    input_sizes : sequence of 4 ints, or of 2 ints
        Shape of the convolution's input in ``data_format`` order, or its ``(H, W)`` (N is then
        taken from ``out_backprop`` and C from ``filter``).
    filter : array_like of shape (KH, KW, C_in, C_out)
        The convolution's filter (HWIO); C_in may divide the input depth C (a grouped
        convolution with C / C_in groups, C_out a multiple of the groups).  Arrays must be
        float16, float32 or float64 (any byte order or alignment; converted if needed); nested
        lists take the dtype of the other operand, or float64.  A copy is made if it is not
        C-contiguous (it is small).
    out_backprop : array_like of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        Gradient with respect to the convolution's output, in ``data_format`` order.  Used in
        place when each image is a matrix BLAS can read -- channels at unit stride with pixels
        evenly spaced (NHWC memory), or pixels at unit stride (NCHW memory); otherwise (negative
        or zero strides, a crop along W) it is copied once.
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input_sizes``, ``out_backprop``, the result and the 4-int strides.
    dilations : int, 1 int, (int, int) or 4 ints, default 1
        Dilation of the filter, as ``strides``.
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``: (before, after) for each dimension in ``data_format`` order,
        zeros at N and C.
    out : ndarray, optional
        Where to write the result: the input's shape in ``data_format`` order and the dtype of
        the operands, any strides (for instance a view into a larger array).  Written in place
        (nothing outside it is touched) and returned.  It must not overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        "gemm": GEMM + col2im.  "winograd": Winograd F(4x4, 3x3) or F(2x2, 3x3) tiles, for
        3x3 filters at stride 1 (any dilation, padding, groups; not depthwise) -- faster on
        wide layers, with an error a small multiple of GEMM's.  "auto" picks by geometry and
        dtype (never by thread count); ``convbp.choose_algorithm`` says what and why.

    Returns
    -------
    ndarray of shape ``input_sizes``
        The input gradient in ``data_format`` order, C-contiguous unless ``out`` was given, with
        the dtype of ``filter`` and ``out_backprop`` (float32 or float64; float16 is computed in
        float32 and rounded).

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> dy = np.ones((1, 4, 4, 2), np.float32)          # NHWC
    >>> w = np.ones((3, 3, 1, 2), np.float32)           # HWIO
    >>> dx = convbp.conv2d_backprop_input((1, 4, 4, 1), w, dy, 1, "SAME")
    >>> dx[0, :, :, 0]
    array([[ 8., 12., 12.,  8.],
           [12., 18., 18., 12.],
           [12., 18., 18., 12.],
           [ 8., 12., 12.,  8.]], dtype=float32)
    """
    return tf_call("input", input_sizes, filter, out_backprop, strides, padding, data_format,
                   dilations, explicit_paddings, out, num_threads, algorithm).run()


def conv2d_backprop_filter(input: npt.ArrayLike, filter_sizes: Ints, out_backprop: npt.ArrayLike,
                           strides: Ints, padding: Padding, *, data_format: DataFormat = "NHWC",
                           dilations: Ints = 1,
                           explicit_paddings: Optional[Sequence[int]] = None,
                           out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                           algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a 2-D convolution with respect to its filter, TensorFlow conventions.

    The semantics of ``tf.raw_ops.Conv2DBackpropFilter``:
    ``dw[kh, kw, c, f] = sum x[n, ih, iw, c] * dy[n, oh, ow, f]`` over every image and output
    pixel, ``ih = oh*stride_h - pad_top + kh*dilation_h`` inside the input (likewise columns).
    An empty ``out_backprop`` (TensorFlow's empty output) gives zeros.

    Parameters
    ----------
    input : array_like of shape (N, H, W, C) or (N, C, H, W)
        The convolution's input in ``data_format`` order, any strides.
    filter_sizes : sequence of 4 ints
        The filter's shape (KH, KW, C_in, C_out); C_in may divide C (grouped convolution).
    out_backprop : array_like of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        Gradient with respect to the convolution's output, in ``data_format`` order, exactly
        the forward convolution's output size.  Same dtype as ``input``.
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input``, ``out_backprop`` and the 4-int strides.
    dilations : int, 1 int, (int, int) or 4 ints, default 1
        Dilation of the filter, as ``strides``.
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``: (before, after) for each dimension in ``data_format``
        order, zeros at N and C.
    out : ndarray of shape ``filter_sizes``, optional
        Where to write the result, any strides; written in place and returned.  It must not
        overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        "gemm": im2col + GEMM.  "winograd": Winograd F(4x4, 3x3) or F(2x2, 3x3) tiles, for
        3x3 filters at stride 1 (any dilation, padding, groups; not depthwise) -- each tile's
        products summed in the transformed domain, with an error within a few eps of GEMM's.
        "auto" picks by geometry and dtype (never by thread count);
        ``convbp.choose_algorithm(..., op="filter")`` says what and why.

    Returns
    -------
    ndarray of shape ``filter_sizes`` (KH, KW, C_in, C_out)
        C-contiguous unless ``out`` was given, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    See Also
    --------
    convbp.torch.conv2d_weight : the same operation in PyTorch's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    >>> dy = np.ones((1, 2, 2, 1), np.float32)
    >>> convbp.tf.conv2d_backprop_filter(x, (2, 2, 1, 1), dy, 1, "VALID")[:, :, 0, 0]
    array([[ 8., 12.],
           [20., 24.]], dtype=float32)
    """
    return tf_call("filter", input, filter_sizes, out_backprop, strides, padding, data_format,
                   dilations, explicit_paddings, out, num_threads, algorithm).run()


def conv2d_transpose(input: npt.ArrayLike, filters: npt.ArrayLike, output_shape: Ints,
                     strides: Ints, padding: Padding = "SAME", data_format: DataFormat = "NHWC",
                     dilations: Optional[Ints] = None, *, out: Optional[FloatArray] = None,
                     num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> FloatArray:
    """2-D transposed convolution, TensorFlow conventions.

    The semantics of ``tf.nn.conv2d_transpose``: the input gradient of the convolution of an
    ``output_shape`` array by ``filters``, given ``input`` as its output gradient -- exactly
    :func:`conv2d_backprop_input` (``output_shape``, ``filters``, ``input``).

    Parameters
    ----------
    input : array_like of shape (N, H, W, C_in) or (N, C_in, H, W)
        In ``data_format`` order, any strides.
    filters : array_like of shape (KH, KW, C_out, C_in)
        TensorFlow's transposed-convolution filter (the forward filter, HWIO).
    output_shape : sequence of 4 ints, or of 2 ints
        The result's shape in ``data_format`` order, or its (H, W).
    strides : int, 1 int, (int, int) or 4 ints
        As ``tf.nn.conv2d_transpose`` takes them (1, 2 or 4 values).
    padding : {"SAME", "VALID"} or explicit pairs, default "SAME"
        The forward convolution's padding; ``output_shape`` must be a size the forward
        convolution maps onto ``input``'s.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
    dilations : int, 1 int, (int, int) or 4 ints, optional
        Default 1.
    out : ndarray of shape ``output_shape``, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape ``output_shape``
        C-contiguous unless ``out`` was given, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    See Also
    --------
    convbp.torch.conv_transpose2d : the same operation in PyTorch's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 2, 2, 1), np.float32)
    >>> w = np.ones((3, 3, 1, 1), np.float32)           # (KH, KW, C_out, C_in)
    >>> convbp.tf.conv2d_transpose(x, w, (1, 4, 4, 1), 2)[0, :, :, 0]
    array([[1., 1., 2., 1.],
           [1., 1., 2., 1.],
           [2., 2., 4., 2.],
           [1., 1., 2., 1.]], dtype=float32)
    """
    if isinstance(padding, str) and padding.upper() == "EXPLICIT":
        raise ValueError("padding must be 'SAME', 'VALID' or explicit (before, after) pairs for "
                         "conv2d_transpose, which takes no explicit_paddings; got 'EXPLICIT'")
    return tf_call("input", output_shape, filters, input, strides, padding, data_format,
                   1 if dilations is None else dilations, None, out, num_threads, algorithm,
                   names=("output_shape", "filters", "input")).run()


def depthwise_conv2d(input: npt.ArrayLike, filter: npt.ArrayLike, strides: Ints,
                     padding: Padding, data_format: Optional[DataFormat] = None,
                     dilations: Optional[Ints] = None, *,
                     explicit_paddings: Optional[Sequence[int]] = None,
                     out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> FloatArray:
    """Depthwise 2-D convolution, TensorFlow conventions.

    The semantics of ``tf.nn.depthwise_conv2d`` (``tf.raw_ops.DepthwiseConv2dNative``):
    input channel ``c`` feeds the ``multiplier`` output channels ``c*multiplier + m``,
    ``y[n, oh, ow, c*multiplier + m] = sum x[n, ih, iw, c] * filter[kh, kw, c, m]``.  It is
    :func:`conv2d` with C groups and the filter reshaped to (KH, KW, 1, C*multiplier).

    Parameters
    ----------
    input : array_like of shape (N, H, W, C) or (N, C, H, W)
        In ``data_format`` order, any strides.
    filter : array_like of shape (KH, KW, C, multiplier)
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, optional
        Default "NHWC".
    dilations : int, 1 int, (int, int) or 4 ints, optional
        Default 1 (TensorFlow's ``rate``).
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``.
    out : ndarray, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, OH, OW, C*multiplier) or (N, C*multiplier, OH, OW)
        C-contiguous unless ``out`` was given, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 3, 3, 2), np.float32)           # NHWC, C = 2
    >>> w = np.ones((2, 2, 2, 1), np.float32)           # (KH, KW, C, multiplier)
    >>> w[:, :, 1] = 2
    >>> y = convbp.tf.depthwise_conv2d(x, w, 1, "VALID")
    >>> y[0, 0, 0]                                      # one pixel, both channels
    array([4., 8.], dtype=float32)
    """
    return tf_call("forward", input, filter, None, strides, padding,
                   "NHWC" if data_format is None else data_format,
                   1 if dilations is None else dilations, explicit_paddings, out, num_threads,
                   algorithm, depthwise=True).run()


def depthwise_conv2d_backprop_input(input_sizes: Ints, filter: npt.ArrayLike,
                                    out_backprop: npt.ArrayLike, strides: Ints,
                                    padding: Padding, *, data_format: DataFormat = "NHWC",
                                    dilations: Ints = 1,
                                    explicit_paddings: Optional[Sequence[int]] = None,
                                    out: Optional[FloatArray] = None,
                                    num_threads: Optional[int] = None,
                                    algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a depthwise 2-D convolution with respect to its input.

    The semantics of TensorFlow's ``tf.raw_ops.DepthwiseConv2dNativeBackpropInput`` (the input
    gradient of ``tf.nn.depthwise_conv2d``), in NHWC and NCHW alike, and correct for any
    dilation: input channel ``c`` feeds the ``multiplier`` output channels ``c*multiplier + m``,
    so ``dx[n, ih, iw, c] = sum dy[n, oh, ow, c*multiplier + m] * filter[kh, kw, c, m]`` over
    every ``m`` and every ``ih = oh*stride_h - pad_top + kh*dilation_h`` (likewise columns).
    It equals :func:`conv2d_backprop_input` with ``groups = C`` and the filter reshaped to
    ``(KH, KW, 1, C*multiplier)``, and PyTorch's input gradient of ``conv2d`` with
    ``groups = C``.

    Parameters
    ----------
    input_sizes : sequence of 4 ints, or of 2 ints
        Shape of the convolution's input in ``data_format`` order, or its ``(H, W)`` (N is then
        taken from ``out_backprop`` and C from ``filter``).
    filter : array_like of shape (KH, KW, C, multiplier)
        The depthwise filter.  Copied once into a small contiguous array.
    out_backprop : array_like of shape (N, OH, OW, C*multiplier) or (N, C*multiplier, OH, OW)
        Gradient with respect to the convolution's output, in ``data_format`` order.  Read in
        place when it is contiguous along the axis the result is computed along (channels for
        an NHWC-memory result, width for NCHW); otherwise copied once into that layout.
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input_sizes``, ``out_backprop``, the result and the 4-int strides.
    dilations : int, 1 int, (int, int) or 4 ints, default 1
        Dilation of the filter, as ``strides``.
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``: (before, after) for each dimension in ``data_format`` order,
        zeros at N and C.
    out : ndarray, optional
        Where to write the result: the input's shape in ``data_format`` order and the dtype of
        the operands, any strides (for instance a view into a larger array).  Written in place
        (nothing outside it is touched) and returned.  It must not overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.  The result is bitwise the
        same for any number.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape ``input_sizes``
        The input gradient in ``data_format`` order, C-contiguous unless ``out`` was given, with
        the dtype of ``filter`` and ``out_backprop`` (float32 or float64; float16 is computed in
        float32 and rounded).

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> dy = np.ones((1, 4, 4, 2), np.float32)          # NHWC, C=1 input channel, multiplier 2
    >>> w = np.ones((3, 3, 1, 2), np.float32)           # (KH, KW, C, multiplier)
    >>> dx = convbp.depthwise_conv2d_backprop_input((1, 4, 4, 1), w, dy, 1, "SAME")
    >>> dx[0, :, :, 0]
    array([[ 8., 12., 12.,  8.],
           [12., 18., 18., 12.],
           [12., 18., 18., 12.],
           [ 8., 12., 12.,  8.]], dtype=float32)
    """
    return tf_call("input", input_sizes, filter, out_backprop, strides, padding, data_format,
                   dilations, explicit_paddings, out, num_threads, algorithm,
                   depthwise=True).run()


def depthwise_conv2d_backprop_filter(input: npt.ArrayLike, filter_sizes: Ints,
                                     out_backprop: npt.ArrayLike, strides: Ints,
                                     padding: Padding, *, data_format: DataFormat = "NHWC",
                                     dilations: Ints = 1,
                                     explicit_paddings: Optional[Sequence[int]] = None,
                                     out: Optional[FloatArray] = None,
                                     num_threads: Optional[int] = None,
                                     algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a depthwise 2-D convolution with respect to its filter.

    The semantics of ``tf.raw_ops.DepthwiseConv2dNativeBackpropFilter``:
    ``dw[kh, kw, c, m] = sum x[n, ih, iw, c] * dy[n, oh, ow, c*multiplier + m]``.

    Parameters
    ----------
    input : array_like of shape (N, H, W, C) or (N, C, H, W)
        In ``data_format`` order, any strides.
    filter_sizes : sequence of 4 ints
        The filter's shape (KH, KW, C, multiplier).
    out_backprop : array_like of shape (N, OH, OW, C*multiplier) or (N, C*multiplier, OH, OW)
        Gradient with respect to the convolution's output, in ``data_format`` order.
    strides : int, 1 int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "VALID" (and explicit padding) give
        ``(padded - dilated kernel + stride) // stride`` rows, truncated toward zero: a kernel
        overhanging the input by less than a stride gives an empty output.  "EXPLICIT" takes
        ``explicit_paddings``.  Explicit padding may also be 4 ints (top, bottom, left, right)
        or, as ``tf.nn.conv2d`` takes it, four (before, after) pairs in ``data_format`` order
        with zeros at N and C.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
    dilations : int, 1 int, (int, int) or 4 ints, default 1
    explicit_paddings : sequence of 8 ints, optional
        With ``padding="EXPLICIT"``.
    out : ndarray of shape ``filter_sizes``, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape ``filter_sizes`` (KH, KW, C, multiplier)
        C-contiguous unless ``out`` was given, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    >>> dy = np.ones((1, 2, 2, 2), np.float32)          # multiplier 2
    >>> dw = convbp.tf.depthwise_conv2d_backprop_filter(x, (2, 2, 1, 2), dy, 1, "VALID")
    >>> dw[:, :, 0, 1]
    array([[ 8., 12.],
           [20., 24.]], dtype=float32)
    """
    return tf_call("filter", input, filter_sizes, out_backprop, strides, padding, data_format,
                   dilations, explicit_paddings, out, num_threads, algorithm,
                   depthwise=True).run()


def conv1d(input: npt.ArrayLike, filters: npt.ArrayLike, stride: Ints, padding: Padding1D,
           data_format: DataFormat1D = "NWC", dilations: Optional[Ints] = None, *,
           out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
           algorithm: Algorithm = "auto") -> FloatArray:
    """1-D convolution, TensorFlow conventions.

    The semantics of ``tf.nn.conv1d``: :func:`conv2d` of the arrays viewed with a height of 1
    (no copy).

    Parameters
    ----------
    input : array_like of shape (N, W, C) or (N, C, W)
        In ``data_format`` order, any strides.
    filters : array_like of shape (KW, C_in, C_out)
        C_in may divide C (grouped convolution).
    stride : int, 1 int or 3 ints
        3 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME"}
    data_format : {"NWC", "NCW"}, default "NWC"
    dilations : int, 1 int or 3 ints, optional
        Default 1.
    out : ndarray, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, OW, C_out) or (N, C_out, OW)

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(5, dtype=np.float32).reshape(1, 5, 1)       # NWC
    >>> w = np.ones((2, 1, 1), np.float32)                         # (KW, C_in, C_out)
    >>> convbp.tf.conv1d(x, w, 1, "VALID")[0, :, 0]
    array([1., 3., 5., 7.], dtype=float32)
    """
    fmt, filt, x, strides, dilations, out4 = _one_d(input, filters, data_format, stride,
                                                     "stride", dilations, padding, out)
    y = tf_call("forward", x, filt, None, strides, padding, fmt, dilations, None, out4,
                num_threads, algorithm, names=("input", "filters", None)).run()
    return _without_height(y, out, fmt)


def conv1d_transpose(input: npt.ArrayLike, filters: npt.ArrayLike, output_shape: Ints,
                     strides: Ints, padding: Padding1D = "SAME",
                     data_format: DataFormat1D = "NWC", dilations: Optional[Ints] = None, *,
                     out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> FloatArray:
    """1-D transposed convolution, TensorFlow conventions.

    The semantics of ``tf.nn.conv1d_transpose``: :func:`conv2d_transpose` of the arrays viewed
    with a height of 1 (no copy).

    Parameters
    ----------
    input : array_like of shape (N, W, C_in) or (N, C_in, W)
        In ``data_format`` order, any strides.
    filters : array_like of shape (KW, C_out, C_in)
    output_shape : sequence of 3 ints
        The result's shape in ``data_format`` order.
    strides : int, 1 int or 3 ints
        3 ints are in ``data_format`` order with 1 at N and C.
    padding : {"SAME", "VALID"}, default "SAME"
    data_format : {"NWC", "NCW"}, default "NWC"
    dilations : int, 1 int or 3 ints, optional
        Default 1.
    out : ndarray of shape ``output_shape``, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape ``output_shape``

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 2, 1), np.float32)                         # NWC
    >>> w = np.ones((3, 1, 1), np.float32)                         # (KW, C_out, C_in)
    >>> convbp.tf.conv1d_transpose(x, w, (1, 4, 1), 2)[0, :, 0]
    array([1., 1., 2., 1.], dtype=float32)
    """
    fmt, filt, x, strides, dilations, out4 = _one_d(input, filters, data_format, strides,
                                                     "strides", dilations, padding, out)
    sizes = int_list(output_shape, "output_shape", minimum=0)
    if len(sizes) != 3:
        raise ValueError(f"output_shape must have 3 ints ({data_format} order): actual "
                         f"length = {len(sizes)} ({sizes})")
    sizes.insert(1 if fmt == "NHWC" else 2, 1)
    dx = tf_call("input", sizes, filt, x, strides, padding, fmt, dilations, None, out4,
                 num_threads, algorithm, names=("output_shape", "filters", "input")).run()
    return _without_height(dx, out, fmt)


def choose_algorithm(input_sizes, filter_shape, strides, padding, *, data_format="NHWC",
                     dilations=1, explicit_paddings=None, dtype="float32", op="input"):
    """The algorithm ``algorithm="auto"`` would use for the input gradient (``op="input"``,
    :func:`conv2d_backprop_input`), the forward convolution (``op="forward"``, :func:`conv2d`)
    or the filter gradient (``op="filter"``, :func:`conv2d_backprop_filter`), and why.

    Like ``scipy.signal.choose_conv_method``: the answer depends on the geometry, the dtype
    and the machine only (never on the thread count, so results stay bitwise identical).

    Parameters
    ----------
    input_sizes : sequence of 4 ints
        Shape of the convolution's input in ``data_format`` order.
    filter_shape : sequence of 4 ints (KH, KW, C_in, C_out)
        The filter's shape (HWIO); C_in = C / groups.
    strides, padding, data_format, dilations, explicit_paddings
        As for :func:`conv2d_backprop_input`.
    dtype : str or dtype, default "float32"
    op : {"input", "forward", "filter"}, default "input"
        Which op: the input gradient, the forward convolution or the filter gradient
        (:func:`conv2d_backprop_filter`).

    Returns
    -------
    Choice
        ``algorithm`` ("gemm", "winograd" or "depthwise"), ``tile`` (the Winograd output tile
        m of F(m x m, 3 x 3), else None) and ``reason`` (a sentence).

    Examples
    --------
    >>> import convbp
    >>> convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 2, "SAME").reason
    'the stride is (2, 2); Winograd takes stride 1 only'

    A 3x3 stride-1 layer takes Winograd in a build that has the kernel (GCC or Clang):

    >>> convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 1, "SAME").algorithm
    ... # doctest: +SKIP
    'winograd'
    """
    data_format = check_data_format(data_format)
    sizes = tuple(int_list(input_sizes, "input_sizes", minimum=0))
    kh, kw, c_group, f = (int(v) for v in int_list(filter_shape, "filter_shape", minimum=0))
    if len(sizes) != 4:
        raise ValueError(f"input_sizes must have 4 ints ({data_format} order): {sizes}")
    n, h, w, c = (sizes[i] for i in layout_axes(data_format))
    if c_group < 1 or c % c_group or f % (c // c_group):
        raise ValueError(f"filter_shape {tuple(filter_shape)} does not fit an input of {c} "
                         f"channels")
    geometry = forward_geometry((h, w), (kh, kw), spatial_pair(strides, "strides", data_format),
                                spatial_pair(dilations, "dilations", data_format),
                                tf_padding(padding, explicit_paddings, data_format))
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(f"dtype must be float16, float32 or float64, got {dtype}")
    if op not in ("input", "forward", "filter"):
        raise ValueError(f"op must be 'input', 'forward' or 'filter', got {op!r}")
    return _engine.choose_for(op, (n, h, w, c), (n,) + geometry.out_hw + (f,), geometry,
                              c // c_group, dtype)
