"""RFC 8785 JSON Canonicalization Scheme (JCS): one byte string per JSON value.

Object members sorted by the UTF-16 code units of their names, no whitespace, strings escaped
only where JSON requires (`"`, `\\`, and control characters, the short forms where JSON has
them), and numbers written as ECMAScript's `Number.prototype.toString` writes an IEEE-754
double. Anything a record hashes goes through here, so two implementations agree on its bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

# The C encoder of the standard library escapes exactly what JCS escapes when non-ASCII
# characters are kept as they are (`ensure_ascii=False`), with lowercase hex in \u00XX.
_string: Final = json.encoder.c_encode_basestring or json.encoder.py_encode_basestring  # type: ignore[attr-defined]
_MAX_SAFE: Final = 2**53


class CanonicalError(ValueError):
    """The value has no JSON form (NaN, an infinity, a non-string key, an unknown type)."""


def canonical(value: Any) -> bytes:
    """The JCS bytes of `value` (dict, list, tuple, str, int, float, bool, None)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float):
        out.append(number(value))
    elif isinstance(value, dict):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise CanonicalError(f"object member names are strings, not {type(key).__name__}")
        # Code point order equals UTF-16 order unless a name holds characters past U+FFFF.
        if all(key.isascii() for key in keys):
            keys.sort()
        else:
            keys.sort(key=_utf16)
        out.append("{")
        first = True
        for key in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"{type(value).__name__} has no JSON form")


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def number(value: int | float) -> str:
    """ECMAScript `Number.prototype.toString` of the double nearest `value`."""
    if isinstance(value, int):
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return str(value)
        try:
            value = float(value)
        except OverflowError:
            raise CanonicalError("an integer beyond the range of a double") from None
    if math.isnan(value) or math.isinf(value):
        raise CanonicalError("NaN and infinities have no JSON form")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript requires; only the
    # placement of the decimal point and the exponent differ.
    text = repr(abs(value))
    mantissa, _, exp_text = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # `n` of ECMA-262 Number::toString: value = 0.digits * 10**n, digits without leading or
    # trailing zeros.
    n = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-")
        body += str(abs(e))
    return sign + body
