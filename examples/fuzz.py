"""Fuzz conv2d_backprop_input with many random calls, valid and malformed, in child processes.

Each batch of calls runs in a fresh child process, so a crash (a segfault shows as a negative
exit code) or a hang is caught and reported with a reproducer instead of killing the run.
Calls come from ``tests/test_fuzz.py``'s generator: a valid call must return the direct float64
loop's result, a malformed one must raise ValueError or TypeError naming the broken argument.

    python examples/fuzz.py --calls 100000 --seed 0        # the full run
    python examples/fuzz.py --seed 0 --case 1234           # show and run one call in-process

Run from the repository root with convbp installed (the test extras provide hypothesis).
"""

import argparse
import collections
import multiprocessing as mp
import os
import sys
import time
import traceback
from queue import Empty

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

HANG_SECONDS = 600


def _case(seed, index):
    import test_fuzz
    return test_fuzz.build_case(test_fuzz.NumpyDraw([seed, index]))


OUTCOMES = ("result", "ValueError", "TypeError", "wrong")


def _worker(seed, start, stop, progress, counts, queue):
    """Run calls [start, stop).  ``progress`` holds the index being run and ``counts`` the
    outcomes so far (shared memory, so both survive a crash); failures go to ``queue``."""
    import warnings

    sys.modules.setdefault("torch", None)  # the oracle's optional PyTorch is not needed here
    import test_fuzz
    warnings.simplefilter("ignore")
    crash_at = int(os.environ.get("CONVBP_FUZZ_SELFTEST_CRASH_AT", -1))  # checks this script
    for index in range(start, stop):
        progress.value = index
        if index == crash_at:
            import signal
            os.kill(os.getpid(), signal.SIGSEGV)
        case = _case(seed, index)
        try:
            outcome = test_fuzz.check_case(case)
        except AssertionError as exc:
            outcome = "wrong"
            queue.put((index, f"wrong outcome: {exc}"))
        except Exception as exc:  # any other exception type is a failure too
            outcome = "wrong"
            queue.put((index, f"unexpected {type(exc).__name__}: {exc}\n"
                              f"{traceback.format_exc(limit=3)}"))
        counts[OUTCOMES.index(outcome)] += 1
    progress.value = stop


def _reproducer(seed, index):
    import test_fuzz
    return (f"    {test_fuzz.describe(_case(seed, index))}\n"
            f"    reproduce: python examples/fuzz.py --seed {seed} --case {index}")


def run(calls, seed, batch, jobs):
    ctx = mp.get_context("spawn")  # fresh interpreter per batch, no inherited OpenMP state
    pending = collections.deque((s, min(s + batch, calls)) for s in range(0, calls, batch))
    running = []
    totals, failures, crashes, hangs = collections.Counter(), [], [], []
    children = 0
    while pending or running:
        while pending and len(running) < jobs:
            start, stop = pending.popleft()
            progress, counts = ctx.Value("q", start), ctx.Array("q", len(OUTCOMES))
            queue = ctx.Queue()
            proc = ctx.Process(target=_worker, args=(seed, start, stop, progress, counts, queue))
            proc.start()
            children += 1
            running.append((proc, stop, progress, counts, queue, time.monotonic()))
        time.sleep(0.05)
        for item in list(running):
            proc, stop, progress, counts, queue, started = item
            while not queue.empty():
                failures.append(queue.get())
            if proc.is_alive() and time.monotonic() - started < HANG_SECONDS:
                continue
            index = progress.value
            hung = proc.is_alive()
            if hung:  # kill it, record the call, skip it
                proc.kill()
                hangs.append(index)
            proc.join()
            try:
                while True:
                    failures.append(queue.get(timeout=1))
            except Empty:
                pass
            running.remove(item)
            totals.update(dict(zip(OUTCOMES, counts[:])))
            if proc.exitcode == 0 and index == stop:
                continue
            if not hung:
                crashes.append((index, proc.exitcode))
            if index + 1 < stop:  # run the rest of the batch in a fresh process
                pending.appendleft((index + 1, stop))
    return totals, failures, crashes, hangs, children


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="number of calls")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument("--batch", type=int, default=2500, help="calls per child process")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="child processes at a time")
    parser.add_argument("--case", type=int, help="show and run one call in this process")
    args = parser.parse_args(argv)

    if args.case is not None:
        import test_fuzz
        case = _case(args.seed, args.case)
        print(test_fuzz.describe(case))
        print("outcome:", test_fuzz.check_case(case))
        return 0

    t0 = time.monotonic()
    totals, failures, crashes, hangs, children = run(args.calls, args.seed, args.batch,
                                                     args.jobs)
    elapsed = time.monotonic() - t0
    errors = {k: v for k, v in totals.items() if k not in ("result", "wrong")}
    done = sum(totals.values()) + len(crashes) + len(hangs)
    print(f"convbp fuzz: seed {args.seed}, {done} calls in {children} child processes "
          f"({args.jobs} at a time), {elapsed:.0f} s")
    print(f"  results checked against the direct loop: {totals['result']}")
    print(f"  errors raised as expected (right type, argument named): "
          f"{sum(errors.values())} ({', '.join(f'{k} {v}' for k, v in sorted(errors.items()))})")
    print(f"  wrong results or wrong errors: {totals['wrong']}")
    print(f"  crashes (child killed by a signal or exited abnormally): {len(crashes)}")
    print(f"  hangs (over {HANG_SECONDS} s): {len(hangs)}")
    for index, message in failures[:20]:
        print(f"\nWRONG case {index}: {message}\n{_reproducer(args.seed, index)}")
    for index, code in crashes[:20]:
        print(f"\nCRASH case {index} (exit code {code}):\n{_reproducer(args.seed, index)}")
    for index in hangs[:20]:
        print(f"\nHANG case {index}:\n{_reproducer(args.seed, index)}")
    return 1 if failures or crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
