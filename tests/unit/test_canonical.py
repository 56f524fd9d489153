"""RFC 8785 (JCS): the number serialisation table of its Appendix B, string escaping, member
order by UTF-16 code units, and what has no canonical form."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.audit.canonical import CanonicalError, canonical, number

# RFC 8785 Appendix B: IEEE-754 bit pattern -> the one valid serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
NOT_NUMBERS = ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_numbers_serialise_as_rfc_8785_appendix_b(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert number(value) == expected
    assert canonical([value]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", NOT_NUMBERS)
def test_nan_and_infinities_have_no_canonical_form(bits: str) -> None:
    with pytest.raises(CanonicalError):
        canonical(struct.unpack(">d", bytes.fromhex(bits))[0])


def test_integers_are_the_doubles_they_denote() -> None:
    assert canonical([0, -1, 2**53, 2**64, 10**21]) == (
        b"[0,-1,9007199254740992,18446744073709552000,1e+21]"
    )
    with pytest.raises(CanonicalError):
        canonical(10**400)


def test_rfc_8785_section_3_2_2_example() -> None:
    """The RFC's own sample input and its canonical output (section 3.2.3)."""
    source = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    assert (
        canonical(source)
        == (
            '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
            '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
        ).encode()
    )


def test_members_sort_by_utf16_code_units_and_strings_keep_non_ascii() -> None:
    """RFC 8785 section 3.2.3's sorting example: a character past U+FFFF (a surrogate pair
    in UTF-16) sorts before U+FB33, though its code point is larger."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    out = canonical(value).decode()
    order = list(json.loads(out))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert out.startswith('{"\\r":"Carriage Return","1":"One","\u0080":"Control"')


def test_values_without_a_json_form_are_refused() -> None:
    for bad in ({1: "x"}, {"a": {1, 2}}, b"bytes", float("nan")):
        with pytest.raises(CanonicalError):
            canonical(bad)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_form_is_json_of_the_same_value_and_a_fixed_point(value: object) -> None:
    out = canonical(value)
    parsed = json.loads(out)
    assert canonical(parsed) == out
    if isinstance(value, float) and not math.isnan(value):
        assert parsed == value
