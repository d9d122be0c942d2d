"""convbp demo: one input gradient computed in NHWC and in NCHW, checked equal, timed against NumPy.

Run:  python examples/demo.py
"""

import time

import numpy as np

import convbp
from convbp.reference import conv2d_backprop_input_nhwc


def best_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    # A ResNet-style layer: 8 images of 56x56x64, a 3x3 filter, stride 2, TensorFlow SAME padding.
    n, h, w, c_in, c_out, k, stride = 8, 56, 56, 64, 64, 3, 2
    filt = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32)          # HWIO
    oh, ow = -(-h // stride), -(-w // stride)
    dy_nhwc = rng.standard_normal((n, oh, ow, c_out), dtype=np.float32)
    dy_nchw = np.ascontiguousarray(dy_nhwc.transpose(0, 3, 1, 2))              # NCHW memory

    dx_nhwc = convbp.conv2d_backprop_input((n, h, w, c_in), filt, dy_nhwc, stride, "SAME")
    dx_nchw = convbp.conv2d_backprop_input((n, c_in, h, w), filt, dy_nchw, stride, "SAME",
                                           data_format="NCHW")

    # NumPy reference in float64; TensorFlow's SAME padding here is 0 on top/left, 1 at the end.
    pad = (0, 1)
    ref = conv2d_backprop_input_nhwc((h, w), filt.astype(np.float64), dy_nhwc.astype(np.float64),
                                     (stride, stride), pads=(pad, pad))
    scale = np.abs(ref).max()
    err_nhwc = np.abs(dx_nhwc - ref).max() / scale
    err_nchw = np.abs(dx_nchw.transpose(0, 2, 3, 1) - ref).max() / scale
    print(f"input gradient {dx_nhwc.shape} NHWC / {dx_nchw.shape} NCHW, float32")
    print(f"max relative error vs float64 NumPy reference: NHWC {err_nhwc:.2e}, "
          f"NCHW {err_nchw:.2e}")
    layout_diff = np.abs(dx_nhwc - dx_nchw.transpose(0, 2, 3, 1)).max() / scale
    print(f"NHWC and NCHW results agree to {layout_diff:.2e} (float32 rounding: the two layouts "
          f"sum in different orders)")
    assert err_nhwc < 1e-5 and err_nchw < 1e-5 and layout_diff < 1e-5

    flops = 2 * n * oh * ow * c_out * k * k * c_in
    t_nhwc = best_time(lambda: convbp.conv2d_backprop_input((n, h, w, c_in), filt, dy_nhwc,
                                                            stride, "SAME"))
    t_nchw = best_time(lambda: convbp.conv2d_backprop_input((n, c_in, h, w), filt, dy_nchw,
                                                            stride, "SAME", data_format="NCHW"))
    t_numpy = best_time(lambda: conv2d_backprop_input_nhwc((h, w), filt, dy_nhwc,
                                                           (stride, stride), pads=(pad, pad)), 3)
    print(f"{'':18}{'time':>10}{'GFLOP/s':>10}")
    for name, t in (("convbp NHWC", t_nhwc), ("convbp NCHW", t_nchw),
                    ("NumPy col2im", t_numpy)):
        print(f"{name:18}{t * 1e3:8.2f}ms{flops / t / 1e9:10.1f}")
    print(f"convbp is {t_numpy / t_nhwc:.1f}x faster than the NumPy reference "
          f"({convbp.default_num_threads()} threads)")


if __name__ == "__main__":
    main()
