"""Reports: ``state.json``, ``STATE_REPORT.md`` and the changelog entry between them, written together.

``write_reports`` holds one lock (``.reports.lock``) while it gathers the state, diffs it against the
``state.json`` on disk, appends the changelog line and rewrites both files (each atomically: temp file in the same
directory, fsync, rename, mode 0600), so concurrent writers (a ``watch`` and a manual ``report``) never interleave
and the changelog never records one change twice. ``guard``, ``check`` and ``register`` never import this module.

``ownership_inputs`` is the one place where the views get each process's ownership class and the session leases.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_watch import jsonio
from fleet_watch.atomic import write_text_atomic
from fleet_watch.errors import DatabaseError
from fleet_watch.models import GPU_POOL, ProcessRecord
from fleet_watch.reports.ownership import Classification, Lease, Ownership
from fleet_watch.service import changelog
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.ledger import DeathProbe
from fleet_watch.service.ownership import lease_facts

STATE_FILE = "state.json"
REPORT_FILE = "STATE_REPORT.md"
LOCK_FILE = ".reports.lock"
LOCK_WAIT_S = 15.0


def ownership_inputs(fleet: Fleet, now: float, records: Sequence[ProcessRecord],
                     alive: Mapping[int, bool | None]) -> Ownership:
    """Each registered process's class with its evidence, and the session leases, for every view: the ownership
    classifier (``service.ownership``: heartbeat age, session lease, parent chain) over the caller's liveness
    verdicts (``alive``, from ``probes.processes.death_reason`` or a fresh scan), and every lease in the registry."""
    from fleet_watch.service.ownership import classify_for_views

    classified, leases = classify_for_views(fleet, now, records, alive)
    classes = {c.record.record_id: Classification(classification=c.classification, evidence=c.verdict.evidence)
               for c in classified}
    views = tuple(
        Lease(session_id=lease.session_id, status=facts.status, owner_pid=lease.owner_pid, repo_dir=lease.repo,
              started_at=lease.started_at, last_heartbeat_at=lease.last_heartbeat, closed_at=lease.closed_at)
        for lease in leases for facts in (lease_facts(lease),))
    return Ownership(classes=classes, leases=views)


def device_budgets(fleet: Fleet, probe: DeathProbe | None = None) -> list[dict[str, Any]]:
    """The pool, then one row per configured GPU device: ``{device, total_mb, reserve_mb, allocated_mb,
    available_mb}``, over live firm claims, as the state document's ``gpu_budget`` (one ledger rule)."""
    ledger = fleet.ledger() if probe is None else fleet.ledger(probe)
    pool, _ = fleet.budgets(ledger, None)
    rows = [{"device": GPU_POOL, **pool.to_dict()}]
    for device in sorted(fleet.settings.gpu_devices, key=int):
        _, budget = fleet.budgets(ledger, device)
        assert budget is not None
        rows.append({"device": device, **budget.to_dict()})
    return rows


@dataclass(slots=True)
class Views:
    """What every view renders: the state document (``status --json``) and the per-device budgets."""

    state: dict[str, Any]
    budgets: list[dict[str, Any]]


def gather_views(fleet: Fleet, *, probe: DeathProbe | None = None,
                 cycle: Mapping[str, Any] | None = None) -> Views:
    from fleet_watch.service.status import gather_state

    return Views(gather_state(fleet, probe=probe, cycle=cycle), device_budgets(fleet, probe))


@dataclass(slots=True)
class ReportResult:
    views: Views
    state_path: Path
    report_path: Path
    changelog_entry: dict[str, Any] | None  # None: nothing changed (or the previous state was unreadable)


@contextmanager
def report_lock(home: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One report writer at a time (bounded wait: a stuck holder is an error, not a hang)."""
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise DatabaseError(f"cannot open {path}: {err.strerror}") from err
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseError(f"another process has held {path} for {wait_s:g} s; "
                                        "reports not written") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def previous_state(path: Path) -> dict[str, Any] | None:
    """The ``state.json`` on disk: {} when there is none yet (everything is new), None when it is unreadable
    (then this report records no delta rather than a wrong one; the next one diffs against what it writes)."""
    try:
        doc = jsonio.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, jsonio.BadJson):
        return None
    return doc if isinstance(doc, dict) else None


def write_reports(fleet: Fleet, *, probe: DeathProbe | None = None,
                  cycle: Mapping[str, Any] | None = None) -> ReportResult:
    import json

    from fleet_watch.reports import changelog as delta
    from fleet_watch.reports.markdown import render_report

    home = fleet.settings.home
    limit = changelog.max_bytes(fleet.settings)  # a bad config key fails before anything is written
    state_path, report_path = home / STATE_FILE, home / REPORT_FILE
    with report_lock(home):
        views = gather_views(fleet, probe=probe, cycle=cycle)
        before = previous_state(state_path)
        item = None if before is None else delta.entry(before, views.state)
        state_text = json.dumps(views.state, indent=2, default=str) + "\n"
        report_text = render_report(views.state, budgets=views.budgets)
        _write(state_path, state_text)
        if item is not None:  # after state.json: a failure here loses one entry, never records one twice
            changelog.append(home, item, limit)
        _write(report_path, report_text)
    return ReportResult(views, state_path, report_path, item)


def _write(path: Path, text: str) -> None:
    try:
        write_text_atomic(path, text)
    except OSError as err:
        raise DatabaseError(f"cannot write {path}: {err.strerror}") from err
