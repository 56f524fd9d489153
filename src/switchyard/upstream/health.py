"""Active health probes of one backend endpoint.

A probe is one cheap request straight on the endpoint's connection, never through its breaker
(an open breaker must be able to see the endpoint come back): `ping` for a legacy backend,
`server/discover` for a 2026-07-28 one. Any JSON-RPC answer means alive, an error included:
`-32601` from a backend that does not implement `ping` is an answer. Only the gateway's own
verdicts (no answer within the probe timeout, the connection gone) count as failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switchyard.protocol import methods
from switchyard.protocol.versions import Era
from switchyard.upstream import handshake
from switchyard.upstream.connection import Connection
from switchyard.upstream.outbound import Outbound
from switchyard.wire import frame
from switchyard.wire.frame import Reply

log = logging.getLogger("switchyard.backend")


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = 15.0
    timeout_s: float = 5.0
    unhealthy_after: int = 2
    """Consecutive failed probes that mark the endpoint unhealthy (its breaker opens)."""
    enabled: bool = True


def answered(reply: Reply) -> bool:
    """Did the backend itself answer? A result, or an error it sent (whatever its code);
    not an error the gateway made up because no answer came."""
    if reply.result is not None:
        return True
    if reply.error is None:
        return False
    try:
        data = frame.decode_object(reply.error).get("data")
        source = frame.decode_object(data).get("source") if data is not None else None
    except (frame.DecodeError, frame.ValidationError):
        return True
    return source is None or frame.decode_any(source) != "gateway"


def probe_request(conn: Connection, timeout_s: float) -> Outbound:
    if conn.facts.era is Era.MODERN:
        return Outbound(methods.DISCOVER, handshake.discover_params(), timeout_s=timeout_s)
    return Outbound(methods.PING, None, timeout_s=timeout_s)


class Prober:
    """Probes one connection every `interval_s` while it lives; reports each verdict with
    the number of probes failed in a row."""

    def __init__(
        self,
        label: str,
        settings: HealthSettings,
        report: Callable[[bool, int, str | None], None],
    ) -> None:
        self.label = label
        self.settings = settings
        self._report = report
        self.probes = 0
        self.failed_in_row = 0

    async def run(self, conn: Connection, stopped: Callable[[], Awaitable[object]]) -> None:
        """Until the connection closes (the caller cancels) or `stopped` completes."""
        s = self.settings
        if not s.enabled:
            return
        stop = asyncio.ensure_future(stopped())
        try:
            while not stop.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stop), s.interval_s)
                if stop.done():
                    return
                await self.probe_once(conn)
        finally:
            stop.cancel()

    async def probe_once(self, conn: Connection) -> bool:
        s = self.settings
        self.probes += 1
        try:
            reply = await asyncio.wait_for(
                conn.request(probe_request(conn, s.timeout_s)), s.timeout_s + 1.0
            )
            alive = answered(reply)
            why = None if alive else _reason(reply)
        except TimeoutError:
            alive, why = False, f"no answer to a probe within {s.timeout_s:g} s"
        if alive:
            self.failed_in_row = 0
        else:
            self.failed_in_row += 1
            log.info(
                "%s: health probe failed (%d in a row): %s", self.label, self.failed_in_row, why
            )
        self._report(alive, self.failed_in_row, why)
        return alive


def _reason(reply: Reply) -> str:
    try:
        return frame.decode_error(reply.error or b"{}").message
    except (frame.DecodeError, frame.ValidationError):
        return "no answer"
