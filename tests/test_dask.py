"""convbp.dask: block-by-block results equal the in-memory call, for every chunking.

The in-memory convbp functions are checked against the float64 oracle elsewhere; here each dask
result is compared with them (float64, to the dot-product rounding bound; in practice bitwise),
and a few with the oracle directly.  The graph is inspected to check that every task reads only
the out_backprop rows and columns that reach its block, found by brute force over the taps.
"""

import doctest
import itertools
import logging
import operator
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import convbp  # noqa: E402
import convbp.dask as cdask  # noqa: E402
import oracle  # noqa: E402

RNG = np.random.default_rng(20261201)


def to_layout(arr, data_format):
    """A logical NHWC array in data_format order."""
    return arr if data_format == "NHWC" else arr.transpose(0, 3, 1, 2)


def chunks_in_layout(chunks_nhwc, data_format):
    """Per-axis chunks given in logical NHWC order -> data_format order."""
    return tuple(chunks_nhwc) if data_format == "NHWC" else tuple(chunks_nhwc[i] for i in
                                                                    (0, 3, 1, 2))


def partition(size, rng):
    """Uneven chunks of size."""
    cuts = sorted(set(rng.integers(1, size, size=rng.integers(0, size)).tolist())) if size > 1 \
        else []
    bounds = [0] + cuts + [size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def tf_pads(in_hw, k, s, d, padding):
    if padding == "SAME":
        return oracle.tf_same_pads(in_hw, k, s, d)
    if padding == "VALID":
        return (0, 0), (0, 0)
    return padding


# (in_hw, kernel, strides, dilations, padding); C=3 input channels, F=4 output channels.
TF_CASES = [
    ((11, 9), (3, 3), (1, 1), (1, 1), "SAME"),
    ((13, 10), (3, 2), (2, 3), (1, 1), "SAME"),
    ((12, 12), (5, 3), (3, 2), (2, 1), "VALID"),
    ((9, 14), (3, 3), (2, 2), (2, 2), ((2, 1), (0, 3))),
    ((10, 7), (1, 1), (3, 2), (1, 1), "VALID"),          # rows no output reaches
    ((8, 8), (4, 4), (1, 2), (1, 2), ((3, 3), (2, 2))),
    ((7, 9), (2, 3), (3, 3), (2, 1), "SAME"),
]

# dy chunkings in logical NHWC terms, from dy's shape.
DY_CHUNKINGS = {
    "ones": lambda shape, rng: tuple((1,) * size for size in shape[:3]) + ((shape[3],),),
    "twos_threes": lambda shape, rng: (2, 2, 3, shape[3]),
    "uneven": lambda shape, rng: tuple(partition(size, rng) for size in shape),
    "whole": lambda shape, rng: shape,
    "channels_split": lambda shape, rng: (shape[0], 2, shape[2], 1),
}


def tf_problem(case, data_format, n=3, c=3, f=4, groups=1, dtype=np.float64):
    in_hw, k, s, d, padding = case
    pads = tf_pads(in_hw, k, s, d, padding)
    out_hw = oracle.out_size(in_hw, k, s, d, pads)
    dy = RNG.standard_normal((n,) + out_hw + (f,)).astype(dtype)
    filt = RNG.standard_normal(k + (c // groups, f)).astype(dtype)
    sizes = tuple(to_layout(np.empty((n,) + in_hw + (c,)), data_format).shape)
    return to_layout(dy, data_format), filt, sizes, pads


def assert_matches(result, expected, reduction):
    assert isinstance(result, da.Array)
    assert result.shape == expected.shape and result.dtype == expected.dtype
    oracle.assert_close(result.compute(), expected, expected.dtype, reduction)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", TF_CASES, ids=str)
@pytest.mark.parametrize("chunking", DY_CHUNKINGS)
def test_conv2d_backprop_input_matches_in_memory(case, data_format, chunking):
    dy, filt, sizes, _ = tf_problem(case, data_format)
    in_hw, k, s, d, padding = case
    logical_shape = dy.shape if data_format == "NHWC" else tuple(dy.shape[i] for i in (0, 2, 3, 1))
    chunks = chunks_in_layout(DY_CHUNKINGS[chunking](logical_shape, RNG), data_format)
    expected = convbp.tf.conv2d_backprop_input(sizes, filt, dy, s, padding,
                                               data_format=data_format, dilations=d)
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=chunks), s,
                                         padding, data_format=data_format, dilations=d)
    assert_matches(result, expected, k[0] * k[1] * filt.shape[3])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("result_chunks", [(2, 1, 1, 3), (1, 4, 3, 1), "uneven", "auto",
                                           {1: 5}])
def test_result_chunks_argument(data_format, result_chunks):
    case = ((13, 10), (3, 2), (2, 3), (2, 1), "SAME")
    dy, filt, sizes, _ = tf_problem(case, data_format)
    if result_chunks == "uneven":
        result_chunks = tuple(partition(size, RNG) for size in sizes)
    dy_chunks = tuple(max(1, size // 2) for size in dy.shape)
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=dy_chunks), (2, 3),
                                         "SAME", data_format=data_format, dilations=(2, 1),
                                         chunks=result_chunks)
    c_axis = 3 if data_format == "NHWC" else 1
    assert result.chunks[c_axis] == (sizes[c_axis],)  # channels: one chunk, whatever was asked
    if isinstance(result_chunks, tuple) and isinstance(result_chunks[0], tuple):
        assert all(result.chunks[a] == result_chunks[a] for a in range(4) if a != c_axis)
    expected = convbp.tf.conv2d_backprop_input(sizes, filt, dy, (2, 3), "SAME",
                                               data_format=data_format, dilations=(2, 1))
    assert_matches(result, expected, 6 * filt.shape[3])


def test_default_chunks_follow_out_backprop_through_the_stride():
    dy = da.zeros((4, 8, 9, 2), chunks=((1, 3), (3, 5), (4, 5), (2,)))
    dx = cdask.conv2d_backprop_input((4, 16, 27, 5), np.zeros((3, 3, 5, 2)), dy, (2, 3), "SAME")
    assert dx.chunks == ((1, 3), (6, 10), (12, 15), (5,))


def test_matches_oracle_and_explicit_paddings():
    # EXPLICIT with explicit_paddings, grouped (C=4, filter in-depth 2), against the loop.
    dy, filt, sizes, pads = tf_problem(((10, 11), (3, 3), (2, 1), (1, 2), ((1, 2), (3, 0))),
                                       "NCHW", c=4, groups=2)
    explicit = [0, 0, 0, 0, 1, 2, 3, 0]  # NCHW order
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=(2, 3, 2, 3)),
                                         (2, 1), "EXPLICIT", data_format="NCHW",
                                         dilations=(1, 2), explicit_paddings=explicit)
    reference = oracle.direct_backprop_input(dy.transpose(0, 2, 3, 1), filt, (10, 11), (2, 1),
                                             (1, 2), pads, groups=2)
    oracle.assert_close(result.compute().transpose(0, 2, 3, 1), reference, np.float64, 9 * 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_lower_precision_equals_in_memory(dtype):
    dy, filt, sizes, _ = tf_problem(((12, 9), (3, 3), (2, 2), (1, 1), "SAME"), "NHWC",
                                    dtype=dtype)
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=(1, 2, 3, 4)), 2,
                                         "SAME")
    expected = convbp.tf.conv2d_backprop_input(sizes, filt, dy, 2, "SAME")
    assert_matches(result, expected, 9 * 4)


