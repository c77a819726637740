"""``fleet report``: state.json (the seed's keys, the same document as ``status --json``) and STATE_REPORT.md, both
atomic and private; discover refreshes them; the agents' fast commands never pay for them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.cli import COMMANDS
from fleet_watch.reports.markdown import SECTIONS, TITLE, render_report
from fleet_watch.reports.ownership import CLASSES
from tests.conftest import Children
from tests.views import sample

STATE_KEYS = {
    "agent_interface", "generated_utc", "processes", "external_resources", "process_count", "gpu_budget",
    "ports_claimed", "preferred_ports", "safe_ports", "repos_locked", "session_leases", "process_classifications",
    "stale_processes", "recent_events", "conflicts_prevented_24h", "system_memory", "sessions", "idle_processes",
    "gpu_memory_monitor",
}


def _sections_in_order(text: str) -> list[str]:
    """The headings of SECTIONS as they appear, each found once and in order."""
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    found = [next(h for h in headings if h.startswith(s)) for s in SECTIONS]
    assert [headings.index(h) for h in found] == sorted(headings.index(h) for h in found)
    return found


def test_report_writes_both_files_atomically_private_and_equal_to_status(fleet: Any, fleet_home: Path,
                                                                        children: Children) -> None:
    proc = children.sleeper()
    port = sample.free_port()
    assert fleet("register", "--pid", str(proc.pid), "--name", "srv", "--workstream", "demo", "--port", str(port),
                 "--gpu", "1024").returncode == 0
    out = fleet("report")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"Written: {fleet_home / 'STATE_REPORT.md'}",
                                       f"Written: {fleet_home / 'state.json'}"]
    for name in ("state.json", "STATE_REPORT.md", "state_changelog.jsonl"):
        assert stat.S_IMODE((fleet_home / name).stat().st_mode) == 0o600, name
    assert not [p for p in fleet_home.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind

    state = json.loads((fleet_home / "state.json").read_text())
    assert set(state) == STATE_KEYS
    status = fleet("status", "--json").json()
    assert set(status) == STATE_KEYS
    def instant_free(doc: dict[str, Any], key: str) -> Any:
        """The heartbeat's age in the evidence ("heartbeat 0s ago") depends on the second each was read in."""
        if key != "process_classifications":
            return doc[key]
        return [{**c, "evidence": [e for e in c["evidence"] if not e.startswith("heartbeat ")]} for c in doc[key]]

    for key in STATE_KEYS - {"generated_utc", "system_memory", "safe_ports"}:  # read at another instant
        assert instant_free(state, key) == instant_free(status, key), key
    assert [(c["pid"], c["classification"]) for c in state["process_classifications"]] == [(proc.pid, "live")]

    text = (fleet_home / "STATE_REPORT.md").read_text()
    assert text.startswith(TITLE)
    _sections_in_order(text)
    assert f"| {proc.pid} | srv | `live` | {port} | 1,024 MB |" in text


def test_every_class_and_lease_reaches_the_state_and_the_report() -> None:
    state = sample.state()
    assert [c["classification"] for c in state["process_classifications"]] == list(CLASSES)
    assert [c["classification"] for c in state["stale_processes"]] == ["stale_candidate", "orphan_confirmed"]
    assert [c["safe_to_stop"] for c in state["process_classifications"]] == [False, False, False, True, False]
    assert [lease["session_id"] for lease in state["session_leases"]] == ["sess-a", "sess-gone"]
    assert state["repos_locked"] == {"/srv/repo": 4003, "/srv/app": 77}  # an active lease's repo is locked too
    assert state["processes"][0]["gpu_devices"] == {"0": 40960}

    text = render_report(state, budgets=sample.BUDGETS)
    headings = _sections_in_order(text)
    assert headings[2] == "## System Memory — OK (54% pressure)"
    assert headings[4].startswith("## Sessions (1 claude-code, 1 codex — 1,000 MB total)")
    assert "Attention required: 1 session(s) orphaned and busy" in text
    safe = text.split("## Safe to Stop", 1)[1].split("## ", 1)[0]
    assert "PID 4004 (orphan-server, experiments): process heartbeat expired; session lease is closed; parent " \
           "chain is detached" in safe
    assert "fleet reap --confirm" in safe
    stale = text.split("## Stale Candidates", 1)[1].split("## ", 1)[0]
    assert "PID 4003 (old-runner" in stale
    assert "4004" not in stale
    ownership = text.split("## Ownership", 1)[1].split("\n## ", 1)[0]
    assert "Classes: 1 live, 1 disconnected, 1 stale_candidate, 1 orphan_confirmed, 1 exited" in ownership
    assert "**sess-a** — ACTIVE | owner PID 77 | repo /srv/app" in ownership
    assert "**sess-gone** — CLOSED | owner PID 78 | repo -" in ownership
    assert "**cli-4005** — UNLEASED" in ownership
    assert "| 1 | 81,920 MB | 4,096 MB | 10,240 MB | 67,584 MB |" in text  # the budget per device
    assert "- GPU workload footprint: 40,000 MB across 2 process(es)" in text
    assert "[warning] `process_over_claim` PID 4001" in text


