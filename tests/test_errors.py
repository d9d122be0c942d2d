"""Every malformed call raises ValueError or TypeError naming the offending argument.

The kernels run with bounds checks off, so these checks in the Python front are the only guard.
Each case starts from one valid call (checked against the direct loop) and breaks one argument.
"""

import numpy as np
import pytest

import convbp
from oracle import assert_close, direct_backprop_input, tf_same_pads

RNG = np.random.default_rng(3)
FILT = RNG.standard_normal((3, 3, 2, 4)).astype(np.float32)  # HWIO
DY = RNG.standard_normal((1, 5, 5, 4)).astype(np.float32)    # NHWC, SAME, stride 1
SIZES = (1, 5, 5, 2)
BIG = 2**62


def base(**changes):
    kwargs = dict(input_sizes=SIZES, filter=FILT, out_backprop=DY, strides=1, padding="SAME")
    kwargs.update(changes)
    return kwargs


def call(kwargs):
    kwargs = dict(kwargs)
    args = [kwargs.pop(k) for k in ("input_sizes", "filter", "out_backprop", "strides",
                                    "padding")]
    return convbp.conv2d_backprop_input(*args, **kwargs)


def test_base_call_is_valid():
    pads = tf_same_pads((5, 5), (3, 3), (1, 1), (1, 1))
    expected = direct_backprop_input(DY, FILT, (5, 5), pads=pads)
    assert_close(call(base()), expected, np.float32, 4 * 9)


def _read_only():
    out = np.empty(SIZES, np.float32)
    out.flags.writeable = False
    return out


def _overlapping_out():
    buf = np.zeros(400, np.float32)
    dy = buf[:100].reshape(DY.shape)
    dy[...] = DY
    return base(out_backprop=dy, out=buf[50:100].reshape(SIZES))


def _self_overlapping_out():
    return np.lib.stride_tricks.as_strided(np.zeros(2, np.float32), SIZES, (0, 0, 0, 4),
                                           writeable=True)


def _unaligned_out():
    buf = np.zeros(4 * 50 + 1, np.uint8)
    return np.frombuffer(buf.data, np.float32, 50, offset=1).reshape(SIZES)


def _big_endian_out():
    return np.empty(SIZES, ">f4")