# --- conv_transpose2d ------------------------------------------------------------------------

# (in_hw, kernel, stride, padding, output_padding, dilation, groups)
TORCH_CASES = [
    ((5, 6), (3, 3), (2, 2), (1, 1), (1, 0), (1, 1), 1),
    ((4, 7), (2, 3), (3, 1), (0, 1), (2, 0), (1, 2), 2),
    ((6, 5), (3, 1), (1, 3), (2, 0), (0, 2), (2, 1), 1),
    ((3, 3), (4, 4), (2, 3), (0, 0), (0, 0), (2, 2), 2),
]


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
@pytest.mark.parametrize("chunking", ["ones", "uneven", "whole"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_transpose2d_matches_in_memory(case, data_format, chunking, with_bias):
    in_hw, k, s, p, op, d, groups = case
    c_in, c_out = 4, 6
    x = RNG.standard_normal((3, c_in) + in_hw)
    weight = RNG.standard_normal((c_in, c_out // groups) + k)
    bias = RNG.standard_normal(c_out) if with_bias else None
    if data_format == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    logical = (3,) + in_hw + (c_in,)
    chunks = chunks_in_layout(DY_CHUNKINGS[chunking](logical, RNG), data_format)
    expected = convbp.torch.conv_transpose2d(x, weight, bias, s, p, op, groups, d,
                                             data_format=data_format)
    result = cdask.conv_transpose2d(da.from_array(x, chunks=chunks), weight, bias, s, p, op,
                                    groups, d, data_format=data_format)
    assert_matches(result, np.ascontiguousarray(expected), k[0] * k[1] * c_in // groups)


def test_conv_transpose2d_unbatched_lazy_operands_float16_bias():
    x = RNG.standard_normal((4, 7, 6)).astype(np.float16)  # (C_in, H, W)
    weight = RNG.standard_normal((4, 3, 3, 3)).astype(np.float16)
    bias = RNG.standard_normal(3).astype(np.float16)
    expected = convbp.torch.conv_transpose2d(x, weight, bias, 2, 1, 1)
    result = cdask.conv_transpose2d(da.from_array(x, chunks=(4, 2, 3)),
                                    da.from_array(weight, chunks=2), da.from_array(bias, chunks=1),
                                    2, 1, 1)
    assert result.chunks == ((3,), (4, 4, 4, 2), (6, 6))  # x's chunks times the stride
    assert_matches(result, expected, 9 * 4)


def test_conv_transpose2d_against_torch():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 4, 6, 5))
    weight = RNG.standard_normal((4, 3, 3, 2))
    bias = RNG.standard_normal(6)
    result = cdask.conv_transpose2d(da.from_array(x, chunks=(1, 4, 2, 3)), weight, bias,
                                    (2, 3), (1, 0), (1, 2), 2, (1, 2))
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), (2, 3), (1, 0),
        (1, 2), 2, (1, 2)).numpy()
    assert_matches(result, expected, 6 * 2)


# --- hypothesis over geometry and chunking ---------------------------------------------------

@st.composite
def chunked_problems(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    in_hw = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    kind = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    padding = kind if kind != "explicit" else tuple(
        (draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    pads = tf_pads(in_hw, k, s, d, padding)
    if any(size + p[0] + p[1] < (kk - 1) * dd + 1
           for size, p, kk, dd in zip(in_hw, pads, k, d)):
        padding = "SAME"  # the kernel does not fit: a geometry that does
        pads = tf_pads(in_hw, k, s, d, padding)
    n = draw(st.integers(1, 3))
    out_hw = oracle.out_size(in_hw, k, s, d, pads)

    def cuts(size):
        inner = draw(st.sets(st.integers(1, size - 1), max_size=size - 1)) if size > 1 else set()
        bounds = [0] + sorted(inner) + [size]
        return tuple(b - a for a, b in zip(bounds, bounds[1:]))

    dy_chunks = (cuts(n),) + tuple(cuts(o) for o in out_hw) + ((2,),)
    result_chunks = draw(st.one_of(st.none(), st.just("cuts")))
    if result_chunks == "cuts":
        result_chunks = (cuts(n),) + tuple(cuts(size) for size in in_hw) + ((3,),)
    data_format = draw(st.sampled_from(["NHWC", "NCHW"]))
    return in_hw, k, s, d, padding, n, out_hw, dy_chunks, result_chunks, data_format


@given(chunked_problems())
def test_hypothesis_geometry_and_chunking(problem):
    in_hw, k, s, d, padding, n, out_hw, dy_chunks, result_chunks, data_format = problem
    rng = np.random.default_rng(0)
    dy = to_layout(rng.standard_normal((n,) + out_hw + (2,)), data_format)
    filt = rng.standard_normal(k + (3, 2))
    sizes = to_layout(np.empty((n,) + in_hw + (3,)), data_format).shape
    chunks = chunks_in_layout(dy_chunks, data_format)
    if result_chunks is not None:
        result_chunks = chunks_in_layout(result_chunks, data_format)
    expected = convbp.tf.conv2d_backprop_input(sizes, filt, dy, s, padding,
                                               data_format=data_format, dilations=d)
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=chunks), s,
                                         padding, data_format=data_format, dilations=d,
                                         chunks=result_chunks)
    with dask.config.set(scheduler="sync"):
        assert_matches(result, expected, k[0] * k[1] * 2)


@st.composite
def chunked_transposes(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d))
    in_hw = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    # padding at most what leaves an output row: (in-1)*s + d*(k-1) + op + 1 - 2p >= 1
    p = tuple(draw(st.integers(0, ((i - 1) * ss + dd * (kk - 1) + o) // 2))
              for i, ss, dd, kk, o in zip(in_hw, s, d, k, op))
    groups = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 2))

    def cuts(size):
        inner = draw(st.sets(st.integers(1, size - 1), max_size=size - 1)) if size > 1 else set()
        bounds = [0] + sorted(inner) + [size]
        return tuple(b - a for a, b in zip(bounds, bounds[1:]))

    x_chunks = (cuts(n),) + tuple(cuts(i) for i in in_hw) + ((4,),)
    data_format = draw(st.sampled_from(["NHWC", "NCHW"]))
    with_bias = draw(st.booleans())
    return k, s, d, op, in_hw, p, groups, n, x_chunks, data_format, with_bias


@given(chunked_transposes())
def test_hypothesis_conv_transpose2d(problem):
    k, s, d, op, in_hw, p, groups, n, x_chunks, data_format, with_bias = problem
    rng = np.random.default_rng(1)
    x = np.ascontiguousarray(to_layout(rng.standard_normal((n,) + in_hw + (4,)), data_format))
    weight = rng.standard_normal((4, 6 // groups) + k)
    bias = rng.standard_normal(6) if with_bias else None
    expected = convbp.torch.conv_transpose2d(x, weight, bias, s, p, op, groups, d,
                                             data_format=data_format)
    result = cdask.conv_transpose2d(da.from_array(x, chunks=chunks_in_layout(x_chunks,
                                                                              data_format)),
                                    weight, bias, s, p, op, groups, d, data_format=data_format)
    with dask.config.set(scheduler="sync"):
        assert_matches(result, np.ascontiguousarray(expected), k[0] * k[1] * 4 // groups)


# --- the graph: every task reads only what reaches its block ---------------------------------

def rows_reaching(lo, hi, out_size, k, s, d, pad):
    """Output rows with a tap in input rows [lo, hi), by brute force."""
    return {o for o in range(out_size) for t in range(k) if lo <= o * s - pad + t * d < hi}


def task_regions(result, dy):
    """{result block index: [(start, stop) per dy axis of each piece]} from the graph."""
    graph = dict(result.__dask_graph__())
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in dy.chunks]
    regions = {}
    for key in itertools.product([result.name], *(range(len(c)) for c in result.chunks)):
        task = graph[key]
        pieces = task[1]
        flat = []

        def walk(item):
            if isinstance(item, list):
                for sub in item:
                    walk(sub)
                return
            func, dy_key, slices = item
            assert func is operator.getitem and dy_key[0] == dy.name
            flat.append(tuple((bounds[a][i] + sl.start, bounds[a][i] + sl.stop)
                              for a, (i, sl) in enumerate(zip(dy_key[1:], slices))))

        if pieces is not None:
            walk(pieces)
        regions[key[1:]] = flat
    return regions


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", [((32, 20), (3, 3), (1, 1), (1, 1), "SAME"),
                                  ((31, 20), (5, 3), (2, 3), (2, 1), ((4, 1), (0, 2))),
                                  ((30, 20), (1, 2), (3, 1), (1, 2), "VALID")], ids=str)
def test_tasks_read_only_their_halo(case, data_format):
    dy, filt, sizes, pads = tf_problem(case, data_format, n=2)
    in_hw, k, s, d, padding = case
    h_axis, w_axis = (1, 2) if data_format == "NHWC" else (2, 3)
    chunks = [-1] * 4
    chunks[0], chunks[h_axis] = 1, 3
    dy = da.from_array(dy, chunks=tuple(chunks))
    result = cdask.conv2d_backprop_input(sizes, filt, dy, s, padding, data_format=data_format,
                                         dilations=d, chunks={h_axis: 4, w_axis: 7})
    assert len(dy.chunks[h_axis]) > 3
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in result.chunks]
    regions = task_regions(result, dy)
    for index, pieces in regions.items():
        lo = [bounds[a][i] for a, i in enumerate(index)]
        hi = [bounds[a][i + 1] for a, i in enumerate(index)]
        needed = [rows_reaching(lo[axis], hi[axis], dy.shape[axis], k[j], s[j], d[j], pads[j][0])
                  for j, axis in enumerate((h_axis, w_axis))]
        images, got = set(), [set(), set()]
        for piece in pieces:
            images.update(range(*piece[0]))
            for j, axis in enumerate((h_axis, w_axis)):
                got[j].update(range(*piece[axis]))
        if all(needed):
            assert images == set(range(lo[0], hi[0]))  # the block's own images
        else:
            needed = [set(), set()]  # nothing reaches the block: it reads nothing, it is zeros
        assert got == needed  # exactly the rows and columns that reach the block
        assert all(len(g) < dy.shape[axis] for g, axis in zip(got, (h_axis, w_axis)))
    oracle.assert_close(result.compute(), convbp.tf.conv2d_backprop_input(
        sizes, filt, dy.compute(), s, padding, data_format=data_format, dilations=d),
        np.float64, k[0] * k[1] * filt.shape[3])


