"""Reading each API's answers (pure): the recorded shapes of ecosystem.md section 9, and what hostile servers send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet_watch.core import server_apis
from fleet_watch.core import servers as core
from fleet_watch.core.servers import Answer, Endpoint

GIB = 1024**3


def ok(doc: Any, ctype: str = "application/json") -> Answer:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return Answer(status=200, content_type=ctype, body=body)


def read(api: str, key_sent: bool = False, **answers: Answer) -> core.Reading:
    paths = {"/" + k.replace("__", "/").replace("_dash_", "-"): v for k, v in answers.items()}
    return server_apis.read(api, paths, timeout_s=0.8, key_sent=key_sent)


OLLAMA_PS = {"models": [{
    "name": "mistral:latest", "model": "mistral:latest", "size": 5137025024, "digest": "2ae6f6dd",
    "details": {"format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": "7.2B",
                "quantization_level": "Q4_0"},
    "expires_at": "2024-06-04T14:38:31.83753-07:00", "size_vram": 5137025024, "context_length": 4096}]}


def test_ollama_ps_gives_vram_size_context_and_expiry() -> None:
    r = read("ollama", api__ps=ok(OLLAMA_PS), api__version=ok({"version": "0.12.3"}))
    assert r.reachable
    assert r.error is None
    assert r.version == "0.12.3"
    assert r.models == ({"name": "mistral:latest", "vram_mb": 4899, "size_mb": 4899, "context_tokens": 4096,
                         "expires_at": "2024-06-04T14:38:31.83753-07:00", "busy": None},)


def test_ollama_bad_entries_cost_themselves_and_a_bad_shape_costs_the_server() -> None:
    doc = {"models": [OLLAMA_PS["models"][0], "junk", {"size_vram": 5}, {"name": "x", "size_vram": -1,
                                                                        "size": True, "context_length": 1.5}]}
    r = read("ollama", api__ps=ok(doc))
    assert [m["name"] for m in r.models] == ["mistral:latest", "x"]
    assert r.models[1]["vram_mb"] is None
    assert r.models[1]["size_mb"] is None
    assert r.models[1]["context_tokens"] is None
    assert r.version is None  # /api/version not answered: detail lost, server still reachable
    wrong = read("ollama", api__ps=ok({"data": []}))
    assert not wrong.reachable
    assert wrong.error == "answered something else: JSON without a 'models' list"
    nan = read("ollama", api__ps=ok(b'{"models": [{"name": "a", "size_vram": NaN}]}'))
    assert not nan.reachable
    assert nan.error is not None
    assert nan.error.startswith("answered something else: not JSON")


@pytest.mark.parametrize(("answer", "error"), [
    (Answer(failure=core.REFUSED), "still loading: connection refused"),
    (Answer(status=503, body=b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'),
     "still loading: 503 Loading model"),
    (Answer(failure=core.TIMEOUT), "timed out after 0.8 s"),
    (Answer(failure=core.RESET), "connection reset by the server"),
    (Answer(failure=core.CLOSED), "closed the connection without answering"),
    (Answer(failure=core.NOT_HTTP), "answered something else: not HTTP"),
    (Answer(status=200, content_type="text/html", body=b"<html>"), "answered something else: an HTML page"),
    (Answer(status=200, content_type="application/json", body=b"  <!DOCTYPE html>"),
     "answered something else: an HTML page"),
    (Answer(status=404, body=b"404 page not found"), "answered something else: HTTP 404"),
    (Answer(status=200, body=b"{not json"), "answered something else: not JSON"),
    (Answer(status=200, body=b"x" * 10, truncated=True), "answered something else: a body larger"),
    (Answer(status=401, body=b'{"error":"Unauthorized"}'), "needs an API key (401)"),
])
def test_why_a_server_is_not_reachable(answer: Answer, error: str) -> None:
    for api in ("ollama", "llama_cpp", "vllm", "sglang", "openai"):
        primary = server_apis.PRIMARY[api]
        r = server_apis.read(api, {primary: answer}, timeout_s=0.8)
        assert not r.reachable
        assert r.error is not None
        assert r.error.startswith(error), (api, r.error)


def test_a_rejected_key_says_so_without_quoting_it() -> None:
    r = read("vllm", key_sent=True, v1__models=Answer(status=401, body=b'{"error":"Unauthorized"}'))
    assert r.error == "API key rejected (401): check server_api_keys"


LLAMA_MODELS = {"object": "list", "data": [{"id": "qwen.gguf", "object": "model", "owned_by": "llamacpp",
                                             "meta": {"n_ctx_train": 32768, "size": 4683073536}}]}
PROPS = {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 2, "build_info": "b6500-abc"}


def slots(*processing: bool) -> list[dict[str, Any]]:
    return [{"id": i, "n_ctx": 8192, "is_processing": p} for i, p in enumerate(processing)]


def test_llama_server_per_slot_context_and_busy() -> None:
    r = read("llama_cpp", v1__models=ok(LLAMA_MODELS), props=ok(PROPS), slots=ok(slots(False, True)))
    assert r.reachable
    assert not r.router
    assert r.version == "b6500-abc"
    assert r.models == ({"name": "qwen.gguf", "vram_mb": None, "size_mb": 4466, "context_tokens": 8192,
                         "expires_at": None, "busy": True},)
    idle = read("llama_cpp", v1__models=ok(LLAMA_MODELS), props=ok(PROPS), slots=ok(slots(False, False)))
    assert idle.models[0]["busy"] is False
    # /slots disabled (501) and no /props: busy and context unknown, the model still listed.
    off = read("llama_cpp", v1__models=ok(LLAMA_MODELS),
               slots=Answer(status=501, body=b'{"error":{"type":"not_supported_error"}}'))
    assert off.models[0]["busy"] is None
    assert off.models[0]["context_tokens"] is None
    asleep = read("llama_cpp", v1__models=ok(LLAMA_MODELS), props=ok({**PROPS, "is_sleeping": True}))
    assert asleep.reachable
    assert asleep.models == ()


def test_llama_server_router_lists_loaded_children_with_their_context() -> None:
    doc = {"object": "list", "data": [
        {"id": "a:Q4", "object": "model", "status": {"value": "loaded", "args": ["llama-server", "-c", "4096"]}},
        {"id": "b:Q8", "object": "model", "status": {"value": "unloaded"}},
        {"id": "c", "object": "model", "status": {"value": "loaded", "args": ["--ctx-size=16384"]}},
        {"id": "d", "object": "model", "status": {"value": "loading", "args": []}},
    ]}
    r = read("llama_cpp", v1__models=ok(doc), props=ok({"role": "router"}))
    assert r.router
    assert [(m["name"], m["context_tokens"]) for m in r.models] == [("a:Q4", 4096), ("c", 16384)]


VLLM = {"object": "list", "data": [
    {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "owned_by": "vllm", "root": "x", "parent": None,
     "max_model_len": 32768},
    {"id": "my-lora", "object": "model", "owned_by": "vllm", "root": "/lora",
     "parent": "meta-llama/Llama-3.1-8B-Instruct"},
]}
METRICS = (b'# HELP vllm:num_requests_running Number of requests\n# TYPE vllm:num_requests_running gauge\n'
           b'vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0\n'
           b'vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0\n'
           b'vllm:num_requests_running{model_name="broken"} NaN-ish\n')


def test_vllm_models_context_busy_version_and_sleep() -> None:
    r = read("vllm", v1__models=ok(VLLM), metrics=ok(METRICS, "text/plain"), version=ok({"version": "0.11.0"}))
    assert r.version == "0.11.0"
    assert r.models == ({"name": "meta-llama/Llama-3.1-8B-Instruct", "vram_mb": None, "size_mb": None,
                         "context_tokens": 32768, "expires_at": None, "busy": True},)
    quiet = read("vllm", v1__models=ok(VLLM), metrics=ok(METRICS.replace(b"2.0", b"0.0"), "text/plain"))
    assert quiet.models[0]["busy"] is False
    asleep = read("vllm", v1__models=ok(VLLM), is_sleeping=ok({"is_sleeping": True}))
    assert asleep.reachable
    assert asleep.models == ()


def test_sglang_busy_only_with_metrics() -> None:
    doc = {"object": "list", "data": [{"id": "Qwen/Qwen2.5-7B", "object": "model", "max_model_len": 32768}]}
    r = read("sglang", v1__models=ok(doc), metrics=Answer(status=404, body=b'{"detail":"Not Found"}'))
    assert r.models[0]["busy"] is None
    assert r.models[0]["context_tokens"] == 32768
    on = read("sglang", v1__models=ok(doc), metrics=ok(b'sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B"} 1\n'))
    assert on.models[0]["busy"] is True


LMS_V1 = {"models": [
    {"type": "llm", "key": "qwen2.5-7b-instruct", "size_bytes": 4683073536,
     "loaded_instances": [{"id": "qwen2.5-7b-instruct", "config": {"context_length": 4096}},
                          {"id": "qwen2.5-7b-instruct:2", "config": {"context_length": 8192}}]},
    {"type": "embedding", "key": "nomic", "size_bytes": 84000000, "loaded_instances": []},
]}


def test_lmstudio_v1_instances_then_v0_then_openai_fallbacks() -> None:
    r = read("lmstudio", api__v1__models=ok(LMS_V1))
    assert r.reachable
    assert r.unload_api
    assert [(m["name"], m["context_tokens"], m["size_mb"]) for m in r.models] == [
        ("qwen2.5-7b-instruct", 4096, 4466), ("qwen2.5-7b-instruct:2", 8192, 4466)]
    v0 = {"object": "list", "data": [{"id": "a", "state": "loaded", "loaded_context_length": 2048},
                                     {"id": "b", "state": "not-loaded"}]}
    old = read("lmstudio", api__v1__models=Answer(status=404, body=b"{}"), api__v0__models=ok(v0))
    assert old.reachable
    assert not old.unload_api
    assert [(m["name"], m["context_tokens"]) for m in old.models] == [("a", 2048)]
    html = read("lmstudio", api__v1__models=ok(b"<html>", "text/html"))
    assert not html.reachable
    assert html.error is not None
    assert "HTML" in html.error


def test_names_are_printable_and_bounded() -> None:
    doc = {"models": [{"name": "evil\x1b[2J\nname" + "x" * 500, "size_vram": 1}]}
    name = str(read("ollama", api__ps=ok(doc)).models[0]["name"])
    assert name.isprintable()
    assert len(name) <= 256


def test_prometheus_parser_ignores_what_it_cannot_read() -> None:
    body = (b'vllm:num_requests_running{model_name="m"} 3\nvllm:num_requests_running_total 9\n'
            b'vllm:num_requests_running{model_name="m",x="a\\"b"} 1e0\nvllm:num_requests_running{} +Inf\n'
            b'garbage line\n')
    assert server_apis.prom_samples(body, "vllm:num_requests_running") == [
        ({"model_name": "m"}, 3.0), ({"model_name": "m", "x": 'a\\"b'}, 1.0)]


# -- which API, which port --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cmdline", "api"), [
    ("/usr/local/bin/ollama serve", "ollama"),
    ("/opt/llama.cpp/llama-server -m /m.gguf --port 8081", "llama_cpp"),
    ("/usr/bin/python3 -m llama_cpp.server --model /m.gguf", "openai"),
    ("/venv/bin/python /venv/bin/vllm serve meta-llama/Llama-3.1-8B", "vllm"),
    ("python -m vllm.entrypoints.openai.api_server --model x", "vllm"),
    ("python3 -m sglang.launch_server --model-path Qwen/Qwen2.5-7B", "sglang"),
    ("/Applications/LM Studio.app/Contents/MacOS/LM Studio", "lmstudio"),
    ("python -m mlx_lm.server --model mlx-community/m", "openai"),
    ("text-generation-launcher --model-id x", "openai"),
    ("python ComfyUI/main.py --listen", None),
    ("torchrun train.py", None),
])
def test_api_from_the_command_line(cmdline: str, api: str | None) -> None:
    assert core.api_for(cmdline) == api


def test_candidate_ports_flag_then_default_then_the_rest_loopback_only() -> None:
    own = {8081: {"0.0.0.0"}, 8080: {"127.0.0.1"}, 40000: {"::"}, 50000: {"10.1.2.3"}, 50001: {"127.0.0.1"}}
    eps, why = core.candidate_endpoints("llama_cpp", ["llama-server", "--port", "8081"], own, set())
    assert why is None
    assert eps == (Endpoint("127.0.0.1", 8081), Endpoint("127.0.0.1", 8080), Endpoint("::1", 40000))
    only_far, why = core.candidate_endpoints("vllm", ["vllm", "serve"], {8000: {"192.168.1.5"}}, set())
    assert only_far == ()
    assert why is not None
    assert "non-loopback" in why
    # Nothing listens yet: the command-line port, unless another process holds it.
    eps, why = core.candidate_endpoints("vllm", ["vllm", "serve", "--port=9000"], {}, set())
    assert eps == (Endpoint("127.0.0.1", 9000),)
    assert why is None
    eps, why = core.candidate_endpoints("vllm", ["vllm", "serve"], {}, {8000})
    assert eps == ()
    assert why == "not listening; port 8000 is held by another process"
    assert core.candidate_endpoints("openai", ["mlx_lm.server"], {}, set()) == ((), "no listening port found")
    assert Endpoint("::1", 8000).url == "http://[::1]:8000"


# -- giving memory back ---------------------------------------------------------------------------------------------
def model(name: str, vram: int | None, busy: bool | None = None, pid: int = 1) -> core.Model:
    return core.Model(name=name, api="ollama", pid=pid, port=11434, vram_mb=vram, size_mb=vram, context_tokens=None,
                      expires_at=None, busy=busy)


def test_reclaimable_takes_the_fewest_largest_idle_models_that_cover_the_gap() -> None:
    cands = [core.Candidate(model("a", 2000), True), core.Candidate(model("b", 9000), True),
             core.Candidate(model("c", 5000), True), core.Candidate(model("busy", 20000, busy=True), True),
             core.Candidate(model("stuck", 30000), False), core.Candidate(model("unknown", None), True)]
    assert [m.name for m in core.pick_reclaimable(cands, 10000)] == ["b", "c"]
    assert [m.name for m in core.pick_reclaimable(cands, 9000)] == ["b"]
    assert [m.name for m in core.pick_reclaimable(cands, 99999)] == ["b", "c", "a"]
    assert [m.name for m in core.pick_reclaimable(cands, None)] == ["b", "c", "a"]
    view = core.reclaim_view(model("llama3.2:3b", 2300))
    assert view == {"name": "llama3.2:3b", "pid": 1, "port": 11434, "vram_mb": 2300, "expires_at": None,
                    "command": "fleet unload llama3.2:3b --port 11434"}
    assert core.unload_command("my model", None) == "fleet unload 'my model'"


def test_shortfall_from_the_ledger_or_the_working_set() -> None:
    assert core.shortfall_mb({"requested_mb": 40000, "available_mb": 27344}) == 12656
    assert core.shortfall_mb({"requested_mb": 100, "available_mb": 500,
                              "working_set": {"total_mb": 9000, "available_after_reserve_mb": 6000}}) == 3000
    assert core.shortfall_mb({"requested_mb": 100, "available_mb": 500}) is None


def server(api: str, argv: tuple[str, ...] = (), **reading: Any) -> core.Server:
    return core.Server(pid=1, start_time=1.0, api=api, name=api, workstream=api, argv=argv,
                       endpoint=Endpoint("127.0.0.1", 1), reading=core.Reading(reachable=True, **reading))


def test_who_can_unload_and_how() -> None:
    assert core.unload_method(server("ollama"))[0] == "ollama_keep_alive_0"
    assert core.unload_method(server("llama_cpp", router=True))[0] == "llama_cpp_router_unload"
    method, why = core.unload_method(server("llama_cpp"))
    assert method is None
    assert "router mode" in why
    assert core.unload_method(server("vllm", ("vllm", "serve", "m", "--enable-sleep-mode")))[0] == "vllm_sleep"
    assert core.unload_method(server("vllm", ("vllm", "serve", "m")))[0] is None
    assert core.unload_method(server("lmstudio", unload_api=True))[0] == "lmstudio_unload"
    assert core.unload_method(server("sglang"))[0] is None
    assert core.unload_method(server("openai"))[0] is None
    assert core.unload_request("ollama_keep_alive_0", "m").body == {"model": "m", "keep_alive": 0}
    assert core.name_matches("mistral:latest", "mistral")
    assert not core.name_matches("mistral:7b", "mistral")


def test_unload_replies_are_read_as_documented() -> None:
    def refusal(method: str, answer: Answer) -> str | None:
        return core.unload_refusal(method, answer, "m", 10, False)

    assert refusal("ollama_keep_alive_0", ok({"model": "m", "done": True, "done_reason": "unload"})) is None
    assert refusal("ollama_keep_alive_0", ok({"model": "m"})) == "answered something else: no done_reason 'unload'"
    assert refusal("ollama_keep_alive_0", Answer(status=404, body=b'{"error":"model \'m\' not found"}')) == (
        "the server refused to unload m (HTTP 404: model 'm' not found)")
    assert refusal("llama_cpp_router_unload", ok({"success": True})) is None
    assert refusal("lmstudio_unload", ok({"instance_id": "m"})) is None
    assert refusal("vllm_sleep", Answer(status=200, body=b"")) is None
    assert "VLLM_SERVER_DEV_MODE" in str(refusal("vllm_sleep", Answer(status=404, body=b"{}")))
    assert refusal("ollama_keep_alive_0", Answer(failure=core.TIMEOUT)) == "timed out after 10 s"


def test_expiry_in_any_offset_with_nanoseconds() -> None:
    base = 1717537111.83753  # 2024-06-04T21:38:31.83753Z
    assert core.expires_in_s("2024-06-04T14:38:31.83753-07:00", base) == pytest.approx(0, abs=1e-3)
    assert core.expires_in_s("2024-06-04T21:38:41.837530123Z", base) == pytest.approx(10, abs=1e-3)
    assert core.expires_in_s("tomorrow", base) is None
    assert core.expires_in_s(None, base) is None


def test_credentials_on_a_command_line_are_redacted_before_anything_stores_them() -> None:
    from fleet_watch.core.discovery import redact

    assert redact("llama-server -m /m.gguf --api-key sk-1 --port 8080") == (
        "llama-server -m /m.gguf --api-key *** --port 8080")
    assert redact("vllm serve m --api-key=sk-2 --hf-token hf_x") == "vllm serve m --api-key=*** --hf-token ***"
    assert redact("ollama serve") == "ollama serve"