def test_outside_text_cannot_break_the_report() -> None:
    text = render_report(sample.state(), budgets=sample.BUDGETS)
    assert not any(line.startswith("## Injected") for line in text.splitlines())
    row = next(line for line in text.splitlines() if line.startswith("| 4002 |"))
    assert len(row.replace("\\|", "").split("|")) == 9  # seven cells: the name's "|" is escaped
    assert "<b>" not in text
    assert "&lt;b&gt;" in text


def test_discover_refreshes_the_reports(fleet: Any, fleet_home: Path) -> None:
    out = fleet("discover")
    assert out.returncode == 0, out.stderr
    state = json.loads((fleet_home / "state.json").read_text())
    assert set(state) == STATE_KEYS
    assert state["gpu_memory_monitor"]["cycle_seconds"] >= 0
    _sections_in_order((fleet_home / "STATE_REPORT.md").read_text())


_FAST = [c for c in ("guard", "check", "register", "claim", "session") if c in COMMANDS]
_PROBE = """
import sys
from fleet_watch.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("rich", "prometheus_client")
               or m in ("fleet_watch.service.report", "fleet_watch.reports.markdown", "fleet_watch.reports.changelog"))
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("command", _FAST)
def test_agent_fast_paths_never_pay_for_reports(fleet_home: Path, children: Children, command: str) -> None:
    proc = children.sleeper()
    port = str(sample.free_port())
    args = {"guard": ["guard", "--json", "--port", port], "check": ["check", "--port", port],
            "register": ["register", "--pid", str(proc.pid), "--name", "x", "--workstream", "w"]}.get(command,
                                                                                                   [command, "--help"])
    env = {**os.environ, "FLEET_WATCH_HOME": str(fleet_home)}
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=60)
    assert "HEAVY=\n" in out.stdout, out.stdout + out.stderr
    assert not (fleet_home / "state.json").exists()
    assert not (fleet_home / "STATE_REPORT.md").exists()


def test_a_bad_changelog_key_fails_before_anything_is_written(fleet: Any, fleet_home: Path) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "changelog_max_bytes": "1MB"}))
    out = fleet("report", "--json")
    assert out.returncode == 4
    assert "changelog_max_bytes" in out.json()["reason"]
    assert not (fleet_home / "state.json").exists()


_WRITER = """
import sys
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.report import write_reports
from pathlib import Path
fleet = Fleet.open(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    write_reports(fleet)
"""


def test_readers_never_see_a_torn_file_while_two_writers_rewrite(fleet: Any, fleet_home: Path,
                                                                children: Children) -> None:
    for i in range(40):  # a state.json of ~60 KB: big enough that a non-atomic write would be seen half-done
        proc = children.sleeper()
        assert fleet("register", "--pid", str(proc.pid), "--name", f"w{i}", "--workstream", f"ws{i % 4}",
                     "--repo", f"/srv/torn/{i}", "--gpu", "64").returncode == 0
    assert fleet("report").returncode == 0
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(fleet_home), "25"]) for _ in range(2)]
    children.procs.extend(writers)  # type: ignore[arg-type]
    reads = 0
    deadline = time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        state = json.loads((fleet_home / "state.json").read_bytes())  # a torn file fails to parse
        assert state["process_count"] == 40
        text = (fleet_home / "STATE_REPORT.md").read_text()
        assert text.startswith(TITLE)
        assert text.rstrip().endswith("`fleet watch` cycle.")
        reads += 1
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    assert reads > 0
    # The writers took turns: nothing changed between their states, so no change was logged twice.
    lines = (fleet_home / "state_changelog.jsonl").read_text().splitlines()
    assert len(lines) == 1


def test_a_stuck_report_writer_is_an_error_not_a_hang(fleet_home: Path) -> None:
    import fcntl

    from fleet_watch.errors import DatabaseError
    from fleet_watch.service.report import LOCK_FILE, report_lock

    fd = os.open(fleet_home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DatabaseError, match="reports not written"), report_lock(fleet_home, wait_s=0.3):
            pass
    finally:
        os.close(fd)
    with report_lock(fleet_home, wait_s=0.3):  # free again once the holder let go
        pass


def test_a_hostile_name_in_the_registry_stays_one_inert_line_in_every_text_view(fleet: Any, fleet_home: Path,
                                                                              children: Children) -> None:
    """The CLI refuses control characters, but another writer (an older version, a hand edit) may have stored them:
    status, STATE_REPORT.md and the changelog turn them into spaces instead of passing escapes to the terminal."""
    import sqlite3

    proc = children.sleeper()
    assert fleet("register", "--pid", str(proc.pid), "--name", "plain", "--workstream", "w").returncode == 0
    assert fleet("report").returncode == 0
    hostile = "evil\x1b]0;TITLE\x07\x1b[2J\r\n# HEAD"
    conn = sqlite3.connect(fleet_home / "registry.db")
    with conn:
        conn.execute("UPDATE processes SET name = ?, workstream = ? WHERE pid = ?", (hostile, hostile, proc.pid))
    conn.close()
    status = fleet("status")
    assert report_ok(fleet("report"))
    changelog = fleet("changelog")
    report = (fleet_home / "STATE_REPORT.md").read_text()
    for text in (status.stdout, changelog.stdout, report):
        assert "\x1b" not in text
        assert "\x07" not in text
        assert not any(line.startswith("# HEAD") for line in text.splitlines())
    assert sum(line.split()[:1] == [str(proc.pid)] for line in status.stdout.splitlines()) == 1, status.stdout


def report_ok(result: Any) -> bool:
    return bool(result.returncode == 0)
