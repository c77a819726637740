"""Reading ``tnr --json status`` (Thunder Compute's CLI, thunder-cli 2.0.x; fields in ecosystem.md section 6). Pure:
the tool's exit status and bytes in, instances out, or one ``ThunderOutputError`` that says what was wrong.

The list replaces what Fleet Watch knows about Thunder (instances absent from it are marked gone), so a partial or
doubtful answer must change nothing: any malformed element rejects the whole answer, never only that element.
"""

from __future__ import annotations

import shlex
from typing import Any, NamedTuple

from fleet_watch import jsonio

PROVIDER = "thunder"
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
MAX_INSTANCES = 10_000
_TEXT = 256

# Documented InstanceListItem fields kept as metadata (pkg/types/types.go); anything else is dropped.
METADATA_FIELDS = ("id", "uuid", "name", "status", "createdAt", "ip", "storage", "ephemeralDiskGB", "cpuCores",
                   "template", "gpuType", "numGpus", "memory", "promoted", "mode", "port", "httpPorts", "k8s",
                   "provisioningTime", "restoringTime", "snapshotSize", "lastRestart")


class ThunderOutputError(ValueError):
    """``tnr`` failed or printed something that is not its documented status list."""


class Instance(NamedTuple):
    external_id: str  # the instance's uuid where tnr gives one (stable), else its id
    short_id: str | None  # tnr's own id ("0"), what `tnr connect` and `tnr delete` take
    name: str
    status: str
    gpu_type: str | None
    gpu_count: int | None
    endpoint: str | None  # SSH address "ip:port" when tnr reports one
    metadata: dict[str, Any]

    @property
    def cleanup_cmd(self) -> str:
        """How its owner deletes it (Fleet Watch never runs this)."""
        return f"tnr delete {shlex.quote(self.short_id or self.external_id)} --yes"


def _lines(data: bytes) -> list[str]:
    out = ["".join(ch for ch in line if ch.isprintable()).strip()[:200]
           for line in data[:65536].decode("utf-8", "replace").splitlines()]
    return [line for line in out if line]


def _first_line(data: bytes) -> str:
    lines = _lines(data)
    return lines[0] if lines else ""


def _reason(data: bytes) -> str:
    """The line of a failing tool's output that says why: one that names an error, else the last one (progress
    messages such as "Fetching instances..." come first)."""
    lines = _lines(data)
    for line in lines:
        if line.lower().startswith(("error", "fatal")) or "not authenticated" in line.lower():
            return line
    return lines[-1] if lines else ""


def _text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    clean = "".join(ch for ch in str(value) if ch.isprintable()).strip()[:_TEXT]
    return clean or None


def _count(value: object) -> int | None:
    """``numGpus`` is a string in 2.0.x ("1"); accept an int too (field types may drift between versions)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 1024 else None
    if isinstance(value, str) and value.strip().isdigit():
        n = int(value.strip())
        return n if n <= 1024 else None
    return None


def _port(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and 0 < value < 65536 else None


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in METADATA_FIELDS:
        value = obj.get(key)
        if value is None or isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = value[:_TEXT]
        elif isinstance(value, list) and len(value) <= 64 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in value):
            out[key] = list(value)
    return {k: v for k, v in out.items() if k in obj}


def _instance(i: int, obj: object) -> Instance:
    if not isinstance(obj, dict):
        raise ThunderOutputError(f"tnr's instance {i} is not an object")
    uuid, short = _text(obj.get("uuid")), _text(obj.get("id"))
    if uuid is None and short is None:
        raise ThunderOutputError(f"tnr's instance {i} has neither a uuid nor an id")
    external_id = uuid or short
    assert external_id is not None
    status = _text(obj.get("status"))
    ip, port = _text(obj.get("ip")), _port(obj.get("port"))
    endpoint = None if ip is None else (f"{ip}:{port}" if port else ip)
    return Instance(external_id=external_id, short_id=short, name=_text(obj.get("name")) or f"Thunder {short or uuid}",
                    status=status.upper() if status else "UNKNOWN", gpu_type=_text(obj.get("gpuType")),
                    gpu_count=_count(obj.get("numGpus")), endpoint=endpoint, metadata=_metadata(obj))


def _json_part(text: str) -> str:
    """The JSON document: all of it, or (older versions printed "Fetching instances..." first) from the first line
    that opens a list."""
    if text.startswith(("[", "{")):
        return text
    for n, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("["):
            return "\n".join(text.splitlines()[n:])
    raise ThunderOutputError(f"tnr printed something that is not JSON: {text.splitlines()[0][:120]!r}")


def parse_status(returncode: int, stdout: bytes, stderr: bytes) -> list[Instance]:
    """The instances ``tnr --json status`` reported, or why its answer cannot be used."""
    if returncode != 0:
        why = _reason(stderr) or _reason(stdout) or "no message"
        try:
            doc = jsonio.loads(stdout)
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                why = _first_line(doc["error"].encode())
        except jsonio.BadJson:
            pass
        raise ThunderOutputError(f"tnr status failed (exit {returncode}): {why}")
    if len(stdout) > MAX_OUTPUT_BYTES:
        raise ThunderOutputError(f"tnr printed more than {MAX_OUTPUT_BYTES // (1024 * 1024)} MiB")
    try:
        text = stdout.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise ThunderOutputError(f"tnr printed bytes that are not UTF-8 (at byte {err.start})") from err
    if not text:
        raise ThunderOutputError("tnr printed nothing (an empty list is '[]')")
    try:
        doc = jsonio.loads(_json_part(text))
    except jsonio.BadJson as err:
        raise ThunderOutputError(f"tnr printed malformed JSON: {err}") from err
    if isinstance(doc, dict):
        if "error" in doc:
            raise ThunderOutputError(f"tnr reported an error: {_first_line(str(doc['error']).encode())}")
        if not all(isinstance(v, dict) for v in doc.values()):
            raise ThunderOutputError("tnr printed an object that is not a map of instances")
        doc = [{"id": key, **value} if "id" not in value else value for key, value in doc.items()]
    if not isinstance(doc, list):
        raise ThunderOutputError(f"tnr printed a JSON {type(doc).__name__}, not a list of instances")
    if len(doc) > MAX_INSTANCES:
        raise ThunderOutputError(f"tnr listed more than {MAX_INSTANCES} instances")
    out = [_instance(i, obj) for i, obj in enumerate(doc)]
    ids = [inst.external_id for inst in out]
    if len(set(ids)) != len(ids):
        raise ThunderOutputError("tnr listed the same instance twice")
    return out
