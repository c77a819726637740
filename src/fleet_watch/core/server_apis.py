"""Reading each model server API's answers (shapes from ecosystem.md section 9). Pure: answers in, a ``Reading`` out.

``reachable`` is true only when the API's first endpoint answered with well-formed JSON of that API's documented
shape; the other endpoints only add detail (version, context, busy) and their failures cost nothing. A model entry
that is not of the documented shape is dropped; a top-level shape that is wrong makes the server unreachable with a
reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fleet_watch import jsonio
from fleet_watch.core.servers import Answer, Reading, count, failure_text, mib, text

Answers = Mapping[str, Answer]
_MAX_MODELS = 256  # a server listing more is still read, but only this many entries


class _Shape(ValueError):
    """The JSON is not of the documented shape; the message says what is missing."""


def _json(answer: Answer | None) -> Any:
    """The JSON body of a 200 answer; ``None`` when there is no usable answer."""
    if answer is None or answer.failure is not None or answer.status != 200 or answer.truncated:
        return None
    try:
        return jsonio.loads(answer.body)
    except jsonio.BadJson:
        return None


def _primary(answer: Answer | None, timeout_s: float, key_sent: bool) -> tuple[Any, str | None]:
    """The first endpoint's JSON, or why the server did not answer as an API."""
    if answer is None:
        return None, "not asked"
    why = failure_text(answer, timeout_s, key_sent)
    if why is not None:
        return None, why
    if answer.truncated:
        return None, "answered something else: a body larger than the probe reads"
    try:
        return jsonio.loads(answer.body), None
    except jsonio.BadJson as err:
        return None, f"answered something else: not JSON ({err})"


def _objects(value: object, key: str) -> list[dict[str, Any]]:
    """``value[key]`` as a list of objects (non-objects dropped); the shape error when it is not a list."""
    if not isinstance(value, dict) or not isinstance(value.get(key), list):
        raise _Shape(f"JSON without a '{key}' list")
    return [e for e in value[key][:_MAX_MODELS] if isinstance(e, dict)]


def _model(name: object, *, vram_mb: int | None = None, size_mb: int | None = None,
           context_tokens: int | None = None, expires_at: str | None = None,
           busy: bool | None = None) -> dict[str, object] | None:
    clean = text(name)
    if clean is None:
        return None
    return {"name": clean, "vram_mb": vram_mb, "size_mb": size_mb, "context_tokens": context_tokens,
            "expires_at": expires_at, "busy": busy}


def _keep(models: list[dict[str, object] | None]) -> tuple[dict[str, object], ...]:
    return tuple(m for m in models if m is not None)


# -- Ollama -----------------------------------------------------------------------------------------------------------
def _ollama(doc: Any, answers: Answers) -> Reading:
    models = _keep([
        _model(e.get("name") if e.get("name") is not None else e.get("model"), vram_mb=mib(e.get("size_vram")),
               size_mb=mib(e.get("size")), context_tokens=count(e.get("context_length")),
               expires_at=text(e.get("expires_at"), 64))
        for e in _objects(doc, "models")
    ])
    version_doc = _json(answers.get("/api/version"))
    version = text(version_doc.get("version"), 64) if isinstance(version_doc, dict) else None
    return Reading(reachable=True, version=version, models=models)


# -- llama.cpp llama-server -------------------------------------------------------------------------------------------
_CTX_FLAGS = ("-c", "--ctx-size")


def _ctx_from_args(args: object) -> int | None:
    """Router mode: a child's context from the arguments it was started with (``-c N`` / ``--ctx-size N``)."""
    if not isinstance(args, list):
        return None
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            continue
        value: object = None
        if arg in _CTX_FLAGS and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--ctx-size="):
            value = arg.split("=", 1)[1]
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _llama_cpp(doc: Any, answers: Answers) -> Reading:
    entries = _objects(doc, "data")
    props = _json(answers.get("/props"))
    props = props if isinstance(props, dict) else {}
    router = props.get("role") == "router" or any(isinstance(e.get("status"), dict) for e in entries)
    version = text(props.get("build_info"), 64)
    if router:
        models = _keep([
            _model(e.get("id"), context_tokens=_ctx_from_args(e["status"].get("args")))
            for e in entries if isinstance(e.get("status"), dict) and e["status"].get("value") == "loaded"
        ])
        return Reading(reachable=True, version=version, models=models, router=True)
    if props.get("is_sleeping") is True:  # --sleep-idle-seconds dropped the model and its KV cache
        return Reading(reachable=True, version=version, models=())
    settings = props.get("default_generation_settings")
    ctx = count(settings.get("n_ctx")) if isinstance(settings, dict) else None
    slots = _json(answers.get("/slots"))
    busy: bool | None = None
    if isinstance(slots, list) and slots and all(isinstance(s, dict) for s in slots):
        busy = any(s.get("is_processing") is True for s in slots)
        if ctx is None:
            ctx = count(slots[0].get("n_ctx"))
    models = _keep([
        _model(e.get("id"), size_mb=mib(e["meta"].get("size")) if isinstance(e.get("meta"), dict) else None,
               context_tokens=ctx, busy=busy)
        for e in entries
    ])
    return Reading(reachable=True, version=version, models=models)


