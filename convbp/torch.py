"""PyTorch-convention entry points (``convbp.torch``): ``torch.nn.grad.conv2d_input`` and
``F.conv_transpose2d``.

Both are the same operation as the TensorFlow entry point: the arrays are viewed in logical NHWC
order (``np.transpose``, never a copy), the OIHW weight as the kernel's HWIO filter, and
:func:`convbp._engine.backprop_input` runs the one kernel.
"""

import numpy as np

from . import _engine
from ._geometry import (as_int, check_data_format, int_list, torch_grad_input_geometry,
                        torch_padding, torch_pair, torch_transpose_geometry)

__all__ = ["conv2d_input", "conv_transpose2d"]

_NCHW_AS_NHWC = (0, 2, 3, 1)  # logical NHWC view of an NCHW-shaped array
_NHWC_AS_NCHW = (0, 3, 1, 2)
_OIHW_AS_HWIO = (2, 3, 1, 0)


def is_channels_last(shape, strides):
    """Whether an NCHW-shaped array has channels-last strides, by PyTorch's rule.

    PyTorch's ``is_channels_last_strides_2d`` (which ``Tensor.suggest_memory_format`` uses):
    strides ordered C < W < H < N, each at least the extent of the previous one; ambiguous
    cases (zero-stride or size-1 channels at the same stride as N, an empty dimension) are
    NCHW.
    """
    if strides[1] == 0:
        return False
    lo = 0
    for d in (1, 3, 2, 0):
        if shape[d] == 0 or strides[d] < lo:
            return False
        if d == 0 and lo == strides[1]:
            return False
        lo = strides[d] * (shape[d] if shape[d] > 1 else 1)
    return True


def _empty_nchw(shape, dtype, channels_last):
    """An uninitialized NCHW-shaped array; NHWC memory (a transposed view) if channels_last."""
    if channels_last:
        n, c, h, w = shape
        return np.empty((n, h, w, c), dtype).transpose(_NHWC_AS_NCHW)
    return np.empty(shape, dtype)


def _input_size(input_size, n, c):
    """``input_size`` as (N, C, H, W) -> (H, W), checking N and C; (H, W) is also accepted."""
    if isinstance(input_size, np.ndarray) and input_size.ndim == 0:
        raise ValueError("input_size must be a sequence of 4 ints (N, C, H, W) or 2 ints "
                         "(H, W), got a 0-d array")
    sizes = int_list(input_size, "input_size", minimum=0)
    if len(sizes) == 2:
        return tuple(sizes)
    if len(sizes) != 4:
        raise ValueError(f"input_size must have 4 ints (N, C, H, W) or 2 ints (H, W); "
                         f"got {len(sizes)}: {sizes}")
    if sizes[0] != n:
        raise ValueError(f"input_size {sizes} has batch size {sizes[0]} but grad_output has "
                         f"{n}")
    if sizes[1] != c:
        raise ValueError(f"input_size {sizes} has {sizes[1]} channels but the weight expects "
                         f"{c} (weight.shape[1] * groups)")
    return tuple(sizes[2:])


