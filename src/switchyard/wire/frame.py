"""JSON-RPC frames: the bytes are the truth, the envelope is a cheap peek.

Params, results and errors stay as `msgspec.Raw` (undecoded byte slices), so forwarding a frame
never re-models its payload; only the fields a caller asks for are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, overload

import msgspec

Raw = msgspec.Raw
UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType

_T = TypeVar("_T")

JSONRPC_HEAD: Final = b'{"jsonrpc":"2.0","id":'


class Envelope(msgspec.Struct, forbid_unknown_fields=False):
    """The top level of one JSON-RPC message; payloads left as raw slices."""

    jsonrpc: str | UnsetType = UNSET
    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not UNSET and self.id is not UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not UNSET and self.id is UNSET

    @property
    def is_response(self) -> bool:
        return self.method is UNSET and (self.result is not UNSET or self.error is not UNSET)


class _ObjectResponse(msgspec.Struct, forbid_unknown_fields=False):
    """A response whose result is an object (every MCP result is), its members left raw."""

    jsonrpc: str | UnsetType = UNSET
    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    result: dict[str, Raw] | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


class ErrorObject(msgspec.Struct):
    code: int
    message: str
    data: Any = UNSET


_envelope_decoder: Final = msgspec.json.Decoder(Envelope)
_id_decoder: Final = msgspec.json.Decoder(int | str | None)
_object_response_decoder: Final = msgspec.json.Decoder(_ObjectResponse)
_raw_dict_decoder: Final = msgspec.json.Decoder(dict[str, Raw])
_raw_list_decoder: Final = msgspec.json.Decoder(list[Raw])
_str_decoder: Final = msgspec.json.Decoder(str)
_error_decoder: Final = msgspec.json.Decoder(ErrorObject)
_encoder: Final = msgspec.json.Encoder()

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError


_Spans = dict[str, tuple[int, int]]


class _Members(Protocol):
    """The native scanner's `members` (_members.pyi)."""

    @overload
    def __call__(self, data: bytes, within: None = None, /) -> _Spans | None: ...
    @overload
    def __call__(self, data: bytes, within: str, /) -> tuple[_Spans, _Spans | None] | None: ...


try:
    # One validating pass that also says where the top-level members lie (_members.c): for a
    # large frame, several times quicker than msgspec's, which steps over a long string a byte
    # at a time. Built where a C compiler is; without it, msgspec reads every frame.
    from switchyard.wire._members import members as _built_members
except ImportError:  # pragma: no cover - a build without a C compiler
    _native_members: _Members | None = None
else:
    _native_members = _built_members

# Below this size msgspec's pass costs about what building the envelope from the scanner's
# spans in Python does (bench/README.md).
NATIVE_FROM: Final = 4096
_RAW_MEMBERS: Final = frozenset({"params", "result", "error"})
_SCALAR_MEMBERS: Final = frozenset({"jsonrpc", "id", "method"})


# JSON allows CR and LF only as whitespace between tokens (a string must escape them), so in a
# valid frame each can become a space without changing what the frame means, or its length.
_LINE_BREAKS_TO_SPACES: Final = bytes.maketrans(b"\r\n", b"  ")
_TRAILING_SPACE: Final = frozenset(b" \t\r\n")


def peek(data: bytes) -> Envelope:
    """Decode the envelope only. Raises `msgspec.DecodeError` on invalid JSON (invalid UTF-8
    anywhere in the frame included, inside the raw slices too) or `msgspec.ValidationError` on
    a wrong shape.

    Every `Raw` slice of the result is free of raw CR and LF, whatever whitespace the sender
    used: slices are spliced into newline-delimited and SSE-framed output, where a raw line break
    would end the frame early (or let a sender forge one)."""
    if _native_members is not None and len(data) >= NATIVE_FROM:
        env = _scanned(_native_members, data)
        if env is not None:
            return env
    return _decode_frame(_envelope_decoder, data)


