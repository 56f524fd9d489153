"""The shortcuts the built-in detectors take give exactly the answers of the long way round:
libphonenumber's validity check asked in another order, and a gated detector scanning only the
strings of a message that hold one of its gates."""

from __future__ import annotations

import random
import string

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.redaction.builtin import _valid_for_region, builtins
from switchyard.redaction.scanner import Scanner
from tests.unit.redaction_corpus import corpus

_TYPES = tuple(
    t for name, t in vars(phonenumbers.PhoneNumberType).items() if name.isupper()
)  # every number type the metadata describes


def _numbers(region: str, rng: random.Random) -> list[phonenumbers.PhoneNumber]:
    """Valid numbers of every type the region has, each with its last digits changed, and
    random national numbers of every plausible length (mostly invalid)."""
    code = phonenumbers.country_code_for_region(region)
    found: list[phonenumbers.PhoneNumber] = []
    for kind in _TYPES:
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        found.append(example)
        national = str(example.national_number)
        for _ in range(3):
            tail = "".join(rng.choice(string.digits) for _ in range(min(3, len(national))))
            changed = phonenumbers.PhoneNumber(
                country_code=code, national_number=int(national[: -len(tail)] + tail)
            )
            found.append(changed)
    for length in range(4, 18):
        for _ in range(3):
            digits = "".join(rng.choice(string.digits) for _ in range(length))
            number = phonenumbers.PhoneNumber(country_code=code, national_number=int(digits))
            if digits.startswith("0"):  # the detector's own construction of such numbers
                number.italian_leading_zero = True
                number.number_of_leading_zeros = len(digits) - len(digits.lstrip("0"))
            found.append(number)
    return found


def test_phone_validity_is_libphonenumbers_for_every_region() -> None:
    rng = random.Random(20261202)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    checked = valid = 0
    for region in regions:
        numbers = _numbers(region, rng)
        # A number is also asked about regions that are not its own (the detector asks every
        # region sharing a calling code, and every configured region).
        for other in (region, rng.choice(regions), "US", "GB", "001"):
            for number in numbers:
                expected = phonenumbers.is_valid_number_for_region(number, other)
                assert _valid_for_region(number, other) == expected, (region, other, number)
                checked += 1
                valid += expected
    assert checked > 50_000 and valid > 2_000  # both answers well represented


@pytest.mark.parametrize("seed", range(4))
def test_a_message_scanned_together_finds_what_each_string_alone_does(seed: int) -> None:
    # The labelled corpus (positives and hard negatives of every detector), shuffled into
    # messages of many strings: gated detectors then run on the strings holding a gate only,
    # while `find` on one string takes the whole-text route.
    scanner = Scanner(builtins())
    rng = random.Random(seed)
    texts = [sample.text for sample in corpus()]
    rng.shuffle(texts)
    total = 0
    while texts:
        size = rng.randint(2, 60)
        group, texts = texts[:size], texts[size:]
        together = scanner.find_many(group, [None] * len(group))
        assert together == [scanner.find(text) for text in group]
        total += sum(map(len, together))
    assert total > 1_000


_SCANNER = Scanner(builtins())
_PIECES = st.sampled_from(
    [
        "a@b.co",
        "ada.lovelace@example.com",
        "@",
        "x@",
        "logo@2x.png",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_" + "a1" * 18,
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
        "sig=" + "A" * 43 + "%3D",
        "+44 20 7946 0018",
        "4111 1111 1111 1111",
        " ",
        "\n",
        ".",
        "-",
        "é",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(_PIECES, st.text(max_size=6)), max_size=8).map("".join),
        min_size=2,
        max_size=12,
    )
)
def test_any_strings_scanned_together_find_what_each_alone_does(texts: list[str]) -> None:
    scanner = _SCANNER
    assert scanner.find_many(texts, [None] * len(texts)) == [scanner.find(t) for t in texts]
