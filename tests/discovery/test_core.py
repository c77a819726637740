"""Pure discovery decisions: matching, model names, folding, GPU attribution and the registry diff."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_watch.config import default_document, settings_from_document
from fleet_watch.core import discovery as core
from fleet_watch.models import ProcessRecord

DEFAULTS = settings_from_document(Path("/nonexistent"), default_document(65536))
PATTERNS = core.compile_patterns(DEFAULTS.patterns)


@dataclass(frozen=True)
class P:
    pid: int
    argv: tuple[str, ...]
    ppid: int | None = 1
    start_time: float | None = 1000.0
    uid: int | None = 1000
    rss_mb: int | None = 10
    readable: bool = True
    name: str = "proc"
    status: str = "sleeping"

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)

    @property
    def is_zombie(self) -> bool:
        return self.status == "zombie"


@pytest.mark.parametrize(("cmd", "name"), [
    ("/usr/local/bin/ollama serve", "Ollama"),
    ("/usr/lib/ollama/ollama runner --model /blobs/sha256-x --port 40123", "Ollama"),
    ("/opt/venv/bin/python3 /opt/venv/bin/vllm serve Qwen/Qwen2.5-7B --port 8000", "vLLM"),
    ("python -m vllm.entrypoints.openai.api_server --model m", "vLLM"),
    ("/opt/llama.cpp/build/bin/llama-server -m /m/x.gguf --port 8080", "llama.cpp server"),
    ("python3 -m llama_cpp.server --model /m/x.gguf", "llama-cpp-python server"),
    ("/usr/bin/python3 -m mlx_lm.server --model mlx-community/x", "MLX-LM server"),
    ("python -m mlx_vlm.server --model mlx-community/y", "MLX-VLM server"),
    ("python -m sglang.launch_server --model-path Qwen/Q", "SGLang"),
    ("/usr/local/bin/text-generation-launcher --model-id bigscience/bloom", "HF TGI"),
    ("/Applications/LM Studio.app/Contents/MacOS/LM Studio", "LM Studio"),
    ("./koboldcpp --model x.gguf --port 5001", "koboldcpp"),
    ("python /home/u/ComfyUI/main.py --listen 127.0.0.1", "ComfyUI"),
    ("/home/u/.cargo/bin/cake-cli --model llama3", "Candle/Cake"),
    ("torchrun --nproc_per_node 8 train.py", "Experiment runner"),
])
def test_default_patterns_match_real_command_lines(cmd: str, name: str) -> None:
    pat = core.match_pattern(P(1, tuple(cmd.split())), PATTERNS)
    assert pat is not None
    assert pat.name_template == name


@pytest.mark.parametrize("cmd", [
    "grep -r ollama serve /etc", "less /var/log/vllm serve.log", "tail -f /usr/bin/llama-server.log",
    "bash -c /usr/local/bin/ollama serve", "sudo /usr/local/bin/ollama serve", "vim mlx_lm.server.py",
    "/usr/bin/python3 /home/u/notes.py", "sleep 100",
])
def test_observers_and_unrelated_processes_are_not_workloads(cmd: str) -> None:
    assert core.match_pattern(P(1, tuple(cmd.split())), PATTERNS) is None


def test_unreadable_and_zombie_processes_are_skipped_not_errors() -> None:
    assert core.match_pattern(P(1, (), readable=False), PATTERNS) is None
    assert core.match_pattern(P(1, ("/usr/bin/ollama", "serve"), status="zombie"), PATTERNS) is None


@pytest.mark.parametrize(("argv", "model", "short"), [
    (["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8000"], "meta-llama/Llama-3.1-8B-Instruct", "8B"),
    (["llama-server", "-m", "/m/qwen2.5-0.5b-q4.gguf"], "/m/qwen2.5-0.5b-q4.gguf", "0.5B"),
    (["python", "-m", "mlx_lm.server", "--model", "mlx-community/Qwen3-4bit"], "mlx-community/Qwen3-4bit",
     "Qwen3-4bit"),
    (["python", "-m", "sglang.launch_server", "--model-path=/models/Mixtral-8x7B"], "/models/Mixtral-8x7B", "7B"),
    (["ollama", "serve"], None, "unknown"),
])
def test_model_extraction(argv: list[str], model: str | None, short: str) -> None:
    assert core.extract_model(argv) == model
    assert core.model_short(model) == short


def test_same_pattern_descendants_fold_into_the_server_with_all_ports() -> None:
    procs = [
        P(10, ("/usr/bin/ollama", "serve"), ppid=1, rss_mb=100),
        P(11, ("/usr/lib/ollama/ollama", "runner", "--port", "40001"), ppid=10, rss_mb=4000),
        P(12, ("/usr/bin/ollama", "runner", "--port", "40002"), ppid=11, rss_mb=50),
        P(20, ("/x/vllm", "serve", "m"), ppid=1),
    ]
    found = core.find_workloads(procs, PATTERNS, {10: {11434}, 11: {40001}, 12: {40002}, 20: {8000, 8001}})
    assert [(w.pid, w.ports, w.member_pids, w.rss_mb) for w in found] == [
        (10, (11434, 40001, 40002), (10, 11, 12), 4150), (20, (8000, 8001), (20,), 10)]
    assert core.find_workloads(procs, PATTERNS, {}, exclude_pids={20})[-1].pid == 10


def test_gpu_of_an_unmatched_child_counts_for_its_workload() -> None:
    procs = [P(10, ("/x/vllm", "serve", "m")), P(11, ("python", "-c", "from multiprocessing"), ppid=10)]
    workloads = core.find_workloads(procs, PATTERNS, {})
    parent = {p.pid: p.ppid for p in procs}
    got = core.attribute_gpu(workloads, {11: {"0": 30000}, 10: {"0": 500, "1": 100}, 99: {"0": 1}}, parent)
    assert got == {10: {"0": 30500, "1": 100}}


def _record(pid: int, *, source: str = "discover", ports: tuple[int, ...] = (), gpu: int = 0,
            rid: int | None = None) -> ProcessRecord:
    return ProcessRecord(record_id=rid or pid, pid=pid, start_time=1000.0, uid=None, name="n", workstream="w",
                         session_id="s", priority=3, model=None, start_cmd=None, source=source,
                         registered_at="t", last_heartbeat="t", ports=ports, gpu=(("all", gpu),) if gpu else (),
                         gpu_basis="estimate" if gpu else None)


def _observed(pid: int, ports: tuple[int, ...], gpu: int = 4096) -> core.Observed:
    w = core.Workload(pid=pid, start_time=1000.0, uid=None, pattern=PATTERNS[0], name="n", model=None, cmdline="c",
                      ports=ports, member_pids=(pid,), rss_mb=0)
    return core.Observed(workload=w, gpu_mb=gpu, gpu_source="pattern_default")


def test_plan_adds_updates_removes_and_heartbeats() -> None:
    records = [
        _record(1, ports=(8000,), gpu=4096),            # unchanged
        _record(2, ports=(8001,), gpu=4096),            # gains a port
        _record(3, ports=(8002,)),                      # process died
        _record(4, source="manual", ports=(9000,)),     # manual row, alive: heartbeat only
        _record(5, ports=(8003,), gpu=4096),            # alive, no longer matches
    ]
    observed = [_observed(1, (8000,)), _observed(2, (8001, 8004)), _observed(6, (8005,)), _observed(4, (9000, 9001))]
    plan = core.plan_changes(observed, records, {1: None, 2: None, 3: "dead_pid", 4: None, 5: None})
    assert [o.workload.pid for o in plan.adds] == [6]
    assert [(u.record.pid, u.ports_added, u.ports_removed, u.gpu_changed) for u in plan.updates] == [
        (2, (8004,), (), False)]
    assert [(r.record.pid, r.reason) for r in plan.removals] == [(3, "dead_pid"), (5, "no_longer_matches")]
    assert plan.heartbeats == [1, 2, 4, 5]


@given(st.lists(st.tuples(st.integers(1, 30), st.frozensets(st.integers(1024, 1040), max_size=3)), max_size=12,
                unique_by=lambda t: t[0]),
       st.lists(st.tuples(st.integers(1, 30), st.frozensets(st.integers(1024, 1040), max_size=3),
                          st.sampled_from([None, "dead_pid"])), max_size=12, unique_by=lambda t: t[0]))
def test_applying_a_plan_makes_the_registry_match_what_runs(running: list[tuple[int, frozenset[int]]],
                                                            rows: list[tuple[int, frozenset[int], str | None]]) -> None:
    records = [_record(pid, ports=tuple(sorted(ports)), gpu=4096) for pid, ports, _ in rows]
    death = {pid: reason for pid, _, reason in rows}
    observed = [_observed(pid, tuple(sorted(ports))) for pid, ports in running]
    plan = core.plan_changes(observed, records, death)
    state = {r.pid: set(r.ports) for r in records}
    for rm in plan.removals:
        del state[rm.record.pid]
    for up in plan.updates:
        state[up.record.pid] = (state[up.record.pid] - set(up.ports_removed)) | set(up.ports_added)
    for obs in plan.adds:
        state[obs.workload.pid] = set(obs.workload.ports)
    assert state == {pid: set(ports) for pid, ports in running}
    assert plan_is_idempotent(observed, state)


def plan_is_idempotent(observed: list[core.Observed], state: dict[int, set[int]]) -> bool:
    again = core.plan_changes(observed, [_record(pid, ports=tuple(sorted(p)), gpu=4096) for pid, p in state.items()],
                              dict.fromkeys(state))
    return again.empty


def test_sessions_fold_same_kind_children_and_skip_observers() -> None:
    patterns = core.compile_session_patterns(DEFAULTS.session_patterns)
    procs = [P(10, ("/usr/local/bin/claude", "--resume")), P(11, ("/usr/local/bin/claude", "mcp"), ppid=10),
             P(12, ("node", "/usr/lib/node_modules/.bin/codex")), P(13, ("grep", "claude")),
             P(14, ("/home/u/.local/bin/aider", "--model", "x"))]
    found = core.find_sessions(procs, patterns)
    assert [(s.pid, s.kind, s.member_pids) for s in found] == [
        (10, "claude-code", (10, 11)), (12, "codex", (12,)), (14, "aider", (14,))]
