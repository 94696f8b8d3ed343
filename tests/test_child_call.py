"""call_in_child: the result, the child's exception as it was (or as its text), a child that dies."""

from __future__ import annotations

import operator
import os

import pytest

from edgeproof.child_call import call_in_child
from edgeproof.errors import EdgeproofError


class _Odd(Exception):
    def __init__(self, a: int, b: int) -> None:  # its args are not what __init__ takes: it does not unpickle
        super().__init__(f"{a}+{b}")


def _raise_odd() -> None:
    raise _Odd(1, 2)


def test_result_and_peak():
    done = call_in_child(operator.add, 2, 3, name="t-add", what="-")
    assert done.value == 5 and done.peak_kb > 1000


def test_the_childs_exception_is_raised_here():
    with pytest.raises(ZeroDivisionError):
        call_in_child(operator.truediv, 1, 0, name="t-div", what="-")
    with pytest.raises(EdgeproofError, match=r"_Odd: 1\+2"):
        call_in_child(_raise_odd, name="t-odd", what="-")


def test_a_child_that_dies_is_one_clear_error():
    with pytest.raises(EdgeproofError, match=r"t-exit: the process ended without a result \(exit code 3\); try it"):
        call_in_child(os._exit, 3, name="t-exit", what="try it")
