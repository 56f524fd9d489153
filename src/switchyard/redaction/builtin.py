"""The built-in detectors. Each pairs a candidate pattern (stdlib `re`: fixed, reviewed
patterns whose every repetition is delimited, so none backtracks beyond a bounded window) with
a validation that rejects look-alikes: Luhn and issuer ranges for cards, mod-97 and country
lengths for IBANs, check digits and invalid ranges for national ids, decoded headers for JWTs.

Order is precedence: when two findings overlap, the earlier detector's wins (a JWT inside a
bearer header is reported as a JWT, a card number is never also a phone number).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Final

import phonenumbers
from phonenumbers import phonenumberutil
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.es import dni, nie
from stdnum.in_ import aadhaar
from stdnum.us import ssn

from switchyard.redaction.detector import Detector, Validator, keeping, keeping_prefix, mask_keep

DEFAULT_PHONE_REGIONS: Final = ("US", "GB")


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    # ASCII classes: `\d` is 0-9 here as in RE2's prefilter, and in every validator.
    return re.compile(pattern, flags | re.ASCII)


# -- personal data ---------------------------------------------------------------------------

# Image and document names (`logo@2x.png`) look like addresses; no such TLD is delegated.
_FILE_SUFFIXES: Final = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "bmp",
        "ico",
        "tif",
        "tiff",
        "pdf",
        "css",
        "js",
        "ts",
        "map",
        "json",
        "xml",
        "txt",
        "md",
        "html",
        "htm",
    ]
)


def _email(value: str) -> str | None:
    local, _, domain = value.rpartition("@")
    if ".." in local or local.endswith(".") or len(value) > 254 or len(local) > 64:
        return None
    if domain.rsplit(".", 1)[-1].lower() in _FILE_SUFFIXES:
        return None
    return value


def _mask_email(value: str) -> str:
    # The result stays an address (asterisks are valid in a local part), so a schema's
    # `format: email` still holds.
    local, _, domain = value.rpartition("@")
    return local[:1] + "*" * (len(local) - 1) + "@" + domain


# Dates and dotted quads are digit groups with separators too.
_NOT_A_NUMBER: Final = _c(
    r"\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ]\d{4}|\d{1,3}(?:\.\d{1,3}){3}"
)


def _national(digits: str, country: int) -> phonenumbers.PhoneNumber:
    # Italian-style numbers keep their leading zeros as part of the number.
    zeros = len(digits) - len(digits.lstrip("0"))
    number = phonenumbers.PhoneNumber(country_code=country, national_number=int(digits or "0"))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros
    return number


def _valid_in(number: phonenumbers.PhoneNumber, regions: Sequence[str]) -> bool:
    return any(_valid_for_region(number, r) for r in regions)


_RARER_TYPES: Final = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _valid_for_region(number: phonenumbers.PhoneNumber, region: str) -> bool:
    """`phonenumbers.is_valid_number_for_region`, asking the same questions in another order.
    The library finds the number's type (eight rarer types' patterns before fixed line and
    mobile, every one a regular-expression match) and compares it with UNKNOWN: the number is
    valid when its general pattern and any type's pattern match, whichever that is, so trying
    the common types first gives the same answer for a fraction of the matching."""
    country = number.country_code
    if country is None:  # never built so here: the library's own answer
        return phonenumbers.is_valid_number_for_region(number, region)
    meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country, region.upper())
    if meta is None or (
        region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        and country != phonenumberutil.country_code_for_valid_region(region)
    ):
        return False
    nsn = phonenumbers.national_significant_number(number)
    matches = phonenumberutil._is_number_matching_desc
    if not matches(nsn, meta.general_desc):
        return False
    if matches(nsn, meta.fixed_line):
        return True
    if not meta.same_mobile_and_fixed_line_pattern and matches(nsn, meta.mobile):
        return True
    return any(matches(nsn, getattr(meta, kind)) for kind in _RARER_TYPES)


def _phone_validator(regions: Sequence[str]) -> Validator:
    """Validation against libphonenumber's metadata for the number's country. Numbers are
    built from their digits directly: `phonenumbers.parse` costs several times the check
    itself, and a candidate's shape is already known here."""
    national = []
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        prefix = meta.national_prefix if meta is not None and meta.national_prefix else ""
        national.append((region, phonenumbers.country_code_for_region(region), prefix))

    def validate(value: str) -> str | None:
        digits = "".join(c for c in value if c.isdigit())
        if not 7 <= len(digits) <= 15 or _NOT_A_NUMBER.fullmatch(value):
            return None
        if value.startswith("+"):
            for size in (1, 2, 3):
                country = int(digits[:size])
                if country in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                    number = _national(digits[size:], country)
                    owners = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country]
                    return value if _valid_in(number, owners) else None
            return None
        if "." in value and "-" in value:
            return None  # a national number keeps one separator (`141.771.552-79` is an id)
        for region, country, prefix in national:
            rest = digits[len(prefix) :] if prefix and digits.startswith(prefix) else digits
            for candidate in {rest, digits}:
                if _valid_in(_national(candidate, country), (region,)):
                    return value
        return None

    return validate


