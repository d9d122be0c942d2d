"""TensorFlow-convention entry points (``convbp.tf``): the names and semantics of ``tf.raw_ops``
and ``tf.nn``."""

import numpy as np

from . import _engine
from ._geometry import (check_data_format, forward_geometry, int_list,
                        layout_axes, spatial_pair, tf_padding)

__all__ = ["choose_algorithm", "conv2d_backprop_input", "depthwise_conv2d_backprop_input"]


def tf_input_sizes(input_sizes, out_backprop_shape, filter_shape, data_format):
    """TensorFlow's ``input_sizes``: 4 ints in ``data_format`` order, or (H, W) with N taken from
    out_backprop and C from the filter.  Returns logical (N, H, W, C)."""
    if isinstance(input_sizes, np.ndarray) and input_sizes.ndim == 0:
        raise ValueError(f"input_sizes must be a 1-D sequence of 4 (or 2) ints, got a 0-d array "
                         f"({input_sizes!r})")
    sizes = int_list(input_sizes, "input_sizes", minimum=0)
    if len(sizes) == 4:
        return tuple(sizes[i] for i in layout_axes(data_format))
    if len(sizes) == 2:
        n = out_backprop_shape[layout_axes(data_format)[0]]
        return (n, sizes[0], sizes[1], filter_shape[2])
    raise ValueError(f"input_sizes must have 4 ints ({data_format} order) or 2 ints (H, W): "
                     f"actual length = {len(sizes)}, expected 4 or 2 ({sizes})")


def conv2d_backprop_input(input_sizes, filter, out_backprop, strides, padding, *,
                          data_format="NHWC", dilations=1, explicit_paddings=None, out=None,
                          num_threads=None, algorithm="auto"):
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
    strides : int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "EXPLICIT" takes ``explicit_paddings``.  Explicit
        padding may also be 4 ints (top, bottom, left, right) or, as ``tf.nn.conv2d`` takes it,
        four (before, after) pairs in ``data_format`` order with zeros at N and C.  An input
        too small for the dilated kernel is an error, except an empty one (H or W of 0), whose
        output is empty.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input_sizes``, ``out_backprop``, the result and the 4-int strides.
    dilations : int, (int, int) or 4 ints, default 1
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
    call = tf_call(input_sizes, filter, out_backprop, strides, padding, data_format, dilations,
                   explicit_paddings, out, num_threads, "(KH, KW, C_in, C_out)", _conv2d_depth)
    c, c_group = call.dx.shape[3], call.filter.shape[2]
    groups = c // c_group if c_group else 1
    algorithm = _engine.check_algorithm(algorithm)
    _engine.backprop_input(call.dy, call.filter, call.dx, call.geometry, groups, call.threads,
                           algorithm)
    return call.out


