"""install-systemd / install-launchd and their uninstall-*: the files (checked by ``systemd-analyze verify`` and a
``plistlib`` round trip), refusals with exit 7 on the wrong platform or without the tool, and the manager's
commands, run against stand-ins named like the real tools (``systemctl``, ``launchctl``) on a private PATH.

launchd cannot run here (no macOS): its install and uninstall are exercised through ``service.install`` with the
platform given as data and a stand-in ``launchctl`` that answers with launchctl's exit codes; the plist itself is
checked by plistlib. The real macOS path was not run on this machine.
"""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.errors import NotFound, Unavailable, UsageError
from fleet_watch.reports import units
from fleet_watch.service import install
from tests.conftest import CliResult

STAND_IN = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
case "$*" in
  {fail}) echo "{message}" >&2; exit {code} ;;
esac
exit 0
"""


def _stand_in(bin_dir: Path, name: str, log: Path, *, fail: str = "__never__", message: str = "", code: int = 1,
              ) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text(STAND_IN.format(log=log, fail=fail, message=message, code=code))
    script.chmod(0o755)


def _run(args: list[str], *, home: Path, user_home: Path, path: str) -> CliResult:
    env = {**os.environ, "FLEET_WATCH_HOME": str(home), "HOME": str(user_home),
           "XDG_CONFIG_HOME": str(user_home / ".config"), "PATH": path}
    proc = subprocess.run([sys.executable, "-m", "fleet_watch", *args], capture_output=True, text=True, env=env,
                          timeout=60)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _verify(path: Path) -> None:
    """``systemd-analyze verify`` where it exists; where it does not, the unit's syntax and keys are checked by
    parsing (and the test says so on stderr), never skipped."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        sys.stderr.write("systemd-analyze not found: unit checked by parsing only\n")
        return
    out = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # warnings too (a misspelled key, a bad value)


def test_unit_file_verifies_and_says_what_it_runs(tmp_path: Path) -> None:
    odd = tmp_path / "dir with space and 100%"
    odd.mkdir()
    fleet = odd / "fleet"
    fleet.write_text("#!/bin/sh\nexit 0\n")
    fleet.chmod(0o755)
    text = units.systemd_unit([str(fleet)], 30.0, {"FLEET_WATCH_HOME": "/var/x $HOME 50%"}, "1.2.3")
    path = tmp_path / units.SYSTEMD_UNIT
    path.write_text(text)
    _verify(path)
    unit = _parse_unit(text)
    assert unit["Service"]["ExecStart"] == f'"{str(fleet).replace("%", "%%")}" "watch" "--interval" "30"'
    assert unit["Service"]["Environment"] == '"FLEET_WATCH_HOME=/var/x $HOME 50%%"'
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert units.is_our_unit(text)
    with pytest.raises(UsageError):
        units.systemd_unit(["/bin/fleet\nExecStartPre=/bin/evil"], 60, {}, "1")


def test_output_writes_anywhere_and_installs_nothing(fleet_home: Path, tmp_path: Path) -> None:
    user = tmp_path / "user"
    out = _run(["install-systemd", "--output", str(tmp_path / "x.service"), "--interval", "15", "--json"],
               home=fleet_home, user_home=user, path="/nonexistent")  # no systemctl reachable: not needed
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["commands"] == []
    unit = _parse_unit((tmp_path / "x.service").read_text())
    assert unit["Service"]["ExecStart"].endswith('"watch" "--interval" "15"')
    assert unit["Service"]["Environment"] == f'"FLEET_WATCH_HOME={fleet_home}"'
    _verify(tmp_path / "x.service")
    assert not (user / ".config").exists()

    out = _run(["install-launchd", "--output", str(tmp_path / "x.plist")], home=fleet_home, user_home=user,
               path="/nonexistent")
    assert out.returncode == 0, out.stderr
    doc = plistlib.loads((tmp_path / "x.plist").read_bytes())
    assert doc == plistlib.loads(units.plist_bytes(doc))  # round trip
    assert doc["Label"] == units.LAUNCHD_LABEL
    assert doc["ProgramArguments"][-3:] == ["watch", "--interval", "60"]
    assert os.path.isabs(doc["ProgramArguments"][0])
    assert doc["RunAtLoad"] is True
    assert doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["StandardOutPath"] == str(user / "Library" / "Logs" / "fleet-watch" / "watch.log")
    assert doc["EnvironmentVariables"] == {"FLEET_WATCH_HOME": str(fleet_home), "PATH": "/nonexistent"}
    assert not (user / "Library").exists()


