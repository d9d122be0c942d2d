"""PyTorch-convention entry points (``convbp.torch``): ``torch.nn.functional`` and
``torch.nn.grad`` names and semantics.

Every entry point goes through :func:`torch_call`, which checks the arguments, views the
NCHW-shaped arrays in logical NHWC order (``np.transpose``, never a copy) and the OIHW weight as
the engine's HWIO filter, allocates the result in PyTorch's memory format (or checks ``out``),
and runs one engine function.  The 1-D functions view their arrays with a height of 1 and call
the 2-D ones.
"""

import functools
from typing import Any, Literal, NamedTuple, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import _engine
from ._geometry import (ConvGeometry, as_int, check_data_format, int_list, plain,
                        torch_forward_geometry, torch_grad_input_geometry, torch_padding,
                        torch_pair, torch_single, torch_transpose_geometry)

__all__ = ["conv1d", "conv1d_input", "conv1d_weight", "conv2d", "conv2d_input", "conv2d_weight",
           "conv_transpose1d", "conv_transpose2d"]

FloatArray = npt.NDArray[np.floating[Any]]
Ints = Union[int, Sequence[int], npt.NDArray[np.integer[Any]]]
Padding = Union[int, Sequence[int], Literal["valid", "same"]]
DataFormat = Literal["NCHW", "NHWC"]
Algorithm = Literal["auto", "gemm", "winograd"]

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


def _weight_size(weight_size):
    if isinstance(weight_size, np.ndarray) and weight_size.ndim == 0:
        raise ValueError("weight_size must be a sequence of 4 ints, got a 0-d array")
    sizes = int_list(weight_size, "weight_size", minimum=0)
    if len(sizes) != 4:
        raise ValueError(f"weight_size must have 4 ints (C_out, C_in/groups, KH, KW); got "
                         f"{len(sizes)}: {sizes}")
    return tuple(sizes)


def _check_weight(shape, groups, name, what):
    """Shape checks of an (A, B, KH, KW) weight whose dimension 0 is split into groups."""
    if len(shape) != 4:
        raise ValueError(f"{name} must be 4-D {what}, got shape {shape}")
    if shape[2] == 0 or shape[3] == 0:
        raise ValueError(f"{name} must have a non-empty spatial size, got shape {shape}")
    if shape[0] == 0 or shape[0] % groups != 0:
        raise ValueError(f"groups={groups} must divide the {name}'s dimension 0, which must be "
                         f"at least groups; {name} shape {shape}")


class TorchCall:
    """A validated PyTorch-convention call, ready to run.

    ``x`` (N, H, W, C), ``filter`` (KH, KW, C/groups, F) and ``y`` (N, OH, OW, F) are the
    logical NHWC / HWIO views the engine takes for ``op`` ("forward", "input" or "filter"),
    one of them a view of ``out``, the array returned; ``bias`` is added to the result.
    """

    def __init__(self, op, x, filter, y, out, geometry, groups, threads, algorithm, bias):
        self.op, self.x, self.filter, self.y, self.out = op, x, filter, y, out
        self.geometry, self.groups, self.threads, self.algorithm = (geometry, groups, threads,
                                                                    algorithm)
        self.bias = bias

    def run(self):
        if self.bias is None:
            _engine.compute(self.op, self.x, self.filter, self.y, self.geometry, self.groups,
                            self.threads, self.algorithm)
            return self.out
        args = (self.geometry, self.groups, self.threads, self.algorithm)
        operands = [self.x, self.filter, self.y]
        at = 2 if self.op == "forward" else 0  # bias is only taken by forward and transpose
        result = operands[at]
        if result.dtype == np.float16:  # add the bias in float32, round to float16 once
            operands = [np.empty(a.shape, np.float32) if i == at else a.astype(np.float32)
                        for i, a in enumerate(operands)]
        _engine.compute(self.op, *operands, *args)
        operands[at] += self.bias.astype(operands[at].dtype, copy=False)
        if operands[at] is not result:
            result[...] = operands[at]
        return self.out


