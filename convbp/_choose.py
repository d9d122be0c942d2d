"""Which algorithm computes a convolution: the one place the choice is made.

``choose`` answers for one call's geometry and dtype -- never its thread count, so a result is
bitwise identical whatever ``num_threads`` is -- with the algorithm, the Winograd tile and the
reason, the way ``scipy.signal.choose_conv_method`` answers for ``scipy.signal.convolve``.
The rule is a cost model fitted to forced-algorithm timings on a 2-core AMD EPYC (Zen 4,
AVX-512); ``choose`` lists the figures behind it.
"""

from dataclasses import dataclass

__all__ = ["Choice", "choose", "winograd_applies"]


@dataclass(frozen=True)
class Choice:
    """What ``algorithm="auto"`` runs: ``algorithm`` ("gemm", "winograd" or "depthwise"),
    ``tile`` (Winograd output tile m of F(m x m, 3 x 3), else None) and ``reason``."""

    algorithm: str
    tile: object
    reason: str


def winograd_applies(kernel_hw, strides, depthwise=False, built=True):
    """None if Winograd can compute this convolution, else why not (``built``: whether this
    build has the kernel)."""
    if tuple(kernel_hw) != (3, 3):
        return f"the filter is {kernel_hw[0]}x{kernel_hw[1]}; Winograd here takes 3x3 only"
    if tuple(strides) != (1, 1):
        return f"the stride is {tuple(strides)}; Winograd takes stride 1 only"
    if depthwise:
        return "a depthwise convolution (one input channel a group) has its own direct kernel"
    if not built:
        return ("this build of convbp has no Winograd kernel (compiled without GNU C vector "
                "extensions)")
    return None


def choose(n, in_hw, out_hw, kernel_hw, strides, dilations, c, f, groups, itemsize,
           depthwise=False, built=True, op="forward"):
    """The algorithm ``"auto"`` picks for ``op`` ("forward", "input" or "filter") of a
    convolution read as a correlation.

    Logical sizes: ``in_hw``/``c`` the correlation's input (for the input gradient: dy and its
    F channels), ``out_hw``/``f`` its output (dx and its C channels), ``itemsize`` 4 or 8.  The
    filter gradient correlates x (``in_hw``, ``c``) with dy (``out_hw``, ``f``).
    """
    c_group, f_group = c // groups, f // groups
    if depthwise:
        return Choice("depthwise", None, "one input channel a group: the direct depthwise kernel")
    why = winograd_applies(kernel_hw, strides, built=built)
    if why is not None:
        return Choice("gemm", None, why)
    if op == "filter":
        return _choose_filter(n, out_hw, dilations, c_group, f_group, itemsize)
    # The rule, from forced-algorithm timings (2 threads, AMD EPYC Zen 4; gemm time / winograd
    # time in brackets, float32 / float64):
    # - Few output pixels: the per-call filter transform (alpha^2 x C x F) and small GEMMs
    #   outweigh the saving.  1x8x8 (64 px) 0.61/0.80, 2x4x4 (32 px) 0.41/0.53, 2x8x8x256
    #   (128 px) 1.13/0.96, 1x16x16x64 (256 px) 1.11/1.61: Winograd from 256 pixels.
    # - Channels: the transforms run along channels in 64-byte vectors (16 floats, 8 doubles).
    #   With both sides at least one vector Winograd wins (16->16 1.98/1.87, 8->8 0.81/1.59,
    #   12->12 0.84/1.38); with one side of 3-12 channels it still wins when the other has 32 or
    #   more (3->32 1.18/1.11, 32->3 2.13/2.22, 4->64 1.26/0.98, 8->64 1.17/1.03, 64->8
    #   2.35/2.06); one channel a side never (1->32 0.84/0.66).
    lanes = 64 // itemsize
    small, large = min(c_group, f_group), max(c_group, f_group)
    pixels = n * out_hw[0] * out_hw[1]
    if pixels < 256:
        return Choice("gemm", None, f"{pixels} output pixels: too few for Winograd's filter "
                                    "transform to pay")
    if small < lanes and not (small >= 3 and large >= 32):
        return Choice("gemm", None, f"{c_group} -> {f_group} channels per group: too few for "
                                    "Winograd's transforms to pay")
    # F(4x4) unless the image is small or its tiles overhang it: the two measured level at
    # 14x14 and 7x7 (within 5%), F(4x4) 1.3-1.6x ahead from 28x28 up (see _overhang_tile).
    tile = _overhang_tile(out_hw, dilations)
    # Accuracy: F(4x4)'s error (~10-14 eps x |W| conv |dy| on normal data) stays within the
    # dot-product bound 2*gamma_n (n = 9 x the correlation's input channels) only from n = 144
    # on; shorter reductions take F(2x2), whose error is ~1.5 eps x |W| conv |dy| (and which
    # still beats GEMM there: 64->3 1.08/1.65, 64->8 1.22/1.73, 32->12 1.31/1.43).
    if c_group < 16:
        tile = 2
    return Choice("winograd", tile, f"3x3 stride 1, {c_group} -> {f_group} channels per group, "
                                    f"{pixels} output pixels: Winograd F({tile}x{tile}, 3x3)")


