"""One desired configuration, versioned: every accepted change (the file at start, `SIGHUP`, the
admin API) becomes an immutable snapshot with a number, kept in the `storage:` database.

With `admin.dynamic_registration` the database is the configuration's source: the file only
seeds an empty history, and every gateway process on the same database follows its newest
version (a PostgreSQL `NOTIFY` wakes them at once; polling the version number every
`admin.poll_interval` catches a lost notice). Otherwise the file is the source and the history
records what each process applied, for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import ValidationError

from switchyard.config.load import ConfigError, validate_document
from switchyard.config.reload import Reloader
from switchyard.config.schema import SwitchyardConfig
from switchyard.gateway import Changes
from switchyard.storage.database import Database, Migration, Row, open_database
from switchyard.storage.settings import StorageSettings

log = logging.getLogger("switchyard.config")

COMPONENT: Final = "config"
CHANNEL: Final = "switchyard_config"
LISTENER_NAME: Final = "switchyard-config-listener"
"""The `application_name` of each process's `LISTEN` connection (then `:host:pid`), so an
operator can tell in `pg_stat_activity` which process listens."""
MIGRATIONS: Final = (
    Migration(
        1,
        statements=(
            "CREATE TABLE config_versions (version BIGINT PRIMARY KEY, created TEXT NOT NULL, "
            "source TEXT NOT NULL, author TEXT, digest TEXT NOT NULL, summary TEXT NOT NULL, "
            "document TEXT NOT NULL)",
        ),
    ),
)
Source = Literal["file", "database"]


class VersionConflict(Exception):
    """The change was made against a version that is no longer the newest."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the configuration is at version {current}")
        self.current = current


class Refused(Exception):
    """The change does not validate, or needs a restart; the message says why."""


def document_of(config: SwitchyardConfig) -> dict[str, Any]:
    """The configuration as stored: only what differs from the defaults, `${VAR}` references
    kept as written (they are resolved when the configuration is compiled)."""
    return config.model_dump(mode="json", exclude_defaults=True)


def digest_of(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    created: str
    source: str
    """What made it: `file`, `sighup`, `seed`, `api` or `database` (followed from another)."""
    author: str | None
    digest: str
    summary: str
    document: dict[str, Any] | None = None

    def as_json(self, with_document: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "created": self.created,
            "source": self.source,
            "author": self.author,
            "digest": self.digest,
            "summary": self.summary,
        }
        if with_document:
            out["document"] = self.document
        return out


def _version(row: Row, with_document: bool) -> Version:
    return Version(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        row[3],
        str(row[4]),
        str(row[5]),
        json.loads(row[6]) if with_document else None,
    )


_COLUMNS = "version, created, source, author, digest, summary"


class VersionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def migrate(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    async def head(self) -> int:
        row = await self.db.fetchone("SELECT MAX(version) FROM config_versions")
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def get(self, version: int) -> Version | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS}, document FROM config_versions WHERE version = ?", version
        )
        return _version(row, True) if row is not None else None

    async def history(self, limit: int, before: int | None = None) -> list[Version]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS}, '' FROM config_versions WHERE version < ? "
            "ORDER BY version DESC LIMIT ?",
            before if before is not None else 2**62,
            limit,
        )
        return [_version(r, False) for r in rows]

    async def append(
        self,
        document: dict[str, Any],
        source: str,
        author: str | None,
        summary: str,
        expected: int | None = None,
    ) -> Version:
        """The next version; refused (`VersionConflict`) when `expected` is given and is not
        the newest any more."""
        created = datetime.now(UTC).isoformat(timespec="milliseconds")
        digest = digest_of(document)
        text = json.dumps(document, sort_keys=True, ensure_ascii=True)
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(hashtext(?))", CHANNEL)
            row = await tx.fetchone("SELECT MAX(version) FROM config_versions")
            head = int(row[0]) if row is not None and row[0] is not None else 0
            if expected is not None and expected != head:
                raise VersionConflict(head)
            await tx.execute(
                "INSERT INTO config_versions (version, created, source, author, digest, summary, "
                "document) VALUES (?, ?, ?, ?, ?, ?, ?)",
                head + 1,
                created,
                source,
                author,
                digest,
                summary,
                text,
            )
            if self.db.dialect == "postgresql":
                await tx.execute("SELECT pg_notify(?, ?)", CHANNEL, str(head + 1))
        return Version(head + 1, created, source, author, digest, summary, document)


