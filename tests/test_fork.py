import multiprocessing
import sys

import numpy as np
import pytest

import convbp
from oracle import assert_close, direct_backprop_input, tf_same_pads


def _gradient(num_threads):
    rng = np.random.default_rng(5)
    dy = rng.standard_normal((4, 9, 9, 6)).astype(np.float32)
    filt = rng.standard_normal((3, 3, 5, 6)).astype(np.float32)
    return dy, filt, convbp.conv2d_backprop_input((4, 9, 9, 5), filt, dy, 1, "SAME",
                                                  num_threads=num_threads)


def _child(queue):
    queue.put(_gradient(2)[2])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_after_threaded_call_does_not_hang():
    # GNU OpenMP cannot restart its threads in a child forked after a parallel region; convbp
    # must notice and compute single-threaded there instead of hanging.
    dy, filt, parent = _gradient(2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    child = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    np.testing.assert_array_equal(child, parent)  # bitwise: thread count never changes results
    expected = direct_backprop_input(dy, filt, (9, 9), pads=tf_same_pads((9, 9), (3, 3),
                                                                         (1, 1), (1, 1)))
    assert_close(child, expected, np.float32, 6 * 9)
