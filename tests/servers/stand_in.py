"""A stand-in model server: started under the real program's name (a wrapper ``bin/ollama``, ``bin/llama-server``,
``bin/vllm``, ``bin/lms``, or ``python -m sglang.launch_server``), it listens on 127.0.0.1 and answers with the response
shapes recorded in ecosystem.md section 9 (Ollama docs/api.md, llama.cpp server README, vLLM protocol.py, LM Studio
docs). Prints its port on one line, then serves until killed or ``--lifetime`` passes.

Environment (invisible to discovery, which reads command lines):
  FAKE_PROGRAM  ollama | llama-server | vllm | sglang | lmstudio | openai
  FAKE_MODE     ok (default) | html | hang | reset | loading | garbage | stubborn (Ollama: claims to unload, does not)
  FAKE_MODELS   JSON list of model objects (merged over the recorded example entry)
  FAKE_BUSY     "1": llama.cpp slots processing, vLLM/SGLang one request running
  FAKE_LOG      file to append "METHOD PATH auth=<yes|no>" per request (never the key itself)
Command-line flags read as the real servers would: --port, --host, -m/--model, --api-key, --enable-sleep-mode,
--enable-metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GIB = 1024**3

parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=int(os.environ.get("FAKE_PORT", "0")))
parser.add_argument("-m", "--model", "--model-path", default=None)
parser.add_argument("--api-key", default=None)
parser.add_argument("--enable-sleep-mode", action="store_true")
parser.add_argument("--enable-metrics", action="store_true")
parser.add_argument("--lifetime", type=float, default=300.0)
args, _unknown = parser.parse_known_args()

if args.model is None and "serve" in _unknown[:-1]:  # `vllm serve <model>`
    args.model = _unknown[_unknown.index("serve") + 1]
PROGRAM = os.environ.get("FAKE_PROGRAM", "ollama")
MODE = os.environ.get("FAKE_MODE", "ok")
BUSY = os.environ.get("FAKE_BUSY") == "1"
LOG = os.environ.get("FAKE_LOG")
LOCK = threading.Lock()


def _models(default: dict[str, Any]) -> list[dict[str, Any]]:
    raw = os.environ.get("FAKE_MODELS")
    if raw is None:
        return [dict(default)]
    return [{**default, **m} for m in json.loads(raw)]


# Ollama docs/api.md "List Running Models" example, plus context_length (api/types.go ProcessModelResponse).
OLLAMA_ENTRY = {
    "name": "mistral:latest", "model": "mistral:latest", "size": 5137025024,
    "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "7.2B", "quantization_level": "Q4_0"},
    "expires_at": "2099-06-04T14:38:31.83753-07:00", "size_vram": 5137025024, "context_length": 4096,
}
# llama.cpp tools/server README: /v1/models entry (single-model), router entries carry "status".
LLAMA_ENTRY = {"id": "qwen2.5-7b-instruct-q4_k_m.gguf", "object": "model", "created": 1735142223,
               "owned_by": "llamacpp", "meta": {"vocab_type": 2, "n_vocab": 152064, "n_ctx_train": 32768,
                                                "n_embd": 3584, "n_params": 7615616512, "size": 4683073536}}
ROUTER_ENTRY = {"id": "ggml-org/gemma-3-4b-it-GGUF:Q4_K_M", "object": "model", "owned_by": "llamacpp",
                "created": 1735142223, "status": {"value": "loaded", "args": ["llama-server", "-c", "8192"]}}
# vLLM entrypoints protocol.py ModelCard.
VLLM_ENTRY = {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "created": 1735142223,
              "owned_by": "vllm", "root": "meta-llama/Llama-3.1-8B-Instruct", "parent": None,
              "max_model_len": 32768, "permission": []}
# LM Studio docs 1_developer/2_rest/list.md (v1 API).
LMS_ENTRY = {"type": "llm", "publisher": "qwen", "key": "qwen2.5-7b-instruct", "display_name": "Qwen2.5 7B Instruct",
             "architecture": "qwen2", "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.8},
             "size_bytes": 4683073536, "params_string": "7B",
             "loaded_instances": [{"id": "qwen2.5-7b-instruct", "config": {"context_length": 4096}}],
             "max_context_length": 32768, "format": "gguf", "capabilities": {}, "description": None}

STATE: dict[str, Any] = {"sleeping": False}
if PROGRAM == "ollama":
    STATE["models"] = _models(OLLAMA_ENTRY)
elif PROGRAM == "llama-server":
    STATE["router"] = args.model is None
    STATE["models"] = _models(ROUTER_ENTRY if STATE["router"] else {**LLAMA_ENTRY, "id": args.model})
elif PROGRAM in ("vllm", "sglang", "openai"):
    STATE["models"] = _models({**VLLM_ENTRY, "owned_by": PROGRAM, "id": args.model or VLLM_ENTRY["id"]})
elif PROGRAM == "lmstudio":
    STATE["models"] = _models(LMS_ENTRY)


def log(method: str, path: str, auth: bool) -> None:
    if LOG:
        with LOCK, open(LOG, "a") as fh:
            fh.write(f"{method} {path} auth={'yes' if auth else 'no'}\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *a: Any) -> None:
        pass

    def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            doc = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _authorised(self) -> bool:
        if not args.api_key:
            return True
        return self.headers.get("Authorization") == f"Bearer {args.api_key}"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        log(method, self.path, "Authorization" in self.headers)
        if MODE == "html":
            self._send(200, b"<!DOCTYPE html><html><body>Welcome to nginx!</body></html>", "text/html")
        elif MODE == "garbage":
            self._send(200, b"{not json", "application/json")
        elif MODE == "loading":
            self._send(503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        else:
            route = getattr(self, f"_{PROGRAM.replace('-', '_')}")
            with LOCK:
                route(method, self.path.split("?")[0], self.path)

    # -- Ollama ---------------------------------------------------------------------------------------------------
    def _ollama(self, method: str, path: str, full: str) -> None:
        if method == "GET" and path == "/api/ps":
            return self._send(200, {"models": STATE["models"]})
        if method == "GET" and path == "/api/version":
            return self._send(200, {"version": "0.12.3"})
        if method == "GET" and path == "/":
            return self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        if method == "POST" and path == "/api/generate":
            body = self._body()
            name = body.get("model")
            known = [m for m in STATE["models"] if m["name"] == name or m["model"] == name]
            if body.get("keep_alive") == 0 and known:
                if MODE != "stubborn":  # stubborn: says it unloaded, keeps the model
                    STATE["models"] = [m for m in STATE["models"] if m not in known]
                return self._send(200, {"model": name, "created_at": "2026-11-28T10:00:00Z", "response": "",
                                        "done": True, "done_reason": "unload"})
            if not known:
                return self._send(404, {"error": f"model '{name}' not found"})
            return self._send(400, {"error": "this stand-in only unloads"})
        return self._send(404, b"404 page not found", "text/plain")

    # -- llama.cpp ------------------------------------------------------------------------------------------------
    def _llama_server(self, method: str, path: str, full: str) -> None:
        if path in ("/health", "/v1/health"):
            return self._send(200, {"status": "ok"})
        if not self._authorised():  # since PR #26347 /models and /v1/models need the key too
            return self._send(401, {"error": {"code": 401, "message": "Invalid API Key",
                                              "type": "authentication_error"}})
        router = STATE["router"]
        if method == "GET" and path in ("/models", "/v1/models"):
            return self._send(200, {"object": "list", "data": STATE["models"]})
        if method == "GET" and path == "/props":
            if router:
                return self._send(200, {"role": "router", "default_generation_settings": {"n_ctx": 0}})
            return self._send(200, {"default_generation_settings": {"id": 0, "n_ctx": 4096, "params": {}},
                                    "total_slots": 1, "model_path": args.model, "model_alias": None,
                                    "endpoint_slots": True, "endpoint_metrics": False, "build_info": "b6500-abc1234"})
        if method == "GET" and path == "/slots":
            return self._send(200, [{"id": 0, "n_ctx": 4096, "speculative": False, "is_processing": BUSY,
                                     "id_task": 7 if BUSY else -1, "params": {},
                                     "next_token": {"has_next_token": BUSY, "has_new_line": False, "n_remain": -1,
                                                    "n_decoded": 0}}])
        if method == "POST" and path == "/models/unload" and router:
            name = self._body().get("model")
            for m in STATE["models"]:
                if m["id"] == name and m["status"]["value"] == "loaded":
                    m["status"] = {"value": "unloaded"}
                    return self._send(200, {"success": True})
            return self._send(400, {"error": {"code": 400, "message": "model is not running",
                                              "type": "invalid_request_error"}})
        return self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    # -- vLLM / SGLang / OpenAI-compatible -------------------------------------------------------------------------
    def _vllm(self, method: str, path: str, full: str) -> None:
        if path.startswith("/v1") and not self._authorised():
            return self._send(401, {"error": "Unauthorized"})
        if method == "GET" and path == "/v1/models":
            return self._send(200, {"object": "list", "data": STATE["models"]})
        if method == "GET" and path == "/version":
            return self._send(200, {"version": "0.11.0"})
        if method == "GET" and path == "/metrics":
            lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
                     "# TYPE vllm:num_requests_running gauge"]
            for m in STATE["models"]:
                lines.append(f'vllm:num_requests_running{{engine="0",model_name="{m["id"]}"}} '
                             f'{1.0 if BUSY else 0.0}')
            return self._send(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")
        if args.enable_sleep_mode and method == "GET" and path == "/is_sleeping":
            return self._send(200, {"is_sleeping": STATE["sleeping"]})
        if args.enable_sleep_mode and method == "POST" and path == "/sleep":
            STATE["sleeping"] = True
            return self._send(200, b"", "application/json")
        return self._send(404, {"detail": "Not Found"})

    def _sglang(self, method: str, path: str, full: str) -> None:
        if method == "GET" and path == "/v1/models":
            return self._send(200, {"object": "list", "data": STATE["models"]})
        if method == "GET" and path == "/metrics" and args.enable_metrics:
            return self._send(200, f'sglang:num_running_reqs{{model_name="{STATE["models"][0]["id"]}"}} '
                                   f'{1.0 if BUSY else 0.0}\n'.encode(), "text/plain")
        return self._send(404, {"detail": "Not Found"})

    def _openai(self, method: str, path: str, full: str) -> None:
        if method == "GET" and path == "/v1/models":
            return self._send(200, {"object": "list", "data": STATE["models"]})
        return self._send(404, {"detail": "Not Found"})

    # -- LM Studio ------------------------------------------------------------------------------------------------
    def _lmstudio(self, method: str, path: str, full: str) -> None:
        if method == "GET" and path == "/api/v1/models":
            return self._send(200, {"models": STATE["models"]})
        if method == "POST" and path == "/api/v1/models/unload":
            wanted = self._body().get("instance_id")
            for m in STATE["models"]:
                if any(i["id"] == wanted for i in m["loaded_instances"]):
                    m["loaded_instances"] = [i for i in m["loaded_instances"] if i["id"] != wanted]
                    return self._send(200, {"instance_id": wanted})
            return self._send(404, {"error": {"message": f"No loaded instance {wanted}"}})
        return self._send(404, {"error": "Unexpected endpoint or method."})


def serve_raw(sock: socket.socket, deadline: float) -> None:
    """hang: accept nothing (the kernel completes the handshake, no byte ever comes back); reset: accept, then RST."""
    if MODE == "hang":
        while time.monotonic() < deadline:
            time.sleep(0.5)
        return
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


def main() -> None:
    deadline = time.monotonic() + args.lifetime
    if MODE in ("hang", "reset"):
        sock = socket.socket()
        sock.bind((args.host, args.port))
        sock.listen(128)
        print(sock.getsockname()[1], flush=True)
        serve_raw(sock, deadline)
        sys.exit(0)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while time.monotonic() < deadline:
        time.sleep(0.5)
    sys.exit(0)


main()
