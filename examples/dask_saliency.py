"""Saliency maps for a batch too large to hold at once, with convbp.dask.

The gradient of a score with respect to the input images of a convolution layer (its
``out_backprop`` generated here, as a network's upper layers would give it) is computed block by
block: 4096 images of 64x64x32 (a 2 GiB float32 input gradient, never in memory as a whole),
reduced to one 64x64 saliency map per image (max |gradient| over channels).  Prints a progress
bar, the time taken, the peak memory of the process (or of each worker, with --distributed), and
checks one block against the in-memory call.

    python examples/dask_saliency.py                 # local threaded scheduler
    python examples/dask_saliency.py --distributed   # 2 worker processes, 1 thread each
    python examples/dask_saliency.py --small         # a quick run (the tests use it)
"""

import argparse
import resource
import time

import dask
import dask.array as da
import numpy as np
from dask.diagnostics import ProgressBar

import convbp
import convbp.dask


def peak_rss_mib():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="256 images instead of 4096")
    parser.add_argument("--distributed", action="store_true",
                        help="a distributed LocalCluster of 2 single-threaded worker processes")
    args = parser.parse_args()

    n, chunk = (256, 32) if args.small else (4096, 128)
    h = w = 64
    c, f = 32, 64                                   # layer: 3x3, 32 -> 64 channels, stride 2
    filt = np.random.default_rng(0).standard_normal((3, 3, c, f), dtype=np.float32) / 17
    # d(score)/d(layer output), 32x32x64 per image, generated lazily chunk by chunk: images in
    # chunks of `chunk`, rows in chunks of 16 (so each result block also needs a halo row).
    dy = da.random.default_rng(1).standard_normal((n, h // 2, w // 2, f), dtype=np.float32,
                                                  chunks=(chunk, 16, w // 2, f))
    dx = convbp.dask.conv2d_backprop_input((n, h, w, c), filt, dy, 2, "SAME")
    saliency = abs(dx).max(axis=-1)                 # (n, 64, 64)
    print(f"{n} images {h}x{w}x{c}: input gradient {dx.nbytes / 2**30:.2f} GiB in "
          f"{dx.npartitions} blocks of {dx.chunksize} (never all in memory), "
          f"out_backprop {dy.nbytes / 2**30:.2f} GiB in {dy.npartitions} chunks")

    start = time.perf_counter()
    if args.distributed:
        from distributed import Client, LocalCluster, progress
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            before = client.run(peak_rss_mib)
            future = client.compute(saliency)
            progress(future)
            maps = future.result()
            elapsed = time.perf_counter() - start
            peaks = client.run(peak_rss_mib)
            threads = client.submit(convbp.dask.task_threads, pure=False).result()
        print(f"\ntook {elapsed:.2f} s; peak memory (ru_maxrss) per worker process: "
              + ", ".join(f"{peaks[a]:.0f} MiB ({before[a]:.0f} before)" for a in peaks)
              + f"; convbp threads a task: {threads}")
    else:
        before = peak_rss_mib()
        with ProgressBar():
            maps = saliency.compute()
        elapsed = time.perf_counter() - start
        print(f"took {elapsed:.2f} s on {dask.system.CPU_COUNT} cores (threaded scheduler); "
              f"peak memory of the process (ru_maxrss): {peak_rss_mib():.0f} MiB, "
              f"{before:.0f} MiB before computing")
    print(f"saliency maps {maps.shape}: mean {maps.mean():.4f}, max {maps.max():.4f}")

    # One block against the in-memory call on the same images.
    dy_block = dy[:chunk].compute()
    expected = convbp.conv2d_backprop_input((chunk, h, w, c), filt, dy_block, 2, "SAME")
    block = dx[:chunk].compute(scheduler="sync")
    err = np.abs(block - expected).max() / np.abs(expected).max()
    same = np.array_equal(block, expected)
    print(f"check: images 0..{chunk - 1} equal the in-memory conv2d_backprop_input "
          f"({'bitwise' if same else f'max relative difference {err:.1e}'})")
    assert err < 1e-5
    assert np.array_equal(maps[:chunk], np.abs(block).max(axis=-1))  # the big run agrees


if __name__ == "__main__":
    main()
