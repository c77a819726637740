"""Model servers' own APIs, the pure part: which API a workload speaks, which port to ask, what each answer means,
which models could be given back and how. Data in (HTTP answers as bytes, ``now``), verdicts out; no I/O.

The answers come from hostile processes: every field is shape-checked, a bad entry costs that entry, a bad answer
costs that server a reason (``error``), never the listing. Per-API reading of the bodies is ``core.server_apis``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

API_KINDS = ("ollama", "llama_cpp", "vllm", "sglang", "lmstudio", "openai")

# Where each server listens unless told otherwise (ecosystem.md section 9).
DEFAULT_PORTS = {"ollama": 11434, "llama_cpp": 8080, "vllm": 8000, "sglang": 30000, "lmstudio": 1234}

# Decided on the command line of a process that discovery already matched as a workload, first match wins.
# (The workstream is the user's to rename; the program on the command line is not.)
_API_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ollama", re.compile(r"(^|/)ollama(\s|$)", re.I)),
    ("llama_cpp", re.compile(r"(^|/)llama-server(\s|$)", re.I)),
    ("vllm", re.compile(r"(\bvllm\b.*\bserve\b|vllm\.entrypoints)", re.I)),
    ("sglang", re.compile(r"sglang\.launch_server\b|(^|/)sglang\s+serve\b", re.I)),
    ("lmstudio", re.compile(r"lm-studio|LM Studio|(^|/)lms\s+server", re.I)),
    ("openai", re.compile(r"llama_cpp\.server\b|mlx_(lm|vlm)[.\s]+server\b|(^|/)text-generation-launcher(\s|$)"
                          r"|koboldcpp", re.I)),
)

# What each API is asked, per server, in one parallel round. The first path decides ``reachable``.
ENDPOINTS: Mapping[str, tuple[str, ...]] = {
    "ollama": ("/api/ps", "/api/version"),
    "llama_cpp": ("/v1/models", "/props", "/slots"),
    "vllm": ("/v1/models", "/metrics", "/version"),
    "sglang": ("/v1/models", "/metrics"),
    "lmstudio": ("/api/v1/models", "/api/v0/models", "/v1/models"),
    "openai": ("/v1/models",),
}
VLLM_SLEEP_PATH = "/is_sleeping"
MAX_CANDIDATE_PORTS = 4
MIB = 1024 * 1024
LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"


def api_for(cmdline: str) -> str | None:
    """The API a matched workload speaks, or ``None`` when it is no model server (ComfyUI, a training run)."""
    for api, rule in _API_RULES:
        if rule.search(cmdline):
            return api
    return None


def sleep_mode(argv: Sequence[str]) -> bool:
    """vLLM frees its GPU memory over HTTP only when started with ``--enable-sleep-mode``."""
    return any(a == "--enable-sleep-mode" or (a.startswith("--enable-sleep-mode=") and a.split("=", 1)[1] != "false")
               for a in argv)


def port_flag(argv: Sequence[str]) -> int | None:
    """``--port N`` / ``--port=N`` on the command line (the last one wins, as argparse would have it)."""
    found: int | None = None
    for i, arg in enumerate(argv):
        value: str | None = None
        if arg == "--port" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--port="):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit() and 0 < int(value) < 65536:
            found = int(value)
    return found


class Endpoint(NamedTuple):
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _loopback_host(addresses: Collection[str]) -> str | None:
    """The loopback address that reaches a listener bound to ``addresses``; ``None`` if none does."""
    if any(a in ("0.0.0.0", "") or a.startswith("127.") for a in addresses):
        return LOOPBACK_V4
    if any(a in ("::", "::1") for a in addresses):
        return LOOPBACK_V6
    if any(a.startswith("::ffff:127.") for a in addresses):
        return LOOPBACK_V4
    return None


def candidate_endpoints(
    api: str, argv: Sequence[str], own: Mapping[int, Collection[str]], held_by_others: Collection[int],
) -> tuple[tuple[Endpoint, ...], str | None]:
    """Where to ask a server, best first, and why not when nowhere.

    ``own`` maps the server process's own listening ports to their addresses. The port on its command line comes
    first, then the API's default port, then the rest (lowest first), at most four. A server that listens nowhere yet
    is asked on its command-line (or default) port unless another process holds that port: a refused connection
    then says "still loading". Only loopback is ever asked.
    """
    flag = port_flag(argv)
    default = DEFAULT_PORTS.get(api)
    if not own:
        port = flag or default
        if port is None:
            return (), "no listening port found"
        if port in held_by_others:
            return (), f"not listening; port {port} is held by another process"
        return (Endpoint(LOOPBACK_V4, port),), None
    ordered: list[int] = []
    for port in (flag, default, *sorted(own)):
        if port is not None and port in own and port not in ordered:
            ordered.append(port)
    out: list[Endpoint] = []
    foreign: list[str] = []
    for port in ordered[:MAX_CANDIDATE_PORTS]:
        host = _loopback_host(own[port])
        if host is None:
            foreign.append(f"{port} on {', '.join(sorted(own[port]))}")
            continue
        out.append(Endpoint(host, port))
    if not out:
        return (), f"listens only on non-loopback addresses ({'; '.join(foreign)}); not asked"
    return tuple(out), None


def paths_for(api: str, sleep: bool) -> tuple[str, ...]:
    paths = ENDPOINTS[api]
    return (*paths, VLLM_SLEEP_PATH) if api == "vllm" and sleep else paths


# -- answers --------------------------------------------------------------------------------------------------------
REFUSED, TIMEOUT, RESET, CLOSED, NOT_HTTP = "refused", "timeout", "reset", "closed", "not_http"


class Answer(NamedTuple):
    """One HTTP exchange as the probe saw it: a status and body, or a ``failure`` (refused, timeout, reset, ...)."""

    status: int | None = None
    content_type: str = ""
    body: bytes = b""
    failure: str | None = None
    truncated: bool = False


class Model(NamedTuple):
    """One resident model, the README's keys (``to_dict``)."""

    name: str
    api: str
    pid: int
    port: int | None
    vram_mb: int | None
    size_mb: int | None
    context_tokens: int | None
    expires_at: str | None
    busy: bool | None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "api": self.api, "pid": self.pid, "port": self.port, "vram_mb": self.vram_mb,
                "size_mb": self.size_mb, "context_tokens": self.context_tokens, "expires_at": self.expires_at,
                "busy": self.busy}


