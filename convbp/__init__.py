"""convbp: the 2-D convolution's input gradient -- and the layer around it -- for NumPy, NHWC and NCHW.

One Cython kernel per algorithm -- GEMM through SciPy's BLAS into a cache-sized column buffer,
then a col2im scatter-add through strides; a direct kernel for depthwise convolutions -- serves
every layout and every entry point.  The entry points come in two families under the names
their users know: ``convbp.tf`` (TensorFlow's conventions) and ``convbp.torch`` (PyTorch's);
the most used ones are also here at the top level.
"""

from . import tf, torch
from ._config import show_config
from ._engine import default_num_threads, get_workspace_limit, set_workspace_limit
from ._version import __version__
from .tf import choose_algorithm, conv2d_backprop_input, depthwise_conv2d_backprop_input
from .torch import conv2d_input, conv_transpose2d

__all__ = [
    "__version__",
    "choose_algorithm",
    "conv2d_backprop_input",
    "conv2d_input",
    "conv_transpose2d",
    "default_num_threads",
    "depthwise_conv2d_backprop_input",
    "get_workspace_limit",
    "set_workspace_limit",
    "show_config",
    "tf",
    "torch",
]