CASES = [
    # input_sizes
    ("is-len1", base(input_sizes=[5]), ValueError, "input_sizes"),
    ("is-len3", base(input_sizes=[1, 5, 5]), ValueError, "input_sizes"),
    ("is-len13", base(input_sizes=list(range(13))), ValueError, "input_sizes"),
    ("is-len0", base(input_sizes=[]), ValueError, "input_sizes"),
    ("is-len-huge", base(input_sizes=range(10**12)), ValueError, "input_sizes"),
    ("is-0d", base(input_sizes=np.array(5)), ValueError, "input_sizes"),
    ("is-2d", base(input_sizes=np.ones((2, 2), int)), ValueError, "input_sizes"),
    ("is-int", base(input_sizes=5), TypeError, "input_sizes"),
    ("is-negative", base(input_sizes=[1, -5, 5, 2]), ValueError, "input_sizes"),
    ("is-float", base(input_sizes=[1, 5.0, 5, 2]), TypeError, "input_sizes"),
    ("is-float-array", base(input_sizes=np.array([1., 5., 5., 2.])), TypeError, "input_sizes"),
    ("is-bool", base(input_sizes=[True, 5, 5, 2]), TypeError, "input_sizes"),
    ("is-None", base(input_sizes=None), TypeError, "input_sizes"),
    ("is-str", base(input_sizes="1552"), TypeError, "input_sizes"),
    ("is-None-item", base(input_sizes=[1, None, 5, 2]), TypeError, "input_sizes"),
    ("is-2**62", base(input_sizes=[1, 2**62, 5, 2]), ValueError, "input_sizes"),
    ("is-2**64", base(input_sizes=np.array([1, 2**64 - 1, 5, 2], np.uint64)), ValueError,
     "input_sizes"),
    ("is-product-overflows-int64", base(input_sizes=[2**31 - 1] * 4), ValueError,
     "input_sizes"),
    ("is-product-exceeds-memory", base(input_sizes=[1, 2**20, 2**20, 2], strides=2**20,
                                       out_backprop=DY[:, :1, :1]), ValueError, "input_sizes"),
    ("is-2-ints-wrong", base(input_sizes=[4, 5]), ValueError, "out_backprop"),
    # filter
    ("filter-None", base(filter=None), TypeError, "filter"),
    ("filter-scalar", base(filter=1.0), ValueError, "filter"),
    ("filter-0d-array", base(filter=np.float32(1)), ValueError, "filter"),
    ("filter-rank3", base(filter=FILT[0]), ValueError, "filter"),
    ("filter-rank5", base(filter=FILT[None]), ValueError, "filter"),
    ("filter-zero-height", base(filter=FILT[:0]), ValueError, "filter"),
    ("filter-zero-width", base(filter=FILT[:, :0]), ValueError, "filter"),
    ("filter-cin-not-divisor", base(input_sizes=(1, 5, 5, 3)), ValueError, "filter"),
    ("filter-cin-larger", base(input_sizes=(1, 5, 5, 1)), ValueError, "filter"),
    ("filter-cin0-input-depth3", base(input_sizes=(1, 5, 5, 3), filter=FILT[:, :, :0]),
     ValueError, "filter"),
    ("filter-input-depth0", base(input_sizes=(1, 5, 5, 0)), ValueError, "filter"),
    ("filter-groups-cout", base(input_sizes=(1, 5, 5, 6)), ValueError, "filter"),
    ("filter-huge-broadcast", base(filter=np.broadcast_to(np.float32(1), (3, 3, 2, 2**40)),
                                   out_backprop=np.broadcast_to(np.float32(1), (1, 5, 5, 2**40))),
     ValueError, "filter"),
    ("filter-huge-kernel", base(filter=np.empty((2**40, 1, 2, 0), np.float32),
                                out_backprop=DY[..., :0]), ValueError, "filter"),
    ("filter-strings", base(filter=[[[["a"]]]]), TypeError, "filter"),
    ("filter-ragged", base(filter=[[1.0], [1.0, 2.0]], out_backprop=DY.tolist()), TypeError,
     "filter"),
    ("filter-dict", base(filter={"a": 1}), TypeError, "filter"),
    # out_backprop
    ("dy-None", base(out_backprop=None), TypeError, "out_backprop"),
    ("dy-scalar", base(out_backprop=np.float32(1)), ValueError, "out_backprop"),
    ("dy-rank3", base(out_backprop=DY[0]), ValueError, "out_backprop"),
    ("dy-rank5", base(out_backprop=DY[None]), ValueError, "out_backprop"),
    ("dy-batch", base(out_backprop=np.zeros((2, 5, 5, 4), np.float32)), ValueError,
     "out_backprop.*actual = 2, computed = 1"),
    ("dy-batch-empty", base(out_backprop=np.zeros((0, 5, 5, 4), np.float32)), ValueError,
     "out_backprop.*actual = 0, computed = 1"),
    ("dy-channels", base(out_backprop=np.zeros((1, 5, 5, 3), np.float32)), ValueError,
     "out_backprop.*actual = 3, computed = 4"),
    ("dy-height", base(out_backprop=np.zeros((1, 4, 5, 4), np.float32)), ValueError,
     "out_backprop.*actual = 4, computed = 5"),
    ("dy-width", base(out_backprop=np.zeros((1, 5, 6, 4), np.float32)), ValueError,
     "out_backprop.*actual = 6, computed = 5"),
    ("dy-empty-spatial", base(out_backprop=np.zeros((1, 0, 0, 4), np.float32)), ValueError,
     "out_backprop"),
    ("dy-nchw-as-nhwc", base(out_backprop=DY.transpose(0, 3, 1, 2)), ValueError,
     "out_backprop"),
    ("dy-huge-broadcast", base(input_sizes=(1, 2**12, 2**12, 2), strides=1, padding="SAME",
                               filter=FILT[..., :1], out_backprop=np.broadcast_to(
                                   np.float32(1), (1, 2**12, 2**12, 2**30))), ValueError,
     "out_backprop"),
    # strides and dilations
    ("strides-0", base(strides=0), ValueError, "strides"),
    ("strides-negative", base(strides=-1), ValueError, "strides"),
    ("strides-pair-0", base(strides=(1, 0)), ValueError, "strides"),
    ("strides-len1-zero", base(strides=[0]), ValueError, "strides"),
    ("strides-len3", base(strides=[1, 1, 1]), ValueError, "strides"),
    ("strides-len5", base(strides=[1] * 5), ValueError, "strides"),
    ("strides-N", base(strides=[2, 1, 1, 1]), ValueError, "strides"),
    ("strides-C", base(strides=[1, 1, 1, 2]), ValueError, "strides"),
    ("strides-huge", base(strides=2**62), ValueError, "strides"),
    ("strides-2**31", base(strides=(1, 2**31)), ValueError, "strides"),
    ("strides-float", base(strides=1.0), TypeError, "strides"),
    ("strides-float-item", base(strides=(1, 1.5)), TypeError, "strides"),
    ("strides-None", base(strides=None), TypeError, "strides"),
    ("strides-str", base(strides="1"), TypeError, "strides"),
    ("strides-bool", base(strides=True), TypeError, "strides"),
    ("dilations-0", base(dilations=0), ValueError, "dilations"),
    ("dilations-negative", base(dilations=(1, -2)), ValueError, "dilations"),
    ("dilations-len3", base(dilations=[1, 1, 1]), ValueError, "dilations"),
    ("dilations-N", base(dilations=[2, 1, 1, 1]), ValueError, "dilations"),
    ("dilations-C", base(dilations=[1, 1, 1, 2]), ValueError, "dilations"),
    ("dilations-huge", base(dilations=2**40), ValueError, "dilations"),
    ("dilations-float", base(dilations=2.0), TypeError, "dilations"),
    ("dilations-None", base(dilations=None), TypeError, "dilations"),
    # padding
    ("padding-unknown", base(padding="FULL"), ValueError, "padding"),
    ("padding-empty-str", base(padding=""), ValueError, "padding"),
    ("padding-int", base(padding=5), TypeError, "padding"),
    ("padding-None", base(padding=None), TypeError, "padding"),
    ("padding-bytes", base(padding=b"SAME"), TypeError, "padding"),
    ("padding-object", base(padding=object()), TypeError, "padding"),
    ("padding-float-pairs", base(padding=((1.0, 1), (1, 1))), TypeError, "padding"),
    ("padding-pair-short", base(padding=[[1, 1], [1]]), ValueError, "padding"),
    ("padding-2-ints", base(padding=[1, 1]), ValueError, "padding"),
    ("padding-negative", base(padding=[[1, -1], [1, 1]]), ValueError, "padding"),
    ("padding-huge", base(padding=[[2**40, 0], [1, 1]]), ValueError, "padding"),
    ("padding-4pairs-N", base(padding=[[1, 0], [1, 1], [1, 1], [0, 0]]), ValueError, "padding"),
    ("padding-4pairs-short", base(padding=[[0, 0], [1], [1, 1], [0, 0]]), ValueError,
     "padding"),
    ("padding-pairs-with-explicit", base(padding=((1, 1), (1, 1)),
                                         explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 0]),
     ValueError, "explicit_paddings"),
    ("explicit-missing", base(padding="EXPLICIT"), ValueError, "explicit_paddings"),
    ("explicit-with-SAME", base(explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 0]), ValueError,
     "explicit_paddings"),
    ("explicit-with-VALID", base(padding="VALID", explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 0]),
     ValueError, "explicit_paddings"),
    ("explicit-len4", base(padding="EXPLICIT", explicit_paddings=[1, 1, 1, 1]), ValueError,
     "explicit_paddings"),
    ("explicit-len0", base(padding="EXPLICIT", explicit_paddings=[]), ValueError,
     "explicit_paddings"),
    ("explicit-negative", base(padding="EXPLICIT", explicit_paddings=[0, 0, -1, 1, 1, 1, 0, 0]),
     ValueError, "explicit_paddings"),
    ("explicit-N", base(padding="EXPLICIT", explicit_paddings=[1, 0, 1, 1, 1, 1, 0, 0]),
     ValueError, "explicit_paddings"),
    ("explicit-C", base(padding="EXPLICIT", explicit_paddings=[0, 0, 1, 1, 1, 1, 0, 1]),
     ValueError, "explicit_paddings"),
    ("explicit-2**40", base(padding="EXPLICIT", explicit_paddings=[0, 0, 2**40, 1, 1, 1, 0, 0]),
     ValueError, "explicit_paddings"),
    ("explicit-str", base(padding="EXPLICIT", explicit_paddings="abc"), TypeError,
     "explicit_paddings"),
    ("explicit-float", base(padding="EXPLICIT", explicit_paddings=[0, 0, 1., 1, 1, 1, 0, 0]),
     TypeError, "explicit_paddings"),
    # geometry
    # TensorFlow's (padded - dilated kernel + stride) / stride, truncated, is -1 < 0: an error.
    # (An overhang of less than a stride gives an empty output: tests/test_tf_api.py.)
    ("kernel-larger-than-input", base(input_sizes=(1, 1, 1, 2), padding="VALID",
                                      out_backprop=np.zeros((1, 0, 0, 4), np.float32)),
     ValueError, "filter"),
    ("dilated-kernel-larger", base(padding="VALID", dilations=3,
                                   out_backprop=np.zeros((1, 1, 1, 4), np.float32)),
     ValueError, "filter"),
    ("kernel-larger-than-explicit", base(input_sizes=(1, 1, 1, 2), padding=((0, 1), (0, 1)),
                                         out_backprop=np.zeros((1, 1, 1, 4), np.float32)),
     ValueError, "filter"),
    # data_format
    ("data_format-unknown", base(data_format="NCWH"), ValueError, "data_format"),
    ("data_format-vect", base(data_format="NCHW_VECT_C"), ValueError, "data_format"),
    ("data_format-None", base(data_format=None), ValueError, "data_format"),
    ("data_format-int", base(data_format=4), ValueError, "data_format"),
    # dtype
    ("dtype-mismatch", base(filter=FILT.astype(np.float64)), TypeError, "dtype"),
    ("dtype-mismatch-16", base(out_backprop=DY.astype(np.float16)), TypeError, "dtype"),
    ("dtype-int", base(filter=FILT.astype(np.int32), out_backprop=DY.astype(np.int32)),
     TypeError, "dtype"),
    ("dtype-int-filter", base(filter=FILT.astype(np.int64)), TypeError, "filter.*dtype"),
    ("dtype-uint-dy", base(out_backprop=DY.astype(np.uint8)), TypeError, "out_backprop.*dtype"),
    ("dtype-complex", base(filter=FILT.astype(complex), out_backprop=DY.astype(complex)),
     TypeError, "dtype"),
    ("dtype-bool", base(filter=FILT > 0, out_backprop=DY > 0), TypeError, "dtype"),
    ("dtype-bool-list", base(out_backprop=(DY > 0).tolist()), TypeError, "out_backprop"),
    ("dtype-object", base(filter=FILT.astype(object), out_backprop=DY.astype(object)),
     TypeError, "dtype"),
    ("dtype-longdouble", base(filter=FILT.astype(np.longdouble),
                              out_backprop=DY.astype(np.longdouble)), TypeError, "dtype"),
    ("dtype-datetime", base(out_backprop=np.zeros(DY.shape, "M8[s]")), TypeError, "dtype"),
    ("dtype-structured", base(out_backprop=np.zeros(DY.shape, [("a", "f4")])), TypeError,
     "dtype"),
    # out
    ("out-shape", base(out=np.empty((1, 5, 5, 3), np.float32)), ValueError, "out"),
    ("out-shape-nchw", base(out=np.empty((1, 2, 5, 5), np.float32)), ValueError, "out"),
    ("out-dtype", base(out=np.empty(SIZES, np.float64)), TypeError, "out"),
    ("out-big-endian", base(out=_big_endian_out()), TypeError, "out"),
    ("out-read-only", base(out=_read_only()), ValueError, "out"),
    ("out-list", base(out=[0.0] * 50), TypeError, "out"),
    ("out-overlaps-dy", _overlapping_out(), ValueError, "out"),
    ("out-overlaps-itself", base(out=_self_overlapping_out()), ValueError, "out"),
    ("out-unaligned", base(out=_unaligned_out()), ValueError, "out"),
    # algorithm
    ("algorithm-unknown", base(algorithm="fft"), ValueError, "algorithm"),
    ("algorithm-None", base(algorithm=None), ValueError, "algorithm"),
    ("algorithm-int", base(algorithm=1), ValueError, "algorithm"),
    # num_threads
    ("num_threads-0", base(num_threads=0), ValueError, "num_threads"),
    ("num_threads-negative", base(num_threads=-1), ValueError, "num_threads"),
    ("num_threads-huge", base(num_threads=2**40), ValueError, "num_threads"),
    ("num_threads-float", base(num_threads=1.5), TypeError, "num_threads"),
    ("num_threads-str", base(num_threads="2"), TypeError, "num_threads"),
    ("num_threads-bool", base(num_threads=True), TypeError, "num_threads"),
]