class Reading(NamedTuple):
    """What one server's answers say, before it is tied to a process: ``error`` is None when ``reachable``."""

    reachable: bool
    error: str | None = None
    version: str | None = None
    models: tuple[dict[str, object], ...] = ()  # name, vram_mb, size_mb, context_tokens, expires_at, busy
    router: bool = False  # llama-server in router mode (it can load and unload models)
    unload_api: bool = False  # LM Studio's v1 API (instance ids to unload) answered


class Server(NamedTuple):
    """One model server process and what its API said."""

    pid: int
    start_time: float | None
    api: str
    name: str
    workstream: str
    argv: tuple[str, ...]
    endpoint: Endpoint | None
    reading: Reading
    models: tuple[Model, ...] = ()

    @property
    def port(self) -> int | None:
        return None if self.endpoint is None else self.endpoint.port

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "port": self.port, "api": self.api,
                "url": None if self.endpoint is None else self.endpoint.url, "reachable": self.reading.reachable,
                "version": self.reading.version, "error": self.reading.error}


def failure_text(answer: Answer, timeout_s: float, key_sent: bool) -> str | None:
    """Why an answer is not one any API gives (``None``: an HTTP 200 worth reading). Never quotes a request header,
    so a configured API key cannot leak through it."""
    if answer.failure == REFUSED:
        return "still loading: connection refused (not listening yet, or stopped)"
    if answer.failure == TIMEOUT:
        return f"timed out after {timeout_s:g} s"
    if answer.failure == RESET:
        return "connection reset by the server"
    if answer.failure == CLOSED:
        return "closed the connection without answering"
    if answer.failure == NOT_HTTP:
        return "answered something else: not HTTP"
    if answer.failure is not None:
        return f"no answer: {answer.failure}"
    status = answer.status
    if status in (401, 403):
        return (f"API key rejected ({status}): check server_api_keys" if key_sent
                else f"needs an API key ({status}): add it to server_api_keys in config.json")
    if status == 503:
        text = answer.body[:2048].decode("utf-8", "replace")
        if "loading model" in text.lower():
            return "still loading: 503 Loading model"
        return "unavailable: HTTP 503"
    if _is_html(answer):
        return f"answered something else: an HTML page (HTTP {status})"
    if status != 200:
        return f"answered something else: HTTP {status}"
    return None


