"""PyTorch-convention entry points: convbp.conv2d_input and convbp.conv_transpose2d.

Every result is checked against the direct float64 loop (tests/oracle.py) and, when torch is
installed, against torch.nn.grad.conv2d_input, F.conv_transpose2d and autograd through F.conv2d.
Expected paddings are written out here from PyTorch's documented rules, independently of
convbp's geometry code; the PyTorch cross-checks confirm those rules.
"""

import doctest
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convbp
from convbp import torch as convbp_torch
from oracle import (assert_close, direct_backprop_filter, direct_backprop_input, direct_conv2d,
                    out_size, torch)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_pads(padding, kernel_hw, dilation):
    """PyTorch's padding as ((top, bottom), (left, right)): symmetric, or "same" with the odd
    extra at the end (total dilation*(k - 1)), or "valid"."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel_hw, pair(dilation))]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


def ref_conv2d_input(grad_output, weight, in_hw, stride, padding, dilation, groups):
    """Direct-loop reference in NCHW terms (weight OIHW)."""
    pads = torch_pads(padding, weight.shape[2:], dilation)
    dx = direct_backprop_input(grad_output.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0),
                               in_hw, pair(stride), pair(dilation), pads, groups)
    return dx.transpose(0, 3, 1, 2)


def ref_conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation):
    """Direct-loop reference of F.conv_transpose2d (NCHW, weight (C_in, C_out/g, KH, KW))."""
    s, p, op, d = pair(stride), pair(padding), pair(output_padding), pair(dilation)
    out_hw = tuple((i - 1) * s[a] - 2 * p[a] + d[a] * (weight.shape[2 + a] - 1) + op[a] + 1
                   for a, i in enumerate(x.shape[2:]))
    dx = direct_backprop_input(x.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0), out_hw,
                               s, d, ((p[0], p[0]), (p[1], p[1])), groups)
    if bias is not None:
        dx = dx + np.asarray(bias, np.float64)
    return dx.transpose(0, 3, 1, 2)


def channels_last(a):
    """The same NCHW values in NHWC memory: an NCHW-shaped view (numpy's torch.channels_last)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_nhwc_memory(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


# (N, C_in, H, W, C_out, KH, KW, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 8, 4, 3, 3, 1, 0, 1, 1),
    (2, 4, 9, 10, 6, 3, 2, 2, 1, 1, 2),
    (1, 6, 11, 9, 6, 3, 3, (2, 3), (1, 2), (2, 1), 3),
    (2, 4, 8, 8, 4, 4, 2, 1, "same", (1, 2), 1),  # even kernels: odd extra pad at the end
    (1, 4, 7, 7, 8, 3, 3, 1, "same", 2, 4),
    (2, 3, 6, 7, 2, 2, 3, (1, 2), "valid", 1, 1),
    (1, 6, 5, 5, 6, 1, 1, 3, 0, 1, 6),
    (1, 2, 10, 9, 3, 3, 3, 3, 2, 2, 1),  # input rows the output never reaches
]


