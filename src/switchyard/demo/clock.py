"""Demo backend ``clock``: world-clock tools over stdio, built on the official MCP SDK.

Offers tools (``now``, ``convert_time``, ``add_duration``), a static resource
(``clock://zones``), a resource template (``clock://zone/{+name}``), a prompt
(``plan_meeting``) and argument completion of IANA time-zone names for both the
template variable and the prompt arguments.

Run it as ``switchyard demo clock``; it speaks MCP over stdin/stdout and logs only to
stderr (at WARNING).
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Annotated, Any, TypeVar, cast

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

SERVER_NAME = "switchyard-demo-clock"
ZONE_TEMPLATE = "clock://zone/{+name}"
MAX_COMPLETIONS = 100  # the protocol caps a completion at 100 values

_F = TypeVar("_F", bound=Callable[..., Any])

ZoneName = Annotated[
    str,
    Field(description="IANA time-zone name, e.g. 'UTC', 'Europe/Paris' or 'America/New_York'."),
]


class TimeReading(BaseModel):
    """A moment in time as seen from one time zone."""

    timezone: str = Field(description="IANA time-zone name the time is expressed in.")
    iso: str = Field(description="ISO 8601 local date and time with UTC offset.")
    utc_offset: str = Field(description="Offset from UTC, e.g. '+02:00'.")
    abbreviation: str = Field(description="Zone abbreviation in effect, e.g. 'CEST'.")
    weekday: str = Field(description="Day of the week in English, e.g. 'Monday'.")
    is_dst: bool = Field(description="Whether daylight-saving time is in effect.")
    unix: float = Field(description="Seconds since the Unix epoch.")


@cache
def all_zones() -> tuple[str, ...]:
    """Every IANA zone name known to this machine, sorted."""
    return tuple(sorted(zoneinfo.available_timezones()))


def _zone(name: str) -> zoneinfo.ZoneInfo:
    name = name.strip()
    if name not in all_zones():
        raise ToolError(f"Unknown time zone {name!r}; read clock://zones for the valid names.")
    return zoneinfo.ZoneInfo(name)


def _reading(moment: datetime, zone: zoneinfo.ZoneInfo) -> TimeReading:
    local = moment.astimezone(zone)
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    dst = local.dst()
    return TimeReading(
        timezone=zone.key,
        iso=local.isoformat(timespec="seconds"),
        utc_offset=f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
        abbreviation=local.tzname() or "",
        weekday=local.strftime("%A"),
        is_dst=bool(dst),
        unix=local.timestamp(),
    )


def _parse_time(text: str, zone: zoneinfo.ZoneInfo) -> datetime:
    """Parse ISO 8601 (or the word ``now``); a naive time is taken as local to ``zone``."""
    text = text.strip()
    if text.lower() == "now":
        return datetime.now(zone)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ToolError(
            f"Cannot parse {text!r} as an ISO 8601 date-time (e.g. '2026-03-01T09:30:00')."
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def complete_zone(prefix: str) -> Completion:
    """Zone names starting with ``prefix`` (case-insensitive), at most 100 of them."""
    needle = prefix.strip().lower()
    matches = [z for z in all_zones() if z.lower().startswith(needle)]
    if not matches and needle:
        # Fall back to a substring match so 'paris' finds 'Europe/Paris'.
        matches = [z for z in all_zones() if needle in z.lower()]
    return Completion(
        values=matches[:MAX_COMPLETIONS],
        total=len(matches),
        has_more=len(matches) > MAX_COMPLETIONS,
    )


def build_server() -> MCPServer:
    """Build the clock demo server (not yet running)."""
    mcp: MCPServer = MCPServer(
        name=SERVER_NAME,
        title="Clock (Switchyard demo)",
        instructions=(
            "World clock. Use `now` for the current time in a zone, `convert_time` to move a "
            "time between zones and `add_duration` for date arithmetic. Zone names are IANA "
            "names such as 'Europe/Paris'; the clock://zones resource lists them."
        ),
        version="1.0.0",
        log_level="WARNING",
    )
    read_only = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=False
    )
    pure = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )

    @mcp.tool(title="Current time", annotations=read_only)
    async def now(timezone: ZoneName = "UTC") -> TimeReading:
        """Return the current date and time in the given IANA time zone (default UTC)."""
        zone = _zone(timezone)
        return _reading(datetime.now(zone), zone)

    @mcp.tool(title="Convert a time between zones", annotations=pure)
    async def convert_time(
        time: Annotated[
            str, Field(description="ISO 8601 date-time, e.g. '2026-03-01T09:30', or 'now'.")
        ],
        to_timezone: ZoneName,
        from_timezone: Annotated[
            str,
            Field(description="Zone of `time` when it carries no UTC offset (default UTC)."),
        ] = "UTC",
    ) -> TimeReading:
        """Convert a date-time from one IANA time zone to another.

        A time without an explicit UTC offset is read as local time in `from_timezone`.
        """
        source = _zone(from_timezone)
        target = _zone(to_timezone)
        return _reading(_parse_time(time, source), target)

    @mcp.tool(title="Add a duration", annotations=pure)
    async def add_duration(
        start: Annotated[
            str, Field(description="ISO 8601 date-time to start from, or 'now'.")
        ] = "now",
        days: Annotated[float, Field(description="Days to add (negative subtracts).")] = 0,
        hours: Annotated[float, Field(description="Hours to add (negative subtracts).")] = 0,
        minutes: Annotated[float, Field(description="Minutes to add (negative subtracts).")] = 0,
        seconds: Annotated[float, Field(description="Seconds to add (negative subtracts).")] = 0,
        timezone: ZoneName = "UTC",
    ) -> TimeReading:
        """Add (or subtract) a duration to a date-time and return the result in `timezone`.

        Arithmetic is done on absolute time, so adding 24 hours across a daylight-saving
        change moves the wall clock by 23 or 25 hours.
        """
        zone = _zone(timezone)
        begin = _parse_time(start, zone)
        try:
            delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            end = begin + delta
        except OverflowError as exc:
            raise ToolError("The resulting date is out of range.") from exc
        return _reading(end, zone)

    @mcp.resource(
        "clock://zones",
        name="zones",
        title="Time zones",
        description="Every IANA time-zone name this clock knows, one per line.",
        mime_type="text/plain",
    )
    async def zones() -> str:
        return "\n".join(all_zones()) + "\n"

    @mcp.resource(
        ZONE_TEMPLATE,
        name="zone",
        title="Time zone details",
        description=(
            "Current time, UTC offset and daylight-saving status of one IANA time zone, "
            "e.g. clock://zone/Europe/Paris."
        ),
        mime_type="application/json",
    )
    async def zone(name: str) -> str:
        if name not in all_zones():
            raise ResourceNotFoundError(f"Unknown time zone {name!r}")
        reading = _reading(datetime.now(zoneinfo.ZoneInfo(name)), zoneinfo.ZoneInfo(name))
        return json.dumps(reading.model_dump(), indent=2)

    @mcp.prompt(title="Plan a meeting across time zones")
    async def plan_meeting(
        zones: Annotated[
            str,
            Field(description="Comma-separated IANA zone names of the participants."),
        ],
        duration_minutes: Annotated[
            str, Field(description="Length of the meeting in minutes (default 60).")
        ] = "60",
    ) -> str:
        """Ask the assistant to find a meeting slot that suits participants in several zones."""
        names = [z.strip() for z in zones.split(",") if z.strip()]
        listed = ", ".join(names) if names else "(none given)"
        return (
            f"Find a {duration_minutes}-minute meeting slot in the next 7 days that falls "
            f"within 09:00-17:00 local time for participants in these time zones: {listed}. "
            "Use the clock tools (`now`, `convert_time`) to check each zone's local time, "
            "then propose up to three slots, each shown in every participant's local time."
        )

    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, ResourceTemplateReference):
            if ref.uri == ZONE_TEMPLATE and argument.name == "name":
                return complete_zone(argument.value)
            return None
        if ref.name == "plan_meeting" and argument.name == "zones":
            # Complete the last comma-separated entry, keeping the ones before it.
            done, _, last = argument.value.rpartition(",")
            head = f"{done}," if done else ""
            found = complete_zone(last)
            return Completion(
                values=[head + z for z in found.values], total=found.total, has_more=found.has_more
            )
        if ref.name == "plan_meeting" and argument.name == "duration_minutes":
            options = ["15", "30", "45", "60", "90", "120"]
            return Completion(values=[o for o in options if o.startswith(argument.value.strip())])
        return None

    # `MCPServer.completion` is unannotated in the SDK, hence the cast.
    register = cast(
        Callable[[_F], _F],
        mcp.completion(),  # type: ignore[no-untyped-call]
    )
    register(complete)
    return mcp


def main() -> None:
    """Run the clock demo server over stdio until stdin closes."""
    build_server().run("stdio")


if __name__ == "__main__":
    main()
