"""``STATE_REPORT.md``: the state document (plus the per-device budgets) as a report for people. Text out, no I/O.

Every section is always present, in a fixed order, so that a reader (or a test) finds each heading; an empty
section says so in one line. Values that came from outside (names, workstreams, paths) are escaped, so that a
process name cannot break a table or inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleet_watch.reports import fields as f
from fleet_watch.reports.ownership import CLASSES, ORPHAN_CONFIRMED, STALE_CANDIDATE, class_counts

TITLE = "# Fleet Watch — What Is Running"
SECTIONS = (
    "## Workstreams", "## Ownership", "## System Memory", "## GPU Memory Watch", "## Sessions", "## Idle Processes",
    "## Safe to Stop", "## Stale Candidates", "## Resource Budget", "## Recent Events", "## How to Use",
)
MAX_CELL = 80
EVENTS_SHOWN = 10

HOW_TO_USE = """\
Agents: before binding a port, starting a model server or writing to a repo, ask first and obey the answer:

```bash
fleet guard --json --port 8000 --repo ~/projects/app --gpu 4096 --framework vllm --model Qwen2.5-7B
# "allowed": false  ->  do not proceed; pick one of checks.port.suggested_ports instead
fleet register --pid "$SERVER_PID" --name my-server --workstream my-project --port 8000 --gpu 4096
fleet release --pid "$SERVER_PID"        # when it stops
```

People:

```bash
fleet status            # what runs and what it holds
fleet top               # live view (q quits)
fleet discover          # register the AI processes running now
fleet changelog         # what changed between reports
fleet history --verify  # the audit trail, checked
```