# The API names of each op's operands (data, weight, grad).
_TORCH_OPERANDS = {"forward": ("input", "weight", None),
                   "input": ("input_size", "weight", "grad_output"),
                   "weight": ("input", "weight_size", "grad_output"),
                   "transpose": ("input", "weight", None)}
# The engine's op of each (the transposed convolution is an input gradient).
_ENGINE_OPS = {"forward": "forward", "input": "input", "weight": "filter", "transpose": "input"}


class _TorchPlan(NamedTuple):
    """What the checks of a call find: how to view the input in logical NCHW order, the
    engine's arguments, and the result's logical NCHW shape, memory format and layout."""

    data_axes: Optional[tuple]  # the input's transpose to logical NCHW ("NHWC" data)
    unbatched: bool
    geometry: ConvGeometry
    groups: int
    threads: Optional[int]
    algorithm: str
    c_out: int  # output channels, the length of a bias
    shape: tuple  # the result's, logical NCHW (OIHW for the weight)
    channels_last: bool
    what: tuple  # the result's names for check_result_size
    fits: bool  # the result passes check_result_size at any dtype
    to_format: tuple  # logical NCHW -> the result's data_format order
    out_shape: tuple  # an ``out``'s shape


def _torch_plan(op, data, weight, grad, stride, padding, dilation, groups, output_padding,
                data_format, num_threads, algorithm):
    """The checks of :func:`torch_call` after its arrays are converted and before ``bias``.

    ``data`` and ``grad`` are (shape, strides) of the input and grad_output arrays (``data``
    the input's size as given for "input"; ``grad`` None where there is none), ``weight`` the
    weight's shape (its size as given for "weight").  A function of its arguments' values
    only: remembered by ``_remembered_torch_plan`` when they are :func:`plain`.
    """
    names = _TORCH_OPERANDS[op]
    takes_data = op != "input"
    unbatched, data_axes, data_shape, data_channels_last = False, None, None, False
    if takes_data:
        data_shape, strides = data
        unbatched = len(data_shape) == 3 and op in ("forward", "transpose")
        if len(data_shape) != 4 and not unbatched:
            what = "4-D" if op == "weight" else "4-D (batched) or 3-D (unbatched)"
            raise ValueError(f"input must be {what} in {data_format} order, got shape "
                             f"{data_shape}")
        # Logical NCHW view.  For the memory-format rule an unbatched input's batch axis
        # strides over the whole image, so a (C, H, W) view of HWC memory counts as channels
        # last (PyTorch's unsqueeze(0) would give it stride C*stride_C and make it NCHW).
        if data_format == "NHWC":
            data_axes = (2, 0, 1) if unbatched else _NHWC_AS_NCHW
            data_shape = tuple(data_shape[i] for i in data_axes)
            strides = tuple(strides[i] for i in data_axes)
        if unbatched:
            extent = max(abs(st) * size for st, size in zip(strides, data_shape))
            data_channels_last = is_channels_last((1,) + data_shape, (extent,) + strides)
            data_shape = (1,) + data_shape
        else:
            data_channels_last = is_channels_last(data_shape, strides)
    grad_shape = None if grad is None else grad[0]
    if op in ("input", "weight") and len(grad_shape) != 4:
        raise ValueError(f"grad_output must be 4-D (N, C_out, OH, OW), got shape "
                         f"{grad_shape}")

    stride = torch_pair(stride, "stride", minimum=1)
    dilation = torch_pair(dilation, "dilation", minimum=1)
    if op == "transpose":
        output_padding = torch_pair(output_padding, "output_padding", minimum=0)
        if isinstance(padding, str):
            raise TypeError(f"padding must be an int or (int, int) for a transposed "
                            f"convolution, got {padding!r} (PyTorch's conv_transpose2d has no "
                            f"string padding)")
        padding = torch_pair(padding, "padding", minimum=0)
    groups = as_int(groups, "groups", minimum=1)
    threads = _engine.check_threads(num_threads)
    algorithm = _engine.check_algorithm(algorithm)

    weight_shape = _weight_size(weight) if op == "weight" else weight
    wname = names[1]
    _check_weight(weight_shape, groups, wname, "(C_in, C_out/groups, KH, KW)"
                  if op == "transpose" else "(C_out, C_in/groups, KH, KW)")
    kernel_hw = weight_shape[2:]
    if op == "transpose":
        c_in, c_out = weight_shape[0], weight_shape[1] * groups  # of the transposed conv
    else:
        c_out, c_in = weight_shape[0], weight_shape[1] * groups  # of the convolution
    if takes_data and data_shape[1] != c_in:
        raise ValueError(f"input: given groups={groups}, {wname} of size {list(weight_shape)}, "
                         f"expected input{list(data_shape)} ({data_format}, logical NCHW) to "
                         f"have {c_in} channels, but got {data_shape[1]} channels instead")
    if grad_shape is not None and grad_shape[1] != c_out:
        raise ValueError(f"grad_output has {grad_shape[1]} channels but the {wname} has "
                         f"{c_out} output channels (dimension 0); grad_output shape "
                         f"{grad_shape}, {wname} shape {weight_shape}")
    if op in ("forward", "weight") and min(data_shape[2:]) == 0:
        raise ValueError(f"input: only zero batch or zero channel inputs are supported, but "
                         f"got input of shape {data_shape} (logical NCHW)")

    if op == "transpose":
        geometry = torch_transpose_geometry(data_shape[2:], kernel_hw, stride, padding,
                                            output_padding, dilation)
    else:
        pads = torch_padding(padding, kernel_hw, stride, dilation)
        if op == "input":
            geometry = torch_grad_input_geometry(_input_size(data, grad_shape[0], c_in),
                                                 grad_shape[2:], kernel_hw, stride,
                                                 dilation, pads)
        else:
            geometry = torch_forward_geometry(data_shape[2:], kernel_hw, stride, dilation,
                                              pads)
    if op == "weight":
        expected = (data_shape[0], c_out) + geometry.out_hw
        if grad_shape != expected:
            raise ValueError(f"grad_output has shape {grad_shape} but the convolution "
                             f"of input {data_shape} by a weight of size {list(weight_shape)} "
                             f"(stride {stride}, padding {geometry.pads}, dilation "
                             f"{dilation}) has output shape {expected}")

    # The result, logical NCHW (OIHW for the weight), in the memory format PyTorch gives.
    if op == "forward":
        shape, channels_last = (data_shape[0], c_out) + geometry.out_hw, data_channels_last
    elif op == "transpose":
        shape, channels_last = (data_shape[0], c_out) + geometry.in_hw, data_channels_last
    elif op == "input":
        shape = (grad_shape[0], c_in) + geometry.in_hw
        channels_last = is_channels_last(grad_shape, grad[1])
    else:
        shape, channels_last = tuple(weight_shape), data_channels_last
    what = {"forward": ("input/weight: the output of shape", "convolution output"),
            "transpose": ("input/stride/dilation: the output of shape",
                          "transposed-convolution output"),
            "input": ("input_size", "result"), "weight": ("weight_size", "result")}[op]
    to_format = _NCHW_AS_NHWC if data_format == "NHWC" and op in ("forward", "transpose") \
        else (0, 1, 2, 3)
    out_shape = tuple(shape[i] for i in to_format)[unbatched:]
    return _TorchPlan(data_axes, unbatched, geometry, groups, threads, algorithm, c_out, shape,
                      channels_last, what, _engine.fits_at_any_dtype(shape), to_format,
                      out_shape)


