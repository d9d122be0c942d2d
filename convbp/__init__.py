"""convbp: the gradient of a 2-D convolution with respect to its input, NHWC and NCHW.

One Cython kernel -- a GEMM through SciPy's BLAS into a cache-sized column buffer, then a col2im
scatter-add through strides -- serves every layout and every entry point; depthwise convolutions
have their own direct kernel (a gather with no GEMM).
"""

from ._depthwise import depthwise_conv2d_backprop_input
from ._engine import default_num_threads, get_workspace_limit, set_workspace_limit
from ._tf import conv2d_backprop_input
from ._torch import conv2d_input, conv_transpose2d

__version__ = "0.1.0"

__all__ = [
    "conv2d_backprop_input",
    "conv2d_input",
    "conv_transpose2d",
    "default_num_threads",
    "depthwise_conv2d_backprop_input",
    "get_workspace_limit",
    "set_workspace_limit",
]
