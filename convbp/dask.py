"""convbp for ``dask.array`` (``convbp.dask``): convolutions of arrays larger than memory.

The same names and semantics as :mod:`convbp.tf` and :mod:`convbp.torch`, for Dask arrays
(``pip install 'convbp[dask]'``): the forward convolution :func:`conv2d`, its input gradient
:func:`conv2d_backprop_input` (and :func:`conv_transpose2d`), its filter gradient
:func:`conv2d_backprop_filter`.  The result is built block by block: every block is one task
that calls the in-memory function on exactly the region of the operand that reaches it -- its
rows and columns plus the halo the kernel size, stride, dilation and padding give -- with
explicit padding chosen so that the block equals the matching slice of the in-memory result.
No task sees a whole operand unless the whole of it reaches one block, and a result is never
gathered (the filter gradient, the size of the filter, is summed from one partial a block).

Chunking
--------
- N: blockwise; a result block of images ``[n0, n1)`` reads those images only.
- H and W: by default the result's chunks are the operand's chunks mapped through the stride
  (for the input gradient, an ``out_backprop`` row boundary ``o`` becomes ``o * stride``; for
  the forward convolution an input row boundary ``i`` becomes ``ceil(i / stride)``), so blocks
  and their halos line up; ``chunks=`` picks any others (a chunk may be smaller than the
  kernel's reach, even 1).  The filter gradient has one partial a chunk of ``out_backprop``.
- C: the channels of the operands are rechunked into one chunk (every result channel sums over
  all of them, or over all of its group), and the result's channel axis is one chunk.

Threads
-------
``num_threads=None`` sets convbp's threads in each task so that Dask's and convbp's threads
together fill the cores once: ``cores // tasks_at_once``, at least 1 and at most
``OMP_NUM_THREADS`` when that is set -- ``tasks_at_once`` is the worker's thread count on a
``distributed`` worker (whose nanny sets ``OMP_NUM_THREADS=1`` in worker processes, which share
the machine's cores), the pool size (``num_workers``, default the core count) on the local
threaded scheduler, and 1 on the synchronous scheduler.  See :func:`task_threads`.  (A
``num_workers=`` passed to ``compute()`` is not visible to the tasks: set it with
``dask.config.set(num_workers=...)`` or pass ``num_threads``.)
"""

import bisect
import functools
import itertools
import operator
import os
import threading
from typing import Any, Optional, Sequence

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _engine
from . import tf as _tf
from . import torch as _torch
from ._geometry import (TapWindow, axis_halo, check_data_format, forward_geometry, int_list,
                        layout_axes, spatial_pair, tap_window, tf_padding, torch_pair,
                        torch_transpose_geometry)
from .tf import Algorithm, DataFormat, Ints, Padding

__all__ = ["conv2d", "conv2d_backprop_filter", "conv2d_backprop_input", "conv_transpose2d",
           "task_threads"]

# Partial filter gradients are added this many at a time, in block order (a fixed tree).
_SUM_FAN_IN = 8

