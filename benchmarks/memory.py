"""Peak extra memory of convbp.conv2d_backprop_input, against the full column buffer it avoids.

A textbook GEMM + col2im builds one column buffer of N*OH*OW*KH*KW*C_in values (882 MiB for the
first case below); convbp works through cache-sized chunks of it within a workspace limit
(``convbp.set_workspace_limit``, default 64 MiB).  Each case runs in a fresh subprocess and
reports two numbers, both minus the result array (which the caller asked for):

- traced: the tracemalloc peak during the call over the memory traced before it.  NumPy reports
  its allocations to tracemalloc, so this counts every array convbp allocates (workspace, copies),
  but not memory taken by C code directly (OpenMP thread stacks, BLAS buffers).
- RSS: the growth of the process's resident-set high-water mark (``resource.getrusage``
  ``ru_maxrss``) over the resident set just before the call -- everything, at page granularity.

Run from the repository root with convbp installed::

    python benchmarks/memory.py
    python benchmarks/memory.py --workspace-limit 16 --threads 1
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import convbp

MiB = 2**20
# name: (N, H, W, C_in, KH, KW, C_out), stride 1, SAME, float32
CASES = {
    "16x112x112x128 3x3x128x128": (16, 112, 112, 128, 3, 3, 128),
    "1x1024x1024x64 3x3x64x64": (1, 1024, 1024, 64, 3, 3, 64),
    "8x14x14x512 3x3x512x512": (8, 14, 14, 512, 3, 3, 512),
}
LAYOUTS = ("NHWC", "NCHW")


def current_rss():
    """Resident set size now, bytes (Linux /proc; falls back to the high-water mark)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss()


def max_rss():
    """Resident-set high-water mark of this process, bytes (ru_maxrss is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(case, layout, threads, limit_mib):
    """Run one case in this process; returns a dict of byte counts and the call's time."""
    n, h, w, c, kh, kw, f = CASES[case]
    if limit_mib is not None:
        convbp.set_workspace_limit(int(limit_mib * MiB))
    # Warm up on a tiny problem: imports, the BLAS thread controller and the OpenMP pool.
    small = np.ones((1, 8, 8, 4), np.float32)
    convbp.conv2d_backprop_input((1, 8, 8, 4), np.ones((3, 3, 4, 4), np.float32), small, 1,
                                 "SAME", num_threads=threads)

    rng = np.random.default_rng(0)
    dy_shape = (n, h, w, f) if layout == "NHWC" else (n, f, h, w)  # stride 1 SAME: OH, OW = H, W
    sizes = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    dy = rng.standard_normal(dy_shape, dtype=np.float32)
    filt = rng.standard_normal((kh, kw, c, f), dtype=np.float32)

    rss_before = current_rss()
    hwm_before = max_rss()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    dx = convbp.conv2d_backprop_input(sizes, filt, dy, 1, "SAME", data_format=layout,
                                      num_threads=threads)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm_after = max_rss()
    return dict(case=case, layout=layout, threads=threads, limit=convbp.get_workspace_limit(),
                result=dx.nbytes, column_buffer=n * h * w * kh * kw * c * 4,
                traced_extra=traced_peak - traced_before - dx.nbytes,
                rss_extra=hwm_after - max(rss_before, 0) - dx.nbytes,
                rss_bound=hwm_after <= hwm_before, seconds=seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace-limit", type=float, default=None, metavar="MIB",
                   help="convbp.set_workspace_limit in MiB (default: convbp's own, 64 MiB)")
    p.add_argument("--threads", type=int, default=None,
                   help="num_threads for convbp (default: all cores available)")
    p.add_argument("--cases", default="", help="comma-separated substrings of case names")
    p.add_argument("--layout", choices=LAYOUTS + ("all",), default="all")
    p.add_argument("--one", nargs=2, metavar=("CASE", "LAYOUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = args.threads or convbp.default_num_threads()

    if args.one:  # child process: measure one case, print one JSON line
        print(json.dumps(measure(args.one[0], args.one[1], threads, args.workspace_limit)))
        return 0

    wanted = [s.strip() for s in args.cases.split(",") if s.strip()]
    cases = [name for name in CASES if not wanted or any(s in name for s in wanted)]
    layouts = LAYOUTS if args.layout == "all" else (args.layout,)
    limit = args.workspace_limit
    print(f"convbp {convbp.__version__}: peak extra memory of conv2d_backprop_input "
          f"(float32, stride 1, SAME), {threads} thread(s), workspace limit "
          f"{limit if limit is not None else convbp.get_workspace_limit() / MiB:g} MiB")
    print("extra = peak during the call minus memory before it minus the result; each case in "
          "a fresh process\n")
    header = (f"{'case':<28} {'layout':<6} {'result':>8} {'full cols':>9} {'traced':>8} "
              f"{'RSS':>8} {'traced/full':>11} {'1 call':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for case in cases:
        for layout in layouts:
            cmd = [sys.executable, os.path.abspath(__file__), "--one", case, layout,
                   "--threads", str(threads)]
            if limit is not None:
                cmd += ["--workspace-limit", str(limit)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{case:<28} {layout:<6} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{case:<28} {layout:<6} {r['result'] / MiB:>4.0f} MiB "
                  f"{r['column_buffer'] / MiB:>5.0f} MiB {r['traced_extra'] / MiB:>4.1f} MiB {r['rss_extra'] / MiB:>4.1f} MiB "
                  f"{r['traced_extra'] / r['column_buffer']:>10.1%} {r['seconds']:>6.2f}s"
                  + (" (RSS: upper bound, high-water mark set before the call)"
                     if r["rss_bound"] else ""), flush=True)
    print("\nMiB = 2**20 bytes; 'full cols' = N*OH*OW*KH*KW*C_in*4, the column buffer of a "
          "one-shot GEMM + col2im")
    return 0 if len(rows) == len(cases) * len(layouts) else 1


if __name__ == "__main__":
    sys.exit(main())
