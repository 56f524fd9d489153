"""Where durable and shared state lives, resolved from the `storage:` section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StorageSettings:
    sqlite_path: Path = Path("var/switchyard.db")
    """The embedded database, used when `database_url` is None."""
    database_url: str | None = None
    """PostgreSQL shared by every gateway process."""
    redis_url: str | None = None
    """Redis shared by every gateway process; None: counters are this process's own."""

    @property
    def shared(self) -> bool:
        """Whether several gateway processes can share this database."""
        return self.database_url is not None