def task_threads():
    """convbp threads for one Dask task running now, so that tasks x threads <= cores.

    ``max(1, cores // tasks_at_once)``, capped by ``OMP_NUM_THREADS`` when it is set, where
    ``cores`` is :func:`convbp.default_num_threads` and ``tasks_at_once`` is the ``nthreads`` of
    the ``distributed`` worker running the task, or 1 when the task runs on the main thread
    (the synchronous scheduler), or else the local threaded scheduler's pool size
    (``dask.config`` ``num_workers``, default the core count).
    """
    cores = _engine.default_num_threads()
    worker = None
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):  # no distributed, or not on a worker
        pass
    if worker is not None:
        tasks_at_once = worker.state.nthreads
    elif threading.current_thread() is threading.main_thread():
        tasks_at_once = 1
    else:
        tasks_at_once = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    threads = max(1, cores // max(1, tasks_at_once))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        threads = min(threads, int(limit))
    return threads


def conv2d(input: Any, filter: npt.ArrayLike, strides: Ints, padding: Padding, *,
           data_format: DataFormat = "NHWC", dilations: Ints = 1,
           explicit_paddings: Optional[Sequence[int]] = None, chunks: Any = None,
           num_threads: Optional[int] = None, algorithm: Algorithm = "auto") -> da.Array:
    """2-D convolution, TensorFlow conventions, for Dask arrays.

    :func:`convbp.tf.conv2d` (``tf.raw_ops.Conv2D``) computed block by block; every argument
    means what it means there.  Each block of the result is one in-memory call on the input
    rows and columns its taps read (output rows ``[a, b)`` read input rows
    ``[a*stride - pad_top, (b-1)*stride - pad_top + (KH-1)*dilation + 1)``, clipped to the
    input), with the padding adjusted so that the block equals the matching slice of the
    in-memory result (the same kernel on the same numbers, to rounding).

    Parameters
    ----------
    input : dask array (or array_like) of shape (N, H, W, C) or (N, C, H, W)
        In ``data_format`` order, chunked along N, H and W as you like; its channels are
        rechunked into one chunk.
    filter : array_like or dask array of shape (KH, KW, C_in, C_out)
        HWIO (C_in may divide C: a grouped convolution); one chunk, sent once to every task.
    strides, padding, dilations, explicit_paddings, data_format, algorithm
        As :func:`convbp.tf.conv2d`.
    chunks : dask chunk specification of the result, optional
        Chunks of the result in ``data_format`` order (anything ``dask.array`` accepts: an int,
        a tuple, a dict by axis, "auto"); the channel axis is always one chunk.  Default: N as
        ``input``, H and W its chunks mapped through the stride (an input row boundary ``i``
        becomes the output row boundary ``ceil(i / stride)``).
    num_threads : int, optional
        convbp threads in each task; default :func:`task_threads` at run time.

    Returns
    -------
    dask array of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        The convolution in ``data_format`` order, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        At once (before anything is computed), for any malformed argument, with the argument's
        name in the message -- the in-memory function's checks.

    See Also
    --------
    conv2d_backprop_input, conv2d_backprop_filter : its gradients, for Dask arrays.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convbp.dask
    >>> x = da.ones((2, 6, 6, 1), chunks=(1, 3, 3, 1))         # NHWC, 3x3 pixel chunks
    >>> w = np.ones((3, 3, 1, 2))                              # HWIO
    >>> y = convbp.dask.conv2d(x, w, 2, "SAME")
    >>> y.chunks
    ((1, 1), (2, 1), (2, 1), (2,))
    >>> y[0, :, :, 0].compute()
    array([[9., 9., 6.],
           [9., 9., 6.],
           [6., 6., 4.]])
    """
    x = _as_dask(input, "input")
    data_format = check_data_format(data_format)
    filt, filt_meta = _small_operand(filter)
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D ({data_format}): actual shape = {x.shape}, "
                         f"expected 4 dimensions")
    # The in-memory function checks every argument on an empty batch (nothing is computed).
    meta = _tf.conv2d(np.empty((0,) + x.shape[1:], x.dtype), filt_meta, strides, padding,
                      data_format=data_format, dilations=dilations,
                      explicit_paddings=explicit_paddings, num_threads=num_threads,
                      algorithm=algorithm)
    filt = filt.astype(meta.dtype)  # a list filter takes the input's dtype, as in memory
    geometry = _tf_geometry(x.shape, filt.shape[:2], strides, padding, data_format, dilations,
                            explicit_paddings)
    shape = (x.shape[0],) + meta.shape[1:]
    return _forward(x, filt, shape, geometry, data_format, chunks, num_threads, algorithm)


