from typing import overload

from typing_extensions import Buffer

_Spans = dict[str, tuple[int, int]]

@overload
def members(data: Buffer, within: None = None, /) -> _Spans | None: ...
@overload
def members(data: Buffer, within: str, /) -> tuple[_Spans, _Spans | None] | None: ...
