"""``fleet watch`` as a service manager runs it: one bad cycle is reported and the next runs (the watch never exits
on it); a real SIGTERM mid-run ends it with exit 0 and whole report files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import Children


def _next_tick(watch: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    assert watch.stdout is not None
    line = watch.stdout.readline()
    assert line, "watch ended early"
    assert time.monotonic() < deadline, "no recovery in time"
    tick: dict[str, Any] = json.loads(line)
    return tick


def test_a_bad_cycle_is_reported_the_watch_goes_on_and_sigterm_ends_it_cleanly(fleet_home: Path,
                                                                             children: Children) -> None:
    blocker = fleet_home / "STATE_REPORT.md"
    blocker.mkdir()  # the report cannot be written while this is a directory
    env = {**os.environ, "FLEET_WATCH_HOME": str(fleet_home)}
    watch = subprocess.Popen([sys.executable, "-m", "fleet_watch", "watch", "--interval", "0.3", "--json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.procs.append(watch)
    try:
        deadline = time.monotonic() + 90
        failed = [_next_tick(watch, deadline) for _ in range(2)]
        for tick in failed:  # two failed cycles in a row, and still running
            assert "STATE_REPORT.md" in tick["error"], tick["error"]
        assert watch.poll() is None
        shutil.rmtree(blocker)
        while (tick := _next_tick(watch, deadline))["error"] is not None:
            pass
        assert blocker.is_file()
        assert tick["tick"] >= 3
        watch.send_signal(signal.SIGTERM)
        rest, err = watch.communicate(timeout=30)
    finally:
        if watch.stderr is not None and not watch.stderr.closed:
            watch.stderr.close()
    assert watch.returncode == 0, err
    assert "Traceback" not in err
    for line in rest.splitlines():
        json.loads(line)  # every tick printed whole
    json.loads((fleet_home / "state.json").read_text())
    assert (fleet_home / "STATE_REPORT.md").read_text().rstrip().endswith("`fleet watch` cycle.")
