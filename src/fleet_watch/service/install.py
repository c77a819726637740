"""Installing ``fleet watch`` as an always-on service: a systemd user unit (Linux) or a LaunchAgent (macOS).

``--output PATH`` writes the definition anywhere, on any platform, and touches nothing else, so it can be
inspected. Otherwise the right platform and its tool are required (``Unavailable``, exit 7, before anything is
written), the file goes to the manager's folder, and the tool loads it. Uninstall removes exactly what install
wrote (a unit carrying our marker line, a plist with our label) after the manager has stopped it; a file that is
not ours is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from fleet_watch import __version__
from fleet_watch.atomic import write_bytes_atomic
from fleet_watch.errors import NotFound, Unavailable, UsageError
from fleet_watch.probes import tools
from fleet_watch.reports import units

Runner = Callable[[list[str]], tools.ToolResult]
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 86400.0
SERVICE_FILE_MODE = 0o644
# launchctl bootout's answers when the job is simply not loaded ("No such process", "Could not find service").
LAUNCHCTL_NOT_LOADED = (3, 113)


class Host(NamedTuple):
    """What an install needs to know about this machine and user; the CLI fills it in."""

    platform: str  # sys.platform
    user: str
    uid: int
    user_home: Path
    config_home: Path  # $XDG_CONFIG_HOME, else ~/.config
    fleet_argv: tuple[str, ...]  # how to start this `fleet` (absolute)
    env: Mapping[str, str] = MappingProxyType({})  # passed to the service (FLEET_WATCH_HOME when set)
    path_env: str = "/usr/bin:/bin:/usr/sbin:/sbin"  # PATH for the launchd job (launchd's own is minimal)

    @property
    def systemd_path(self) -> Path:
        return self.config_home / "systemd" / "user" / units.SYSTEMD_UNIT

    @property
    def launchd_path(self) -> Path:
        return self.user_home / "Library" / "LaunchAgents" / f"{units.LAUNCHD_LABEL}.plist"

    @property
    def launchd_log(self) -> Path:
        return self.user_home / "Library" / "Logs" / "fleet-watch" / "watch.log"


@dataclass(slots=True)
class Outcome:
    path: Path
    manager: str
    commands: list[list[str]] = field(default_factory=list)  # what was run, in order
    loaded: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "manager": self.manager, "commands": self.commands, "loaded": self.loaded,
                "notes": self.notes}


def _check_interval(interval: float) -> None:
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise UsageError(f"--interval must be from {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} seconds, got {interval}")


def _write(path: Path, data: bytes, *, create_parents: bool) -> None:
    try:
        if create_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data, mode=SERVICE_FILE_MODE)
    except FileNotFoundError as err:
        raise UsageError(f"cannot write {path}: directory {path.parent} does not exist") from err
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from err


def _require(host: Host, platform: str, tool: str, command: str) -> None:
    """The right platform and the manager's tool, before anything is written."""
    if not host.platform.startswith(platform):
        needs = "Linux with systemd" if platform == "linux" else "macOS"
        hint = " (--output PATH writes the file anyway)" if command.startswith("install") else ""
        raise Unavailable(f"{command} needs {needs}; this is {host.platform}{hint}")
    if tools.which(tool) is None:
        raise Unavailable(f"{command} needs {tool}, which is not on PATH")


def _step(outcome: Outcome, run: Runner, argv: list[str], failure: str) -> tools.ToolResult:
    outcome.commands.append(argv)
    result = run(argv)
    if not result.ok:
        raise Unavailable(f"{' '.join(argv)} failed: {result.reason()}; {failure}")
    return result


# -- systemd ------------------------------------------------------------------------------------------------------
def install_systemd(host: Host, *, interval: float, output: Path | None, enable: bool,
                    run: Runner = tools.run) -> Outcome:
    _check_interval(interval)
    text = units.systemd_unit(host.fleet_argv, interval, host.env, __version__)
    if output is not None:
        _write(output, text.encode(), create_parents=False)
        out = Outcome(output, "systemd")
        out.notes.append(f"not installed: copy it to {host.systemd_path}, then systemctl --user daemon-reload && "
                         f"systemctl --user enable --now {units.SYSTEMD_UNIT}")
        return out
    _require(host, "linux", "systemctl", "install-systemd")
    path = host.systemd_path
    existed = _ours_or_absent(path, _our_unit, "install-systemd")
    _write(path, text.encode(), create_parents=True)
    out = Outcome(path, "systemd")
    if enable:
        keep = f"the unit is written at {path}"
        _step(out, run, ["systemctl", "--user", "daemon-reload"], keep)
        _step(out, run, ["systemctl", "--user", "enable", "--now", units.SYSTEMD_UNIT], keep)
        if existed:  # an update: the running watch must pick up the new unit
            _step(out, run, ["systemctl", "--user", "restart", units.SYSTEMD_UNIT], keep)
        out.loaded = True
        out.notes.append(f"logs: journalctl --user -u {units.SYSTEMD_UNIT.removesuffix('.service')}")
    else:
        out.notes.append(f"not enabled: systemctl --user daemon-reload && systemctl --user enable --now "
                         f"{units.SYSTEMD_UNIT}")
    if not tools.lingering(host.user):
        out.notes.append(f"it runs while {host.user} is logged in; to start it at boot and keep it after logout: "
                         f"loginctl enable-linger {host.user}")
    return out