# A training loop makes the same few calls at every step.  Exceptions are not remembered.
_remembered_torch_plan = functools.lru_cache(maxsize=256)(_torch_plan)


def torch_call(op, data, weight, grad_output, *, stride, padding, dilation, groups,
               output_padding=0, bias=None, data_format="NCHW", out=None, num_threads=None,
               algorithm="auto"):
    """Validate a PyTorch-convention call of ``op`` and prepare it (:class:`TorchCall`).

    ``op`` is "forward" (``F.conv2d``: ``data`` the input array), "input" (``conv2d_input``:
    ``data`` the input's size), "weight" (``conv2d_weight``: ``weight`` the weight's size) or
    "transpose" (``F.conv_transpose2d``: ``data`` the input array, the output gradient of the
    convolution whose input gradient is computed).  "forward" and "transpose" take an unbatched
    3-D input, ``bias`` and ``data_format``; the others take 4-D NCHW-shaped arrays.
    """
    data_format = check_data_format(data_format)
    if op == "forward" or op == "transpose":
        weight, data = _engine.common_dtype(weight, data, ("weight", "input"))
        dtype = weight.dtype
    elif op == "input":
        weight, grad_output = _engine.common_dtype(weight, grad_output,
                                                   ("weight", "grad_output"))
        dtype = weight.dtype
    else:
        data, grad_output = _engine.common_dtype(data, grad_output, ("input", "grad_output"))
        dtype = data.dtype
    args = (op, data if op == "input" else (data.shape, data.strides),
            weight if op == "weight" else weight.shape,
            None if grad_output is None else (grad_output.shape, grad_output.strides),
            stride, padding, dilation, groups, output_padding, data_format, num_threads,
            algorithm)
    sizes = data if op == "input" else weight if op == "weight" else None
    if plain((sizes, stride, padding, dilation, groups, output_padding, num_threads,
              algorithm)):
        plan = _remembered_torch_plan(*args)
    else:
        plan = _torch_plan(*args)

    if bias is not None:
        bias = _engine.as_float_array(bias, "bias", dtype)
        if bias.dtype != dtype:
            raise TypeError(f"dtype mismatch: bias is {bias.dtype} but input and weight are "
                            f"{dtype}")
        if bias.shape != (plan.c_out,):
            raise ValueError(f"bias must be 1-D with {plan.c_out} elements (the output "
                             f"channels), got shape {bias.shape}")
    if not plan.fits:
        _engine.check_result_size(plan.shape, dtype, *plan.what)
    if op != "input":  # the logical NCHW view
        if plan.data_axes is not None:
            data = data.transpose(plan.data_axes)
        if plan.unbatched:
            data = data[None]
    unbatched, to_format = plan.unbatched, plan.to_format
    if out is None:
        result = _empty_nchw(plan.shape, dtype, plan.channels_last)
        out = result.transpose(to_format)[0] if unbatched else result.transpose(to_format)
    else:
        operands = [(name, arr) for name, arr in (("input", data), ("weight", weight),
                                                  ("grad_output", grad_output), ("bias", bias))
                    if isinstance(arr, np.ndarray)]
        _engine.check_out(out, plan.out_shape, dtype, operands)
        result = (out[None] if unbatched else out).transpose(np.argsort(to_format))

    if op == "forward":
        x, filt, y = data, weight, result
    elif op == "transpose":
        x, filt, y = result, weight, data
    elif op == "input":
        x, filt, y = result, weight, grad_output
    else:
        x, filt, y = data, result, grad_output
    return TorchCall(_ENGINE_OPS[op], x.transpose(_NCHW_AS_NHWC), filt.transpose(_OIHW_AS_HWIO),
                     y.transpose(_NCHW_AS_NHWC), out, plan.geometry, plan.groups,
                     plan.threads, plan.algorithm, bias)


