"""Depthwise input gradient: convbp against PyTorch (when installed), NHWC and NCHW.

Run:  python benchmarks/bench_depthwise.py [--repeat 9] [--threads T]

For each shape and layout, the candidates are timed interleaved (one call of each per round,
after warm-up rounds), and the median over the rounds is reported as GFLOP/s with
FLOPs = 2*N*OH*OW*C*multiplier*KH*KW, with the ratio convbp / PyTorch from the same run.
PyTorch is ``torch.ops.aten.convolution_backward`` with ``groups=C`` and output mask
[True, False, False]; NHWC uses channels_last tensors.  Where TensorFlow's SAME padding is
asymmetric (stride 2), PyTorch gets the smaller padding on both sides and an input enlarged by the
difference, and its gradient is cropped back inside the timed call: the same multiply-adds.
"""

import argparse
import time

import numpy as np

import convbp

try:
    import torch
except ImportError:
    torch = None

# (N, H, W, C, multiplier, K, stride, dilation)
SHAPES = [
    (8, 56, 56, 128, 1, 3, 1, 1),
    (8, 112, 112, 32, 1, 3, 1, 1),
    (8, 28, 28, 256, 1, 3, 2, 1),
    (8, 28, 28, 256, 1, 5, 1, 1),
    (8, 56, 56, 64, 2, 3, 1, 2),
]


def _same_out(size, k, s, d):
    return -(-size // s)


def _same_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _candidates(shape, data_format, threads):
    n, h, w, c, mult, k, s, d = shape
    oh, ow = _same_out(h, k, s, d), _same_out(w, k, s, d)
    rng = np.random.default_rng(0)
    filt = rng.standard_normal((k, k, c, mult), dtype=np.float32)
    dy_nhwc = rng.standard_normal((n, oh, ow, c * mult), dtype=np.float32)
    if data_format == "NHWC":
        dy, sizes = dy_nhwc, (n, h, w, c)
    else:
        dy, sizes = np.ascontiguousarray(dy_nhwc.transpose(0, 3, 1, 2)), (n, c, h, w)
    out = np.empty(sizes, np.float32)

    def run_convbp():
        convbp.depthwise_conv2d_backprop_input(sizes, filt, dy, s, "SAME",
                                               data_format=data_format, dilations=d, out=out,
                                               num_threads=threads)

    candidates = {"convbp": run_convbp}
    if torch is not None:
        # PyTorch pads symmetrically: it gets the smaller of TensorFlow's SAME pads on both sides
        # and an input enlarged by the difference, and its gradient is cropped back (the crop, a
        # copy into the layout's memory format, is inside the timed call).
        ph, pw = _same_pads(h, k, s, d), _same_pads(w, k, s, d)
        pad = (min(ph), min(pw))
        top, bottom, left, right = (ph[0] - pad[0], ph[1] - pad[0], pw[0] - pad[1],
                                    pw[1] - pad[1])
        fmt = torch.channels_last if data_format == "NHWC" else torch.contiguous_format
        t_dy = torch.from_numpy(dy_nhwc).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        t_x = torch.empty((n, c, h + top + bottom, w + left + right)).contiguous(
            memory_format=fmt)
        t_w = (torch.from_numpy(filt).reshape(k, k, c * mult).permute(2, 0, 1)
               .unsqueeze(1).contiguous(memory_format=fmt))  # (C*M, 1, KH, KW)
        crop = top or bottom or left or right
        rows, cols = slice(top, top + h), slice(left, left + w)

        def run_torch():
            grad = torch.ops.aten.convolution_backward(t_dy, t_x, t_w, None, [s, s], list(pad),
                                                       [d, d], False, [0, 0], c,
                                                       [True, False, False])[0]
            if crop:
                grad = grad[:, :, rows, cols].contiguous(memory_format=fmt)
            return grad

        candidates["torch"] = run_torch
    flops = 2 * n * oh * ow * c * mult * k * k
    return candidates, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both (default: all cores)")
    args = parser.parse_args()
    threads = args.threads or convbp.default_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"threads: {threads}; torch: {torch.__version__ if torch else 'not installed'}")
    print(f"{'N,H,W,C,mult,K,stride,dil':<30} {'layout':<6} {'convbp':>8} {'torch':>8} "
          f"{'ratio':>6}   (GFLOP/s, median of {args.repeat})")
    for shape in SHAPES:
        for data_format in ("NHWC", "NCHW"):
            candidates, flops = _candidates(shape, data_format, threads)
            times = {name: [] for name in candidates}
            for round_ in range(args.warmup + args.repeat):
                for name, fn in candidates.items():
                    t0 = time.perf_counter()
                    fn()
                    elapsed = time.perf_counter() - t0
                    if round_ >= args.warmup:
                        times[name].append(elapsed)
            rate = {name: flops / np.median(t) / 1e9 for name, t in times.items()}
            t_rate = rate.get("torch")
            ratio = f"{rate['convbp'] / t_rate:6.2f}" if t_rate else "     -"
            t_text = f"{t_rate:8.1f}" if t_rate else "       -"
            print(f"{','.join(map(str, shape)):<30} {data_format:<6} {rate['convbp']:8.1f} "
                  f"{t_text} {ratio}")


if __name__ == "__main__":
    main()
