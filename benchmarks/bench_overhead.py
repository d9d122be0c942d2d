"""Per-call Python overhead of small convolutions: the training example's calls, back to back.

Times the three TF ops (conv2d, conv2d_backprop_filter, conv2d_backprop_input) and the three
PyTorch ops (conv2d, conv2d_input, conv2d_weight) in both layouts on the digits example's two
layers (8x8x1 -> 32 stride 1, 8x8x32 -> 64 stride 2, batch 64, padding 1), once with the GEMM
kernels replaced by no-ops (what remains is the Python around them) and once with the real
kernels.  Reports the best of ``--repeat`` rounds of ``--number`` calls, in microseconds.

    python benchmarks/bench_overhead.py [--repeat 200] [--number 20] [--layer 1|2|both]
"""

import argparse
import time

import numpy as np

import convbp
from convbp import _gemm

PADDING = ((1, 1), (1, 1))
LAYERS = {1: (64, 8, 8, 1, 32, 1), 2: (64, 8, 8, 32, 64, 2)}  # N, H, W, C, F, stride


def _calls(layer, layout):
    """(name, thunk) of the six ops on one layer in one layout (arrays made once)."""
    n, h, w, c, f, s = LAYERS[layer]
    rng = np.random.default_rng(0)
    oh, ow = (h - 1) // s + 1, (w - 1) // s + 1
    if layout == "NHWC":
        x = rng.standard_normal((n, h, w, c), dtype=np.float32)
        dy = rng.standard_normal((n, oh, ow, f), dtype=np.float32)
        x_sizes = (n, h, w, c)
    else:
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        dy = rng.standard_normal((n, f, oh, ow), dtype=np.float32)
        x_sizes = (n, c, h, w)
    k = rng.standard_normal((3, 3, c, f), dtype=np.float32)  # HWIO
    k_shape = (3, 3, c, f)
    # PyTorch's ops take NCHW-shaped arrays: NHWC memory is a transposed view.
    tx = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    tdy = dy if layout == "NCHW" else dy.transpose(0, 3, 1, 2)
    wt = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # OIHW
    tf, th = convbp.tf, convbp.torch
    return [
        ("tf.conv2d", lambda: tf.conv2d(x, k, s, PADDING, data_format=layout)),
        ("tf.conv2d_backprop_filter",
         lambda: tf.conv2d_backprop_filter(x, k_shape, dy, s, PADDING, data_format=layout)),
        ("tf.conv2d_backprop_input",
         lambda: tf.conv2d_backprop_input(x_sizes, k, dy, s, PADDING, data_format=layout)),
        ("torch.conv2d", lambda: th.conv2d(x, wt, None, s, 1, data_format=layout)),
        ("torch.conv2d_weight",
         lambda: th.conv2d_weight(tx, wt.shape, tdy, s, 1)),
        ("torch.conv2d_input",
         lambda: th.conv2d_input((n, c, h, w), wt, tdy, s, 1)),
    ]


def _best(thunk, repeat, number):
    for _ in range(3):
        thunk()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            thunk()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--layer", choices=("1", "2", "both"), default="both")
    args = parser.parse_args()
    layers = (1, 2) if args.layer == "both" else (int(args.layer),)
    kernels = {name: getattr(_gemm, name) for name in ("forward", "backprop_input",
                                                        "backprop_filter")}

    def stub(*args, **kwargs):
        return None

    rows = []
    for layer in layers:
        for layout in ("NHWC", "NCHW"):
            for name, thunk in _calls(layer, layout):
                for attr in kernels:
                    setattr(_gemm, attr, stub)
                try:  # the partial sums a stub leaves are garbage: no warnings about them
                    with np.errstate(all="ignore"):
                        stubbed = _best(thunk, args.repeat, args.number)
                finally:
                    for attr, fn in kernels.items():
                        setattr(_gemm, attr, fn)
                real = _best(thunk, max(1, args.repeat // 4), args.number)
                rows.append((layer, layout, name, stubbed, real))
    print(f"{'layer':>5} {'layout':6} {'op':28} {'stubbed us':>10} {'real us':>9}")
    for layer, layout, name, stubbed, real in rows:
        print(f"{layer:>5} {layout:6} {name:28} {stubbed:10.1f} {real:9.1f}")
    for layer in layers:
        sel = [r for r in rows if r[0] == layer]
        print(f"layer {layer}: mean stubbed {np.mean([r[3] for r in sel]):.1f} us, "
              f"mean real {np.mean([r[4] for r in sel]):.1f} us")


if __name__ == "__main__":
    main()