# -- Prometheus text (vLLM, SGLang) -----------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prom_samples(body: bytes, metric: str, max_lines: int = 20_000) -> list[tuple[dict[str, str], float]]:
    """Samples of one metric from Prometheus text exposition: ``[(labels, value)]``; malformed lines are skipped."""
    out: list[tuple[dict[str, str], float]] = []
    for i, raw in enumerate(body.decode("utf-8", "replace").splitlines()):
        if i >= max_lines:
            break
        if not raw.startswith(metric):
            continue
        m = _SAMPLE.match(raw)
        if m is None or m.group(1) != metric:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            continue
        out.append((dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def _running(answers: Answers, metric: str) -> Callable[[str], bool | None]:
    """A function model name -> busy (requests running now), from ``/metrics``; ``None`` where it says nothing."""
    answer = answers.get("/metrics")
    if answer is None or answer.failure is not None or answer.status != 200 or answer.truncated:
        return lambda name: None
    samples = prom_samples(answer.body, metric)

    def busy(name: str) -> bool | None:
        mine = [v for labels, v in samples if labels.get("model_name", name) == name]
        return None if not mine else sum(mine) > 0

    return busy


def _openai_list(doc: Any, *, busy: Callable[[str], bool | None] = lambda name: None,
                 skip_adapters: bool = False) -> tuple[dict[str, object], ...]:
    entries = _objects(doc, "data")
    out: list[dict[str, object] | None] = []
    for e in entries:
        if skip_adapters and e.get("parent") is not None:
            continue  # a LoRA adapter shares its base model's memory
        name = text(e.get("id"))
        out.append(_model(name, context_tokens=count(e.get("max_model_len")),
                          busy=busy(name) if name is not None else None))
    return _keep(out)


# -- vLLM, SGLang, OpenAI-compatible ----------------------------------------------------------------------------------
def _vllm(doc: Any, answers: Answers) -> Reading:
    models = _openai_list(doc, busy=_running(answers, "vllm:num_requests_running"), skip_adapters=True)
    version_doc = _json(answers.get("/version"))
    version = text(version_doc.get("version"), 64) if isinstance(version_doc, dict) else None
    sleeping = _json(answers.get("/is_sleeping"))
    if isinstance(sleeping, dict) and sleeping.get("is_sleeping") is True:
        models = ()  # weights offloaded or discarded: nothing resident on the GPU
    return Reading(reachable=True, version=version, models=models)


def _sglang(doc: Any, answers: Answers) -> Reading:
    return Reading(reachable=True, models=_openai_list(doc, busy=_running(answers, "sglang:num_running_reqs")))


def _openai(doc: Any, answers: Answers) -> Reading:
    return Reading(reachable=True, models=_openai_list(doc))


# -- LM Studio --------------------------------------------------------------------------------------------------------
def _lmstudio_v1(doc: Any) -> tuple[dict[str, object], ...]:
    out: list[dict[str, object] | None] = []
    for e in _objects(doc, "models"):
        instances = e.get("loaded_instances")
        if not isinstance(instances, list):
            continue
        for inst in instances[:_MAX_MODELS]:
            if not isinstance(inst, dict):
                continue
            config = inst.get("config")
            ctx = count(config.get("context_length")) if isinstance(config, dict) else None
            out.append(_model(inst.get("id"), size_mb=mib(e.get("size_bytes")), context_tokens=ctx))
    return _keep(out)


def _lmstudio(answers: Answers, timeout_s: float, key_sent: bool) -> Reading:
    v1, why = _primary(answers.get("/api/v1/models"), timeout_s, key_sent)
    if why is None:
        try:
            return Reading(reachable=True, models=_lmstudio_v1(v1), unload_api=True)
        except _Shape as err:
            why = f"answered something else: {err}"
    v0 = _json(answers.get("/api/v0/models"))
    if isinstance(v0, dict) and isinstance(v0.get("data"), list):
        models = _keep([_model(e.get("id"), context_tokens=count(e.get("loaded_context_length")))
                        for e in _objects(v0, "data") if e.get("state") == "loaded"])
        return Reading(reachable=True, models=models)
    plain = _json(answers.get("/v1/models"))
    if isinstance(plain, dict) and isinstance(plain.get("data"), list):
        return Reading(reachable=True, models=_openai_list(plain))
    return Reading(reachable=False, error=why)


_READERS: Mapping[str, Callable[[Any, Answers], Reading]] = {
    "ollama": _ollama, "llama_cpp": _llama_cpp, "vllm": _vllm, "sglang": _sglang, "openai": _openai,
}
PRIMARY = {"ollama": "/api/ps", "llama_cpp": "/v1/models", "vllm": "/v1/models", "sglang": "/v1/models",
           "openai": "/v1/models", "lmstudio": "/api/v1/models"}


def read(api: str, answers: Answers, *, timeout_s: float, key_sent: bool = False) -> Reading:
    """Interpret one server's answers. Never raises on what a server sent."""
    if api == "lmstudio":
        return _lmstudio(answers, timeout_s, key_sent)
    doc, why = _primary(answers.get(PRIMARY[api]), timeout_s, key_sent)
    if why is not None:
        return Reading(reachable=False, error=why)
    try:
        return _READERS[api](doc, answers)
    except _Shape as err:
        return Reading(reachable=False, error=f"answered something else: {err}")
