from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.discovery.servers import Servers


@pytest.fixture
def servers(children: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    # A neutral folder name: the test's own name must not leak into the fake command lines.
    started = Servers(children, tmp_path_factory.mktemp("srv"))
    try:
        yield started
    finally:
        started.close()