class DesiredConfig:
    """The running configuration's version, and the only way to change it: validate, record,
    then swap (`Gateway.apply`, one step of the event loop)."""

    def __init__(
        self,
        reloader: Reloader,
        storage: StorageSettings,
        source: Source,
        poll_s: float = 0.5,
    ) -> None:
        self.reloader = reloader
        self.storage = storage
        self.source: Source = source
        self.poll_s = poll_s
        self.version = 0
        self.applied_at = 0.0
        self.store: VersionStore | None = None
        self.on_change: list[Callable[[Version, Changes | None], None]] = []
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._nudge = asyncio.Event()
        self._listener: Any = None
        self._listen_failed = False

    @property
    def config(self) -> SwitchyardConfig:
        return self.reloader.config

    @property
    def writer(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    async def start(self) -> None:
        db = await open_database(self.storage)
        self.store = VersionStore(db)
        await self.store.migrate()
        document = document_of(self.config)
        head = await self.store.head()
        latest = await self.store.get(head) if head else None
        if self.source == "database":
            if latest is None:
                latest = await self.store.append(document, "seed", self.writer, "seeded from file")
            elif latest.digest != digest_of(document):
                await self._follow(latest)
            self.version = latest.version
            log.info(
                "configuration source: the database (version %d); the file only seeded it",
                self.version,
            )
            await self._listen()
            self._tasks.append(asyncio.create_task(self._poll(), name="config-poll"))
        else:
            if latest is None or latest.digest != digest_of(document):
                latest = await self.store.append(document, "file", self.writer, "loaded at start")
            self.version = latest.version
            log.info(
                "configuration source: the file %s (version %d)", self.reloader.path, self.version
            )
        self.applied_at = time.time()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self.store is not None:
            await self.store.db.close()
            self.store = None

    async def propose(
        self,
        document: dict[str, Any],
        author: str | None,
        summary: str,
        expected: int,
    ) -> tuple[Version, Changes]:
        """Validate `document`, record it as the next version (only if the newest is still
        `expected`), then serve it."""
        async with self._lock:
            if expected != self.version:
                raise VersionConflict(self.version)
            config = self._validated(document)
            if self.store is None:
                raise Refused("the configuration store is not open yet; retry shortly")
            version = await self.store.append(document_of(config), "api", author, summary, expected)
            changes = await self._apply(config)
            self.version = version.version
            self.applied_at = time.time()
        self._announce(version, changes)
        return version, changes

    async def hangup(self) -> bool:
        """SIGHUP: the file again (file source), or the database's newest version."""
        if self.source == "database":
            self._nudge.set()
            return True
        applied = await self.reloader.reload()
        if applied and self.store is not None:
            async with self._lock:
                document = document_of(self.config)
                head = await self.store.head()
                latest = await self.store.get(head) if head else None
                if latest is None or latest.digest != digest_of(document):
                    latest = await self.store.append(
                        document, "sighup", self.writer, "reloaded on SIGHUP"
                    )
                self.version = latest.version
                self.applied_at = time.time()
            self._announce(latest, None)
        return applied

    def _validated(self, document: dict[str, Any]) -> SwitchyardConfig:
        try:
            config = validate_document(document, "the configuration")
        except ConfigError as exc:
            raise Refused(str(exc)) from None
        except ValidationError as exc:  # pragma: no cover - validate_document wraps these
            raise Refused(str(exc)) from None
        try:
            self.reloader.check(config)
        except ConfigError as exc:
            raise Refused(str(exc)) from None
        return config

    async def _apply(self, config: SwitchyardConfig) -> Changes:
        try:
            return await self.reloader.apply_config(config)
        except ConfigError as exc:
            raise Refused(str(exc)) from None

    async def _follow(self, latest: Version) -> None:
        """Serve a version another process (or an earlier run) recorded."""
        assert latest.document is not None
        try:
            config = self._validated(latest.document)
            changes = await self._apply(config)
        except Refused as exc:
            log.error("configuration version %d cannot be applied: %s", latest.version, exc)
            self.version = latest.version
            return
        self.version = latest.version
        self.applied_at = time.time()
        log.info("configuration version %d applied (%s)", latest.version, latest.source)
        self._announce(latest, changes)

    async def _poll(self) -> None:
        assert self.store is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self.poll_s)
            self._nudge.clear()
            if self.storage.database_url and (self._listener is None or self._listener.is_closed()):
                # A lost listener (the server restarted, or ended the connection) is opened
                # again before the version is read, so nothing written meanwhile is missed.
                if self._listener is not None:
                    log.warning("configuration notices lost; listening again")
                await self._listen()
            try:
                head = await self.store.head()
                if head > self.version:
                    async with self._lock:
                        latest = await self.store.get(head)
                        if latest is not None and latest.version > self.version:
                            await self._follow(latest)
            except Exception:
                log.exception("configuration poll failed; retrying")

    async def _listen(self) -> None:
        """A PostgreSQL `LISTEN` that wakes the poll at once; without it (SQLite, or a failed
        or lost connection, which the poll opens again) the poll alone notices a new version."""
        url = self.storage.database_url
        if not url:
            return
        import asyncpg  # type: ignore[import-untyped]

        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        name = f"{LISTENER_NAME}:{self.writer}"
        try:
            conn = await asyncpg.connect(url, timeout=5, server_settings={"application_name": name})
            await conn.add_listener(CHANNEL, lambda *_: self._nudge.set())
        except Exception as exc:
            if not self._listen_failed:
                log.warning(
                    "configuration notices unavailable (%s); polling only until they are back",
                    type(exc).__name__,
                )
            self._listen_failed = True
            return
        if self._listen_failed:
            log.info("configuration notices are back")
        self._listen_failed = False
        self._listener = conn

    def _announce(self, version: Version, changes: Changes | None) -> None:
        for hook in self.on_change:
            try:
                hook(version, changes)
            except Exception:
                log.exception("a configuration change hook failed")


async def database_source(config: SwitchyardConfig, storage: StorageSettings) -> SwitchyardConfig:
    """With the database as the source: its newest version (the file's `config` seeds an empty
    history). Read before anything starts, so the gateway starts on it."""
    db = await open_database(storage)
    try:
        store = VersionStore(db)
        await store.migrate()
        head = await store.head()
        latest = await store.get(head) if head else None
        if latest is None:
            writer = f"{socket.gethostname()}:{os.getpid()}"
            await store.append(document_of(config), "seed", writer, "seeded from file")
            return config
        assert latest.document is not None
        return validate_document(latest.document, f"configuration version {latest.version}")
    finally:
        await db.close()
