import numpy as np
import pytest

import convbp
from oracle import assert_close, direct_backprop_input, tf_same_pads


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_stride2_matches_direct_loop(data_format, dtype):
    rng = np.random.default_rng(1)
    n, h, w, c, f, k, s = 2, 9, 7, 3, 4, 3, 2
    filt = rng.standard_normal((k, k, c, f)).astype(dtype)
    pads = tf_same_pads((h, w), (k, k), (s, s), (1, 1))
    dy = rng.standard_normal((n, 5, 4, f)).astype(dtype)
    expected = direct_backprop_input(dy, filt, (h, w), (s, s), pads=pads)
    if data_format == "NHWC":
        dx = convbp.conv2d_backprop_input((n, h, w, c), filt, dy, s, "SAME")
    else:
        dx = convbp.conv2d_backprop_input((n, c, h, w), filt, dy.transpose(0, 3, 1, 2), s,
                                          "SAME", data_format="NCHW").transpose(0, 2, 3, 1)
    assert dx.dtype == dtype
    assert_close(dx, expected, dtype, f * k * k)


def test_installed_package_is_tested():
    # The compiled kernel must come from the installed package, not a source folder.
    import convbp._gemm as kernels
    assert kernels.__file__.endswith((".so", ".pyd"))
