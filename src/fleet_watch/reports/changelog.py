"""What changed between two successive state documents: one changelog entry, and its one-line human form.

Pure: two documents in, a delta out. The previous document was read back from disk, so every field is read
defensively; a process is the same process when its PID *and* start time match (a reused PID is a removal plus an
addition).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet_watch.reports import fields as f

MAX_ITEMS = 200  # per list in one entry: a delta stays bounded however many processes appear at once


def _processes(state: Mapping[str, Any]) -> dict[tuple[int, float], Mapping[str, Any]]:
    out: dict[tuple[int, float], Mapping[str, Any]] = {}
    for p in f.rows(state, "processes"):
        key = f.identity(p)
        if key is not None:
            out[key] = p
    return out


def _gpu(p: Mapping[str, Any]) -> dict[str, int]:
    devices = f.obj(p, "gpu_devices")
    if devices:
        return {str(k): f.integer(v) for k, v in devices.items()}
    mb = f.integer(p.get("gpu_mb"))
    return {"all": mb} if mb else {}


def _claims_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    change: dict[str, Any] = {}
    for kind, read in (("ports", f.ints), ("repos", f.strings)):
        before, after = set(read(old.get(kind))), set(read(new.get(kind)))
        if before != after:
            change[f"{kind}_added"] = sorted(after - before)
            change[f"{kind}_removed"] = sorted(before - after)
    if _gpu(old) != _gpu(new):
        change["gpu_mb"] = {"old": f.integer(old.get("gpu_mb")), "new": f.integer(new.get("gpu_mb"))}
    if not change:
        return None
    return {"pid": new.get("pid"), "name": f.text(new.get("name")), **change}


def _leases(state: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {r["session_id"]: r for r in f.rows(state, "session_leases") if isinstance(r.get("session_id"), str)}


def _externals(state: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(r["provider"], r["external_id"]): r for r in f.rows(state, "external_resources")
            if isinstance(r.get("provider"), str) and isinstance(r.get("external_id"), str)}


def diff_states(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Only the kinds of change that happened: processes, claims, classes, leases, external resources, GPU."""
    delta: dict[str, Any] = {}
    before, after = _processes(old), _processes(new)
    delta["processes_added"] = [
        {"pid": p.get("pid"), "name": f.text(p.get("name")), "workstream": f.text(p.get("workstream")),
         "ports": f.ints(p.get("ports")), "gpu_mb": f.integer(p.get("gpu_mb"))}
        for k, p in after.items() if k not in before]
    delta["processes_removed"] = [
        {"pid": p.get("pid"), "name": f.text(p.get("name")), "workstream": f.text(p.get("workstream"))}
        for k, p in before.items() if k not in after]
    delta["claims_changed"] = [c for k in after.keys() & before.keys()
                               if (c := _claims_change(before[k], after[k])) is not None]

    old_classes, new_classes = f.classes_by_identity(old), f.classes_by_identity(new)
    delta["classes_changed"] = [
        {"pid": k[0], "name": f.text(c.get("name")), "old": f.text(old_classes[k].get("classification")),
         "new": f.text(c.get("classification"))}
        for k, c in new_classes.items()
        if k in old_classes and old_classes[k].get("classification") != c.get("classification")]

    old_leases, new_leases = _leases(old), _leases(new)
    delta["leases_added"] = [{"session_id": k, "status": f.text(v.get("status")), "repo_dir": v.get("repo_dir")}
                             for k, v in new_leases.items() if k not in old_leases]
    delta["leases_removed"] = [{"session_id": k} for k in old_leases if k not in new_leases]
    delta["lease_status_changes"] = [
        {"session_id": k, "old_status": f.text(old_leases[k].get("status")), "new_status": f.text(v.get("status"))}
        for k, v in new_leases.items() if k in old_leases and old_leases[k].get("status") != v.get("status")]

    old_ext, new_ext = _externals(old), _externals(new)
    delta["external_added"] = [{"provider": k[0], "external_id": k[1], "name": f.text(v.get("name")),
                                "status": f.text(v.get("status"))} for k, v in new_ext.items() if k not in old_ext]
    delta["external_removed"] = [{"provider": k[0], "external_id": k[1],
                                  "name": f.text(v.get("name"))} for k, v in old_ext.items() if k not in new_ext]
    delta["status_changes"] = [
        {"provider": k[0], "external_id": k[1], "old_status": f.text(old_ext[k].get("status")),
         "new_status": f.text(v.get("status"))}
        for k, v in new_ext.items() if k in old_ext and old_ext[k].get("status") != v.get("status")]

    old_gpu = f.integer(f.obj(old, "gpu_budget").get("allocated_mb"))
    new_gpu = f.integer(f.obj(new, "gpu_budget").get("allocated_mb"))
    if old_gpu != new_gpu:
        delta["gpu_allocated_mb"] = {"old": old_gpu, "new": new_gpu}

    out: dict[str, Any] = {}
    for key, value in delta.items():
        if isinstance(value, list):
            if not value:
                continue
            if len(value) > MAX_ITEMS:
                out[f"{key}_omitted"] = len(value) - MAX_ITEMS
                value = value[:MAX_ITEMS]
        out[key] = value
    return out