def conv2d(input: npt.ArrayLike, weight: npt.ArrayLike, bias: Optional[npt.ArrayLike] = None,
           stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1, *,
           data_format: DataFormat = "NCHW", out: Optional[FloatArray] = None,
           num_threads: Optional[int] = None, algorithm: Algorithm = "auto") -> FloatArray:
    """2-D convolution, PyTorch conventions.

    The semantics of ``torch.nn.functional.conv2d``:
    ``y[n, f, oh, ow] = bias[f] + sum x[n, c, ih, iw] * weight[f, c, kh, kw]`` over the input
    channels of ``f``'s group and every ``ih = oh*stride_h - pad_h + kh*dilation_h`` inside the
    input (likewise columns).

    Parameters
    ----------
    input : array_like of shape (N, C_in, H, W), or (C_in, H, W) unbatched
        In ``data_format`` order ((N, H, W, C_in) or (H, W, C_in) for "NHWC"), any strides;
        float16, float32 or float64.
    weight : array_like of shape (C_out, C_in / groups, KH, KW)
        OIHW, whatever ``data_format`` is; same dtype as ``input``.
    bias : array_like of shape (C_out,), optional
        Added to every output pixel of each output channel.
    stride : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
        Zero padding on both sides of each spatial dimension.  "same" (stride 1 only) pads
        ``dilation*(k - 1)`` in total, ``total // 2`` before and the rest after (PyTorch's
        asymmetric "same" for even kernels).
    dilation : int or (int, int), default 1
    groups : int, default 1
        Divides C_in and C_out: output channels of group g read input channels of g only.
    data_format : {"NCHW", "NHWC"}, default "NCHW"
        Layout of ``input``, ``out`` and the result (not of the weight).
    out : ndarray, optional
        Where to write the result (its shape in ``data_format`` order, the operands' dtype),
        any strides; written in place and returned.  It must not overlap the operands.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, C_out, OH, OW), or (N, OH, OW, C_out) for "NHWC"
        ``OH = (H + 2*pad - dilation*(KH - 1) - 1) // stride + 1`` (likewise OW), with the
        operands' dtype (float16 computed in float32, bias included, and rounded once).
        Unless ``out`` is given it has the input's memory format by PyTorch's
        ``suggest_memory_format`` rule: NHWC memory for a channels-last input, else NCHW.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message; a dilated kernel
        larger than the padded input is PyTorch's "Kernel size can't be greater than actual
        input size".

    See Also
    --------
    conv2d_input, conv2d_weight : its gradients.
    convbp.tf.conv2d : the same operation in TensorFlow's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 1, 3, 3), np.float32)            # (N, C_in, H, W)
    >>> weight = np.ones((1, 1, 2, 2), np.float32)       # (C_out, C_in, KH, KW)
    >>> convbp.torch.conv2d(x, weight, padding="same")[0, 0]
    array([[4., 4., 2.],
           [4., 4., 2.],
           [2., 2., 1.]], dtype=float32)
    """
    return torch_call("forward", input, weight, None, bias=bias, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      data_format=data_format, out=out, num_threads=num_threads,
                      algorithm=algorithm).run()


