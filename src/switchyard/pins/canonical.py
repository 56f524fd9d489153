"""RFC 8785 canonical JSON (JCS): one byte string per JSON value, whatever the key order or
whitespace it arrived with. Fingerprints hash these bytes, so they must never change between
releases for the same value: a change would show every pinned definition as drifted.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

_string: Final = json.encoder.py_encode_basestring


class CanonicalError(ValueError):
    """The value has no JSON form (NaN, an infinity, a non-string key, an unknown type)."""


def canonical(value: Any) -> bytes:
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
    elif isinstance(value, int):
        out.append(_int(value))
    elif isinstance(value, float):
        out.append(number(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(f"object member names are strings, not {type(key).__name__}")
        # RFC 8785 sorts names by UTF-16 code units; code point order differs only past U+FFFF.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        out.append("{")
        for i, key in enumerate(keys):
            if i:
                out.append(",")
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
        raise CanonicalError(f"no JSON form for {type(value).__name__}")


def _int(value: int) -> str:
    # JSON numbers are IEEE-754 doubles in JCS: a large integer is written as its double is.
    return str(value) if abs(value) < 2**53 else number(float(value))


def number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a double, as RFC 8785 requires."""
    if math.isnan(value) or math.isinf(value):
        raise CanonicalError("NaN and infinities have no JSON form")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))  # the shortest round-tripping digits, as ECMAScript picks them
    mantissa, _, exp = text.partition("e")
    digits = mantissa.replace(".", "").strip("0") or "0"
    whole, _, frac = mantissa.partition(".")
    shift = int(exp) if exp else 0
    if whole.strip("0"):
        n = len(whole.lstrip("0")) + shift
    else:
        n = shift - (len(frac) - len(frac.lstrip("0")))
    k = len(digits)
    # n: where the decimal point sits relative to the significant digits (ECMA-262 7.1.12.1).
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    tail = ("." + digits[1:]) if k > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if e >= 0 else '-'}{abs(e)}"
