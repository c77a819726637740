"""The parent chain of a process, as the ownership rule needs it (``core.ownership.ChainFacts``).

Linux reads ``/proc/<pid>/stat`` (parent, process group, session) and ``/proc/<pid>/cgroup`` (the systemd unit)
directly, under an injectable root; elsewhere psutil and ``os.getsid``/``os.getpgid`` give the same facts, and on
macOS ``launchctl list`` names the launchd jobs (a job's main process is never an orphan). Nothing is decided here:
unreadable facts are ``None``, never an exception.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from fleet_watch.core import liveness
from fleet_watch.core.ownership import ChainFacts, ProcessNode, unit_from_cgroup
from fleet_watch.probes.processes import process_facts

MAX_DEPTH = 64  # ancestors read at most (a chain is rarely deeper than a dozen; a loop must not spin)
LAUNCHCTL_TIMEOUT_S = 5.0


class _Stat(NamedTuple):
    ppid: int
    pgid: int
    sid: int
    name: str
    zombie: bool


def _read_stat(proc: Path, pid: int) -> _Stat | None:
    try:
        data = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    close = data.rfind(b")")
    fields = data[close + 2:].split()
    try:
        return _Stat(ppid=int(fields[1]), pgid=int(fields[2]), sid=int(fields[3]),
                     name=data[data.find(b"(") + 1:close].decode("utf-8", "replace"),
                     zombie=fields[0] in (b"Z", b"X"))
    except (IndexError, ValueError):
        return None


def _read_unit(proc: Path, pid: int) -> str | None:
    try:
        return unit_from_cgroup((proc / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def parse_launchctl_list(text: str) -> dict[int, str]:
    """``launchctl list`` (``PID<TAB>Status<TAB>Label`` per line, ``-`` for a job that is not running) to
    {pid: label}. Lines that are not three fields with a numeric PID are skipped."""
    out: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].isdigit() and parts[2]:
            out[int(parts[0])] = parts[2][:200]
    return out


class AncestryProbe:
    """Reads parent chains. Create one per command: the launchd job list is asked once."""

    def __init__(self, root: Path | None = None) -> None:
        self.proc = (root or Path("/")) / "proc"
        self.is_linux = sys.platform.startswith("linux")
        self._launchd: dict[int, str] | None = None
        # Ancestors are shared by many processes (one shell, one agent, init): read once per probe (one command).
        self._stats: dict[int, _Stat | None] = {}
        self._nodes: dict[int, ProcessNode] = {}

    def facts(self, pid: int, start_time: float | None = None) -> ChainFacts | None:
        """The chain of ``pid`` now; None when it cannot be read or (with ``start_time``) is another process."""
        if self.is_linux:
            return self._linux(pid, start_time)
        return self._portable(pid, start_time)

    # -- Linux -----------------------------------------------------------------------------------------------------
    def _node(self, pid: int, st: _Stat) -> ProcessNode:
        return ProcessNode(pid=pid, ppid=st.ppid, name=st.name, sid=st.sid, pgid=st.pgid,
                           unit=_read_unit(self.proc, pid))

    def _stat(self, pid: int) -> _Stat | None:
        if pid not in self._stats:
            self._stats[pid] = _read_stat(self.proc, pid)
        return self._stats[pid]

    def _parent_node(self, pid: int, st: _Stat) -> ProcessNode:
        if pid not in self._nodes:
            self._nodes[pid] = self._node(pid, st)
        return self._nodes[pid]

    def _leader_alive(self, leader: int, member: int, field: str) -> bool | None:
        if leader == member or leader <= 0:
            return None
        st = self._stat(leader)
        if st is None:
            return False
        return not st.zombie and getattr(st, field) == leader  # a reused PID does not lead this session or group

    def _linux(self, pid: int, start_time: float | None) -> ChainFacts | None:
        st = _read_stat(self.proc, pid)
        if st is None:
            return None
        if start_time is not None:  # the same identity reader as the liveness rule
            ident = process_facts(pid, self.proc)
            if ident is None or not liveness.same_start(start_time, ident.start_time):
                return None
        node = self._node(pid, st)
        parent: ProcessNode | None = None
        ancestors: list[int] = []
        current, seen = st.ppid, {pid}
        while current > 0 and current not in seen and len(ancestors) < MAX_DEPTH:
            seen.add(current)
            ancestors.append(current)
            up = self._stat(current)
            if up is None:
                break
            if parent is None and current != 1:
                parent = self._parent_node(current, up)
            current = up.ppid
        return ChainFacts(process=node, parent=parent, ancestors=tuple(ancestors),
                          session_leader_alive=self._leader_alive(st.sid, pid, "sid"),
                          group_leader_alive=self._leader_alive(st.pgid, pid, "pgid"))

    # -- elsewhere (macOS) ---------------------------------------------------------------------------------------------
    def _portable(self, pid: int, start_time: float | None) -> ChainFacts | None:
        import psutil

        try:
            proc = psutil.Process(pid)
            if start_time is not None and not liveness.same_start(start_time, proc.create_time()):
                return None
            node = ProcessNode(pid=pid, ppid=proc.ppid(), name=proc.name(), sid=_getsid(pid), pgid=_getpgid(pid))
            chain = proc.parents()
        except psutil.Error:
            return None
        parent: ProcessNode | None = None
        if chain and chain[0].pid != 1:
            try:
                parent = ProcessNode(pid=chain[0].pid, ppid=chain[0].ppid(), name=chain[0].name(),
                                     sid=_getsid(chain[0].pid), pgid=_getpgid(chain[0].pid))
            except psutil.Error:
                parent = None
        return ChainFacts(process=node, parent=parent, ancestors=tuple(p.pid for p in chain[:MAX_DEPTH]),
                          session_leader_alive=_leader_alive_portable(node.sid, pid, _getsid),
                          group_leader_alive=_leader_alive_portable(node.pgid, pid, _getpgid),
                          launchd_job=self._launchd_jobs().get(pid) if sys.platform == "darwin" else None)

    def _launchd_jobs(self) -> dict[int, str]:
        if self._launchd is None:
            try:
                done = subprocess.run(["launchctl", "list"], capture_output=True, text=True,
                                      timeout=LAUNCHCTL_TIMEOUT_S, check=False)
                self._launchd = parse_launchctl_list(done.stdout) if done.returncode == 0 else {}
            except (OSError, subprocess.SubprocessError):
                self._launchd = {}
        return self._launchd


def _getsid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _getpgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _leader_alive_portable(leader: int | None, member: int, ask: Callable[[int], int | None]) -> bool | None:
    if leader is None or leader == member or leader <= 0:
        return None
    return ask(leader) == leader  # a reused PID does not lead this session or group


def own_ancestors(root: Path | None = None) -> set[int]:
    """The PIDs above this process (its shell, its agent, ...): the signal path never touches them."""
    out: set[int] = set()
    if sys.platform.startswith("linux"):
        proc = (root or Path("/")) / "proc"
        current = os.getppid()
        while current > 0 and current not in out and len(out) < MAX_DEPTH:
            out.add(current)
            st = _read_stat(proc, current)
            if st is None:
                break
            current = st.ppid
        return out
    import psutil

    try:
        return {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        return {os.getppid()}