def test_graph_of_a_result_larger_than_memory():
    # 2 x 16384 x 16384 x 8 float64 = 32 GiB: the graph builds at once and one block computes.
    dy = da.ones((2, 16384, 16384, 4), chunks=(1, 512, 512, 4))
    dx = cdask.conv2d_backprop_input((2, 16384, 16384, 8), np.ones((3, 3, 8, 4)), dy, 1, "SAME")
    assert dx.nbytes == 32 * 2**30 and dx.npartitions == 2 * 32 * 32
    corner = dx[1, -3:, -2:, :2].compute()
    expected = np.full((3, 2, 2), 4 * 9.0)
    expected[-1] = 4 * 6.0
    expected[:, -1] = 4 * 6.0
    expected[-1, -1] = 4 * 4.0
    np.testing.assert_array_equal(corner, expected)


# --- threads, errors, imports ----------------------------------------------------------------

def test_task_threads_rule(monkeypatch):
    import threading
    cores = convbp.default_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cdask.task_threads() == cores  # main thread: the synchronous scheduler
    found = []
    with dask.config.set(num_workers=2):
        thread = threading.Thread(target=lambda: found.append(cdask.task_threads()))
        thread.start()
        thread.join()
    assert found == [max(1, cores // 2)]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cdask.task_threads() == 1


def test_num_threads_reaches_every_task(monkeypatch):
    seen = []
    inner = convbp.tf.conv2d_backprop_input

    def spy(*args, **kwargs):
        seen.append(kwargs["num_threads"])
        return inner(*args, **kwargs)

    dy, filt, sizes, _ = tf_problem(TF_CASES[0], "NHWC")
    result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=(1, 4, 4, 4)), 1,
                                         "SAME", num_threads=2)
    monkeypatch.setattr(convbp.tf, "conv2d_backprop_input", spy)
    result.compute(scheduler="sync")
    assert len(seen) == result.npartitions and set(seen) == {2}