def conv2d_backprop_input(input_sizes: Ints, filter: npt.ArrayLike, out_backprop: Any,
                          strides: Ints, padding: Padding, *, data_format: DataFormat = "NHWC",
                          dilations: Ints = 1, explicit_paddings: Optional[Sequence[int]] = None,
                          chunks: Any = None, num_threads: Optional[int] = None,
                          algorithm: Algorithm = "auto") -> da.Array:
    """Gradient of a 2-D convolution with respect to its input, for Dask arrays.

    :func:`convbp.tf.conv2d_backprop_input` (TensorFlow's ``tf.raw_ops.Conv2DBackpropInput``)
    computed block by block; every argument means what it means there.  Each block of the
    result equals the matching slice of the in-memory result (the same kernel on the same
    numbers; the sums may be grouped differently, so equal to rounding).

    Parameters
    ----------
    input_sizes : sequence of 4 ints, or of 2 ints
        Shape of the convolution's input in ``data_format`` order, or its ``(H, W)``.
    filter : array_like or dask array of shape (KH, KW, C_in, C_out)
        The filter (HWIO); one chunk, sent once to every task.
    out_backprop : dask array (or array_like) of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        Gradient of the convolution's output in ``data_format`` order, chunked along N, OH and
        OW as you like; its channels are rechunked into one chunk.
    strides, padding, dilations, explicit_paddings, data_format, algorithm
        As :func:`convbp.tf.conv2d_backprop_input`.
    chunks : dask chunk specification of the result, optional
        Chunks of the result in ``data_format`` order (anything ``dask.array`` accepts: an int,
        a tuple, a dict by axis, "auto"); the channel axis is always one chunk.  Default: N as
        ``out_backprop``, H and W its chunks mapped through the stride.
    num_threads : int, optional
        convbp threads in each task; default :func:`task_threads` at run time.

    Returns
    -------
    dask array of shape ``input_sizes``
        The input gradient in ``data_format`` order, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        At once (before anything is computed), for any malformed argument, with the argument's
        name in the message -- the in-memory function's checks.

    See Also
    --------
    conv2d, conv2d_backprop_filter : the forward convolution and the filter gradient.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convbp.dask
    >>> dy = da.ones((4, 8, 8, 2), chunks=(2, 3, 8, 2))        # NHWC, rows in chunks of 3
    >>> w = np.ones((3, 3, 1, 2))                              # HWIO
    >>> dx = convbp.dask.conv2d_backprop_input((4, 16, 16, 1), w, dy, 2, "SAME")
    >>> dx.chunks
    ((2, 2), (6, 6, 4), (16,), (1,))
    >>> dx[0, :4, :4, 0].compute()
    array([[2., 2., 4., 2.],
           [2., 2., 4., 2.],
           [4., 4., 8., 4.],
           [2., 2., 4., 2.]])
    """
    dy = _as_dask(out_backprop, "out_backprop")
    data_format = check_data_format(data_format)
    filt, filt_meta = _small_operand(filter)
    if dy.ndim != 4:
        raise ValueError(f"out_backprop must be 4-D ({data_format}): actual shape = "
                         f"{dy.shape}, expected 4 dimensions")
    # The in-memory function checks every argument on an empty batch (nothing is computed).
    sizes = int_list(input_sizes, "input_sizes", minimum=0)
    n = dy.shape[0]
    if len(sizes) == 4 and sizes[0] != n:
        raise ValueError(f"Size of out_backprop doesn't match computed: batch: actual = {n}, "
                         f"computed = {sizes[0]} (input_sizes {sizes} {data_format})")
    meta_sizes = [0] + sizes[1:] if len(sizes) == 4 else sizes
    meta = _tf.conv2d_backprop_input(meta_sizes, filt_meta, np.empty((0,) + dy.shape[1:],
                                                                     dy.dtype),
                                     strides, padding, data_format=data_format,
                                     dilations=dilations, explicit_paddings=explicit_paddings,
                                     num_threads=num_threads, algorithm=algorithm)
    filt = filt.astype(meta.dtype)  # a list filter takes out_backprop's dtype, as in memory
    geometry = _tf_geometry(meta.shape, filt.shape[:2], strides, padding, data_format,
                            dilations, explicit_paddings)
    shape = (n,) + meta.shape[1:]
    return _input_gradient("conv2d_backprop_input", dy, filt, None, shape, geometry,
                           data_format, chunks, num_threads, algorithm)