def make_conv_case(case, dtype, seed=0):
    n, c, h, w, f, kh, kw, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    pads = torch_pads(padding, (kh, kw), dilation)
    oh, ow = out_size((h, w), (kh, kw), pair(stride), pair(dilation), pads)
    weight = rng.standard_normal((f, c // groups, kh, kw)).astype(dtype)
    grad_output = rng.standard_normal((n, f, oh, ow)).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return (n, c, h, w), weight, grad_output, kwargs


# -------------------------------------------------------------------------------------------
# conv2d_input

@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_input_matches_direct_loop(case, dtype, memory):
    size, weight, grad_output, kwargs = make_conv_case(case, dtype)
    if memory == "channels_last":
        grad_output = channels_last(grad_output)
    dx = convbp.conv2d_input(size, weight, grad_output, **kwargs)
    assert dx.shape == size and dx.dtype == dtype
    expected = ref_conv2d_input(grad_output, weight, size[2:], **kwargs)
    assert_close(dx, expected, dtype, weight.shape[0] // kwargs["groups"] * weight[0, 0].size)
    # The result has grad_output's memory format.
    assert is_nhwc_memory(dx) if memory == "channels_last" else dx.flags.c_contiguous


@needs_torch
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_input_matches_torch(case):
    size, weight, grad_output, kwargs = make_conv_case(case, np.float64, seed=1)
    dx = convbp.conv2d_input(size, weight, grad_output, **kwargs)
    # Autograd through F.conv2d, the definition of the gradient.
    x = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, torch.from_numpy(weight), **kwargs)
    assert tuple(y.shape) == grad_output.shape
    y.backward(torch.from_numpy(grad_output))
    assert_close(dx, x.grad.numpy(), np.float64, weight[:, 0].size // kwargs["groups"])
    if not isinstance(kwargs["padding"], str):  # torch's conv2d_input takes no strings
        expected = torch.nn.grad.conv2d_input(size, torch.from_numpy(weight),
                                              torch.from_numpy(grad_output), **kwargs)
        assert_close(dx, expected.numpy(), np.float64, weight[:, 0].size // kwargs["groups"])


@needs_torch
def test_conv2d_input_channels_last_tensors_match_autograd():
    # torch.channels_last tensors through autograd; convbp reads the same memory as NCHW-shaped
    # views and answers in the same memory format.
    size, weight, grad_output, kwargs = make_conv_case(CONV_CASES[2], np.float32, seed=2)
    x = torch.zeros(size).contiguous(memory_format=torch.channels_last).requires_grad_()
    dy = torch.from_numpy(grad_output).contiguous(memory_format=torch.channels_last)
    torch.nn.functional.conv2d(x, torch.from_numpy(weight), **kwargs).backward(dy)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    dy_view = dy.numpy()  # NCHW shape, NHWC memory, shares torch's buffer
    assert is_nhwc_memory(dy_view)
    dx = convbp.conv2d_input(size, weight, dy_view, **kwargs)
    assert is_nhwc_memory(dx)
    assert dx.strides == tuple(s * dx.itemsize for s in x.grad.stride())
    expected = ref_conv2d_input(grad_output, weight, size[2:], **kwargs)
    assert_close(dx, expected, np.float32, weight[:, 0].size // kwargs["groups"])
    assert_close(x.grad.numpy(), expected, np.float32, weight[:, 0].size // kwargs["groups"])


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv2d_input_every_valid_input_size(stride):
    # Every input size in [min, min + stride - 1] gives the same output size; each is accepted
    # and its extra rows/columns get zero gradient (or whatever the padding reaches).
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((3, 2, 3, 2))
    grad_output = rng.standard_normal((1, 3, 4, 3))
    min_h, min_w = (4 - 1) * stride + 2 + 1 - 2, (3 - 1) * stride + 1 + 1 - 2
    for h in range(min_h, min_h + stride):
        for w in range(min_w, min_w + stride):
            dx = convbp.conv2d_input((1, 2, h, w), weight, grad_output, stride, 1)
            expected = ref_conv2d_input(grad_output, weight, (h, w), stride, 1, 1, 1)
            assert_close(dx, expected, np.float64, 3 * 3 * 2)
            if torch is not None:
                t = torch.nn.grad.conv2d_input((1, 2, h, w), torch.from_numpy(weight),
                                               torch.from_numpy(grad_output), stride, 1)
                assert_close(dx, t.numpy(), np.float64, 3 * 3 * 2)
    for h, w in [(min_h - 1, min_w), (min_h + stride, min_w), (min_h, min_w + stride)]:
        with pytest.raises(ValueError, match=r"input_size: requested an input grad size of "
                           rf"\[{h}, {w}\], but valid sizes range from \[{min_h}, {min_w}\] "
                           rf"to \[{min_h + stride - 1}, {min_w + stride - 1}\]"):
            convbp.conv2d_input((1, 2, h, w), weight, grad_output, stride, 1)


def test_conv2d_input_accepts_hw_input_size():
    size, weight, grad_output, kwargs = make_conv_case(CONV_CASES[1], np.float64)
    expected = ref_conv2d_input(grad_output, weight, size[2:], **kwargs)
    dx = convbp.conv2d_input(size[2:], weight, grad_output, **kwargs)
    assert dx.shape == size
    assert_close(dx, expected, np.float64, weight[:, 0].size // kwargs["groups"])
    dx = convbp.conv2d_input(np.array(size), weight, grad_output, **kwargs)  # torch.Size-like
    assert_close(dx, expected, np.float64, weight[:, 0].size // kwargs["groups"])


def test_conv2d_input_reads_channels_last_grad_output_in_place():
    # An NCHW-shaped view of NHWC memory is read where it is, not copied: the call allocates
    # far less than grad_output's size (a negative-stride view, which BLAS cannot address,
    # is copied, as the contrast shows).
    rng = np.random.default_rng(4)
    dy = rng.standard_normal((32, 16, 16, 256), dtype=np.float32).transpose(0, 3, 1, 2)
    weight = rng.standard_normal((256, 4, 3, 3), dtype=np.float32)

    def peak(grad_output):
        tracemalloc.start()
        try:
            # The GEMM path, whose column buffer is 2 MiB ("auto" picks Winograd here, which
            # also reads grad_output in place but holds up to 10 MiB of tile scratch).
            convbp.conv2d_input((32, 4, 18, 18), weight, grad_output, num_threads=1,
                                algorithm="gemm")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # A copy needs all of dy.nbytes (8 MiB); in place, the call holds the result and one
    # thread's column buffer (2 MiB).
    assert peak(dy) < dy.nbytes // 2
    assert peak(dy[:, :, :, ::-1]) > dy.nbytes


def test_conv2d_input_out_strided_view():
    size, weight, grad_output, kwargs = make_conv_case(CONV_CASES[2], np.float64)
    n, c, h, w = size
    big = np.full((n, h + 2, w + 3, 2 * c), 7.0)
    out = big[:, 1:h + 1, 2:w + 2, ::2].transpose(0, 3, 1, 2)  # NCHW view of strided NHWC
    result = convbp.conv2d_input(size, weight, grad_output, **kwargs, out=out)
    assert result is out
    assert_close(out, ref_conv2d_input(grad_output, weight, (h, w), **kwargs), np.float64,
                 weight[:, 0].size // kwargs["groups"])
    untouched = np.ones(big.shape, bool)
    untouched[:, 1:h + 1, 2:w + 2, ::2] = False
    assert (big[untouched] == 7.0).all()


def test_conv2d_input_threads_bitwise_identical():
    size, weight, grad_output, kwargs = make_conv_case(CONV_CASES[7], np.float32)
    one = convbp.conv2d_input(size, weight, grad_output, **kwargs, num_threads=1)
    two = convbp.conv2d_input(size, weight, grad_output, **kwargs, num_threads=2)
    np.testing.assert_array_equal(one, two)


def test_conv2d_input_empty_batch():
    weight = np.ones((4, 3, 3, 3))
    dx = convbp.conv2d_input((0, 3, 7, 7), weight, np.ones((0, 4, 5, 5)))
    assert dx.shape == (0, 3, 7, 7)


# -------------------------------------------------------------------------------------------
# conv_transpose2d

# (N, C_in, H, W, C_out, KH, KW, stride, padding, output_padding, groups, dilation, bias)
TRANSPOSE_CASES = [
    (2, 4, 5, 6, 3, 3, 3, 1, 0, 0, 1, 1, False),
    (2, 4, 4, 5, 6, 3, 3, 2, 1, 1, 2, 1, True),
    (1, 6, 3, 4, 3, 3, 2, (2, 3), (1, 0), (1, 2), 3, (1, 2), True),
    (2, 4, 3, 3, 4, 3, 3, 1, 1, 1, 4, 2, True),  # output_padding >= stride, < dilation
    (1, 2, 4, 4, 2, 2, 2, 3, 0, 2, 1, 1, True),
    (1, 3, 2, 3, 5, 1, 1, 2, 0, 1, 1, 1, False),
    (2, 2, 3, 3, 2, 3, 3, 1, 2, 0, 1, 1, True),  # padding crops the full output
]


def make_transpose_case(case, dtype, seed=0):
    n, c_in, h, w, c_out, kh, kw, stride, padding, output_padding, groups, dilation, has_bias = \
        case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_in, c_out // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if has_bias else None
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    return x, weight, bias, kwargs


def transpose_reduction(weight, groups):
    return weight.shape[0] // groups * weight.shape[2] * weight.shape[3]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_direct_loop(case, dtype):
    x, weight, bias, kwargs = make_transpose_case(case, dtype)
    expected = ref_conv_transpose2d(x, weight, bias, **kwargs)
    y = convbp.conv_transpose2d(x, weight, bias, **kwargs)
    assert y.dtype == dtype and y.flags.c_contiguous
    assert_close(y, expected, dtype, transpose_reduction(weight, kwargs["groups"]))
    # NHWC: the same values, NHWC in and NHWC (C-ordered) out; the weight layout is unchanged.
    y = convbp.conv_transpose2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), weight, bias,
                                **kwargs, data_format="NHWC")
    assert y.flags.c_contiguous
    assert_close(y, expected.transpose(0, 2, 3, 1), dtype,
                 transpose_reduction(weight, kwargs["groups"]))
    # Unbatched (C, H, W) and (H, W, C).
    y = convbp.conv_transpose2d(x[0], weight, bias, **kwargs)
    assert_close(y, expected[0], dtype, transpose_reduction(weight, kwargs["groups"]))
    y = convbp.conv_transpose2d(np.ascontiguousarray(x[0].transpose(1, 2, 0)), weight, bias,
                                **kwargs, data_format="nhwc")
    assert y.flags.c_contiguous
    assert_close(y, expected[0].transpose(1, 2, 0), dtype,
                 transpose_reduction(weight, kwargs["groups"]))


@needs_torch
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_matches_torch(case):
    x, weight, bias, kwargs = make_transpose_case(case, np.float64, seed=5)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weight),
        None if bias is None else torch.from_numpy(bias), **kwargs).numpy()
    y = convbp.conv_transpose2d(x, weight, bias, **kwargs)
    assert y.shape == expected.shape
    assert_close(y, expected, np.float64, transpose_reduction(weight, kwargs["groups"]))


@needs_torch
def test_conv_transpose2d_is_the_input_gradient_of_conv2d():
    # F.conv_transpose2d(dy, w) is the gradient of F.conv2d(x, w) w.r.t. x (no output_padding).
    x, weight, _, kwargs = make_transpose_case(TRANSPOSE_CASES[2], np.float64, seed=6)
    kwargs["output_padding"] = 0
    y = convbp.conv_transpose2d(x, weight, **kwargs)
    xt = torch.zeros((x.shape[0],) + y.shape[1:], dtype=torch.float64, requires_grad=True)
    conv_kwargs = {k: v for k, v in kwargs.items() if k != "output_padding"}
    out = torch.nn.functional.conv2d(xt, torch.from_numpy(weight), **conv_kwargs)
    assert tuple(out.shape) == x.shape
    out.backward(torch.from_numpy(x))
    assert_close(y, xt.grad.numpy(), np.float64, transpose_reduction(weight, kwargs["groups"]))


@st.composite
def transpose_geometries(draw):
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    # Padding keeping the output non-empty.
    padding = tuple(draw(st.integers(0, max(0, ((i - 1) * s + d * (k - 1) + op) // 2)))
                    for i, s, d, k, op in zip((h, w), stride, dilation, (kh, kw),
                                              output_padding))
    return dict(shape=(draw(st.integers(1, 2)), c_in, h, w), weight=(c_in, c_out // groups, kh,
                kw), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                memory=draw(st.sampled_from(["contiguous", "channels_last"])),
                kwargs=dict(stride=stride, padding=padding, output_padding=output_padding,
                            groups=groups, dilation=dilation))


@settings(max_examples=40)
@given(transpose_geometries())
def test_conv_transpose2d_property(g):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal(g["shape"])
    weight = rng.standard_normal(g["weight"])
    bias = rng.standard_normal(g["weight"][1] * g["kwargs"]["groups"]) if g["bias"] else None
    if g["memory"] == "channels_last":
        x = channels_last(x)
    y = convbp.conv_transpose2d(x, weight, bias, **g["kwargs"])
    reduction = transpose_reduction(weight, g["kwargs"]["groups"])
    assert_close(y, ref_conv_transpose2d(x, weight, bias, **g["kwargs"]), np.float64, reduction)
    if torch is not None:
        expected = torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x), torch.from_numpy(weight),
            None if bias is None else torch.from_numpy(bias), **g["kwargs"])
        assert_close(y, expected.numpy(), np.float64, reduction)


# Input memory layouts of an NCHW-shaped (2, 3, 4, 5) array, as (name, array maker).
LAYOUTS = [
    ("nchw", lambda a: a),
    ("nhwc", channels_last),
    ("fortran", np.asfortranarray),
    ("nhwc_sliced", lambda a: np.repeat(channels_last(a), 2, axis=3)[:, :, :, ::2]),
    ("nhwc_channels_sliced", lambda a: np.ascontiguousarray(
        np.repeat(a, 2, axis=1).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)[:, ::2]),
    ("nhwc_one_channel", lambda a: channels_last(a[:, :1])),
    ("nhwc_one_pixel", lambda a: channels_last(a[:, :, :1, :1])),
    ("nhwc_one_image", lambda a: channels_last(a[:1])),
    ("nchw_one_pixel", lambda a: np.ascontiguousarray(a[:, :, :1, :1])),
]


@needs_torch
@pytest.mark.parametrize("name,make", LAYOUTS, ids=[name for name, _ in LAYOUTS])
def test_result_memory_format_follows_torch(name, make):
    # Unless out= is given, the result is laid out as PyTorch lays out F.conv_transpose2d's
    # result for an input with the same strides (weight contiguous): same element strides.
    x = make(np.random.default_rng(7).standard_normal((2, 3, 4, 5)))
    c = x.shape[1]
    weight = np.ones((c, 3, 2, 2))
    y = convbp.conv_transpose2d(x, weight, stride=2)
    t = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight),
                                             stride=2)
    assert y.strides == tuple(s * y.itemsize for s in t.stride())
    assert_close(y, t.numpy(), np.float64, c * 4)
    # conv2d_input follows grad_output the same way (PyTorch's autograd: x.grad follows x,
    # which has dy's format).
    dx = convbp.conv2d_input((x.shape[0], 3) + y.shape[2:], weight, x, stride=2)
    assert dx.strides == y.strides


def test_is_channels_last_rule():
    # PyTorch's is_channels_last_strides_2d, in bytes or elements alike.
    cl = convbp_torch.is_channels_last
    assert cl((2, 3, 4, 5), (60, 1, 15, 3)) and cl((2, 3, 4, 5), (480, 8, 120, 24))
    assert not cl((2, 3, 4, 5), (60, 20, 5, 1))
    assert not cl((2, 3, 4, 5), (60, 0, 15, 3))         # zero channel stride
    assert not cl((2, 3, 0, 5), (60, 1, 15, 3))         # empty
    assert not cl((2, 3, 4, 5), (60, -1, 15, 3))        # negative stride
    assert not cl((2, 1, 1, 1), (1, 1, 1, 1))           # N111: ambiguous -> NCHW
    assert cl((2, 3, 1, 1), (3, 1, 3, 3))               # NC11 from NHWC memory
    assert not cl((2, 3, 1, 1), (3, 1, 1, 1))           # NC11 contiguous


@needs_torch
def test_conv_transpose2d_channels_last_tensor():
    x, weight, bias, kwargs = make_transpose_case(TRANSPOSE_CASES[1], np.float32, seed=8)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv_transpose2d(xt, torch.from_numpy(weight),
                                                    torch.from_numpy(bias), **kwargs)
    assert expected.is_contiguous(memory_format=torch.channels_last)
    y = convbp.conv_transpose2d(xt.numpy(), weight, bias, **kwargs)
    assert is_nhwc_memory(y)
    assert_close(y, expected.numpy(), np.float32, transpose_reduction(weight, kwargs["groups"]))


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_conv_transpose2d_out_strided_view(data_format):
    x, weight, bias, kwargs = make_transpose_case(TRANSPOSE_CASES[1], np.float64)
    expected = ref_conv_transpose2d(x, weight, bias, **kwargs)
    if data_format == "NHWC":
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    big = np.full((3,) + tuple(2 * s for s in expected.shape[1:]), 7.0)
    out = big[1:, ::2, 1::2, ::-2]
    result = convbp.conv_transpose2d(x, weight, bias, **kwargs, data_format=data_format,
                                     out=out)
    assert result is out
    assert_close(out, expected, np.float64, transpose_reduction(weight, kwargs["groups"]))
    untouched = np.ones(big.shape, bool)
    untouched[1:, ::2, 1::2, ::-2] = False
    assert (big[untouched] == 7.0).all()


def test_conv_transpose2d_threads_bitwise_identical():
    x, weight, bias, kwargs = make_transpose_case(TRANSPOSE_CASES[2], np.float32)
    one = convbp.conv_transpose2d(x, weight, bias, **kwargs, num_threads=1)
    two = convbp.conv_transpose2d(x, weight, bias, **kwargs, num_threads=2)
    np.testing.assert_array_equal(one, two)


@needs_torch
@pytest.mark.parametrize("output_padding,stride,dilation,ok", [
    (1, 2, 1, True), (1, 1, 2, True), (2, 2, 3, True), ((1, 0), (2, 1), 1, True),
    (2, 2, 1, False), (1, 1, 1, False), (3, 1, 2, False), ((1, 0), (1, 2), 1, False),
])
def test_output_padding_rule_matches_torch(output_padding, stride, dilation, ok):
    # Smaller than either the stride or the dilation, per axis; checked against PyTorch.
    x = np.ones((1, 2, 3, 3))
    weight = np.ones((2, 1, 3, 3))
    kwargs = dict(stride=stride, output_padding=output_padding, dilation=dilation)
    if ok:
        y = convbp.conv_transpose2d(x, weight, **kwargs)
        t = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight),
                                                 **kwargs)
        assert_close(y, t.numpy(), np.float64, 2 * 9)
    else:
        with pytest.raises(RuntimeError, match="output padding must be smaller"):
            torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight),
                                                 **kwargs)
        with pytest.raises(ValueError, match="output_padding must be smaller than either "
                                             "stride or dilation"):
            convbp.conv_transpose2d(x, weight, **kwargs)


