from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async unit tests run on asyncio only (the gateway's own loop)."""
    return "asyncio"
