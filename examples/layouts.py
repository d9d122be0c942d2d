"""convbp layouts: one input gradient computed from NHWC, NCHW and channels-last strided views.

The same convolution gradient is computed three ways, none of which transposes an array in
memory:

1. NHWC arrays with ``data_format="NHWC"``;
2. NCHW arrays with ``data_format="NCHW"``;
3. NHWC *memory* seen through NCHW-shaped views (``arr.transpose(0, 3, 1, 2)``, no copy) with
   ``data_format="NCHW"``, writing the result with ``out=`` straight into a channel slice of a
   larger NHWC gradient buffer (as when the layer's input was one part of a concatenation).

All three agree with a float64 NumPy reference to float32 rounding.

Run:  python examples/layouts.py
"""

import numpy as np

import convbp
from convbp.reference import conv2d_backprop_input_nhwc


def max_relative_difference(a, b, scale):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / scale)


def main():
    rng = np.random.default_rng(0)
    n, h, w, c_in, c_out, k, stride = 4, 32, 30, 16, 32, 3, 2
    oh, ow = -(-h // stride), -(-w // stride)                      # TensorFlow SAME output
    filt = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32)     # HWIO, every layout
    dy_nhwc = rng.standard_normal((n, oh, ow, c_out), dtype=np.float32)

    # 1. NHWC.
    dx_nhwc = convbp.conv2d_backprop_input((n, h, w, c_in), filt, dy_nhwc, stride, "SAME")

    # 2. NCHW: the same values stored channel-major (this copy only builds the example's input).
    dy_nchw = np.ascontiguousarray(dy_nhwc.transpose(0, 3, 1, 2))
    dx_nchw = convbp.conv2d_backprop_input((n, c_in, h, w), filt, dy_nchw, stride, "SAME",
                                           data_format="NCHW")

    # 3. Channels-last memory through NCHW-shaped views.  The gradient goes into channels
    #    [8, 8 + c_in) of a (N, H, W, 40) NHWC buffer, here seen as an (N, C, H, W) view.
    dy_view = dy_nhwc.transpose(0, 3, 1, 2)                        # NCHW shape, NHWC memory
    grad_buffer = np.zeros((n, h, w, 40), np.float32)
    out_view = grad_buffer[..., 8:8 + c_in].transpose(0, 3, 1, 2)  # NCHW shape, strided
    result = convbp.conv2d_backprop_input((n, c_in, h, w), filt, dy_view, stride, "SAME",
                                          data_format="NCHW", out=out_view)
    assert result is out_view and np.shares_memory(result, grad_buffer)
    assert not grad_buffer[..., :8].any() and not grad_buffer[..., 8 + c_in:].any()

    # float64 reference; TensorFlow SAME pads this geometry by 0 before and 1 after.
    pads = ((0, 1), (0, 1))
    reference = conv2d_backprop_input_nhwc((h, w), filt.astype(np.float64),
                                           dy_nhwc.astype(np.float64), (stride, stride),
                                           pads=pads)
    scale = float(np.abs(reference).max())
    # float32 rounding of a sum of c_out*k*k products, relative to the largest value.
    eps = float(np.finfo(np.float32).eps)
    tolerance = 8 * eps * np.sqrt(c_out * k * k) + 4 * eps

    views = {
        "NHWC": dx_nhwc,
        "NCHW": dx_nchw.transpose(0, 2, 3, 1),
        "NCHW view of NHWC memory, out= view": grad_buffer[..., 8:8 + c_in],
    }
    print(f"input gradient of shape (N, H, W, C) = {(n, h, w, c_in)}, float32; filter "
          f"{filt.shape} HWIO, stride {stride}, SAME padding")
    print(f"max |difference| / max |gradient|  (float32 rounding bound {tolerance:.1e})")
    for name, dx in views.items():
        err = max_relative_difference(dx, reference, scale)
        print(f"  {name:38s} vs float64 reference: {err:.2e}")
        assert err <= tolerance, (name, err)
    for name, dx in list(views.items())[1:]:
        diff = max_relative_difference(dx, dx_nhwc, scale)
        print(f"  {name:38s} vs NHWC:              {diff:.2e}")
        assert diff <= 2 * tolerance, (name, diff)
    print("all layouts agree; no array was transposed in memory")


if __name__ == "__main__":
    main()
