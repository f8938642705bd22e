"""The invariant check that replaces assert in shipped code."""

import pytest

from shared.invariants import InvariantError, required


def test_required_returns_a_present_value_even_if_falsy() -> None:
    assert required(0, "a count") == 0
    assert required("", "a name") == ""


def test_required_names_what_is_missing() -> None:
    with pytest.raises(InvariantError, match="the trust store is missing"):
        required(None, "the trust store")
