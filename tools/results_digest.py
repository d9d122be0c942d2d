"""Print a SHA-256 digest of convbp's results on a fixed set of calls.

Every build computes the same values -- GCC or Clang, GNU C vectors or the plain-C lanes of
``convbp/_simd.h``, any SIMD clone, with or without OpenMP -- so every build prints the same
digest; ``.ci/run`` compares the digests of its builds.  Covers the GEMM + col2im kernel and the
depthwise kernel (both loop orders and every vector block length), float32 and float64.

    python -P tools/results_digest.py
"""

import hashlib

import numpy as np

import convbp


def _calls(rng):
    for dtype in (np.float32, np.float64):
        # (N, H, W, C, multiplier, K, stride): channel counts around the vector lengths.
        for n, h, w, c, m, k, s in [(2, 13, 17, 37, 2, 3, 1), (1, 20, 33, 5, 3, 5, 2),
                                    (2, 9, 40, 70, 1, 3, 1), (1, 31, 29, 16, 1, 7, 3),
                                    (1, 8, 11, 3, 1, 3, 1), (2, 6, 67, 1, 4, 3, 2)]:
            oh, ow = -(-h // s), -(-w // s)
            filt = rng.standard_normal((k, k, c, m)).astype(dtype)
            dy = rng.standard_normal((n, oh, ow, c * m)).astype(dtype)
            yield convbp.depthwise_conv2d_backprop_input((n, h, w, c), filt, dy, s, "SAME")
            yield convbp.depthwise_conv2d_backprop_input(
                (n, c, h, w), filt, dy.transpose(0, 3, 1, 2), s, "SAME", data_format="NCHW")
            filt = rng.standard_normal((k, k, c, 8)).astype(dtype)
            dy = rng.standard_normal((n, oh, ow, 8)).astype(dtype)
            # GEMM forced: a plain-C build has no Winograd kernel for "auto" to pick.
            yield convbp.conv2d_backprop_input((n, h, w, c), filt, dy, s, "SAME",
                                               algorithm="gemm")
            yield convbp.conv2d_backprop_input((n, c, h, w), filt, dy.transpose(0, 3, 1, 2), s,
                                               "SAME", data_format="NCHW", algorithm="gemm")


def main():
    digest = hashlib.sha256()
    for count, dx in enumerate(_calls(np.random.default_rng(0)), 1):
        digest.update(np.ascontiguousarray(dx).tobytes())
    print(f"{digest.hexdigest()}  ({count} results)")


if __name__ == "__main__":
    main()