def conv2d_input(input_size: Ints, weight: npt.ArrayLike, grad_output: npt.ArrayLike,
                 stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1, *,
                 out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                 algorithm: Algorithm = "auto") -> FloatArray:
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
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

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
    return torch_call("input", input_size, weight, grad_output, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, out=out,
                      num_threads=num_threads, algorithm=algorithm).run()


def conv2d_weight(input: npt.ArrayLike, weight_size: Ints, grad_output: npt.ArrayLike,
                  stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1,
                  *, out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                  algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a 2-D convolution with respect to its weight, PyTorch conventions.

    The semantics of ``torch.nn.grad.conv2d_weight``: the gradient, with respect to
    ``weight``, of ``F.conv2d(input, weight, stride=stride, padding=padding,
    dilation=dilation, groups=groups)`` given ``grad_output``, the gradient of its output.

    Parameters
    ----------
    input : array_like of shape (N, C_in, H, W)
        The convolution's input, any strides (channels-last views read in place).
    weight_size : sequence of 4 ints
        The weight's shape (C_out, C_in / groups, KH, KW).
    grad_output : array_like of shape (N, C_out, OH, OW)
        Gradient with respect to the convolution's output: exactly its output's shape.
    stride : int or (int, int), default 1
    padding : int, (int, int), "valid" or "same", default 0
        As in :func:`conv2d`.
    dilation : int or (int, int), default 1
    groups : int, default 1
    out : ndarray of shape ``weight_size``, optional
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
    ndarray of shape ``weight_size``
        With the operands' dtype.  Unless ``out`` is given it is in channels-last memory
        (OHWI) when ``input`` is channels-last, as PyTorch's CPU kernel gives, else
        C-contiguous.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    See Also
    --------
    convbp.tf.conv2d_backprop_filter : the same operation in TensorFlow's conventions.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    >>> grad_output = np.ones((1, 1, 2, 2), np.float32)
    >>> convbp.torch.conv2d_weight(x, (1, 1, 2, 2), grad_output)[0, 0]
    array([[ 8., 12.],
           [20., 24.]], dtype=float32)
    """
    return torch_call("weight", input, weight_size, grad_output, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, out=out,
                      num_threads=num_threads, algorithm=algorithm).run()


def conv_transpose2d(input: npt.ArrayLike, weight: npt.ArrayLike,
                     bias: Optional[npt.ArrayLike] = None, stride: Ints = 1, padding: Ints = 0,
                     output_padding: Ints = 0, groups: int = 1, dilation: Ints = 1, *,
                     data_format: DataFormat = "NCHW", out: Optional[FloatArray] = None,
                     num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> FloatArray:
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
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

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
    return torch_call("transpose", input, weight, None, bias=bias, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      output_padding=output_padding, data_format=data_format, out=out,
                      num_threads=num_threads, algorithm=algorithm).run()


# ---------------------------------------------------------------------------------------------
# 1-D: the 2-D functions on views with a height of 1 (no copies).

def _with_height(array):
    """(..., C, L) -> the (..., C, 1, L) view."""
    return array[..., None, :]


def _out_1d(out, dims):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.ndim not in dims:
        raise ValueError(f"out has the wrong shape: actual = {out.shape}, expected "
                         f"{' or '.join(map(str, dims))} dimensions")
    return _with_height(out)


def _without_height(result, out):
    """The 1-D result: ``out`` itself when given, else the view without the height axis."""
    return out if out is not None else result[..., 0, :]


def _size_1d(size, name, length):
    """A 3-int size (N, C, L) -> (N, C, 1, L); ``length`` ints (L,) -> (1, L) too."""
    if isinstance(size, np.ndarray) and size.ndim == 0:
        raise ValueError(f"{name} must be a sequence of 3 ints, got a 0-d array")
    sizes = int_list(size, name, minimum=0)
    if len(sizes) not in (3,) + length:
        raise ValueError(f"{name} must have 3 ints" + (" or 1 int (L,)" if length else "")
                         + f"; got {len(sizes)}: {sizes}")
    return sizes[:-1] + [1, sizes[-1]]


def _params_1d(stride, padding, dilation):
    stride = (1, torch_single(stride, "stride", minimum=1))
    dilation = (1, torch_single(dilation, "dilation", minimum=1))
    if not isinstance(padding, str):
        padding = (0, torch_single(padding, "padding", minimum=0))
    return stride, padding, dilation


def _arrays_1d(first, second, names, dims):
    """Two operands of one dtype; the one named "input" or "grad_output" with ``dims``
    dimensions, "weight" 3-D; both viewed with a height of 1."""
    first, second = _engine.common_dtype(first, second, names)
    for name, array in zip(names, (first, second)):
        want = (3,) if name != "input" else dims
        if array.ndim not in want:
            raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in want)}, got "
                             f"shape {array.shape}")
    return _with_height(first), _with_height(second)


def conv1d(input: npt.ArrayLike, weight: npt.ArrayLike, bias: Optional[npt.ArrayLike] = None,
           stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1, *,
           out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
           algorithm: Algorithm = "auto") -> FloatArray:
    """1-D convolution, PyTorch conventions.

    The semantics of ``torch.nn.functional.conv1d``: :func:`conv2d` of the arrays viewed with
    a height of 1 (no copy).

    Parameters
    ----------
    input : array_like of shape (N, C_in, L), or (C_in, L) unbatched
    weight : array_like of shape (C_out, C_in / groups, K)
    bias : array_like of shape (C_out,), optional
    stride : int or (int,), default 1
    padding : int, (int,), "valid" or "same", default 0
        "same" (stride 1 only) pads ``dilation*(K - 1)`` in total, the odd extra at the end.
    dilation : int or (int,), default 1
    groups : int, default 1
    out : ndarray of shape (N, C_out, L_out) (or (C_out, L_out)), optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, C_out, L_out), or (C_out, L_out) unbatched
        ``L_out = (L + 2*padding - dilation*(K - 1) - 1) // stride + 1``; C-contiguous
        unless ``out`` is given, as PyTorch's.

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)       # (N, C_in, L)
    >>> weight = np.ones((1, 1, 2), np.float32)                    # (C_out, C_in, K)
    >>> convbp.torch.conv1d(x, weight)[0, 0]
    array([1., 3., 5., 7.], dtype=float32)
    """
    x, w = _arrays_1d(input, weight, ("input", "weight"), (2, 3))
    stride, padding, dilation = _params_1d(stride, padding, dilation)
    result = conv2d(x, w, bias, stride, padding, dilation, groups, out=_out_1d(out, (2, 3)),
                    num_threads=num_threads, algorithm=algorithm)
    return _without_height(result, out)


def conv1d_input(input_size: Ints, weight: npt.ArrayLike, grad_output: npt.ArrayLike,
                 stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1,
                 *, out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                 algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a 1-D convolution with respect to its input, PyTorch conventions.

    The semantics of ``torch.nn.grad.conv1d_input``: :func:`conv2d_input` of the arrays
    viewed with a height of 1 (no copy).

    Parameters
    ----------
    input_size : sequence of 3 ints (N, C_in, L), or of 1 int (L,)
        Shape of the convolution's input; any L whose convolution has ``grad_output``'s
        length is accepted, as in :func:`conv2d_input`.
    weight : array_like of shape (C_out, C_in / groups, K)
    grad_output : array_like of shape (N, C_out, L_out)
    stride : int or (int,), default 1
    padding : int, (int,), "valid" or "same", default 0
    dilation : int or (int,), default 1
    groups : int, default 1
    out : ndarray of shape (N, C_in, L), optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, C_in, L)

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> weight = np.ones((1, 1, 3), np.float32)
    >>> grad_output = np.ones((1, 1, 3), np.float32)
    >>> convbp.torch.conv1d_input((1, 1, 5), weight, grad_output)[0, 0]
    array([1., 2., 3., 2., 1.], dtype=float32)
    """
    w, dy = _arrays_1d(weight, grad_output, ("weight", "grad_output"), (3,))
    stride, padding, dilation = _params_1d(stride, padding, dilation)
    size = _size_1d(input_size, "input_size", (1,))
    result = conv2d_input(size, w, dy, stride, padding, dilation, groups,
                          out=_out_1d(out, (3,)), num_threads=num_threads, algorithm=algorithm)
    return _without_height(result, out)


