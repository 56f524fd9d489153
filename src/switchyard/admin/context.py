"""What an admin operation is handed: the gateway's parts it manages, the caller, the request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchyard.audit.settings import AuditSettings
from switchyard.auth.authenticator import Authenticator
from switchyard.call import Identity
from switchyard.config.schema import AdminConfig
from switchyard.config.versions import DesiredConfig
from switchyard.downstream.asgi import Receive, Scope, Send
from switchyard.gateway import Gateway
from switchyard.storage.database import Database, StorageError, open_database
from switchyard.storage.settings import StorageSettings


class Problem(Exception):
    """An answer other than success: its status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class AdminContext:
    gateway: Gateway
    settings: AdminConfig
    desired: DesiredConfig | None
    storage: StorageSettings
    audit: AuditSettings | None = None
    authenticator: Callable[[], Authenticator | None] = field(default=lambda: None)
    _db: Database | None = None
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def dynamic(self) -> bool:
        return self.settings.dynamic_registration

    async def db(self) -> Database:
        """The `storage:` database (pins, audit records), opened at first use."""
        async with self._opening:
            if self._db is None:
                try:
                    self._db = await open_database(self.storage)
                except StorageError:
                    raise Problem(503, "the database is unavailable; retry shortly") from None
            return self._db

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


@dataclass(slots=True)
class Request:
    ctx: AdminContext
    who: Identity | None
    params: dict[str, str]
    query: dict[str, Any]
    body: Any
    if_match: str | None
    scope: Scope
    receive: Receive
    send: Send

    @property
    def actor(self) -> str:
        return self.who.key if self.who is not None else "local"

    def require(self, etag: str) -> None:
        """412 unless `If-Match` names the current version of what is written."""
        if self.if_match is None:
            raise Problem(428, "this change needs If-Match with the resource's current ETag")
        offered = [t.strip() for t in self.if_match.split(",")]
        if etag not in offered:
            raise Problem(412, f"the resource changed: its ETag is now {etag}")