`~/.fleet-watch/state.json` is this report as JSON (the same document as `fleet status --json`), for agents that
cannot run the CLI; it is rewritten atomically by `fleet report`, `fleet discover` and every `fleet watch` cycle."""

_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
                          "<": "&lt;", ">": "&gt;", "#": "\\#", "\n": " ", "\r": " ", "\t": " "})


def md(value: object, limit: int = MAX_CELL) -> str:
    """Outside text made inert: one line, markup escaped, at most ``limit`` characters (before escaping)."""
    s = f.oneline(str(value)) if value is not None else ""  # control characters (terminal escapes): spaces
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.translate(_ESCAPES)


def code(value: str) -> str:
    """A known token (a class, an event type) in a code span."""
    return f"`{value}`"


def render_report(state: Mapping[str, Any], *, budgets: Sequence[Mapping[str, Any]] = ()) -> str:
    now = f.parse_utc(state.get("generated_utc"))
    out: list[str] = []
    out += _header(state)
    out += _workstreams(state, now)
    out += _ownership(state)
    out += _memory(state)
    out += _gpu_watch(state)
    out += _sessions(state)
    out += _idle(state)
    out += _safe_to_stop(state)
    out += _stale(state)
    out += _budget(state, budgets)
    out += _events(state)
    out += ["## How to Use", "", HOW_TO_USE, ""]
    return "\n".join(out)


def _header(state: Mapping[str, Any]) -> list[str]:
    budget = f.obj(state, "gpu_budget")
    allocatable = f.integer(budget.get("total_mb")) - f.integer(budget.get("reserve_mb"))
    allocated = f.integer(budget.get("allocated_mb"))
    return [
        TITLE, "",
        f"Generated: {md(state.get('generated_utc'))}  ",
        f"GPU: **{allocated:,} / {allocatable:,} MB** ({f.pct(allocated, allocatable)}%)  ",
        f"Local processes: {len(f.rows(state, 'processes'))} | "
        f"Remote resources: {len(f.rows(state, 'external_resources'))} | "
        f"Conflicts prevented (24h): {f.integer(state.get('conflicts_prevented_24h'))}",
        "",
    ]


def _class_of(state: Mapping[str, Any]) -> dict[tuple[int, float], str]:
    return {k: f.text(c.get("classification"), "?") for k, c in f.classes_by_identity(state).items()}


def _workstreams(state: Mapping[str, Any], now: float | None) -> list[str]:
    out = ["## Workstreams", ""]
    procs = f.rows(state, "processes")
    if not procs:
        return [*out, "No active workstreams.", ""]
    classes = _class_of(state)
    by_ws: dict[str, list[Mapping[str, Any]]] = {}
    for p in procs:
        by_ws.setdefault(f.text(p.get("workstream"), "?"), []).append(p)
    for ws in sorted(by_ws):
        members = by_ws[ws]
        ports = sorted({port for p in members for port in f.ints(p.get("ports"))})
        gpu = sum(f.integer(p.get("gpu_mb")) for p in members)
        out += [f"### {md(ws)}", "",
                f"Processes: {len(members)} | GPU: {gpu:,} MB | Ports: {f.join(ports)}", "",
                "| PID | Name | Class | Ports | GPU | Session | Uptime |", "|---|---|---|---|---|---|---|"]
        for p in members:
            key = f.identity(p)
            klass = classes.get(key, "?") if key else "?"
            start = f.num(p.get("start_time"))
            uptime = f.duration(now - start) if now is not None and start is not None else "?"
            out.append(f"| {f.integer(p.get('pid'))} | {md(p.get('name'))} | {code(klass)} | "
                       f"{f.join(f.ints(p.get('ports')), empty='-')} | {f.mb(p.get('gpu_mb'))} | "
                       f"{md(p.get('session_id'), 40)} | {uptime} |")
        out.append("")
    return out


def _ownership(state: Mapping[str, Any]) -> list[str]:
    out = ["## Ownership", ""]
    classified = f.rows(state, "process_classifications")
    if not classified:
        return [*out, "No registered processes.", ""]
    counts = class_counts([f.text(c.get("classification")) for c in classified])
    out += ["Classes: " + ", ".join(f"{n} {c}" for c, n in counts.items() if n) + "  ",
            "Order: " + " > ".join(CLASSES), ""]
    leases = {f.text(lease.get("session_id")): lease for lease in f.rows(state, "session_leases")}
    by_session: dict[str, list[Mapping[str, Any]]] = {}
    for c in classified:
        by_session.setdefault(f.text(c.get("session_id"), "?"), []).append(c)
    for sid in sorted(set(by_session) | set(leases)):
        lease = leases.get(sid)
        if lease is None:
            out.append(f"**{md(sid)}** — UNLEASED")
        else:
            owner = lease.get("owner_pid")
            repo = lease.get("repo_dir")
            out.append(f"**{md(sid)}** — {md(lease.get('status'))} | owner PID "
                       f"{owner if isinstance(owner, int) else '-'} | repo {md(repo) if repo else '-'}")
        for c in by_session.get(sid, []):
            evidence = "; ".join(md(e, 120) for e in f.strings(c.get("evidence")))
            out.append(f"- PID {f.integer(c.get('pid'))} ({md(c.get('name'))}) — "
                       f"{code(f.text(c.get('classification'), '?'))}{': ' + evidence if evidence else ''}")
        out.append("")
    return out


def _memory(state: Mapping[str, Any]) -> list[str]:
    mem = f.obj(state, "system_memory")
    if not mem or mem.get("available") is False:
        return ["## System Memory — UNAVAILABLE", "", "Memory telemetry is not available on this machine.", ""]
    label = md(mem.get("pressure_label") or "?")
    out = [f"## System Memory — {label} ({f.integer(mem.get('pressure_pct'))}% pressure)", "",
           f"- Total: {f.mb(mem.get('total_mb'))} | Used: {f.mb(mem.get('used_mb'))} | "
           f"Available: {f.mb(mem.get('available_mb'))}"]
    if f.num(mem.get("swap_total_mb")):
        out.append(f"- Swap: {f.mb(mem.get('swap_used_mb'))} used of {f.mb(mem.get('swap_total_mb'))}")
    rates = [f"{name}/s: {f.num(mem.get(key)):,.1f}" for name, key in
             (("Page-outs", "pageouts_per_sec"), ("Swap-ins", "swapins_per_sec")) if f.num(mem.get(key)) is not None]
    if rates:
        out.append("- " + " | ".join(rates))
    return [*out, ""]


def _gpu_watch(state: Mapping[str, Any]) -> list[str]:
    out = ["## GPU Memory Watch", ""]
    monitor = state.get("gpu_memory_monitor")
    if not isinstance(monitor, Mapping):
        return [*out, "No discovery cycle yet (run `fleet discover` or `fleet watch`).", ""]
    out.append(f"Cycle: {md(monitor.get('generated_utc'))}  ")
    for d in f.rows(monitor, "devices"):
        total, used = f.integer(d.get("total_mb")), f.integer(d.get("used_mb"))
        out.append(f"- GPU {f.integer(d.get('index'))} ({md(d.get('name'), 40)}): {used:,} / {total:,} MB used "
                   f"({f.pct(used, total)}%)")
    footprints = f.rows(monitor, "gpu_process_footprints")
    total_mb = sum(f.integer(p.get("gpu_mb")) for p in footprints)
    out.append(f"- GPU workload footprint: {total_mb:,} MB across {len(footprints)} process(es)")
    alerts = f.rows(monitor, "alerts")
    if not alerts:
        out.append("- Alerts: none")
    else:
        out.append(f"- Alerts ({len(alerts)}):")
        for a in alerts[:5]:
            pid = a.get("pid")
            out.append(f"  - [{md(a.get('severity'))}] {code(f.text(a.get('type'), '?'))}"
                       f"{f' PID {pid}' if isinstance(pid, int) else ''}")
    return [*out, ""]


def _sessions(state: Mapping[str, Any]) -> list[str]:
    sessions = f.rows(state, "sessions")
    if not sessions:
        return ["## Sessions (none detected)", "", "No agent sessions in the last discovery cycle.", ""]
    kinds: dict[str, int] = {}
    for s in sessions:
        kind = f.text(s.get("kind"), "?")
        kinds[kind] = kinds.get(kind, 0) + 1
    total = sum(f.integer(s.get("rss_mb")) for s in sessions)
    out = [f"## Sessions ({', '.join(f'{n} {md(k)}' for k, n in sorted(kinds.items()))} — {total:,} MB total)", ""]
    attention = [s for s in sessions if s.get("attention") is True]
    if attention:
        out += [f"Attention required: {len(attention)} session(s) orphaned and busy", ""]
    out += ["| PID | Type | State | RSS | CPU | TTY | N | Started |", "|---|---|---|---|---|---|---|---|"]
    for s in sorted(sessions, key=lambda s: -f.integer(s.get("rss_mb"))):
        cpu = f.num(s.get("cpu_pct"))
        out.append(f"| {f.integer(s.get('pid'))} | {md(s.get('kind'))} | {code(f.text(s.get('classification'), '?'))}"
                   f" | {f.mb(s.get('rss_mb'))} | {'-' if cpu is None else f'{cpu:.1f}%'} | {md(s.get('tty') or '-')}"
                   f" | {f.integer(s.get('member_count'), 1)} | {f.short_time(s.get('started'))} |")
    return [*out, ""]


def _idle(state: Mapping[str, Any]) -> list[str]:
    idle = f.rows(state, "idle_processes")
    total = sum(f.integer(i.get("reclaimable_mb", i.get("rss_mb"))) for i in idle)
    out = [f"## Idle Processes ({len(idle)} — {total:,} MB reclaimable)", ""]
    if not idle:
        return [*out, "None idle in the last discovery cycle.", ""]
    for i in idle:
        cpu = f.num(i.get("cpu_pct"))
        out.append(f"- PID {f.integer(i.get('pid'))} {md(i.get('name') or i.get('command'), 60)}: "
                   f"{f.mb(i.get('reclaimable_mb', i.get('rss_mb')))}, CPU {'-' if cpu is None else f'{cpu:.1f}%'}")
    return [*out, ""]


def _classified(state: Mapping[str, Any], klass: str) -> list[Mapping[str, Any]]:
    return [c for c in f.rows(state, "process_classifications") if c.get("classification") == klass]


def _safe_to_stop(state: Mapping[str, Any]) -> list[str]:
    out = ["## Safe to Stop", ""]
    orphans = _classified(state, ORPHAN_CONFIRMED)
    externals = [e for e in f.rows(state, "external_resources") if e.get("safe_to_delete") is True]
    if not orphans and not externals:
        return [*out, "Nothing flagged as safe to stop. All resources are active or owned.", ""]
    for c in orphans:
        evidence = "; ".join(md(e, 120) for e in f.strings(c.get("evidence")))
        out.append(f"- PID {f.integer(c.get('pid'))} ({md(c.get('name'))}, {md(c.get('workstream'))}): {evidence}")
    if orphans:
        out.append("  Stop them with `fleet reap --confirm` (dry run first: `fleet reap`).")
    for e in externals:
        cleanup = e.get("cleanup_cmd")
        out.append(f"- {md(e.get('provider'))}:{md(e.get('external_id'))} ({md(e.get('name'))})"
                   f"{': ' + md(cleanup, 120) if cleanup else ''}")
    return [*out, ""]


def _stale(state: Mapping[str, Any]) -> list[str]:
    out = ["## Stale Candidates", ""]
    stale = _classified(state, STALE_CANDIDATE)
    if not stale:
        return [*out, "None.", ""]
    for c in stale:
        evidence = "; ".join(md(e, 120) for e in f.strings(c.get("evidence")))
        out.append(f"- PID {f.integer(c.get('pid'))} ({md(c.get('name'))}, {md(c.get('workstream'))}): {evidence}")
    return [*out, ""]


def _budget(state: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["## Resource Budget", "", "| Device | Total | Reserve | Allocated | Available |", "|---|---|---|---|---|"]
    rows = list(budgets) or [{"device": "all", **f.obj(state, "gpu_budget")}]
    for b in rows:
        out.append(f"| {md(b.get('device'))} | {f.mb(b.get('total_mb'))} | {f.mb(b.get('reserve_mb'))} | "
                   f"{f.mb(b.get('allocated_mb'))} | {f.mb(b.get('available_mb'))} |")
    claimed = f.obj(state, "ports_claimed")
    ports = sorted(claimed, key=lambda p: (len(p), p))  # numeric strings in numeric order
    out += ["",
            "- Ports claimed: " + f.join([f"{md(p)} ({_holder(claimed[p], 'reservation')})" for p in ports]),
            "- Open ports: " + f.join(f.ints(state.get("safe_ports"))),
            "- Repos locked: " + f.join([f"{md(r, 120)} ({_holder(pid)})"
                                         for r, pid in sorted(f.obj(state, "repos_locked").items())]),
            ""]
    remote = f.rows(state, "external_resources")
    if remote:
        out += ["| Remote resource | Name | Status | GPUs | Claimed by | Repo |", "|---|---|---|---|---|---|"]
        for e in remote:
            gpus = f"{md(e.get('gpu_count') or '?')}x {md(e.get('gpu_type') or '-')}"
            out.append(f"| {md(e.get('provider'))}:{md(e.get('id') or e.get('external_id'))} | {md(e.get('name'))} | "
                       f"{md(e.get('status'))} | {gpus} | {md(e.get('session_id') or '-')} | "
                       f"{md(e.get('repo_dir') or '-', 120)} |")
        out.append("")
    return out


def _holder(pid: object, other: str = "session lease or external claim") -> str:
    return f"PID {pid}" if isinstance(pid, int) and not isinstance(pid, bool) else other


def _events(state: Mapping[str, Any]) -> list[str]:
    events = f.rows(state, "recent_events")
    out = [f"## Recent Events ({len(events)})", ""]
    if not events:
        return [*out, "No events in the last hour.", ""]
    for e in events[:EVENTS_SHOWN]:
        detail = f.obj(e, "detail")
        reason = detail.get("reason") or detail.get("name") or ""
        pid = e.get("pid")
        ws = e.get("workstream")
        out.append(f"- {f.short_time(e.get('timestamp'))} {code(f.text(e.get('event_type'), '?'))}"
                   f"{f' PID {pid}' if isinstance(pid, int) else ''}{f' [{md(ws)}]' if ws else ''}"
                   f"{' — ' + md(reason, 120) if reason else ''}")
    return [*out, ""]