@pytest.mark.parametrize("kwargs, error, name", [
    ({"strides": 0}, ValueError, "strides"),
    ({"padding": "FULL"}, ValueError, "padding"),
    ({"input_sizes": (4, 11, 9, 3)}, ValueError, "batch"),
    ({"input_sizes": (3, 11, 9, 5)}, ValueError, "input depth"),
    ({"input_sizes": (3, 30, 9, 3)}, ValueError, "out_backprop"),
    ({"filter": np.zeros((3, 3, 3, 4), np.float32)}, TypeError, "dtype"),
    ({"num_threads": 0}, ValueError, "num_threads"),
    ({"chunks": (1, 2, 3)}, ValueError, "chunks"),
    ({"dilations": (1, 1, 1)}, ValueError, "dilations"),
])
def test_errors_are_raised_at_once(kwargs, error, name):
    dy, filt, sizes, _ = tf_problem(TF_CASES[0], "NHWC")
    args = {"input_sizes": sizes, "filter": filt, "out_backprop": da.from_array(dy, chunks=2),
            "strides": 1, "padding": "SAME"}
    args.update(kwargs)
    with pytest.raises(error, match=name):
        cdask.conv2d_backprop_input(args.pop("input_sizes"), args.pop("filter"),
                                    args.pop("out_backprop"), args.pop("strides"),
                                    args.pop("padding"), **args)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"stride": 0}, ValueError, "stride"),
    ({"output_padding": 2}, ValueError, "output_padding"),
    ({"bias": np.zeros(5)}, ValueError, "bias"),
    ({"groups": 3}, ValueError, "groups"),
    ({"padding": "same"}, TypeError, "padding"),
])
def test_conv_transpose2d_errors(kwargs, error, name):
    x = da.zeros((2, 4, 5, 5), chunks=2)
    args = {"weight": np.zeros((4, 3, 3, 3)), "stride": 2}
    args.update(kwargs)
    with pytest.raises(error, match=name):
        cdask.conv_transpose2d(x, **args)
    with pytest.raises(ValueError, match="input"):
        cdask.conv_transpose2d(da.zeros((5, 5), chunks=2), np.zeros((4, 3, 3, 3)))


