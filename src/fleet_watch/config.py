"""Where state lives and what ``config.json`` says: resolved once at the edge, validated, then passed down.

The user's file is merged over the defaults (objects key by key, everything else replaced). Anything
malformed is a ``ConfigError`` naming the key: there is no silent fallback to a default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

from fleet_watch import jsonio
from fleet_watch.atomic import write_text_atomic
from fleet_watch.errors import ConfigError

HOME_ENV = "FLEET_WATCH_HOME"
CONFIG_NAME = "config.json"
DB_NAME = "registry.db"

DEFAULT_PREFERRED_PORTS = [8000, 8001, 8080, 8100, 8888, 8899, 11434]

# Matched case-insensitively against the *full* command line. Ports are whatever the process really
# listens on (discovery asks the OS); gpu_mb_default is the last resort after NVML and the estimator.
DEFAULT_PATTERNS: list[dict[str, Any]] = [
    {"name_template": "Ollama", "process_match": r"(^|/)ollama(\s+|$).*\b(serve|runner)\b",
     "workstream": "ollama", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "vLLM", "process_match": r"(\bvllm\b.*\bserve\b|vllm\.entrypoints)",
     "workstream": "vllm", "priority": 3, "gpu_mb_default": 16384},
    {"name_template": "llama.cpp server", "process_match": r"(^|/)llama-server(\s|$)",
     "workstream": "llama-cpp", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "llama-cpp-python server", "process_match": r"-m\s+llama_cpp\.server\b",
     "workstream": "llama-cpp", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "MLX-LM server", "process_match": r"mlx_lm[.\s]+server\b",
     "workstream": "mlx", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "MLX-VLM server", "process_match": r"mlx_vlm[.\s]+server\b",
     "workstream": "mlx", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "Candle/Cake", "process_match": r"(^|/)(cake-cli|cake|candle[\w-]*)(\s|$)",
     "workstream": "candle", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "SGLang", "process_match": r"sglang\.launch_server\b",
     "workstream": "sglang", "priority": 3, "gpu_mb_default": 16384},
    {"name_template": "HF TGI", "process_match": r"(^|/)text-generation-launcher(\s|$)",
     "workstream": "tgi", "priority": 3, "gpu_mb_default": 16384},
    {"name_template": "LM Studio", "process_match": r"(lm-studio|LM Studio|(^|/)lms\s+server)",
     "workstream": "lmstudio", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "koboldcpp", "process_match": r"koboldcpp",
     "workstream": "koboldcpp", "priority": 3, "gpu_mb_default": 4096},
    {"name_template": "ComfyUI", "process_match": r"(comfyui|ComfyUI/main\.py|(^|\s)main\.py\s.*--listen)",
     "workstream": "comfyui", "priority": 2, "gpu_mb_default": 8192},
    {"name_template": "Experiment runner",
     "process_match": r"(torchrun|accelerate\s+launch|deepspeed\s"
                      r"|python[\d.]*\s+\S*(train|finetune|experiment)\w*\.py)",
     "workstream": "experiments", "priority": 2, "gpu_mb_default": 8192},
]

DEFAULT_SESSION_PATTERNS: list[dict[str, str]] = [
    {"name": "Claude Code", "kind": "claude-code", "process_match": r"(^|/)claude(\s|$)"},
    {"name": "Codex", "kind": "codex", "process_match": r"(^|/)codex(\s|$)"},
    {"name": "Gemini CLI", "kind": "gemini", "process_match": r"(^|/)gemini(\s|$)"},
    {"name": "Aider", "kind": "aider", "process_match": r"(^|/)aider(\s|$)"},
    {"name": "Cursor Agent", "kind": "cursor-agent", "process_match": r"(^|/)cursor-agent(\s|$)"},
    {"name": "OpenCode", "kind": "opencode", "process_match": r"(^|/)opencode(\s|$)"},
]

DEFAULT_IDLE_PATTERNS = [
    "reranker", r"socat.*TCP-LISTEN", r"mlx_lm.*server", r"mlx_vlm.*server", "uvicorn", "gunicorn", r"vllm.*serve",
]

# The README's multipliers: transient memory (KV cache + activations) is multiplied by these.
DEFAULT_FRAMEWORK_OVERHEAD = {"candle": 2.0, "vllm": 1.4, "mlx": 1.3, "ollama": 1.1, "llama_cpp": 1.1}

# Pages written out per second, sustained, that mean the GPU's working set no longer fits (Apple unified memory).
DEFAULT_THRASH_PAGEOUTS_PER_S = 1000.0


def default_reserve_mb(total_mb: int) -> int:
    """An eighth of the pool, at least 2 GiB and at most 16 GiB, and never more than half of it.

    Continuous in ``total_mb`` (the reference's clamp jumped from 2 GiB to 16 GiB at 16 GiB of RAM) and
    it reproduces the README: 8 GiB -> 2048 MB reserve, 128 GiB -> 16384 MB.
    """
    return max(0, min(max(2048, total_mb // 8), 16384, total_mb // 2))


def vram_reserve_mb(total_mb: int) -> int:
    """Dedicated NVIDIA memory: a twentieth, at least 512 MB, never more than half. Nothing but CUDA contexts
    lives there, and vLLM's default ``gpu_memory_utilization`` of 0.9 must fit (an eighth would refuse it)."""
    return max(0, min(max(512, total_mb // 20), total_mb // 2))


class WorkloadPattern(NamedTuple):
    """One ``patterns`` entry: a command-line regex and what a matching process is registered as.

    ``gpu_mb_default`` is a guess shown as an estimate (it never denies anything by itself); ``gpu_mb_reserved``,
    when the user sets it, is a reservation: a firm claim held for every matching process until it is measured.
    """

    name_template: str
    process_match: str
    workstream: str
    priority: int = 3
    gpu_mb_default: int = 0
    gpu_mb_reserved: int | None = None


class SessionPatternSetting(NamedTuple):
    name: str
    kind: str
    process_match: str


class PressureThresholds(NamedTuple):
    elevated: float = 70.0
    critical: float = 85.0


class Settings(NamedTuple):
    """The validated configuration: every key that code reads is a typed field here (nothing reads the raw file)."""

    home: Path
    gpu_total_mb: int
    gpu_reserve_mb: int
    preferred_ports: tuple[int, ...] = tuple(DEFAULT_PREFERRED_PORTS)
    physical_ram_mb: int | None = None
    # Per-device budgets (device index -> (total MB, reserve MB)); empty means the single pool.
    gpu_devices: Mapping[str, tuple[int, int]] = MappingProxyType({})
    patterns: tuple[WorkloadPattern, ...] = ()
    session_patterns: tuple[SessionPatternSetting, ...] = ()
    idle_patterns: tuple[str, ...] = ()
    idle_cpu_threshold: float = 1.0
    pressure_thresholds: PressureThresholds = PressureThresholds()
    framework_overhead: Mapping[str, float] = MappingProxyType(DEFAULT_FRAMEWORK_OVERHEAD)
    gpu_pageout_thrash_threshold: float = DEFAULT_THRASH_PAGEOUTS_PER_S
    changelog_max_bytes: int = 1 << 20  # one generation of state_changelog.jsonl; two are kept
    server_api_keys: Mapping[int, str] = MappingProxyType({})  # port -> key; never printed or logged
    server_api_timeout_s: float = 0.8  # one round of questions to the model servers
    thunder_tnr_timeout_s: float = 10.0
    thunder_claim_ttl_s: int = 600  # an external claim lives this long past its claim or last heartbeat
    hooks_on_error: str = "deny"  # hooks.on_error: what `fleet hook` does when it cannot decide ("deny" or "warn")
    warnings: tuple[str, ...] = ()  # unknown keys, each with the nearest known one

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME


def resolve_home(environ: Mapping[str, str]) -> Path:
    value = environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser().absolute()
    return Path.home() / ".fleet-watch"


def ensure_home(home: Path) -> None:
    """Create the state directory with mode 0700, and tighten one of ours that someone loosened.

    A directory that another user owns is left as it is: its owner decides who may read it, and this user can
    still read the registry (read-only commands work) if the modes allow.
    """
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create state directory {home}: {err.strerror}") from err
    try:
        st = home.stat()
    except OSError as err:
        raise ConfigError(f"cannot read state directory {home}: {err.strerror}") from err
    if not home.is_dir():
        raise ConfigError(f"state directory {home} is not a directory")
    if st.st_uid != os.geteuid():
        return
    if st.st_mode & 0o077:
        try:
            home.chmod(0o700)
        except OSError as err:
            raise ConfigError(f"cannot make state directory {home} private (mode 0700): {err.strerror}") from err


def write_json_atomic(path: Path, document: object) -> None:
    """``document`` as indented JSON through ``atomic.write_text_atomic``: readers never see half a file."""
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")


def default_document(gpu_total_mb: int) -> dict[str, Any]:
    return {
        "gpu_total_mb": gpu_total_mb,
        "gpu_reserve_mb": default_reserve_mb(gpu_total_mb),
        "preferred_ports": list(DEFAULT_PREFERRED_PORTS),
        "patterns": [dict(p) for p in DEFAULT_PATTERNS],
        "session_patterns": [dict(p) for p in DEFAULT_SESSION_PATTERNS],
        "idle_patterns": list(DEFAULT_IDLE_PATTERNS),
        "idle_cpu_threshold": 1.0,
        "pressure_thresholds": {"elevated": 70, "critical": 85},
        "gpu_estimator": {"framework_overhead": dict(DEFAULT_FRAMEWORK_OVERHEAD)},
    }


def merge(defaults: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key by key (recursively); lists and scalars from the user replace the default."""
    out = dict(defaults)
    for key, value in user.items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            out[key] = merge(base, value)
        else:
            out[key] = value
    return out


# What detection may return: the pool size alone, or the pool size and each NVIDIA device's VRAM.
Detected = int | tuple[int, Mapping[str, int]]


def _split(detected: Detected) -> tuple[int, Mapping[str, int]]:
    return (detected, {}) if isinstance(detected, int) else detected


def load_settings(home: Path, detect_total_mb: Callable[[], Detected]) -> Settings:
    """Read ``config.json`` (writing the defaults on first run), merge, validate.

    ``detect_total_mb`` is called only when the pool size is not in the file yet: first run, or a user
    file that leaves ``gpu_total_mb`` out.
    """
    path = home / CONFIG_NAME
    try:
        text: bytes | None = path.read_bytes()
    except FileNotFoundError:
        text = None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err

    if text is None:
        ensure_home(home)
        detected_total, devices = _split(detect_total_mb())
        document = default_document(_positive_int(detected_total, "gpu_total_mb (detected)"))
        if devices:  # the pool is NVIDIA VRAM
            document["gpu_reserve_mb"] = vram_reserve_mb(document["gpu_total_mb"])
        if len(devices) > 1:  # one budget per device; with one device or none the single pool is enough
            document["gpu_devices"] = {
                index: {"total_mb": mb, "reserve_mb": vram_reserve_mb(mb)} for index, mb in devices.items()
            }
        try:
            write_json_atomic(path, document)
        except OSError as err:
            raise ConfigError(f"cannot write {path}: {err.strerror}") from err
        return settings_from_document(home, document)

    try:
        user = jsonio.loads(text)
    except jsonio.BadJson as err:
        raise ConfigError(f"{path}: {err}") from err
    if not isinstance(user, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(user).__name__}")
    total = user.get("gpu_total_mb")
    vram = False
    if total is None:
        total, detected_devices = _split(detect_total_mb())
        vram = bool(detected_devices)
    merged = merge(default_document(total if _is_int(total) and total > 0 else 1), user)
    merged["gpu_total_mb"] = total
    if "gpu_reserve_mb" not in user and _is_int(total) and total > 0:
        merged["gpu_reserve_mb"] = vram_reserve_mb(total) if vram else default_reserve_mb(total)
    return settings_from_document(home, merged)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive_int(value: object, key: str) -> int:
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"config key {key!r} must be a positive integer, got {_show(value)}")
    return value


def _shipped_regexes() -> frozenset[str]:
    return frozenset([p["process_match"] for p in DEFAULT_PATTERNS] + [p["process_match"] for p in
                     DEFAULT_SESSION_PATTERNS] + DEFAULT_IDLE_PATTERNS)


def _regex(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key {key!r} must be a non-empty regular expression string")
    if value in _SHIPPED_REGEXES:
        return value  # our own defaults, compiled by the tests: every command need not compile them again
    try:
        re.compile(value)
    except (re.error, RecursionError, OverflowError) as err:
        raise ConfigError(f"config key {key!r} is not a valid regular expression: {err}") from err
    return value


# Every top-level key that config.json may hold. Anything else is reported (with the nearest known key), not used.
KNOWN_KEYS = frozenset({
    "gpu_total_mb", "gpu_reserve_mb", "preferred_ports", "physical_ram_mb", "patterns", "session_patterns",
    "idle_patterns", "idle_cpu_threshold", "pressure_thresholds", "gpu_estimator", "gpu_devices",
    "gpu_pageout_thrash_threshold", "changelog_max_bytes", "server_api_keys", "server_api_timeout_s",
    "thunder_tnr_timeout_s", "thunder_claim_ttl_s",
    "hooks",  # {"on_error": "deny"|"warn"}: read by service/hooks.py on_error_policy (fleet hook)
})
_PATTERN_KEYS = frozenset({"name_template", "process_match", "workstream", "priority", "gpu_mb_default",
                           "gpu_mb_reserved"})


def settings_from_document(home: Path, doc: Mapping[str, Any]) -> Settings:
    """Validate a merged document into ``Settings``; any wrong type or range is a ``ConfigError`` naming its key."""
    total = _positive_int(doc.get("gpu_total_mb"), "gpu_total_mb")
    reserve = doc.get("gpu_reserve_mb")
    if not _is_int(reserve) or reserve < 0:
        raise ConfigError(f"config key 'gpu_reserve_mb' must be an integer >= 0, got {_show(reserve)}")
    if reserve >= total:
        raise ConfigError(f"config key 'gpu_reserve_mb' ({reserve}) must be less than gpu_total_mb ({total})")

    ports = doc.get("preferred_ports", DEFAULT_PREFERRED_PORTS)
    if not isinstance(ports, list) or not all(_is_int(p) and 1 <= p <= 65535 for p in ports):
        raise ConfigError("config key 'preferred_ports' must be a list of integers between 1 and 65535")

    ram_value = doc.get("physical_ram_mb")
    ram = None if ram_value is None else _positive_int(ram_value, "physical_ram_mb")

    pressure = doc.get("pressure_thresholds", {})
    if not isinstance(pressure, dict):
        raise ConfigError("config key 'pressure_thresholds' must be an object")
    elevated = _number(pressure.get("elevated", 70), "pressure_thresholds.elevated", 0, 100)
    critical = _number(pressure.get("critical", 85), "pressure_thresholds.critical", 0, 100)
    if elevated > critical:
        raise ConfigError("config key 'pressure_thresholds': 'elevated' must not exceed 'critical'")

    estimator = doc.get("gpu_estimator", {})
    if not isinstance(estimator, dict):
        raise ConfigError("config key 'gpu_estimator' must be an object")
    overhead = estimator.get("framework_overhead", DEFAULT_FRAMEWORK_OVERHEAD)
    if not isinstance(overhead, dict):
        raise ConfigError("config key 'gpu_estimator.framework_overhead' must be an object")
    multipliers = {str(name): _number(mult, f"gpu_estimator.framework_overhead.{name}", 1.0, 100.0)
                   for name, mult in overhead.items()}

    idle = doc.get("idle_patterns", [])
    if not isinstance(idle, list):
        raise ConfigError("config key 'idle_patterns' must be a list of regular expressions")
    hooks = doc.get("hooks", {})
    if not isinstance(hooks, dict) or hooks.get("on_error", "deny") not in ("deny", "warn"):
        raise ConfigError("config key 'hooks.on_error' must be \"deny\" or \"warn\" (in an object 'hooks')")
    return Settings(
        home=home,
        gpu_total_mb=total,
        gpu_reserve_mb=reserve,
        preferred_ports=tuple(ports),
        physical_ram_mb=ram,
        gpu_devices=_validate_devices(doc.get("gpu_devices", {})),
        patterns=_patterns(doc.get("patterns", [])),
        session_patterns=_session_patterns(doc.get("session_patterns", [])),
        idle_patterns=tuple(_regex(pat, f"idle_patterns[{i}]") for i, pat in enumerate(idle)),
        idle_cpu_threshold=_number(doc.get("idle_cpu_threshold", 1.0), "idle_cpu_threshold", 0, 100_000,
                                   unit=" (percent of a core)"),
        pressure_thresholds=PressureThresholds(float(elevated), float(critical)),
        framework_overhead=multipliers,
        gpu_pageout_thrash_threshold=_number(doc.get("gpu_pageout_thrash_threshold", DEFAULT_THRASH_PAGEOUTS_PER_S),
                                             "gpu_pageout_thrash_threshold", 1, 10_000_000, unit=" (pages per second)"),
        changelog_max_bytes=_int_range(doc.get("changelog_max_bytes", 1 << 20), "changelog_max_bytes", 4096, 1 << 30),
        server_api_keys=_api_keys(doc.get("server_api_keys", {})),
        server_api_timeout_s=_number(doc.get("server_api_timeout_s", 0.8), "server_api_timeout_s", 0.05, 10,
                                     unit=" seconds"),
        thunder_tnr_timeout_s=_number(doc.get("thunder_tnr_timeout_s", 10.0), "thunder_tnr_timeout_s", 0.1, 300,
                                      unit=" seconds"),
        thunder_claim_ttl_s=_int_range(doc.get("thunder_claim_ttl_s", 600), "thunder_claim_ttl_s", 10, 86400),
        hooks_on_error=str(hooks.get("on_error", "deny")),
        warnings=_unknown_keys(doc),
    )


def _api_keys(value: object) -> dict[int, str]:
    """``server_api_keys``: port -> key. Error messages name the key's port, never the key."""
    if not isinstance(value, dict):
        raise ConfigError("config key 'server_api_keys' must be an object mapping a port to its API key")
    out: dict[int, str] = {}
    for port, key in value.items():
        where = f"server_api_keys.{str(port)[:20]}"
        if not (isinstance(port, str) and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"config key {where!r}: the name must be a port number from 1 to 65535")
        if not isinstance(key, str) or not key.strip() or len(key) > 4096 or not key.isprintable():
            raise ConfigError(f"config key {where!r} must be a non-empty printable string (the server's API key)")
        out[int(port)] = key
    return out


def _patterns(value: object) -> tuple[WorkloadPattern, ...]:
    if not isinstance(value, list):
        raise ConfigError("config key 'patterns' must be a list of objects")
    out = []
    for i, pat in enumerate(value):
        where = f"patterns[{i}]"
        if not isinstance(pat, dict):
            raise ConfigError(f"config key {where!r} must be an object")
        texts = {}
        for text_key in ("name_template", "workstream"):
            if not isinstance(pat.get(text_key), str) or not pat[text_key]:
                raise ConfigError(f"config key '{where}.{text_key}' must be a non-empty string")
            texts[text_key] = pat[text_key]
        prio = pat.get("priority", 3)
        if not _is_int(prio) or not 1 <= prio <= 5:
            raise ConfigError(f"config key '{where}.priority' must be an integer from 1 to 5")
        gpu = pat.get("gpu_mb_default", 0)
        if not _is_int(gpu) or gpu < 0:
            raise ConfigError(f"config key '{where}.gpu_mb_default' must be an integer >= 0")
        reserved = pat.get("gpu_mb_reserved")
        if reserved is not None and (not _is_int(reserved) or reserved < 0):
            raise ConfigError(f"config key '{where}.gpu_mb_reserved' must be an integer >= 0")
        out.append(WorkloadPattern(
            name_template=texts["name_template"], process_match=_regex(pat.get("process_match"),
                                                                       f"{where}.process_match"),
            workstream=texts["workstream"], priority=prio, gpu_mb_default=gpu, gpu_mb_reserved=reserved))
    return tuple(out)


def _session_patterns(value: object) -> tuple[SessionPatternSetting, ...]:
    if not isinstance(value, list):
        raise ConfigError("config key 'session_patterns' must be a list of objects")
    out = []
    for i, pat in enumerate(value):
        where = f"session_patterns[{i}]"
        if not isinstance(pat, dict) or not isinstance(pat.get("kind"), str) or not isinstance(pat.get("name"), str):
            raise ConfigError(f"config key {where!r} must be an object with string 'name' and 'kind'")
        out.append(SessionPatternSetting(name=pat["name"], kind=pat["kind"],
                                         process_match=_regex(pat.get("process_match"), f"{where}.process_match")))
    return tuple(out)


def _int_range(value: object, key: str, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise ConfigError(f"config key {key!r} must be an integer from {low} to {high}, got {_show(value)}")
    return value


def _number(value: object, key: str, low: float, high: float, unit: str = "") -> float:
    if not _is_number(value) or not low <= value <= high:
        raise ConfigError(f"config key {key!r} must be a number from {low:g} to {high:g}{unit}, got {_show(value)}")
    return float(value)


def _show(value: object) -> str:
    """A config value quoted for an error message, never unbounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_keys(doc: Mapping[str, Any]) -> tuple[str, ...]:
    unknown = [str(k) for k in doc if k not in KNOWN_KEYS]
    patterns = doc.get("patterns")
    if isinstance(patterns, list):
        unknown += [f"patterns[{i}].{k}" for i, p in enumerate(patterns) if isinstance(p, dict)
                    for k in p if k not in _PATTERN_KEYS]
    if not unknown:
        return ()
    import difflib

    out = []
    for key in unknown:
        leaf = key.rsplit(".", 1)[-1]
        pool = _PATTERN_KEYS if key.startswith("patterns[") else KNOWN_KEYS
        near = difflib.get_close_matches(leaf, sorted(pool), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        out.append(f"config.json: unknown key {_show(key)} is ignored{hint}")
    return tuple(out)


def _validate_devices(value: object) -> dict[str, tuple[int, int]]:
    """``gpu_devices``: {"0": {"total_mb": N, "reserve_mb": R}, ...} with 0 <= R < N."""
    if not isinstance(value, dict):
        raise ConfigError("config key 'gpu_devices' must be an object mapping device index to a budget")
    out: dict[str, tuple[int, int]] = {}
    for index, budget in value.items():
        where = f"gpu_devices.{index}"
        if not (str(index).isascii() and str(index).isdigit()) or len(str(index)) > 4:
            raise ConfigError(f"config key {where!r}: device index must be a non-negative integer")
        if not isinstance(budget, dict):
            raise ConfigError(f"config key {where!r} must be an object with total_mb and reserve_mb")
        total = _positive_int(budget.get("total_mb"), f"{where}.total_mb")
        reserve = budget.get("reserve_mb", vram_reserve_mb(total))
        if not _is_int(reserve) or not 0 <= reserve < total:
            raise ConfigError(f"config key '{where}.reserve_mb' must be an integer >= 0 and below total_mb")
        out[str(int(index))] = (total, reserve)
    return out


_SHIPPED_REGEXES = _shipped_regexes()
