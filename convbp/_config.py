"""``convbp.show_config()``: what a bug report needs to know about this copy of convbp.

The build (compiler, OpenMP, the SIMD clone picked at load time), the BLAS that SciPy provides
and its threading layer, the OpenMP runtime loaded, the threads and workspace convbp will use,
and the versions of its dependencies, Python and the platform.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import IO, Any

import numpy as np
import scipy

from . import _engine, _gemm
from . import _threads as _thread_rules
from ._version import __version__, build

__all__ = ["show_config"]

# The OpenMP specification each _OPENMP date names.
_OPENMP_SPECS = {200203: "2.0", 200505: "2.5", 200805: "3.0", 201107: "3.1", 201307: "4.0",
                 201511: "4.5", 201811: "5.0", 202011: "5.1", 202111: "5.2", 202411: "6.0"}

# threadpoolctl's keys worth reporting for a library, in this order.
_LIBRARY_KEYS = ("internal_api", "prefix", "version", "threading_layer", "architecture",
                 "num_threads", "filepath")


def _loaded_libraries(user_api: str) -> list[dict[str, Any]]:
    """threadpoolctl's description of the loaded libraries of one kind ("blas" or "openmp")."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a run-time dependency
        return []
    return [{key: info[key] for key in _LIBRARY_KEYS if key in info}
            for info in threadpool_info() if info.get("user_api") == user_api]


def _scipy_blas_build() -> dict[str, Any]:
    """The BLAS SciPy was built against, from ``scipy.show_config(mode="dicts")`` (SciPy >= 1.11;
    empty before)."""
    try:
        config = scipy.show_config(mode="dicts")
    except TypeError:  # SciPy < 1.11 has no mode
        return {}
    if not isinstance(config, dict):
        return {}
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return {key: blas[key] for key in ("name", "version", "detection method") if key in blas}


def _threads() -> dict[str, Any]:
    """The default thread count and where it comes from (affinity, CPU quota, OMP_NUM_THREADS),
    and the rules that may lower it in a call."""
    info = dict(_thread_rules.thread_defaults())
    info["os_cpu_count"] = os.cpu_count()
    info["min_flops_per_thread"] = _thread_rules.MIN_FLOPS_PER_THREAD
    info["gomp_spincount"] = os.environ.get("GOMP_SPINCOUNT") or (
        "user's OMP_WAIT_POLICY" if "OMP_WAIT_POLICY" in os.environ
        else f"{_thread_rules._GOMP_SPIN_COUNT} (set by convbp at load)")
    return info


def _describe() -> dict[str, Any]:
    openmp_date = _gemm.openmp_version()
    return {
        "convbp": {
            "version": __version__,
            "path": os.path.dirname(os.path.abspath(__file__)),
        },
        "build": {
            "compiler": build["compiler"],
            "cython": build["cython"],
            "host_cpu": build["host_cpu"],
            "buildtype": build["buildtype"],
        },
        "openmp": {
            "compiled_in": _gemm.openmp_enabled(),
            "version": (f"{openmp_date} (OpenMP {_OPENMP_SPECS.get(openmp_date, '?')})"
                        if openmp_date else None),
            "omp_get_max_threads": _gemm.openmp_max_threads(),
            "runtimes_loaded": _loaded_libraries("openmp"),
        },
        "simd": _gemm.simd_info(),
        "blas": {
            "scipy_build": _scipy_blas_build(),
            "libraries_loaded": _loaded_libraries("blas"),
        },
        "threads": _threads(),
        "workspace_limit_bytes": _engine.get_workspace_limit(),
        "dependencies": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "threadpoolctl": _version_of("threadpoolctl"),
        },
        "python": {
            "version": sys.version.replace("\n", " "),
            "executable": sys.executable,
            "platform": platform.platform(),
            "machine": platform.machine(),
        },
    }


def _version_of(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _lines(value: Any, indent: str) -> list[str]:
    """``value`` as indented ``key: value`` lines; a list of dicts as numbered items."""
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}{key}:")
                lines.extend(_lines(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {_text(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for number, item in enumerate(value, 1):
            lines.append(f"{indent}[{number}]")
            lines.extend(_lines(item, indent + "  "))
        return lines
    return [f"{indent}{_text(value)}"]


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if value == [] or value == {}:
        return "none"
    return str(value)


def show_config(file: IO[str] | None = None) -> dict[str, Any]:
    """Print how this copy of convbp was built and what it runs on; return the same as a dict.

    Paste the output into bug reports.  Calling it loads the BLAS and OpenMP libraries (as any
    convbp call does) but computes nothing.

    Parameters
    ----------
    file : text stream, optional
        Where to print (default ``sys.stdout``).

    Returns
    -------
    dict
        Sections ``convbp`` (version, path), ``build`` (compiler, Cython), ``openmp`` (compiled
        in, ``_OPENMP`` version, runtimes loaded: threadpoolctl's entries), ``simd`` (the
        ``_simd.h`` build and the clone picked at load time), ``blas`` (the BLAS SciPy was
        built with and the libraries loaded, with their threading layer), ``threads`` (the
        default thread count and its source), ``workspace_limit_bytes``, ``dependencies``
        (NumPy, SciPy, threadpoolctl versions) and ``python`` (version, platform).

    Examples
    --------
    >>> import convbp
    >>> info = convbp.show_config()  # doctest: +SKIP
    convbp:
      version: 0.1.0
    ...
    >>> info["openmp"]["compiled_in"]  # doctest: +SKIP
    True
    """
    info = _describe()
    print("\n".join(_lines(info, "")), file=sys.stdout if file is None else file)
    return info
