"""The pure rules: classification, the parent chain, the service manager, refusals, preemption, runaway, sessions.

The service manager is a boundary this machine cannot provide (no systemd, no launchd): its evidence is read from
``/proc/<pid>/cgroup`` and ``launchctl list`` text, so those readers are tested on fixture files; the real reads
are the same functions over the real files (``probes.ancestry``), exercised by the process tests here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_watch.core import ownership as core
from fleet_watch.core import safety
from fleet_watch.core.discovery import SessionMatch
from fleet_watch.probes.ancestry import parse_launchctl_list
from fleet_watch.probes.scan import ProcInfo

DATA = Path(__file__).parent.parent / "data" / "ownership"
NOW = 1_800_000_000.0


def node(pid: int, ppid: int | None, *, sid: int | None = None, pgid: int | None = None, unit: str | None = None,
         name: str = "proc") -> core.ProcessNode:
    return core.ProcessNode(pid=pid, ppid=ppid, name=name, sid=sid if sid is not None else pid,
                            pgid=pgid if pgid is not None else pid, unit=unit)


def facts(process: core.ProcessNode, parent: core.ProcessNode | None = None, **kw: object) -> core.ChainFacts:
    return core.ChainFacts(process=process, parent=parent, **kw)  # type: ignore[arg-type]


# -- the parent chain ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "unit"), [
    ("cgroup-v1-service", "ollama.service"),
    ("cgroup-v2-session", "session-3.scope"),
    ("cgroup-v2-user-service", "llama.service"),
    ("cgroup-v2-user-manager", "init.scope"),
    ("cgroup-container", None),
])
def test_the_unit_is_the_deepest_service_or_scope_of_the_cgroup_path(name: str, unit: str | None) -> None:
    assert core.unit_from_cgroup((DATA / name).read_text()) == unit


def test_only_a_service_other_than_the_user_manager_owns_a_process() -> None:
    assert core.service_unit("ollama.service") == "ollama.service"
    assert core.service_unit("user@1000.service") is None  # the user's manager, not a service owning this process
    assert core.service_unit("session-3.scope") is None
    assert core.service_unit(None) is None


def test_a_process_the_service_manager_owns_is_never_detached_whatever_its_parent() -> None:
    verdict = core.parent_chain(facts(node(500, 1, unit="ollama.service")))
    assert verdict.detached is False
    assert verdict.managed_by == "systemd:ollama.service"
    launchd = core.parent_chain(facts(node(500, 1), launchd_job="com.ollama.ollama"))
    assert (launchd.detached, launchd.managed_by) == (False, "launchd:com.ollama.ollama")


def test_reparented_to_pid_1_is_detached_without_asking_any_terminal() -> None:
    verdict = core.parent_chain(facts(node(500, 1, sid=400)))
    assert verdict.detached is True
    assert "re-parented to PID 1" in verdict.evidence


def test_adopted_by_a_subreaper_is_detached() -> None:
    # The user's systemd (init.scope) adopted it: its launcher is gone.
    manager = node(300, 1, unit="init.scope", name="systemd")
    assert core.parent_chain(facts(node(500, 300, sid=400), manager)).detached is True
    # A plain subreaper: its session's leader is gone and the new parent is outside that session.
    reaper = node(300, 1, sid=300, name="tini")
    adopted = core.parent_chain(facts(node(500, 300, sid=400, pgid=400), reaper, session_leader_alive=False))
    assert adopted.detached is True
    assert "leader of its session (PID 400) is gone" in adopted.evidence


def test_a_live_launcher_keeps_it_attached() -> None:
    shell = node(400, 100, sid=400, name="bash")
    assert core.parent_chain(facts(node(500, 400, sid=400, pgid=400), shell)).detached is False
    # Its own session, started by a launcher that still runs (setsid, start_new_session): attached.
    own = core.parent_chain(facts(node(500, 400, sid=500, pgid=500), shell))
    assert own.detached is False
    assert "parent PID 400 (bash) still runs" in own.evidence
    # A session leader gone, but the parent shares that session: the parent is its launcher, attached.
    same = core.parent_chain(facts(node(500, 400, sid=350, pgid=400), node(400, 100, sid=350, pgid=400),
                                   session_leader_alive=False))
    assert same.detached is False
    # A job-control pipeline `(exit 0) | server &`: its group's leader (the first element) is gone and the shell is
    # in another group, yet the shell that launched it still runs: attached, never reaped.
    piped = core.parent_chain(facts(node(500, 400, sid=400, pgid=450), shell, group_leader_alive=False))
    assert piped.detached is False


def test_the_sessions_owner_among_the_ancestors_keeps_it_attached() -> None:
    verdict = core.parent_chain(facts(node(500, 1), ancestors=(1,)), lease_owner=1)
    assert verdict.detached is False
    assert core.parent_chain(facts(node(500, 450), node(450, 1)), lease_owner=None).detached is False


def test_unreadable_chains_are_unknown_never_detached() -> None:
    assert core.parent_chain(None).detached is None
    assert core.parent_chain(facts(node(500, None))).detached is None
    assert core.parent_chain(facts(node(500, 0))).detached is None  # parent outside this PID namespace
    assert core.parent_chain(facts(node(500, 450), None)).detached is None


# -- classification --------------------------------------------------------------------------------------------------
DETACHED = core.ChainVerdict(True, "parent chain detached: re-parented to PID 1")
ATTACHED = core.ChainVerdict(False, "parent chain attached: parent PID 4 (bash) still runs")
MANAGED = core.ChainVerdict(False, "owned by the service manager (systemd unit x.service): never an orphan",
                            managed_by="systemd:x.service")
OPEN = core.LeaseFacts(session_id="s", closed=False, owner_pid=77)
CLOSED = core.LeaseFacts(session_id="s", closed=True, owner_pid=77)
OWNER_GONE = core.LeaseFacts(session_id="s", closed=False, owner_pid=77, owner_death="dead_pid")


def classify(*, session: str = "s", death: str | None = None, age: float | None = 10.0,
             lease: core.LeaseFacts | None = None, chain: core.ChainVerdict | None = None) -> core.Verdict:
    return core.classify(pid=500, session_id=session, death=death, last_heartbeat=None if age is None else NOW - age,
                         now=NOW, lease=lease, chain=chain)


@pytest.mark.parametrize(("kw", "expected"), [
    ({"death": "zombie"}, "exited"),
    ({"death": "pid_reused", "lease": OPEN, "chain": DETACHED, "age": 1000}, "exited"),
    ({"lease": OPEN}, "live"),
    ({"session": "cli-500"}, "live"),  # registered for itself, heartbeat fresh
    ({"lease": None}, "disconnected"),  # a named session without a lease
    ({"lease": CLOSED}, "disconnected"),
    ({"lease": OWNER_GONE}, "disconnected"),
    ({"lease": OPEN, "age": 181, "chain": DETACHED}, "stale_candidate"),  # its session still owns it
    ({"lease": CLOSED, "age": 181, "chain": ATTACHED}, "stale_candidate"),
    ({"lease": CLOSED, "age": 181, "chain": MANAGED}, "stale_candidate"),
    ({"lease": CLOSED, "age": 181, "chain": core.ChainVerdict(None, "unknown")}, "stale_candidate"),
    ({"lease": CLOSED, "age": 181, "chain": None}, "stale_candidate"),
    ({"lease": CLOSED, "age": 181, "chain": DETACHED}, "orphan_confirmed"),
    ({"lease": OWNER_GONE, "age": 181, "chain": DETACHED}, "orphan_confirmed"),
    ({"lease": None, "age": 181, "chain": DETACHED}, "orphan_confirmed"),  # README: lease "missing or closed"
    ({"session": "cli-500", "age": 181, "chain": DETACHED}, "orphan_confirmed"),
    ({"lease": CLOSED, "age": 180, "chain": DETACHED}, "disconnected"),  # "older than 180 s": 180 is not
    ({"lease": CLOSED, "age": None, "chain": DETACHED}, "stale_candidate"),  # unreadable heartbeat proves nothing
])
def test_the_first_matching_rule_wins(kw: dict[str, object], expected: str) -> None:
    assert classify(**kw).classification == expected  # type: ignore[arg-type]


def test_an_orphan_carries_all_three_signals_as_evidence() -> None:
    verdict = classify(lease=CLOSED, age=400, chain=DETACHED)
    assert verdict.safe_to_reap
    assert verdict.evidence == ("process heartbeat expired (400s ago, over 180s)", "session lease 's' is closed",
                                "parent chain detached: re-parented to PID 1")
    gone = classify(lease=OWNER_GONE, age=400, chain=DETACHED)
    assert gone.evidence[1] == "session 's''s owner PID 77 is gone (dead_pid)"
    assert classify(death="pid_reused").evidence == (
        "PID 500 now belongs to another process (its start time differs from the registered one)",)


def test_the_chain_is_needed_only_where_the_class_depends_on_it() -> None:
    def needs(**kw: object) -> bool:
        base: dict[str, object] = {"death": None, "last_heartbeat": NOW - 200, "now": NOW, "pid": 500,
                                   "session_id": "s", "lease": CLOSED}
        return core.needs_chain(**{**base, **kw})  # type: ignore[arg-type]

    assert needs()
    assert not needs(last_heartbeat=NOW - 10)
    assert not needs(death="dead_pid")
    assert not needs(lease=OPEN)
    assert needs(lease=None)
    assert not needs(last_heartbeat=None)


def test_counts_name_every_class_in_the_seeds_order() -> None:
    assert list(core.counts(["exited", "live", "live"]).items()) == [
        ("live", 2), ("disconnected", 0), ("stale_candidate", 0), ("orphan_confirmed", 0), ("exited", 1)]


# -- sessions ----------------------------------------------------------------------------------------------------------
def test_a_session_is_detached_hot_only_when_detached_and_busy() -> None:
    assert core.session_class(DETACHED, 55.0)[0] == "detached_hot"
    assert core.session_class(DETACHED, 5.0)[0] == "detached"
    assert core.session_class(DETACHED, None)[0] == "detached"
    assert core.session_class(ATTACHED, 99.0)[0] == "attached"
    assert core.session_class(MANAGED, 99.0)[0] == "attached"
    assert core.session_class(core.ChainVerdict(None, "?"), 99.0)[0] == "unknown"


# -- refusals, preemption, runaway -----------------------------------------------------------------------------------
def refuse(pid: int, **kw: object) -> str | None:
    base: dict[str, object] = {"target_uid": 1000, "own_pid": 5000, "own_ancestors": {4000, 3000}, "euid": 1000,
                               "allow_other_users": False}
    return safety.refusal(pid, **{**base, **kw})  # type: ignore[arg-type]


def test_what_is_never_signalled() -> None:
    assert safety.MIN_PID == 100
    assert refuse(1) == "PID 1 is init: never signalled"
    assert "below 100" in (refuse(99) or "")
    assert refuse(100) is None
    assert "below 1000" in (refuse(500, min_pid=1000) or "")
    assert "itself" in (refuse(5000) or "")
    assert "ancestor" in (refuse(3000) or "")
    assert "not to you" in (refuse(600, target_uid=0) or "")
    assert "not to you" in (refuse(600, target_uid=0, allow_other_users=True) or "")  # only root may ask
    assert "--allow-other-users" in (refuse(600, target_uid=65534, euid=0) or "")
    assert refuse(600, target_uid=65534, euid=0, allow_other_users=True) is None
    assert "could not be read" in (refuse(600, target_uid=None) or "")


def test_only_a_strictly_higher_priority_preempts() -> None:
    assert safety.may_preempt(4, 3) is None
    assert safety.may_preempt(3, 3) == "cannot preempt: priority 3 is not higher than the holder's priority 3"
    assert safety.may_preempt(2, 3) is not None


def test_runaway_flags_need_the_threshold_over_the_window_and_the_runtime() -> None:
    def sample(pid: int, cpu: float, runtime: float) -> safety.CpuSample:
        return safety.CpuSample(pid=pid, start_time=NOW - runtime, name="p", command="p", uid=0, cpu_pct=cpu,
                                runtime_s=runtime)

    flagged = safety.runaway_flags([sample(101, 95, 120), sample(102, 150, 300), sample(103, 89.9, 999),
                                    sample(104, 99, 30)], threshold_pct=90, sustained_s=60)
    assert [s.pid for s in flagged] == [102, 101]


def test_ownership_proof_needs_a_matching_start_time_or_the_users_agent_session() -> None:
    assert safety.ownership_proof(500, NOW, registered_start=NOW + 0.01, agent_session=None) is not None
    assert safety.ownership_proof(500, NOW, registered_start=NOW - 1000, agent_session=None) is None  # PID reused
    assert safety.ownership_proof(500, NOW, registered_start=None, agent_session="in your codex session") == (
        "in your codex session")
    assert safety.ownership_proof(500, NOW, registered_start=None, agent_session=None) is None


def proc(pid: int, ppid: int, uid: int, argv: tuple[str, ...] = ("x",)) -> ProcInfo:
    return ProcInfo(pid=pid, ppid=ppid, name=argv[0], argv=argv, start_time=NOW, uid=uid, rss_mb=1, cpu_s=1.0,
                    status="running")


def test_agent_members_are_the_users_agents_and_lease_owners_and_everything_below() -> None:
    procs = [proc(200, 1, 1000, ("claude",)), proc(201, 200, 1000), proc(202, 201, 1000),
             proc(300, 1, 2000, ("claude",)), proc(301, 300, 2000),  # another user's agent
             proc(400, 1, 1000), proc(401, 400, 1000), proc(500, 1, 1000)]
    sessions = [SessionMatch(pid=200, kind="claude-code", name="Claude Code", member_pids=(200,)),
                SessionMatch(pid=300, kind="claude-code", name="Claude Code", member_pids=(300,))]
    members = safety.agent_members(procs, sessions, euid=1000, lease_owners={400: "s-1"})
    assert sorted(members) == [200, 201, 202, 400, 401]
    assert members[202] == "in your claude-code session (agent PID 200)"
    assert members[401] == "in your session 's-1' (lease owner PID 400)"
    # A lease owned by PID 1 (or any PID the signal path refuses) is no proof: everything descends from PID 1.
    assert safety.agent_members(procs, [], euid=1000, lease_owners={1: "s-init", 50: "s-low"}) == {}


def test_launchctl_list_names_running_jobs_only() -> None:
    assert parse_launchctl_list((DATA / "launchctl-list.txt").read_text()) == {
        512: "com.ollama.ollama", 77: "homebrew.mxcl.llama"}


def test_an_agent_cli_is_recognised_by_its_program_not_its_arguments() -> None:
    from fleet_watch.config import DEFAULT_SESSION_PATTERNS, SessionPatternSetting
    from fleet_watch.core import discovery as dcore

    patterns = dcore.compile_session_patterns([SessionPatternSetting(**p) for p in DEFAULT_SESSION_PATTERNS])
    agents = [proc(200, 1, 1000, ("node", "/usr/local/bin/claude", "--resume")), proc(210, 1, 1000, ("codex",)),
              proc(220, 1, 1000, ("/usr/bin/python3", "-u", "-m", "aider", "--model", "x")),
              proc(230, 1, 1000, ("node", "--no-warnings", "/opt/bin/gemini"))]
    bystanders = [proc(300, 1, 1000, ("python3", "busy.py", "--out", "/runs/claude")),
                  proc(310, 1, 1000, ("bash", "-c", "python3 busy.py --data /mnt/codex & wait")),
                  proc(320, 1, 1000, ("rsync", "-a", "src/", "/backup/aider"))]
    found = {s.pid: s.kind for s in dcore.find_sessions([*agents, *bystanders], patterns)}
    assert found == {200: "claude-code", 210: "codex", 220: "aider", 230: "gemini"}