def choose_algorithm(input_sizes, filter_shape, strides, padding, *, data_format="NHWC",
                     dilations=1, explicit_paddings=None, dtype="float32"):
    """The algorithm ``conv2d_backprop_input(..., algorithm="auto")`` would use, and why.

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

    Returns
    -------
    Choice
        ``algorithm`` ("gemm", "winograd" or "depthwise"), ``tile`` (the Winograd output tile
        m of F(m x m, 3 x 3), else None) and ``reason`` (a sentence).

    Examples
    --------
    >>> import convbp
    >>> convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 1, "SAME").algorithm
    'winograd'
    >>> convbp.choose_algorithm((8, 56, 56, 64), (3, 3, 64, 64), 2, "SAME").algorithm
    'gemm'
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
    return _engine.choose_backprop_input((n,) + geometry.out_hw + (f,), (n, h, w, c), geometry,
                                         c // c_group, dtype)


def _conv2d_depth(c, filter_shape):
    """Check a Conv2D filter (KH, KW, C_in/groups, C_out) against input depth c -> C_out."""
    c_group, f = filter_shape[2:]
    if c_group == 0 and c != 0 or c_group != 0 and c % c_group != 0 or c_group > c:
        # Equal depths, or a grouped convolution (C / C_in groups); an empty input depth
        # needs an empty filter in-depth.
        raise ValueError(f"filter in-depth {c_group} must divide the input depth {c} "
                         f"(input_sizes) and be at most it: actual = {c_group} (filter shape "
                         f"{filter_shape}), expected {c} or, for a grouped convolution, a "
                         f"divisor of {c}")
    groups = c // c_group if c_group else 1
    if groups > 1 and f % groups != 0:
        raise ValueError(f"filter out-depth {f} must be divisible by the {groups} groups that "
                         f"input depth {c} / filter in-depth {c_group} gives (filter shape "
                         f"{filter_shape})")
    return f


class TFCall:
    """A validated TensorFlow-convention call: logical NHWC views and the geometry.

    dy: out_backprop (N, OH, OW, depth); dx: the result (N, H, W, C), a view of ``out`` (the
    array returned, in ``data_format`` order); filter as given (4-D).
    """

    def __init__(self, dy, filter, out, dx, geometry, threads):
        self.dy, self.filter, self.out, self.dx = dy, filter, out, dx
        self.geometry, self.threads = geometry, threads


def tf_call(input_sizes, filter, out_backprop, strides, padding, data_format, dilations,
            explicit_paddings, out, num_threads, filter_axes, out_depth):
    """Validate the arguments every TensorFlow-convention entry point shares.

    ``filter_axes`` names the filter's axes in messages; ``out_depth(C, filter.shape)`` checks
    the filter against the input depth and returns the depth out_backprop must have.
    """
    data_format = check_data_format(data_format)
    filter, out_backprop = _engine.common_dtype(filter, out_backprop)
    if filter.ndim != 4:
        raise ValueError(f"filter must be 4-D {filter_axes}: actual shape = "
                         f"{filter.shape}, expected 4 dimensions")
    if out_backprop.ndim != 4:
        raise ValueError(f"out_backprop must be 4-D ({data_format}): actual shape = "
                         f"{out_backprop.shape}, expected 4 dimensions")
    axes = layout_axes(data_format)
    n, h, w, c = tf_input_sizes(input_sizes, out_backprop.shape, filter.shape, data_format)
    strides = spatial_pair(strides, "strides", data_format)
    dilations = spatial_pair(dilations, "dilations", data_format)
    pad = tf_padding(padding, explicit_paddings, data_format)
    threads = _engine.check_threads(num_threads)

    kh, kw = filter.shape[:2]
    if kh == 0 or kw == 0:
        raise ValueError(f"filter must have a non-empty spatial size (KH, KW >= 1): actual "
                         f"shape = {filter.shape}")
    depth = out_depth(c, filter.shape)
    _engine.check_result_size((n, h, w, c), filter.dtype, "input_sizes")
    # Either may be copied (a broadcast or strided view, or float16 widened to float32).
    _engine.check_result_size(filter.shape, filter.dtype, "filter", "operand")
    _engine.check_result_size(out_backprop.shape, out_backprop.dtype, "out_backprop", "operand")
    dy = out_backprop.transpose(axes)  # logical NHWC view, no copy
    geometry = forward_geometry((h, w), (kh, kw), strides, dilations, pad)
    expected = (n,) + geometry.out_hw + (depth,)
    for axis, what in enumerate(("batch", "height", "width", "depth")):
        if dy.shape[axis] != expected[axis]:
            raise ValueError(
                f"Size of out_backprop doesn't match computed: {what}: actual = "
                f"{dy.shape[axis]}, computed = {expected[axis]} (input_sizes {(n, h, w, c)} "
                f"NHWC, filter {filter.shape} {filter_axes}, strides {strides}, dilations "
                f"{dilations}, padding {padding!r})")

    shape = tuple((n, h, w, c)[axes.index(i)] for i in range(4))
    if out is None:
        out = np.empty(shape, filter.dtype)
    else:
        _engine.check_out(out, shape, filter.dtype,
                          (("filter", filter), ("out_backprop", out_backprop)))
    return TFCall(dy, filter, out, out.transpose(axes), geometry, threads)


def depthwise_conv2d_backprop_input(input_sizes, filter, out_backprop, strides, padding, *,
                                    data_format="NHWC", dilations=1, explicit_paddings=None,
                                    out=None, num_threads=None):
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
    strides : int, (int, int) or 4 ints
        Stride of the convolution; 4 ints are in ``data_format`` order with 1 at N and C.
    padding : {"VALID", "SAME", "EXPLICIT"} or ((top, bottom), (left, right))
        "SAME" gives an output of ``ceil(in / stride)`` with any odd extra padding at the bottom
        and right, as TensorFlow does.  "EXPLICIT" takes ``explicit_paddings``.
    data_format : {"NHWC", "NCHW"}, default "NHWC"
        Layout of ``input_sizes``, ``out_backprop``, the result and the 4-int strides.
    dilations : int, (int, int) or 4 ints, default 1
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
    call = tf_call(input_sizes, filter, out_backprop, strides, padding, data_format, dilations,
                   explicit_paddings, out, num_threads, "(KH, KW, C, multiplier)",
                   _depthwise_depth)
    _engine.depthwise_backprop_input(call.dy, call.filter, call.dx, call.geometry, call.threads)
    return call.out


def _depthwise_depth(c, filter_shape):
    """Check a depthwise filter (KH, KW, C, multiplier) against input depth c -> C*multiplier."""
    if filter_shape[2] != c:
        raise ValueError(f"filter in-depth {filter_shape[2]} must equal the input depth {c} "
                         f"(input_sizes); filter shape {filter_shape} is (KH, KW, C, multiplier)")
    return c * filter_shape[3]
