from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Gateway, start_gateway


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: dict[str, Any], **kwargs: Any) -> Gateway:
        gw = start_gateway(config, tmp_path, **kwargs)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