def test_docstring_examples():
    # The examples' printed results, worked out by hand (all-ones operands count taps).
    result = doctest.testmod(convbp_torch, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


# -------------------------------------------------------------------------------------------
# Errors: the exception type and the parameter's name.

W = np.ones((4, 3, 3, 3), np.float32)        # conv2d_input weight (C_out, C_in, KH, KW)
DY = np.ones((2, 4, 5, 5), np.float32)       # grad_output for input (2, 3, 7, 7)
BUF = np.ones((2, 4, 7, 7), np.float32)      # one buffer holding both grad_output and out


def _ci(**overrides):
    args = dict(input_size=(2, 3, 7, 7), weight=W, grad_output=DY)
    args.update(overrides)
    return lambda: convbp.conv2d_input(**args)


CONV2D_INPUT_ERRORS = [
    ("range", _ci(input_size=(2, 3, 8, 7)), ValueError, "input_size: requested an input grad"),
    ("range_hw", _ci(input_size=(7, 6)), ValueError, "input_size: requested an input grad"),
    ("len3", _ci(input_size=(3, 7, 7)), ValueError, "input_size"),
    ("batch", _ci(input_size=(3, 3, 7, 7)), ValueError, "input_size"),
    ("channels", _ci(input_size=(2, 6, 7, 7)), ValueError, "input_size"),
    ("float_size", _ci(input_size=(2, 3, 7.0, 7)), TypeError, "input_size"),
    ("neg_size", _ci(input_size=(2, 3, -7, 7)), ValueError, "input_size"),
    ("scalar_size", _ci(input_size=np.array(7)), ValueError, "input_size"),
    ("weight_3d", _ci(weight=W[0]), ValueError, "weight"),
    ("weight_empty", _ci(weight=W[:, :, :0]), ValueError, "weight"),
    ("weight_dtype", _ci(weight=W.astype(np.float64)), TypeError, "weight"),
    ("weight_int", _ci(weight=W.astype(np.int32)), TypeError, "weight"),
    ("grad_output_3d", _ci(grad_output=DY[0]), ValueError, "grad_output"),
    ("grad_output_channels", _ci(grad_output=DY[:, :3]), ValueError, "grad_output"),
    ("grad_output_empty", _ci(grad_output=DY[:, :, :0]), ValueError, "grad_output"),
    ("grad_output_int", _ci(grad_output=DY.astype(np.int64)), TypeError, "grad_output"),
    ("groups_divide", _ci(groups=3), ValueError, "groups"),
    ("groups_zero", _ci(groups=0), ValueError, "groups"),
    ("groups_float", _ci(groups=1.0), TypeError, "groups"),
    ("stride_zero", _ci(stride=0), ValueError, "stride"),
    ("stride_len3", _ci(stride=(1, 1, 1)), ValueError, "stride"),
    ("stride_bool", _ci(stride=True), TypeError, "stride"),
    ("padding_neg", _ci(padding=-1), ValueError, "padding"),
    ("padding_str", _ci(padding="full"), ValueError, "padding"),
    ("padding_same_strided", _ci(input_size=(2, 3, 10, 10), stride=2, padding="same"),
     ValueError, "padding='same'"),
    ("dilation_zero", _ci(dilation=0), ValueError, "dilation"),
    ("out_shape", _ci(out=np.empty((2, 3, 7, 8), np.float32)), ValueError, "out"),
    ("out_dtype", _ci(out=np.empty((2, 3, 7, 7))), TypeError, "out"),
    ("out_readonly", _ci(out=np.broadcast_to(np.float32(0), (2, 3, 7, 7))), ValueError, "out"),
    ("out_overlap", _ci(grad_output=BUF[:, :, 1:6, 1:6], out=BUF[:, :3]), ValueError,
     "out overlaps grad_output"),
    ("num_threads", _ci(num_threads=0), ValueError, "num_threads"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CONV2D_INPUT_ERRORS],
                         ids=[c[0] for c in CONV2D_INPUT_ERRORS])
def test_conv2d_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


X = np.ones((2, 4, 5, 5), np.float32)        # conv_transpose2d input
WT = np.ones((4, 3, 3, 3), np.float32)       # (C_in, C_out/groups, KH, KW)


def _ct(**overrides):
    args = dict(input=X, weight=WT)
    args.update(overrides)
    return lambda: convbp.conv_transpose2d(**args)


CONV_TRANSPOSE_ERRORS = [
    ("input_2d", _ct(input=X[0, 0]), ValueError, "input"),
    ("input_5d", _ct(input=X[None]), ValueError, "input"),
    ("input_channels", _ct(input=X[:, :3]), ValueError, "input"),
    ("input_nhwc_channels", _ct(data_format="NHWC"), ValueError, "input"),
    ("input_dtype", _ct(input=X.astype(np.float64)), TypeError, "input"),
    ("input_complex", _ct(input=X.astype(np.complex64)), TypeError, "input"),
    ("weight_3d", _ct(weight=WT[0]), ValueError, "weight"),
    ("weight_empty", _ct(weight=WT[:, :, :, :0]), ValueError, "weight"),
    ("groups_divide", _ct(groups=3), ValueError, "groups"),
    ("groups_zero", _ct(groups=0), ValueError, "groups"),
    ("output_padding_stride", _ct(stride=2, output_padding=2), ValueError, "output_padding"),
    ("output_padding_axis", _ct(stride=(1, 2), output_padding=(1, 0)), ValueError,
     "output_padding"),
    ("output_padding_neg", _ct(stride=2, output_padding=-1), ValueError, "output_padding"),
    ("padding_same", _ct(padding="same"), TypeError, "padding"),
    ("padding_neg", _ct(padding=-1), ValueError, "padding"),
    ("padding_too_large", _ct(input=X[:, :, :1, :1], padding=2), ValueError,
     "padding .* too large"),
    ("stride_zero", _ct(stride=0), ValueError, "stride"),
    ("stride_len3", _ct(stride=[2, 2, 2]), ValueError, "stride"),
    ("dilation_zero", _ct(dilation=0), ValueError, "dilation"),
    ("bias_shape", _ct(bias=np.ones(4, np.float32)), ValueError, "bias"),
    ("bias_2d", _ct(bias=np.ones((3, 1), np.float32)), ValueError, "bias"),
    ("bias_dtype", _ct(bias=np.ones(3)), TypeError, "bias"),
    ("data_format", _ct(data_format="NCWH"), ValueError, "data_format"),
    ("out_shape", _ct(out=np.empty((2, 7, 7, 3), np.float32)), ValueError, "out"),
    ("out_dtype", _ct(out=np.empty((2, 3, 7, 7), np.float16)), TypeError, "out"),
    ("num_threads", _ct(num_threads=-1), ValueError, "num_threads"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CONV_TRANSPOSE_ERRORS],
                         ids=[c[0] for c in CONV_TRANSPOSE_ERRORS])
def test_conv_transpose2d_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_conv_transpose2d_out_overlapping_input():
    buf = np.ones((2, 4, 7, 7), np.float32)
    with pytest.raises(ValueError, match="out overlaps input"):
        convbp.conv_transpose2d(buf[:, :, 1:6, 1:6], WT, out=buf[:, :3])


# -------------------------------------------------------------------------------------------
# conv2d and conv2d_weight

def ref_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """Direct-loop reference of F.conv2d (NCHW, weight OIHW)."""
    pads = torch_pads(padding, weight.shape[2:], dilation)
    out_hw = out_size(x.shape[2:], weight.shape[2:], pair(stride), pair(dilation), pads)
    y = direct_conv2d(x.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0), out_hw,
                      pair(stride), pair(dilation), pads, groups)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y.transpose(0, 3, 1, 2)