def _overhang_tile(out_hw, dilations):
    """4 unless the (polyphase) output is under 16 on a side, or F(4x4)'s tiles overhang it so
    far that it comes within 3/4 of F(2x2) (36/16 multiplies an output against 16/4); then 2.

    Under four F(4x4) tiles a side its larger transforms and shorter GEMMs cost more than its
    fewer multiplies save: forward float32, 2 threads, F(2x2) against F(4x4) on a Xeon
    (AVX-512): 8x14x14 256->256 1.27x NHWC, 1.56x NCHW; 16x7x7 512->512 1.19x, 1.65x; 8x16x16
    128->128 0.92x (so F(4x4) from 16); on the EPYC the two level there (within 5%)."""
    dh, dw = dilations
    oh, ow = -(-out_hw[0] // dh), -(-out_hw[1] // dw)
    if min(oh, ow) < 16:
        return 2
    waste4 = (-(-oh // 4) * 4) * (-(-ow // 4) * 4) / (oh * ow)
    waste2 = (-(-oh // 2) * 2) * (-(-ow // 2) * 2) / (oh * ow)
    return 4 if 36 / 16 * waste4 < 16 / 4 * waste2 * 0.75 else 2


def _choose_filter(n, dy_hw, dilations, c_group, f_group, itemsize):
    """The filter gradient's rule: the correlation of x (C channels) with dy (F channels)."""
    # From forced-algorithm timings (2 threads, AMD EPYC Zen 4; gemm time / winograd time,
    # float32 NHWC, NCHW):
    # - Channels: both transforms run along channels in 64-byte vectors.  8x28x28: 16->16
    #   3.5/2.2, 12->12 1.5/0.96 (float64 2.7/1.7), 8->8 0.70/0.57 (float64 1.7/1.4); one
    #   narrow side pays when the other is wide: 4->64 1.5/1.2, 8->64 1.8/1.4, 64->8 4.0/2.8,
    #   3->32 1.0/0.68, 1->32 0.56/0.45.
    # - Pixels: each work unit's accumulators (alpha^2 x C x F) are written and reduced once
    #   whatever the tile count, so few pixels do not pay.  64->64: 1x8x8 (64 px) F(2x2)
    #   1.07/1.21, F(4x4) 0.62/0.70; 2x8x8 (128 px) 1.23/1.56 and 0.95/1.01; 1x16x16 (256 px)
    #   1.46/1.18 and 1.05/0.75; 4x16x16 (1024 px) 2.2/2.0 and 2.4/2.2.  512->512 1x7x7 (49
    #   px) 0.53/0.57 and 0.26/0.28; 256->256 2x8x8 1.25/1.12 and 0.58/0.40.
    # The reduction runs over pixels, so either tile is accurate (|err| within a few eps of
    # |x| corr |dy|: benchmarks/accuracy.py --op filter).
    lanes = 64 // itemsize
    small, large = min(c_group, f_group), max(c_group, f_group)
    pixels = n * dy_hw[0] * dy_hw[1]
    if small < lanes and not (small >= 4 and large >= 32):
        return Choice("gemm", None, f"{c_group} -> {f_group} channels per group: too few for "
                                    "Winograd's transforms to pay")
    if pixels < 128:
        return Choice("gemm", None, f"{pixels} output pixels: too few for Winograd's "
                                    "accumulators to pay")
    tile = 2 if pixels < 1024 else _overhang_tile(dy_hw, dilations)
    return Choice("winograd", tile, f"3x3 stride 1, {c_group} -> {f_group} channels per group, "
                                    f"{pixels} output pixels: Winograd F({tile}x{tile}, 3x3)")
