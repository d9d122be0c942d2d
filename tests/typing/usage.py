"""The public API used as a typed program would use it: `mypy convbp tests/typing` checks it
(CI), and tests/test_config.py runs it."""

import io
import sys
from typing import Any

import numpy as np

import convbp

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # only mypy (run on Python >= 3.11) checks the types
    def assert_type(value: Any, _type: Any) -> Any:
        return value


def main() -> None:
    rng = np.random.default_rng(0)
    filt = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 3, 8)).astype(np.float32)

    dx: np.ndarray = convbp.conv2d_backprop_input((2, 5, 5, 4), filt, dy, 2, "SAME")
    assert dx.shape == (2, 5, 5, 4)
    dx_torch: np.ndarray = convbp.conv2d_input((2, 4, 5, 5), filt.transpose(3, 2, 0, 1),
                                               dy.transpose(0, 3, 1, 2), stride=2, padding=1)
    assert dx_torch.shape == (2, 4, 5, 5)

    threads = assert_type(convbp.default_num_threads(), int)
    assert threads >= 1
    previous = assert_type(convbp.set_workspace_limit(32 * 2**20), int)
    assert assert_type(convbp.get_workspace_limit(), int) == 32 * 2**20
    convbp.set_workspace_limit(previous)

    info = assert_type(convbp.show_config(file=io.StringIO()), dict[str, Any])
    assert info["convbp"]["version"] == assert_type(convbp.__version__, str)


if __name__ == "__main__":
    main()
