"""Discovery decisions, pure: which processes are workloads or agent sessions, what each holds, and
what must change in the registry to make it true again. Data in, a ``Plan`` out; no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, Protocol

from fleet_watch.config import SessionPatternSetting, WorkloadPattern
from fleet_watch.core import liveness as live_rule
from fleet_watch.models import ClaimBasis, ProcessRecord

# The places a process's GPU figure can come from, best first (docs/discovery.md says why in this order):
# NVML measures every allocation the driver made for the process (CUDA context, compute buffers included);
# Ollama's own /api/ps `size_vram` is what its scheduler placed on the GPU, right where NVML has no per-process
# figure (macOS, containers without the host's PID namespace) and better than the Apple footprint, which also
# counts the process's CPU-side memory and cannot tell weights on the GPU from weights in RAM. Then the user's own
# reservation (config `gpu_mb_reserved`). Measurements and reservations are firm claims (they count against the
# budget); an estimate or a pattern's default is shown, never enforced.
GPU_SOURCES = ("nvml", "ollama_api", "apple_footprint", "reserved", "estimate", "pattern_default")
# Sources that measure (rather than estimate) what a process holds.
MEASURED_GPU_SOURCES = frozenset({"nvml", "ollama_api", "apple_footprint"})


def gpu_basis(source: str) -> ClaimBasis:
    """The claim basis of a GPU figure from ``source``: only measurements and reservations are firm."""
    if source in MEASURED_GPU_SOURCES:
        return "measured"
    return "reserved" if source == "reserved" else "estimate"

# Programs whose command line merely *mentions* a server (viewers, pagers, searchers, supervisors and
# shells running "-c <script>"): matching them would register `less vllm.log` or `grep "ollama serve"`.
OBSERVER_TOOLS = frozenset({
    "grep", "egrep", "fgrep", "rg", "ag", "ack", "less", "more", "most", "tail", "head", "cat", "bat", "vi", "vim",
    "nvim", "nano", "emacs", "view", "man", "watch", "tmux", "screen", "ssh", "journalctl", "sudo", "doas",
    "timeout", "strace", "ltrace", "gdb", "lsof", "ps", "pgrep", "pkill", "kill", "killall", "fleet", "htop", "top",
    "nvtop", "nvitop", "code", "find", "xargs", "awk", "sed", "jq", "git", "docker", "podman",
})
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "fish", "ksh"})
_MAX_ANCESTRY = 64  # bounded walks up the parent chain (a corrupt ppid map cannot loop us)


class ProcLike(Protocol):
    """What discovery needs of a process (``probes.scan.ProcInfo`` satisfies it)."""

    @property
    def pid(self) -> int: ...
    @property
    def ppid(self) -> int | None: ...
    @property
    def name(self) -> str: ...
    @property
    def argv(self) -> tuple[str, ...]: ...
    @property
    def start_time(self) -> float | None: ...
    @property
    def uid(self) -> int | None: ...
    @property
    def rss_mb(self) -> int | None: ...
    @property
    def readable(self) -> bool: ...
    @property
    def cmdline(self) -> str: ...
    @property
    def is_zombie(self) -> bool: ...


class Pattern(NamedTuple):
    name_template: str
    regex: re.Pattern[str]
    workstream: str
    priority: int
    gpu_mb_default: int
    gpu_mb_reserved: int | None = None


class SessionPattern(NamedTuple):
    name: str
    kind: str
    regex: re.Pattern[str]


def compile_patterns(patterns: Sequence[WorkloadPattern]) -> list[Pattern]:
    """Config ``patterns`` (validated by config.py) to compiled rules; matching is case-insensitive."""
    return [
        Pattern(name_template=p.name_template, regex=re.compile(p.process_match, re.I),
                workstream=p.workstream, priority=p.priority, gpu_mb_default=p.gpu_mb_default,
                gpu_mb_reserved=p.gpu_mb_reserved)
        for p in patterns
    ]


def compile_session_patterns(patterns: Sequence[SessionPatternSetting]) -> list[SessionPattern]:
    return [SessionPattern(name=p.name, kind=p.kind, regex=re.compile(p.process_match, re.I)) for p in patterns]


def _basename(arg: str) -> str:
    return arg.rsplit("/", 1)[-1]


def is_observer(argv: Sequence[str]) -> bool:
    """A tool that only *mentions* a server on its command line, or a shell running a ``-c`` script."""
    if not argv:
        return False
    prog = _basename(argv[0])
    if prog in OBSERVER_TOOLS:
        return True
    return prog in SHELLS and "-c" in argv[1:3]


def match_pattern(proc: ProcLike, patterns: Sequence[Pattern]) -> Pattern | None:
    """The first pattern that matches the full command line of a readable, live, non-observer process."""
    if not proc.readable or proc.is_zombie or not proc.argv or is_observer(proc.argv):
        return None
    text = proc.cmdline
    for pattern in patterns:
        if pattern.regex.search(text):
            return pattern
    return None


_MODEL_FLAGS = ("--model", "--model-path", "--model-id", "--model_path", "--model-name", "-m", "--hf-repo", "-hf")
_POSITIONAL_AFTER = ("serve", "run", "pull")


def extract_model(argv: Sequence[str]) -> str | None:
    """The model a server was started with: ``--model X``/``--model=X``/``-m X`` and friends, or the
    positional after ``serve`` (``vllm serve meta-llama/...``). ``None`` when there is none."""
    for i, arg in enumerate(argv):
        for flag in _MODEL_FLAGS:
            if arg == flag and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                # `python -m mlx_lm.server` names a module, not a model.
                if flag == "-m" and i == 1 and _basename(argv[0]).startswith("python"):
                    break
                return argv[i + 1]
            if flag.startswith("--") and arg.startswith(flag + "="):
                return arg.split("=", 1)[1] or None
    for i, arg in enumerate(argv[1:], start=1):
        if arg in _POSITIONAL_AFTER and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return argv[i + 1]
    return None


_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")


def model_short(model: str | None) -> str:
    """``meta-llama/Llama-3.1-8B-Instruct`` -> ``8B``; else the last path part (30 chars); else ``unknown``."""
    if not model:
        return "unknown"
    m = _SIZE.search(model)
    if m:
        return m.group(1) + "B"
    tail = model.rstrip("/").rsplit("/", 1)[-1]
    return tail[:30] or "unknown"


def render_name(template: str, model: str | None) -> str:
    values = {"model": model or "unknown", "model_short": model_short(model)}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


_NETWORK_FLAGS = frozenset({"--port", "--host", "--api-port", "--listen", "--bind"})

# Flags whose value is a credential (llama-server, vLLM, SGLang, TGI, HF tools): a server's API key on its command
# line must not travel into the registry, state.json or any output.
SECRET_FLAGS = frozenset({"--api-key", "--admin-api-key", "--api-keys", "--hf-token", "--token", "--auth-token",
                          "--access-token", "--secret", "--password"})
REDACTED = "***"


def redact(cmdline: str) -> str:
    """The command line with the values of credential flags (``--api-key K``, ``--api-key=K``) replaced."""
    out: list[str] = []
    hide = False
    for token in cmdline.split(" "):
        if hide:
            out.append(REDACTED)
            hide = False
            continue
        flag, eq, _value = token.partition("=")
        if flag.lower() in SECRET_FLAGS:
            out.append(f"{flag}={REDACTED}" if eq else token)
            hide = not eq
            continue
        out.append(token)
    return " ".join(out)


def estimate_key(cmdline: str) -> str:
    """The command line without its network flags: two servers that differ only in where they listen
    have the same working set, so the estimator runs once for both (its figure is cached on this key)."""
    out: list[str] = []
    skip = False
    for token in cmdline.split():
        if skip:
            skip = False
            continue
        flag = token.split("=", 1)[0]
        if flag in _NETWORK_FLAGS:
            skip = "=" not in token
            continue
        out.append(token)
    return " ".join(out)


class Workload(NamedTuple):
    """One discovered workload: a matching process plus the same-pattern processes below it."""

    pid: int
    start_time: float
    uid: int | None
    pattern: Pattern
    name: str
    model: str | None
    cmdline: str
    ports: tuple[int, ...]
    member_pids: tuple[int, ...]  # pid first, then folded descendants
    rss_mb: int


def ancestry(pid: int, parent: Mapping[int, int | None]) -> list[int]:
    """Ancestors of ``pid``, nearest first, bounded and loop-safe."""
    out: list[int] = []
    seen = {pid}
    current = parent.get(pid)
    while current and current not in seen and len(out) < _MAX_ANCESTRY:
        out.append(current)
        seen.add(current)
        current = parent.get(current)
    return out


def find_workloads(
    procs: Iterable[ProcLike], patterns: Sequence[Pattern], ports_by_pid: Mapping[int, Collection[int]],
    exclude_pids: Collection[int] = (),
) -> list[Workload]:
    """Match every process; fold a match into its nearest matching ancestor of the same pattern (Ollama's
    runners into ``ollama serve``, a server's re-exec'd child into the server), with all their ports."""
    index = {p.pid: p for p in procs}
    parent = {p.pid: p.ppid for p in index.values()}
    matched: dict[int, Pattern] = {}
    for p in index.values():
        if p.pid in exclude_pids or p.start_time is None:
            continue
        pat = match_pattern(p, patterns)
        if pat is not None:
            matched[p.pid] = pat
    root_of: dict[int, int] = {}
    for pid, pat in matched.items():
        root = pid
        for anc in ancestry(pid, parent):
            if matched.get(anc) is pat:
                root = anc
        root_of[pid] = root
    members: dict[int, list[int]] = {}
    for pid in sorted(matched):
        members.setdefault(root_of[pid], []).append(pid)
    out: list[Workload] = []
    for root, group in sorted(members.items()):
        proc = index[root]
        group_sorted = [root, *[m for m in group if m != root]]
        ports = sorted({port for m in group_sorted for port in ports_by_pid.get(m, ())})
        model = extract_model(proc.argv)
        assert proc.start_time is not None
        out.append(Workload(
            pid=root, start_time=proc.start_time, uid=proc.uid, pattern=matched[root],
            name=render_name(matched[root].name_template, model), model=model, cmdline=redact(proc.cmdline),
            ports=tuple(ports), member_pids=tuple(group_sorted),
            rss_mb=sum(index[m].rss_mb or 0 for m in group_sorted),
        ))
    return out


def attribute_gpu(
    workloads: Sequence[Workload], gpu_used: Mapping[int, Mapping[str, int]], parent: Mapping[int, int | None],
) -> dict[int, dict[str, int]]:
    """{workload pid: {device: MB}} from per-PID GPU use. A GPU process that is not itself a workload
    member counts for its nearest workload ancestor (vLLM's engine core, a torchrun worker)."""
    owner = {m: w.pid for w in workloads for m in w.member_pids}
    out: dict[int, dict[str, int]] = {}
    for pid, per_device in gpu_used.items():
        root = owner.get(pid)
        if root is None:
            root = next((owner[a] for a in ancestry(pid, parent) if a in owner), None)
        if root is None:
            continue
        bucket = out.setdefault(root, {})
        for device, mb in per_device.items():
            bucket[device] = bucket.get(device, 0) + mb
    return out


def resolve_gpu(
    *, nvml_mb: int | None, footprint_mb: int | None, estimate_mb: int | None, default_mb: int,
    server_mb: int | None = None, reserved_mb: int | None = None,
) -> tuple[int, str]:
    """NVML, then the server's own report (Ollama's loaded models), then the Apple footprint, then the user's
    reservation, then the estimator's figure, then the pattern default. NVML's zero does not overrule a server that
    reports memory on the GPU: some drivers (WSL2, some containers) list no per-process memory at all."""
    if nvml_mb is not None and (nvml_mb > 0 or server_mb is None):
        return nvml_mb, "nvml"
    if server_mb is not None:
        return server_mb, "ollama_api"
    if footprint_mb is not None:
        return footprint_mb, "apple_footprint"
    if reserved_mb is not None:
        return reserved_mb, "reserved"
    if estimate_mb is not None:
        return estimate_mb, "estimate"
    return default_mb, "pattern_default"


def gpu_changed(old_mb: int, new_mb: int) -> bool:
    """Live NVML figures wobble: only a move of more than 64 MB and 5 % is an update worth an event."""
    delta = abs(new_mb - old_mb)
    return delta > 64 and delta > 0.05 * max(old_mb, 1)


class Observed(NamedTuple):
    """A workload together with its GPU figure, ready to compare with the registry."""

    workload: Workload
    gpu_mb: int
    gpu_source: str
    gpu_devices: Mapping[str, int] = MappingProxyType({})


class Update(NamedTuple):
    record: ProcessRecord
    observed: Observed
    ports_added: tuple[int, ...]
    ports_removed: tuple[int, ...]
    gpu_changed: bool


class Removal(NamedTuple):
    record: ProcessRecord
    reason: str  # dead_pid | pid_reused | zombie | no_longer_matches


@dataclass(slots=True)
class Plan:
    adds: list[Observed] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    heartbeats: list[int] = field(default_factory=list)  # record ids seen alive

    @property
    def empty(self) -> bool:
        return not (self.adds or self.updates or self.removals)


def liveness(recorded_start: float, proc: ProcLike | None) -> str | None:
    """Why a recorded process is gone according to the scan, ``None`` if alive, ``"absent"`` if not seen."""
    if proc is None:
        return "absent"
    return live_rule.death_reason(recorded_start, exists=True, start_time=proc.start_time, is_zombie=proc.is_zombie)


def plan_changes(
    observed: Sequence[Observed], records: Sequence[ProcessRecord], death: Mapping[int, str | None],
    discover_source: str = "discover",
) -> Plan:
    """Diff what runs against what is registered. ``death`` maps record id -> reason it is gone (None: alive).

    Rows whose process is gone are removed (whoever registered them); discovered rows follow their
    process's ports and GPU figure; every live row gets a heartbeat; a new match is added.
    """
    plan = Plan()
    by_pid = {o.workload.pid: o for o in observed}
    registered_pids: set[int] = set()
    for rec in records:
        reason = death.get(rec.record_id)
        if reason is not None:
            plan.removals.append(Removal(rec, reason))
            continue
        registered_pids.add(rec.pid)
        plan.heartbeats.append(rec.record_id)
        obs = by_pid.get(rec.pid)
        if rec.source != discover_source:
            continue
        if obs is None:
            plan.removals.append(Removal(rec, "no_longer_matches"))
            continue
        new_ports, old_ports = set(obs.workload.ports), set(rec.ports)
        changed_gpu = (gpu_changed(rec.gpu_mb, obs.gpu_mb) or (rec.gpu_mb == 0) != (obs.gpu_mb == 0)
                       or (obs.gpu_mb > 0 and rec.gpu_basis != gpu_basis(obs.gpu_source)))
        if new_ports != old_ports or changed_gpu:
            plan.updates.append(Update(
                record=rec, observed=obs, ports_added=tuple(sorted(new_ports - old_ports)),
                ports_removed=tuple(sorted(old_ports - new_ports)), gpu_changed=changed_gpu,
            ))
    plan.adds = [o for o in observed if o.workload.pid not in registered_pids]
    return plan


class SessionMatch(NamedTuple):
    pid: int
    kind: str
    name: str
    member_pids: tuple[int, ...]


_INTERPRETER = re.compile(r"^(node|nodejs|bun|deno|ruby|perl|python(\d+(\.\d+)?)?)$")


def program_words(argv: Sequence[str]) -> tuple[str, ...]:
    """What an agent CLI is recognised by, each matched on its own: the program, and for an interpreter the script
    or ``-m`` module it runs (``node /usr/lib/node_modules/.bin/claude``, ``python -m aider``), never the arguments
    after them: a training job writing to ``--out /runs/claude`` is not a Claude Code session."""
    if not argv:
        return ()
    words = [argv[0]]
    if _INTERPRETER.match(argv[0].rsplit("/", 1)[-1]):
        rest = list(argv[1:])
        i = 0
        while i < len(rest) and rest[i].startswith("-") and rest[i] != "-m":
            i += 1
        words += rest[i + 1:i + 2] if i < len(rest) and rest[i] == "-m" else rest[i:i + 1]
    return tuple(words)


def is_session(argv: Sequence[str], pattern: SessionPattern) -> bool:
    return any(pattern.regex.search(word) for word in program_words(argv))


def find_sessions(
    procs: Iterable[ProcLike], patterns: Sequence[SessionPattern], exclude_pids: Collection[int] = (),
) -> list[SessionMatch]:
    """Agent CLIs by command line; a same-kind descendant (Claude's sub-agents, a node re-exec) folds into
    the topmost matching ancestor, so one session is one row."""
    index = {p.pid: p for p in procs}
    parent = {p.pid: p.ppid for p in index.values()}
    kind_of: dict[int, SessionPattern] = {}
    for p in index.values():
        if p.pid in exclude_pids or not p.readable or p.is_zombie or not p.argv or is_observer(p.argv):
            continue
        for sp in patterns:
            if is_session(p.argv, sp):
                kind_of[p.pid] = sp
                break
    groups: dict[int, list[int]] = {}
    for pid, sp in sorted(kind_of.items()):
        root = pid
        for anc in ancestry(pid, parent):
            if anc in kind_of and kind_of[anc].kind == sp.kind:
                root = anc
        groups.setdefault(root, []).append(pid)
    return [SessionMatch(pid=root, kind=kind_of[root].kind, name=kind_of[root].name,
                         member_pids=(root, *[m for m in group if m != root]))
            for root, group in sorted(groups.items())]
