"""Shared test helpers: the same logical NHWC values in every memory arrangement convbp accepts,
and output views inside a larger array whose surroundings must stay untouched.

Geometry for the engine-level tests (forward, filter gradient, adjoint) is drawn here too.
"""

import contextlib

import numpy as np
from hypothesis import strategies as st

import convbp
from convbp._geometry import forward_geometry
from oracle import tolerance

LAYOUTS = ("NHWC", "NCHW")
MEMORY = ("contiguous", "strided", "negative", "fortran", "readonly")
_PERM = {"NHWC": (0, 1, 2, 3), "NCHW": (0, 3, 1, 2)}  # logical NHWC -> memory axis order
SENTINEL = 7.25


def arrange(a, layout="NHWC", memory="contiguous"):
    """A logical NHWC view equal to ``a`` whose memory is ``layout`` arranged as ``memory``."""
    perm = _PERM[layout]
    phys = np.ascontiguousarray(a.transpose(perm))
    if memory == "strided":
        big = np.zeros(tuple(2 * s for s in phys.shape), a.dtype)
        view = big[::2, ::2, ::2, ::2]
        view[...] = phys
        phys = view
    elif memory == "negative":
        phys = phys[::-1, :, ::-1, :].copy()[::-1, :, ::-1, :]
    elif memory == "fortran":
        phys = np.asfortranarray(phys)
    elif memory == "readonly":
        phys = phys.copy()
        phys.setflags(write=False)
    return phys.transpose(np.argsort(perm))


def out_array(shape, dtype, layout="NHWC", view=False):
    """(out, check): a writable logical NHWC array of ``shape`` in ``layout`` memory; with
    ``view`` a strided view into a larger array filled with SENTINEL, and check() asserts that
    nothing outside the view changed."""
    perm = _PERM[layout]
    phys_shape = tuple(shape[i] for i in perm)
    if not view:
        return np.empty(phys_shape, dtype).transpose(np.argsort(perm)), lambda: None
    big = np.full(tuple(2 * s + 3 for s in phys_shape), SENTINEL, dtype)
    index = tuple(slice(1, 1 + 2 * s, 2) for s in phys_shape)
    out = big[index].transpose(np.argsort(perm))

    def check():
        outside = np.ones(big.shape, bool)
        outside[index] = False
        assert (big[outside] == SENTINEL).all(), "out: memory outside the view was written"

    return out, check


@st.composite
def conv_cases(draw, max_size=7, channels=(1, 4), max_groups=3, max_kernel=3, depthwise=None):
    """(x shape, filter shape, groups, geometry): grouped and depthwise (with multiplier)
    convolutions with any strides, dilations and asymmetric explicit pads; ``channels`` the
    range of input channels a group, ``depthwise`` True/False to fix the kind."""
    if depthwise is None:
        depthwise = draw(st.booleans())
    if depthwise:
        groups = draw(st.integers(2, 5))
        c_group, f_group = 1, draw(st.integers(1, 3))
    else:
        groups = draw(st.integers(1, max_groups))
        c_group, f_group = draw(st.integers(*channels)), draw(st.integers(1, 4))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    in_hw = []
    for k, d, (before, after) in zip(kernel, dilations, pads):
        smallest = max(1, (k - 1) * d + 1 - before - after)
        in_hw.append(draw(st.integers(smallest, smallest + max_size)))
    n = draw(st.integers(1, 3))
    geometry = forward_geometry(tuple(in_hw), kernel, strides, dilations, pads)
    return ((n,) + tuple(in_hw) + (groups * c_group,), kernel + (c_group, groups * f_group),
            groups, geometry)


@contextlib.contextmanager
def workspace_limit(nbytes):
    """convbp's workspace limit set to ``nbytes`` (None: unchanged) inside the block."""
    if nbytes is None:
        yield
        return
    previous = convbp.set_workspace_limit(nbytes)
    try:
        yield
    finally:
        convbp.set_workspace_limit(previous)


def float16_bound(expected, reduction_length):
    """Elementwise error allowed for a float16 result computed in float32 and rounded once:
    half a float16 ulp of the (float32) result plus the float32 error of the sum."""
    scale = np.abs(expected).max(initial=0.0)
    e32 = tolerance(np.float32, reduction_length) * scale
    return 0.5 * np.spacing(np.float16(np.abs(expected) + e32)).astype(np.float64) + e32