def ref_conv2d_weight(x, weight_shape, grad_output, stride, padding, dilation, groups):
    """Direct-loop reference of torch.nn.grad.conv2d_weight (OIHW result)."""
    pads = torch_pads(padding, weight_shape[2:], dilation)
    hwio = (weight_shape[2], weight_shape[3], weight_shape[1], weight_shape[0])
    dw = direct_backprop_filter(x.transpose(0, 2, 3, 1), grad_output.transpose(0, 2, 3, 1),
                                hwio[:2], pair(stride), pair(dilation), pads, groups)
    return dw.transpose(3, 2, 0, 1)


def make_forward_case(case, dtype, seed=0):
    (n, c, h, w), weight, grad_output, kwargs = make_conv_case(case, dtype, seed)
    rng = np.random.default_rng(seed + 100)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    bias = rng.standard_normal(weight.shape[0]).astype(dtype)
    return x, weight, bias, grad_output, kwargs


def forward_reduction(weight):
    return weight[0].size


@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_direct_loop(case, dtype, memory):
    x, weight, bias, _, kwargs = make_forward_case(case, dtype)
    if memory == "channels_last":
        x = channels_last(x)
    y = convbp_torch.conv2d(x, weight, bias, **kwargs)
    assert y.dtype == dtype
    assert_close(y, ref_conv2d(x, weight, bias, **kwargs), dtype, forward_reduction(weight))
    assert is_nhwc_memory(y) if memory == "channels_last" else y.flags.c_contiguous


