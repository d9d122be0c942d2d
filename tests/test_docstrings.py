import doctest

import pytest

import convbp.tf
import convbp.torch


@pytest.mark.parametrize("module", [convbp.tf, convbp.torch])
def test_docstring_examples_run(module):
    # The examples in the entry points' docstrings are executed and their printed results
    # compared, so the documentation cannot drift from the behaviour.
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