@pytest.mark.parametrize("command", ["install-launchd", "uninstall-launchd"])
def test_launchd_on_linux_is_unavailable(fleet_home: Path, tmp_path: Path, command: str) -> None:
    out = _run([command], home=fleet_home, user_home=tmp_path, path=os.environ["PATH"])
    assert out.returncode == 7
    assert out.stderr.strip().startswith(f"Error: {command} needs macOS; this is linux")
    assert out.stderr.count("\n") == 1
    assert not (tmp_path / "Library").exists()


@pytest.mark.parametrize("command", ["install-systemd", "uninstall-systemd"])
def test_systemd_without_systemctl_is_unavailable(fleet_home: Path, tmp_path: Path, command: str) -> None:
    out = _run([command, "--json"], home=fleet_home, user_home=tmp_path, path=str(tmp_path / "empty-bin"))
    assert out.returncode == 7
    assert json.loads(out.stdout)["reason"] == f"{command} needs systemctl, which is not on PATH"
    assert not (tmp_path / ".config").exists()


def test_systemd_install_update_uninstall_with_a_stand_in(fleet_home: Path, tmp_path: Path) -> None:
    bin_dir, log, user = tmp_path / "bin", tmp_path / "systemctl.log", tmp_path / "user"
    _stand_in(bin_dir, "systemctl", log)
    path = f"{bin_dir}:{os.environ['PATH']}"
    unit_path = user / ".config" / "systemd" / "user" / units.SYSTEMD_UNIT

    out = _run(["install-systemd", "--interval", "45"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"Written: {unit_path}"
    assert "loginctl enable-linger" in out.stdout
    assert stat.S_IMODE(unit_path.stat().st_mode) == 0o644
    _verify(unit_path)
    assert log.read_text().splitlines() == ["--user daemon-reload", f"--user enable --now {units.SYSTEMD_UNIT}"]

    log.unlink()
    out = _run(["install-systemd", "--interval", "90", "--json"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["loaded"] is True
    assert log.read_text().splitlines() == ["--user daemon-reload", f"--user enable --now {units.SYSTEMD_UNIT}",
                                            f"--user restart {units.SYSTEMD_UNIT}"]  # an update restarts it
    assert '"--interval" "90"' in unit_path.read_text()

    log.unlink()
    out = _run(["uninstall-systemd"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 0, out.stderr
    assert not unit_path.exists()
    assert log.read_text().splitlines() == [f"--user disable --now {units.SYSTEMD_UNIT}", "--user daemon-reload"]
    out = _run(["uninstall-systemd"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 3
    assert "nothing to uninstall" in out.stderr


def test_systemd_no_enable_and_a_failing_manager(fleet_home: Path, tmp_path: Path) -> None:
    bin_dir, log, user = tmp_path / "bin", tmp_path / "systemctl.log", tmp_path / "user"
    _stand_in(bin_dir, "systemctl", log, fail="*enable*|*disable*", message="Failed to connect to bus: No medium found")
    path = f"{bin_dir}:{os.environ['PATH']}"
    unit_path = user / ".config" / "systemd" / "user" / units.SYSTEMD_UNIT

    out = _run(["install-systemd", "--no-enable"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 0, out.stderr
    assert unit_path.exists()
    assert not log.exists()  # --no-enable runs nothing

    out = _run(["install-systemd"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 7
    assert "Failed to connect to bus" in out.stderr
    assert f"the unit is written at {unit_path}" in out.stderr
    out = _run(["uninstall-systemd"], home=fleet_home, user_home=user, path=path)
    assert out.returncode == 7
    assert unit_path.exists()  # not stopped, so not removed


def test_someone_elses_unit_is_never_touched(fleet_home: Path, tmp_path: Path) -> None:
    bin_dir, log, user = tmp_path / "bin", tmp_path / "systemctl.log", tmp_path / "user"
    _stand_in(bin_dir, "systemctl", log)
    path = f"{bin_dir}:{os.environ['PATH']}"
    unit_path = user / ".config" / "systemd" / "user" / units.SYSTEMD_UNIT
    unit_path.parent.mkdir(parents=True)
    unit_path.write_text("[Service]\nExecStart=/usr/bin/something-else\n")
    for command in ("install-systemd", "uninstall-systemd"):
        out = _run([command], home=fleet_home, user_home=user, path=path)
        assert out.returncode == 2
        assert "was not written by fleet" in out.stderr
    assert unit_path.read_text() == "[Service]\nExecStart=/usr/bin/something-else\n"
    assert not log.exists()


@pytest.mark.parametrize("interval", ["0", "0.5", "86401", "nan"])
def test_a_bad_interval_is_a_usage_error(fleet_home: Path, tmp_path: Path, interval: str) -> None:
    out = _run(["install-systemd", "--output", str(tmp_path / "u.service"), "--interval", interval],
               home=fleet_home, user_home=tmp_path, path=os.environ["PATH"])
    assert out.returncode == 2
    assert not (tmp_path / "u.service").exists()


def _mac(tmp_path: Path) -> install.Host:
    return install.Host(platform="darwin", user="me", uid=501, user_home=tmp_path / "mac",
                        config_home=tmp_path / "mac" / ".config", fleet_argv=("/opt/fleet/bin/fleet",),
                        env={"FLEET_WATCH_HOME": "/Users/me/.fleet-watch"}, path_env="/opt/fleet/bin:/usr/bin")


def test_launchd_install_and_uninstall_with_a_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "launchctl.log"
    _stand_in(bin_dir, "launchctl", log, fail="bootout*", message="Boot-out failed: 3: No such process", code=3)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    host = _mac(tmp_path)

    done = install.install_launchd(host, interval=60, output=None, load=True)
    plist = tmp_path / "mac" / "Library" / "LaunchAgents" / f"{units.LAUNCHD_LABEL}.plist"
    assert done.path == plist
    assert done.loaded
    doc = plistlib.loads(plist.read_bytes())
    assert doc["ProgramArguments"] == ["/opt/fleet/bin/fleet", "watch", "--interval", "60"]
    assert doc["EnvironmentVariables"] == {"FLEET_WATCH_HOME": "/Users/me/.fleet-watch",
                                           "PATH": "/opt/fleet/bin:/usr/bin"}
    assert (tmp_path / "mac" / "Library" / "Logs" / "fleet-watch").is_dir()
    assert log.read_text().splitlines() == [f"bootout gui/501/{units.LAUNCHD_LABEL}", f"bootstrap gui/501 {plist}"]

    log.unlink()
    gone = install.uninstall_launchd(host)  # bootout answers "not loaded" (3): still removed
    assert not plist.exists()
    assert gone.commands == [["launchctl", "bootout", f"gui/501/{units.LAUNCHD_LABEL}"]]
    with pytest.raises(NotFound):
        install.uninstall_launchd(host)


def test_launchd_failures_leave_the_plist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "launchctl.log"
    _stand_in(bin_dir, "launchctl", log, fail="*", message="Bootstrap failed: 5: Input/output error", code=5)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    host = _mac(tmp_path)
    with pytest.raises(Unavailable, match="Input/output error; the plist is written at"):
        install.install_launchd(host, interval=60, output=None, load=True)
    with pytest.raises(Unavailable, match="is left in place"):
        install.uninstall_launchd(host)
    assert host.launchd_path.exists()

    done = install.install_launchd(host, interval=60, output=None, load=False)
    assert done.commands == []
    assert not done.loaded

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(Unavailable, match="needs launchctl"):
        install.install_launchd(host, interval=60, output=None, load=True)


def test_service_definitions_refuse_line_breaks(tmp_path: Path) -> None:
    host: Any = _mac(tmp_path)
    bad = host._replace(env={"FLEET_WATCH_HOME": "/x\n<key>Evil</key>"})
    with pytest.raises(UsageError):
        install.install_launchd(bad, interval=60, output=tmp_path / "x.plist", load=False)
    assert not (tmp_path / "x.plist").exists()
