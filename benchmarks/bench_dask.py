"""convbp.dask against one in-memory call: what the blocks and their halos cost.

The same input gradient (N=512, 64x64x32 input, 3x3 filter to 64 channels, stride 2, SAME,
float32; out_backprop 128 MiB in memory) computed by one in-memory call on all cores, and by
convbp.dask on the local threaded scheduler for several chunkings of out_backprop, each block
stored into a preallocated array (``da.store``, so no final concatenation is timed).  Median of
5 after a warm-up.  "halo" is the out_backprop pixels the tasks read (each costs a full GEMM
row) over the pixels there are: the extra work of chunking along H and W.

    python benchmarks/bench_dask.py
"""

import itertools
import statistics
import time

import dask
import dask.array as da
import numpy as np

import convbp
import convbp.dask
from convbp._geometry import axis_halo


def median_time(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def halo_ratio(dx, geometry):
    """out_backprop pixels the blocks read / out_backprop pixels."""
    read = 0
    bounds = [tuple(itertools.accumulate((0,) + c)) for c in dx.chunks[1:3]]
    for i, j in itertools.product(range(len(bounds[0]) - 1), range(len(bounds[1]) - 1)):
        rows = [axis_halo(b[k], b[k + 1], geometry[0][a], 3, 2, 1, geometry[1][a])
                for a, (b, k) in enumerate(zip(bounds, (i, j)))]
        read += (rows[0].out_stop - rows[0].out_start) * (rows[1].out_stop - rows[1].out_start)
    return read / (geometry[0][0] * geometry[0][1])


def main():
    n, h, w, c, f = 512, 64, 64, 32, 64
    rng = np.random.default_rng(0)
    filt = rng.standard_normal((3, 3, c, f), dtype=np.float32)
    dy = rng.standard_normal((n, h // 2, w // 2, f), dtype=np.float32)
    flops = 2 * n * (h // 2) * (w // 2) * f * 9 * c
    out = np.empty((n, h, w, c), np.float32)
    # SAME, stride 2, 3x3 on 64: 32 output rows, pad_top 0.
    geometry = ((h // 2, w // 2), (0, 0))

    def in_memory():
        convbp.conv2d_backprop_input((n, h, w, c), filt, dy, 2, "SAME", out=out)

    base = median_time(in_memory)
    print(f"convbp {convbp.__version__}, dask {dask.__version__}, {dask.system.CPU_COUNT} cores; "
          f"N={n} {h}x{w}x{c}, 3x3x{f}, stride 2 SAME, float32")
    print(f"{'out_backprop chunks':<24} {'blocks':>6} {'halo':>6} {'time ms':>8} "
          f"{'GFLOP/s':>8} {'vs 1 call':>9}")
    print(f"{'in memory, one call':<24} {1:>6} {1:>6.2f} {base * 1e3:>8.1f} "
          f"{flops / base / 1e9:>8.1f} {1:>9.2f}")
    expected = out.copy()
    for chunks in [(64, 32, 32, f), (32, 32, 32, f), (64, 16, 32, f), (64, 8, 16, f),
                   (512, 4, 32, f), (16, 2, 2, f)]:
        dx = convbp.dask.conv2d_backprop_input((n, h, w, c), filt,
                                               da.from_array(dy, chunks=chunks), 2, "SAME")
        target = np.empty_like(out)

        def blocks():
            da.store(dx, target, lock=False, scheduler="threads")

        elapsed = median_time(blocks)
        np.testing.assert_allclose(target, expected, rtol=1e-4, atol=1e-3)
        print(f"{str(chunks[:3]):<24} {dx.npartitions:>6} {halo_ratio(dx, geometry):>6.2f} "
              f"{elapsed * 1e3:>8.1f} {flops / elapsed / 1e9:>8.1f} {base / elapsed:>9.2f}")


if __name__ == "__main__":
    main()
