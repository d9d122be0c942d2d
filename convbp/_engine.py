"""The one path every entry point takes to the kernel: arrays, dtypes, threads, workspace.

Entry points translate their API (TensorFlow or PyTorch conventions) into logical NHWC views and
a :class:`ConvGeometry`; :func:`forward`, :func:`backprop_input` and :func:`backprop_filter`
pick the memory orientations, split the work into units, bound the workspace, hold BLAS to one
thread and call the kernel (``_gemm``; ``_depthwise`` when every group has one input channel).
"""

import functools
import math
import os
from typing import NamedTuple

import numpy as np

from ._geometry import as_int
from ._threads import (bounded_openmp_spinning, default_num_threads, kernel_team,
                       machine_cores, thread_count)

with bounded_openmp_spinning():  # libgomp is loaded, and reads its settings, here
    from . import _depthwise, _gemm, _winograd  # type: ignore[attr-defined]  # no stubs
    _gemm.openmp_max_threads()  # a first OpenMP call: libomp reads its settings now
from . import _choose

__all__ = ["backprop_filter", "backprop_input", "compute", "depthwise_backprop_filter",
           "depthwise_backprop_input", "depthwise_forward", "forward", "get_workspace_limit",
           "set_workspace_limit", "default_num_threads"]

_TooHardError = getattr(np, "exceptions", np).TooHardError
_COMPUTE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_STORAGE_DTYPES = _COMPUTE_DTYPES + (np.dtype(np.float16),)

# Column buffers of one call stay within this many bytes in total (all threads together).
_workspace_limit = 64 * 2**20
# Per-thread column buffer: a chunk is produced by GEMM and consumed by col2im while it is still
# in cache (L2/L3); large enough that the GEMM, which repacks the filter for every chunk, runs
# near its peak (measured: 2 MiB beats 1 MiB by up to 10% on 3x3 layers, 4 MiB gains nothing).
_CHUNK_TARGET_BYTES = 2 * 2**20
# Channels a group from which im2col may restage NCHW input rows (see _forward_plan and
# _filter_plan; forward 16 -> 32 at 64x8x8: 1.15x), and col2im stage small NCHW images in NHWC
# order (see _input_plan).
_RESTAGE_CHANNELS = 16
# Forward, NCHW: output pixels an image up to which restaged chunks span images (see
# _forward_plan).
_ACROSS_PIXELS = 64
# Filter gradient: the GEMM sums over a chunk's pixels; OpenBLAS runs a small output (taps x
# F/groups) fastest for a short sum (measured on 25 x 32: 101 GFLOP/s over 576 pixels, 58 over
# 2048 or more; 576 x 64: 85 over 910 pixels, 72 over 3136).
_FILTER_CHUNK_PIXELS = 1024
# OpenBLAS's bound on M*N*K for its small-matrix GEMM kernels, which read both operands in
# place instead of packing them (N-N and N-T; T-N only for tiny outputs).
_SMALL_GEMM_MULTIPLIES = 10**6
# Forward and filter gradient, float32, a filter matrix too large for whole small-matrix
# GEMMs: output pixels a chunk when its GEMM is split into small ones instead (see
# _forward_plan and _filter_plan; 64 and 256 were 5% slower on 8x28x28 5x5 64 -> 64 forward).
_SPLIT_CHUNK_PIXELS = 128
# Forward through a column buffer: at most this many output pixels a GEMM.  With few taps the
# GEMM is bound by its output and operand traffic, fastest while the chunk's slices of both
# stay in L1/L2 (OpenBLAS, 1 thread, Xeon AVX-512: 32 x 25 taps at 83 GFLOP/s over 1152
# pixels, 46 over 4608; 64 x 147 at 78 over 1024, 70 over 3566).  Forward float32, 2 threads,
# against 2 MiB chunks: 64x28x28x1 5x5 -> 32 NHWC 1.5x, the 7x7 stem 8x224x224x3 -> 64
# 1.05-1.2x, 3x3 and 5x5 layers of 32-128 channels within the noise (+-10%).
_FORWARD_CHUNK_PIXELS = 1024
# ... and at least this many when the filter matrix outgrows the chunk target (~L2), which
# BLAS then repacks from L3 for every GEMM: 16x14x14x256 3x3 s2 -> 512 (4.5 MiB) float32,
# 2 threads, 186-pixel chunks against 512: NCHW 1.3x, NHWC 1.15x; 8x56x56x128 -> 128
# (0.6 MiB) ran 5-15% slower with 512, so smaller filters keep the cache-sized chunk.
_LARGE_FILTER_CHUNK_PIXELS = 512


def get_workspace_limit() -> int:
    """Bytes the column buffers of one call may use in total (default 64 MiB)."""
    return _workspace_limit


def set_workspace_limit(nbytes: int) -> int:
    """Set the total bytes the column buffers of one call may use; returns the previous limit.

    A column buffer always holds at least one output pixel's taps (KH*KW*C_in/groups values per
    thread), so a limit below that is exceeded by that one row, with fewer threads.
    """
    global _workspace_limit
    nbytes = int(nbytes)
    if nbytes < 1:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    previous, _workspace_limit = _workspace_limit, nbytes
    return previous


# ---------------------------------------------------------------------------------------------
# Array checks.

def as_float_array(value, name, dtype=None):
    """``value`` as a float16/32/64 ndarray in native byte order (a copy only if it must be).

    An ndarray must already have a floating dtype.  Anything else (nested lists, scalars,
    objects with ``__array__``) is converted as NumPy functions convert it: numbers become an
    array, taking ``dtype`` when given (so a list can meet an array of either precision) and
    float64 when the values are integers; booleans, complex numbers, strings and ragged or
    object nestings are refused.
    """
    if type(value) is np.ndarray and value.dtype in _STORAGE_DTYPES and value.flags.aligned:
        return value  # the common case, nothing to convert (dtype equality includes byte order)
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"{name} must be a numeric array: {exc}") from None
        if value.dtype.kind in "iu":
            value = value.astype(np.float64 if dtype is None else dtype)
        elif value.dtype.kind == "f" and dtype is not None:
            value = value.astype(dtype)
    if value.dtype.kind != "f" or value.dtype.newbyteorder("=") not in _STORAGE_DTYPES:
        raise TypeError(f"{name} has an unsupported dtype: actual = {value.dtype}, expected "
                        f"float16, float32 or float64")
    if not value.dtype.isnative or not value.flags.aligned:
        value = value.astype(value.dtype.newbyteorder("="), order="K")
    return value


def common_dtype(filter, out_backprop, names=("filter", "out_backprop")):
    """Both operands as arrays of one float dtype; a mismatch between arrays is a TypeError.

    A non-array operand takes the dtype of an array operand; two non-arrays take the dtype
    NumPy promotes them to (float64 for integers).
    """
    f_is_array = isinstance(filter, np.ndarray)
    g_is_array = isinstance(out_backprop, np.ndarray)
    if f_is_array and not g_is_array:
        filter = as_float_array(filter, names[0])
        out_backprop = as_float_array(out_backprop, names[1], filter.dtype)
    elif g_is_array:
        out_backprop = as_float_array(out_backprop, names[1])
        filter = as_float_array(filter, names[0], out_backprop.dtype)
    else:
        out_backprop = as_float_array(out_backprop, names[1])
        filter = as_float_array(filter, names[0])
        common = np.promote_types(filter.dtype, out_backprop.dtype)
        filter, out_backprop = filter.astype(common, copy=False), out_backprop.astype(
            common, copy=False)
    if filter.dtype != out_backprop.dtype:
        raise TypeError(f"dtype mismatch: {names[0]} is {filter.dtype} but {names[1]} is "
                        f"{out_backprop.dtype} (actual = {out_backprop.dtype}, expected = "
                        f"{filter.dtype}); they must have the same dtype")
    return filter, out_backprop


def _self_overlapping(arr):
    """Whether two elements of ``arr`` might share memory (zero or interleaved strides).

    Sufficient test: sorted by stride, each axis must step past everything the smaller axes
    span.  Every array NumPy creates by slicing, transposing or reshaping a buffer passes.
    """
    span = arr.itemsize
    for size, stride in sorted(((n, abs(s)) for n, s in zip(arr.shape, arr.strides) if n > 1),
                               key=lambda t: t[1]):
        if stride < span:
            return True
        span = stride * (size - 1) + span
    return False


def check_out(out, shape, dtype, inputs):
    """``out`` must be a writable native array of ``shape`` and ``dtype`` sharing no memory
    with ``inputs`` (a sequence of (name, array)) nor between its own elements."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out has the wrong shape: actual = {out.shape}, expected = "
                         f"{tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"out has the wrong dtype: actual = {out.dtype}, expected = "
                        f"{np.dtype(dtype)} (native byte order)")
    if not out.flags.writeable:
        raise ValueError("out is read-only; expected a writable array")
    if not out.flags.aligned:
        raise ValueError("out is not aligned to its dtype; pass an aligned array")
    if out.size and _self_overlapping(out):
        raise ValueError(f"out has overlapping elements (strides {out.strides}); expected an "
                         f"array whose elements are distinct memory")
    for name, arr in inputs:
        try:
            overlap = np.shares_memory(out, arr, max_work=10**6)
        except _TooHardError:
            overlap = True
        if overlap:
            raise ValueError(f"out overlaps {name}; it must not share memory with an input")


@functools.lru_cache(maxsize=None)
def _physical_memory():
    """Bytes of physical memory (2**40 where it cannot be read); read once."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 2**40
    return total if total > 0 else 2**40