@needs_torch
@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(case, memory):
    x, weight, bias, _, kwargs = make_forward_case(case, np.float64, seed=11)
    xt = torch.from_numpy(x)
    if memory == "channels_last":
        x = channels_last(x)
        xt = xt.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv2d(xt, torch.from_numpy(weight), torch.from_numpy(bias),
                                          **kwargs)
    y = convbp_torch.conv2d(x, weight, bias, **kwargs)
    assert y.strides == tuple(s * y.itemsize for s in expected.stride())
    assert_close(y, expected.numpy(), np.float64, forward_reduction(weight))


def test_conv2d_nhwc_unbatched_and_out():
    x, weight, bias, _, kwargs = make_forward_case(CONV_CASES[2], np.float64, seed=12)
    expected = ref_conv2d(x, weight, bias, **kwargs)
    y = convbp_torch.conv2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), weight, bias,
                            **kwargs, data_format="NHWC")
    assert y.flags.c_contiguous
    assert_close(y, expected.transpose(0, 2, 3, 1), np.float64, forward_reduction(weight))
    y = convbp_torch.conv2d(x[0], weight, bias, **kwargs)
    assert_close(y, expected[0], np.float64, forward_reduction(weight))
    big = np.full((2,) + tuple(2 * s for s in expected.shape[1:]), 7.0)
    out = big[1:, ::2, 1::2, ::-2]
    assert convbp_torch.conv2d(x[:1], weight, bias, **kwargs, out=out) is out
    assert_close(out, expected[:1], np.float64, forward_reduction(weight))
    untouched = np.ones(big.shape, bool)
    untouched[1:, ::2, 1::2, ::-2] = False
    assert (big[untouched] == 7.0).all()


@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_weight_matches_direct_loop(case, dtype, memory):
    x, weight, _, grad_output, kwargs = make_forward_case(case, dtype, seed=13)
    if memory == "channels_last":
        x = channels_last(x)
    dw = convbp_torch.conv2d_weight(x, weight.shape, grad_output, **kwargs)
    assert dw.shape == weight.shape and dw.dtype == dtype
    expected = ref_conv2d_weight(x, weight.shape, grad_output, **kwargs)
    assert_close(dw, expected, dtype, grad_output[:, 0].size)
    # PyTorch's CPU kernel gives the weight gradient in the input's memory format.
    assert is_nhwc_memory(dw) if memory == "channels_last" else dw.flags.c_contiguous


