from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import stand_ins

STAND_IN = Path(__file__).with_name("tnr_stand_in.py")
DATA = Path(__file__).resolve().parents[1] / "data" / "thunder"


class FakeTnr:
    """``bin/tnr`` on a temp PATH, printing whatever the test last asked for."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.state = root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        stand_ins.program(self.bin, "tnr", STAND_IN)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_TNR_DIR": str(self.state)}

    def prints(self, recorded: str | bytes, *, exit_code: int = 0, stderr: bytes = b"", sleep: float | None = None
               ) -> None:
        """``recorded``: a file name under tests/data/thunder, or the bytes themselves."""
        body = (DATA / recorded).read_bytes() if isinstance(recorded, str) else recorded
        (self.state / "stdout").write_bytes(body)
        (self.state / "stderr").write_bytes(stderr)
        (self.state / "exit").write_text(str(exit_code))
        if sleep is None:
            (self.state / "sleep").unlink(missing_ok=True)
        else:
            (self.state / "sleep").write_text(str(sleep))

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def tnr(tmp_path_factory: pytest.TempPathFactory) -> FakeTnr:
    return FakeTnr(tmp_path_factory.mktemp("tnr"))