def check_result_size(shape, dtype, name, what="result"):
    """Refuse an array (the result, or an operand that may be copied) that could not be
    allocated, naming the argument that set its size."""
    dtype = np.dtype(dtype)
    # float16 is computed in float32
    nbytes = math.prod(map(int, shape)) * (4 if dtype.char == "e" else dtype.itemsize)
    memory = _physical_memory()
    if nbytes > memory:
        raise ValueError(f"{name} {tuple(shape)} asks for a {nbytes / 2**30:.3g} GiB {what}, "
                         f"more than this machine's memory ({memory / 2**30:.3g} GiB)")


def fits_at_any_dtype(shape):
    """Whether an array of ``shape`` passes :func:`check_result_size` whatever its dtype (8
    bytes an element at most)."""
    return math.prod(map(int, shape)) * 8 <= _physical_memory()


def _matrix_layout(shape, strides, itemsize):
    """How BLAS can address each image of an array (N, A, B, K) of these strides as a
    (A*B) x K matrix, or None.

    Returns (pixel_major, ld): pixel-major when the K axis has unit stride and pixels are evenly
    spaced ld >= K apart (NHWC memory); channel-major when pixels have unit stride and the K
    axis steps ld >= A*B (NCHW memory).  Negative or zero strides, or a crop along B, give None.
    """
    _, a, b, k = shape
    pixels = a * b
    s_a, s_b, s_k = (s // itemsize for s in strides[1:])
    if a == 1:
        ps = s_b
    elif b == 1:
        ps = s_a
    else:
        ps = s_b if s_a == b * s_b else None
    if ps is None:
        return None
    if (k == 1 or s_k == 1) and (pixels == 1 or k <= ps <= _gemm.BLAS_INT_MAX):
        return True, (ps if pixels > 1 else k)
    if (pixels == 1 or ps == 1) and (k == 1 or pixels <= s_k <= _gemm.BLAS_INT_MAX):
        return False, (s_k if k > 1 else pixels)
    return None


def _bands(n, geometry, cores):
    """(rows, columns) of the input gradient per work unit: whole images, unless that would
    leave cores idle.

    The unit count is raised -- bands of rows first, then of columns (a single-row image, a
    1-D convolution) -- until the cores share it evenly (or there are plenty), with bands at
    least two kernel extents wide: a band edge recomputes the GEMM of the output pixels it
    shares with its neighbour.  Depends on the geometry and the machine only -- never on
    num_threads -- so results are bitwise identical for any thread count.
    """
    limits = []
    for size, k, d in zip(geometry.in_hw, geometry.kernel_hw, geometry.dilations):
        limits.append(max(1, size // max(2 * ((k - 1) * d + 1), 4)))
    bands = [1, 1]
    while (n * bands[0] * bands[1]) % cores and n * bands[0] * bands[1] < 4 * cores:
        axis = 0 if bands[0] < limits[0] else 1
        if bands[axis] >= limits[axis]:
            break
        bands[axis] += 1
    return tuple(-(-size // b) for size, b in zip(geometry.in_hw, bands))


def _out_backprop_layout(shape, strides, itemsize):
    """(pixel_major, ld, copy): how the gradient kernels read out_backprop's images -- in place
    where BLAS can address them (:func:`_matrix_layout`), else copied once into C order."""
    layout = _matrix_layout(shape, strides, itemsize)
    if layout is None:
        return True, shape[3], True
    return layout[0], layout[1], False


def _pixel_units(total, chunk, cores):
    """Output pixels per work unit of the forward convolution: at most a chunk, and enough
    units that the cores share them evenly.  Depends on the sizes and the machine only."""
    units = max(-(-total // chunk), cores)
    units = -(-units // cores) * cores
    return max(1, -(-total // units))


def _whole_rows(chunk, out_width):
    """An input-gradient chunk of at least one output row cut to whole rows: col2im's
    row-block path."""
    return chunk - chunk % out_width if chunk >= out_width else chunk


def _chunk_pixels(row_bytes, cores, limit, reserved=0):
    """Output pixels per column buffer: the cache-sized target, within the workspace limit
    shared by the cores (never a function of num_threads)."""
    budget = max(0, limit - reserved)
    return max(1, min(_CHUNK_TARGET_BYTES, budget // cores) // row_bytes)


@functools.lru_cache(maxsize=256)
def _gemm_params(geometry, c, f, groups, band=(1, 1), unit_pixels=1, chunk=1, unit_images=1,
                 restage_rows=0, gemm_taps=0):
    """The kernels' Geometry struct as a dict (remembered: shared, never modified)."""
    (oh, ow), (kh, kw) = geometry.out_hw, geometry.kernel_hw
    return dict(H=geometry.in_hw[0], W=geometry.in_hw[1], C=c, OH=oh, OW=ow, F=f, KH=kh, KW=kw,
                groups=groups, stride_h=geometry.strides[0], stride_w=geometry.strides[1],
                dilation_h=geometry.dilations[0], dilation_w=geometry.dilations[1],
                pad_top=geometry.pads[0][0], pad_left=geometry.pads[1][0],
                band_rows=band[0], band_cols=band[1], unit_pixels=unit_pixels,
                unit_images=unit_images, chunk_pixels=chunk, restage_rows=restage_rows,
                gemm_taps=gemm_taps)


def _check_blas_sizes(taps, f):
    if taps > _gemm.BLAS_INT_MAX or f > _gemm.BLAS_INT_MAX:
        raise ValueError(f"filter is too large for BLAS: {taps} taps x {f} output channels")


def _filter_matrix(filter_hwio, taps, f):
    """The filter as a row-major (taps, F) matrix, the GEMM operand.

    A PyTorch-layout filter (a view of contiguous (F, C, KH, KW) memory) is copied as a 2-D
    transpose into (C, KH, KW, F) rows, then its rows reordered: NumPy's 4-D strided copy
    reads one element a cache line (512x512x3x3 float32: 34 ms, in two steps 7-14 ms).
    """
    _check_blas_sizes(taps, f)
    kh, kw, cg, _ = filter_hwio.shape
    torch_order = filter_hwio.transpose(3, 2, 0, 1)
    if not filter_hwio.flags.c_contiguous and torch_order.flags.c_contiguous:
        rows = np.ascontiguousarray(torch_order.reshape(f, cg * kh * kw).T)
        filter_hwio = rows.reshape(cg, kh, kw, f).transpose(1, 2, 0, 3)
    return np.ascontiguousarray(filter_hwio).reshape(taps, f)


def _pointwise(geometry):
    """A 1x1, stride-1, unpadded convolution: pixels map one to one."""
    return (geometry.kernel_hw == (1, 1) and geometry.strides == (1, 1)
            and tuple(geometry.in_hw) == tuple(geometry.out_hw)
            and geometry.pads == ((0, 0), (0, 0)))


def _cols_pixel_major(shape, strides, groups):
    """Column-buffer orientation for im2col / col2im through an array (N, H, W, C) of these
    strides: along channels for NHWC memory, along width for NCHW memory and for one channel
    a group."""
    sw, sc = abs(strides[2]), abs(strides[3])
    return sc < sw or (sc == sw and shape[3] // groups > 1)


class _GemmPlan(NamedTuple):
    """How a GEMM-path call runs, worked out from its arrays' shapes, strides and dtype, the
    geometry, the machine's cores and the workspace limit (remembered by the ``_*_plan``
    functions: a training loop repeats the same few calls)."""

    taps: int  # rows of the GEMM's filter matrix
    units: int  # work units, for thread_count
    flops: int
    max_threads: int  # within the workspace limit (and the units)
    workspace_cols: int  # elements of each thread's column buffer
    params: dict  # the kernel's Geometry struct (shared, never modified)
    layout: tuple  # the kernel's orientation arguments, in its order
    copy_dy: bool  # BLAS cannot address out_backprop's images: copied once into C order


def _run_plan(kernel, plan, num_threads, dtype, *arrays):
    """Run a GEMM-path kernel on its three arrays by its :class:`_GemmPlan`: this call's
    threads, their workspace, BLAS held to one thread meanwhile."""
    threads = min(thread_count(num_threads, plan.units, plan.flops), plan.max_threads)
    workspace = np.empty((threads, plan.workspace_cols), dtype)
    with kernel_team(threads):
        kernel(*arrays, workspace, plan.params, *plan.layout, threads)


def _gemm_choice(op, x_shape, y_shape, operand_shapes, geometry, groups, dtype, algorithm):
    """``op``'s algorithm choice, and whether the GEMM kernel runs: neither Winograd nor
    depthwise (one input channel a group), and a call that reaches a kernel
    (:func:`_needs_kernel` of ``operand_shapes``: the two operands and the result)."""
    choice = _algorithm_choice(op, x_shape, y_shape, geometry, groups, dtype, algorithm)
    gemm = not (choice.algorithm == "winograd" or groups > 1 and x_shape[3] == groups)
    return choice, gemm and _needs_kernel(*operand_shapes, dtype)


def _needs_kernel(a_shape, b_shape, result_shape, dtype):
    """Whether a call of these shapes and dtype reaches a kernel: the cases
    :func:`_needs_no_kernel` handles are all of them but this."""
    return (dtype != np.float16 and math.prod(result_shape) != 0 and math.prod(a_shape) != 0
            and math.prod(b_shape) != 0)


def _needs_no_kernel(a, b, result, recompute):
    """Handle what the kernels never see; True if ``result`` is done.

    An empty result; an empty operand ``a`` or ``b`` (the result is zeros); float16, computed
    by ``recompute(a32, b32, result32)`` in float32 in the result's own memory order (so the
    loops run the same way) and rounded once.
    """
    if result.size == 0:
        return True
    if a.size == 0 or b.size == 0:
        result[...] = 0
        return True
    if result.dtype == np.float16:
        result32 = np.empty_like(result, dtype=np.float32)
        recompute(a.astype(np.float32), b.astype(np.float32), result32)
        result[...] = result32
        return True
    return False


def backprop_input(dy, filter_hwio, dx, geometry, groups=1, num_threads=None, algorithm="auto"):
    """Write the input gradient into ``dx``; all arrays in logical NHWC axis order.

    dy           (N, OH, OW, F), any strides
    filter_hwio  (KH, KW, C/groups, F)
    dx           (N, H, W, C) writable, any strides; fully overwritten
    algorithm    "auto" (``choose_for``), "gemm" or "winograd" (3x3, stride 1, not depthwise;
                 else a ValueError)
    The caller has checked shapes against ``geometry`` and dtypes against each other.
    """
    algorithm = check_algorithm(algorithm)
    choice, plan = _input_plan(dy.shape, dy.strides, filter_hwio.shape, dx.shape, dx.strides,
                               dx.dtype, geometry, groups, algorithm, _winograd.AVAILABLE,
                               machine_cores(), _workspace_limit)
    f = dy.shape[3]
    if plan is not None:  # the GEMM kernel
        if plan.copy_dy:
            dy = np.ascontiguousarray(dy)
        wmat = _filter_matrix(filter_hwio, plan.taps, f)
        if plan.params["gemm_taps"]:  # the GEMMs want its transpose (see _input_plan)
            wmat = np.ascontiguousarray(wmat.T)
        _run_plan(_gemm.backprop_input, plan, num_threads, dx.dtype, dy, wmat, dx)
        return dx

    n, h, w, c = dx.shape
    if _needs_no_kernel(dy, filter_hwio, dx, lambda a, b, r: backprop_input(
            a, b, r, geometry, groups, num_threads, algorithm)):
        return dx

    if choice.algorithm == "winograd":
        kh, kw = geometry.kernel_hw
        dil = geometry.dilations
        pads = ((kh - 1) * dil[0] - geometry.pads[0][0], (kw - 1) * dil[1] - geometry.pads[1][0])
        winograd_correlate(dy, flipped_filter(filter_hwio, groups), dx, pads, dil, num_threads,
                           choice.tile)
        return dx

    # Else one input channel a group: the depthwise convolution, whose direct kernel beats a
    # GEMM per channel on tiny matrices.  Filter (KH, KW, 1, C*M) is (KH, KW, C, M).
    kh, kw = geometry.kernel_hw
    depthwise_backprop_input(dy, filter_hwio.reshape(kh, kw, c, f // c), dx, geometry,
                             num_threads)
    return dx


@functools.lru_cache(maxsize=256)
def _input_plan(dy_shape, dy_strides, filter_shape, dx_shape, dx_strides, dtype, geometry,
                groups, algorithm, winograd_built, cores, limit):
    """:func:`backprop_input`'s choice of algorithm, and the :class:`_GemmPlan` of its GEMM
    kernel (None where none runs).  ``winograd_built`` (``_winograd.AVAILABLE``, which the
    choice reads) is part of the key."""
    choice, gemm = _gemm_choice("input", dx_shape, dy_shape, (dy_shape, filter_shape, dx_shape),
                                geometry, groups, dtype, algorithm)
    if not gemm:
        return choice, None
    n, h, w, c = dx_shape
    f = dy_shape[3]
    itemsize = dtype.itemsize
    dy_pixel_major, dy_ld, copy_dy = _out_backprop_layout(dy_shape, dy_strides, itemsize)
    kh, kw = geometry.kernel_hw
    taps = kh * kw * (c // groups)
    _check_blas_sizes(taps, f)

    # Column-buffer orientation: col2im's inner loop runs along the column buffer's unit stride,
    # so make that the direction dx is densest in -- channels for NHWC memory, width for NCHW
    # memory and for one channel a group (a row of width taps beats a lone channel).
    cols_pixel_major = _cols_pixel_major(dx_shape, dx_strides, groups)
    # A 1x1, stride-1, unpadded convolution maps pixels one to one: the GEMM writes dx itself.
    direct_ld = 0
    dx_layout = _matrix_layout(dx_shape, dx_strides, itemsize) if _pointwise(geometry) else None
    if dx_layout is not None:
        cols_pixel_major, direct_ld = dx_layout

    band = _bands(n, geometry, cores)
    units = n * -(-h // band[0]) * -(-w // band[1])
    flops = 2 * n * dy_shape[1] * dy_shape[2] * f * taps
    row_bytes = taps * itemsize
    max_threads = max(1, units)
    gemm_taps = 0
    if direct_ld:
        chunk = min(h * w, 2**24)  # no column buffer: one GEMM per band, within BLAS ints
        workspace_cols = 1
    else:
        # The chunk size depends on the machine, never on num_threads (results stay bitwise
        # identical); the thread count then bows to the workspace limit.
        chunk = _whole_rows(_chunk_pixels(row_bytes, cores, limit), dy_shape[2])
        fg, ow = f // groups, dy_shape[2]
        if cols_pixel_major and fg <= 64:
            # Pixel-major columns from at most 64 channels of out_backprop a group: the GEMM
            # runs from the transposed filter matrix (N-N or N-T, not T-N), in blocks of a
            # multiple of 16 taps that fit OpenBLAS's small-matrix kernels, over chunks of
            # whole rows of at least _SPLIT_CHUNK_PIXELS pixels.  Measured, float32, one
            # thread, NHWC, whole T-N GEMMs / blocks: 8x28x28 5x5 64 -> 64 1.30x, the 7x7 stem
            # 1.20-1.23x, 3x3 s2 64 -> 64 at 8x56x56 1.17-1.24x, the digits layer 1.06-1.10x,
            # mnist 1.00-1.02x (float64: the stem 1.19-1.28x, the 5x5 layer 0.94-0.97x); with
            # 96 or 128 out_backprop channels the stride-2 3x3 layers of 128 channels lost
            # (0.72-0.84x; 5x5 32 -> 128 gained 1.22x), so not there.
            pixels = _whole_rows(
                min(chunk, max(_small_gemm_pixels(taps, fg) or _SPLIT_CHUNK_PIXELS, ow)), ow)
            rows = min(taps, _SMALL_GEMM_MULTIPLIES // (fg * pixels) // 16 * 16)
            # The transposed matrix is extra memory: within the limit beside a buffer a core.
            if rows >= 32 and taps * f * itemsize + cores * pixels * row_bytes <= limit:
                chunk, gemm_taps = pixels, rows
                limit -= taps * f * itemsize
        max_threads = max(1, min(max_threads, limit // (chunk * row_bytes)))
        workspace_cols = chunk * taps

    # Small whole images: units of several images, so a GEMM spans them (the units stay at
    # least two a core) -- when dy's images form one pixel-major matrix (NHWC memory), or
    # when they are channel-major (NCHW) and much smaller than a chunk, dy then copied a chunk
    # at a time.  With dx channel-major too and many channels a group, col2im adds into a copy
    # of the unit's images in NHWC order (the NHWC kernel's runs of KW*C/groups values a pixel,
    # not step-s runs of a few values along the width), stored out at the end.  Measured,
    # 64x32x8x8 3x3 s2 -> 64 float32, 2 threads, best of 200 calls: NCHW image by image (GEMMs
    # over 16 output pixels) 580-800 us, across images 460-600, with the images staged too
    # 360-387; NHWC 356-457 in the same processes.
    p = dy_shape[1] * dy_shape[2]
    unit_images, restage_rows = 1, 0
    if not direct_ld and band == (h, w):
        if dy_pixel_major and (n == 1 or copy_dy or dy_strides[0] == p * dy_ld * itemsize):
            unit_images = max(1, min(-(-n // (2 * cores)), chunk // p))
        elif not dy_pixel_major and 2 * p <= chunk:
            copy_chunk = _whole_rows(_chunk_pixels(row_bytes + f * itemsize, cores, limit),
                                     dy_shape[2])
            if 2 * p <= copy_chunk:
                chunk, row_bytes = copy_chunk, row_bytes + f * itemsize
                unit_images = max(1, min(-(-n // (2 * cores)), chunk // p))
    if unit_images > 1:
        thread_elements = chunk * row_bytes // itemsize
        stage = unit_images * h * w * c
        if (not cols_pixel_major and c // groups >= _RESTAGE_CHANNELS
                and (thread_elements + stage) * itemsize <= limit // cores):
            cols_pixel_major, restage_rows = True, h
            thread_elements += stage
        max_threads = max(1, min(-(-n // unit_images), limit // (thread_elements * itemsize)))
        workspace_cols = thread_elements
    params = _gemm_params(geometry, c, f, groups, band=band, chunk=chunk,
                          unit_images=unit_images, restage_rows=restage_rows,
                          gemm_taps=gemm_taps)
    return choice, _GemmPlan(taps, units, flops, max_threads, workspace_cols, params,
                             (dy_pixel_major, dy_ld, cols_pixel_major, direct_ld), copy_dy)


def forward(x, filter_hwio, y, geometry, groups=1, num_threads=None, algorithm="auto"):
    """Write the forward convolution into ``y``; all arrays in logical NHWC axis order.

    x            (N, H, W, C), any strides
    filter_hwio  (KH, KW, C/groups, F)
    y            (N, OH, OW, F) writable, any strides; fully overwritten
    algorithm    "auto" (``choose_for``), "gemm" (im2col + GEMM; the direct kernel for
                 depthwise) or "winograd" (3x3, stride 1, not depthwise; else a ValueError)
    The caller has checked shapes against ``geometry`` and dtypes against each other.
    """
    algorithm = check_algorithm(algorithm)
    choice, plan = _forward_plan(x.shape, x.strides, filter_hwio.shape, y.shape, y.strides,
                                 y.dtype, geometry, groups, algorithm, _winograd.AVAILABLE,
                                 machine_cores(), _workspace_limit)
    f = y.shape[3]
    if plan is not None:  # the GEMM kernel
        _run_plan(_gemm.forward, plan, num_threads, y.dtype,
                  x, _filter_matrix(filter_hwio, plan.taps, f), y)
        return y

    n, h, w, c = x.shape
    kh, kw = geometry.kernel_hw
    if _needs_no_kernel(x, filter_hwio, y, lambda a, b, r: forward(
            a, b, r, geometry, groups, num_threads, algorithm)):
        return y

    if choice.algorithm == "winograd":  # the stride-1 correlation of x by the filter
        # Output rows (columns) whose window lies wholly in the padding are exactly zero;
        # computed by Winograd they would be rounding noise from the tile's other pixels.
        (pt, _), (pl, _) = geometry.pads
        reach_h, reach_w = ((k - 1) * d for k, d in zip(geometry.kernel_hw, geometry.dilations))
        rows = slice(min(max(0, pt - reach_h), y.shape[1]), max(0, min(y.shape[1], h + pt)))
        cols = slice(min(max(0, pl - reach_w), y.shape[2]), max(0, min(y.shape[2], w + pl)))
        inner = y[:, rows, cols]
        if inner.size < y.size:
            y[...] = 0
        winograd_correlate(x, grouped_filter(filter_hwio, groups), inner,
                           (pt - rows.start, pl - cols.start), geometry.dilations, num_threads,
                           choice.tile)
        return y

    # Else depthwise: filter (KH, KW, 1, C*M) is (KH, KW, C, M).
    depthwise_forward(x, filter_hwio.reshape(kh, kw, c, f // c), y, geometry, num_threads)
    return y


@functools.lru_cache(maxsize=256)
def _forward_plan(x_shape, x_strides, filter_shape, y_shape, y_strides, dtype, geometry, groups,
                  algorithm, winograd_built, cores, limit, restage=True):
    """:func:`forward`'s choice of algorithm, and the :class:`_GemmPlan` of its GEMM kernel
    (None where none runs); ``winograd_built`` as for :func:`_input_plan`; ``restage=False``:
    never restage the input rows (see below)."""
    choice, gemm = _gemm_choice("forward", x_shape, y_shape, (x_shape, filter_shape, y_shape),
                                geometry, groups, dtype, algorithm)
    if not gemm:
        return choice, None
    n, h, w, c = x_shape
    f = y_shape[3]
    itemsize = dtype.itemsize
    kh, kw = geometry.kernel_hw
    taps = kh * kw * (c // groups)
    _check_blas_sizes(taps, f)
    # im2col reads x along its densest direction; a 1x1/stride-1/unpadded convolution whose x
    # images are BLAS matrices needs no im2col at all.
    cols_pixel_major = _cols_pixel_major(x_shape, x_strides, groups)
    x_ld = 0
    x_layout = _matrix_layout(x_shape, x_strides, itemsize) if _pointwise(geometry) else None
    fg = f // groups
    copy_rows = (x_layout is not None and not x_layout[0]
                 and _copy_channel_rows(x_shape, fg, groups, itemsize))
    if copy_rows:
        x_layout, restage = None, False
    if x_layout is not None:
        cols_pixel_major, x_ld = x_layout
    # The GEMM writes y itself when its images are BLAS matrices; else a per-thread buffer in
    # y's densest orientation is copied out through its strides.
    y_layout = _matrix_layout(y_shape, y_strides, itemsize)
    if y_layout is not None:
        y_pixel_major, y_ld = y_layout
    else:
        y_pixel_major, y_ld = abs(y_strides[3]) <= abs(y_strides[2]), 0

    # NCHW memory and many channels a group: im2col reads a per-chunk NHWC copy of the input
    # rows (runs of KW*C/groups values a pixel, not runs along the width), and the GEMM writes
    # a pixel-major buffer, copied out along the width: the NHWC kernel's orientation, whose
    # GEMM packs its operands faster.  Measured, forward NCHW float32, 2 threads: 1.04-1.5x
    # (5x5 64 -> 64 at 8x28x28 1.14-1.18x, 64x32x8x8 3x3 s2 -> 64 1.4x), none slower by more
    # than the noise (+-5%).
    restage = (restage and x_layout is None and not cols_pixel_major
               and c // groups >= _RESTAGE_CHANNELS)
    if restage:
        cols_pixel_major = True
        if not y_pixel_major:
            y_pixel_major, y_ld = True, 0
    row_bytes = ((0 if x_ld else taps) + (0 if y_ld else fg)) * itemsize
    if row_bytes == 0:
        # No buffer; still cache-sized GEMMs: the operands' slices of a chunk fit in L2/L3.
        chunk = min(_chunk_pixels((taps + fg) * itemsize, cores, limit), 2**24)
    else:
        chunk = min(_FORWARD_CHUNK_PIXELS, _chunk_pixels(row_bytes, cores, limit))
        if taps * fg * itemsize > _CHUNK_TARGET_BYTES:
            # BLAS repacks the filter matrix for every GEMM, from L3 once it outgrows L2.
            chunk = max(chunk, min(_LARGE_FILTER_CHUNK_PIXELS, limit // cores // row_bytes))
    # Every orientation of the forward GEMM (N-N, N-T, T-T) may run by OpenBLAS's small-matrix
    # kernels: see _small_gemm_pixels.
    # A larger filter matrix of at most ~240 filters, float32: chunks of 128 pixels, each GEMM
    # split along its sum into small-matrix GEMMs adding into y.  Measured, float32, one
    # thread, Xeon, whole GEMMs / split: 8x28x28 5x5 64 -> 64 1.17-1.31x (2 threads
    # 1.15-1.20x), 16x28x28 5x5 128 -> 96 1.04-1.43x, 3x3 s2 64 -> 128 at 8x56x56 VALID
    # 1.05-1.12x, 128 -> 128 SAME 1.06-1.12x (NHWC and NCHW); float64 0.91-1.07x, not taken.
    # Not where a 1x1 layer's channel-major x is copied or read in place: both want long runs
    # of each channel (8x56x56 NCHW with 61-pixel chunks: 1x1 256 -> 64 copied 0.74-0.77x;
    # 64 -> 64 in place 0.63-0.71x, float64 0.61-0.72x, 256 -> 64 float64 0.63-0.65x).
    channel_runs = copy_rows or (x_ld > 0 and not cols_pixel_major)
    gemm_taps = 0
    if not channel_runs:
        chunk, gemm_taps = _small_gemm_chunk(chunk, taps, fg, itemsize)
    total = n * geometry.out_hw[0] * geometry.out_hw[1]
    unit_pixels = _pixel_units(total, chunk, cores)
    chunk = min(chunk, unit_pixels)
    units = -(-total // unit_pixels)
    flops = 2 * total * f * taps
    max_threads = max(1, units)
    if row_bytes:
        max_threads = max(1, min(max_threads, limit // (chunk * row_bytes)))
    # Chunks may span images when y's images form one pixel-major matrix (NHWC memory), or
    # through the buffer when the input rows are restaged and an image's GEMM is not small
    # or narrow: per-image GEMMs of up to ~2^20 multiply-adds ran faster (OpenBLAS's
    # small-matrix kernels skip packing), larger ones repack the filter for every image
    # (32x512x7x7 3x3 -> 512: 1.32x across images, 64x16x8x8 -> 32: 0.96x), and those over
    # at most _ACROSS_PIXELS output pixels run slowly at any size (3x3 s2 -> 64, float32, 2
    # threads, across images: 64x32x8x8 1.7-2x, 64x32x10x10 1.7-2x, 64x32x12x12 1.1-1.5x,
    # 64x16x16x16 -> 16 1.0-1.6x, 32x32x16x16 and 16x32x20x20 0.95-1.05x).
    p = geometry.out_hw[0] * geometry.out_hw[1]
    across_images = (not x_ld and y_ld and y_pixel_major
                     and (n == 1 or y_strides[0] == p * y_ld * itemsize))
    restage_rows = band = 0  # band: elements of the restaged rows
    if restage:
        across_images = across_images or (2 * p <= chunk
                                          and (p <= _ACROSS_PIXELS or p * taps * fg > 2**20))
        restage_rows = _restage_row_count(geometry, chunk)
        band = restage_rows * w * (c // groups)
        thread_bytes = chunk * row_bytes + band * itemsize
        if thread_bytes > limit // cores:  # the copy does not fit beside the buffers
            return _forward_plan.__wrapped__(x_shape, x_strides, filter_shape, y_shape,
                                             y_strides, dtype, geometry, groups, algorithm,
                                             winograd_built, cores, limit, restage=False)
        max_threads = max(1, min(max_threads, limit // thread_bytes))
    params = _gemm_params(geometry, c, f, groups, unit_pixels=unit_pixels, chunk=chunk,
                          restage_rows=restage_rows, gemm_taps=gemm_taps)
    return choice, _GemmPlan(taps, units, flops, max_threads,
                             max(1, chunk * row_bytes // itemsize + band), params,
                             (cols_pixel_major, x_ld, y_pixel_major, y_ld, across_images),
                             False)


def _small_gemm_pixels(taps, fg):
    """Pixels a chunk up to which the forward or filter-gradient GEMM of a group, (fg x taps)
    by (taps x pixels) or its transpose, fits OpenBLAS's small-matrix kernels; 0 where that
    leaves fewer than 32 (a short sum, and as many GEMM calls).

    Unless the GEMM is T-N (OpenBLAS's permit: then only for outputs of up to 1200 elements)
    those kernels skip the packing, which costs about as much as the
    multiplies when fg is 64 or less: OpenBLAS's own chunked GEMMs packed for 22% of the
    time against 33% multiplying (perf, 1x1 256 -> 64 filter gradient, NHWC).  Measured,
    float32, one thread, Xeon (OpenBLAS's SkylakeX kernels), cache-sized chunks / cut ones,
    results bitwise equal in the forward: forward NHWC 8x224x224x3 7x7 s2 -> 64 1.25-1.29x
    (2 threads 1.17-1.20x), 8x56x56 1x1 64 -> 64 1.39-1.56x, 128 -> 64 1.28-1.32x, 256 -> 32
    1.13x, 256 -> 64 0.95-1.02x (2 threads 1.00x), 32x16x16 5x5 16 -> 32 1.25x, 3x3 s2 32 ->
    64 at 64x8x8 1.15-1.24x and 16 -> 32 at 16x32x32 1.18-1.40x (NHWC, and NCHW where its
    rows are restaged), NCHW 3x3 8 -> 16 at 8x56x56 1.40x, the NCHW stem 0.96-1.07x; filter
    gradient NHWC 1x1 256 -> 64 1.35-1.43x (2 threads 1.81x), 64 -> 64 1.16-1.32x, 128 -> 64
    1.30x, the 7x7 stem 1.00-1.15x (2 threads 1.05-1.14x), 5x5 16 -> 32 1.6-1.9x; float64:
    forward 1x1 64 -> 64 1.22-1.35x, the stem 1.01x; filter gradient 1x1 256 -> 64 1.50x,
    64 -> 64 1.19x, 5x5 16 -> 32 1.38-1.82x, the stem 0.96x.
    """
    pixels = _SMALL_GEMM_MULTIPLIES // (taps * fg)
    return pixels if pixels >= 32 else 0


def _small_gemm_chunk(chunk, taps, fg, itemsize):
    """(chunk, gemm_taps) for a forward or filter-gradient GEMM of a group whose orientation
    OpenBLAS's small-matrix kernels accept: the chunk cut to _small_gemm_pixels where the
    whole filter matrix fits them; else, float32 and at most ~240 filters, chunks of
    _SPLIT_CHUNK_PIXELS whose GEMMs take gemm_taps taps at a time; else unchanged, gemm_taps 0.
    """
    if _small_gemm_pixels(taps, fg):
        return min(chunk, _small_gemm_pixels(taps, fg)), 0
    split = _SMALL_GEMM_MULTIPLIES // (fg * _SPLIT_CHUNK_PIXELS)
    if itemsize == 4 and split >= 32:
        return min(chunk, _SPLIT_CHUNK_PIXELS), split
    return chunk, 0


def _copy_channel_rows(x_shape, fg, groups, itemsize):
    """Whether a 1x1 forward convolution copies channel-major (NCHW) x a chunk at a time
    (im2col: one run a channel) rather than letting BLAS read it in place.

    OpenBLAS packs an in-place chunk a cache line from each of its channel rows in turn; from
    128 rows on that outruns the hardware prefetchers, and packing from memory took 43% of the
    time against 27% for the multiplies (perf, 8x56x56 256 -> 64 float32, one thread).  Copied
    along each row first, the chunk is packed from cache.  Measured, float32, one thread, in
    place / copied: 8x56x56 256 -> 64 1.30-1.40x (2 threads 1.20-1.31x), 128 -> 32 1.35-1.62x,
    128 -> 128 1.11-1.17x, 8x28x28 256 -> 64 1.31x, 512 -> 128 1.02-1.08x; not taken where it
    lost: 64 channels or fewer (0.90-0.93x at 32), more than 128 filters (the multiplies
    dominate: 128 -> 512 0.94-0.97x), rows under half a page (16x14x14 1024 -> 128 0.91-0.95x)
    and float64 (8x56x56 256 -> 64 0.67-0.73x).
    """
    _, h, w, c = x_shape
    return (itemsize == 4 and c // groups >= 128 and fg <= 128
            and h * w * itemsize >= 2048)


def _restage_row_count(geometry, chunk):
    """The most input rows a chunk of output pixels reads: its output rows (a chunk starting
    mid-row spans one more), strided, and the kernel's reach."""
    (h, _), (oh, ow), (kh, _) = geometry.in_hw, geometry.out_hw, geometry.kernel_hw
    rows = min(oh, (chunk + ow - 2) // ow + 1)
    return min(h, (rows - 1) * geometry.strides[0] + (kh - 1) * geometry.dilations[0] + 1)


def backprop_filter(x, dy, dw, geometry, groups=1, num_threads=None, algorithm="auto"):
    """Write the filter gradient into ``dw``; arrays in logical NHWC axis order.

    x            (N, H, W, C), any strides
    dy           (N, OH, OW, F), any strides
    dw           (KH, KW, C/groups, F) writable, any strides; fully overwritten
    algorithm    "auto" (``choose_for``), "gemm" (im2col + GEMM; the direct kernel for
                 depthwise) or "winograd" (3x3, stride 1, not depthwise; else a ValueError)
    The caller has checked shapes against ``geometry`` and dtypes against each other.

    The output pixels are split into work units, each summing its own partial gradient; the
    partials are added in unit order, so the result is the same for any num_threads.
    """
    algorithm = check_algorithm(algorithm)
    choice, plan = _filter_plan(x.shape, x.strides, dy.shape, dy.strides, dw.shape, dw.dtype,
                                geometry, groups, algorithm, _winograd.AVAILABLE,
                                machine_cores(), _workspace_limit)
    if plan is not None:  # the GEMM kernel
        if plan.copy_dy:
            dy = np.ascontiguousarray(dy)
        size = dw.size
        single = plan.units == 1 and dw.flags.c_contiguous
        partials = dw.reshape(1, size) if single else np.empty((plan.units, size), dw.dtype)
        _run_plan(_gemm.backprop_filter, plan, num_threads, dw.dtype, x, dy, partials)
        if not single:
            _reduce_in_order(partials, dw)
        return dw

    n, h, w, c = x.shape
    kh, kw, _, f = dw.shape
    if _needs_no_kernel(x, dy, dw, lambda a, b, r: backprop_filter(
            a, b, r, geometry, groups, num_threads, algorithm)):
        return dw

    if choice.algorithm == "winograd":  # the stride-1 correlation of x by dy
        (pt, _), (pl, _) = geometry.pads
        winograd_filter_gradient(x, dy, dw, (pt, pl), geometry.dilations, num_threads,
                                 choice.tile)
        # Taps that only ever meet the padding are exactly zero; computed by Winograd they
        # would be rounding noise from the tile's other taps.
        for axis, (size, out, pad, dil) in enumerate(zip((h, w), geometry.out_hw, (pt, pl),
                                                         geometry.dilations)):
            for tap in range(3):
                if tap * dil - pad > size - 1 or out - 1 + tap * dil - pad < 0:
                    dw[(slice(None),) * axis + (tap,)] = 0
        return dw

    # Else depthwise: dw (KH, KW, 1, C*M) is (KH, KW, C, M).
    dw4 = np.empty((kh, kw, c, f // c), dw.dtype)
    depthwise_backprop_filter(x, dy, dw4, geometry, num_threads)
    dw[...] = dw4.reshape(dw.shape)
    return dw


@functools.lru_cache(maxsize=256)
def _filter_plan(x_shape, x_strides, dy_shape, dy_strides, dw_shape, dtype, geometry, groups,
                 algorithm, winograd_built, cores, limit):
    """:func:`backprop_filter`'s choice of algorithm, and the :class:`_GemmPlan` of its GEMM
    kernel (None where none runs); ``winograd_built`` as for :func:`_input_plan`."""
    choice, gemm = _gemm_choice("filter", x_shape, dy_shape, (x_shape, dy_shape, dw_shape),
                                geometry, groups, dtype, algorithm)
    if not gemm:
        return choice, None
    n, h, w, c = x_shape
    kh, kw, _, f = dw_shape
    itemsize = dtype.itemsize
    dy_pixel_major, dy_ld, copy_dy = _out_backprop_layout(dy_shape, dy_strides, itemsize)
    taps = kh * kw * (c // groups)
    _check_blas_sizes(taps, f)
    # Few channels a group: tap-major columns (runs along the width) make the GEMM N,N; with
    # 3 channels (7x7 stride 2, 8x224x224x3 -> 64, NHWC) 3-10% faster than channel runs,
    # with 64 or more 2-40% slower.
    cols_pixel_major = _cols_pixel_major(x_shape, x_strides, groups) and c // groups >= 16
    x_ld = 0
    x_layout = _matrix_layout(x_shape, x_strides, itemsize) if _pointwise(geometry) else None
    # A 1x1 layer reads x in place where BLAS can address its images, except when x and dy are
    # both pixel-major (NHWC): then each chunk of x is copied (its im2col, a run of channels a
    # pixel) so that OpenBLAS packs it from cache; packing straight from memory walks across
    # the pixels' rows and ran the GEMM at half speed (1x1 256 -> 64 at 8x56x56, 2 threads:
    # 10.1 -> 7.1 ms float32, 15.1 -> 12.8 float64; a tap-major copy, a transpose, took 10.1).
    if x_layout is not None and not (x_layout[0] and dy_pixel_major):
        cols_pixel_major, x_ld = x_layout

    total = n * geometry.out_hw[0] * geometry.out_hw[1]
    row_bytes = (0 if x_ld else taps) * itemsize
    partial_bytes = taps * f * itemsize
    # Cache-sized chunks even without a column buffer, and at most _FILTER_CHUNK_PIXELS: the
    # GEMM's inner dimension is the chunk's pixels, and a long one is slow.
    chunk = min(_FILTER_CHUNK_PIXELS,
                _chunk_pixels(row_bytes or (taps + f // groups) * itemsize, cores, limit,
                              partial_bytes))
    # Pixel-major out_backprop makes the GEMM N-N or N-T: see _small_gemm_pixels.
    # Beyond, float32: the GEMM computes its output's taps in blocks (_small_gemm_chunk).
    # Measured, float32, NHWC, whole GEMMs / blocks: 8x28x28 5x5 64 -> 64 1.46x (one
    # thread), 1.36-1.49x (two), 3x3 s2 64 -> 128 at 8x56x56 VALID 1.11-1.18x, 128 -> 128
    # SAME 1.02-1.13x, 16x28x28 5x5 128 -> 96 even.
    gemm_taps = 0
    if dy_pixel_major:
        chunk, gemm_taps = _small_gemm_chunk(chunk, taps, f // groups, itemsize)
    # Chunks may span images when dy's images form one pixel-major matrix (NHWC memory); for
    # images smaller than a chunk, also when they are channel-major (NCHW), dy then copied a
    # chunk at a time: per-image GEMMs summed over 16 pixels (64x32x8x8 -> 64, stride 2)
    # spent their time reading and writing the partial sums.
    p = geometry.out_hw[0] * geometry.out_hw[1]
    across_images = (not x_ld and dy_pixel_major
                     and (n == 1 or copy_dy or dy_strides[0] == p * dy_ld * itemsize))
    restage_rows = band = 0  # band: elements of the restaged rows
    if not x_ld and not dy_pixel_major and 2 * p <= chunk:
        across_images = True
        row_bytes += f * itemsize
        chunk = min(chunk, _chunk_pixels(row_bytes, cores, limit, partial_bytes))
        # A strided layer's channel-major im2col reads step-s runs of a few values: restaged
        # input rows and a pixel-major out_backprop copy instead make the NHWC kernel's GEMM
        # (stride 2, 8x8 to 16x16 images, 16-128 channels: 1.02-1.3x; at stride 1 0.9-1.08x,
        # so not there).
        rows = _restage_row_count(geometry, chunk)
        if (geometry.strides[1] > 1 and not cols_pixel_major
                and c // groups >= _RESTAGE_CHANNELS
                and chunk * row_bytes + rows * w * (c // groups) * itemsize
                <= (limit - partial_bytes) // cores):
            cols_pixel_major = True
            restage_rows, band = rows, rows * w * (c // groups)
    # One unit a core, fewer when their partial sums would not fit in the workspace.
    units = max(1, min(cores, total,
                       (limit - (cores * chunk * row_bytes if row_bytes else 0))
                       // partial_bytes))
    unit_pixels = -(-total // units)
    units = -(-total // unit_pixels)
    flops = 2 * total * f * taps
    max_threads = max(1, units)
    if row_bytes:
        max_threads = max(1, min(max_threads, (limit - units * partial_bytes)
                                 // (chunk * row_bytes + band * itemsize)))
    params = _gemm_params(geometry, c, f, groups, unit_pixels=unit_pixels, chunk=chunk,
                          restage_rows=restage_rows, gemm_taps=gemm_taps)
    return choice, _GemmPlan(taps, units, flops, max_threads,
                             max(1, chunk * row_bytes // itemsize + band), params,
                             (cols_pixel_major, x_ld, dy_pixel_major, dy_ld, across_images),
                             copy_dy)


def _reduce_in_order(partials, out):
    """out = partials[0] + partials[1] + ... , always in that order (bitwise reproducible):
    summed straight into out when it is C-contiguous, else into partials[0], then copied."""
    contiguous = out.flags.c_contiguous
    total = out.reshape(-1) if contiguous else partials[0]
    if len(partials) > 1:
        np.add(partials[0], partials[1], out=total)
        for i in range(2, len(partials)):
            total += partials[i]
    elif contiguous:
        total[...] = partials[0]
    if not contiguous:
        out[...] = total.reshape(out.shape)


ALGORITHMS = ("auto", "gemm", "winograd")


def choose_for(op, x_shape, y_shape, geometry, groups, dtype):
    """The :class:`convbp._choose.Choice` that ``algorithm="auto"`` makes for ``op`` ("forward",
    "input" or "filter") of the convolution of ``x_shape`` into ``y_shape`` (logical NHWC
    shapes): deterministic in the geometry, dtype and machine.  Each op is one stride-1
    correlation: of x by the filter (forward), of y by the flipped, transposed filter (input
    gradient), of x by y (filter gradient)."""
    return _choice(op, tuple(x_shape), tuple(y_shape), geometry, groups, np.dtype(dtype),
                   _winograd.AVAILABLE)


@functools.lru_cache(maxsize=256)
def _choice(op, x_shape, y_shape, geometry, groups, dtype, built):
    """:func:`choose_for`, remembered: it is a function of its arguments only."""
    n, c, f = x_shape[0], x_shape[3], y_shape[3]
    x_hw, y_hw = tuple(x_shape[1:3]), tuple(y_shape[1:3])
    corr = (x_hw, y_hw, c, f) if op != "input" else (y_hw, x_hw, f, c)
    itemsize = 4 if np.dtype(dtype) == np.float16 else np.dtype(dtype).itemsize
    return _choose.choose(n, corr[0], corr[1], geometry.kernel_hw, geometry.strides,
                          geometry.dilations, corr[2], corr[3], groups, itemsize,
                          depthwise=groups > 1 and c == groups, built=built, op=op)


def _algorithm_choice(op, x_shape, y_shape, geometry, groups, dtype, algorithm):
    if algorithm == "auto":
        return choose_for(op, x_shape, y_shape, geometry, groups, dtype)
    if algorithm == "winograd":
        c = x_shape[3]
        why = _choose.winograd_applies(geometry.kernel_hw, geometry.strides,
                                       groups > 1 and c == groups, _winograd.AVAILABLE)
        if why is not None:
            raise ValueError(f"algorithm='winograd' does not apply: {why}; use "
                             f"algorithm='auto' or 'gemm'")
        auto = choose_for(op, x_shape, y_shape, geometry, groups, dtype)
        return _choose.Choice("winograd", auto.tile or 4, "requested")
    return _choose.Choice("gemm", None, "requested")


def check_algorithm(algorithm):
    """``algorithm`` checked: one of ``ALGORITHMS`` (case-insensitive) -> its lower-case name."""
    if type(algorithm) is str and algorithm in ALGORITHMS:
        return algorithm
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, ALGORITHMS))}; "
                         f"got {algorithm!r}")
    return algorithm.lower()


def check_threads(num_threads):
    """``num_threads`` checked: None (the default) or an int in [1, 4096]."""
    if num_threads is None:
        return None
    return as_int(num_threads, "num_threads", minimum=1, maximum=4096)


# ---------------------------------------------------------------------------------------------
# Depthwise (one input channel a group): the direct kernel in _depthwise.pyx.

# Width-inner loop order: each channel's out_backprop may be copied into a zero-padded buffer (so
# no column needs edge handling), if that holds at most this many elements per thread.
_MAX_PADDED_ELEMENTS = 2**18


def depthwise_backprop_input(dy, filter, dx, geometry, num_threads=None):
    """Write the depthwise input gradient into ``dx``; arrays in logical NHWC axis order.

    dy       (N, OH, OW, C*M), any strides
    filter   (KH, KW, C, M)
    dx       (N, H, W, C) writable, any strides; fully overwritten
    The caller has checked shapes against ``geometry`` and dtypes against each other.
    """
    n, h, w, c = dx.shape
    kh, kw, _, m = filter.shape
    # An empty dy: multiplier 0, no output channel reads the input.
    if _needs_no_kernel(dy, filter, dx, lambda a, b, r: depthwise_backprop_input(
            a, b, r, geometry, num_threads)):
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
    flops = 2 * n * dy.shape[1] * dy.shape[2] * c * m * kh * kw
    threads = thread_count(num_threads, units, flops)
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
    with kernel_team(threads):
        _depthwise.backprop_input(dy, filt, dx, workspace, taps, row_taps, col_taps, params,
                                  channels_inner, pad_l, pw, threads)
    return dx


def _dw_params(geometry, c, m):
    (oh, ow), (kh, kw) = geometry.out_hw, geometry.kernel_hw
    return dict(H=geometry.in_hw[0], W=geometry.in_hw[1], C=c, M=m, OH=oh, OW=ow, KH=kh, KW=kw,
                stride_h=geometry.strides[0], stride_w=geometry.strides[1],
                dilation_h=geometry.dilations[0], dilation_w=geometry.dilations[1],
                pad_top=geometry.pads[0][0], pad_left=geometry.pads[1][0])


def depthwise_forward(x, filter, y, geometry, num_threads=None):
    """Write the depthwise forward convolution into ``y``; arrays in logical NHWC axis order.

    x        (N, H, W, C), any strides
    filter   (KH, KW, C, M)
    y        (N, OH, OW, C*M) writable, any strides; fully overwritten
    """
    n, h, w, c = x.shape
    kh, kw, _, m = filter.shape
    if _needs_no_kernel(x, filter, y, lambda a, b, r: depthwise_forward(
            a, b, r, geometry, num_threads)):
        return y
    # Loop order follows x's memory: channels innermost for NHWC memory, width for NCHW.
    channels_inner = abs(x.strides[3]) <= abs(x.strides[2])
    filt = np.ascontiguousarray(filter).reshape(kh, kw, c * m)
    cores = machine_cores()
    total = n * geometry.out_hw[0] * geometry.out_hw[1]
    unit_pixels = -(-total // min(total, 8 * cores))
    units = -(-total // unit_pixels)
    flops = 2 * n * geometry.out_hw[0] * geometry.out_hw[1] * c * m * kh * kw
    threads = thread_count(num_threads, units, flops)
    workspace = np.empty((threads, _padded(c * m if channels_inner else geometry.out_hw[1])),
                         y.dtype)
    with kernel_team(threads):
        _depthwise.forward(x, filt, y, workspace, _dw_params(geometry, c, m), channels_inner,
                           unit_pixels, threads)
    return y


def depthwise_backprop_filter(x, dy, dw, geometry, num_threads=None):
    """Write the depthwise filter gradient into ``dw``; arrays in logical NHWC axis order.

    x        (N, H, W, C), any strides
    dy       (N, OH, OW, C*M), any strides
    dw       (KH, KW, C, M) writable, any strides; fully overwritten
    """
    n, h, w, c = x.shape
    kh, kw, _, m = dw.shape
    if _needs_no_kernel(x, dy, dw, lambda a, b, r: depthwise_backprop_filter(
            a, b, r, geometry, num_threads)):
        return dw
    channels_inner = abs(x.strides[3]) <= abs(x.strides[2])
    cores = machine_cores()
    total = n * geometry.out_hw[0] * geometry.out_hw[1]
    partial_bytes = kh * kw * c * m * dw.itemsize
    # One unit a core, fewer when their partial sums would not fit in the workspace.
    units = max(1, min(cores, total, _workspace_limit // partial_bytes))
    unit_pixels = -(-total // units)
    units = -(-total // unit_pixels)
    flops = 2 * n * geometry.out_hw[0] * geometry.out_hw[1] * c * m * kh * kw
    threads = thread_count(num_threads, units, flops)
    partials = np.empty((units, kh * kw * c * m), dw.dtype)
    with kernel_team(threads):
        _depthwise.backprop_filter(x, dy, partials, _dw_params(geometry, c, m),
                                   channels_inner, unit_pixels, threads)
    _reduce_in_order(partials, dw)
    return dw


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


# ---------------------------------------------------------------------------------------------
# Winograd (3x3, stride 1): the correlation kernel in _winograd.pyx, shared by every op.

# Per-thread scratch target of one chunk of tiles (transformed inputs and GEMM results): large
# enough for GEMMs of up to 256 tiles at 64 channels (the GEMM rate rises with the tiles per
# GEMM), small enough to stay near the cache at 512 channels (where 32-64 tiles suffice).
_WINOGRAD_CHUNK_BYTES = 10 * 2**20
_WINOGRAD_MAX_TILES = 256
_WINOGRAD_MIN_TILES = 16
# Output channels per part, at least, when units split the channels (see winograd_plan).
_WINOGRAD_SPLIT_CHANNELS = 128
# Work units a core the chunks of tiles aim at (see winograd_plan).
_WINOGRAD_UNITS_PER_CORE = 4
# Share of the workspace the transformed filter may take (the rest: per-thread scratch).
# Measured on 512 -> 512 layers (F(4x4), float32, 36 MiB of transformed filter): two blocks of
# 256 channels (this share) 21 ms, one block 25 ms, three 23 ms, four 24 ms.
_WINOGRAD_FILTER_SHARE = 0.5
# Input x output channels a group up to which the transformed filter is stored (C, F) even from
# a PyTorch-layout (F, C, 3, 3) weight: the GEMMs are then N-N, which OpenBLAS runs by its
# small-matrix kernels, where its T-N path packs and zeroes C first (more time than the
# multiplies at 16 channels).  Forward, PyTorch-layout filter, float32, 1 thread, Xeon,
# against (F, C): 8x64x64 16->16 1.4-1.6x, 16x32x32 32->32 1.3x, 8x56x56 64->64 1.2-1.3x
# (NCHW and NHWC), 8x28x28 128->128 even; 256 and 512 channels 10-20% slower (the gather).
_WINOGRAD_SMALL_FILTER = 64 * 128


def _tile_grid(out_hw, dilations, tile):
    """(m, alpha, alpha^2, tile rows, tile columns) of F(tile x tile, 3 x 3) over the largest
    polyphase component of an output of out_hw."""
    (oh, ow), (dh, dw) = out_hw, dilations
    return (tile, tile + 2, (tile + 2) ** 2, -(-(-(-oh // dh)) // tile),
            -(-(-(-ow // dw)) // tile))


def winograd_plan(n, in_hw, out_hw, c, f, groups, dilations, tile, itemsize, cores=None,
                  limit=None):
    """How ``winograd_correlate`` splits the work: a dict of the kernel's ``Plan`` fields plus
    ``filter_block`` (output channels per pass), ``scratch`` (elements per thread) and
    ``filter_bytes``.  Depends on the geometry, the machine and the workspace limit only."""
    cores = machine_cores() if cores is None else cores
    limit = _workspace_limit if limit is None else limit
    m, a, xi, tiles_h, tiles_w = _tile_grid(out_hw, dilations, tile)
    (h, w), (oh, ow), (dh, dw) = in_hw, out_hw, dilations
    tiles = n * tiles_h * tiles_w
    subs = groups * dh * dw
    # The transformed filter takes at most _WINOGRAD_FILTER_SHARE of the workspace: else output
    # channels in blocks (each block transforms the inputs again).
    per_channel = groups * xi * c * itemsize
    share = int(limit * _WINOGRAD_FILTER_SHARE)
    block = f if per_channel * f <= share else max(1, share // per_channel)
    if block < f and block > 16:
        block -= block % 16
    blocks = -(-f // block)
    block = -(-f // blocks)  # equal blocks
    per_tile = xi * (c + block) * itemsize
    target = max(_WINOGRAD_MIN_TILES, min(_WINOGRAD_MAX_TILES,
                                          _WINOGRAD_CHUNK_BYTES // per_tile))
    chunks = max(1, -(-tiles // target))
    # Balance: units (sub-problems x chunks x channel parts) a multiple of the cores while
    # there are few.  Wide layers with few tiles split the output channels rather than shrink
    # the GEMMs: each GEMM then repacks half the transformed filter for all the tiles (measured
    # on 8x14x14x256: 15% faster than two chunks of half the tiles).
    co_split = 1
    if subs * chunks < 2 * cores and block >= _WINOGRAD_SPLIT_CHANNELS * cores:
        co_split = cores // math.gcd(subs * chunks, cores)
    # Then several units a core where the GEMMs stay long enough (tiles per chunk >= half the
    # channels, so repacking the filter stays small beside the multiplies): one unit a core
    # leaves a core idle whenever the other is late or descheduled.  F(4x4), float32, 2
    # threads, Xeon: 8x32x32 64->64 1.5-1.9x, 8x28x28 128->128 1.15-1.25x, 8x56x56 64->64
    # 1.2x, 4x64x64 32->32 dilated 2 1.2x; 8x14x14 256->256 F(2x2) in 98-tile chunks 0.85x
    # (so not there).
    min_tiles = max(2 * _WINOGRAD_MIN_TILES, block // 2)
    while (co_split == 1 and subs * chunks < _WINOGRAD_UNITS_PER_CORE * cores
           and -(-tiles // (2 * chunks)) >= min_tiles):
        chunks *= 2
    while (subs * chunks * co_split) % cores and subs * chunks * co_split < 8 * cores and \
            -(-tiles // (chunks + 1)) >= 4:
        chunks += 1
    chunk_tiles = max(1, -(-tiles // chunks))

    def scratch(t):
        band_w = min(t, tiles_w) * m + 2
        return _winograd.scratch_elements(m, c, block, t, band_w), band_w

    filter_bytes = groups * xi * c * block * itemsize
    while chunk_tiles > 1 and filter_bytes + cores * scratch(chunk_tiles)[0] * itemsize > limit:
        chunk_tiles = -(-chunk_tiles // 2)
    chunks = max(1, -(-tiles // chunk_tiles))
    elements, band_w = scratch(chunk_tiles)
    return dict(m=m, alpha=a, xi=xi, N=n, H=h, W=w, C=c, OH=oh, OW=ow, F=block, co0=0,
                dil_h=dh, dil_w=dw, tiles_h=tiles_h, tiles_w=tiles_w, chunk_tiles=chunk_tiles,
                chunks=chunks, co_split=co_split, band_w=band_w, filter_block=block,
                scratch=elements, filter_bytes=filter_bytes, units=subs * chunks * co_split,
                f_total=f)


def _kernel_plan(plan):
    """The Winograd kernel's ``Plan`` struct fields of a plan dict (a fresh dict)."""
    return {k: plan[k] for k in ("m", "alpha", "xi", "N", "H", "W", "C", "OH", "OW", "F", "co0",
                                 "pad_top", "pad_left", "dil_h", "dil_w", "tiles_h", "tiles_w",
                                 "chunk_tiles", "chunks", "co_split", "band_w", "u_co_inner")}


def winograd_correlate(inp, filt, out, pads, dilations=(1, 1), num_threads=None, tile=4):
    """``out[n, i, j, g*F + co] = sum inp[n, i + a*d_h - pad_top, j + b*d_w - pad_left, g*C + ci]
    * filt[g, a, b, ci, co]`` (zero outside ``inp``) by Winograd F(tile x tile, 3 x 3).

    inp   (N, H, W, groups*C) logical NHWC, any strides
    filt  (groups, 3, 3, C, F), any strides (a flipped, transposed view is read in place)
    out   (N, OH, OW, groups*F) writable, any strides; fully overwritten
    pads  (pad_top, pad_left), any ints; dilations (d_h, d_w) >= 1
    Same dtype (float32 or float64) throughout; the caller has checked the shapes.  The forward
    stride-1 convolution is this with the HWIO filter as ``grouped_filter(filter, groups)``.
    """
    groups, kh, kw, c, f = filt.shape
    n, oh, ow, _ = out.shape
    if out.size == 0:
        return out
    if inp.size == 0 or filt.size == 0:
        out[...] = 0
        return out
    plan = winograd_plan(n, inp.shape[1:3], (oh, ow), c, f, groups, dilations, tile,
                         out.itemsize)
    plan["pad_top"], plan["pad_left"] = (int(p) for p in pads)
    if max(plan["xi"] * max(c, plan["F"]), plan["chunk_tiles"]) > _gemm.BLAS_INT_MAX:
        raise ValueError(f"filter is too large for BLAS: {c} x {f} channels")
    threads = thread_count(num_threads, plan["units"], 2 * n * oh * ow * groups * f * 9 * c)
    scratch_bytes = plan["scratch"] * out.itemsize
    threads = max(1, min(threads, (_workspace_limit - plan["filter_bytes"]) // scratch_bytes))
    workspace = np.empty((threads, plan["scratch"]), out.dtype)
    block = plan["filter_block"]
    u = np.empty(plan["filter_bytes"] // out.itemsize, out.dtype)
    # U[g, xi] as (C, F) when the filter's F axis is the denser, else (F, C): the transform
    # reads and writes along one unit stride.  Small filters are (C, F) whatever their layout
    # (gathered, see transform_filter): see _WINOGRAD_SMALL_FILTER.
    u_co_inner = (abs(filt.strides[4]) <= abs(filt.strides[3])
                  or c * f <= _WINOGRAD_SMALL_FILTER)
    plan["u_co_inner"] = u_co_inner
    kernel_plan = _kernel_plan(plan)
    with kernel_team(threads):
        for co0 in range(0, f, block):
            kernel_plan["co0"], kernel_plan["F"] = co0, min(block, f - co0)
            ub = u[:groups * plan["xi"] * c * kernel_plan["F"]]
            _winograd.transform_filter(filt, ub, tile, co0, kernel_plan["F"], u_co_inner,
                                       threads)
            _winograd.correlate(inp, ub, out, workspace, kernel_plan, groups, threads)
    return out


# Filter gradient by Winograd: each work unit transforms chunks of tiles of about this many
# bytes (V and Z, read back by the GEMMs while in cache), but no fewer than
# _WINOGRAD_GRAD_MIN_TILES tiles (the GEMMs' reduction length).  Measured (float32, 2 threads,
# ms for 256 KiB / 512 KiB / 1 MiB / 2 MiB): 8x56x56 64->64 4.21/4.22/4.02/3.71, 4x64x64 32->32
# dilated 2 1.06/0.81/0.77/0.78, 4x112x112 128->128 25.4/25.1/25.2/24.2; a 128-tile minimum
# was slower on every shape (0.49 -> 0.57 ms at 16->16).  The units' partial sums take
# at most _WINOGRAD_FILTER_SHARE of the workspace; output channels go in blocks beyond it
# (each block transforms the inputs again).
_WINOGRAD_GRAD_CHUNK_BYTES = 2 * 2**20
_WINOGRAD_GRAD_MIN_TILES = 32


def winograd_filter_plan(n, in_hw, out_hw, c, f, groups, dilations, tile, itemsize,
                         cores=None, limit=None):
    """How ``winograd_filter_gradient`` splits the work: the kernel's ``Plan`` fields plus
    ``parts`` (partial sums per group), ``filter_block``, ``scratch`` (elements per thread) and
    ``m_bytes``.  Depends on the geometry, the machine and the workspace limit only."""
    cores = machine_cores() if cores is None else cores
    limit = _workspace_limit if limit is None else limit
    m, a, xi, tiles_h, tiles_w = _tile_grid(out_hw, dilations, tile)
    (h, w), (oh, ow), (dh, dw) = in_hw, out_hw, dilations
    tiles = n * tiles_h * tiles_w * dh * dw  # per group, all phases (an upper bound)
    parts = max(1, min(-(-cores // groups), tiles))
    per_channel = groups * parts * xi * c * itemsize
    share = int(limit * _WINOGRAD_FILTER_SHARE)
    block = f if per_channel * f <= share else max(1, share // per_channel)
    if block < f and block > 16:
        block -= block % 16
    block = -(-f // -(-f // block))  # equal blocks
    per_tile = xi * (c + block) * itemsize
    chunk_tiles = max(1, min(-(-tiles // parts),
                             max(_WINOGRAD_GRAD_MIN_TILES, _WINOGRAD_GRAD_CHUNK_BYTES // per_tile)))

    def scratch(t):
        band_w = min(t, tiles_w) * m + 2
        return _winograd.filter_scratch_elements(m, c, block, t, band_w), band_w

    # The partials and one thread's scratch within the limit.
    while chunk_tiles > 1 and per_channel * block + scratch(chunk_tiles)[0] * itemsize > limit:
        chunk_tiles = -(-chunk_tiles // 2)
    elements, band_w = scratch(chunk_tiles)
    return dict(m=m, alpha=a, xi=xi, N=n, H=h, W=w, C=c, OH=oh, OW=ow, F=block, co0=0,
                dil_h=dh, dil_w=dw, tiles_h=tiles_h, tiles_w=tiles_w, chunk_tiles=chunk_tiles,
                chunks=0, co_split=1, band_w=band_w, u_co_inner=False, parts=parts,
                filter_block=block, scratch=elements, m_bytes=per_channel * block)


def winograd_filter_gradient(x, dy, dw, pads, dilations=(1, 1), num_threads=None, tile=4):
    """``dw[a, b, ci, g*F + co] = sum x[n, i + a*d_h - pad_top, j + b*d_w - pad_left, g*C + ci]
    * dy[n, i, j, g*F + co]`` (zero outside ``x``) by Winograd F(tile x tile, 3 x 3).

    x   (N, H, W, groups*C) logical NHWC, any strides
    dy  (N, OH, OW, groups*F) logical NHWC, any strides
    dw  (3, 3, C, groups*F) writable, any strides; fully overwritten
    pads (pad_top, pad_left), any ints; dilations (d_h, d_w) >= 1
    Same dtype (float32 or float64) throughout; the caller has checked the shapes.
    """
    n, oh, ow, f_all = dy.shape
    c = dw.shape[2]
    groups = x.shape[3] // c
    f = f_all // groups
    plan = winograd_filter_plan(n, x.shape[1:3], (oh, ow), c, f, groups, dilations, tile,
                                dw.itemsize)
    plan["pad_top"], plan["pad_left"] = (int(p) for p in pads)
    if max(plan["xi"] * max(c, plan["F"]), plan["chunk_tiles"] * max(c, plan["F"])) > \
            _gemm.BLAS_INT_MAX:
        raise ValueError(f"filter is too large for BLAS: {c} x {f} channels")
    threads = thread_count(num_threads, groups * plan["parts"], 2 * n * oh * ow * f_all * 9 * c)
    scratch_bytes = plan["scratch"] * dw.itemsize
    threads = max(1, min(threads, (_workspace_limit - plan["m_bytes"]) // scratch_bytes))
    workspace = np.empty((threads, plan["scratch"]), dw.dtype)
    block = plan["filter_block"]
    partials = np.empty(plan["m_bytes"] // dw.itemsize, dw.dtype)
    kernel_plan = _kernel_plan(plan)
    with kernel_team(threads):
        for co0 in range(0, f, block):
            kernel_plan["co0"], kernel_plan["F"] = co0, min(block, f - co0)
            _winograd.filter_gradient(x, dy, dw, partials, workspace, kernel_plan, groups,
                                      plan["parts"], threads)
    return dw


def grouped_filter(filter_hwio, groups):
    """The (groups, KH, KW, C/groups, F/groups) view of an HWIO filter, for the forward pass."""
    kh, kw, cg, f = filter_hwio.shape
    return filter_hwio.reshape(kh, kw, cg, groups, f // groups).transpose(3, 0, 1, 2, 4)


def flipped_filter(filter_hwio, groups):
    """The input gradient's filter: spatially flipped, C_in and C_out swapped, per group --
    a (groups, KH, KW, F/groups, C/groups) view, no copy."""
    kh, kw, cg, f = filter_hwio.shape
    return filter_hwio.reshape(kh, kw, cg, groups, f // groups)[::-1, ::-1].transpose(
        3, 0, 1, 4, 2)


def compute(op, x, filter_hwio, y, geometry, groups=1, num_threads=None, algorithm="auto"):
    """Run one op of the convolution layer; the arrays as for the op's own function.

    ``op`` "forward" writes ``y`` from ``x`` and the filter, "input" writes ``x`` (the input
    gradient) from ``y`` (the output gradient) and the filter, "filter" writes ``filter_hwio``
    from ``x`` and ``y``.  Every entry point of both families comes through here.
    """
    if op == "forward":
        return forward(x, filter_hwio, y, geometry, groups, num_threads, algorithm)
    if op == "input":
        return backprop_input(y, filter_hwio, x, geometry, groups, num_threads, algorithm)
    return backprop_filter(x, y, filter_hwio, geometry, groups, num_threads, algorithm)