def _card_issuer(d: str) -> bool:
    """Known issuer ranges and the lengths each issues."""
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:  # Discover
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if 300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095:  # Diners Club
        return 14 <= n <= 19
    if p2 in (62, 81):  # UnionPay
        return 16 <= n <= 19
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763) or p2 in (50, 56, 57, 58):
        return 12 <= n <= 19  # Maestro
    return False


_SEPARATORS: Final = _c(r"[ -]")


def _card(value: str) -> str | None:
    groups = _SEPARATORS.split(value)
    if len(groups) > 1 and (
        (" " in value and "-" in value)
        or len(groups[0]) != 4
        or min(map(len, groups[1:-1] or ["0000"])) < 4
    ):
        return None
    # A longer run may hold a card followed by more digits: drop trailing groups and retry.
    while groups:
        digits = "".join(groups)
        if 13 <= len(digits) <= 19 and _card_issuer(digits) and luhn.is_valid(digits):
            return value[: len(" ".join(groups))] if len(groups) > 1 else digits
        if len(groups) == 1:
            return None
        groups = groups[:-1]
    return None


def _iban(value: str) -> str | None:
    compact = value.replace(" ", "")
    if std_iban.is_valid(compact):
        return value
    # A following all-caps word may have joined the last group: try without it.
    head = value.rsplit(" ", 1)[0]
    return head if head != value and std_iban.is_valid(head.replace(" ", "")) else None


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _ssn(value: str) -> str | None:
    return value if ssn.is_valid(_digits(value)) else None


_NINO_BANNED: Final = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def _nino(value: str) -> str | None:
    compact = value.replace(" ", "")
    if compact[:2] in _NINO_BANNED or (" " in value and value.count(" ") != 4):
        return None
    return value


def _sin(value: str) -> str | None:
    return value if sin.is_valid(_digits(value)) else None


def _es_id(value: str) -> str | None:
    compact = value.replace("-", "")
    return value if dni.is_valid(compact) or nie.is_valid(compact) else None


def _cpf(value: str) -> str | None:
    digits = _digits(value)
    return value if len(set(digits)) > 1 and cpf.is_valid(digits) else None


def _aadhaar(value: str) -> str | None:
    return value if aadhaar.is_valid(_digits(value)) else None


# -- credentials -----------------------------------------------------------------------------


def _mixed(value: str) -> str | None:
    """Random key material: upper and lower case letters and digits all present."""
    has = (any(c.isupper() for c in value), any(c.islower() for c in value))
    return value if all(has) and any(c.isdigit() for c in value) else None


def _token_like(value: str) -> str | None:
    """A bearer credential rather than prose: long, with letters and digits."""
    if len(value) < 20 or not any(c.isdigit() for c in value):
        return None
    return value if any(c.isalpha() for c in value) else None


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt(value: str) -> str | None:
    header, payload, signature = value.split(".")
    try:
        decoded = json.loads(_b64url(header))
        _b64url(payload)
    except (ValueError, binascii.Error):
        return None
    if not isinstance(decoded, dict) or not isinstance(alg := decoded.get("alg"), str):
        return None
    # Only an unsecured token (`alg: none`) ends in an empty signature; otherwise the last
    # dot is a full stop after a two-part string.
    return value if signature or alg.lower() == "none" else None


def _azure_key(value: str) -> str | None:
    return value if len(value) in (44, 88) and value.endswith("=") else None


_PEM_BODY_START: Final = _c(r"-----BEGIN[^-]*-----")
_PEM_END: Final = _c(r"-----END[^-]*-----")


def _mask_pem(value: str) -> str:
    head = _PEM_BODY_START.match(value)
    start = head.end() if head else 0
    tail = _PEM_END.search(value, start)
    end = tail.start() if tail else len(value)
    return value[:start] + mask_keep(value[start:end]) + value[end:]


def _hide(value: str) -> str:
    """Key material keeps no character: even where its `/` and `+` fall says something."""
    return "*" * len(value)


_SECRET_KEY: Final = r"(?:aws_?)?secret_?(?:access_?)?key"
_TOKEN_FIELD: Final = r"(?:access|refresh|id|auth|bearer)_?token"


