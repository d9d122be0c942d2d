"""Threads: how many a call uses, how OpenMP's idle threads wait, BLAS held to one thread.

The rules, measured on the project's 2-core machines (see README "Threads"):

* The default thread count is the cores the process may use: the affinity mask, the cgroup
  CPU quota (a container limited by ``cpu.max`` on a big host) and ``OMP_NUM_THREADS``,
  whichever is smallest.
* A call too small for threads to pay runs on one thread: each thread needs at least
  ``MIN_FLOPS_PER_THREAD`` floating-point operations.  Starting and joining a team costs tens
  of microseconds warm and up to milliseconds when the other core is busy or its thread sleeps.
* A call takes only the cores nothing else is running on (Linux: the count of runnable tasks in
  ``/proc/loadavg``, read in about 2 us): a team must wait at its end for every member, and a
  member queued behind another process's thread -- a second process calling convbp, a busy
  process, NumPy's OpenBLAS threads spinning after a matmul -- holds the whole call up.
  Thread counts never change results (the work split does not depend on them).
* Idle OpenMP threads spin for a bounded time, not libgomp's default 300,000 rounds (or
  libomp's 200 ms): with a second process on the same cores, threads spinning in a barrier
  while their partner is descheduled turned a 0.1 ms call into 10 ms.  The setting is made for
  convbp's own load of the runtime only (the environment is restored at once), and a user's
  ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``KMP_BLOCKTIME`` always wins.
* The BLAS convbp's kernels call -- the library ``scipy.linalg.cython_blas`` is linked to --
  is held to one thread while convbp's threads run, each of which calls a single-threaded GEMM;
  the caller's setting is restored afterwards.  Other BLAS libraries in the process (NumPy's
  own OpenBLAS) are never called by a kernel and are left alone; when the kernels' library
  cannot be told, every loaded BLAS is held.
"""

import ctypes
import functools
import importlib
import math
import os
import threading
import time
from contextlib import contextmanager

__all__ = ["default_num_threads", "machine_cores", "thread_count", "team_finished",
           "thread_defaults", "kernel_team",
           "single_threaded_blas", "bounded_openmp_spinning"]

# Operations a thread must have for a second one to pay (2 per multiply-add).  Measured warm on
# the 2-core EPYC: two threads already gain 25-30% at 2-10 MFLOP (0.1-0.25 ms calls), but one
# late team member (woken from sleep, or queued behind another process for a scheduler slice)
# costs 0.1-3 ms, so calls under ~0.25 ms of one thread's work (about 12 MFLOP) keep to one.
MIN_FLOPS_PER_THREAD = 6e6
# Except while the team is still awake: within WARM_TEAM_SECONDS of the end of the last
# multi-threaded call its threads are spinning or just asleep, and a second thread starts in
# microseconds.  Measured on the 2-core EPYC VM (the digits example's 2.4 MFLOP layers between
# 38 MFLOP ones, NumPy work in the gaps): two threads took 85 us where one took 110; after
# busy gaps of up to 0.2 ms two threads cost no more than one, after 0.4-0.8 ms 1.2-1.6x more
# (a sleeping vCPU is slow to wake).  Then one thread per WARM_MIN_FLOPS_PER_THREAD operations.
WARM_TEAM_SECONDS = 2e-4
WARM_MIN_FLOPS_PER_THREAD = 1e6

# libgomp's spin rounds before an idle thread sleeps (default 300,000, ~1-3 ms): ~20-60 us, long
# enough for back-to-back calls to find their team awake, short enough that a descheduled
# partner costs little.
_GOMP_SPIN_COUNT = 10000


# LLVM's libomp (a Clang build) spins KMP_BLOCKTIME milliseconds (default 200) instead.
_KMP_BLOCKTIME_MS = 1


