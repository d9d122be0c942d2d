"""convbp under the load callers create: a second process, a busy core, NumPy's BLAS, idle gaps.

Run:  python benchmarks/bench_contention.py [--rounds 8] [--calls 40]

Each situation is timed for the default thread count and for ``num_threads=1`` and reported as
the ratio to the quiet single-thread (or back-to-back) time.  Situations:

* ``alone``: back-to-back calls, nothing else running;
* ``2nd convbp``: another process calls convbp on the same shape in a loop (multiprocessing,
  pytest-xdist, Dask worker processes);
* ``busy core``: another process spins in plain Python;
* ``after matmul``: a NumPy 512x512 matmul right before each call (NumPy's OpenBLAS threads
  then spin for ~0.1 s);
* ``after idle``: the first call after the process slept 0.3 s.

Every round's median is kept and the worst round is reported: the targets are per round.
Time only on a quiet machine, inside ``flock /tmp/convbp-bench.lock``.
"""

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = {
    # name: (input NHWC, filter HWIO, strides, padding)
    "small 32x8x8x16 3x3": ((32, 8, 8, 16), (3, 3, 16, 16), 1, "SAME"),
    "mnist 64x28x28x1 5x5x32": ((64, 28, 28, 1), (5, 5, 1, 32), 1, "VALID"),
    "r50_s4 8x14x14x256 3x3": ((8, 14, 14, 256), (3, 3, 256, 256), 1, "SAME"),
}


def _operands(shape):
    import convbp  # noqa: F401  (imported in the worker too)
    sizes, fshape, stride, padding = shape
    rng = np.random.default_rng(0)
    n, h, w, _ = sizes
    kh, kw = fshape[:2]
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    filt = rng.standard_normal(fshape, dtype=np.float32)
    dy = rng.standard_normal((n, oh, ow, fshape[3]), dtype=np.float32)
    return sizes, filt, dy, stride, padding


def _call(ops, threads):
    import convbp
    sizes, filt, dy, stride, padding = ops
    convbp.conv2d_backprop_input(sizes, filt, dy, stride, padding, num_threads=threads)


def _partner(kind, shape, stop):
    """The other process: convbp in a loop, or plain Python spinning."""
    if kind == "convbp":
        ops = _operands(shape)
        while not stop.is_set():
            _call(ops, None)
    else:
        while not stop.is_set():
            sum(range(10000))


def _timed(ops, threads, before=None, calls=40):
    times = []
    for _ in range(calls):
        if before is not None:
            before()
        start = time.perf_counter()
        _call(ops, threads)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(shape, rounds, calls):
    ops = _operands(shape)
    for _ in range(5):
        _call(ops, None)
        _call(ops, 1)
    quiet = {t: min(_timed(ops, t, calls=calls) for _ in range(3)) for t in (None, 1)}
    rows = {"alone": quiet}
    ctx = mp.get_context("spawn")
    for kind in ("convbp", "busy"):
        stop = ctx.Event()
        proc = ctx.Process(target=_partner, args=(kind, shape, stop), daemon=True)
        proc.start()
        time.sleep(1.0)  # let it import and start
        worst = {None: 0.0, 1: 0.0}
        for _ in range(rounds):
            for t in (None, 1):
                worst[t] = max(worst[t], _timed(ops, t, calls=calls))
        stop.set()
        proc.join(10)
        rows["2nd convbp" if kind == "convbp" else "busy core"] = worst
    a = np.random.default_rng(1).standard_normal((512, 512))
    worst = {None: 0.0, 1: 0.0}
    for _ in range(rounds):
        for t in (None, 1):
            worst[t] = max(worst[t], _timed(ops, t, before=lambda: a @ a, calls=calls))
    rows["after matmul"] = worst
    idle = {None: [], 1: []}
    for _ in range(max(4, rounds)):
        for t in (None, 1):
            time.sleep(0.3)
            start = time.perf_counter()
            _call(ops, t)
            idle[t].append(time.perf_counter() - start)
    rows["after idle"] = {t: statistics.median(v) for t, v in idle.items()}
    rows["after idle (worst)"] = {t: max(v) for t, v in idle.items()}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    import convbp
    from convbp import _threads
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    print(f"convbp {convbp.__version__}; {model}; {os.cpu_count()} CPUs; Python "
          f"{platform.python_version()}; default threads {_threads.thread_defaults()}; "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'convbp default')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"medians of {args.calls} calls, worst of {args.rounds} rounds; ms, and the ratio to "
          f"the quiet num_threads=1 time (after idle: to num_threads=1 after the same idle; "
          f"after matmul: to the quiet time of the same thread count)")
    print(f"{'shape':26s} {'situation':20s} {'default ms':>10s} {'1 thread ms':>11s} "
          f"{'default/1t':>10s}")
    for name, shape in SHAPES.items():
        rows = measure(shape, args.rounds, args.calls)
        one = rows["alone"][1]
        for situation, times in rows.items():
            if situation.startswith("after idle"):
                ratio = times[None] / times[1]
            elif situation == "after matmul":
                ratio = times[None] / rows["alone"][None]
            else:
                ratio = times[None] / one
            print(f"{name:26s} {situation:20s} {times[None] * 1e3:10.3f} {times[1] * 1e3:11.3f} "
                  f"{ratio:10.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
