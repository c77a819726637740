from __future__ import annotations

from typing import Any

import pytest

from tests.servers.helpers import StandIns


@pytest.fixture
def stand_ins(children: Any, tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    """Stand-in model servers under real program names (a neutral folder name, so no test name leaks in)."""
    return StandIns(children, tmp_path_factory.mktemp("srv"))
