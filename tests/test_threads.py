"""Thread rules: the default count's sources, the work threshold, the load check, libgomp's
bounded spinning -- and that none of them changes a result."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convbp
from convbp import _threads
from oracle import assert_close, direct_backprop_input, tf_same_pads


@pytest.fixture
def no_quota(monkeypatch):
    monkeypatch.setattr(_threads, "cgroup_cpu_quota", lambda: None)


def _affinity():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("value, expected", [("1", 1), ("1,4", 1), (" 1 ", 1),
                                             ("1000", None), ("0", None), ("abc", None),
                                             ("", None), ("-2", None)])
def test_omp_num_threads_caps_the_default(monkeypatch, no_quota, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    cores = _affinity()
    assert convbp.default_num_threads() == (cores if expected is None else expected)
    defaults = _threads.thread_defaults()
    assert defaults["default_num_threads"] == convbp.default_num_threads()
    if expected == 1 and cores > 1:
        assert defaults["source"] == "OMP_NUM_THREADS"


def test_omp_num_threads_is_read_in_a_fresh_process():
    code = "import convbp; print(convbp.default_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "1"


def _fake_cgroup(monkeypatch, files):
    monkeypatch.setattr(_threads, "_read", lambda path: files.get(path))
    _threads.cgroup_cpu_quota.cache_clear()


@pytest.fixture
def restore_quota_cache():
    yield
    _threads.cgroup_cpu_quota.cache_clear()


@pytest.mark.parametrize("files, quota", [
    # cgroup v2: the process's own cgroup and the ancestors' limits, the smallest wins.
    ({"/proc/self/cgroup": ["0::/kubepods/pod1"],
      "/sys/fs/cgroup/kubepods/pod1/cpu.max": ["150000", "100000"],
      "/sys/fs/cgroup/kubepods/cpu.max": ["max", "100000"]}, 2),
    ({"/proc/self/cgroup": ["0::/a/b"],
      "/sys/fs/cgroup/a/b/cpu.max": ["max", "100000"],
      "/sys/fs/cgroup/a/cpu.max": ["100000", "100000"]}, 1),
    ({"/proc/self/cgroup": ["0::/"], "/sys/fs/cgroup/cpu.max": ["50000", "100000"]}, 1),
    ({"/proc/self/cgroup": ["0::/"], "/sys/fs/cgroup/cpu.max": ["max", "100000"]}, None),
    # cgroup v1
    ({"/proc/self/cgroup": ["4:cpu,cpuacct:/"],
      "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": ["300000"],
      "/sys/fs/cgroup/cpu/cpu.cfs_period_us": ["100000"]}, 3),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": ["-1"],
      "/sys/fs/cgroup/cpu/cpu.cfs_period_us": ["100000"]}, None),
    ({}, None),  # nothing readable: no limit
    ({"/proc/self/cgroup": ["0::/"], "/sys/fs/cgroup/cpu.max": ["garbage"]}, None),
])
def test_cgroup_cpu_quota(monkeypatch, restore_quota_cache, files, quota):
    _fake_cgroup(monkeypatch, files)
    assert _threads.cgroup_cpu_quota() == quota
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    expected = _affinity() if quota is None else min(_affinity(), quota)
    assert convbp.default_num_threads() == expected == _threads.machine_cores()
    if quota is not None and quota < _affinity():
        assert _threads.thread_defaults()["source"] == "cgroup CPU quota"


def test_work_threshold_keeps_small_calls_on_one_thread(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 6e6)
    monkeypatch.setattr(_threads, "_last_team", (0.0, 1))  # no team ran lately
    assert _threads.thread_count(8, units=100, flops=1e6) == 1
    assert _threads.thread_count(8, units=100, flops=13e6) == 2
    assert _threads.thread_count(8, units=3, flops=1e12) == 3
    assert _threads.thread_count(None, units=100, flops=1e12) == convbp.default_num_threads()


def test_a_team_still_awake_takes_smaller_calls(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", 6e6)
    monkeypatch.setattr(_threads, "WARM_TEAM_SECONDS", 60.0)  # "just now", even on a slow CI
    monkeypatch.setattr(_threads, "_last_team", (0.0, 1))
    assert _threads.thread_count(2, units=100, flops=3e6) == 1      # cold: 12 MFLOP for two
    _threads.team_finished(2)
    assert _threads.thread_count(2, units=100, flops=3e6) == 2      # warm: 2 MFLOP for two
    assert _threads.thread_count(8, units=100, flops=3e6) == 3
    assert _threads.thread_count(2, units=100, flops=1.5e6) == 1
    monkeypatch.setattr(_threads, "WARM_TEAM_SECONDS", 0.0)
    assert _threads.thread_count(2, units=100, flops=3e6) == 1


def test_busy_cpus_are_left_alone(monkeypatch):
    monkeypatch.setattr(_threads, "ADAPT_TO_LOAD", True)
    cpus = os.cpu_count()
    monkeypatch.setattr(_threads, "_busy_cpus_elsewhere", lambda: 1)
    assert _threads.thread_count(cpus, units=100) == max(1, cpus - 1)
    monkeypatch.setattr(_threads, "_busy_cpus_elsewhere", lambda: 10 * cpus)
    assert _threads.thread_count(cpus, units=100) == 1
    monkeypatch.setattr(_threads, "_busy_cpus_elsewhere", lambda: 0)
    assert _threads.thread_count(cpus, units=100) == cpus


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux /proc/loadavg")
def test_busy_cpu_count_reads_loadavg():
    busy = _threads._busy_cpus_elsewhere()
    assert isinstance(busy, int) and busy >= 0


def test_results_do_not_depend_on_the_thread_rules(monkeypatch):
    rng = np.random.default_rng(3)
    dy = rng.standard_normal((3, 10, 10, 8)).astype(np.float32)
    filt = rng.standard_normal((3, 3, 6, 8)).astype(np.float32)
    results = []
    for threshold, adapt, busy in ((0, False, 0), (16e6, True, 0), (0, True, 5), (1e30, False, 0)):
        monkeypatch.setattr(_threads, "MIN_FLOPS_PER_THREAD", threshold)
        monkeypatch.setattr(_threads, "ADAPT_TO_LOAD", adapt)
        monkeypatch.setattr(_threads, "_busy_cpus_elsewhere", lambda busy=busy: busy)
        results.append(convbp.conv2d_backprop_input((3, 10, 10, 6), filt, dy, 1, "SAME",
                                                    num_threads=2))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    expected = direct_backprop_input(dy, filt, (10, 10),
                                     pads=tf_same_pads((10, 10), (3, 3), (1, 1), (1, 1)))
    assert_close(results[0], expected, np.float32, 8 * 9)


_SPIN_PROBE = textwrap.dedent("""
    import os, time
    import numpy as np
    import convbp
    from convbp import _threads
    _threads.ADAPT_TO_LOAD = False
    print(os.environ.get("GOMP_SPINCOUNT", "unset"))

    def cpu_ns():
        total = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total[tid] = int(f.read().split()[0])
        return total

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
    dy = rng.standard_normal((8, 28, 28, 64), dtype=np.float32)
    spent = []
    for _ in range(3):
        convbp.conv2d_backprop_input((8, 28, 28, 64), w, dy, 1, "SAME", num_threads=2)
        before = cpu_ns()
        time.sleep(0.2)
        after = cpu_ns()
        me = str(os.getpid())
        spent.append(sum(after[t] - before.get(t, 0) for t in after if t != me))
    print(min(spent) / 1e6)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc")
def test_idle_openmp_threads_stop_spinning_soon():
    # libgomp's default (300,000 spin rounds) keeps an idle team busy for milliseconds after
    # each call; convbp bounds it for its own load of libgomp, and leaves the environment as
    # it found it.
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-P", "-c", _SPIN_PROBE], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "unset"
    assert float(out[1]) < 3.0, f"idle team threads ran {out[1]} ms in 200 ms"


def test_user_wait_policy_is_left_alone():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.pop("GOMP_SPINCOUNT", None)
    code = "import os, convbp; print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["PASSIVE", "None"]
