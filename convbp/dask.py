"""convbp for ``dask.array`` (``convbp.dask``): the input gradient of arrays larger than memory.

The same names and semantics as :mod:`convbp.tf` and :mod:`convbp.torch`, for Dask arrays
(``pip install 'convbp[dask]'``).  The result is built block by block: every block of the input
gradient is one task that calls the in-memory function on exactly the ``out_backprop`` region
that reaches it -- its rows and columns plus the halo the kernel size, stride, dilation and
padding give -- with explicit padding chosen so that the block equals the matching slice of the
in-memory result.  No task sees the whole ``out_backprop`` unless the whole of it reaches one
block, and the result is never gathered.

Chunking
--------
- N: blockwise; a result block of images ``[n0, n1)`` reads those images only.
- H and W: by default the result's chunks are ``out_backprop``'s chunks mapped through the
  stride (its row boundary ``o`` becomes ``o * stride``), so blocks and their halos line up;
  ``chunks=`` picks any others (a chunk may be smaller than the kernel's reach, even 1).
- C: the channels of ``out_backprop`` are rechunked into one chunk (the gradient of every input
  channel sums over all of them), and the result's channel axis is one chunk.

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
import itertools
import operator
import os
import threading

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from . import _engine
from . import tf as _tf
from . import torch as _torch
from ._geometry import (axis_halo, check_data_format, forward_geometry, int_list,
                        layout_axes, spatial_pair, tf_padding, torch_pair,
                        torch_transpose_geometry)

__all__ = ["conv2d_backprop_input", "conv_transpose2d", "task_threads"]


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


def conv2d_backprop_input(input_sizes, filter, out_backprop, strides, padding, *,
                          data_format="NHWC", dilations=1, explicit_paddings=None, chunks=None,
                          num_threads=None):
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
    strides, padding, dilations, explicit_paddings, data_format
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
                                     num_threads=num_threads)
    filt = filt.astype(meta.dtype)  # a list filter takes out_backprop's dtype, as in memory
    axes = layout_axes(data_format)
    hw = (meta.shape[axes[1]], meta.shape[axes[2]])
    geometry = forward_geometry(hw, filt.shape[:2], spatial_pair(strides, "strides", data_format),
                                spatial_pair(dilations, "dilations", data_format),
                                tf_padding(padding, explicit_paddings, data_format))
    shape = (n,) + meta.shape[1:]
    return _input_gradient("conv2d_backprop_input", dy, filt, None, shape, geometry,
                           data_format, chunks, num_threads)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, data_format="NCHW", chunks=None, num_threads=None):
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
    stride, padding, output_padding, groups, dilation, data_format
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
                                   data_format=data_format, num_threads=num_threads)
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
                             chunks, num_threads)
    return result[0] if unbatched else result


# ---------------------------------------------------------------------------------------------
# The graph: one task a result block.

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


def _through_stride(chunks, stride, size):
    """Result chunks of ``size`` rows whose boundaries are the boundaries of ``chunks`` (of
    out_backprop's rows) times the stride."""
    inner = itertools.accumulate(chunks[:-1])
    bounds = sorted({0, size} | {min(size, o * stride) for o in inner})
    return tuple(b - a for a, b in zip(bounds, bounds[1:])) or (0,)


def _result_chunks(chunks, dy, shape, geometry, axes, dtype):
    """The result's chunks in data_format order; the channel axis is one chunk."""
    n_axis, h_axis, w_axis, c_axis = axes
    if chunks is None:
        result = [None] * 4
        result[n_axis] = dy.chunks[n_axis]
        for k, axis in enumerate((h_axis, w_axis)):
            result[axis] = _through_stride(dy.chunks[axis], geometry.strides[k], shape[axis])
    else:
        try:
            result = list(da.core.normalize_chunks(chunks, shape, dtype=dtype))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"chunks {chunks!r} is not a chunking of the result's shape "
                             f"{shape}: {exc}") from None
    result[c_axis] = (shape[c_axis],)
    return tuple(result)


def _input_gradient(op, dy, filt, bias, shape, geometry, data_format, chunks, num_threads):
    """The dask array of the input gradient of ``shape`` (data_format order) from ``dy`` (in
    data_format order) and ``filt`` (HWIO, one chunk); ``bias`` (one chunk) is added."""
    axes = layout_axes(data_format)
    dy = dy.rechunk({axes[3]: -1})
    out_chunks = _result_chunks(chunks, dy, shape, geometry, axes, filt.dtype)
    name = f"{op}-{tokenize(dy, filt, bias, shape, geometry, data_format, out_chunks, num_threads)}"
    filt_key = (filt.name,) + (0,) * filt.ndim
    bias_key = None if bias is None else (bias.name, 0)
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in out_chunks]
    depth = dy.shape[axes[3]]
    dsk = {}
    for index in itertools.product(*(range(len(c)) for c in out_chunks)):
        lo = [bounds[a][i] for a, i in enumerate(index)]
        hi = [bounds[a][i + 1] for a, i in enumerate(index)]
        halos = tuple(axis_halo(lo[axis], hi[axis], geometry.out_hw[k], geometry.kernel_hw[k],
                                geometry.strides[k], geometry.dilations[k], geometry.pads[k][0])
                      for k, axis in enumerate(axes[1:3]))
        region = [None] * 4
        region[axes[0]] = (lo[axes[0]], hi[axes[0]])
        region[axes[1]] = (halos[0].out_start, halos[0].out_stop)
        region[axes[2]] = (halos[1].out_start, halos[1].out_stop)
        region[axes[3]] = (0, depth)
        pieces = (_region_pieces(dy.name, dy.chunks, region)
                  if all(stop > start for start, stop in region) else None)
        block_shape = tuple(b - a for a, b in zip(lo, hi))
        dsk[(name,) + index] = (_block, pieces, filt_key, bias_key, block_shape, halos,
                                geometry.strides, geometry.dilations, data_format, num_threads)
    dependencies = [dy, filt] + ([bias] if bias is not None else [])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=dependencies)
    return da.Array(graph, name, out_chunks, meta=np.empty((0,) * 4, filt.dtype))


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


def _block(pieces, filt, bias, shape, halos, strides, dilations, data_format, num_threads):
    """One block of the result: zeros, and the in-memory gradient of the region where the
    region's taps land; plus the bias.  float16 with a bias is computed in float32, the bias
    added, and rounded once, as the in-memory conv_transpose2d does."""
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
            out=out, num_threads=task_threads() if num_threads is None else num_threads)
    if bias is not None:
        per_channel = [1] * 4
        per_channel[axes[3]] = -1
        block += bias.astype(compute).reshape(per_channel)
    return block.astype(dtype, copy=False)