def conv2d_backprop_filter(input: Any, filter_sizes: Ints, out_backprop: Any, strides: Ints,
                           padding: Padding, *, data_format: DataFormat = "NHWC",
                           dilations: Ints = 1, explicit_paddings: Optional[Sequence[int]] = None,
                           num_threads: Optional[int] = None,
                           algorithm: Algorithm = "auto") -> da.Array:
    """Gradient of a 2-D convolution with respect to its filter, for Dask arrays.

    :func:`convbp.tf.conv2d_backprop_filter` (``tf.raw_ops.Conv2DBackpropFilter``) computed
    block by block; every argument means what it means there.  Every chunk of
    ``out_backprop`` (images ``[n0, n1)``, output rows ``[a, b)``, columns likewise) is one
    task: the in-memory filter gradient of that chunk and of the input rows and columns its
    taps read, with the padding adjusted.  The partial gradients are added in a fixed tree
    (``8`` at a time, in block order), so the result does not depend on the scheduler; it
    equals the in-memory result to rounding (float16 is computed in float32 throughout and
    rounded once).

    Parameters
    ----------
    input : dask array (or array_like) of shape (N, H, W, C) or (N, C, H, W)
        The convolution's input in ``data_format`` order, chunked as you like (each task cuts
        the region it needs from the chunks that region overlaps); its channels are rechunked
        into one chunk.
    filter_sizes : sequence of 4 ints
        The filter's shape (KH, KW, C_in, C_out); C_in may divide C (grouped convolution).
    out_backprop : dask array (or array_like) of shape (N, OH, OW, C_out) or (N, C_out, OH, OW)
        Gradient of the convolution's output in ``data_format`` order; its chunks along N, OH
        and OW are the tasks (rechunk it to choose them), its channels are rechunked into one.
    strides, padding, dilations, explicit_paddings, data_format, algorithm
        As :func:`convbp.tf.conv2d_backprop_filter`.
    num_threads : int, optional
        convbp threads in each task; default :func:`task_threads` at run time.

    Returns
    -------
    dask array of shape ``filter_sizes`` (KH, KW, C_in, C_out)
        One chunk, with the operands' dtype.

    Raises
    ------
    ValueError, TypeError
        At once (before anything is computed), for any malformed argument, with the argument's
        name in the message -- the in-memory function's checks.

    See Also
    --------
    conv2d, conv2d_backprop_input : the forward convolution and the input gradient.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convbp.dask
    >>> x = da.ones((4, 6, 6, 1), chunks=(2, 3, 6, 1))         # NHWC
    >>> dy = da.ones((4, 3, 3, 2), chunks=(1, 2, 3, 2))        # 8 chunks: 8 partials
    >>> dw = convbp.dask.conv2d_backprop_filter(x, (3, 3, 1, 2), dy, 2, "SAME")
    >>> dw.chunks
    ((3,), (3,), (1,), (2,))
    >>> dw[:, :, 0, 0].compute()
    array([[36., 36., 24.],
           [36., 36., 24.],
           [24., 24., 16.]])
    """
    x = _as_dask(input, "input")
    dy = _as_dask(out_backprop, "out_backprop")
    data_format = check_data_format(data_format)
    for array, name in ((x, "input"), (dy, "out_backprop")):
        if array.ndim != 4:
            raise ValueError(f"{name} must be 4-D ({data_format}): actual shape = "
                             f"{array.shape}, expected 4 dimensions")
    if x.shape[0] != dy.shape[0]:
        raise ValueError(f"Size of out_backprop doesn't match computed: batch: actual = "
                         f"{dy.shape[0]}, computed = {x.shape[0]} (input shape {x.shape} "
                         f"{data_format})")
    # The in-memory function checks every argument on an empty batch (nothing is computed).
    meta = _tf.conv2d_backprop_filter(np.empty((0,) + x.shape[1:], x.dtype), filter_sizes,
                                      np.empty((0,) + dy.shape[1:], dy.dtype), strides,
                                      padding, data_format=data_format, dilations=dilations,
                                      explicit_paddings=explicit_paddings,
                                      num_threads=num_threads, algorithm=algorithm)
    geometry = _tf_geometry(x.shape, meta.shape[:2], strides, padding, data_format, dilations,
                            explicit_paddings)
    return _filter_gradient(x, dy, meta.shape, meta.dtype, geometry, data_format, num_threads,
                            algorithm)