def entry(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The changelog line for ``new`` against ``old``, or None when nothing changed."""
    delta = diff_states(old, new)
    return {"timestamp": f.text(new.get("generated_utc")), "delta": delta} if delta else None


def describe(item: Mapping[str, Any]) -> str | None:
    """``<time>  +name (PID p, 4,096MB) | -name (PID q) | ...``; None for an entry with nothing to show."""
    delta = f.obj(item, "delta")
    parts: list[str] = []
    for p in f.rows(delta, "processes_added"):
        parts.append(f"+{f.text(p.get('name'))} (PID {p.get('pid')}, {f.integer(p.get('gpu_mb')):,}MB)")
    for p in f.rows(delta, "processes_removed"):
        parts.append(f"-{f.text(p.get('name'))} (PID {p.get('pid')})")
    for c in f.rows(delta, "claims_changed"):
        bits = [*(f"+{x}" for x in c.get("ports_added") or []), *(f"-{x}" for x in c.get("ports_removed") or []),
                *(f"+{x}" for x in c.get("repos_added") or []), *(f"-{x}" for x in c.get("repos_removed") or [])]
        gpu = f.obj(c, "gpu_mb")
        if gpu:
            bits.append(f"GPU {f.integer(gpu.get('old')):,}→{f.integer(gpu.get('new')):,}MB")
        parts.append(f"{f.text(c.get('name'))} (PID {c.get('pid')}) {' '.join(bits)}")
    for c in f.rows(delta, "classes_changed"):
        parts.append(f"{f.text(c.get('name'))} (PID {c.get('pid')}) {f.text(c.get('old'))}→{f.text(c.get('new'))}")
    for lease in f.rows(delta, "leases_added"):
        parts.append(f"+lease {f.text(lease.get('session_id'))} ({f.text(lease.get('status'))})")
    for lease in f.rows(delta, "leases_removed"):
        parts.append(f"-lease {f.text(lease.get('session_id'))}")
    for lease in f.rows(delta, "lease_status_changes"):
        parts.append(f"lease {f.text(lease.get('session_id'))} "
                     f"{f.text(lease.get('old_status'))}→{f.text(lease.get('new_status'))}")
    for e in f.rows(delta, "external_added"):
        parts.append(f"+{f.text(e.get('provider'))}:{f.text(e.get('external_id'))} ({f.text(e.get('name'))})")
    for e in f.rows(delta, "external_removed"):
        parts.append(f"-{f.text(e.get('provider'))}:{f.text(e.get('external_id'))} ({f.text(e.get('name'))})")
    for e in f.rows(delta, "status_changes"):
        parts.append(f"{f.text(e.get('provider'))}:{f.text(e.get('external_id'))} "
                     f"{f.text(e.get('old_status'))}→{f.text(e.get('new_status'))}")
    gpu = f.obj(delta, "gpu_allocated_mb")
    if gpu:
        parts.append(f"GPU {f.integer(gpu.get('old')):,}→{f.integer(gpu.get('new')):,}MB")
    omitted = sum(f.integer(v) for k, v in delta.items() if k.endswith("_omitted"))
    if omitted:
        parts.append(f"(+{omitted} more)")
    if not parts:
        return None
    return f"{f.short_time(item.get('timestamp'))}  " + " | ".join(parts)
