# Private: the direct depthwise kernel (convbp/_depthwise.pyx), called only by convbp._engine,
# which checks every argument first.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.floating[Any]]
_Index = NDArray[np.intp]

def backprop_input(
    dy: _Float,
    filt: _Float,
    dx: _Float,
    workspace: _Float,
    taps: _Index,
    row_taps: _Index,
    col_taps: _Index,
    g: dict[str, int],
    channels_inner: bool,
    pad_l: int,
    PW: int,
    num_threads: int,
) -> None: ...