@contextmanager
def bounded_openmp_spinning():
    """Around the import of the OpenMP extensions and a first OpenMP call: libgomp reads its
    spin count when loaded, libomp its block time when first used."""
    if "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    settings = {"GOMP_SPINCOUNT": str(_GOMP_SPIN_COUNT), "KMP_BLOCKTIME": str(_KMP_BLOCKTIME_MS)}
    added = [name for name in settings if name not in os.environ]
    for name in added:
        os.environ[name] = settings[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


# ---------------------------------------------------------------------------------------------
# How many threads.

def _affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _read(path):
    try:
        with open(path) as f:
            return f.read().split()
    except (OSError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=None)
def cgroup_cpu_quota() -> "int | None":
    """CPUs the process's cgroup quota allows (ceil(quota / period)), or None if unlimited.

    cgroup v2 ``cpu.max`` of the process's cgroup and its ancestors, else cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; read once.
    """
    limits = []
    own = "/"
    for line in (_read("/proc/self/cgroup") or []):
        if line.startswith("0::"):  # the cgroup v2 hierarchy
            own = line[3:] or "/"
    parts = [p for p in own.split("/") if p]
    for depth in range(len(parts), -1, -1):
        words = _read(os.path.join("/sys/fs/cgroup", *parts[:depth], "cpu.max"))
        if words and len(words) == 2 and words[0] != "max":
            try:
                limits.append(int(words[0]) / int(words[1]))
            except (ValueError, ZeroDivisionError):
                pass
    if not limits:
        for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
            quota, period = _read(f"{base}/cpu.cfs_quota_us"), _read(f"{base}/cpu.cfs_period_us")
            try:
                if quota and period and int(quota[0]) > 0 and int(period[0]) > 0:
                    limits.append(int(quota[0]) / int(period[0]))
                    break
            except ValueError:
                pass
    return max(1, math.ceil(min(limits))) if limits else None


def _omp_num_threads():
    """The first value of ``OMP_NUM_THREADS`` ("4" or the nested "4,2"), or None if unset or
    not a positive integer."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def machine_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by the cgroup CPU quota.

    Work is split by this count -- a property of the machine, never of a call's thread count --
    so results are bitwise identical for any number of threads.
    """
    quota = cgroup_cpu_quota()
    cores = _affinity_cores()
    return min(cores, quota) if quota else cores


def thread_defaults() -> dict:
    """The default thread count and where it came from, as a dict."""
    affinity, quota, env = _affinity_cores(), cgroup_cpu_quota(), _omp_num_threads()
    candidates = [("affinity mask", affinity)]
    if quota is not None:
        candidates.append(("cgroup CPU quota", quota))
    if env is not None:
        candidates.append(("OMP_NUM_THREADS", env))
    source, count = min(candidates, key=lambda item: item[1])
    return {"default_num_threads": count, "source": source, "affinity_cores": affinity,
            "cgroup_cpu_quota": quota, "OMP_NUM_THREADS": env}


def default_num_threads() -> int:
    """Threads a call uses by default: the smallest of the cores in this process's affinity
    mask, its cgroup CPU quota and ``OMP_NUM_THREADS`` (when set)."""
    env = _omp_num_threads()
    cores = machine_cores()
    return min(cores, env) if env else cores


# GNU OpenMP cannot start threads again in a process forked after it ran a parallel region: the
# child would hang.  Such a child (a multiprocessing "fork" worker, say) computes single-threaded.
_openmp_started = False
_forked_after_openmp = False


def _after_fork_in_child():
    global _forked_after_openmp
    _forked_after_openmp = _forked_after_openmp or _openmp_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Whether thread_count takes only idle cores (tests switch it off to exercise every count).
ADAPT_TO_LOAD = True
# After a call, its team's idle threads spin this long (bounded by _GOMP_SPIN_COUNT; measured
# 0.1-0.3 ms) and show as runnable: they are convbp's own, not another program's.
_OWN_SPIN_SECONDS = 5e-4
_last_team = (0.0, 1)  # (time.monotonic() when the last multi-threaded call ended, its size)
_user_wait_policy = any(name in os.environ for name in
                        ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"))
_loadavg: "int | None"
try:
    _loadavg = os.open("/proc/loadavg", os.O_RDONLY)
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _loadavg = None


@functools.lru_cache(maxsize=None)
def _online_cpus():
    """The machine's online CPUs, read once (``os.cpu_count`` reads /sys, ~10 us a call)."""
    return os.cpu_count() or 1


def _busy_cpus_elsewhere():
    """Runnable tasks other than this thread and convbp's own spinning team, or 0 if unknown."""
    try:
        running = int(os.pread(_loadavg, 64, 0).split()[3].split(b"/")[0])
    except (OSError, TypeError, ValueError, IndexError):
        return 0
    ended, size = _last_team
    if _user_wait_policy or time.monotonic() - ended < _OWN_SPIN_SECONDS:
        running -= size - 1
    return max(0, running - 1)


def thread_count(num_threads, units, flops=None):
    """Threads for a kernel call of ``units`` independent work units and ``flops`` operations.

    At most the request (default :func:`default_num_threads`), one a unit, one per
    ``MIN_FLOPS_PER_THREAD`` operations (``WARM_MIN_FLOPS_PER_THREAD`` while the last team is
    awake) and one per CPU no other task is running on; one in a child forked after OpenMP ran.  Pair it with :func:`team_finished` after the call.
    """
    global _openmp_started
    min_flops = MIN_FLOPS_PER_THREAD
    if min_flops > WARM_MIN_FLOPS_PER_THREAD and \
            time.monotonic() - _last_team[0] < WARM_TEAM_SECONDS:
        min_flops = WARM_MIN_FLOPS_PER_THREAD
    if _forked_after_openmp or units <= 1 or (
            flops is not None and min_flops > 0 and flops < 2 * min_flops):
        return 1  # whatever the request: decided without reading the defaults or the load
    if num_threads is None:
        num_threads = default_num_threads()
    threads = min(num_threads, units)
    if flops is not None and min_flops > 0:
        threads = min(threads, int(flops // min_flops))
    if threads > 1 and ADAPT_TO_LOAD and _loadavg is not None:
        threads = min(threads, _online_cpus() - _busy_cpus_elsewhere())
    threads = max(1, threads)
    _openmp_started = _openmp_started or threads > 1
    return threads


def team_finished(threads):
    """Record that a call on ``threads`` threads just ended (its idle team now spins)."""
    global _last_team
    if threads > 1:
        _last_team = (time.monotonic(), threads)


# ---------------------------------------------------------------------------------------------
# BLAS held to one thread while the kernel's own threads run.  The limit is process-wide, so
# concurrent calls share it: the first to enter sets it, the last to leave restores the caller's.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = ()
_blas_controls = None


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


# The GEMM that scipy.linalg.cython_blas calls, by the names SciPy's builds give it (the
# scipy-openblas wheels prefix every symbol; other builds use the Fortran name).
_GEMM_SYMBOLS = ("scipy_sgemm_", "sgemm_", "scipy_sgemm_64_", "sgemm_64_", "sgemm")


def kernel_blas_path():
    """The file of the BLAS library ``scipy.linalg.cython_blas`` calls -- every GEMM of a
    convbp kernel goes there --, or None where it cannot be told.

    ``cython_blas``'s capsules point at its own wrappers, so its GEMM symbol is looked up in
    the module's link scope instead (``dlsym`` on its handle searches the module and the
    libraries it links, where the dynamic linker bound its calls), and ``dladdr`` names the
    file that defines it.
    """
    try:
        cython_blas = importlib.import_module("scipy.linalg.cython_blas")
        scope = ctypes.CDLL(cython_blas.__file__)
        dladdr = getattr(ctypes.CDLL(None), "dladdr", None) or ctypes.CDLL("libdl.so.2").dladdr
    except (ImportError, OSError, AttributeError, TypeError):  # pragma: no cover - no dlfcn
        return None
    for name in _GEMM_SYMBOLS:
        gemm = getattr(scope, name, None)
        if gemm is None:
            continue
        info = _DlInfo()
        if dladdr(ctypes.cast(gemm, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(os.fsdecode(info.dli_fname))
    return None


def _blas_thread_controls():
    """(get, set) of the thread count of the BLAS library convbp's kernels call (every loaded
    BLAS library where that one cannot be found among them).

    threadpoolctl finds the libraries.  OpenBLAS's own functions are then called through ctypes:
    cheaper, and threadpoolctl >= 3.6 ignores requests from any Python thread but the first to
    make one, while convbp is called from any thread.  Other BLAS go through threadpoolctl.
    """
    from threadpoolctl import ThreadpoolController
    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    kernel_path = kernel_blas_path()
    kernel_libraries = [lib for lib in libraries
                        if kernel_path and os.path.realpath(lib.filepath) == kernel_path]
    controls = []
    for lib in kernel_libraries or libraries:
        pair = None
        if lib.internal_api == "openblas":
            try:
                dll = ctypes.CDLL(lib.filepath)
            except OSError:
                dll = None
            for prefix, suffix in (("scipy_openblas", ""), ("scipy_openblas", "64_"),
                                   ("openblas", ""), ("openblas", "64_")):
                get = getattr(dll, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(dll, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    pair = get, set_
                    break
        controls.append(pair or (lib.get_num_threads, lib.set_num_threads))
    return controls


def _kernel_blas_controls():
    """The (get, set) pairs of :func:`_blas_thread_controls`, found once."""
    global _blas_controls
    if _blas_controls is None:
        _blas_controls = _blas_thread_controls()
    return _blas_controls


def _hold_blas():
    """Hold the kernels' BLAS to one thread; the first of concurrent users saves the caller's
    setting."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [(set_, get()) for get, set_ in _kernel_blas_controls()]
            for set_, threads in _blas_saved:
                if threads != 1:
                    set_(1)
        _blas_users += 1


def _release_blas():
    """The last of concurrent users restores the caller's setting."""
    global _blas_users
    with _blas_lock:
        _blas_users -= 1
        if _blas_users == 0:
            for set_, threads in _blas_saved:
                if threads != 1:
                    set_(threads)


class kernel_team:
    """Around a kernel call on ``threads`` OpenMP threads: the kernels' BLAS held to one thread
    meanwhile (:func:`single_threaded_blas`), and the team's end recorded for
    :func:`thread_count` (a class, not a generator: it runs around every call)."""

    __slots__ = ("threads",)

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        _hold_blas()

    def __exit__(self, *exc_info):
        _release_blas()
        team_finished(self.threads)


class _SingleThreadedBlas:
    """The kernels' BLAS held to one thread until the last concurrent user leaves."""

    def __enter__(self):
        _hold_blas()

    def __exit__(self, *exc_info):
        _release_blas()


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()


def single_threaded_blas():
    """A context manager: the BLAS convbp's kernels call (:func:`kernel_blas_path`; every
    loaded BLAS if it cannot be told) on one thread inside it, process-wide, shared by
    concurrent users from any Python thread; the caller's setting restored when the last
    leaves."""
    return _SINGLE_THREADED_BLAS