def test_in_memory_operands_and_empty_axes():
    # A NumPy out_backprop (one chunk), a nested-list filter (takes out_backprop's dtype).
    dy = RNG.standard_normal((2, 3, 3, 2)).astype(np.float32)
    filt = RNG.standard_normal((2, 2, 1, 2)).tolist()
    result = cdask.conv2d_backprop_input((2, 6, 6, 1), filt, dy, 2, "VALID", chunks=(1, 2, 5, 1))
    expected = convbp.tf.conv2d_backprop_input((2, 6, 6, 1), filt, dy, 2, "VALID")
    assert_matches(result, expected, 4 * 2)
    # Empty batch, empty input width (TensorFlow: an empty output).
    empty = cdask.conv2d_backprop_input((0, 6, 6, 1), np.ones((3, 3, 1, 2)),
                                        da.zeros((0, 6, 6, 2), chunks=1), 1, "SAME")
    assert empty.compute().shape == (0, 6, 6, 1)
    narrow = cdask.conv2d_backprop_input((2, 5, 0, 1), np.ones((3, 3, 1, 2)),
                                         da.zeros((2, 3, 0, 2), chunks=2), 1, "VALID")
    assert narrow.compute().shape == (2, 5, 0, 1)


def test_unknown_chunk_sizes_are_refused():
    dy = da.ones((4, 6, 6, 2), chunks=2)
    dy = dy[dy[:, 0, 0, 0] > 0]  # unknown number of images
    with pytest.raises(ValueError, match="out_backprop must have known chunk sizes"):
        cdask.conv2d_backprop_input((4, 6, 6, 1), np.ones((3, 3, 1, 2)), dy, 1, "SAME")


