"""Depthwise convolution input gradient, TensorFlow conventions.

The front validates and translates TensorFlow's arguments into logical NHWC views and a
:class:`~convbp._geometry.ConvGeometry` with the functions every entry point shares, then calls
the direct depthwise kernel (``convbp/_depthwise_kernels.pyx``).
"""

import numpy as np

from . import _depthwise_kernels, _engine
from ._tf import tf_call

__all__ = ["depthwise_conv2d_backprop_input"]

# Width-inner loop order: each channel's out_backprop may be copied into a zero-padded buffer (so
# no column needs edge handling), if that holds at most this many elements per thread.
_MAX_PADDED_ELEMENTS = 2**18

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
    backprop_input(call.dy, call.filter, call.dx, call.geometry, call.threads)
    return call.out


def _depthwise_depth(c, filter_shape):
    """Check a depthwise filter (KH, KW, C, multiplier) against input depth c -> C*multiplier."""
    if filter_shape[2] != c:
        raise ValueError(f"filter in-depth {filter_shape[2]} must equal the input depth {c} "
                         f"(input_sizes); filter shape {filter_shape} is (KH, KW, C, multiplier)")
    return c * filter_shape[3]


def backprop_input(dy, filter, dx, geometry, num_threads=None):
    """Write the depthwise input gradient into ``dx``; arrays in logical NHWC axis order.

    dy       (N, OH, OW, C*M), any strides
    filter   (KH, KW, C, M)
    dx       (N, H, W, C) writable, any strides; fully overwritten
    The caller has checked shapes against ``geometry`` and dtypes against each other.
    """
    n, h, w, c = dx.shape
    kh, kw, _, m = filter.shape
    if dx.size == 0:
        return dx
    if dy.size == 0:  # multiplier 0: no output channel reads the input
        dx[...] = 0
        return dx
    if dx.dtype == np.float16:  # accumulate in float32, store float16
        dx32 = np.empty_like(dx, dtype=np.float32)  # same memory order, same loop order
        backprop_input(dy.astype(np.float32), filter.astype(np.float32), dx32, geometry,
                       num_threads)
        dx[...] = dx32
        return dx

    # Loop order follows dx's memory: channels innermost for NHWC memory, width for NCHW.
    channels_inner = abs(dx.strides[3]) <= abs(dx.strides[2])
    # out_backprop is read along the same axis; if it is not contiguous there, copy it once.
    axis = 3 if channels_inner else 2
    if dy.shape[axis] > 1 and dy.strides[axis] != dy.itemsize:
        order = (0, 1, 2, 3) if channels_inner else (0, 3, 1, 2)
        dy = np.ascontiguousarray(dy.transpose(order)).transpose(np.argsort(order))
    filt = np.ascontiguousarray(filter).reshape(kh, kw, c * m)

    units = n * (h if channels_inner else c)
    pad_l = pw = 0
    threads = _engine.thread_count(num_threads, units)
    if channels_inner:  # per thread: an accumulator per out_backprop channel, a tap list
        workspace = np.empty((threads, _padded(c * m)), dx.dtype)
        taps = np.empty((threads, _padded(2 * kh * kw)), np.intp)
        col_taps = np.empty((w, 2 + 2 * kw), np.intp)
    else:  # per thread: a tap list (offsets, columns, filter values), the channel's filter,
        # a column of a run of rows, maybe the channel's out_backprop padded with zeros
        pad_l, pw, edge_taps = _zero_padding(geometry, w, dy.shape[2], kw)
        oh = dy.shape[1]
        # Worth it where the edges' one-by-one sums outweigh the copy (wide filters): measured
        # a gain at 5x5 and a loss at 3x3.
        if (h * kh * edge_taps <= 2 * oh * pw or m * oh * pw > _MAX_PADDED_ELEMENTS
                or not np.isfinite(filt).all()):
            pad_l, pw = 0, 0
        workspace = np.empty((threads, _padded(2 * m * kh * kw + h + m * oh * pw)), dx.dtype)
        taps = np.empty((threads, _padded(2 * m * kh * kw)), np.intp)
        col_taps = np.empty((min(geometry.strides[1], w), 4 + 2 * kw), np.intp)
    row_taps = np.empty((h, 2 + 2 * kh), np.intp)
    params = dict(H=h, W=w, C=c, M=m, OH=dy.shape[1], OW=dy.shape[2], KH=kh, KW=kw,
                  stride_h=geometry.strides[0], stride_w=geometry.strides[1],
                  dilation_h=geometry.dilations[0], dilation_w=geometry.dilations[1],
                  pad_top=geometry.pads[0][0], pad_left=geometry.pads[1][0])
    _depthwise_kernels.backprop_input(dy, filt, dx, workspace, taps, row_taps, col_taps, params,
                                      channels_inner, pad_l, pw, threads)
    return dx


def _zero_padding(geometry, w, ow, kw):
    """Zero columns (before, total row length) that make every column of every stride phase of
    a row interior in the width-inner loop, and the number of (edge column, kw tap) pairs they
    save per row: input column iw = p + s*i reads output column (iw + pad_left - k*dilation)/s,
    for i < ceil((w - p) / s)."""
    s, d, pad_left = geometry.strides[1], geometry.dilations[1], geometry.pads[1][0]
    lo, hi, edge_taps = 0, ow, 0
    for p in range(min(s, w)):
        count = -(-(w - p) // s)
        firsts = [(p + pad_left - k * d) // s for k in range(kw) if (p + pad_left - k * d) % s == 0]
        if firsts:
            lo, hi = min(lo, min(firsts)), max(hi, max(firsts) + count)
            interior = max(0, min(count, ow - max(firsts)) - max(0, -min(firsts)))
            edge_taps += (count - interior) * len(firsts)
    return -lo, hi - lo, edge_taps


def _padded(length):
    """A per-thread buffer row length: rounded up and padded by 16 elements (at least 64 bytes),
    so rows of different threads never share a cache line."""
    return -(-length // 16) * 16 + 16