def builtins(phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> tuple[Detector, ...]:
    """Every built-in detector, in precedence order; national phone formats are those of
    `phone_regions` (numbers written with a leading `+` are recognised for every country)."""
    return (
        Detector(
            "private_key",
            _c(
                r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
                r"(?:[A-Za-z0-9+/=:,\s]|\\[nr]|-(?!----))*(?:-----END \1-----)?"
            ),
            _mask_pem,
            gates=("-----BEGIN",),
        ),
        Detector(
            "jwt",
            _c(
                r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
                r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"eyJ")),
            _jwt,
            gates=("eyJ",),
        ),
        Detector(
            "aws_access_key_id",
            _c(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}(?![A-Za-z0-9])"),
            keeping_prefix(_c(r"A[A-Z0-9]{3}")),
            gates=("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
        ),
        Detector(
            "aws_secret_access_key",
            _c(
                rf"{_SECRET_KEY}\\?[\"']?\s*[:=]\s*\\?[\"']?([A-Za-z0-9/+]{{40}})(?![A-Za-z0-9/+=])",
                re.IGNORECASE,
            ),
            _hide,
            _mixed,
            group=1,
            folded_gates=("secret",),
            key_context=_c(rf"(?i){_SECRET_KEY}"),
            bare=_c(r"[A-Za-z0-9/+]{40}"),
        ),
        Detector(
            "gcp_api_key",
            _c(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
            keeping_prefix(_c(r"AIza")),
            gates=("AIza",),
        ),
        Detector(
            "gcp_service_account_key",
            _c(r"\\?\"private_key_id\\?\"\s*:\s*\\?\"([a-f0-9]{40})\\?\""),
            _hide,
            group=1,
            gates=("private_key_id",),
            key_context=_c(r"private_key_id"),
            bare=_c(r"[a-f0-9]{40}"),
        ),
        Detector(
            "azure_storage_key",
            _c(
                r"(?:AccountKey|SharedAccessKey|AccessKey)\s*=\s*([A-Za-z0-9+/]{42,86}={1,2})", re.I
            ),
            _hide,
            _azure_key,
            group=1,
            folded_gates=("accountkey", "accesskey"),
        ),
        Detector(
            "azure_sas_token",
            _c(r"[?&]sig=([A-Za-z0-9%+/]{40,100}(?:%3D|=){0,2})(?![A-Za-z0-9%+/=])"),
            _hide,
            group=1,
            gates=("sig=",),
        ),
        Detector(
            "azure_client_secret",
            _c(
                r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}"
                r"(?![A-Za-z0-9_~-]|\.[A-Za-z0-9_~-])"
            ),
            _hide,
            gates=("Q~",),
        ),
        Detector(
            "github_token",
            _c(
                r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_"
                r"[A-Za-z0-9]{59})(?![A-Za-z0-9_])"
            ),
            keeping_prefix(_c(r"gh[pousr]_|github_pat_")),
            gates=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ),
        Detector(
            "gitlab_token",
            _c(
                r"(?<![A-Za-z0-9_-])(?:glpat|gldt|glrt|glcbt|glimt|glptt|glft|glsoat|gloas|"
                r"glagent|glffct)-[A-Za-z0-9_-]{20,300}(?:\.[0-9a-z]{2}\.[0-9a-z]{7,9})?"
                r"(?![A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"gl[a-z]+-")),
            gates=(
                "glpat-",
                "gldt-",
                "glrt-",
                "glcbt-",
                "glimt-",
                "glptt-",
                "glft-",
                "glsoat-",
                "gloas-",
                "glagent-",
                "glffct-",
            ),
        ),
        Detector(
            "slack_token",
            _c(
                r"(?<![A-Za-z0-9-])(?:xox[abposre]-(?:[0-9A-Za-z]{2,}-){1,4}[0-9A-Za-z]{8,}|"
                r"xapp-\d-[A-Z0-9]{6,}-\d{6,}-[a-f0-9]{32,})(?![0-9A-Za-z-])|"
                r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}"
            ),
            keeping_prefix(_c(r"xox[a-z]-|xapp-|https://hooks\.slack\.com/[a-z]+/")),
            gates=("xox", "xapp-", "hooks.slack.com"),
        ),
        Detector(
            "stripe_key",
            _c(
                r"(?<![A-Za-z0-9_])(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,247}|"
                r"whsec_[A-Za-z0-9]{32,})(?![A-Za-z0-9_])"
            ),
            keeping_prefix(_c(r"(?:sk|rk)_(?:live|test)_|whsec_")),
            gates=("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"),
        ),
        Detector(
            "anthropic_key",
            _c(
                r"(?<![A-Za-z0-9_-])sk-ant-(?:api|admin|oat|ort)\d{2}-[A-Za-z0-9_-]{80,120}(?![A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"sk-ant-[a-z]+\d{2}-")),
            gates=("sk-ant-",),
        ),
        Detector(
            "openai_key",
            _c(
                r"(?<![A-Za-z0-9_-])sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,250}|"
                r"[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})(?![A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"sk-(?:proj-|svcacct-|admin-)?")),
            gates=("sk-proj-", "sk-svcacct-", "sk-admin-", "T3BlbkFJ"),
        ),
        Detector(
            "google_oauth_token",
            _c(
                r"(?<![A-Za-z0-9_-])(?:ya29\.[0-9A-Za-z_-]{30,2048}|GOCSPX-[0-9A-Za-z_-]{28}|"
                r"1//0[0-9A-Za-z_-]{40,512})(?![A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"ya29\.|GOCSPX-|1//0")),
            gates=("ya29.", "GOCSPX-", "1//0"),
        ),
        Detector(
            "npm_token",
            _c(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"),
            keeping_prefix(_c(r"npm_")),
            gates=("npm_",),
        ),
        Detector(
            "pypi_token",
            _c(
                r"(?<![A-Za-z0-9_-])pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)"
                r"[A-Za-z0-9_-]{50,}(?![A-Za-z0-9_-])"
            ),
            keeping_prefix(_c(r"pypi-")),
            gates=("pypi-AgE",),
        ),
        Detector(
            "bearer_token",
            _c(
                r"\bbearer\s+([A-Za-z0-9._~+/-]{15,}[A-Za-z0-9_~+/-]=*)"
                r"(?![A-Za-z0-9_~+/=-]|\.[A-Za-z0-9_~+/-])",
                re.IGNORECASE,
            ),
            _hide,
            _token_like,
            group=1,
            folded_gates=("bearer",),
            key_context=_c(rf"(?i)^{_TOKEN_FIELD}$"),
            bare=_c(r"[A-Za-z0-9._~+/-]{16,}=*"),
        ),
        Detector(
            "iban",
            _c(
                r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: ?[A-Z0-9]{4}){2,7}"
                r"(?: ?[A-Z0-9]{1,4})?)(?![A-Za-z0-9])"
            ),
            keeping(2, 4),
            _iban,
        ),
        Detector(
            "payment_card",
            _c(r"(?<![\w.+-])\d(?:[ -]?\d){12,22}(?![\w-]|\.\d)"),
            keeping(0, 4),
            _card,
        ),
        Detector(
            "us_ssn",
            _c(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])"),
            keeping(0, 4),
            _ssn,
            key_context=_c(r"(?i)^(?:us_?)?(?:ssn|social_?security(?:_?number)?)$"),
            bare=_c(r"\d{9}"),
        ),
        Detector(
            "uk_nino",
            _c(
                r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z](?: ?\d{2}){3} ?[A-D]"
                r"(?![A-Za-z0-9])"
            ),
            keeping(),
            _nino,
        ),
        Detector(
            "ca_sin",
            _c(r"(?<![\w-])\d{3}([ -])\d{3}\1\d{3}(?![\w-])"),
            keeping(0, 3),
            _sin,
        ),
        Detector(
            "es_dni",
            _c(r"(?<![A-Za-z0-9])(?:\d{8}|[XYZ]-?\d{7})-?[A-HJ-NP-TV-Z](?![A-Za-z0-9])"),
            keeping(),
            _es_id,
        ),
        Detector(
            "br_cpf",
            _c(r"(?<![\w.-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w-])"),
            keeping(0, 2),
            _cpf,
            key_context=_c(r"(?i)^cpf$"),
            bare=_c(r"\d{11}"),
        ),
        Detector(
            "in_aadhaar",
            _c(r"(?<![\w-])(?<!\d )[2-9]\d{3}([ -])\d{4}\1\d{4}(?![\w-])(?! \d)"),
            keeping(0, 4),
            _aadhaar,
        ),
        Detector(
            "phone",
            _c(
                # Every form starts with `+`, `(` or a digit: the leading lookahead lets the
                # engine skip other positions cheaply (a quarter less scanning time).
                r"(?=[+(\d])(?<![\w+.-])"
                r"(?:\+\d{7,15}|\+\d{1,3}(?:[ .-]\d{1,8}|[ .-]?\(\d{1,5}\)){1,6}|"
                r"\(\d{2,5}\)[ .-]?\d{2,5}(?:[ .-]\d{2,5}){1,3}|\d{2,5}(?:[ .-]\d{2,5}){2,3}|"
                r"0\d{2,4}[ .-]\d{5,8})(?![\w-]|\.\d)"
            ),
            keeping(0, 2),
            _phone_validator(phone_regions),
        ),
        Detector(
            "email",
            _c(
                r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
                r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}"
                r"(?![A-Za-z0-9-])"
            ),
            _mask_email,
            _email,
            gates=("@",),
        ),
    )


BUILTIN_NAMES: Final = tuple(d.name for d in builtins())