def test_import_convbp_does_not_import_dask():
    code = "import sys, convbp; assert 'dask' not in sys.modules, 'dask imported'"
    subprocess.run([sys.executable, "-P", "-c", code], check=True)


def test_docstring_examples_run():
    result = doctest.testmod(cdask, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_distributed_local_cluster_with_worker_processes():
    distributed = pytest.importorskip("distributed")
    dy, filt, sizes, _ = tf_problem(((17, 12), (3, 3), (2, 2), (2, 1), "SAME"), "NCHW", n=4)
    expected = convbp.tf.conv2d_backprop_input(sizes, filt, dy, 2, "SAME", data_format="NCHW",
                                               dilations=(2, 1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        result = cdask.conv2d_backprop_input(sizes, filt, da.from_array(dy, chunks=(1, 4, 3, 4)),
                                             2, "SAME", data_format="NCHW", dilations=(2, 1))
        computed = result.compute()
        x = RNG.standard_normal(sizes)
        y, dw = dask.compute(
            cdask.conv2d(da.from_array(x, chunks=(1, 3, 5, 4)), filt, 2, "SAME",
                         data_format="NCHW", dilations=(2, 1)),
            cdask.conv2d_backprop_filter(da.from_array(x, chunks=(2, 3, 5, 4)), filt.shape,
                                         da.from_array(dy, chunks=(1, 4, 3, 4)), 2, "SAME",
                                         data_format="NCHW", dilations=(2, 1)))
        # Two single-threaded worker processes share the cores: one convbp thread a task.
        assert client.submit(cdask.task_threads, pure=False).result() == 1
    oracle.assert_close(computed, expected, np.float64, 9 * 4)
    oracle.assert_close(y, convbp.tf.conv2d(x, filt, 2, "SAME", data_format="NCHW",
                                            dilations=(2, 1)), np.float64, 9 * 3)
    oracle.assert_close(dw, convbp.tf.conv2d_backprop_filter(
        x, filt.shape, dy, 2, "SAME", data_format="NCHW", dilations=(2, 1)), np.float64,
        dy.size // dy.shape[1])


def test_example_runs_small():
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "dask_saliency.py")
    done = subprocess.run([sys.executable, "-P", example, "--small"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "equal the in-memory conv2d_backprop_input" in done.stdout


# --- conv2d and conv2d_backprop_filter -------------------------------------------------------

def x_problem(case, data_format, n=3, c=3, f=4):
    in_hw, k, s, d, padding = case
    x = to_layout(RNG.standard_normal((n,) + in_hw + (c,)), data_format)
    filt = RNG.standard_normal(k + (c, f))
    return x, filt


def logical(shape, data_format):
    return shape if data_format == "NHWC" else tuple(shape[i] for i in (0, 2, 3, 1))


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", TF_CASES, ids=str)
@pytest.mark.parametrize("chunking", ["ones", "uneven", "channels_split"])
def test_conv2d_matches_in_memory(case, data_format, chunking):
    x, filt = x_problem(case, data_format)
    in_hw, k, s, d, padding = case
    chunks = chunks_in_layout(DY_CHUNKINGS[chunking](logical(x.shape, data_format), RNG),
                              data_format)
    expected = convbp.tf.conv2d(x, filt, s, padding, data_format=data_format, dilations=d)
    result = cdask.conv2d(da.from_array(x, chunks=chunks), filt, s, padding,
                          data_format=data_format, dilations=d)
    assert_matches(result, expected, k[0] * k[1] * x.shape[3 if data_format == "NHWC" else 1])


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", TF_CASES, ids=str)
@pytest.mark.parametrize("chunking", ["ones", "uneven", "channels_split"])
def test_conv2d_backprop_filter_matches_in_memory(case, data_format, chunking):
    dy, filt, sizes, _ = tf_problem(case, data_format)
    in_hw, k, s, d, padding = case
    x = RNG.standard_normal(sizes)
    chunks = chunks_in_layout(DY_CHUNKINGS[chunking](logical(dy.shape, data_format), RNG),
                              data_format)
    expected = convbp.tf.conv2d_backprop_filter(x, filt.shape, dy, s, padding,
                                                data_format=data_format, dilations=d)
    result = cdask.conv2d_backprop_filter(da.from_array(x, chunks=2), filt.shape,
                                          da.from_array(dy, chunks=chunks), s, padding,
                                          data_format=data_format, dilations=d)
    assert result.chunks == tuple((size,) for size in filt.shape)
    assert_matches(result, expected, int(np.prod(logical(dy.shape, data_format)[:3])))


@pytest.mark.parametrize("function", ["conv2d", "conv2d_backprop_filter"])
@pytest.mark.parametrize("kwargs, name", [({"algorithm": "fft"}, "algorithm"),
                                          ({"algorithm": "winograd"}, "algorithm"),
                                          ({"strides": 0}, "strides"),
                                          ({"padding": "FULL"}, "padding")])
def test_conv2d_and_filter_errors_are_raised_at_once(function, kwargs, name):
    x = da.zeros((2, 9, 9, 3), chunks=3)
    args = {"strides": 1, "padding": "SAME"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        if function == "conv2d":
            # Winograd takes 3x3 filters only.
            cdask.conv2d(x, np.zeros((5, 5, 3, 4)), args.pop("strides"), args.pop("padding"),
                         **args)
        else:
            cdask.conv2d_backprop_filter(x, (5, 5, 3, 4), da.zeros((2, 9, 9, 4), chunks=3),
                                         args.pop("strides"), args.pop("padding"), **args)


@given(chunked_problems())
def test_hypothesis_conv2d_and_filter_gradient(problem):
    in_hw, k, s, d, padding, n, out_hw, dy_chunks, result_chunks, data_format = problem
    rng = np.random.default_rng(2)
    x = to_layout(rng.standard_normal((n,) + in_hw + (3,)), data_format)
    dy = to_layout(rng.standard_normal((n,) + out_hw + (2,)), data_format)
    filt = rng.standard_normal(k + (3, 2))
    # x chunked as drawn for the input gradient's result; conv2d's result as dy is chunked.
    x_chunks = -1 if result_chunks is None else chunks_in_layout(result_chunks, data_format)
    with dask.config.set(scheduler="sync"):
        assert_matches(cdask.conv2d(da.from_array(x, chunks=x_chunks), filt, s, padding,
                                    data_format=data_format, dilations=d,
                                    chunks=chunks_in_layout(dy_chunks[:3] + ((2,),),
                                                            data_format)),
                       convbp.tf.conv2d(x, filt, s, padding, data_format=data_format,
                                        dilations=d), k[0] * k[1] * 3)
        assert_matches(cdask.conv2d_backprop_filter(
            da.from_array(x, chunks=x_chunks), filt.shape,
            da.from_array(dy, chunks=chunks_in_layout(dy_chunks, data_format)), s, padding,
            data_format=data_format, dilations=d),
            convbp.tf.conv2d_backprop_filter(x, filt.shape, dy, s, padding,
                                             data_format=data_format, dilations=d),
            n * out_hw[0] * out_hw[1])


def test_filter_gradient_is_deterministic():
    dy, filt, sizes, _ = tf_problem(TF_CASES[1], "NHWC", n=4)
    x = RNG.standard_normal(sizes)
    dw = cdask.conv2d_backprop_filter(da.from_array(x, chunks=2), filt.shape,
                                      da.from_array(dy, chunks=(1, 2, 2, 4)), (2, 3), "SAME")
    first = dw.compute(scheduler="threads")
    np.testing.assert_array_equal(dw.compute(scheduler="sync"), first)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_conv2d_tasks_read_only_their_window(data_format):
    case = ((31, 20), (5, 3), (2, 3), (2, 1), ((4, 1), (0, 2)))
    in_hw, k, s, d, pads = case
    x, filt = x_problem(case, data_format, n=2)
    h_axis, w_axis = (1, 2) if data_format == "NHWC" else (2, 3)
    chunks = [-1] * 4
    chunks[0], chunks[h_axis] = 1, 3
    x = da.from_array(x, chunks=tuple(chunks))
    result = cdask.conv2d(x, filt, s, pads, data_format=data_format, dilations=d,
                          chunks={h_axis: 2, w_axis: 3})
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in result.chunks]
    for index, pieces in task_regions(result, x).items():
        lo = [bounds[a][i] for a, i in enumerate(index)]
        hi = [bounds[a][i + 1] for a, i in enumerate(index)]
        got = [set(), set()]
        for piece in pieces:
            for j, axis in enumerate((h_axis, w_axis)):
                got[j].update(range(*piece[axis]))
        taps = [{o * s[j] - pads[j][0] + t * d[j] for o in range(lo[axis], hi[axis])
                 for t in range(k[j])} & set(range(in_hw[j]))  # brute force
                for j, axis in enumerate((h_axis, w_axis))]
        expected = [set(range(min(t), max(t) + 1)) if all(taps) else set() for t in taps]
        assert got == expected  # the rows and columns from the first tap read to the last
    oracle.assert_close(result.compute(), convbp.tf.conv2d(
        x.compute(), filt, s, pads, data_format=data_format, dilations=d), np.float64,
        k[0] * k[1] * 3)
