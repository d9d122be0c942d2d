import importlib.metadata
import io
import os
import platform
import sys

import numpy as np
import pytest
import scipy

import convbp

SECTIONS = ["convbp", "build", "openmp", "simd", "blas", "threads", "workspace_limit_bytes",
            "dependencies", "python"]


@pytest.fixture(scope="module")
def config():
    return convbp.show_config(file=io.StringIO())


def test_sections_and_keys(config):
    assert list(config) == SECTIONS
    assert set(config["openmp"]) == {"compiled_in", "version", "omp_get_max_threads",
                                     "runtimes_loaded"}
    assert set(config["simd"]) == {"vector_extensions", "multiversioned", "variant"}
    assert set(config["blas"]) == {"scipy_build", "libraries_loaded"}
    assert {"default_num_threads", "source", "OMP_NUM_THREADS"} <= set(config["threads"])
    assert set(config["dependencies"]) == {"numpy", "scipy", "threadpoolctl"}
    assert {"version", "platform", "machine"} <= set(config["python"])


def test_versions_match_the_installed_distributions(config):
    # The version is written once (meson.build); the installed metadata is the reference.
    assert convbp.__version__ == importlib.metadata.version("convbp")
    assert config["convbp"]["version"] == convbp.__version__
    assert config["dependencies"] == {
        "numpy": np.__version__, "scipy": scipy.__version__,
        "threadpoolctl": importlib.metadata.version("threadpoolctl")}
    assert config["python"]["version"].startswith(platform.python_version())
    assert config["python"]["machine"] == platform.machine()


def test_reports_the_installed_package(config):
    assert os.path.samefile(config["convbp"]["path"], os.path.dirname(convbp.__file__))


def test_threads_and_workspace(config):
    expected = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
    assert config["threads"]["default_num_threads"] == expected
    assert config["threads"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    previous = convbp.set_workspace_limit(12345)
    try:
        assert convbp.show_config(file=io.StringIO())["workspace_limit_bytes"] == 12345
    finally:
        convbp.set_workspace_limit(previous)
    assert config["workspace_limit_bytes"] == previous


def test_openmp_runtime_is_found_when_compiled_in(config):
    openmp = config["openmp"]
    if openmp["compiled_in"]:
        # The kernels link the runtime, so it is loaded: threadpoolctl must see it.
        assert openmp["runtimes_loaded"]
        assert all(lib["internal_api"] == "openmp" for lib in openmp["runtimes_loaded"])
        assert openmp["version"].startswith(str(convbp._gemm.openmp_version()))
    else:
        assert openmp["version"] is None and openmp["omp_get_max_threads"] == 1


def test_blas_is_scipy_s(config):
    loaded = config["blas"]["libraries_loaded"]
    assert loaded, "threadpoolctl finds no BLAS although SciPy's is loaded"
    build = config["blas"]["scipy_build"]
    if "version" in build and build.get("name", "").startswith("scipy-openblas"):
        assert build["version"] in {lib.get("version") for lib in loaded}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_simd_variant_is_the_one_the_cpu_selects(config):
    simd = config["simd"]
    if not simd["multiversioned"]:
        assert simd["variant"] == "baseline"
        return
    assert sys.platform.startswith("linux") and platform.machine() == "x86_64"
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's features from")
    expected = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"
    assert simd["variant"] == expected


def test_printed_text(capsys):
    info = convbp.show_config()
    text = capsys.readouterr().out
    lines = text.splitlines()
    # Each section starts a line at column 0, in order.
    headers = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert headers == SECTIONS
    assert f"  version: {convbp.__version__}" in lines
    assert f"  variant: {info['simd']['variant']}" in lines
    assert f"  default_num_threads: {info['threads']['default_num_threads']}" in lines
    assert f"workspace_limit_bytes: {info['workspace_limit_bytes']}" in lines
    assert f"  numpy: {np.__version__}" in lines
    for lib in info["blas"]["libraries_loaded"]:
        assert f"      filepath: {lib['filepath']}" in lines


def test_file_argument():
    out = io.StringIO()
    info = convbp.show_config(file=out)
    assert out.getvalue().startswith("convbp:\n  version: ")
    assert f"compiled_in: {info['openmp']['compiled_in']}" in out.getvalue()


def test_typed_usage_runs():
    # tests/typing/usage.py is type-checked by mypy in CI; here it also has to run.
    import runpy
    runpy.run_path(os.path.join(os.path.dirname(__file__), "typing", "usage.py"),
                   run_name="__main__")
