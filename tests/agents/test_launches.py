"""core/launches.py: what a shell line starts. A miss here is a hook that lets a conflicting server through; a false
hit is a hook that blocks ordinary work, so both directions are pinned."""

from __future__ import annotations

import pytest

from fleet_watch.core.launches import parse_launches


@pytest.mark.parametrize(("line", "kind", "port", "origin", "model"), [
    ("ollama serve", "model_server", 11434, "default", None),
    ("OLLAMA_HOST=127.0.0.1:11500 ollama serve &", "model_server", 11500, "OLLAMA_HOST", None),
    ("vllm serve Qwen/Qwen2.5-7B-Instruct --port 8001 --max-model-len 8192", "model_server", 8001, "--port",
     "Qwen/Qwen2.5-7B-Instruct"),
    ("nohup llama-server -m /m/x.gguf -c 4096 --port 8081 > log 2>&1 &", "model_server", 8081, "--port", "/m/x.gguf"),
    ("python -m sglang.launch_server --model-path org/m --port 30001", "model_server", 30001, "--port", "org/m"),
    ("python3 -u -m vllm.entrypoints.openai.api_server --model m", "model_server", 8000, "default", "m"),
    ("uv run mlx_lm.server --model mlx-community/x --port 8090", "model_server", 8090, "--port", "mlx-community/x"),
    ("sudo -u svc ollama serve", "model_server", 11434, "default", None),
    ("PORT=3000 npm run dev", "dev_server", 3000, "PORT", None),
    ("export PORT=4000 && pnpm dev", "dev_server", 4000, "PORT", None),
    ("cd app && uvicorn main:app --reload", "dev_server", 8000, "default", None),
    ("python3 -m http.server 9000", "dev_server", 9000, "positional", None),
    ("timeout 5 python -m http.server 2>&1", "dev_server", 8000, "default", None),
    ("python manage.py runserver 0.0.0.0:8002", "dev_server", 8002, "positional", None),
    ("gunicorn -b 0.0.0.0:8123 app:app", "dev_server", 8123, "--bind", None),
    ("docker run -p 8080:80 nginx", "listener", 8080, "--publish", None),
    ("python app.py -p 7000", "listener", 7000, "-p", None),
    ("bash -c \"PORT=5001 node server.js\"", "listener", 5001, "PORT", None),
    ("nc -lvp 9999", "listener", 9999, "-p", None),
    ("socat TCP-LISTEN:7777,fork -", "listener", 7777, "positional", None),
    # Shells with clustered options (Codex sends ["bash", "-lc", cmd]), shell keywords, wrapper and runner flags.
    ("bash -lc 'uvicorn app:app --port=8000'", "dev_server", 8000, "--port", None),
    ("sh -ec 'uvicorn app --port 8010'", "dev_server", 8010, "--port", None),
    ("bash -o pipefail -c 'uvicorn a --port 8002'", "dev_server", 8002, "--port", None),
    ("if true; then uvicorn app --port 8003; fi", "dev_server", 8003, "--port", None),
    ("{ uvicorn app --port 8004; }", "dev_server", 8004, "--port", None),
    ("setsid -f uvicorn app --port 8005", "dev_server", 8005, "--port", None),
    ("uv run --with x --python 3.12 uvicorn app --port 8006", "dev_server", 8006, "--port", None),
    ("python -m http.server --bind 127.0.0.1 8555", "dev_server", 8555, "positional", None),
    ("python -m http.server -d /srv 8556", "dev_server", 8556, "positional", None),
    ("flask --app hello run", "dev_server", 5000, "default", None),
    ("node server.js -p3555", "listener", 3555, "-p", None),
    # `--port 0`: the OS picks a port, so there is nothing to check (not the default 8000 either).
    ("uvicorn app --port 0", "dev_server", None, "--port", None),
])
def test_launches(line: str, kind: str, port: int, origin: str, model: str | None) -> None:
    (launch,) = parse_launches(line)
    assert (launch.kind, launch.port, launch.port_origin, launch.model) == (kind, port, origin, model)


@pytest.mark.parametrize("line", [
    "ls -la", "git commit -m 'vllm serve --port 9'", "ssh -p 2222 host", "mkdir -p 5", "export PORT=4000; make build",
    "echo \"unterminated", "psql --port 5432 -c 'select 1'", "curl -p http://127.0.0.1:8000/", "npm test",
    "cat <<'EOF'\nit's fine\nEOF", "", "echo 'run: uvicorn app --port 8000'",
    "cat > README.md <<EOF\nStart it with\n  vllm serve m --port 8000\n  PORT=3000 npm run dev\nEOF",
    "cat <<-END >notes\n\tollama serve\n\tEND\nls",
])
def test_not_launches(line: str) -> None:
    assert [launch for launch in parse_launches(line) if launch.port is not None] == []


def test_commands_after_a_here_document_still_count() -> None:
    line = "cat > app.py <<'PY'\nprint('--port 1')\nPY\npython app.py --port 8123"
    assert [launch.port for launch in parse_launches(line)] == [8123]
    assert [launch.port for launch in parse_launches("grep x <<<word\nuvicorn a:b --port 8124")] == [8124]


def test_several_launches_in_one_line_and_gpu_device() -> None:
    launches = parse_launches("CUDA_VISIBLE_DEVICES=1 vllm serve m --port 8001 & PORT=3001 npm start; ls")
    assert [(launch.kind, launch.port, launch.gpu_device) for launch in launches] == [
        ("model_server", 8001, 1), ("dev_server", 3001, None)]


@pytest.mark.parametrize(("line", "advice"), [
    ("ollama serve", "OLLAMA_HOST=127.0.0.1:9"), ("PORT=1 npm run dev", "PORT=9"), ("uvicorn a:b", "--port 9"),
    ("gunicorn a:b", "--bind 127.0.0.1:9"), ("python -m http.server", "9 as the port argument"),
    ("rails s", "-p 9"), ("streamlit run app.py", "--server.port 9"),
])
def test_port_advice_speaks_the_commands_language(line: str, advice: str) -> None:
    assert parse_launches(line)[0].port_advice(9) == advice


def test_the_interpreters_module_is_not_the_model() -> None:
    from fleet_watch.core.estimator.commandline import parse_command

    assert parse_command("python3 -u -m sglang.launch_server --model-path org/m").model == "org/m"  # type: ignore[union-attr]
    assert parse_command("python3 /srv/llama-server -m /m/q.gguf --port 1").model == "/m/q.gguf"  # type: ignore[union-attr]