def _check_weight(weight, groups, what):
    """Shape checks of an (A, B, KH, KW) weight whose dimension 0 is split into groups."""
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D {what}, got shape {weight.shape}")
    if weight.shape[2] == 0 or weight.shape[3] == 0:
        raise ValueError(f"weight must have a non-empty spatial size, got shape "
                         f"{weight.shape}")
    if weight.shape[0] == 0 or weight.shape[0] % groups != 0:
        raise ValueError(f"groups={groups} must divide the weight's dimension 0, which must be "
                         f"at least groups; weight shape {weight.shape}")


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 out=None, num_threads=None, algorithm="auto"):
    """Gradient of a 2-D convolution with respect to its input, PyTorch conventions.

    The semantics of ``torch.nn.grad.conv2d_input``: the gradient, with respect to ``input``,
    of ``torch.nn.functional.conv2d(input, weight, stride=stride, padding=padding,
    dilation=dilation, groups=groups)`` given ``grad_output``, the gradient of its output.
    Logical shapes are NCHW; arrays with channels-last strides (an NCHW-shaped view of NHWC
    memory, NumPy's ``torch.channels_last``) are read in place, and the result has
    ``grad_output``'s memory format.

    Parameters
    ----------
    input_size : sequence of 4 ints (N, C_in, H, W), or of 2 ints (H, W)
        Shape of the convolution's input.  With a stride above 1 several input sizes give the
        same output size; this picks one (input rows and columns the convolution never reads
        get zero gradient).  ``(H, W)`` takes N from ``grad_output`` and C_in from the weight
        (as older PyTorch releases did; PyTorch 2 requires 4 ints).
    weight : array_like of shape (C_out, C_in / groups, KH, KW)
        The convolution's weight (OIHW), any strides (copied once, it is small).
    grad_output : array_like of shape (N, C_out, OH, OW)
        Gradient with respect to the convolution's output, any strides.  Used in place when
        each image is a matrix BLAS can address (NCHW or channels-last memory); otherwise
        copied once.
    stride : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
        Zero padding on both sides of each spatial dimension.  "same" (stride 1 only) pads
        ``dilation*(k - 1)`` in total, ``total // 2`` before and the rest after, as
        ``F.conv2d`` does.
    dilation : int or (int, int), default 1
    groups : int, default 1
        Number of blocked connections from input to output channels; divides C_in and C_out.
    out : ndarray of shape (N, C_in, H, W), optional
        Where to write the result, any strides; written in place and returned.  It must not
        overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.

    Returns
    -------
    ndarray of shape (N, C_in, H, W)
        The input gradient, with the dtype of ``weight`` and ``grad_output`` (float32, float64,
        or float16 computed in float32 and rounded once).  Unless ``out`` is given it has
        channels-last strides (NHWC memory) when ``grad_output`` has, by PyTorch's
        ``suggest_memory_format`` rule, and is C-contiguous otherwise.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message; an ``input_size``
        out of range gives PyTorch's "requested an input grad size of ..., but valid sizes
        range from ... to ...".

    See Also
    --------
    conv_transpose2d : the same operation as ``torch.nn.functional.conv_transpose2d``.
    conv2d_backprop_input : the same operation in TensorFlow's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> weight = np.ones((2, 1, 3, 3), np.float32)       # (C_out, C_in, KH, KW)
    >>> grad_output = np.ones((1, 2, 2, 2), np.float32)  # (N, C_out, OH, OW)
    >>> dx = convbp.conv2d_input((1, 1, 4, 4), weight, grad_output)
    >>> dx[0, 0]
    array([[2., 4., 4., 2.],
           [4., 8., 8., 4.],
           [4., 8., 8., 4.],
           [2., 4., 4., 2.]], dtype=float32)
    """
    weight, grad_output = _engine.common_dtype(weight, grad_output, ("weight", "grad_output"))
    if grad_output.ndim != 4:
        raise ValueError(f"grad_output must be 4-D (N, C_out, OH, OW), got shape "
                         f"{grad_output.shape}")
    stride = torch_pair(stride, "stride", minimum=1)
    dilation = torch_pair(dilation, "dilation", minimum=1)
    groups = as_int(groups, "groups", minimum=1)
    threads = _engine.check_threads(num_threads)
    _check_weight(weight, groups, "(C_out, C_in/groups, KH, KW)")
    if grad_output.shape[1] != weight.shape[0]:
        raise ValueError(f"grad_output has {grad_output.shape[1]} channels but the weight has "
                         f"{weight.shape[0]} output channels (dimension 0); grad_output shape "
                         f"{grad_output.shape}, weight shape {weight.shape}")
    c_group, kh, kw = weight.shape[1:]
    pads = torch_padding(padding, (kh, kw), stride, dilation)
    n, c = grad_output.shape[0], c_group * groups
    h, w = _input_size(input_size, n, c)
    geometry = torch_grad_input_geometry((h, w), grad_output.shape[2:], (kh, kw), stride,
                                         dilation, pads)
    shape = (n, c, h, w)
    _engine.check_result_size(shape, weight.dtype, "input_size")
    if out is None:
        out = _empty_nchw(shape, weight.dtype,
                          is_channels_last(grad_output.shape, grad_output.strides))
    else:
        _engine.check_out(out, shape, weight.dtype,
                          (("weight", weight), ("grad_output", grad_output)))
    _engine.backprop_input(grad_output.transpose(_NCHW_AS_NHWC), weight.transpose(_OIHW_AS_HWIO),
                           out.transpose(_NCHW_AS_NHWC), geometry, groups, threads,
                           _engine.check_algorithm(algorithm))
    return out


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, data_format="NCHW", out=None, num_threads=None):
    """2-D transposed convolution, PyTorch conventions.

    The semantics of ``torch.nn.functional.conv_transpose2d``: the gradient of
    ``F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=groups)``
    with respect to ``x`` given ``input`` as the gradient of its output -- the same kernel as
    :func:`conv2d_input` -- plus ``bias`` per output channel.  The output's spatial size is
    ``(in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.

    Parameters
    ----------
    input : array_like of shape (N, C_in, H, W), or (C_in, H, W) unbatched
        In ``data_format`` order ((N, H, W, C_in) or (H, W, C_in) for "NHWC"), any strides;
        read in place when each image is a matrix BLAS can address, otherwise copied once.
    weight : array_like of shape (C_in, C_out / groups, KH, KW)
        PyTorch's transposed-convolution weight, whatever ``data_format`` is; any strides
        (copied once, it is small).
    bias : array_like of shape (C_out,), optional
        Added to every output pixel of each output channel.
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        ``dilation*(k - 1) - padding`` zeros are implicitly added to both sides of the input;
        equivalently the forward convolution's padding.  No "same"/"valid", as in PyTorch.
    output_padding : int or (int, int), default 0
        Rows (columns) added at the end of the output; each must be smaller than either the
        stride or the dilation of its axis.
    groups : int, default 1
        Divides C_in and C_out: input channels of group g connect to output channels of g only.
    dilation : int or (int, int), default 1
    data_format : {"NCHW", "NHWC"}, default "NCHW"
        Layout of ``input``, ``out`` and the result (not of the weight).
    out : ndarray, optional
        Where to write the result (its shape in ``data_format`` order, the operands' dtype),
        any strides; written in place and returned.  It must not overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.

    Returns
    -------
    ndarray of shape (N, C_out, H_out, W_out), or (N, H_out, W_out, C_out) for "NHWC"
        With the dtype of ``input`` and ``weight`` (float32, float64, or float16 computed in
        float32, bias included, and rounded once).  Unless ``out`` is given the result has the
        input's memory format as PyTorch's ``suggest_memory_format`` defines it: NHWC memory
        when the input (seen in NCHW order) has channels-last strides -- so an "NHWC" input in
        C order gives a C-ordered "NHWC" result -- and NCHW memory otherwise.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    See Also
    --------
    conv2d_input : the same operation as ``torch.nn.grad.conv2d_input``.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 1, 2, 2), np.float32)            # (N, C_in, H, W)
    >>> weight = np.ones((1, 1, 3, 3), np.float32)       # (C_in, C_out, KH, KW)
    >>> y = convbp.conv_transpose2d(x, weight, bias=np.array([0.5], np.float32), stride=2,
    ...                             padding=1, output_padding=1)
    >>> y.shape
    (1, 1, 4, 4)
    >>> y[0, 0]
    array([[1.5, 2.5, 1.5, 1.5],
           [2.5, 4.5, 2.5, 2.5],
           [1.5, 2.5, 1.5, 1.5],
           [1.5, 2.5, 1.5, 1.5]], dtype=float32)
    """
    data_format = check_data_format(data_format)
    weight, input = _engine.common_dtype(weight, input, ("weight", "input"))
    if input.ndim not in (3, 4):
        raise ValueError(f"input must be 4-D (batched) or 3-D (unbatched) in {data_format} "
                         f"order, got shape {input.shape}")
    unbatched = input.ndim == 3
    dtype = weight.dtype
    stride = torch_pair(stride, "stride", minimum=1)
    dilation = torch_pair(dilation, "dilation", minimum=1)
    output_padding = torch_pair(output_padding, "output_padding", minimum=0)
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or (int, int) for a transposed convolution, "
                        f"got {padding!r} (PyTorch's conv_transpose2d has no string padding)")
    padding = torch_pair(padding, "padding", minimum=0)
    groups = as_int(groups, "groups", minimum=1)
    threads = _engine.check_threads(num_threads)

    # Logical NCHW view of the input.  For the memory-format rule an unbatched input's batch
    # axis strides over the whole image, so a (C, H, W) view of HWC memory counts as channels
    # last (PyTorch's unsqueeze(0) would give it stride C*stride_C and make it NCHW).
    if data_format == "NCHW":
        x = input
    else:
        x = input.transpose((2, 0, 1) if unbatched else _NHWC_AS_NCHW)
    if unbatched:
        extent = max(abs(st) * size for st, size in zip(x.strides, x.shape))
        channels_last = is_channels_last((1,) + x.shape, (extent,) + x.strides)
        x = x[None]
    else:
        channels_last = is_channels_last(x.shape, x.strides)
    _check_weight(weight, groups, "(C_in, C_out/groups, KH, KW)")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"input has {x.shape[1]} channels but the weight expects "
                         f"{weight.shape[0]} (weight dimension 0); input shape {input.shape} "
                         f"({data_format}), weight shape {weight.shape}")
    c_out = weight.shape[1] * groups
    if bias is not None:
        bias = _engine.as_float_array(bias, "bias", dtype)
        if bias.dtype != dtype:
            raise TypeError(f"dtype mismatch: bias is {bias.dtype} but input and weight are "
                            f"{dtype}")
        if bias.shape != (c_out,):
            raise ValueError(f"bias must be 1-D with {c_out} elements (the output channels), "
                             f"got shape {bias.shape}")
    geometry = torch_transpose_geometry(x.shape[2:], weight.shape[2:], stride, padding,
                                        output_padding, dilation)
    shape = (x.shape[0], c_out) + geometry.in_hw  # NCHW
    # The output's size comes from input and weight shapes with stride, padding, dilation.
    _engine.check_result_size(shape, dtype, "input/stride/dilation: the output of shape",
                              "transposed-convolution output")

    to_format = (0, 1, 2, 3) if data_format == "NCHW" else _NCHW_AS_NHWC
    if out is None:
        result = _empty_nchw(shape, dtype, channels_last)
        out = result.transpose(to_format)[0] if unbatched else result.transpose(to_format)
    else:
        out_shape = tuple(shape[i] for i in to_format)[unbatched:]
        inputs = (("input", input), ("weight", weight)) + ((("bias", bias),) if bias is not None
                                                           else ())
        _engine.check_out(out, out_shape, dtype, inputs)
        result = (out[None] if unbatched else out).transpose(np.argsort(to_format))

    dy = x.transpose(_NCHW_AS_NHWC)
    filt = weight.transpose(_OIHW_AS_HWIO)
    dx = result.transpose(_NCHW_AS_NHWC)
    if bias is not None and dtype == np.float16:
        # Accumulate and add the bias in float32, round to float16 once.
        dx32 = np.empty(dx.shape, np.float32)
        _engine.backprop_input(dy.astype(np.float32), filt.astype(np.float32), dx32, geometry,
                               groups, threads)
        dx32 += bias.astype(np.float32)
        dx[...] = dx32
    else:
        _engine.backprop_input(dy, filt, dx, geometry, groups, threads)
        if bias is not None:
            dx += bias
    return out
