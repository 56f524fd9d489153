"""The labelled redaction corpus: for each built-in detector, positives (valid values in the
shapes people write them) and hard negatives (look-alikes its validation must reject: 16-digit
numbers failing Luhn, IBANs with a bad check, SSNs in invalid ranges, base64 that is not a
JWT...), plus decoys no detector may claim (UUIDs, order numbers, dates, hashes, versions).

It is generated from a fixed seed rather than stored: the same corpus on every run, and no
credential-shaped strings committed to the repository for secret scanners to trip on.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn, verhoeff
from stdnum.br import cpf

SEED = 20261119
PER_KIND = 40

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
BASE32 = string.ascii_uppercase + "234567"
HEX = "0123456789abcdef"

TEMPLATES = (
    "{}",
    "Customer record: {}. Please review.",
    "value={}",
    'payload {{"field": "{}"}} end',
    "see ({}) for details",
    "Line one\nthe value {} sits here\nline three",
    "- item: {}, flagged",
    "«{}»",
)


@dataclass(frozen=True)
class Sample:
    text: str
    labels: tuple[tuple[str, str], ...]
    """(detector, exact value) of everything a detector must find in `text`."""


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _mixed(rng: random.Random, alphabet: str, n: int) -> str:
    while True:
        s = _r(rng, alphabet, n)
        if all(any(test(c) for c in s) for test in (str.isupper, str.islower, str.isdigit)):
            return s


def _digits(rng: random.Random, n: int) -> str:
    return _r(rng, string.digits, n)


def _with_luhn(body: str) -> str:
    return body + luhn.calc_check_digit(body)


def _bad_luhn(body: str) -> str:
    good = luhn.calc_check_digit(body)
    return body + str((int(good) + 1 + (len(body) % 8)) % 10)


def _group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    return sep.join(out)


# -- generators: (positive, negative) per detector -------------------------------------------

CARD_PREFIXES = (
    *(("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15)),
    *(("6011", 16), ("65", 16), ("3530", 16), ("36", 14), ("62", 16), ("4", 19)),
)


def card_pos(rng: random.Random) -> str:
    prefix, n = rng.choice(CARD_PREFIXES)
    number = _with_luhn(prefix + _digits(rng, n - len(prefix) - 1))
    style = rng.randrange(3)
    if style == 0 or n not in (15, 16):
        return number
    sizes = (4, 6, 5) if n == 15 else (4, 4, 4, 4)
    return _group(number, sizes, " " if style == 1 else "-")


def card_neg(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:  # right issuer, failing Luhn
        return _bad_luhn("4" + _digits(rng, 14))
    if kind == 1:  # Luhn-valid, no known issuer
        return _with_luhn(rng.choice("0179") + _digits(rng, 14))
    if kind == 2:  # Amex prefix at Visa length
        return _with_luhn("37" + _digits(rng, 13))
    return _group(_bad_luhn("5" + rng.choice("12345") + _digits(rng, 13)), (4, 4, 4, 4), " ")


PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "JP", "BR", "AU", "ES", "IT", "NL", "CA")


def _valid_number(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    example = phonenumbers.example_number_for_type(
        region,
        rng.choice((phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)),
    )
    assert example is not None
    national = str(example.national_number)
    for _ in range(200):
        tail = _digits(rng, 3)
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code,
            national_number=int(national[:-3] + tail),
        )
        if phonenumbers.is_valid_number(candidate):
            return candidate
    return example


def phone_pos(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind < 2:  # international, any region
        number = _valid_number(rng, rng.choice(PHONE_REGIONS))
        fmt = phonenumbers.PhoneNumberFormat.INTERNATIONAL if kind == 0 else (
            phonenumbers.PhoneNumberFormat.E164)  # fmt: skip
        return phonenumbers.format_number(number, fmt)
    number = _valid_number(rng, "US" if kind == 2 else "GB")
    text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    if kind == 2 and rng.random() < 0.5:
        text = text.replace("(", "").replace(") ", "-").replace(" ", "-")
    return text


def phone_neg(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 1:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}"
    if kind == 2:
        return f"+1 {rng.choice('01')}{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 4)}"
    if kind == 3:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == 4:
        return f"{_digits(rng, 5)}-{_digits(rng, 4)}"  # ZIP+4
    if kind == 5:
        return f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 300)}"
    return f"#{rng.randint(10**9, 10**10 - 1)}"  # a bare order number


def email_pos(rng: random.Random) -> str:
    first = _r(rng, string.ascii_lowercase, rng.randint(2, 8))
    last = _r(rng, string.ascii_lowercase, rng.randint(2, 10))
    local = rng.choice((f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first}+tag", first))
    domain = rng.choice(("example.com", "mail.example.org", "corp.example.co.uk", "example.io"))
    return f"{local}@{domain}"


def email_neg(rng: random.Random) -> str:
    name = _r(rng, string.ascii_lowercase, rng.randint(3, 8))
    return rng.choice(
        (
            f"{name}@2x.png",
            f"{name}@{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            f"{name}@localhost",
            f"@{name}",
            f"{name}..{name}@example.com",
            f"{name}.@example.com",
            f"{name}@example",
        )
    )


IBAN_SEEDS = (
    *("DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606"),
    *("NL91ABNA0417164300", "ES9121000418450200051332", "IT60X0542811101000000123456"),
    *("CH9300762011623852957", "BE71096123456769", "AT611904300234573201", "NO9386011117947"),
    "PL61109010140000071219812874",
)


def _iban(rng: random.Random) -> str:
    """A valid IBAN: mod-97 and, where the country has one, its national check (a changed
    account number that breaks the national check is drawn again)."""
    seed = rng.choice(IBAN_SEEDS)
    for _ in range(200):
        bban = list(seed[4:])
        for i in range(len(bban) - 6, len(bban)):
            if bban[i].isdigit():
                bban[i] = rng.choice(string.digits)
        body = seed[:2] + "00" + "".join(bban)
        value = seed[:2] + std_iban.calc_check_digits(body) + "".join(bban)
        if std_iban.is_valid(value):
            return value
    assert std_iban.is_valid(seed)
    return seed


def iban_pos(rng: random.Random) -> str:
    value = _iban(rng)
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def iban_neg(rng: random.Random) -> str:
    value = _iban(rng)
    kind = rng.randrange(3)
    if kind == 0:  # one digit changed, check digits not: mod-97 fails
        i = len(value) - 1 - rng.randrange(4)
        value = value[:i] + str((int(value[i]) + 1) % 10) + value[i + 1 :]
    elif kind == 1:  # one character short for its country
        value = value[:-1]
    else:  # no such country
        value = "XQ" + value[2:]
    return value


def ssn_pos(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    sep = rng.choice("- ")
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def ssn_neg(rng: random.Random) -> str:
    kind = rng.randrange(6)
    area, group, serial = rng.randint(1, 665), rng.randint(1, 99), rng.randint(1, 9999)
    if kind == 0:
        area = 0
    elif kind == 1:
        area = 666
    elif kind == 2:
        area = rng.randint(900, 999)
    elif kind == 3:
        group = 0
    elif kind == 4:
        serial = 0
    else:
        return "078-05-1120"
    return f"{area:03d}-{group:02d}-{serial:04d}"


NINO_FIRST = "ABCEGHJKLMNOPRSTWXYZ"
NINO_SECOND = "ABCEGHJKLMNPRSTWXYZ"


def nino_pos(rng: random.Random) -> str:
    while True:
        prefix = rng.choice(NINO_FIRST) + rng.choice(NINO_SECOND)
        if prefix not in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            break
    digits, suffix = _digits(rng, 6), rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
    return f"{prefix}{digits}{suffix}"


def nino_neg(rng: random.Random) -> str:
    digits = _digits(rng, 6)
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(("GB", "BG", "NK", "KN", "TN", "NT", "ZZ")) + digits + "A"
    if kind == 1:
        return rng.choice("DFIQUV") + rng.choice(NINO_SECOND) + digits + "B"
    return rng.choice(NINO_FIRST[:5]) + rng.choice("ABCE") + digits + rng.choice("EFXZ")


def sin_pos(rng: random.Random) -> str:
    number = _with_luhn(rng.choice("1234567") + _digits(rng, 7))
    return _group(number, (3, 3, 3), rng.choice(" -"))


def sin_neg(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return _group(_bad_luhn(rng.choice("1234567") + _digits(rng, 7)), (3, 3, 3), " ")
    return _group(_with_luhn(rng.choice("08") + _digits(rng, 7)), (3, 3, 3), "-")


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_pos(rng: random.Random) -> str:
    if rng.random() < 0.6:
        n = rng.randint(10**6, 10**8 - 1)
        return f"{n:08d}{DNI_LETTERS[n % 23]}"
    lead = rng.choice("XYZ")
    n = rng.randint(0, 10**7 - 1)
    return f"{lead}{n:07d}{DNI_LETTERS[int(str('XYZ'.index(lead)) + f'{n:07d}') % 23]}"


def dni_neg(rng: random.Random) -> str:
    n = rng.randint(10**6, 10**8 - 1)
    return f"{n:08d}{DNI_LETTERS[(n + 1 + rng.randrange(21)) % 23]}"


def cpf_pos(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 9)
        number = body + cpf._calc_check_digits(body)
        if len(set(number)) > 1:
            return f"{number[:3]}.{number[3:6]}.{number[6:9]}-{number[9:]}"


def cpf_neg(rng: random.Random) -> str:
    if rng.random() < 0.25:
        d = rng.choice(string.digits)
        return f"{d * 3}.{d * 3}.{d * 3}-{d * 2}"
    body = _digits(rng, 9)
    good = cpf._calc_check_digits(body)
    bad = f"{(int(good) + 1 + rng.randrange(98)) % 100:02d}"
    return f"{body[:3]}.{body[3:6]}.{body[6:9]}-{bad}"


def aadhaar_pos(rng: random.Random) -> str:
    while True:
        body = rng.choice("23456789") + _digits(rng, 10)
        number = body + verhoeff.calc_check_digit(body)
        if number != number[::-1]:
            return _group(number, (4, 4, 4), rng.choice(" -"))


def aadhaar_neg(rng: random.Random) -> str:
    body = rng.choice("23456789") + _digits(rng, 10)
    bad = str((int(verhoeff.calc_check_digit(body)) + 1 + rng.randrange(8)) % 10)
    return _group(body + bad, (4, 4, 4), " ")


def aws_id_pos(rng: random.Random) -> str:
    return rng.choice(("AKIA", "ASIA")) + _r(rng, BASE32, 16)


def aws_id_neg(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # not base32
        body = _r(rng, BASE32, 15) + rng.choice("0189")
        return "AKIA" + "".join(rng.sample(body, len(body)))
    if kind == 1:
        return "AKIA" + _r(rng, BASE32, rng.choice((15, 17)))
    return "AKIA" + _r(rng, BASE32, 16).lower()


def aws_secret_pos(rng: random.Random) -> str:
    return _mixed(rng, B64, 40)


AWS_SECRET_FORMS = ("aws_secret_access_key = {}", '"SecretAccessKey": "{}"', "AWS_SECRET_KEY={}")


def aws_secret_neg(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # the right shape, no context
        return f"checksum {_mixed(rng, B64, 40)}"
    if kind == 1:
        return f"aws_secret_access_key = {_mixed(rng, B64, 39)}"
    return f"aws_secret_access_key = {_r(rng, HEX, 40)}"  # a hex digest, not key material


def gcp_key_pos(rng: random.Random) -> str:
    return "AIza" + _mixed(rng, URLSAFE, 35)


def gcp_key_neg(rng: random.Random) -> str:
    return "AIza" + _mixed(rng, URLSAFE, rng.choice((30, 34, 36, 40)))


def gcp_sa_neg(rng: random.Random) -> str:
    kind = rng.randrange(2)
    if kind == 0:
        return f'"private_key_id": "{_r(rng, HEX, 39)}"'
    return f'"client_id": "{_r(rng, HEX, 40)}"'


def azure_storage_pos(rng: random.Random) -> str:
    return _mixed(rng, B64, 86) + "=="


def azure_storage_neg(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"AccountKey={_mixed(rng, B64, 20)}=="
    return f"AccountKey={_mixed(rng, B64, 88)}"


def azure_sas_pos(rng: random.Random) -> str:
    return _mixed(rng, ALNUM + "%", 43) + "%3D"


def azure_sas_neg(rng: random.Random) -> str:
    return rng.choice(
        (
            f"?sig={_r(rng, ALNUM, 12)}",
            f"signature={_mixed(rng, ALNUM, 43)}",
            f"design={_mixed(rng, ALNUM, 43)}",
        )
    )


def azure_secret_pos(rng: random.Random) -> str:
    return _r(rng, ALNUM, 3) + rng.choice(string.digits) + "Q~" + _mixed(rng, ALNUM + "_~.-", 34)


def azure_secret_neg(rng: random.Random) -> str:
    return _r(rng, ALNUM, 3) + rng.choice(string.digits) + "Q~" + _r(rng, ALNUM, 12)


def github_pos(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return "github_pat_" + _mixed(rng, ALNUM, 22) + "_" + _mixed(rng, ALNUM, 59)
    return rng.choice(("ghp_", "gho_", "ghu_", "ghs_", "ghr_")) + _mixed(rng, ALNUM, 36)


def github_neg(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "ghp_" + _mixed(rng, ALNUM, rng.choice((20, 35, 37)))
    if kind == 1:
        return "ghx_" + _mixed(rng, ALNUM, 36)
    return "xghp_" + _mixed(rng, ALNUM, 36)


def gitlab_pos(rng: random.Random) -> str:
    return rng.choice(("glpat-", "gldt-", "glrt-", "glptt-")) + _mixed(rng, URLSAFE, 20)


def gitlab_neg(rng: random.Random) -> str:
    return rng.choice(("glpat-", "gldt-")) + _mixed(rng, ALNUM, rng.randint(8, 19))


def slack_pos(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_mixed(rng, ALNUM, 24)}"
    if kind == 1:
        return f"xoxp-{_digits(rng, 12)}-{_digits(rng, 12)}-{_digits(rng, 13)}-{_r(rng, HEX, 32)}"
    return (
        f"https://hooks.slack.com/services/T{_r(rng, BASE32, 10)}/B{_r(rng, BASE32, 10)}/"
        f"{_mixed(rng, ALNUM, 24)}"
    )


def slack_neg(rng: random.Random) -> str:
    return rng.choice(
        (
            f"xoxb-{_digits(rng, 5)}",
            f"xoxz-{_digits(rng, 12)}-{_mixed(rng, ALNUM, 24)}",
            "https://hooks.slack.com/",
        )
    )


def stripe_pos(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return "whsec_" + _mixed(rng, ALNUM, 32)
    return rng.choice(("sk_live_", "sk_test_", "rk_live_")) + _mixed(
        rng, ALNUM, rng.choice((24, 99))
    )


def stripe_neg(rng: random.Random) -> str:
    kind = rng.randrange(2)
    if kind == 0:  # publishable keys are meant to be public
        return rng.choice(("pk_live_", "pk_test_")) + _mixed(rng, ALNUM, 24)
    return "sk_live_" + _mixed(rng, ALNUM, 12)


def anthropic_pos(rng: random.Random) -> str:
    return "sk-ant-" + rng.choice(("api03-", "admin01-")) + _mixed(rng, URLSAFE, 93) + "AA"


def anthropic_neg(rng: random.Random) -> str:
    return "sk-ant-api03-" + _mixed(rng, URLSAFE, 30)


def openai_pos(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return "sk-" + _mixed(rng, ALNUM, 20) + "T3BlbkFJ" + _mixed(rng, ALNUM, 20)
    return "sk-" + rng.choice(("proj-", "svcacct-", "admin-")) + _mixed(rng, URLSAFE, 120)


def openai_neg(rng: random.Random) -> str:
    return rng.choice(
        (
            "sk-" + _mixed(rng, ALNUM, 48),  # no marker: any service's sk- string
            "sk-proj-" + _mixed(rng, URLSAFE, 12),
            "task-" + _mixed(rng, ALNUM, 40),
        )
    )


def google_oauth_pos(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "ya29." + _mixed(rng, URLSAFE, 150)
    if kind == 1:
        return "GOCSPX-" + _mixed(rng, URLSAFE, 28)
    return "1//0" + _mixed(rng, URLSAFE, 99)


def google_oauth_neg(rng: random.Random) -> str:
    return rng.choice(("ya29." + _r(rng, ALNUM, 10), "GOCSPX-" + _mixed(rng, ALNUM, 12), "1/0abc"))


def npm_pos(rng: random.Random) -> str:
    return "npm_" + _mixed(rng, ALNUM, 36)


def npm_neg(rng: random.Random) -> str:
    return rng.choice(
        ("npm_" + _mixed(rng, ALNUM, 20), "npm_install", "pnpm_" + _mixed(rng, ALNUM, 36))
    )


def pypi_pos(rng: random.Random) -> str:
    return "pypi-AgEIcHlwaS5vcmc" + _mixed(rng, URLSAFE, 140)


def pypi_neg(rng: random.Random) -> str:
    return rng.choice(
        ("pypi-" + _mixed(rng, URLSAFE, 60), "pypi-AgEIcHlwaS5vcmc" + _r(rng, ALNUM, 10))
    )


def bearer_pos(rng: random.Random) -> str:
    return _mixed(rng, URLSAFE + ".", 39) + rng.choice(ALNUM)


def bearer_neg(rng: random.Random) -> str:
    return rng.choice(
        (
            "the bearer of bad news",
            "Bearer token required",
            "Authorization: Bearer <token>",
            "bearer bonds were issued",
            "Bearer realm=example",
        )
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_pos(rng: random.Random) -> str:
    header = {"alg": rng.choice(("HS256", "RS256", "ES256")), "typ": "JWT"}
    payload = {"sub": _r(rng, ALNUM, 10), "iat": rng.randint(10**9, 2 * 10**9)}
    return ".".join(
        (
            _b64url(json.dumps(header).encode()),
            _b64url(json.dumps(payload).encode()),
            _b64url(rng.randbytes(32)),
        )
    )


def jwt_neg(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:  # a JSON header without `alg`
        head = _b64url(json.dumps({"typ": "JWT", "kid": _r(rng, ALNUM, 6)}).encode())
        return f"{head}.{_b64url(b'{}')}.{_b64url(rng.randbytes(16))}"
    if kind == 1:  # base64 that only starts like JSON
        return (
            "eyJ" + _r(rng, URLSAFE, 40) + "." + _r(rng, URLSAFE, 20) + "." + _r(rng, URLSAFE, 20)
        )
    if kind == 2:  # two parts
        return _b64url(b'{"alg":"HS256"}') + "." + _b64url(b'{"sub":"x"}')
    return base64.b64encode(rng.randbytes(48)).decode()  # plain base64


PEM_KINDS = ("RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
             "ENCRYPTED PRIVATE KEY")  # fmt: skip


def _pem(rng: random.Random, kind: str, newline: str) -> str:
    body = base64.b64encode(rng.randbytes(rng.choice((120, 240)))).decode()
    lines = newline.join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----{newline}{lines}{newline}-----END {kind}-----"


def pem_pos(rng: random.Random) -> str:
    return _pem(rng, rng.choice(PEM_KINDS), rng.choice(("\n", "\\n")))


def pem_neg(rng: random.Random) -> str:
    return _pem(rng, rng.choice(("PUBLIC KEY", "CERTIFICATE", "CERTIFICATE REQUEST")), "\n")


# (detector, positive generator, negative generator, how a positive is written in text)
Kind = tuple[str, Callable[[random.Random], str], Callable[[random.Random], str], str]
KINDS: tuple[Kind, ...] = (
    ("email", email_pos, email_neg, "{}"),
    ("phone", phone_pos, phone_neg, "{}"),
    ("payment_card", card_pos, card_neg, "{}"),
    ("iban", iban_pos, iban_neg, "{}"),
    ("us_ssn", ssn_pos, ssn_neg, "{}"),
    ("uk_nino", nino_pos, nino_neg, "{}"),
    ("ca_sin", sin_pos, sin_neg, "{}"),
    ("es_dni", dni_pos, dni_neg, "{}"),
    ("br_cpf", cpf_pos, cpf_neg, "{}"),
    ("in_aadhaar", aadhaar_pos, aadhaar_neg, "{}"),
    ("aws_access_key_id", aws_id_pos, aws_id_neg, "{}"),
    ("aws_secret_access_key", aws_secret_pos, aws_secret_neg, "aws_secret_access_key = {}"),
    ("gcp_api_key", gcp_key_pos, gcp_key_neg, "{}"),
    (
        "gcp_service_account_key",
        lambda rng: _r(rng, HEX, 40),
        gcp_sa_neg,
        '"private_key_id": "{}"',
    ),
    (
        "azure_storage_key",
        azure_storage_pos,
        azure_storage_neg,
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={};EndpointSuffix=core.windows",
    ),
    (
        "azure_sas_token",
        azure_sas_pos,
        azure_sas_neg,
        "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sp=r&sig={}",
    ),
    ("azure_client_secret", azure_secret_pos, azure_secret_neg, "{}"),
    ("github_token", github_pos, github_neg, "{}"),
    ("gitlab_token", gitlab_pos, gitlab_neg, "{}"),
    ("slack_token", slack_pos, slack_neg, "{}"),
    ("stripe_key", stripe_pos, stripe_neg, "{}"),
    ("anthropic_key", anthropic_pos, anthropic_neg, "{}"),
    ("openai_key", openai_pos, openai_neg, "{}"),
    ("google_oauth_token", google_oauth_pos, google_oauth_neg, "{}"),
    ("npm_token", npm_pos, npm_neg, "{}"),
    ("pypi_token", pypi_pos, pypi_neg, "{}"),
    ("bearer_token", bearer_pos, bearer_neg, "Authorization: Bearer {}"),
    ("jwt", jwt_pos, jwt_neg, "{}"),
    ("private_key", pem_pos, pem_neg, "{}"),
)


def decoy(rng: random.Random) -> str:
    """Values no detector may claim."""
    return rng.choice(
        (
            str(uuid.UUID(int=rng.getrandbits(128))),
            f"ORD-{_digits(rng, 8)}",
            f"order {rng.randint(10**5, 10**8)}",
            f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00Z",
            _r(rng, HEX, 40),
            _r(rng, HEX, 64),
            f"release {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
            f"invoice INV-{rng.randint(2020, 2030)}-{_digits(rng, 6)}",
            f"{rng.randint(1, 999)} items at ${rng.randint(1, 999)}.{_digits(rng, 2)}",
            f"tracking 1Z{_r(rng, string.ascii_uppercase + string.digits, 16)}",
            f"epoch {rng.randint(1_600_000_000_000, 1_800_000_000_000)}",
        )
    )


def corpus(per_kind: int = PER_KIND, seed: int = SEED) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for name, pos, neg, form in KINDS:
        for _ in range(per_kind):
            value = pos(rng)
            text = rng.choice(TEMPLATES).format(form.format(value))
            samples.append(Sample(text, ((name, value),)))
        for _ in range(per_kind):
            samples.append(Sample(rng.choice(TEMPLATES).format(neg(rng)), ()))
    for _ in range(per_kind * 3):
        samples.append(Sample(rng.choice(TEMPLATES).format(decoy(rng)), ()))
    return samples