def _is_html(answer: Answer) -> bool:
    head = answer.body[:256].lstrip().lower()
    return "html" in answer.content_type.lower() or head.startswith((b"<!doctype", b"<html"))


# -- cleaning values from outside -------------------------------------------------------------------------------------
_MAX_TEXT = 256


def text(value: object, limit: int = _MAX_TEXT) -> str | None:
    """A printable string of bounded length, or ``None`` for anything else (or an empty string)."""
    if not isinstance(value, str):
        return None
    clean = "".join(ch for ch in value if ch.isprintable())[:limit].strip()
    return clean or None


def count(value: object, limit: int = 2**53) -> int | None:
    """A non-negative integer (not a bool, not a float), bounded; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        return None
    return value


def mib(value: object) -> int | None:
    n = count(value)
    return None if n is None else n // MIB


# -- what can be given back -------------------------------------------------------------------------------------------
def unload_method(server: Server) -> tuple[str | None, str]:
    """How this server gives a model back over its API, or ``None`` and why it cannot."""
    api, reading = server.api, server.reading
    if api == "ollama":
        return "ollama_keep_alive_0", ""
    if api == "llama_cpp":
        if reading.router:
            return "llama_cpp_router_unload", ""
        return None, "llama-server unloads models over its API only in router mode (started without -m)"
    if api == "lmstudio":
        if reading.unload_api:
            return "lmstudio_unload", ""
        return None, "this LM Studio has no /api/v1 (0.4.0+) unload endpoint"
    if api == "vllm":
        if sleep_mode(server.argv):
            return "vllm_sleep", ""
        return None, ("vLLM frees GPU memory over its API only when started with --enable-sleep-mode "
                      "(and VLLM_SERVER_DEV_MODE=1)")
    if api == "sglang":
        return None, "SGLang has no endpoint that unloads a model"
    return None, "an OpenAI-compatible server has no endpoint that unloads a model"


class UnloadRequest(NamedTuple):
    method: str
    path: str
    body: dict[str, object] | None


def unload_request(method: str, model: str) -> UnloadRequest:
    if method == "ollama_keep_alive_0":
        return UnloadRequest(method, "/api/generate", {"model": model, "keep_alive": 0})
    if method == "llama_cpp_router_unload":
        return UnloadRequest(method, "/models/unload", {"model": model})
    if method == "lmstudio_unload":
        return UnloadRequest(method, "/api/v1/models/unload", {"instance_id": model})
    if method == "vllm_sleep":
        return UnloadRequest(method, "/sleep?level=1", None)
    raise ValueError(f"unknown unload method {method!r}")


def name_matches(resident: str, wanted: str) -> bool:
    """Ollama's ``llama3.2`` is ``llama3.2:latest``; otherwise names match exactly."""
    return resident == wanted or (":" not in wanted and resident == f"{wanted}:latest")


def unload_command(name: str, port: int | None) -> str:
    suffix = "" if port is None else f" --port {port}"
    return f"fleet unload {shlex.quote(name)}{suffix}"


class Candidate(NamedTuple):
    """A resident model on a registered server, with what the reclaim decision needs."""

    model: Model
    unloadable: bool