def conv_transpose2d(input: Any, weight: npt.ArrayLike, bias: Optional[npt.ArrayLike] = None,
                     stride: Ints = 1, padding: Ints = 0, output_padding: Ints = 0,
                     groups: int = 1, dilation: Ints = 1, *, data_format: DataFormat = "NCHW",
                     chunks: Any = None, num_threads: Optional[int] = None,
                     algorithm: Algorithm = "auto") -> da.Array:
    """2-D transposed convolution, PyTorch conventions, for Dask arrays.

    :func:`convbp.torch.conv_transpose2d` (``torch.nn.functional.conv_transpose2d``) computed
    block by block; every argument means what it means there.  Each block of the result equals
    the matching slice of the in-memory result (to rounding).

    Parameters
    ----------
    input : dask array (or array_like) of shape (N, C_in, H, W), or (C_in, H, W) unbatched
        In ``data_format`` order ((N, H, W, C_in) for "NHWC"), chunked along N, H and W as you
        like; its channels are rechunked into one chunk.
    weight : array_like or dask array of shape (C_in, C_out / groups, KH, KW)
        One chunk, sent once to every task.
    bias : array_like or dask array of shape (C_out,), optional
    stride, padding, output_padding, groups, dilation, data_format, algorithm
        As :func:`convbp.torch.conv_transpose2d`.
    chunks : dask chunk specification of the result, optional
        Chunks of the result in ``data_format`` order; the channel axis is always one chunk.
        Default: N as ``input``, H and W its chunks mapped through the stride.
    num_threads : int, optional
        convbp threads in each task; default :func:`task_threads` at run time.

    Returns
    -------
    dask array of shape (N, C_out, H_out, W_out), or (N, H_out, W_out, C_out) for "NHWC"
        ``H_out = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1``, with
        the operands' dtype (float16 computed in float32, bias included, rounded once).  Blocks
        are C-ordered in ``data_format`` (a Dask array has no memory format).

    Raises
    ------
    ValueError, TypeError
        At once, for any malformed argument, with the argument's name in the message.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convbp.dask
    >>> x = da.ones((1, 1, 4, 4), chunks=(1, 1, 2, 2))        # (N, C_in, H, W)
    >>> weight = np.ones((1, 1, 3, 3))                        # (C_in, C_out, KH, KW)
    >>> y = convbp.dask.conv_transpose2d(x, weight, stride=2, padding=1, output_padding=1)
    >>> y.chunks
    ((1,), (1,), (4, 4), (4, 4))
    >>> y[0, 0, :4, :4].compute()
    array([[1., 2., 1., 2.],
           [2., 4., 2., 4.],
           [1., 2., 1., 2.],
           [2., 4., 2., 4.]])
    """
    x = _as_dask(input, "input")
    data_format = check_data_format(data_format)
    if x.ndim not in (3, 4):
        raise ValueError(f"input must be 4-D (batched) or 3-D (unbatched) in {data_format} "
                         f"order, got shape {x.shape}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    w, w_meta = _small_operand(weight)
    b, b_meta = (None, None) if bias is None else _small_operand(bias)
    meta = _torch.conv_transpose2d(np.empty((0,) + x.shape[1:], x.dtype), w_meta, b_meta,
                                   stride, padding, output_padding, groups, dilation,
                                   data_format=data_format, num_threads=num_threads,
                                   algorithm=algorithm)
    dtype = meta.dtype
    w = w.astype(dtype)
    b = None if b is None else b.astype(dtype)
    axes = layout_axes(data_format)
    in_hw = (x.shape[axes[1]], x.shape[axes[2]])
    geometry = torch_transpose_geometry(in_hw, w.shape[2:], torch_pair(stride, "stride", minimum=1),
                                        torch_pair(padding, "padding", minimum=0),
                                        torch_pair(output_padding, "output_padding", minimum=0),
                                        torch_pair(dilation, "dilation", minimum=1))
    # The transposed convolution's weight (C_in, C_out/groups, KH, KW) is the forward
    # convolution's OIHW weight, read by the TensorFlow-convention blocks as HWIO.
    filt = w.transpose(2, 3, 1, 0)
    shape = (x.shape[0],) + meta.shape[1:]
    result = _input_gradient("conv_transpose2d", x, filt, b, shape, geometry, data_format,
                             chunks, num_threads, algorithm)
    return result[0] if unbatched else result


# ---------------------------------------------------------------------------------------------
# The graph: one task a block.

def _as_dask(value, name):
    """``value`` as a dask array (an in-memory array becomes one chunk) of known shape."""
    if not isinstance(value, da.Array):
        try:
            value = da.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a dask array or an array: {exc}") from None
    if any(np.isnan(size) for size in value.shape):
        raise ValueError(f"{name} must have known chunk sizes, got shape {value.shape}; call "
                         f"{name}.compute_chunk_sizes() first")
    return value


def _small_operand(value):
    """A filter, weight or bias as a one-chunk dask array, and a stand-in the in-memory checks
    read (the values themselves unless they are lazy: then zeros of the shape and dtype)."""
    if isinstance(value, da.Array):
        return value.rechunk(-1), np.broadcast_to(np.zeros((), value.dtype), value.shape)
    return da.from_array(np.asarray(value), chunks=-1), value


def _tf_geometry(in_shape, kernel_hw, strides, padding, data_format, dilations,
                 explicit_paddings):
    """The forward geometry of a TensorFlow-convention call the in-memory checks accepted;
    ``in_shape`` is the convolution input's shape in data_format order."""
    axes = layout_axes(data_format)
    return forward_geometry((in_shape[axes[1]], in_shape[axes[2]]), tuple(kernel_hw),
                            spatial_pair(strides, "strides", data_format),
                            spatial_pair(dilations, "dilations", data_format),
                            tf_padding(padding, explicit_paddings, data_format))


def _times_stride(boundary, stride):
    """An out_backprop row boundary as an input-gradient row boundary."""
    return boundary * stride


def _over_stride(boundary, stride):
    """An input row boundary as an output row boundary: the first output row at or past it."""
    return -(-boundary // stride)


def _mapped_chunks(chunks, size, stride, through):
    """Chunks of ``size`` rows whose boundaries are ``through(b, stride)`` of the boundaries
    ``b`` of ``chunks`` (of the operand's rows)."""
    inner = itertools.accumulate(chunks[:-1])
    bounds = sorted({0, size} | {min(size, through(b, stride)) for b in inner})
    return tuple(b - a for a, b in zip(bounds, bounds[1:])) or (0,)


def _result_chunks(chunks, operand, shape, geometry, axes, dtype, through):
    """The result's chunks in data_format order; the channel axis is one chunk.  By default N
    as ``operand``'s, H and W its chunks mapped ``through`` the stride."""
    n_axis, h_axis, w_axis, c_axis = axes
    if chunks is None:
        result = [None] * 4
        result[n_axis] = operand.chunks[n_axis]
        for k, axis in enumerate((h_axis, w_axis)):
            result[axis] = _mapped_chunks(operand.chunks[axis], shape[axis],
                                          geometry.strides[k], through)
    else:
        try:
            result = list(da.core.normalize_chunks(chunks, shape, dtype=dtype))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"chunks {chunks!r} is not a chunking of the result's shape "
                             f"{shape}: {exc}") from None
    result[c_axis] = (shape[c_axis],)
    return tuple(result)


def _blocks(chunks):
    """(index, lo, hi) of every block of ``chunks``, in C order: lo and hi per axis."""
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in chunks]
    for index in itertools.product(*(range(len(c)) for c in chunks)):
        yield (index, [bounds[a][i] for a, i in enumerate(index)],
               [bounds[a][i + 1] for a, i in enumerate(index)])