def uninstall_systemd(host: Host, *, run: Runner = tools.run) -> Outcome:
    _require(host, "linux", "systemctl", "uninstall-systemd")
    path = host.systemd_path
    if not _ours_or_absent(path, _our_unit, "uninstall-systemd"):
        raise NotFound(f"nothing to uninstall: {path} does not exist")
    out = Outcome(path, "systemd")
    _step(out, run, ["systemctl", "--user", "disable", "--now", units.SYSTEMD_UNIT], f"{path} is left in place")
    _remove(path)
    out.commands.append(["systemctl", "--user", "daemon-reload"])
    reload = run(["systemctl", "--user", "daemon-reload"])
    if not reload.ok:
        out.notes.append(f"systemctl --user daemon-reload failed: {reload.reason()}")
    return out


# -- launchd ------------------------------------------------------------------------------------------------------
def install_launchd(host: Host, *, interval: float, output: Path | None, load: bool,
                    run: Runner = tools.run) -> Outcome:
    _check_interval(interval)
    env = {"PATH": host.path_env, **host.env}
    doc = units.launchd_plist(host.fleet_argv, interval, env, str(host.launchd_log))
    data = units.plist_bytes(doc)
    if output is not None:
        _write(output, data, create_parents=False)
        out = Outcome(output, "launchd")
        out.notes.append(f"not installed: copy it to {host.launchd_path}, then launchctl bootstrap gui/{host.uid} "
                         f"{host.launchd_path}")
        return out
    _require(host, "darwin", "launchctl", "install-launchd")
    path = host.launchd_path
    _ours_or_absent(path, units.is_our_plist, "install-launchd")
    try:
        host.launchd_log.parent.mkdir(parents=True, exist_ok=True)  # launchd does not create the log's folder
    except OSError as err:
        raise UsageError(f"cannot create {host.launchd_log.parent}: {err.strerror}") from err
    _write(path, data, create_parents=True)
    out = Outcome(path, "launchd")
    if load:
        domain = f"gui/{host.uid}"
        out.commands.append(["launchctl", "bootout", f"{domain}/{units.LAUNCHD_LABEL}"])
        run(["launchctl", "bootout", f"{domain}/{units.LAUNCHD_LABEL}"])  # an older copy, if loaded; else a no-op
        _step(out, run, ["launchctl", "bootstrap", domain, str(path)], f"the plist is written at {path}")
        out.loaded = True
        out.notes.append(f"logs: {host.launchd_log}")
    else:
        out.notes.append(f"not loaded: launchctl bootstrap gui/{host.uid} {path}")
    return out


def uninstall_launchd(host: Host, *, run: Runner = tools.run) -> Outcome:
    _require(host, "darwin", "launchctl", "uninstall-launchd")
    path = host.launchd_path
    if not _ours_or_absent(path, units.is_our_plist, "uninstall-launchd"):
        raise NotFound(f"nothing to uninstall: {path} does not exist")
    out = Outcome(path, "launchd")
    argv = ["launchctl", "bootout", f"gui/{host.uid}/{units.LAUNCHD_LABEL}"]
    out.commands.append(argv)
    result = run(argv)
    if not result.ok and result.returncode not in LAUNCHCTL_NOT_LOADED:
        raise Unavailable(f"{' '.join(argv)} failed: {result.reason()}; {path} is left in place")
    _remove(path)
    out.notes.append(f"logs kept: {host.launchd_log}")
    return out


# -- shared -------------------------------------------------------------------------------------------------------
def _our_unit(data: bytes) -> bool:
    return units.is_our_unit(data.decode("utf-8", "replace"))


def _ours_or_absent(path: Path, is_ours: Callable[[bytes], bool], command: str) -> bool:
    """True when ``path`` holds our file, False when there is none; someone else's file is refused."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    if not is_ours(data):
        raise UsageError(f"{path} exists and was not written by fleet; {command} leaves it alone")
    return True


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise UsageError(f"cannot remove {path}: {err.strerror}") from err
