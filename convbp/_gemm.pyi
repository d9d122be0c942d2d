# Private: the GEMM + col2im kernel (convbp/_gemm.pyx), called only by convbp._engine, which
# checks every argument first.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.floating[Any]]

BLAS_INT_MAX: int

def backprop_input(
    dy: _Float,
    wmat: _Float,
    dx: _Float,
    workspace: _Float,
    g: dict[str, int],
    dy_pixel_major: bool,
    dy_ld: int,
    cols_pixel_major: bool,
    direct_ld: int,
    num_threads: int,
) -> None: ...

# How the kernels were compiled (convbp/_build_info.pxi).
def openmp_enabled() -> bool: ...
def openmp_version() -> int: ...
def openmp_max_threads() -> int: ...
def simd_info() -> dict[str, Any]: ...