def pick_reclaimable(candidates: Iterable[Candidate], shortfall_mb: int | None) -> list[Model]:
    """Idle resident models whose unloading frees GPU memory, largest first: the fewest that cover ``shortfall_mb``,
    or all of them when even all do not (each still narrows the gap). Busy models and unknown sizes are left out."""
    usable = sorted((c.model for c in candidates
                     if c.unloadable and c.model.busy is not True and (c.model.vram_mb or 0) > 0),
                    key=lambda m: (-(m.vram_mb or 0), m.name, m.pid))
    if shortfall_mb is None or shortfall_mb <= 0:
        return usable
    out: list[Model] = []
    freed = 0
    for m in usable:
        out.append(m)
        freed += m.vram_mb or 0
        if freed >= shortfall_mb:
            break
    return out


def shortfall_mb(gpu_check: Mapping[str, object]) -> int | None:
    """How much memory a GPU denial is short of: the ledger's, or the working set's against the machine."""
    gaps: list[int] = []
    requested, available = gpu_check.get("requested_mb"), gpu_check.get("available_mb")
    if isinstance(requested, int) and isinstance(available, int) and requested > available:
        gaps.append(requested - available)
    ws = gpu_check.get("working_set")
    if isinstance(ws, Mapping):
        total, room = ws.get("total_mb"), ws.get("available_after_reserve_mb")
        if isinstance(total, int) and isinstance(room, int) and total > room:
            gaps.append(total - room)
    return max(gaps) if gaps else None


def reclaim_view(model: Model) -> dict[str, object]:
    return {"name": model.name, "pid": model.pid, "port": model.port, "vram_mb": model.vram_mb,
            "expires_at": model.expires_at, "command": unload_command(model.name, model.port)}


def expires_in_s(expires_at: str | None, now: float) -> float | None:
    """Seconds until an RFC 3339 ``expires_at`` (Ollama's, with nanoseconds and any offset), ``None`` if unreadable."""
    if not expires_at:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", expires_at.strip())
    if m is None:
        return None
    frac = (m.group(2) or "")[:7]
    zone = m.group(3) or "+00:00"
    try:
        at = datetime.fromisoformat(m.group(1) + frac + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return at.timestamp() - now


def unload_refusal(method: str, answer: Answer, model: str, timeout_s: float, key_sent: bool) -> str | None:
    """Why the server did not accept the unload request (``None``: accepted). Read from its documented replies:
    Ollama's ``done_reason: "unload"`` (or ``done``), llama-server's ``{"success": true}``, LM Studio's
    ``{"instance_id": ...}``, vLLM's HTTP 200 on ``/sleep``."""
    if answer.status == 404 and method == "vllm_sleep":
        return "/sleep is not served (vLLM exposes it only with VLLM_SERVER_DEV_MODE=1)"
    if answer.failure is None and answer.status is not None and 400 <= answer.status < 500 and answer.status not in (
            401, 403):
        return f"the server refused to unload {model} (HTTP {answer.status}{_error_message(answer)})"
    why = failure_text(answer, timeout_s, key_sent)
    if why is not None:
        return why
    if method == "vllm_sleep":
        return None
    doc = _json_object(answer.body)
    if doc is None:
        return "answered something else: not a JSON object"
    if method == "ollama_keep_alive_0":
        return None if doc.get("done_reason") == "unload" or doc.get("done") is True else (
            "answered something else: no done_reason 'unload'")
    if method == "llama_cpp_router_unload":
        return None if doc.get("success") is True else "answered something else: no success: true"
    if method == "lmstudio_unload":
        return None if isinstance(doc.get("instance_id"), str) else "answered something else: no instance_id"
    return f"unknown unload method {method}"


def _json_object(body: bytes) -> dict[str, object] | None:
    from fleet_watch import jsonio

    try:
        doc = jsonio.loads(body)
    except jsonio.BadJson:
        return None
    return doc if isinstance(doc, dict) else None


def _error_message(answer: Answer) -> str:
    """A short ``: message`` from an ``{"error": ...}`` body, if there is one."""
    doc = _json_object(answer.body[:4096])
    if doc is None:
        return ""
    err = doc.get("error")
    if isinstance(err, dict):
        err = err.get("message")
    msg = text(err, 160)
    return f": {msg}" if msg else ""
