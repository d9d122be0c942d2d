"""Threads and resources: concurrent calls match serial ones, the GIL is released while the
kernel runs, and resident memory stays flat over many calls."""

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import convbp
from oracle import assert_close, direct_backprop_input, tf_same_pads


def _task(seed):
    """A call of its own shape, layout, dtype and thread count: (args, kwargs, check)."""
    rng = np.random.default_rng(seed)
    dtype = (np.float32, np.float64)[seed % 2]
    data_format = ("NHWC", "NCHW")[seed // 2 % 2]
    n, h, w = 1 + seed % 3, 5 + seed % 7, 4 + seed % 5
    c, f, k, s = 1 + seed % 4, 2 + seed % 3, 1 + seed % 3, 1 + seed % 2
    filt = rng.standard_normal((k, k, c, f)).astype(dtype)
    pads = tf_same_pads((h, w), (k, k), (s, s), (1, 1))
    dy = rng.standard_normal((n, -(-h // s), -(-w // s), f)).astype(dtype)
    sizes = (n, h, w, c)
    if data_format == "NCHW":
        dy, sizes = dy.transpose(0, 3, 1, 2), (n, c, h, w)
    kwargs = dict(data_format=data_format, num_threads=(None, 1, 2)[seed % 3])
    expected = direct_backprop_input(dy if data_format == "NHWC" else dy.transpose(0, 2, 3, 1),
                                     filt, (h, w), (s, s), pads=pads)
    return (sizes, filt, dy, s, "SAME"), kwargs, (expected, dtype, f * k * k)


def _call(task):
    args, kwargs, _ = task
    return convbp.conv2d_backprop_input(*args, **kwargs)


def test_eight_threads_match_serial_calls():
    tasks = [_task(seed) for seed in range(24)]
    serial = [_call(t) for t in tasks]
    for (args, kwargs, (expected, dtype, length)), dx in zip(tasks, serial):
        if kwargs["data_format"] == "NCHW":
            dx = dx.transpose(0, 2, 3, 1)
        assert_close(dx, expected, dtype, length)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            concurrent = list(pool.map(_call, tasks * 4))
            for i, dx in enumerate(concurrent):
                assert np.array_equal(dx, serial[i % len(tasks)])


def test_concurrent_calls_into_disjoint_views_of_one_array():
    # Eight threads write eight slices of one out array at once; nothing else is touched.
    rng = np.random.default_rng(1)
    filt = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    dys = [rng.standard_normal((2, 6, 6, 3)).astype(np.float32) for _ in range(8)]
    big = np.full((8, 2, 6, 6, 4), 5.0, np.float32)

    def work(i):
        return convbp.conv2d_backprop_input((2, 6, 6, 2), filt, dys[i], 1, "SAME",
                                            out=big[i, ..., 1:3])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))
    pads = tf_same_pads((6, 6), (3, 3), (1, 1), (1, 1))
    for i in range(8):
        assert_close(big[i, ..., 1:3], direct_backprop_input(dys[i], filt, (6, 6), pads=pads),
                     np.float32, 27)
    assert np.all(big[..., [0, 3]] == 5.0)


def test_gil_is_released_during_compute():
    # Python code in this thread observes the result half-written while the call runs in
    # another thread: only possible if the kernel runs without the GIL.  Retried with a larger
    # call if the first finished before the poll loop saw it (no timing is asserted).
    rng = np.random.default_rng(2)
    filt = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    for n in (32, 128, 512):
        dy = rng.standard_normal((n, 48, 48, 32)).astype(np.float32)
        out = np.full((n, 48, 48, 32), np.nan, np.float32)
        worker = threading.Thread(target=convbp.conv2d_backprop_input,
                                  args=((n, 48, 48, 32), filt, dy, 1, "SAME"),
                                  kwargs=dict(out=out, num_threads=1))
        polls = partial_states = 0
        worker.start()
        while worker.is_alive():
            polls += 1
            written = np.count_nonzero(~np.isnan(out[:, 0, 0, 0]))
            partial_states += 0 < written < n
        worker.join()
        assert not np.isnan(out).any()
        if partial_states:
            break
    assert polls > 1 and partial_states > 0


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_no_leak_over_10000_calls():
    rng = np.random.default_rng(3)
    filt = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    dy_nchw = np.ascontiguousarray(dy.transpose(0, 3, 1, 2))
    out = np.empty((2, 2, 8, 8), np.float32)
    pads = tf_same_pads((8, 8), (3, 3), (2, 2), (1, 1))
    expected = direct_backprop_input(dy, filt, (8, 8), (2, 2), pads=pads)

    def calls(count):
        for i in range(count):
            kind = i % 4
            if kind == 0:
                # The default thread count on every 40th call (an OpenMP team per call is slow
                # on a busy machine); one thread otherwise.
                dx = convbp.conv2d_backprop_input((2, 8, 8, 2), filt, dy, 2, "SAME",
                                                  num_threads=None if i % 40 == 0 else 1)
            elif kind == 1:
                dx = convbp.conv2d_backprop_input((2, 2, 8, 8), filt, dy_nchw, 2, "SAME",
                                                  data_format="NCHW", out=out, num_threads=1)
            elif kind == 2:
                dx = convbp.conv2d_backprop_input((8, 8), filt.tolist(), dy[:, ::-1], [2, 2],
                                                  "SAME", num_threads=1)
            else:
                try:
                    convbp.conv2d_backprop_input((2, 8, 8, 2), filt, dy[:, :3], 2, "SAME")
                except ValueError:
                    continue
                raise AssertionError("expected a ValueError")
        return dx

    calls(500)  # warm-up: caches, thread pools, allocator arenas
    before = _rss_bytes()
    calls(10_000)
    growth = _rss_bytes() - before
    assert growth < 20 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"
    assert_close(calls(1), expected, np.float32, 36)


def test_blas_held_to_one_thread_from_any_python_thread_and_restored():
    # The kernel's threads each run a single-threaded GEMM; the BLAS they call (SciPy's) must
    # be held to one thread during a call made from any Python thread (not only the first to
    # set a limit), and the caller's setting restored afterwards.  Other BLAS libraries
    # (NumPy's own OpenBLAS) are never called by a kernel and keep their setting.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convbp import _threads

    kernel_path = _threads.kernel_blas_path()
    assert kernel_path is not None, "the BLAS scipy.linalg.cython_blas calls is not found"

    def blas_threads():
        return {os.path.realpath(info["filepath"]): info["num_threads"]
                for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}

    before = blas_threads()
    assert kernel_path in before
    seen = []

    def worker():
        with _threads.single_threaded_blas():
            seen.append(blas_threads())
        convbp.conv2d_backprop_input((1, 6, 6, 2), np.ones((3, 3, 2, 2), np.float32),
                                     np.ones((1, 6, 6, 2), np.float32), 1, "SAME")

    for _ in range(2):  # a fresh Python thread each time
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    held = dict(before, **{kernel_path: 1})
    assert seen == [held] * 2
    assert blas_threads() == before


def test_every_blas_held_when_the_kernels_one_is_unknown(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convbp import _threads

    monkeypatch.setattr(_threads, "kernel_blas_path", lambda: None)
    monkeypatch.setattr(_threads, "_blas_controls", None)  # found again, without the path
    before = [info["num_threads"] for info in threadpoolctl.threadpool_info()
              if info["user_api"] == "blas"]
    with _threads.single_threaded_blas():
        inside = [info["num_threads"] for info in threadpoolctl.threadpool_info()
                  if info["user_api"] == "blas"]
    assert inside == [1] * len(before)
    assert [info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"] == before
