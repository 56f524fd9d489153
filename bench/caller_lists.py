"""What per-caller lists cost a gateway that has no `token_exchange` backend: Python bytecodes
executed per request (counted with `sys.settrace` opcode events: deterministic, immune to the
machine's noise) through the dispatcher, for a `tools/call` of a listed tool (its backend not
started, so it is answered at once) and a `tools/list`. Run it on two trees to compare:

  .venv/bin/python bench/caller_lists.py [--requests N]
  PYTHONPATH=/path/to/other/tree/src .venv/bin/python bench/caller_lists.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from types import FrameType
from typing import Any

from switchyard.call import RequestContext
from switchyard.gateway import Gateway, GatewaySettings, Plan
from switchyard.protocol.versions import Era
from switchyard.routing import catalog
from switchyard.upstream.backend import BackendSettings
from switchyard.upstream.stdio import StdioSettings
from switchyard.wire import frame
from switchyard.wire.frame import Raw


class _Opcodes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, frame_: FrameType, event: str, arg: Any) -> _Opcodes:
        frame_.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
        return self


async def measure(requests: int) -> dict[str, float]:
    backend = BackendSettings("fx", "fx", StdioSettings("true"))
    gw = Gateway(Plan(GatewaySettings(policies=()), (backend,)))
    tools = tuple(
        {"name": Raw(frame.encode(f"t{i}")), "inputSchema": Raw(b'{"type":"object"}')}
        for i in range(50)
    )
    gw._rebuild([catalog.Listing("fx", "fx", {catalog.TOOLS: tools})])
    gw.forwarder.freshen = None  # the backend never started: nothing to list again
    ctx = RequestContext(Era.MODERN, "2026-07-28", "http")
    out: dict[str, float] = {}
    for method, params in (
        ("tools/call", Raw(b'{"name":"fx_t7","arguments":{}}')),
        ("tools/list", Raw(b"{}")),
    ):
        await gw.dispatcher.request(ctx, method, params)  # warm
        counter = _Opcodes()
        sys.settrace(counter)
        for _ in range(requests):
            await gw.dispatcher.request(ctx, method, params)
        sys.settrace(None)
        out[method] = counter.count / requests
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    for method, ops in asyncio.run(measure(args.requests)).items():
        print(f"{method}: {ops:.1f} bytecodes/request")


if __name__ == "__main__":
    main()