@needs_torch
@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_weight_matches_torch(case, memory):
    x, weight, _, grad_output, kwargs = make_forward_case(case, np.float64, seed=14)
    xt = torch.from_numpy(x).requires_grad_(False)
    if memory == "channels_last":
        x = channels_last(x)
        xt = xt.contiguous(memory_format=torch.channels_last)
    # Autograd through F.conv2d, the definition (torch's conv2d_weight takes no strings).
    wt = torch.from_numpy(weight).clone().requires_grad_()
    torch.nn.functional.conv2d(xt, wt, **kwargs).backward(torch.from_numpy(grad_output))
    dw = convbp_torch.conv2d_weight(x, weight.shape, grad_output, **kwargs)
    assert_close(dw, wt.grad.numpy(), np.float64, grad_output[:, 0].size)
    if not isinstance(kwargs["padding"], str):
        expected = torch.nn.grad.conv2d_weight(xt, weight.shape, torch.from_numpy(grad_output),
                                               **kwargs)
        assert dw.strides == tuple(s * dw.itemsize for s in expected.stride())
        assert_close(dw, expected.numpy(), np.float64, grad_output[:, 0].size)


def test_conv2d_weight_out_strided_view():
    x, weight, _, grad_output, kwargs = make_forward_case(CONV_CASES[2], np.float64, seed=17)
    big = np.full((weight.shape[0], 2 * weight.shape[1], weight.shape[2] + 1, weight.shape[3]),
                  7.0)
    out = big[::-1, ::2, 1:]
    assert convbp_torch.conv2d_weight(x, weight.shape, grad_output, **kwargs, out=out) is out
    assert_close(out, ref_conv2d_weight(x, weight.shape, grad_output, **kwargs), np.float64,
                 grad_output[:, 0].size)
    untouched = np.ones(big.shape, bool)
    untouched[::-1, ::2, 1:] = False
    assert (big[untouched] == 7.0).all()