def _scanned(members: _Members, data: bytes) -> Envelope | None:
    """The envelope `peek` reads, from where the native scanner found the top-level members.
    None where the scanner does not read the frame plainly, or a member has a type the envelope
    refuses: the general way then reads it, and words the error."""
    spans = members(data)
    return None if spans is None else _envelope(data, spans)


def _envelope(data: bytes, spans: _Spans) -> Envelope | None:
    view = memoryview(data)
    values = _scalars(view, spans)
    if values is None:
        return None
    for name in _RAW_MEMBERS & spans.keys():
        values[name] = Raw(view[slice(*spans[name])])
    return Envelope(**values)


def _scalars(view: memoryview, spans: _Spans) -> dict[str, Any] | None:
    """The envelope's `jsonrpc`, `id` and `method` among the scanner's members, decoded as the
    envelope types them; None when one has a type it refuses (the general way words that)."""
    values: dict[str, Any] = {}
    try:
        for name in _SCALAR_MEMBERS & spans.keys():
            decoder = _id_decoder if name == "id" else _str_decoder
            values[name] = decoder.decode(view[slice(*spans[name])])
    except msgspec.ValidationError:
        return None
    return values


def _decode_frame(decoder: msgspec.json.Decoder[_T], data: bytes) -> _T:
    """`data` decoded by `decoder`, every `Raw` slice free of raw CR and LF (see `peek`)."""
    try:
        decoded = decoder.decode(data)
        if not data.isascii():
            # msgspec checks the UTF-8 of the strings it builds, not of those it steps over
            # (every `Raw` slice): a result with bytes no JSON text may hold would pass on
            # verbatim, and a reader decoding it later (redaction) would fail where this did not.
            data.decode()
        if _has_line_break(data):
            # Validated as sent above (a raw break inside a string is refused there); only now
            # may the breaks become spaces.
            decoded = decoder.decode(data.translate(_LINE_BREAKS_TO_SPACES))
        return decoded
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _unreadable(exc) from None


def peek_reply(data: bytes, *, fields: bool = False) -> Reply | None:
    """The reply a frame carries when it is a response (None: it is not one), as `peek`
    reads it. With `fields`, a result that is an object is decoded one level deep in the same
    pass, and the reply hands those members to `Reply.take_fields`: a reader that needs the
    result's top level (an era translation) then makes no second pass over a large result.
    The result's bytes are then those members encoded again (or, from the native scanner, the
    result as sent, whose keys it has found unique): the same JSON value as sent, as Switchyard
    reads it (a repeated key once, the last). Raises as `peek` does."""
    if _native_members is not None and len(data) >= NATIVE_FROM:
        reply = _scanned_reply(_native_members, data, fields=fields)
        if reply is not None:
            return None if reply is _NOT_A_REPLY else reply
    if fields:
        try:
            decoded: _ObjectResponse | None = _decode_frame(_object_response_decoder, data)
        except msgspec.ValidationError:
            decoded = None  # some other shape (a result that is no object): the general way
        if (
            decoded is not None
            and decoded.method is UNSET
            and decoded.error is UNSET
            and isinstance(decoded.result, dict)
        ):
            members = decoded.result
            result = _encoder.encode(members)
            reply = Reply(result=result)
            reply._fields = (result, members)
            return reply
    env = peek(data)
    return reply_from(env) if env.is_response else None


def _scanned_reply(members: _Members, data: bytes, *, fields: bool) -> Reply | None:
    """What `peek_reply` reads, from one pass of the native scanner over the frame's top level
    and the result's (`_NOT_A_REPLY` for a frame that is no response). The result's top level
    also says whether it is flagged `isError`, so the access record makes no pass of its own.
    None where the scanner does not read the frame plainly, or `fields` asks for a result's
    members it did not read plainly: the general way then reads it."""
    found = members(data, "result")
    if found is None:
        return None
    spans, inner = found
    env = _envelope(data, spans)
    if env is None:
        return None
    if not env.is_response:
        return _NOT_A_REPLY
    reply = reply_from(env)
    result = reply.result
    if result is None or env.result is UNSET:
        return reply  # an error (it wins over a result) or, without either, the empty result
    if inner is None:
        return None if fields else reply
    flag = inner.get("isError")
    reply.note_flag(flag is not None and result[flag[0] : flag[1]] == b"true")
    if fields:
        within = memoryview(result)
        reply._fields = (result, {key: Raw(within[a:b]) for key, (a, b) in inner.items()})
    return reply