def _tap_windows(lo, hi, axes, geometry):
    """The :class:`TapWindow` in the convolution's input of output rows and columns
    ``[lo, hi)`` (per data_format axis), for H and W."""
    windows = []
    for k, axis in enumerate(axes[1:3]):
        if hi[axis] <= lo[axis]:
            windows.append(TapWindow(0, 0, (0, 0)))
            continue
        windows.append(tap_window(lo[axis], hi[axis], geometry.kernel_hw[k],
                                  geometry.strides[k], geometry.dilations[k],
                                  geometry.pads[k][0], 0, geometry.in_hw[k]))
    return tuple(windows)


def _read(array, axes, images, spans):
    """Tasks reading ``array``'s images ``[images[0], images[1])``, rows and columns ``spans``
    ((start, stop) for H, W) and every channel, or None when that region is empty."""
    region = [None] * 4
    region[axes[0]], region[axes[1]], region[axes[2]] = images, spans[0], spans[1]
    region[axes[3]] = (0, array.shape[axes[3]])
    if any(stop <= start for start, stop in region):
        return None
    return _region_pieces(array.name, array.chunks, region)


def _input_gradient(op, dy, filt, bias, shape, geometry, data_format, chunks, num_threads,
                    algorithm):
    """The dask array of the input gradient of ``shape`` (data_format order) from ``dy`` (in
    data_format order) and ``filt`` (HWIO, one chunk); ``bias`` (one chunk) is added."""
    axes = layout_axes(data_format)
    dy = dy.rechunk({axes[3]: -1})
    out_chunks = _result_chunks(chunks, dy, shape, geometry, axes, filt.dtype, _times_stride)
    name = f"{op}-" + tokenize(dy, filt, bias, shape, geometry, data_format, out_chunks,
                               num_threads, algorithm)
    filt_key = (filt.name,) + (0,) * filt.ndim
    bias_key = None if bias is None else (bias.name, 0)
    dsk = {}
    for index, lo, hi in _blocks(out_chunks):
        halos = tuple(axis_halo(lo[axis], hi[axis], geometry.out_hw[k], geometry.kernel_hw[k],
                                geometry.strides[k], geometry.dilations[k], geometry.pads[k][0])
                      for k, axis in enumerate(axes[1:3]))
        pieces = _read(dy, axes, (lo[axes[0]], hi[axes[0]]),
                       [(halo.out_start, halo.out_stop) for halo in halos])
        block_shape = tuple(b - a for a, b in zip(lo, hi))
        dsk[(name,) + index] = (_block, pieces, filt_key, bias_key, block_shape, halos,
                                geometry.strides, geometry.dilations, data_format, num_threads,
                                algorithm)
    dependencies = [dy, filt] + ([bias] if bias is not None else [])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    return da.Array(graph, name, out_chunks, meta=np.empty((0,) * 4, filt.dtype))


