"""``fleet top``'s screen: the views as a rich renderable for a terminal, or as plain lines for a pipe.

Data in, renderable out (no I/O). Outside text (names, workstreams) is always wrapped in ``Text``, never parsed as
rich markup, so a process called ``[blink]x`` shows as written. The layout fits 80 columns: columns shrink with
an ellipsis, and the process list is cut to the screen's height with a "… N more" line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleet_watch.reports import fields as f
from fleet_watch.reports.ownership import class_counts

CLASS_STYLE = {"live": "green", "disconnected": "yellow", "stale_candidate": "magenta", "orphan_confirmed": "red",
               "exited": "dim"}
EVENTS_SHOWN = 5


def _process_rows(state: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    classes = {k: f.text(c.get("classification"), "?") for k, c in f.classes_by_identity(state).items()}
    out = []
    for p in f.rows(state, "processes"):
        key = f.identity(p)
        out.append((str(f.integer(p.get("pid"))), f.oneline(p.get("name"), "?"), f.oneline(p.get("workstream"), "?"),
                    classes.get(key, "?") if key else "?", ",".join(map(str, f.ints(p.get("ports")))) or "-",
                    f"{f.integer(p.get('gpu_mb')):,}"))
    return out


def _summary(state: Mapping[str, Any]) -> str:
    mem = f.obj(state, "system_memory")
    memory = (f"memory {f.text(mem.get('pressure_label'), '?')} {f.integer(mem.get('pressure_pct'))}%"
              if mem.get("available") is True else "memory n/a")
    counts = class_counts([f.text(c.get("classification")) for c in f.rows(state, "process_classifications")])
    classes = " ".join(f"{n} {c}" for c, n in counts.items() if n) or "none"
    return (f"{len(f.rows(state, 'processes'))} process(es): {classes} · {memory} · "
            f"conflicts 24h {f.integer(state.get('conflicts_prevented_24h'))}")


def _sessions_line(state: Mapping[str, Any]) -> str:
    sessions = f.rows(state, "sessions")
    if not sessions:
        return "Sessions: none detected"
    kinds: dict[str, int] = {}
    for s in sessions:
        kind = f.oneline(s.get("kind"), "?")
        kinds[kind] = kinds.get(kind, 0) + 1
    attention = sum(1 for s in sessions if s.get("attention") is True)
    rss = sum(f.integer(s.get("rss_mb")) for s in sessions)
    return (f"Sessions: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))} ({rss:,} MB)"
            + (f", {attention} need attention" if attention else ""))


def _event_lines(state: Mapping[str, Any]) -> list[str]:
    out = []
    for e in f.rows(state, "recent_events")[:EVENTS_SHOWN]:
        detail = f.obj(e, "detail")
        pid = e.get("pid")
        what = f.oneline(detail.get("reason")) or f.oneline(detail.get("name"))
        out.append(f"{f.short_time(e.get('timestamp'))[11:]} {f.oneline(e.get('event_type'), '?')}"
                   f"{f' PID {pid}' if isinstance(pid, int) else ''}{' ' + what if what else ''}")
    return out


def _budget_rows(state: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int]]:
    """(device, allocated MB, allocatable MB)."""
    rows = list(budgets) or [{"device": "all", **f.obj(state, "gpu_budget")}]
    return [(f.oneline(str(b.get("device"))), f.integer(b.get("allocated_mb")),
             f.integer(b.get("total_mb")) - f.integer(b.get("reserve_mb"))) for b in rows]


def plain_lines(state: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """For a pipe or a file: no colours, no cursor movement, one table."""
    out = [f"Fleet Watch — {f.short_time(state.get('generated_utc'))} UTC — {_summary(state)}",
           f"{'PID':>8}  {'NAME':<22} {'WORKSTREAM':<16} {'CLASS':<16} {'PORTS':<12} {'GPU MB':>8}"]
    for pid, name, ws, klass, ports, gpu in _process_rows(state):
        out.append(f"{pid:>8}  {name[:22]:<22} {ws[:16]:<16} {klass:<16} {ports[:12]:<12} {gpu:>8}")
    for device, used, allocatable in _budget_rows(state, budgets):
        out.append(f"GPU {device}: {used:,} / {allocatable:,} MB claimed ({f.pct(used, allocatable)}%)")
    out.append(_sessions_line(state))
    out += ["Recent events:", *(f"  {line}" for line in _event_lines(state))] if _event_lines(state) else []
    return out


def screen(state: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]] = (), *, height: int = 24,
           refresh_s: float = 2.0, notice: str | None = None) -> RenderableType:
    """The full-screen view: header, processes, GPU claims per device as bars, memory, sessions, events."""
    header = Text.assemble(("Fleet Watch ", "bold"), (f.short_time(state.get("generated_utc")) + " UTC", "dim"))
    summary = Text(_summary(state), no_wrap=True, overflow="ellipsis")
    budget_rows = _budget_rows(state, budgets)
    events = _event_lines(state)
    # header, summary, blank, table header, blank, bars (+ memory), sessions, footer: the rest is the process list,
    # at least two lines of it (events give way first).
    fixed = 8 + len(budget_rows)
    room = height - fixed - (len(events) + 1 if events else 0)
    if room < 3:
        events = []
        room = height - fixed
    room = max(2, room)
    rows = _process_rows(state)
    table = Table(expand=True, box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("PID", justify="right", no_wrap=True, min_width=5)
    table.add_column("Name", no_wrap=True, overflow="ellipsis", ratio=3)
    table.add_column("Workstream", no_wrap=True, overflow="ellipsis", ratio=2)
    table.add_column("Class", no_wrap=True, min_width=9, overflow="ellipsis")
    table.add_column("Ports", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("GPU MB", justify="right", no_wrap=True, min_width=6)
    shown = rows if len(rows) <= room else rows[: room - 1]
    for pid, name, ws, klass, ports, gpu in shown:
        table.add_row(pid, Text(name), Text(ws), Text(klass, style=CLASS_STYLE.get(klass, "")), ports, gpu)
    if len(shown) < len(rows):
        table.add_row("", Text(f"… {len(rows) - len(shown)} more", style="dim"), "", "", "", "")
    if not rows:
        table.add_row("", Text("no registered processes", style="dim"), "", "", "", "")

    bars = Table.grid(padding=(0, 1), expand=True)
    bars.add_column(no_wrap=True, min_width=10)
    bars.add_column(ratio=1)
    bars.add_column(no_wrap=True, justify="right")
    for device, used, allocatable in budget_rows:
        bars.add_row(Text(f"GPU {device}"), ProgressBar(total=max(allocatable, 1), completed=min(used, allocatable)),
                     Text(f"{used:,} / {allocatable:,} MB {f.pct(used, allocatable)}%"))
    mem = f.obj(state, "system_memory")
    if mem.get("available") is True:
        pressure = max(0, min(100, f.integer(mem.get("pressure_pct"))))
        bars.add_row(Text("Memory"), ProgressBar(total=100, completed=pressure),
                     Text(f"{f.text(mem.get('pressure_label'), '?')} {pressure}%"))

    parts: list[RenderableType] = [header, summary, Text(""), table, Text(""), bars, Text(_sessions_line(state))]
    if events:
        parts += [Text("Recent events", style="bold"), *(Text(line, overflow="ellipsis", no_wrap=True)
                                                         for line in events)]
    footer = f"q quit · refresh every {refresh_s:g}s"
    parts.append(Text(footer + (f" · {notice}" if notice else ""), style="dim"))
    return Group(*parts)