def reply_from(env: Envelope) -> Reply:
    """The reply a response envelope carries (its error, when it has both)."""
    if env.error is not UNSET:
        return Reply(error=bytes(env.error))
    return Reply(result=bytes(env.result) if env.result is not UNSET else b"{}")


def _has_line_break(data: bytes) -> bool:
    # A line-framed reader hands over its frame's own terminator: that one is no concern.
    end = len(data)
    while end and data[end - 1] in _TRAILING_SPACE:
        end -= 1
    return data.find(b"\n", 0, end) >= 0 or data.find(b"\r", 0, end) >= 0


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_object(raw: bytes | Raw) -> dict[str, Raw]:
    """Decode one JSON object one level deep; every value stays raw."""
    return _raw_dict_decoder.decode(raw)


def decode_array(raw: bytes | Raw) -> list[Raw]:
    return _raw_list_decoder.decode(raw)


def decode_str(raw: bytes | Raw) -> str:
    return _str_decoder.decode(raw)


def decode_error(raw: bytes | Raw) -> ErrorObject:
    return _error_decoder.decode(raw)


def decode_any(raw: bytes | Raw) -> Any:
    """Any JSON value, decoded whole. Whatever cannot be read raises `DecodeError`, as invalid
    JSON does: invalid UTF-8 and nesting past Python's recursion limit too, for which msgspec
    itself raises `UnicodeDecodeError` and `RecursionError` (a number past what it represents,
    `1e400`, is its `ValidationError`, a `DecodeError` already)."""
    try:
        return msgspec.json.decode(raw)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: UnicodeDecodeError | RecursionError) -> msgspec.DecodeError:
    """What msgspec raises for bytes it cannot read but does not call invalid JSON, as the
    `DecodeError` every reader of a frame expects."""
    if isinstance(exc, UnicodeDecodeError):
        return msgspec.DecodeError(f"invalid UTF-8: {exc.reason}")
    # msgspec nests as deep as Python's recursion limit allows, then raises RecursionError:
    # nesting a thousand deep is a malformed frame to its reader, not a failure of the reader.
    return msgspec.DecodeError("JSON nested too deeply")


def encode_object(obj: dict[str, Raw] | dict[str, Any]) -> bytes:
    """Encode a dict whose values may be `Raw` slices; those are written back verbatim."""
    return _encoder.encode(obj)


def encode_id(request_id: int | str | None) -> bytes:
    if isinstance(request_id, int):
        return str(request_id).encode()
    return _encoder.encode(request_id)


@dataclass(frozen=True, slots=True)
class HttpHints:
    """How an HTTP face answers a reply that is its request's whole response (a JSON body):
    another status than 200 (429 for a rate-limited call) and extra headers. A face that
    cannot honour them (an event stream already open, stdio) sends the JSON-RPC reply alone,
    which carries everything a client needs."""

    status: int | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(slots=True)