@st.composite
def conv_geometries(draw):
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    # An input at least as large as the dilated kernel, less the padding.
    h = max(1, (kh - 1) * dilation[0] + 1 - 2 * padding[0]) + draw(st.integers(0, 4))
    w = max(1, (kw - 1) * dilation[1] + 1 - 2 * padding[1]) + draw(st.integers(0, 4))
    return dict(shape=(draw(st.integers(1, 2)), c_in, h, w), weight=(c_out, c_in // groups, kh,
                kw), seed=draw(st.integers(0, 2**16)),
                memory=draw(st.sampled_from(["contiguous", "channels_last"])),
                kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@settings(max_examples=40)
@given(conv_geometries())
def test_conv2d_and_weight_gradient_property(g):
    # Each against the direct loop, and the adjoint identity
    # <conv2d(x, w), dy> = <x, conv2d_input(dy)> = <w, conv2d_weight(x, dy)>.
    rng = np.random.default_rng(g["seed"])
    x, weight = rng.standard_normal(g["shape"]), rng.standard_normal(g["weight"])
    if g["memory"] == "channels_last":
        x = channels_last(x)
    y = convbp_torch.conv2d(x, weight, **g["kwargs"])
    assert_close(y, ref_conv2d(x, weight, None, **g["kwargs"]), np.float64, weight[0].size)
    dy = rng.standard_normal(y.shape)
    dw = convbp_torch.conv2d_weight(x, weight.shape, dy, **g["kwargs"])
    assert_close(dw, ref_conv2d_weight(x, weight.shape, dy, **g["kwargs"]), np.float64,
                 dy[:, 0].size)
    dx = convbp_torch.conv2d_input(x.shape, weight, dy, **g["kwargs"])
    ref = np.vdot(y, dy)
    scale = np.abs(y).sum() * np.abs(dy).max() + 1e-300
    assert abs(np.vdot(weight, dw) - ref) <= 1e-12 * scale
    assert abs(np.vdot(x, dx) - ref) <= 1e-12 * scale


# -------------------------------------------------------------------------------------------
# 1-D: conv1d, conv1d_input, conv1d_weight, conv_transpose1d

# (N, C_in, L, C_out, K, stride, padding, dilation, groups)
CASES_1D = [
    (2, 3, 11, 4, 3, 1, 1, 1, 1),
    (1, 4, 12, 6, 4, 3, 0, 1, 2),
    (2, 2, 9, 2, 2, 1, "same", 3, 1),
    (1, 6, 10, 3, 3, 2, 2, 2, 3),
]


def make_1d_case(case, dtype=np.float64, seed=0):
    n, c, length, f, k, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    pads = torch_pads(padding if isinstance(padding, str) else (0, padding), (1, k),
                      (1, dilation))
    (out_len,) = out_size((length,), (k,), (stride,), (dilation,), (pads[1],))
    x = rng.standard_normal((n, c, length)).astype(dtype)
    weight = rng.standard_normal((f, c // groups, k)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    grad_output = rng.standard_normal((n, f, out_len)).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    geo = dict(strides=(1, stride), dilations=(1, dilation), pads=pads, groups=groups)
    return x, weight, bias, grad_output, kwargs, geo


def nhwc_1d(a):
    return a[:, :, None, :].transpose(0, 2, 3, 1)  # (N, C, L) -> (N, 1, L, C)


def ncl(a):
    return a[:, 0].transpose(0, 2, 1)  # (N, 1, L, C) -> (N, C, L)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES_1D)
def test_conv1d_family_matches_direct_loop(case, dtype):
    x, weight, bias, dy, kwargs, geo = make_1d_case(case, dtype)
    hwio = weight[:, :, None, :].transpose(2, 3, 1, 0)
    y = convbp_torch.conv1d(x, weight, bias, **kwargs)
    assert y.flags.c_contiguous
    expected = ncl(direct_conv2d(nhwc_1d(x), hwio, (1, dy.shape[2]), **geo)) + bias[:, None]
    assert_close(y, expected, dtype, weight[0].size)
    assert_close(convbp_torch.conv1d(x[0], weight, bias, **kwargs), expected[0], dtype,
                 weight[0].size)  # unbatched
    dx = convbp_torch.conv1d_input(x.shape, weight, dy, **kwargs)
    expected = ncl(direct_backprop_input(nhwc_1d(dy), hwio, (1, x.shape[2]), **geo))
    assert_close(dx, expected, dtype, weight[:, 0].size)
    dx = convbp_torch.conv1d_input(x.shape[2:], weight, dy, **kwargs)  # (L,), as (H, W) in 2-D
    assert_close(dx, expected, dtype, weight[:, 0].size)
    dw = convbp_torch.conv1d_weight(x, weight.shape, dy, **kwargs)
    expected = direct_backprop_filter(nhwc_1d(x), nhwc_1d(dy), hwio.shape[:2], **geo)
    assert_close(dw, expected.transpose(3, 2, 0, 1)[:, :, 0], dtype, dy[:, 0].size)


@needs_torch
@pytest.mark.parametrize("case", CASES_1D)
def test_conv1d_family_matches_torch(case):
    x, weight, bias, dy, kwargs, _ = make_1d_case(case, seed=1)
    tx, tw, tb, tdy = map(torch.from_numpy, (x, weight, bias, dy))
    expected = torch.nn.functional.conv1d(tx, tw, tb, **kwargs)
    y = convbp_torch.conv1d(x, weight, bias, **kwargs)
    assert y.strides == tuple(s * y.itemsize for s in expected.stride())
    assert_close(y, expected.numpy(), np.float64, weight[0].size)
    # Autograd through F.conv1d for both gradients (torch.nn.grad takes no string padding).
    txg, twg = tx.clone().requires_grad_(), tw.clone().requires_grad_()
    torch.nn.functional.conv1d(txg, twg, **kwargs).backward(tdy)
    assert_close(convbp_torch.conv1d_input(x.shape, weight, dy, **kwargs), txg.grad.numpy(),
                 np.float64, weight[:, 0].size)
    assert_close(convbp_torch.conv1d_weight(x, weight.shape, dy, **kwargs), twg.grad.numpy(),
                 np.float64, dy[:, 0].size)
    if not isinstance(kwargs["padding"], str):
        assert_close(convbp_torch.conv1d_input(x.shape, weight, dy, **kwargs),
                     torch.nn.grad.conv1d_input(x.shape, tw, tdy, **kwargs).numpy(),
                     np.float64, weight[:, 0].size)
        assert_close(convbp_torch.conv1d_weight(x, weight.shape, dy, **kwargs),
                     torch.nn.grad.conv1d_weight(tx, weight.shape, tdy, **kwargs).numpy(),
                     np.float64, dy[:, 0].size)


# (N, C_in, L, C_out, K, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES_1D = [
    (2, 4, 5, 3, 3, 1, 0, 0, 1, 1),
    (1, 4, 6, 6, 4, 2, 1, 1, 2, 1),
    (2, 3, 4, 3, 3, 3, 2, 1, 3, 2),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES_1D)
def test_conv_transpose1d(case):
    n, c_in, length, c_out, k, stride, padding, output_padding, groups, dilation = case
    rng = np.random.default_rng(15)
    x = rng.standard_normal((n, c_in, length))
    weight = rng.standard_normal((c_in, c_out // groups, k))
    bias = rng.standard_normal(c_out)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    y = convbp_torch.conv_transpose1d(x, weight, bias, **kwargs)
    expected = ref_conv_transpose2d(x[:, :, None], weight[:, :, None], bias, (1, stride),
                                    (0, padding), (0, output_padding), groups,
                                    (1, dilation))[:, :, 0]
    assert_close(y, expected, np.float64, c_in // groups * k)
    assert_close(convbp_torch.conv_transpose1d(x[0], weight, bias, **kwargs), expected[0],
                 np.float64, c_in // groups * k)
    out = np.full(expected.shape, 7.0)
    assert convbp_torch.conv_transpose1d(x, weight, bias, **kwargs, out=out) is out
    assert_close(out, expected, np.float64, c_in // groups * k)
    if torch is not None:
        t = torch.nn.functional.conv_transpose1d(torch.from_numpy(x), torch.from_numpy(weight),
                                                 torch.from_numpy(bias), **kwargs)
        assert_close(y, t.numpy(), np.float64, c_in // groups * k)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose1d_audio(dtype):
    # A vocoder-style upsampling layer: 1026 channels, kernel 1024, stride 256.
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 1026, 224)).astype(dtype)
    weight = rng.standard_normal((1026, 1, 1024)).astype(dtype)
    y = convbp_torch.conv_transpose1d(x, weight, stride=256)
    assert y.shape == (1, 1, 223 * 256 + 1024)
    expected = torch.nn.functional.conv_transpose1d(
        torch.from_numpy(x.astype(np.float64)), torch.from_numpy(weight.astype(np.float64)),
        stride=256)
    assert_close(y, expected.numpy(), dtype, 1026 * 1024 // 256)


# -------------------------------------------------------------------------------------------
# Every entry point: threads, algorithm

W1 = np.ones((4, 3, 3), np.float32)
TORCH_ENTRY_POINTS = {
    "conv2d": lambda **k: convbp_torch.conv2d(np.ones((2, 3, 7, 7)), np.ones((4, 3, 3, 3)),
                                              **k),
    "conv2d_input": lambda **k: convbp_torch.conv2d_input((2, 3, 7, 7), np.ones((4, 3, 3, 3)),
                                                          np.ones((2, 4, 5, 5)), **k),
    "conv2d_weight": lambda **k: convbp_torch.conv2d_weight(np.ones((2, 3, 7, 7)), (4, 3, 3, 3),
                                                            np.ones((2, 4, 5, 5)), **k),
    "conv_transpose2d": lambda **k: convbp_torch.conv_transpose2d(
        np.ones((2, 4, 5, 5)), np.ones((4, 3, 3, 3)), **k),
    "conv1d": lambda **k: convbp_torch.conv1d(np.ones((2, 3, 7)), np.ones((4, 3, 3)), **k),
    "conv1d_input": lambda **k: convbp_torch.conv1d_input((2, 3, 7), np.ones((4, 3, 3)),
                                                          np.ones((2, 4, 5)), **k),
    "conv1d_weight": lambda **k: convbp_torch.conv1d_weight(np.ones((2, 3, 7)), (4, 3, 3),
                                                            np.ones((2, 4, 5)), **k),
    "conv_transpose1d": lambda **k: convbp_torch.conv_transpose1d(
        np.ones((2, 4, 5)), np.ones((4, 3, 3)), **k),
}


@pytest.mark.parametrize("name", TORCH_ENTRY_POINTS)
def test_threads_and_algorithm(name):
    call = TORCH_ENTRY_POINTS[name]
    reference = call()
    for threads in (1, 2):  # bitwise the same for any thread count
        np.testing.assert_array_equal(call(num_threads=threads), reference)
    for algorithm in ("Auto", "gemm"):  # each algorithm rounds its own way
        assert_close(call(algorithm=algorithm), reference, np.float64, 3 * 3 * 4)
    with pytest.raises(ValueError, match="algorithm"):
        call(algorithm="direct")
    with pytest.raises(TypeError, match="num_threads"):
        call(num_threads=1.0)


# -------------------------------------------------------------------------------------------
# Errors of the new entry points

XF = np.ones((2, 3, 7, 7), np.float32)       # conv2d input
WF = np.ones((4, 3, 3, 3), np.float32)       # (C_out, C_in, KH, KW)


def _c2(**overrides):
    args = dict(input=XF, weight=WF)
    args.update(overrides)
    return lambda: convbp_torch.conv2d(**args)


def _cw(**overrides):
    args = dict(input=XF, weight_size=(4, 3, 3, 3), grad_output=DY)
    args.update(overrides)
    return lambda: convbp_torch.conv2d_weight(**args)


def _c1(fn, *args, **kwargs):
    return lambda: fn(*args, **kwargs)


NEW_ERRORS = [
    # conv2d
    ("c2-input-2d", _c2(input=XF[0, 0]), ValueError, "input"),
    ("c2-input-5d", _c2(input=XF[None]), ValueError, "input"),
    ("c2-input-channels", _c2(input=XF[:, :2]), ValueError, "input.*3 channels"),
    ("c2-input-empty-spatial", _c2(input=XF[:, :, :0]), ValueError, "input"),
    ("c2-input-dtype", _c2(input=XF.astype(np.float64)), TypeError, "input"),
    ("c2-input-too-small", _c2(input=XF[:, :, :2, :2]), ValueError,
     "Kernel size can't be greater than actual input size"),
    ("c2-weight-3d", _c2(weight=WF[0]), ValueError, "weight"),
    ("c2-weight-empty", _c2(weight=WF[..., :0]), ValueError, "weight"),
    ("c2-weight-int", _c2(weight=WF.astype(int)), TypeError, "weight"),
    ("c2-bias-shape", _c2(bias=np.ones(3, np.float32)), ValueError, "bias"),
    ("c2-bias-dtype", _c2(bias=np.ones(4)), TypeError, "bias"),
    ("c2-groups", _c2(groups=2), ValueError, "groups"),
    ("c2-groups-zero", _c2(groups=0), ValueError, "groups"),
    ("c2-stride", _c2(stride=(1, 1, 1)), ValueError, "stride"),
    ("c2-stride-zero", _c2(stride=0), ValueError, "stride"),
    ("c2-padding", _c2(padding="full"), ValueError, "padding"),
    ("c2-padding-neg", _c2(padding=(1, -1)), ValueError, "padding"),
    ("c2-padding-same-strided", _c2(padding="same", stride=2), ValueError, "padding='same'"),
    ("c2-dilation", _c2(dilation=-1), ValueError, "dilation"),
    ("c2-data_format", _c2(data_format="NCWH"), ValueError, "data_format"),
    ("c2-out-shape", _c2(out=np.empty((2, 4, 5, 6), np.float32)), ValueError, "out"),
    ("c2-out-dtype", _c2(out=np.empty((2, 4, 5, 5))), TypeError, "out"),
    ("c2-out-overlap", _c2(input=BUF[:, :3], weight=WF, out=BUF[:, :, 1:6, 1:6]), ValueError,
     "out overlaps input"),
    ("c2-num_threads", _c2(num_threads=0), ValueError, "num_threads"),
    ("c2-algorithm", _c2(algorithm=None), ValueError, "algorithm"),
    # conv2d_weight
    ("cw-weight_size-len", _cw(weight_size=(4, 3, 3)), ValueError, "weight_size"),
    ("cw-weight_size-float", _cw(weight_size=(4, 3, 3.0, 3)), TypeError, "weight_size"),
    ("cw-weight_size-0d", _cw(weight_size=np.array(4)), ValueError, "weight_size"),
    ("cw-weight_size-channels", _cw(weight_size=(4, 2, 3, 3)), ValueError, "input"),
    ("cw-weight_size-groups", _cw(weight_size=(4, 1, 3, 3), groups=3), ValueError, "groups"),
    ("cw-weight_size-kernel", _cw(weight_size=(4, 3, 0, 3)), ValueError, "weight_size"),
    ("cw-grad_output-shape", _cw(grad_output=DY[:, :, 1:]), ValueError, "grad_output"),
    ("cw-grad_output-channels", _cw(grad_output=DY[:, :3]), ValueError, "grad_output"),
    ("cw-grad_output-3d", _cw(grad_output=DY[0]), ValueError, "grad_output"),
    ("cw-grad_output-batch", _cw(grad_output=DY[:1]), ValueError, "grad_output"),
    ("cw-input-3d", _cw(input=XF[0]), ValueError, "input"),
    ("cw-dtype", _cw(grad_output=DY.astype(np.float16)), TypeError, "dtype"),
    ("cw-padding", _cw(padding="bogus"), ValueError, "padding"),
    ("cw-out-shape", _cw(out=np.empty((3, 4, 3, 3), np.float32)), ValueError, "out"),
    ("cw-algorithm", _cw(algorithm="gemm2"), ValueError, "algorithm"),
    # 1-D
    ("c1-input-4d", _c1(convbp_torch.conv1d, XF, W1), ValueError, "input"),
    ("c1-weight-4d", _c1(convbp_torch.conv1d, XF[:, :, 0], WF), ValueError, "weight"),
    ("c1-stride-pair", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, stride=(1, 1)), ValueError,
     "stride"),
    ("c1-padding-pair", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, padding=(1, 1)), ValueError,
     "padding"),
    ("c1-padding-str", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, padding="full"), ValueError,
     "padding"),
    ("c1-dilation", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, dilation=[0]), ValueError,
     "dilation"),
    ("c1-bias", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, np.ones(5, np.float32)), ValueError,
     "bias"),
    ("c1-out", _c1(convbp_torch.conv1d, XF[:, :, 0], W1, out=np.empty((2, 4, 1, 5),
                                                                      np.float32)),
     ValueError, "out"),
    ("c1i-input_size-len", _c1(convbp_torch.conv1d_input, (2, 3, 7, 7), W1, DY[:, :, 0]),
     ValueError, "input_size"),
    ("c1i-input_size-range", _c1(convbp_torch.conv1d_input, (2, 3, 9), W1, DY[:, :, 0]),
     ValueError, "input_size: requested an input grad size"),
    ("c1i-grad_output-2d", _c1(convbp_torch.conv1d_input, (2, 3, 7), W1, DY[0, 0]),
     ValueError, "grad_output"),
    ("c1w-weight_size-len", _c1(convbp_torch.conv1d_weight, XF[:, :, 0], (4, 3, 1, 3),
                                DY[:, :, 0]), ValueError, "weight_size"),
    ("c1w-grad_output-length", _c1(convbp_torch.conv1d_weight, XF[:, :, 0], (4, 3, 3),
                                   DY[:, :, 0, :4]), ValueError, "grad_output"),
    ("c1t-padding-str", _c1(convbp_torch.conv_transpose1d, DY[:, :, 0], W1, padding="same"),
     TypeError, "padding"),
    ("c1t-output_padding", _c1(convbp_torch.conv_transpose1d, DY[:, :, 0], W1,
                               output_padding=1), ValueError, "output_padding"),
    ("c1t-output_padding-pair", _c1(convbp_torch.conv_transpose1d, DY[:, :, 0], W1, stride=2,
                                    output_padding=(1, 1)), ValueError, "output_padding"),
    ("c1t-input-channels", _c1(convbp_torch.conv_transpose1d, DY[:, :3, 0], W1), ValueError,
     "input"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in NEW_ERRORS],
                         ids=[c[0] for c in NEW_ERRORS])
def test_new_entry_point_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
