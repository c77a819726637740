"""The watch loop, split in two: ``Watcher.watch_once`` does one tick and returns a value; ``run_watch``
only schedules ticks until told to stop. Nothing here signals any process.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fleet_watch import clock as clocks
from fleet_watch.config import Detected, load_settings
from fleet_watch.errors import FleetError
from fleet_watch.probes.memory import MemoryProbe
from fleet_watch.probes.scan import monotonic
from fleet_watch.service.discovery import CycleResult, Discovery, death_in_scan
from fleet_watch.service.fleet import Fleet, detect_pool_mb
from fleet_watch.service.health import Sample, cpu_rates, idle_view, monitor_after_cycle, sessions_view
from fleet_watch.service.last_cycle import save_cycle
from fleet_watch.service.report import ReportResult, write_reports

T = TypeVar("T")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class Tick:
    number: int
    at: float
    result: CycleResult | None = None
    monitor: dict[str, Any] | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    idle: list[dict[str, Any]] = field(default_factory=list)
    interval_s: float | None = None
    cpu_s: float = 0.0  # CPU this tick cost the watcher itself
    cycle_s: float | None = None  # wall time of the discovery cycle (scan, apply, monitor)
    report: ReportResult | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tick": self.number, "generated_utc": clocks.iso_utc(self.at), "interval_seconds": self.interval_s,
            "discovery": None if self.result is None else self.result.to_dict(),
            "sessions": self.sessions, "idle": self.idle,
            "alerts": [] if self.monitor is None else self.monitor["alerts"],
            "tick_cpu_seconds": round(self.cpu_s, 4),
            "cycle_seconds": None if self.cycle_s is None else round(self.cycle_s, 4), "error": self.error,
        }


class Watcher:
    """Keeps the probes warm between ticks and the previous sample for rates over the interval."""

    def __init__(self, fleet: Fleet, *, discovery: Discovery | None = None,
                 memory_probe: MemoryProbe | None = None) -> None:
        self.fleet = fleet
        self.discovery = discovery or Discovery(fleet)
        self.memory = memory_probe or MemoryProbe()
        self.previous: Sample | None = None
        self.ticks = 0
        self._detection: Detected | None = None

    def _reload_config(self) -> None:
        """Config is re-read every tick (edit patterns without restarting); a bad edit keeps the old one."""
        current = self.fleet.settings
        self.fleet.settings = load_settings(current.home, self._detected)

    def _detected(self) -> Detected:
        """What the machine has, detected once per watch (asked only when config.json leaves gpu_total_mb out):
        the devices too, so that a VRAM pool keeps its VRAM reserve across reloads."""
        if self._detection is None:
            self._detection = detect_pool_mb()
        return self._detection

    def watch_once(self, *, raise_errors: bool = False) -> Tick:
        """One tick: reload config, scan, apply, monitor. In the loop an error is reported on the tick and
        the next tick tries again; a one-shot caller (``fleet discover``) asks for the error instead."""
        self.ticks += 1
        cpu0 = own_cpu_s()
        tick = Tick(number=self.ticks, at=self.fleet.clock.now())
        try:
            self._reload_config()
        except FleetError as err:
            tick.error = f"config not reloaded: {err.message}"
        try:
            started = monotonic()
            disc = self.discovery
            snap = disc.scan()
            memory = self.memory.read()
            tick.result = disc.cycle(snap)
            tick.monitor = monitor_after_cycle(disc, snap, memory, self.previous)
            current = Sample.of(snap, memory, self.fleet.clock.now())
            cpu: dict[int, float] = {}
            if self.previous is not None:
                tick.interval_s = round(snap.taken_at - self.previous.snap.taken_at, 3)
                cpu = cpu_rates(self.previous.cpu, current.cpu, snap.taken_at - self.previous.snap.taken_at)
                tick.idle = idle_view(disc, snap, cpu)  # idle needs a CPU rate: nothing to say on the first tick
            tick.sessions = sessions_view(disc, snap, cpu)
            tick.cycle_s = monotonic() - started
            saved = save_cycle(self.fleet.settings.home, {**tick.monitor, "cycle_seconds": round(tick.cycle_s, 4)},
                               sessions=tick.sessions, idle=tick.idle)
            index = snap.index
            tick.report = write_reports(self.fleet, probe=lambda pid, start: death_in_scan(pid, start, index),
                                        cycle=saved)
            self.previous = current
        except FleetError as err:
            if raise_errors:
                raise
            tick.error = err.message
        except Exception as err:  # a bug in one tick must not end an unattended watch (reported on the tick)
            if raise_errors:
                raise
            tick.error = f"internal error: {type(err).__name__}: {err}"
        tick.cpu_s = own_cpu_s() - cpu0
        return tick


def run_watch(
    interval_s: float, should_stop: Callable[[], bool], tick: Callable[[], T], on_tick: Callable[[T], None],
    wait: Callable[[float], object], *, max_ticks: int | None = None, now: Callable[[], float] = monotonic,
) -> int:
    """Run ``tick`` every ``interval_s`` seconds (on a fixed grid, so slow ticks do not drift the schedule)
    until ``should_stop()`` or ``max_ticks``. ``wait`` must return early once a stop is requested."""
    count = 0
    start = now()
    while not should_stop():
        on_tick(tick())
        count += 1
        if max_ticks is not None and count >= max_ticks:
            break
        elapsed = now() - start
        next_at = (int(elapsed / interval_s) + 1) * interval_s
        wait(max(0.0, next_at - elapsed))
    return count
