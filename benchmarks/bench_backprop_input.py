"""Benchmark convbp.conv2d_backprop_input against PyTorch, TensorFlow and the NumPy reference.

Every contender runs in this one process, on the same arrays, with the same thread count.  Each
(shape, layout, dtype) case is warmed up first, then timed interleaved -- convbp, torch, tf,
convbp, torch, ... -- so that a burst of load from elsewhere on the machine hits all of them
alike; the reported time is the median of ``--repeat`` rounds.  The NumPy reference is timed
after them, apart: its BLAS threads keep spinning after each call.

GFLOP/s counts the nominal work of the op, 2*N*OH*OW*C_out*KH*KW*C_in/groups per call, for every
contender alike.  TensorFlow's SAME padding can be asymmetric (the odd extra row or column at the
bottom/right); PyTorch only pads symmetrically, so it gets the smaller padding on both sides and an
input enlarged by the difference, and its gradient is cropped back (the crop -- a copy into the
requested memory format -- is inside the timed call).  That is the same number of multiply-adds.

Run from the repository root with convbp installed::

    python benchmarks/bench_backprop_input.py                     # everything, ~5 minutes
    python benchmarks/bench_backprop_input.py --quick --dtype float32
    python benchmarks/bench_backprop_input.py --shapes r50 --layout NCHW --repeat 9
    python benchmarks/bench_backprop_input.py --op all --heldout   # shapes the choice never saw

For the ops with a choice of algorithm (input gradient, forward) the "auto" column names what
``algorithm="auto"`` picked, and convbp is also timed with "gemm" and "winograd" forced ("n/a"
where Winograd does not apply; ``--no-forced`` leaves them out).

The JSON (default ``benchmarks/results/latest.json``) holds every timing; a PNG bar chart of the
speedup over PyTorch is written next to it when matplotlib is installed.
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import scipy
import scipy.linalg.blas
from threadpoolctl import threadpool_info, threadpool_limits

import convbp
import convbp._engine
import convbp._geometry
import convbp.reference

try:
    import torch
except ImportError:
    torch = None

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "float64")
# Largest relative max error (max|a - b| / max|b|) accepted between convbp and the cross-check.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
# The NumPy reference runs by default only on shapes up to this many nominal FLOPs (it is slow).
NUMPY_AUTO_FLOPS = 0.5e9


@dataclass(frozen=True)
class Shape:
    """One benchmark case: input N x H x W x C_in, filter KH x KW x C_in x C_out, TF padding."""

    name: str
    n: int
    h: int
    w: int
    c_in: int
    kh: int
    kw: int
    c_out: int
    stride: int
    padding: object  # "SAME" or "VALID", TensorFlow's meaning, or an int on every side
    dilation: int = 1

    def out_size(self, size, k):
        eff = (k - 1) * self.dilation + 1
        if self.padding == "SAME":
            return -(-size // self.stride)
        if isinstance(self.padding, int):
            return (size + 2 * self.padding - eff) // self.stride + 1
        return (size - eff) // self.stride + 1

    @property
    def tf_padding(self):
        """The padding as convbp's TensorFlow-style functions take it."""
        if isinstance(self.padding, int):
            return ((self.padding,) * 2,) * 2
        return self.padding

    @property
    def out_hw(self):
        return self.out_size(self.h, self.kh), self.out_size(self.w, self.kw)

    def pads(self):
        """TensorFlow's ((top, bottom), (left, right)); SAME puts the odd extra after."""
        if self.padding == "VALID":
            return (0, 0), (0, 0)
        if isinstance(self.padding, int):
            return self.tf_padding
        result = []
        for size, k, out in ((self.h, self.kh, self.out_hw[0]), (self.w, self.kw, self.out_hw[1])):
            total = max((out - 1) * self.stride + (k - 1) * self.dilation + 1 - size, 0)
            result.append((total // 2, total - total // 2))
        return tuple(result)

    @property
    def flops(self):
        oh, ow = self.out_hw
        return 2 * self.n * oh * ow * self.c_out * self.kh * self.kw * self.c_in

    def describe(self):
        return (f"{self.n}x{self.h}x{self.w}x{self.c_in} {self.kh}x{self.kw}x{self.c_in}x"
                f"{self.c_out} s{self.stride} "
                f"{self.padding if isinstance(self.padding, str) else f'pad{self.padding}'} "
                f"d{self.dilation}")


SHAPES = (
    Shape("r50_conv1", 8, 224, 224, 3, 7, 7, 64, 2, "SAME"),
    Shape("r50_s2_3x3", 8, 56, 56, 64, 3, 3, 64, 1, "SAME"),
    Shape("r50_s3_down", 8, 56, 56, 128, 3, 3, 128, 2, "SAME"),
    Shape("r50_s4_3x3", 8, 14, 14, 256, 3, 3, 256, 1, "SAME"),
    Shape("pointwise", 8, 56, 56, 256, 1, 1, 64, 1, "VALID"),
    Shape("mnist", 64, 28, 28, 1, 5, 5, 32, 1, "VALID"),
    Shape("dilated", 4, 64, 64, 32, 3, 3, 32, 1, "SAME", 2),
    Shape("vgg", 4, 112, 112, 128, 3, 3, 128, 1, "SAME"),
    # The second convolution of examples/train_digits.py (a batch of 64, PyTorch's padding=1).
    Shape("digits_conv2", 64, 8, 8, 32, 3, 3, 64, 2, 1),
)

# Shapes the algorithm choice was not tuned on (--heldout): 3x3 stride 1 at 32-512 channels
# and various image sizes, C_in != C_out, dilated wide layers, 5x5, 1x7, stride-2 VALID.
HELDOUT = (
    Shape("h_c32_64", 16, 56, 56, 32, 3, 3, 64, 1, "SAME"),
    Shape("h_c128_256", 8, 28, 28, 128, 3, 3, 256, 1, "SAME"),
    Shape("h_c512_14", 8, 14, 14, 512, 3, 3, 512, 1, "SAME"),
    Shape("h_7x7x512", 32, 7, 7, 512, 3, 3, 512, 1, "SAME"),
    Shape("h_img128", 2, 128, 128, 64, 3, 3, 32, 1, "SAME"),
    Shape("h_dil_wide", 4, 32, 32, 256, 3, 3, 256, 1, "SAME", 2),
    Shape("h_5x5", 8, 28, 28, 64, 5, 5, 64, 1, "SAME"),
    Shape("h_1x7", 8, 17, 17, 128, 1, 7, 128, 1, "SAME"),
    Shape("h_s2_valid", 8, 56, 56, 64, 3, 3, 128, 2, "VALID"),
    Shape("h_c16", 8, 64, 64, 16, 3, 3, 16, 1, "SAME"),
)


# ---------------------------------------------------------------------------------------------
# Contenders.  Each factory returns (run, to_nhwc): run() computes one gradient and returns it,
# to_nhwc(result) turns that result into a logical-NHWC NumPy array for the cross-check.

def make_convbp(shape, layout, dy, filt, threads, algorithm="auto"):
    if layout == "NHWC":
        sizes = (shape.n, shape.h, shape.w, shape.c_in)
    else:
        sizes = (shape.n, shape.c_in, shape.h, shape.w)

    def run():
        return convbp.conv2d_backprop_input(sizes, filt, dy, shape.stride, shape.tf_padding,
                                            data_format=layout, dilations=shape.dilation,
                                            num_threads=threads, algorithm=algorithm)

    return run, (lambda r: r) if layout == "NHWC" else (lambda r: r.transpose(0, 2, 3, 1))


def make_torch(shape, layout, dy, filt, threads):
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    dy_t = torch.from_numpy(dy)
    if layout == "NHWC":
        dy_t = dy_t.permute(0, 3, 1, 2)  # NCHW sizes, channels_last strides: no copy
    dy_t = dy_t.contiguous(memory_format=fmt)
    w_t = torch.from_numpy(filt).permute(3, 2, 0, 1).contiguous(memory_format=fmt)  # OIHW
    (top, bottom), (left, right) = shape.pads()
    pad = (min(top, bottom), min(left, right))
    extra = (top - pad[0], bottom - pad[0], left - pad[1], right - pad[1])
    hp, wp = shape.h + extra[0] + extra[1], shape.w + extra[2] + extra[3]
    x_t = torch.empty((shape.n, shape.c_in, hp, wp), dtype=dy_t.dtype).contiguous(
        memory_format=fmt)
    stride, dilation = [shape.stride] * 2, [shape.dilation] * 2
    crop = any(extra)
    rows, cols = slice(extra[0], extra[0] + shape.h), slice(extra[2], extra[2] + shape.w)

    def run():
        grad = torch.ops.aten.convolution_backward(
            dy_t, x_t, w_t, None, stride, list(pad), dilation, False, [0, 0], 1,
            [True, False, False])[0]
        if crop:
            grad = grad[:, :, rows, cols].contiguous(memory_format=fmt)
        return grad

    return run, lambda r: r.permute(0, 2, 3, 1).numpy()


def make_tf(shape, layout, dy, filt, threads):
    import tensorflow as tf

    if layout == "NHWC":
        sizes = (shape.n, shape.h, shape.w, shape.c_in)
        strides, dilations = [1, shape.stride, shape.stride, 1], [1, shape.dilation,
                                                                   shape.dilation, 1]
    else:
        sizes = (shape.n, shape.c_in, shape.h, shape.w)
        strides, dilations = [1, 1, shape.stride, shape.stride], [1, 1, shape.dilation,
                                                                   shape.dilation]
    sizes_t = tf.constant(sizes, dtype=tf.int32)
    filt_t, dy_t = tf.constant(filt), tf.constant(dy)
    padding, explicit = shape.padding, []
    if isinstance(padding, int):  # EXPLICIT: (before, after) per axis in data_format order
        hw = [padding] * 4
        explicit = [0, 0] + hw + [0, 0] if layout == "NHWC" else [0, 0, 0, 0] + hw
        padding = "EXPLICIT"

    @tf.function
    def grad(sizes_t, filt_t, dy_t):
        return tf.raw_ops.Conv2DBackpropInput(
            input_sizes=sizes_t, filter=filt_t, out_backprop=dy_t, strides=strides,
            padding=padding, explicit_paddings=explicit, data_format=layout,
            dilations=dilations)

    def run():
        return grad(sizes_t, filt_t, dy_t).numpy()

    return run, (lambda r: r) if layout == "NHWC" else (lambda r: r.transpose(0, 2, 3, 1))


def make_numpy(shape, layout, dy, filt, threads):
    dy_nhwc = dy if layout == "NHWC" else dy.transpose(0, 2, 3, 1)  # a view
    strides, dilations = (shape.stride,) * 2, (shape.dilation,) * 2

    def run():
        dx = convbp.reference.conv2d_backprop_input_nhwc(
            (shape.h, shape.w), filt, dy_nhwc, strides, dilations, shape.pads())
        return dx if layout == "NHWC" else dx.transpose(0, 3, 1, 2)

    return run, (lambda r: r) if layout == "NHWC" else (lambda r: r.transpose(0, 2, 3, 1))


# Forward convolution and filter gradient: convbp's engine (the public fronts are thin layers on
# it), PyTorch's aten ops, the NumPy reference.  Factories take the op's two operands.

def _geometry(shape):
    return convbp._geometry.forward_geometry((shape.h, shape.w), (shape.kh, shape.kw),
                                             (shape.stride,) * 2, (shape.dilation,) * 2,
                                             shape.tf_padding)


def _nhwc(arr, layout):
    return arr if layout == "NHWC" else arr.transpose(0, 2, 3, 1)  # a view


def _to_nhwc(layout):
    return (lambda r: r) if layout == "NHWC" else (lambda r: r.transpose(0, 2, 3, 1))


def make_convbp_forward(shape, layout, x, filt, threads, algorithm="auto"):
    geometry = _geometry(shape)
    x_nhwc = _nhwc(x, layout)
    oh, ow = geometry.out_hw
    sizes = (shape.n, oh, ow, shape.c_out) if layout == "NHWC" else (shape.n, shape.c_out, oh,
                                                                      ow)

    def run():
        y = np.empty(sizes, x.dtype)
        convbp._engine.forward(x_nhwc, filt, _nhwc(y, layout), geometry, 1, threads,
                               algorithm)
        return y

    return run, _to_nhwc(layout)


def make_convbp_filter(shape, layout, x, dy, threads, algorithm="auto"):
    geometry = _geometry(shape)
    x_nhwc, dy_nhwc = _nhwc(x, layout), _nhwc(dy, layout)
    f_shape = (shape.kh, shape.kw, shape.c_in, shape.c_out)

    def run():
        dw = np.empty(f_shape, x.dtype)
        convbp._engine.backprop_filter(x_nhwc, dy_nhwc, dw, geometry, 1, threads, algorithm)
        return dw

    return run, lambda r: r


def make_forced(factory, algorithm):
    """A contender: convbp's ``factory`` with ``algorithm`` forced ("gemm", "winograd"); it
    raises (and the case shows "n/a") where the algorithm does not apply."""
    def forced(shape, layout, first, second, threads):
        return factory(shape, layout, first, second, threads, algorithm)
    return forced


def auto_choice(shape, dtype, op):
    """What algorithm="auto" picks for ``op`` on the shape, e.g. "winograd F(4x4)"."""
    if op not in ("input", "forward", "filter"):
        return "gemm"
    oh, ow = shape.out_hw
    choice = convbp._engine.choose_for(op, (shape.n, shape.h, shape.w, shape.c_in),
                                       (shape.n, oh, ow, shape.c_out), _geometry(shape), 1,
                                       np.dtype(dtype))
    return choice.algorithm + (f" F({choice.tile}x{choice.tile})" if choice.tile else "")


def _torch_operands(shape, layout, x):
    """channels_last (NHWC) or contiguous tensors; TF's asymmetric SAME padding as the smaller
    symmetric padding on an input enlarged (with zeros) by the difference."""
    fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
    x_t = torch.from_numpy(np.ascontiguousarray(_nhwc(x, layout))).permute(0, 3, 1, 2)
    (top, bottom), (left, right) = shape.pads()
    pad = (min(top, bottom), min(left, right))
    extra = (left - pad[1], right - pad[1], top - pad[0], bottom - pad[0])
    if any(extra):
        x_t = torch.nn.functional.pad(x_t, extra)
    return x_t.contiguous(memory_format=fmt), fmt, list(pad)


def make_torch_forward(shape, layout, x, filt, threads):
    x_t, fmt, pad = _torch_operands(shape, layout, x)
    w_t = torch.from_numpy(filt).permute(3, 2, 0, 1).contiguous(memory_format=fmt)  # OIHW
    stride, dilation = [shape.stride] * 2, [shape.dilation] * 2

    def run():
        return torch.ops.aten.convolution(x_t, w_t, None, stride, pad, dilation, False, [0, 0],
                                          1)

    return run, lambda r: r.permute(0, 2, 3, 1).numpy()


def make_torch_filter(shape, layout, x, dy, threads):
    x_t, fmt, pad = _torch_operands(shape, layout, x)
    dy_t = torch.from_numpy(np.ascontiguousarray(_nhwc(dy, layout))).permute(0, 3, 1, 2)
    dy_t = dy_t.contiguous(memory_format=fmt)
    w_t = torch.empty((shape.c_out, shape.c_in, shape.kh, shape.kw),
                      dtype=x_t.dtype).contiguous(memory_format=fmt)
    stride, dilation = [shape.stride] * 2, [shape.dilation] * 2

    def run():
        return torch.ops.aten.convolution_backward(
            dy_t, x_t, w_t, None, stride, pad, dilation, False, [0, 0], 1,
            [False, True, False])[1]

    return run, lambda r: r.permute(2, 3, 1, 0).numpy()


def make_numpy_forward(shape, layout, x, filt, threads):
    x_nhwc = _nhwc(x, layout)
    strides, dilations = (shape.stride,) * 2, (shape.dilation,) * 2

    def run():
        return convbp.reference.conv2d_nhwc(x_nhwc, filt, shape.out_hw, strides, dilations,
                                            shape.pads())

    return run, lambda r: r


def make_numpy_filter(shape, layout, x, dy, threads):
    x_nhwc, dy_nhwc = _nhwc(x, layout), _nhwc(dy, layout)
    strides, dilations = (shape.stride,) * 2, (shape.dilation,) * 2
    f_shape = (shape.kh, shape.kw, shape.c_in, shape.c_out)

    def run():
        return convbp.reference.conv2d_backprop_filter_nhwc(x_nhwc, f_shape, dy_nhwc, strides,
                                                            dilations, shape.pads())

    return run, lambda r: r


def contenders_for(op, torch_ok, tf, forced=True):
    """{name: factory} for one op; factories take the op's operands in OPERANDS[op] order.
    ``forced``: also convbp with each algorithm forced, for the ops that have a choice."""
    if op == "input":
        contenders = {"convbp": make_convbp}
        if forced:
            contenders.update(gemm=make_forced(make_convbp, "gemm"),
                              winograd=make_forced(make_convbp, "winograd"))
        if torch_ok:
            contenders["torch"] = make_torch
        if tf is not None:
            contenders["tf"] = make_tf
        contenders["numpy"] = make_numpy
        return contenders
    table = {"forward": (make_convbp_forward, make_torch_forward, make_numpy_forward),
             "filter": (make_convbp_filter, make_torch_filter, make_numpy_filter)}[op]
    contenders = {"convbp": table[0]}
    if forced:
        contenders.update(gemm=make_forced(table[0], "gemm"),
                          winograd=make_forced(table[0], "winograd"))
    if torch_ok:
        contenders["torch"] = table[1]
    contenders["numpy"] = table[2]
    return contenders


OPS = ("input", "forward", "filter")
OP_TITLES = {"input": "input gradient", "forward": "forward convolution",
             "filter": "filter gradient"}
OPERANDS = {"input": ("dy", "filt"), "forward": ("x", "filt"), "filter": ("x", "dy")}


def setup_tf(threads):
    """Import TensorFlow with its thread pools sized like the others; None if not importable."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return tf
    except Exception:  # not installed, or broken in this environment
        return None


# ---------------------------------------------------------------------------------------------
# Measurement.

def error_summary(exc):
    """The informative line of an exception (TensorFlow wraps its message in a traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(
        ("File ", "Graph execution error", "Detected at node", "[["))]
    return (lines[-1] if lines else repr(exc))[:120]


def rel_max_error(actual, expected):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    scale = float(np.max(np.abs(expected))) or 1.0
    return float(np.max(np.abs(actual - expected))) / scale


# Each timed call follows this pause: the previous contender's idle OpenMP threads (PyTorch's
# spin for milliseconds after a call) must not run beside the next -- convbp would count them
# as busy CPUs and take fewer threads, and any contender would share its cores with them.
GAP_SECONDS = 0.02


def time_interleaved(runs, warmups, repeat):
    """{name: [seconds per call]}: warm-up calls first, then ``repeat`` interleaved rounds."""
    for name, run in runs.items():
        for _ in range(warmups[name]):
            run()
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            time.sleep(GAP_SECONDS)
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def gemm_ceiling(dtype, threads, size=2048, repeat=5):
    """GFLOP/s of SciPy's BLAS GEMM on size x size Fortran-order matrices, ``threads`` threads."""
    gemm = scipy.linalg.blas.sgemm if dtype == "float32" else scipy.linalg.blas.dgemm
    rng = np.random.default_rng(1)
    a = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    b = np.asfortranarray(rng.standard_normal((size, size)).astype(dtype))
    c = np.zeros((size, size), dtype, order="F")
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(2):
            gemm(1.0, a, b, c=c, overwrite_c=True)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            gemm(1.0, a, b, c=c, overwrite_c=True)
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def call_overhead(threads, repeat=2000):
    """Median seconds of a call whose arithmetic is negligible (1x1x1x1, 1x1 filter): the
    fixed cost of validation, dispatch and starting the threads."""
    import timeit
    dy = np.ones((1, 1, 1, 1), np.float32)
    filt = np.ones((1, 1, 1, 1), np.float32)

    def call():
        convbp.conv2d_backprop_input((1, 1, 1, 1), filt, dy, 1, "VALID", num_threads=threads)
    call()
    return float(np.median(timeit.repeat(call, number=repeat // 20, repeat=20))) / (repeat // 20)


def run_case(shape, layout, dtype, args, contenders, op="input"):
    """Time one (op, shape, layout, dtype); returns the JSON record."""
    rng = np.random.default_rng(0)
    oh, ow = shape.out_hw
    dy_shape = (shape.n, oh, ow, shape.c_out) if layout == "NHWC" else (shape.n, shape.c_out,
                                                                        oh, ow)
    x_shape = (shape.n, shape.h, shape.w, shape.c_in) if layout == "NHWC" else (
        shape.n, shape.c_in, shape.h, shape.w)
    operands = dict(
        dy=rng.standard_normal(dy_shape, dtype=np.float64).astype(dtype),
        filt=rng.standard_normal((shape.kh, shape.kw, shape.c_in, shape.c_out),
                                 dtype=np.float64).astype(dtype),
        x=rng.standard_normal(x_shape, dtype=np.float64).astype(dtype) if op != "input"
        else None)
    first, second = (operands[name] for name in OPERANDS[op])
    record = dict(op=op, shape=shape.name, geometry=shape.describe(), layout=layout, dtype=dtype,
                  flops=shape.flops, pads=shape.pads(), out_hw=(oh, ow),
                  times={}, median_s={}, gflops={}, skipped={},
                  auto=auto_choice(shape, dtype, op))

    runs, converters = {}, {}
    for name, factory in contenders.items():
        if name == "numpy" and not (args.numpy or shape.flops <= NUMPY_AUTO_FLOPS):
            continue
        try:
            run, to_nhwc = factory(shape, layout, first, second, args.threads)
            result = run()  # also the first warm-up call
        except Exception as exc:  # e.g. TensorFlow's "only supports NHWC" for NCHW on CPU
            record["skipped"][name] = f"{type(exc).__name__}: {error_summary(exc)}"
            continue
        runs[name], converters[name] = run, (to_nhwc, result)

    # Cross-check convbp against every other contender, once per case; the verdict is against
    # PyTorch (or TensorFlow, or the NumPy reference, whichever ran first in that order).
    if "convbp" in runs:
        to_a, a = converters["convbp"]
        a = to_a(a)
        errors = {}
        for name in ("torch", "tf", "numpy", "gemm", "winograd"):
            if name in converters:
                to_b, b = converters[name]
                errors[name] = rel_max_error(a, to_b(b))
        if errors:
            check = next(iter(errors))
            record["verify"] = dict(against=check, rel_max_error=errors[check],
                                    tolerance=TOLERANCE[dtype],
                                    ok=all(e <= TOLERANCE[dtype] for e in errors.values()),
                                    errors=errors)
        del a
    converters.clear()  # release the results before timing

    warmups = {name: (args.warmup if name in ("torch", "tf") else 2) for name in runs}
    # The NumPy reference is timed apart, after the others: its multi-threaded BLAS leaves
    # worker threads spinning after each call, which would slow whichever contender runs next
    # (measured: convbp's mnist filter gradient 0.5 ms alone, 2.3 ms right after NumPy).
    numpy_run = runs.pop("numpy", None)
    times = time_interleaved(runs, warmups, args.repeat)
    if numpy_run is not None:
        runs["numpy"] = numpy_run
        times.update(time_interleaved({"numpy": numpy_run}, {"numpy": 0}, args.repeat))
    for name, ts in times.items():
        med = statistics.median(ts)
        record["times"][name] = ts
        record["median_s"][name] = med
        record.setdefault("min_s", {})[name] = min(ts)
        record["gflops"][name] = shape.flops / med / 1e9
        q1, _, q3 = statistics.quantiles(ts, n=4) if len(ts) > 1 else (med, med, med)
        record.setdefault("spread", {})[name] = (q3 - q1) / med
    if "convbp" in times and "torch" in times:
        record["speedup_vs_torch"] = record["median_s"]["torch"] / record["median_s"]["convbp"]
        record["speedup_vs_torch_best"] = record["min_s"]["torch"] / record["min_s"]["convbp"]
    return record


# ---------------------------------------------------------------------------------------------
# Reporting.

def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def convbp_revision():
    """``git describe`` of the tree convbp was imported from (an editable install), if any."""
    import subprocess
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10,
                             cwd=os.path.dirname(os.path.abspath(convbp.__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def machine_info(threads, tf):
    blas = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                    "threading_layer", "filepath")}
            for d in threadpool_info()]
    info = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(), cores_available=convbp.default_num_threads(),
        cpu_count=os.cpu_count(), threads=threads,
        load_average=[round(x, 2) for x in os.getloadavg()],
        python=platform.python_version(), convbp=convbp.__version__,
        convbp_revision=convbp_revision(), numpy=np.__version__,
        scipy=scipy.__version__, torch=getattr(torch, "__version__", None),
        tensorflow=getattr(tf, "__version__", None),
        openblas_env={k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
        blas=blas)
    return info


def print_header(info):
    rev = f" ({info['convbp_revision']})" if info["convbp_revision"] else ""
    print(f"convbp {info['convbp']}{rev} benchmark -- {info['date']}")
    print(f"CPU: {info['cpu']}  ({info['cores_available']} cores available, "
          f"{info['threads']} threads used; load average {info['load_average']})")
    print(f"Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, torch "
          f"{info['torch'] or 'not installed'}, tensorflow {info['tensorflow'] or 'not installed'}")
    for lib in info["blas"]:
        arch = f", {lib['architecture']}" if lib["architecture"] else ""
        print(f"thread pool: {lib['internal_api']} {lib['version'] or ''}{arch} "
              f"({lib['num_threads']} threads) {os.path.basename(lib['filepath'])}")
    if info["openblas_env"]:
        print("Environment: " + " ".join(f"{k}={v}" for k, v in info["openblas_env"].items()))
    print(flush=True)


def fmt(value, spec=".1f"):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        format(value, spec)


def print_table(records, contenders):
    extra = [name for name in ("gemm", "winograd", "tf", "numpy") if name in contenders
             and any(name in r["gflops"] or name in r["skipped"] for r in records)]
    cols = (["op", "shape", "layout", "dtype", "auto", "convbp", "torch", "speedup"] + extra
            + ["ms", "spread", "rel err"])
    rows = []
    for r in records:
        err = max(r.get("verify", {}).get("errors", {}).values(), default=None)
        flag = "" if r.get("verify", {}).get("ok", True) else " FAIL"
        speedup = r.get("speedup_vs_torch")
        row = [r.get("op", "input"), r["shape"], r["layout"], r["dtype"], r.get("auto", "-"),
               fmt(r["gflops"].get("convbp")),
               fmt(r["gflops"].get("torch")) if "torch" in contenders else "-",
               fmt(speedup, ".2f") + "x" if speedup else ("n/a" if "torch" in contenders
                                                         else "-")]
        row += [fmt(r["gflops"][name]) if name in r["gflops"] else
                ("n/a" if name in r["skipped"] else "-") for name in extra]
        row += [fmt(r["median_s"].get("convbp", float("nan")) * 1e3, ".2f"),
                fmt(max(r.get("spread", {}).values(), default=float("nan")) * 100, ".0f") + "%",
                (fmt(err, ".1e") if err is not None else "-") + flag]
        rows.append(row)
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    print("GFLOP/s (median of the timed calls); convbp = algorithm \"auto\" (its pick in the auto "
          "column), gemm / winograd =\nthat algorithm forced (n/a: it does not apply; -: the op "
          "has no choice); speedup = torch time / convbp\ntime; ms = convbp median; spread = "
          "largest interquartile range / median of any contender; rel err =\nmax|convbp - other| "
          "/ max|other|, the largest over the other contenders")
    print("  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in
                    enumerate(zip(cols, widths))))
    for row in rows:
        print("  ".join(v.ljust(w) if i < 5 else v.rjust(w) for i, (v, w) in
                        enumerate(zip(row, widths))))
    print()


def summarize(records):
    """Geomean and minimum speedup per (layout, dtype); convbp NCHW/NHWC time ratio per dtype."""
    summary = {"speedup_vs_torch": {}, "nchw_over_nhwc_time": {}}
    groups = {}
    for r in records:
        if "speedup_vs_torch" in r:
            groups.setdefault((r.get("op", "input"), r["layout"], r["dtype"]), []).append(
                (r["speedup_vs_torch"], r["shape"], r["speedup_vs_torch_best"]))
    for (op, layout, dtype), values in groups.items():
        low = min(values)
        summary["speedup_vs_torch"][f"{op} {layout} {dtype}"] = dict(
            geomean=geomean([v[0] for v in values]), min=low[0], min_shape=low[1],
            cases=len(values), geomean_best_times=geomean([v[2] for v in values]))
    by_key = {(r.get("op", "input"), r["shape"], r["layout"], r["dtype"]): r for r in records}
    ratios = {}
    for (op, name, layout, dtype), r in by_key.items():
        other = by_key.get((op, name, "NHWC", dtype))
        if layout == "NCHW" and other and "convbp" in r["median_s"] and \
                "convbp" in other["median_s"]:
            ratios.setdefault(f"{op} {dtype}", {})[name] = (r["median_s"]["convbp"]
                                                  / other["median_s"]["convbp"])
    for dtype, per_shape in ratios.items():
        summary["nchw_over_nhwc_time"][dtype] = dict(geomean=geomean(per_shape.values()),
                                                     per_shape=per_shape)
    return summary


def print_summary(summary, gemm, info):
    for key, s in sorted(summary["speedup_vs_torch"].items()):
        print(f"speedup vs torch, {key}: geomean {s['geomean']:.2f}x, min {s['min']:.2f}x "
              f"({s['min_shape']}), {s['cases']} shape(s); from best times "
              f"{s['geomean_best_times']:.2f}x")
    for dtype, s in sorted(summary["nchw_over_nhwc_time"].items()):
        worst = max(s["per_shape"].items(), key=lambda kv: kv[1])
        print(f"convbp NCHW/NHWC time, {dtype}: geomean {s['geomean']:.2f} "
              f"(worst {worst[1]:.2f}, {worst[0]})")
    for dtype, value in gemm.items():
        name = "sgemm" if dtype == "float32" else "dgemm"
        print(f"{name} ceiling (SciPy BLAS, 2048^3, {value['threads']} threads): "
              f"{value['gflops']:.1f} GFLOP/s at the start, {value['gflops_end']:.1f} at the end; "
              f"1 thread {value['gflops_1_thread']:.1f}")
    if "call_overhead" in summary:
        o = summary["call_overhead"]
        print(f"per-call overhead (a 1x1x1x1 call: validation, dispatch, thread start): "
              f"{o['seconds'] * 1e6:.0f} us = {100 * o['fraction']:.1f}% of the fastest case "
              f"({o['fastest_case']})")
    busy = max(info["load_average"][0], info["load_average_end"][0])
    if busy > info["cores_available"] + 0.5:
        print(f"warning: load average reached {busy:.2f} on {info['cores_available']} cores; "
              f"other processes competed for the CPU, absolute numbers are low and noisy")


def write_png(path, records, info):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [(op, d) for op in OPS for d in DTYPES
              if any(r.get("op", "input") == op and r["dtype"] == d and "speedup_vs_torch" in r
                     for r in records)]
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, (op, dtype) in zip(axes[:, 0], panels):
        mine = [r for r in records if r.get("op", "input") == op and r["dtype"] == dtype]
        names = [s.name for s in SHAPES + HELDOUT if any(r["shape"] == s.name for r in mine)]
        x = np.arange(len(names))
        for i, layout in enumerate(LAYOUTS):
            values = [next((r.get("speedup_vs_torch", 0) for r in mine
                            if r["shape"] == n and r["layout"] == layout), 0) for n in names]
            bars = ax.bar(x + (i - 0.5) * 0.38, values, 0.38, label=layout)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.set_ylabel("speedup vs PyTorch")
        ax.set_title(f"convbp {OP_TITLES[op]}, {dtype}", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}, "
                 f"{info['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_conv1d(args, dtype):
    """conv_transpose1d with input (1, 1026, 224), weight (1026, 1, 1024), stride 256 -- one
    image, one row: the case whose work must be split into bands of columns -- through the
    engine's backprop_input with a 2-D geometry, against torch's F.conv_transpose1d."""
    rng = np.random.default_rng(0)
    dy_ncw = rng.standard_normal((1, 1026, 224)).astype(dtype)
    weight = rng.standard_normal((1026, 1, 1024)).astype(dtype)
    geometry = convbp._geometry.forward_geometry((1, 58112), (1, 1024), (1, 256), (1, 1),
                                                 "VALID")
    dy = dy_ncw[:, :, None, :].transpose(0, 2, 3, 1)             # (1, 1, 224, 1026), NCHW memory
    filt = np.ascontiguousarray(weight.transpose(2, 1, 0))[None]  # (1, 1024, 1, 1026) HWIO

    def run_convbp():
        dx = np.empty((1, 1, 1, 58112), dtype)
        convbp._engine.backprop_input(dy, filt, dx.transpose(0, 2, 3, 1), geometry, 1,
                                      args.threads)
        return dx[:, :, 0, :]

    runs = {"convbp": run_convbp}
    if torch is not None and not args.no_torch:
        dy_t, w_t = torch.from_numpy(dy_ncw), torch.from_numpy(weight)
        runs["torch"] = lambda: torch.nn.functional.conv_transpose1d(dy_t, w_t, stride=256)
    results = {name: np.asarray(run()) for name, run in runs.items()}
    err = rel_max_error(results["convbp"], results["torch"]) if "torch" in results else None
    times = time_interleaved(runs, {name: 3 for name in runs}, max(args.repeat, 9))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    flops = 2 * 224 * 1026 * 1024
    line = (f"conv_transpose1d (1, 1026, 224) * (1026, 1, 1024) stride 256, {dtype}, "
            f"{args.threads} threads: convbp {med['convbp'] * 1e3:.2f} ms "
            f"({flops / med['convbp'] / 1e9:.1f} GFLOP/s)")
    if "torch" in med:
        line += (f", torch {med['torch'] * 1e3:.2f} ms; speedup {med['torch'] / med['convbp']:.2f}x"
                 f"; rel err {err:.1e}")
    print(line, flush=True)
    return dict(op="conv1d", dtype=dtype, median_s=med, times=times, rel_max_error=err)


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", choices=OPS + ("conv1d", "all"), default="input",
                   help="input gradient (default), forward convolution, filter gradient, the "
                        "1-D conv_transpose1d case, or all of them")
    p.add_argument("--dtype", choices=DTYPES + ("all",), default="all")
    p.add_argument("--layout", choices=LAYOUTS + ("all",), default="all")
    p.add_argument("--shapes", default="",
                   help="comma-separated substrings; only shapes whose name contains one run")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed interleaved rounds per case, median reported (default 7; 3 "
                        "with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up calls for PyTorch and TensorFlow (default 20; 5 with "
                        "--quick); convbp gets 3 (with its verification call), numpy 1")
    p.add_argument("--quick", action="store_true", help="fewer rounds and warm-ups")
    p.add_argument("--heldout", action="store_true",
                   help="the held-out shapes (not used to tune the algorithm choice) instead of "
                        "the public ones")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every contender (default: all cores available)")
    p.add_argument("--numpy", action="store_true",
                   help="time the NumPy reference on every shape (default: only small ones)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-tf", action="store_true", help="leave TensorFlow out")
    p.add_argument("--no-forced", action="store_true",
                   help="do not time convbp with each algorithm forced (gemm, winograd)")
    p.add_argument("--json", default=os.path.join(RESULTS_DIR, "latest.json"),
                   help="where to write the results (default %(default)s)")
    p.add_argument("--png", default=None,
                   help="bar chart path (default: the JSON path with .png; needs matplotlib)")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    if args.warmup is None:
        args.warmup = 5 if args.quick else 20
    if args.threads is None:
        args.threads = convbp.default_num_threads()
    if args.repeat < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeat and --threads must be >= 1, --warmup >= 0")
    if args.png is None:
        args.png = os.path.splitext(args.json)[0] + ".png"
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.repeat < 5 and not args.quick:
        print(f"note: --repeat {args.repeat} < 5, medians will be noisy", file=sys.stderr)
    tf = None if args.no_tf else setup_tf(args.threads)
    torch_ok = torch is not None and not args.no_torch
    if torch_ok:
        torch.set_num_threads(args.threads)
    ops = OPS if args.op == "all" else (() if args.op == "conv1d" else (args.op,))
    contenders = {}
    for op in ops:
        contenders.update(contenders_for(op, torch_ok, tf, not args.no_forced))

    wanted = [s.strip() for s in args.shapes.split(",") if s.strip()]
    pool = HELDOUT if args.heldout else SHAPES
    shapes = [s for s in pool if not wanted or any(w in s.name for w in wanted)]
    if not shapes:
        sys.exit(f"no shape matches --shapes {args.shapes!r}; names: "
                 + ", ".join(s.name for s in pool))
    dtypes = DTYPES if args.dtype == "all" else (args.dtype,)
    layouts = LAYOUTS if args.layout == "all" else (args.layout,)

    # Every BLAS call outside convbp (the NumPy reference, the GEMM ceiling) uses args.threads.
    with threadpool_limits(limits=args.threads, user_api="blas"):
        info = machine_info(args.threads, tf)
        print_header(info)
        gemm = {d: dict(gflops=gemm_ceiling(d, args.threads), threads=args.threads,
                        gflops_1_thread=gemm_ceiling(d, 1))
                for d in DTYPES}
        for d, g in gemm.items():
            print(f"{'sgemm' if d == 'float32' else 'dgemm'} ceiling: {g['gflops']:.1f} GFLOP/s "
                  f"({args.threads} threads), {g['gflops_1_thread']:.1f} (1 thread)", flush=True)

        records = []
        total = len(ops) * len(dtypes) * len(shapes) * len(layouts)
        for op, dtype, shape, layout in ((o, d, s, l) for o in ops for d in dtypes
                                         for s in shapes for l in layouts):
            r = run_case(shape, layout, dtype, args,
                         contenders_for(op, torch_ok, tf, not args.no_forced), op)
            records.append(r)
            v = r.get("verify")
            check = ("rel err vs " + ", ".join(f"{k} {e:.1e}" for k, e in
                                               v["errors"].items())
                     + ("" if v["ok"] else " FAIL")) if v else "not verified"
            others = ", ".join(f"{k} {fmt(g)}" for k, g in r["gflops"].items()
                               if k != "convbp")
            skipped = "".join(f"; {k} n/a ({why})" for k, why in r["skipped"].items())
            speed = (f" ({r['speedup_vs_torch']:.2f}x)" if "speedup_vs_torch" in r
                     else "")
            print(f"[{len(records)}/{total}] {op:<7} {shape.name:<11} {layout} {dtype} "
                  f"(auto: {r['auto']}): convbp {fmt(r['gflops'].get('convbp'))} GFLOP/s{speed}"
                  f"{', ' + others if others else ''}; {check}{skipped}", flush=True)
        conv1d = [run_conv1d(args, d) for d in dtypes] if args.op in ("conv1d", "all") else []
        overhead = call_overhead(args.threads)
        info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        for d, g in gemm.items():  # again at the end: the load may have changed meanwhile
            g["gflops_end"] = gemm_ceiling(d, args.threads)

    print()
    print_table(records, contenders)
    summary = summarize(records)
    fastest = min((r for r in records if "convbp" in r["median_s"]),
                  key=lambda r: r["median_s"]["convbp"], default=None)
    if fastest is not None:
        summary["call_overhead"] = dict(
            seconds=overhead, fastest_case=f"{fastest['shape']} {fastest['layout']}",
            fraction=overhead / fastest["median_s"]["convbp"])
    print_summary(summary, gemm, info)

    out = dict(machine=info, settings=dict(repeat=args.repeat, warmup=args.warmup,
                                           threads=args.threads, quick=args.quick,
                                           heldout=args.heldout, forced=not args.no_forced),
               gemm_ceiling=gemm, summary=summary, results=records, conv1d=conv1d)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {args.json}")
    if write_png(args.png, records, info):
        print(f"wrote {args.png}")
    failed = [r for r in records if not r.get("verify", {}).get("ok", True)]
    if failed:
        print(f"\n{len(failed)} case(s) FAILED verification: "
              + ", ".join(f"{r['shape']} {r['layout']} {r['dtype']}" for r in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
