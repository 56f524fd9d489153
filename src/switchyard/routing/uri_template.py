"""RFC 6570 URI templates, matched (not expanded) to find which backend owns a URI."""

from __future__ import annotations

import re
from typing import Final

_EXPR: Final = re.compile(r"\{([^}]*)\}")


def compile_template(template: str) -> re.Pattern[str]:
    """A regex that matches the URIs the template can produce.

    Simple and `.`/`;`/`?`/`&` expressions match one segment; reserved (`+`) and fragment (`#`)
    expressions may span slashes. Literal text must match exactly.
    """
    out: list[str] = []
    pos = 0
    for m in _EXPR.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        body = m.group(1)
        op = body[:1] if body[:1] in "+#./;?&" else ""
        if op in ("+", "#"):
            out.append(("\\#" if op == "#" else "") + ".*")
        elif op in ("?", "&"):
            out.append("(?:[?&][^#]*)?")
        elif op in (".", ";", "/"):
            out.append(f"(?:\\{op}[^/?#]*)*")
        else:
            out.append("[^/?#]*")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))