@pytest.mark.parametrize("kwargs, error, match", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_malformed_call_names_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        call(kwargs)


# Checked calls are remembered by their arguments' values; an argument equal to a valid one
# (True == 1, 1.0 == 1, np.float64(1) == 1) but of a kind the checks refuse must still raise.
def _torch_weight_call(**changes):
    kwargs = dict(input=DY.transpose(0, 3, 1, 2), weight_size=(4, 4, 3, 3),
                  grad_output=DY.transpose(0, 3, 1, 2), stride=(1, 1), padding=(1, 1),
                  groups=1)
    kwargs.update(changes)
    return lambda: convbp.torch.conv2d_weight(**kwargs)


def _torch_input_call(**changes):
    kwargs = dict(input_size=(1, 2, 5, 5), weight=FILT.transpose(3, 2, 0, 1),
                  grad_output=DY.transpose(0, 3, 1, 2), stride=1, padding=(1, 1))
    kwargs.update(changes)
    return lambda: convbp.torch.conv2d_input(**kwargs)


REMEMBERED = [
    ("tf-strides-bool", lambda: call(base(strides=(1, 1))),
     lambda: call(base(strides=(1, True))), TypeError, "strides"),
    ("tf-strides-float", lambda: call(base(strides=1)),
     lambda: call(base(strides=1.0)), TypeError, "strides"),
    ("tf-padding-float", lambda: call(base(padding=((1, 1), (1, 1)))),
     lambda: call(base(padding=((1, 1.0), (1, 1)))), TypeError, "padding"),
    ("tf-padding-bool", lambda: call(base(padding=((1, 1), (1, 1)))),
     lambda: call(base(padding=((True, 1), (1, 1)))), TypeError, "padding"),
    ("tf-sizes-bool", lambda: call(base()),
     lambda: call(base(input_sizes=(True, 5, 5, 2))), TypeError, "input_sizes"),
    ("tf-sizes-float", lambda: call(base()),
     lambda: call(base(input_sizes=(1, 5.0, 5, 2))), TypeError, "input_sizes"),
    ("tf-threads-bool", lambda: call(base(num_threads=1)),
     lambda: call(base(num_threads=True)), TypeError, "num_threads"),
    ("tf-dilations-npfloat", lambda: call(base(dilations=1)),
     lambda: call(base(dilations=np.float64(1))), TypeError, "dilations"),
    ("torch-weight-size-float", _torch_weight_call(),
     _torch_weight_call(weight_size=(4, 4, 3, 3.0)), TypeError, "weight_size"),
    ("torch-stride-bool", _torch_weight_call(),
     _torch_weight_call(stride=(1, True)), TypeError, "stride"),
    ("torch-groups-bool", _torch_weight_call(),
     _torch_weight_call(groups=True), TypeError, "groups"),
    ("torch-padding-float", _torch_input_call(),
     _torch_input_call(padding=(1, 1.0)), TypeError, "padding"),
    ("torch-input-size-bool", _torch_input_call(),
     _torch_input_call(input_size=(True, 2, 5, 5)), TypeError, "input_size"),
]


@pytest.mark.parametrize("valid, malformed, error, match", [c[1:] for c in REMEMBERED],
                         ids=[c[0] for c in REMEMBERED])
def test_a_remembered_call_does_not_pass_an_equal_malformed_one(valid, malformed, error,
                                                                 match):
    for _ in range(2):
        valid()
    with pytest.raises(error, match=match):
        malformed()


def test_filter_out_overlap():
    buf = np.zeros(200, np.float32)
    filt = buf[:72].reshape(FILT.shape)
    filt[...] = FILT
    with pytest.raises(ValueError, match="out overlaps filter"):
        call(base(filter=filt, out=buf[60:110].reshape(SIZES)))


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_mismatch_message_gives_actual_and_computed(data_format):
    dy = np.zeros((1, 4, 4, 4), np.float32)
    sizes = SIZES
    if data_format == "NCHW":
        dy, sizes = dy.transpose(0, 3, 1, 2), (1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"Size of out_backprop doesn't match computed: "
                                         r"height: actual = 4, computed = 5"):
        convbp.conv2d_backprop_input(sizes, FILT, dy, 1, "SAME", data_format=data_format)


@pytest.mark.parametrize("data_format, strides, pads", [
    ("NCHW", [1, 2, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]),
    ("NCHW", [1, 1, 1, 2], [0, 0, 0, 0, 1, 1, 1, 1]),
    ("NCHW", [1, 1, 1, 1], [0, 0, 1, 0, 1, 1, 1, 1]),
])
def test_nchw_four_value_checks(data_format, strides, pads):
    # 4-value strides / explicit_paddings are read in data_format order: N and C differ by layout.
    dy = np.zeros((1, 4, 5, 5), np.float32)
    name = "strides" if strides != [1, 1, 1, 1] else "explicit_paddings"
    with pytest.raises(ValueError, match=name):
        convbp.conv2d_backprop_input((1, 2, 5, 5), FILT, dy, strides, "EXPLICIT",
                                     explicit_paddings=pads, data_format=data_format)


def test_grouped_filter_cout_not_divisible():
    # input depth 6 / filter in-depth 2 = 3 groups, but C_out = 4 is not a multiple of 3.
    dy = np.zeros((1, 5, 5, 4), np.float32)
    with pytest.raises(ValueError, match="filter"):
        convbp.conv2d_backprop_input((1, 5, 5, 6), FILT, dy, 1, "SAME")


def test_failed_call_leaves_out_untouched():
    out = np.full(SIZES, 7.0, np.float32)
    with pytest.raises(ValueError, match="out_backprop"):
        convbp.conv2d_backprop_input(SIZES, FILT, DY[:, :4], 1, "SAME", out=out)
    assert np.all(out == 7.0)


def _layer_calls(out):
    """A failing call of every new entry point (a mismatched out_backprop / grad_output, or a
    bad algorithm), each given ``out``."""
    from convbp import tf as ctf, torch as ctorch
    x, dy = np.ones((1, 5, 5, 2), np.float32), np.ones((1, 4, 5, 4), np.float32)
    return [
        lambda: ctf.conv2d(x, FILT, 1, "SAME", out=out, algorithm="fft"),
        lambda: ctf.conv2d_backprop_filter(x, FILT.shape, dy, 1, "SAME", out=out),
        lambda: ctf.conv2d_transpose(dy, FILT, SIZES, 1, out=out),
        lambda: ctf.depthwise_conv2d(x, FILT[:, :, :, :2], 1, "SAME", out=out, algorithm=""),
        lambda: ctf.depthwise_conv2d_backprop_filter(x, (3, 3, 2, 2), dy, 1, "SAME", out=out),
        lambda: ctorch.conv2d(x, np.ones((4, 2, 3, 3), np.float32), out=out),
        lambda: ctorch.conv2d_weight(x.transpose(0, 3, 1, 2), (4, 2, 3, 3),
                                     dy.transpose(0, 3, 1, 2), out=out),
    ]


@pytest.mark.parametrize("index", range(len(_layer_calls(None))))
def test_failed_layer_call_leaves_out_untouched(index):
    out = np.full((3, 3, 2, 4), 7.0, np.float32)
    with pytest.raises((ValueError, TypeError)):
        _layer_calls(out)[index]()
    assert np.all(out == 7.0)
