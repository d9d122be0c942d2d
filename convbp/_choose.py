"""Which algorithm computes a convolution: the one place the choice is made.

``choose`` answers for one call's geometry and dtype -- never its thread count, so a result is
bitwise identical whatever ``num_threads`` is -- with the algorithm, the Winograd tile and the
reason, the way ``scipy.signal.choose_conv_method`` answers for ``scipy.signal.convolve``.
The rule is a cost model fitted to measurements on the benchmark machines (2-core AMD EPYC Zen 4
and Intel Xeon, both AVX-512); see ``choose`` for the figures behind it.
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


def winograd_applies(kernel_hw, strides, depthwise=False):
    """None if Winograd can compute this convolution, else why not."""
    if tuple(kernel_hw) != (3, 3):
        return f"the filter is {kernel_hw[0]}x{kernel_hw[1]}; Winograd here takes 3x3 only"
    if tuple(strides) != (1, 1):
        return f"the stride is {tuple(strides)}; Winograd takes stride 1 only"
    if depthwise:
        return "a depthwise convolution (one input channel a group) has its own direct kernel"
    return None


def choose(n, in_hw, out_hw, kernel_hw, strides, dilations, c, f, groups, itemsize,
           depthwise=False):
    """The algorithm ``"auto"`` picks for a convolution read as a correlation.

    Logical sizes: ``in_hw``/``c`` the correlation's input (for the input gradient: dy and its
    F channels), ``out_hw``/``f`` its output (dx and its C channels), ``itemsize`` 4 or 8.
    """
    c_group, f_group = c // groups, f // groups
    if depthwise:
        return Choice("depthwise", None, "one input channel a group: the direct depthwise kernel")
    why = winograd_applies(kernel_hw, strides)
    if why is not None:
        return Choice("gemm", None, why)
    # Measured (bench_backprop_input.py, 2 threads): Winograd pays from ~16 channels a side;
    # below that the tile transforms cost more than the GEMM saves.
    small = min(c_group, f_group)
    if small < 16:
        return Choice("gemm", None, f"{small} channels per group: too few for Winograd's "
                                    "transforms to pay")
    dh, dw = dilations
    oh, ow = -(-out_hw[0] // dh), -(-out_hw[1] // dw)
    # F(4x4) wastes less than F(2x2) only if the (phase) image spans several 4x4 tiles; at 512
    # channels F(2x2)'s cheaper filter transform wins on small images.
    waste4 = (-(-oh // 4) * 4) * (-(-ow // 4) * 4) / (oh * ow)
    waste2 = (-(-oh // 2) * 2) * (-(-ow // 2) * 2) / (oh * ow)
    tile = 4 if 36 / 16 * waste4 < 16 / 4 * waste2 * 0.75 else 2
    return Choice("winograd", tile, f"3x3 stride 1: Winograd F({tile}x{tile}, 3x3)")