def conv1d_weight(input: npt.ArrayLike, weight_size: Ints, grad_output: npt.ArrayLike,
                  stride: Ints = 1, padding: Padding = 0, dilation: Ints = 1, groups: int = 1,
                  *, out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                  algorithm: Algorithm = "auto") -> FloatArray:
    """Gradient of a 1-D convolution with respect to its weight, PyTorch conventions.

    The semantics of ``torch.nn.grad.conv1d_weight``: :func:`conv2d_weight` of the arrays
    viewed with a height of 1 (no copy).

    Parameters
    ----------
    input : array_like of shape (N, C_in, L)
    weight_size : sequence of 3 ints
        The weight's shape (C_out, C_in / groups, K).
    grad_output : array_like of shape (N, C_out, L_out)
    stride : int or (int,), default 1
    padding : int, (int,), "valid" or "same", default 0
    dilation : int or (int,), default 1
    groups : int, default 1
    out : ndarray of shape ``weight_size``, optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape ``weight_size``

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    >>> grad_output = np.ones((1, 1, 4), np.float32)
    >>> convbp.torch.conv1d_weight(x, (1, 1, 2), grad_output)[0, 0]
    array([ 6., 10.], dtype=float32)
    """
    x, dy = _arrays_1d(input, grad_output, ("input", "grad_output"), (3,))
    stride, padding, dilation = _params_1d(stride, padding, dilation)
    size = _size_1d(weight_size, "weight_size", ())
    result = conv2d_weight(x, size, dy, stride, padding, dilation, groups,
                           out=_out_1d(out, (3,)), num_threads=num_threads,
                           algorithm=algorithm)
    return _without_height(result, out)