def _forward(x, filt, shape, geometry, data_format, chunks, num_threads, algorithm):
    """The dask array of the convolution of ``x`` (data_format order) with ``filt`` (HWIO, one
    chunk), of ``shape`` (data_format order)."""
    axes = layout_axes(data_format)
    x = x.rechunk({axes[3]: -1})
    out_chunks = _result_chunks(chunks, x, shape, geometry, axes, filt.dtype, _over_stride)
    name = "conv2d-" + tokenize(x, filt, shape, geometry, data_format, out_chunks, num_threads,
                                algorithm)
    filt_key = (filt.name,) + (0,) * filt.ndim
    dsk = {}
    for index, lo, hi in _blocks(out_chunks):
        windows = _tap_windows(lo, hi, axes, geometry)
        pieces = _read(x, axes, (lo[axes[0]], hi[axes[0]]), [w[:2] for w in windows])
        block_shape = tuple(b - a for a, b in zip(lo, hi))
        dsk[(name,) + index] = (_forward_block, pieces, filt_key, block_shape, windows,
                                geometry.strides, geometry.dilations, data_format, num_threads,
                                algorithm)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, filt])
    return da.Array(graph, name, out_chunks, meta=np.empty((0,) * 4, filt.dtype))


def _filter_gradient(x, dy, filter_sizes, dtype, geometry, data_format, num_threads, algorithm):
    """The dask array (one chunk) of the filter gradient: a partial gradient a chunk of ``dy``
    (its images, rows and columns, with the input region its taps read), summed in a fixed
    tree of ``_SUM_FAN_IN`` in block order."""
    axes = layout_axes(data_format)
    x = x.rechunk({axes[3]: -1})
    dy = dy.rechunk({axes[3]: -1})
    name = "conv2d_backprop_filter-" + tokenize(x, dy, filter_sizes, dtype, geometry,
                                                data_format, num_threads, algorithm)
    compute = np.float32 if dtype == np.float16 else dtype  # rounded once, at the end
    dsk, partials = {}, []
    for index, lo, hi in _blocks(dy.chunks):
        windows = _tap_windows(lo, hi, axes, geometry)
        images = (lo[axes[0]], hi[axes[0]])
        x_pieces = _read(x, axes, images, [w[:2] for w in windows])
        dy_pieces = _read(dy, axes, images, [(lo[axis], hi[axis]) for axis in axes[1:3]])
        key = (f"{name}-partial",) + index
        dsk[key] = (_filter_block, x_pieces, dy_pieces, tuple(filter_sizes), windows,
                    geometry.strides, geometry.dilations, data_format, num_threads, algorithm,
                    compute)
        partials.append(key)
    level = 0
    while len(partials) > 1:
        sums = []
        for i in range(0, len(partials), _SUM_FAN_IN):
            key = (f"{name}-sum", level, i // _SUM_FAN_IN)
            dsk[key] = (_sum, partials[i:i + _SUM_FAN_IN])
            sums.append(key)
        partials, level = sums, level + 1
    dsk[(name, 0, 0, 0, 0)] = (_rounded, partials[0], dtype)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x, dy])
    return da.Array(graph, name, tuple((size,) for size in filter_sizes),
                    meta=np.empty((0,) * 4, dtype))


