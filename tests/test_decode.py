"""Stored attribute values back to JSON values, as the read API answers them."""
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.model.attributes import MAX_NESTED_CONTAINERS, decode, encode

json_numbers = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1) | st.floats(
    allow_nan=False, allow_infinity=False
).filter(lambda x: x == 0 or 1e-130 <= abs(x) < 1e126)
json_values = st.recursive(
    st.none() | st.booleans() | st.text() | json_numbers,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_what_ecs_state_stores_decodes_to_the_same_json_value(value):
    # Compared as JSON's decimal numbers: 4.025760053405194e+16 comes back as the
    # integer 40257600534051940, the same decimal value (though not the same double).
    assert _as_decimals(decode(encode(value)[0])) == _as_decimals(value)


def test_numbers_are_json_numbers_not_strings():
    assert decode({"N": "8053063680"}) == 8053063680 and isinstance(decode({"N": "8053063680"}), int)
    assert decode({"N": "1.1"}) == 1.1
    assert decode({"N": "-0.25"}) == -0.25
    assert decode({"N": "1E+5"}) == 100000 and isinstance(decode({"N": "1E+5"}), int)
    assert decode({"N": "9" * 38}) == int("9" * 38)


def test_sets_and_binaries_from_other_writers_become_lists_and_base64():
    assert decode({"SS": ["b", "a"]}) == ["a", "b"]
    assert decode({"NS": ["2", "1.5"]}) == [1.5, 2]
    assert decode({"B": b"\x00\x01"}) == "AAE="
    assert decode({"BS": [b"\x01", b"\x00"]}) == ["AA==", "AQ=="]
    deep = {"L": [{"NULL": True}]}
    for _ in range(MAX_NESTED_CONTAINERS - 1):
        deep = {"M": {"x": deep}}
    assert decode(deep) is not None


def _as_decimals(value):
    if isinstance(value, dict):
        return {key: _as_decimals(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_as_decimals(element) for element in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    assert isinstance(value, (int, float)), f"{value!r} is not a JSON number"
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
