"""Errors of each algorithm of conv2d_backprop_input (or, with ``--op filter``, of
conv2d_backprop_filter) against a float64 reference.

Per (data, dtype, algorithm): rel = max|err| / max|ref| and cw = max |err| / (eps * scale), the
componentwise error in units of eps times the condition scale -- |W| conv |dy| for the input
gradient, |x| corr |dy| for the filter gradient -- for standard-normal data and for data with a
wide dynamic range (magnitudes log-uniform over 1e-3..1e3), on a 8x28x28x64 -> 64 3x3 SAME layer
(NHWC).  PyTorch's float32 error is shown beside convbp's.

    python benchmarks/accuracy.py [--op input|filter]
"""

import argparse

import numpy as np

import convbp
from convbp import _choose, _engine

try:
    import torch
except ImportError:
    torch = None


def reference(dy, w, pad):
    """dx in float64 (PyTorch autograd when installed, else convbp's GEMM in float64)."""
    if torch is None:
        return convbp.conv2d_backprop_input((dy.shape[0], dy.shape[1], dy.shape[2], w.shape[2]),
                                            w.astype(np.float64), dy.astype(np.float64), 1,
                                            "SAME", algorithm="gemm")
    dy_t = torch.from_numpy(np.asarray(dy, np.float64)).permute(0, 3, 1, 2)
    w_t = torch.from_numpy(np.asarray(w, np.float64)).permute(3, 2, 0, 1)
    x = torch.zeros((dy.shape[0], w.shape[2]) + dy.shape[1:3], dtype=w_t.dtype)
    g = torch.ops.aten.convolution_backward(dy_t, x, w_t, None, [1, 1], [pad, pad], [1, 1],
                                            False, [0, 0], 1, [True, False, False])[0]
    return g.permute(0, 2, 3, 1).numpy()


def torch_f32(dy, w, pad):
    dy_t = torch.from_numpy(np.asarray(dy, np.float32)).permute(0, 3, 1, 2)
    w_t = torch.from_numpy(np.asarray(w, np.float32)).permute(3, 2, 0, 1)
    x = torch.zeros((dy.shape[0], w.shape[2]) + dy.shape[1:3], dtype=torch.float32)
    g = torch.ops.aten.convolution_backward(dy_t, x, w_t, None, [1, 1], [pad, pad], [1, 1],
                                            False, [0, 0], 1, [True, False, False])[0]
    return g.permute(0, 2, 3, 1).numpy()


def filter_reference(x, dy, pad, dtype=np.float64):
    """dw (HWIO) in ``dtype`` by PyTorch (float64: convbp's GEMM without PyTorch)."""
    if torch is None:
        return convbp.tf.conv2d_backprop_filter(x.astype(dtype), (3, 3, x.shape[3], dy.shape[3]),
                                                dy.astype(dtype), 1, "SAME", algorithm="gemm")
    x_t = torch.from_numpy(np.asarray(x, dtype)).permute(0, 3, 1, 2)
    dy_t = torch.from_numpy(np.asarray(dy, dtype)).permute(0, 3, 1, 2)
    w = torch.zeros((dy.shape[3], x.shape[3], 3, 3), dtype=x_t.dtype)
    g = torch.ops.aten.convolution_backward(dy_t, x_t, w, None, [1, 1], [pad, pad], [1, 1],
                                            False, [0, 0], 1, [False, True, False])[1]
    return g.permute(2, 3, 1, 0).numpy()


def input_gradient(dtype, dy, filt, n, h, w, c):
    """(reference, scale, {algorithm: result}) of the input gradient of dy by filt."""
    results = {"gemm": convbp.conv2d_backprop_input((n, h, w, c), filt, dy, 1, "SAME",
                                                    algorithm="gemm")}
    for tile in (2, 4):
        dx = np.empty((n, h, w, c), dtype)
        _engine.winograd_correlate(dy, _engine.flipped_filter(filt, 1), dx, (1, 1), (1, 1), None,
                                   tile)
        results[f"winograd F({tile}x{tile})"] = dx
    if torch is not None and dtype == np.float32:
        results["PyTorch"] = torch_f32(dy, filt, 1)
    return reference(dy, filt, 1), reference(np.abs(dy), np.abs(filt), 1), results


def filter_gradient(dtype, x, dy, n, h, w, c):
    """(reference, scale, {algorithm: result}) of the filter gradient of x and dy."""
    f = dy.shape[3]
    results = {"gemm": convbp.tf.conv2d_backprop_filter(x, (3, 3, c, f), dy, 1, "SAME",
                                                        algorithm="gemm")}
    for tile in (2, 4):
        results[f"winograd F({tile}x{tile})"] = _engine.winograd_filter_gradient(
            x, dy, np.empty((3, 3, c, f), dtype), (1, 1), (1, 1), None, tile)
    if torch is not None and dtype == np.float32:
        results["PyTorch"] = filter_reference(x, dy, 1, np.float32)
    return (filter_reference(x, dy, 1), filter_reference(np.abs(x), np.abs(dy), 1), results)


def main(op="input"):
    rng = np.random.default_rng(0)
    n, h, w, c, f = 8, 28, 28, 64, 64
    # The two operands of each op: (dy, filter) for the input gradient, (x, dy) for the filter.
    shapes = ((n, h, w, f), (3, 3, c, f)) if op == "input" else ((n, h, w, c), (n, h, w, f))
    scale_name = "|W| conv |dy|" if op == "input" else "|x| corr |dy|"
    print(f"| data | dtype | algorithm | rel = max|err|/max|ref| | cw = max |err|/(eps {scale_name}) |")
    print("|---|---|---|---|---|")
    for data in ("normal", "wide range"):
        if data == "normal":
            a, b = (rng.standard_normal(shape) for shape in shapes)
        else:
            a, b = (10.0 ** rng.uniform(-3, 3, shape) * rng.choice([-1, 1], shape)
                    for shape in shapes)
        for dtype in (np.float32, np.float64):
            run = input_gradient if op == "input" else filter_gradient
            ref, scale, results = run(dtype, a.astype(dtype), b.astype(dtype), n, h, w, c)
            eps = np.finfo(dtype).eps
            for name, result in results.items():
                err = np.abs(result.astype(np.float64) - ref)
                rel = err.max() / np.abs(ref).max()
                cw = (err / (eps * scale)).max()
                print(f"| {data} | {np.dtype(dtype).name} | {name} | {rel:.1e} | {cw:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=("input", "filter"), default="input")
    main(parser.parse_args().op)
