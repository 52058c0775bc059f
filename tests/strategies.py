"""Hypothesis strategies shared by the fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st


def json_values(big: int, text: int, leaves: int) -> st.SearchStrategy:
    """Any JSON value a hostile sender could write, NaN and infinities included (Python's
    json reads them): integers up to ``big``, texts up to ``text`` characters, nested
    lists and objects of up to ``leaves`` leaves."""

    def containers(inner: st.SearchStrategy) -> st.SearchStrategy:
        return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner)

    leaf = (
        st.none()
        | st.booleans()
        | st.integers(-big, big)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=text)
    )
    return st.recursive(leaf, containers, max_leaves=leaves)