def conv_transpose1d(input: npt.ArrayLike, weight: npt.ArrayLike,
                     bias: Optional[npt.ArrayLike] = None, stride: Ints = 1, padding: Ints = 0,
                     output_padding: Ints = 0, groups: int = 1, dilation: Ints = 1, *,
                     out: Optional[FloatArray] = None, num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> FloatArray:
    """1-D transposed convolution, PyTorch conventions.

    The semantics of ``torch.nn.functional.conv_transpose1d``: :func:`conv_transpose2d` of
    the arrays viewed with a height of 1 (no copy).  The output's length is
    ``(L - 1)*stride - 2*padding + dilation*(K - 1) + output_padding + 1``.

    Parameters
    ----------
    input : array_like of shape (N, C_in, L), or (C_in, L) unbatched
    weight : array_like of shape (C_in, C_out / groups, K)
    bias : array_like of shape (C_out,), optional
    stride : int or (int,), default 1
    padding : int or (int,), default 0
    output_padding : int or (int,), default 0
        Smaller than either the stride or the dilation.
    groups : int, default 1
    dilation : int or (int,), default 1
    out : ndarray of shape (N, C_out, L_out) (or (C_out, L_out)), optional
        Where to write the result, any strides; written in place and returned.
    num_threads : int, optional
        Threads to use; default all cores this process may run on.
    algorithm : {"auto", "gemm", "winograd"}, default "auto"
        Which kernel computes the result; "auto" picks one.

    Returns
    -------
    ndarray of shape (N, C_out, L_out), or (C_out, L_out) unbatched

    Raises
    ------
    ValueError, TypeError
        For any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, convbp
    >>> x = np.ones((1, 1, 2), np.float32)                         # (N, C_in, L)
    >>> weight = np.ones((1, 1, 3), np.float32)                    # (C_in, C_out, K)
    >>> convbp.torch.conv_transpose1d(x, weight, stride=2)[0, 0]
    array([1., 1., 2., 1., 1.], dtype=float32)
    """
    x, w = _arrays_1d(input, weight, ("input", "weight"), (2, 3))
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or (int,) for a transposed convolution, got "
                        f"{padding!r}")
    stride, padding, dilation = _params_1d(stride, padding, dilation)
    output_padding = (0, torch_single(output_padding, "output_padding", minimum=0))
    result = conv_transpose2d(x, w, bias, stride, padding, output_padding, groups, dilation,
                              out=_out_1d(out, (2, 3)), num_threads=num_threads,
                              algorithm=algorithm)
    return _without_height(result, out)