def _region_pieces(name, chunks, region):
    """Tasks cutting ``region`` (a (start, stop) per axis) out of the chunks of array ``name``,
    nested by axis for ``np.block``: only the chunks the region overlaps are read."""
    per_axis = []
    for sizes, (start, stop) in zip(chunks, region):
        bounds = tuple(itertools.accumulate((0,) + sizes))
        items = []
        for i in range(bisect.bisect_right(bounds, start) - 1, len(sizes)):
            if bounds[i] >= stop:
                break
            items.append((i, slice(max(start, bounds[i]) - bounds[i],
                                   min(stop, bounds[i + 1]) - bounds[i])))
        per_axis.append(items)

    def nest(axis, index, slices):
        if axis == len(per_axis):
            return (operator.getitem, (name,) + index, slices)
        return [nest(axis + 1, index + (i,), slices + (s,)) for i, s in per_axis[axis]]

    return nest(0, (), ())


def _assemble(pieces):
    """One array from a nest of pieces (no copy if there is one piece)."""
    inner = pieces
    while isinstance(inner, list) and len(inner) == 1:
        inner = inner[0]
    return inner if isinstance(inner, np.ndarray) else np.block(pieces)


def _threads(num_threads):
    return task_threads() if num_threads is None else num_threads


def _block(pieces, filt, bias, shape, halos, strides, dilations, data_format, num_threads,
           algorithm):
    """One block of the input gradient: zeros, and the in-memory gradient of the region where
    the region's taps land; plus the bias.  float16 with a bias is computed in float32, the
    bias added, and rounded once, as the in-memory conv_transpose2d does."""
    dtype = filt.dtype
    compute = np.float32 if bias is not None and dtype == np.float16 else dtype
    axes = layout_axes(data_format)
    covered = pieces is not None and all(halo.start == 0 and halo.stop == shape[axis]
                                         for axis, halo in zip(axes[1:3], halos))
    block = (np.empty if covered else np.zeros)(shape, compute)  # the kernel writes it all
    if pieces is not None:
        window = [slice(None)] * 4
        for axis, halo in zip(axes[1:3], halos):
            window[axis] = slice(halo.start, halo.stop)
        out = block[tuple(window)]
        _tf.conv2d_backprop_input(
            out.shape, filt.astype(compute, copy=False),
            _assemble(pieces).astype(compute, copy=False), strides,
            tuple(halo.pads for halo in halos), data_format=data_format, dilations=dilations,
            out=out, num_threads=_threads(num_threads), algorithm=algorithm)
    if bias is not None:
        per_channel = [1] * 4
        per_channel[axes[3]] = -1
        block += bias.astype(compute).reshape(per_channel)
    return block.astype(dtype, copy=False)


def _forward_block(pieces, filt, shape, windows, strides, dilations, data_format, num_threads,
                   algorithm):
    """One block of the convolution: the in-memory convolution of the input region its taps
    read, padded so that it is exactly the block; zeros if every tap falls in the padding."""
    if pieces is None:
        return np.zeros(shape, filt.dtype)
    return _tf.conv2d(_assemble(pieces), filt, strides, tuple(w.pads for w in windows),
                      data_format=data_format, dilations=dilations,
                      num_threads=_threads(num_threads), algorithm=algorithm)


def _filter_block(x_pieces, dy_pieces, filter_sizes, windows, strides, dilations, data_format,
                  num_threads, algorithm, compute):
    """One partial filter gradient, in dtype ``compute``: a chunk of out_backprop and the input
    region its taps read (zeros if every tap falls in the padding)."""
    if x_pieces is None or dy_pieces is None:
        return np.zeros(filter_sizes, compute)
    return _tf.conv2d_backprop_filter(
        _assemble(x_pieces).astype(compute, copy=False), filter_sizes,
        _assemble(dy_pieces).astype(compute, copy=False), strides,
        tuple(w.pads for w in windows), data_format=data_format, dilations=dilations,
        num_threads=_threads(num_threads), algorithm=algorithm)


def _sum(parts):
    """The partials added left to right (a fixed order, whatever order they arrived in)."""
    return functools.reduce(np.add, parts)


def _rounded(total, dtype):
    return total.astype(dtype, copy=False)