class Reply:
    """The outcome of one request: exactly one of `result` or `error`, as raw JSON."""

    result: bytes | None = None
    error: bytes | None = None
    http: HttpHints | None = None
    """What an HTTP face should add when this reply is the whole response."""
    _flag: tuple[bytes, bool] | None = None
    _fields: tuple[bytes, dict[str, Raw]] | None = field(default=None, compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def take_fields(self) -> dict[str, Raw]:
        """The result decoded one level deep, to read or change: handed over by `peek_reply`
        when it decoded them anyway (once: the taker may change them), else decoded now.
        Raises `DecodeError` or `ValidationError` for a result that is not an object."""
        memo, self._fields = self._fields, None
        if memo is not None and memo[0] is self.result:
            return memo[1]
        assert self.result is not None
        return decode_object(self.result)

    def note_flag(self, flagged: bool) -> None:
        """Record whether the current result is a tool result flagged `isError`, known to code
        that decoded its top level anyway: the access record and the metrics then need no
        second pass over a large result."""
        if self.result is not None:
            self._flag = (self.result, flagged)

    @property
    def flagged(self) -> bool | None:
        """What `note_flag` recorded, while the result is still the one it was recorded for
        (a policy that replaces the result makes it unknown again)."""
        flag = self._flag
        return flag[1] if flag is not None and flag[0] is self.result else None


# What `_scanned_reply` answers for a frame that is no response.
_NOT_A_REPLY: Final = Reply()


class _ToolOutcome(msgspec.Struct, forbid_unknown_fields=False):
    # Any value decodes (the last one of repeated keys wins); only `true` is a flag.
    isError: Any = False


# Reads only `isError` of a tool result; the rest is skipped, not built into objects.
_tool_outcome: Final = msgspec.json.Decoder(_ToolOutcome)
_FLAG_KEY: Final = b'"isError"'
_FLAG_TAIL: Final = 4096


def fields_flagged(result: dict[str, Raw]) -> bool:
    """`tool_flagged` of a result already decoded one level deep."""
    raw = result.get("isError")
    return raw is not None and bytes(raw).strip() == b"true"


def tool_flagged(result: bytes) -> bool:
    """Whether a tool result (a valid JSON object, as every `Raw` slice is) says `isError:
    true` at its top level, as a full decode reads it: the last such key wins, any value
    but `true` is no flag, and a result that is no object is no flag.

    SDKs write `isError` among the last members, after a content that may be large. Its
    last literal occurrence in the tail, when it opens a string (its quote not escaped) and
    the text from there on is a whole object once `{` is put before it, is a key of the top
    level: deeper, the text would close more objects than it opened; and any `isError` the
    top level has after it, however spelled, is in that text. That text alone is decoded.
    Anything else is decided by reading the whole result's top level."""
    start = max(0, len(result) - _FLAG_TAIL)
    at = result.rfind(_FLAG_KEY, start)
    if at > 0:
        escapes = 0
        while escapes < at and result[at - 1 - escapes] == 0x5C:  # backslashes before it
            escapes += 1
        if escapes % 2 == 0:
            try:
                return _tool_outcome.decode(b"{" + result[at:]).isError is True
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
    if _native_members is not None and len(result) >= NATIVE_FROM:
        # No `isError` near the end (SDKs that leave it out when false): the scanner finds the
        # top level's members without stepping over a large content a byte at a time.
        spans = _native_members(result)
        if spans is not None:
            span = spans.get("isError")
            return span is not None and result[span[0] : span[1]] == b"true"
    try:
        return _tool_outcome.decode(result).isError is True
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def error_body(code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return _encoder.encode(err)


def error_reply(code: int, message: str, data: Any = None) -> Reply:
    return Reply(error=error_body(code, message, data))


def response_bytes(id_raw: bytes, reply: Reply) -> bytes:
    """A complete JSON-RPC response, spliced from raw parts."""
    if reply.error is not None:
        return b"".join((JSONRPC_HEAD, id_raw, b',"error":', reply.error, b"}"))
    return b"".join((JSONRPC_HEAD, id_raw, b',"result":', reply.result or b"{}", b"}"))


def request_bytes(id_raw: bytes, method: str, params: bytes | None) -> bytes:
    if params is None:
        return b"".join((JSONRPC_HEAD, id_raw, b',"method":', _encoder.encode(method), b"}"))
    return b"".join(
        (JSONRPC_HEAD, id_raw, b',"method":', _encoder.encode(method), b',"params":', params, b"}")
    )


def notification_bytes(method: str, params: bytes | None) -> bytes:
    head = b'{"jsonrpc":"2.0","method":' + _encoder.encode(method)
    if params is None:
        return head + b"}"
    return b"".join((head, b',"params":', params, b"}"))
