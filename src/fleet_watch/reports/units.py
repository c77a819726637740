"""The service definitions that keep ``fleet watch`` running: a systemd user unit and a launchd LaunchAgent.

Text and data out, no I/O. Arguments are quoted for systemd (double quotes, backslash escapes, ``%`` specifiers
and ``$`` expansion neutralised), so a path with spaces or a ``%`` runs as written.
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping, Sequence
from typing import Any

from fleet_watch.errors import UsageError

SYSTEMD_UNIT = "fleet-watch.service"
SYSTEMD_MARKER = "# Installed by `fleet install-systemd`"
LAUNCHD_LABEL = "io.fleet-watch.watch"
STOP_TIMEOUT_S = 30


def watch_argv(fleet_argv: Sequence[str], interval: float) -> list[str]:
    return [*fleet_argv, "watch", "--interval", f"{interval:g}"]


def _no_newlines(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise UsageError(f"cannot put {value!r} in a service definition: it holds a line break or NUL")
    return value


def _systemd_quoted(value: str, *, expand: bool) -> str:
    """One word for ExecStart= (``expand``: ``$`` is variable expansion there) or a value for Environment=."""
    out = _no_newlines(value).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if expand:
        out = out.replace("$", "$$")
    return f'"{out}"'


def systemd_unit(fleet_argv: Sequence[str], interval: float, env: Mapping[str, str], version: str) -> str:
    """A user unit: one long-running ``fleet watch`` (it keeps its process table and NVML handle warm), restarted
    if it fails, stopped with SIGTERM (``watch`` finishes its cycle and exits 0)."""
    exec_start = " ".join(_systemd_quoted(a, expand=True) for a in watch_argv(fleet_argv, interval))
    lines = [
        f"{SYSTEMD_MARKER} (Fleet Watch {version}); `fleet uninstall-systemd` removes it.",
        "[Unit]",
        "Description=Fleet Watch: registry of AI workloads (fleet watch)",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        *(f"Environment={_systemd_quoted(f'{k}={v}', expand=False)}" for k, v in sorted(env.items())),
        "Restart=on-failure",
        "RestartSec=5",
        "Nice=10",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def is_our_unit(text: str) -> bool:
    return text.startswith(SYSTEMD_MARKER)


def launchd_plist(fleet_argv: Sequence[str], interval: float, env: Mapping[str, str], log_path: str,
                  ) -> dict[str, Any]:
    """A LaunchAgent running ``fleet watch`` continuously: started at load, restarted only if it crashes
    (``KeepAlive.SuccessfulExit = false``: a clean SIGTERM exit stays stopped), in the background, logging to
    ``log_path``. launchd gives jobs a minimal PATH, so the caller's is passed in ``env``."""
    for item in (*fleet_argv, log_path, *env, *env.values()):
        _no_newlines(item)
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": watch_argv(fleet_argv, interval),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "Nice": 10,
        "ThrottleInterval": 10,
        "ExitTimeOut": STOP_TIMEOUT_S,
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
        "EnvironmentVariables": dict(sorted(env.items())),
    }


def plist_bytes(doc: Mapping[str, Any]) -> bytes:
    return plistlib.dumps(dict(doc), fmt=plistlib.FMT_XML, sort_keys=True)


def is_our_plist(data: bytes) -> bool:
    try:
        doc = plistlib.loads(data)
    except Exception:  # noqa: BLE001 - plistlib raises several unrelated types for a damaged file
        return False
    return isinstance(doc, dict) and doc.get("Label") == LAUNCHD_LABEL
