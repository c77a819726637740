"""What a shell command line is about to start: model servers, dev servers and anything told to listen on a port.

Pure: text in, ``Launch`` values out. The agent hooks ask this before every shell command, so it must be cheap and
must never raise on odd input: a line it cannot tokenise is split on whitespace instead (the shell would refuse to
run it anyway), and nothing here guesses beyond what the line says, except a server's documented default port.
"""

from __future__ import annotations

import re
import shlex
from typing import Literal, NamedTuple

LaunchKind = Literal["model_server", "dev_server", "listener"]

# A port the command names, and how: the hooks phrase the alternative in the same form.
PortOrigin = Literal["--port", "-p", "PORT", "OLLAMA_HOST", "--bind", "positional", "default", "--publish"]

_SEPARATORS = {";", "&", "&&", "|", "||", "|&", "\n", "(", ")", ";;"}
_REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "&>", "&>>", "<&", ">|", "<>"}
_WRAPPERS = {"nohup", "exec", "time", "command", "builtin", "setsid", "stdbuf", "caffeinate", "chronic", "unbuffer"}
# Wrappers and the flags of theirs that take a value; ``timeout`` and ``taskset`` also take one positional word.
_WRAPPERS_WITH_ARG = {"nice": ("-n",), "timeout": ("-s", "-k", "--signal", "--kill-after"), "ionice": ("-c", "-n"),
                      "taskset": (), "env": ("-u", "-C", "-S"), "sudo": ("-u", "-g", "-C", "-h", "-U", "-p"),
                      "doas": ("-u", "-C")}
_RUNNERS = {("uv", "run"), ("poetry", "run"), ("pipenv", "run"), ("pdm", "run"), ("hatch", "run"), ("rye", "run"),
            ("conda", "run"), ("pixi", "run")}
_SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
# Shell syntax that may stand before a command inside one simple command (`if true; then uvicorn app; fi`).
_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "("}
# Flags of `uv run` and its kin that take a value (the program comes after them: `uv run --with x uvicorn app`).
_RUNNER_VALUE_FLAGS = {"--with", "--with-requirements", "--with-editable", "--python", "-p", "--env-file",
                       "--directory", "--project", "--extra", "--group", "--package", "--from", "--index", "-n",
                       "--name", "--prefix", "-e", "--environment", "--env"}

# Programs whose port flags name a *remote* port (or mean something else): never a listener here.
_CLIENTS = {
    "ssh", "scp", "sftp", "mosh", "rsync", "psql", "pg_dump", "pg_restore", "pg_isready", "pg_dumpall", "mysql",
    "mysqldump", "mariadb", "redis-cli", "valkey-cli", "mongo", "mongosh", "curl", "wget", "http", "https", "telnet",
    "git", "mkdir", "cp", "install", "ls", "grep", "rg", "sed", "awk", "patch", "diff", "tar", "zip", "unzip", "xargs",
    "lsof", "ss", "netstat", "fleet", "kill", "pkill", "gh",
    # programs that only print or handle files: a --port in their arguments is text, not a listener
    "echo", "printf", "cat", "less", "head", "tail", "wc", "find", "which", "type", "man", "test", "[", "true",
    "false", "touch", "rm", "mv", "ln", "chmod", "chown", "jq", "yq", "tee", "sort", "uniq", "cut", "tr",
}
_LISTENS_WITH_L = {"nc", "ncat", "netcat"}

# Model servers: (program or "-m module", framework, default port). The estimator reads the rest of the line.
_MODEL_SERVERS: tuple[tuple[re.Pattern[str], str, int | None], ...] = (
    (re.compile(r"^ollama\s+serve\b"), "ollama", 11434),
    (re.compile(r"^vllm\s+serve\b"), "vllm", 8000),
    (re.compile(r"^-m\s+vllm\.entrypoints\.(openai\.)?api_server\b"), "vllm", 8000),
    (re.compile(r"^llama-server\b"), "llama_cpp", 8080),
    (re.compile(r"^-m\s+llama_cpp\.server\b"), "llama_cpp", 8000),
    (re.compile(r"^(mlx_lm\.server|mlx_lm\s+server)\b"), "mlx", 8080),
    (re.compile(r"^-m\s+mlx_lm[.\s]server\b"), "mlx", 8080),
    (re.compile(r"^(mlx_vlm\.server)\b"), "mlx", 8080),
    (re.compile(r"^-m\s+mlx_vlm[.\s]server\b"), "mlx", 8080),
    (re.compile(r"^-m\s+sglang\.launch_server\b"), "sglang", 30000),
    (re.compile(r"^text-generation-launcher\b"), "transformers", 3000),
)

# Dev servers: pattern over "program args...", default port when the line names none (None: the tool picks).
_DEV_SERVERS: tuple[tuple[re.Pattern[str], int | None], ...] = (
    (re.compile(r"^(npm|pnpm|yarn|bun)\s+(run\s+)?(dev|start|serve|preview|develop)\b"), None),
    (re.compile(r"^(next|nuxt|astro|remix|gatsby)\s+(dev|start|develop|preview)\b"), None),
    (re.compile(r"^(vite|webpack-dev-server|webpack\s+serve)\b"), None),
    (re.compile(r"^(uvicorn|-m\s+uvicorn)\b"), 8000),
    (re.compile(r"^(gunicorn|-m\s+gunicorn)\b"), 8000),
    (re.compile(r"^(hypercorn|granian|fastapi\s+(dev|run)|-m\s+fastapi\s+(dev|run))\b"), 8000),
    (re.compile(r"^(flask|-m\s+flask)\s+((--app|-A|--env-file|-e)[\s=]\S+\s+|--(no-)?debug\s+)*run\b"), 5000),
    (re.compile(r"^-m\s+http\.server\b"), 8000),
    (re.compile(r"^\S*manage\.py\s+runserver\b"), 8000),
    (re.compile(r"^(rails|bin/rails)\s+(s|server)\b"), 3000),
    (re.compile(r"^hugo\s+server\b"), 1313),
    (re.compile(r"^(jupyter|-m\s+jupyter)\s+(lab|notebook|server)\b|^jupyter-lab\b"), 8888),
    (re.compile(r"^(streamlit|-m\s+streamlit)\s+run\b"), 8501),
    (re.compile(r"^(php\s+-S|mkdocs\s+serve|jekyll\s+serve|bundle\s+exec\s+jekyll\s+serve)\b"), None),
)


class Launch(NamedTuple):
    """One simple command that will listen or load a model."""

    kind: LaunchKind
    text: str  # the simple command, for messages
    port: int | None = None
    port_origin: PortOrigin | None = None
    framework: str | None = None  # model servers only
    model: str | None = None
    ctx: int | None = None
    kv_dtype: str | None = None
    gpu_device: int | None = None  # CUDA_VISIBLE_DEVICES=N on the line (one device)
    program: str = ""  # the program's base name ("-m module" for python -m)
    flash_attn: str | None = None  # -fa/--flash-attn on the line (on, off, auto)

    def port_advice(self, port: int) -> str:
        """How to give this command ``port`` instead, in the form its line already uses."""
        origin, program = self.port_origin, self.program
        if origin == "OLLAMA_HOST" or (origin == "default" and program == "ollama"):
            return f"OLLAMA_HOST=127.0.0.1:{port}"
        if origin == "PORT":
            return f"PORT={port}"
        if origin == "-p" or (origin == "default" and program in ("rails", "bin/rails")):
            return f"-p {port}"
        if origin == "--bind" or (origin == "default" and "gunicorn" in program):
            return f"--bind 127.0.0.1:{port}"
        if origin == "--publish":
            return f"-p {port}:<container port>"
        if origin == "positional" or (origin == "default" and ("http.server" in program or "manage.py" in program)):
            return f"{port} as the port argument"
        if "streamlit" in program:
            return f"--server.port {port}"
        return f"--port {port}"


_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z0-9_.-]+)\2")  # not the here-string <<<


def strip_heredocs(line: str) -> str:
    """The line without the bodies of its here-documents (``cat > f <<EOF ... EOF``): text, not commands."""
    out: list[str] = []
    lines = line.split("\n")
    i = 0
    while i < len(lines):
        current = lines[i]
        out.append(current)
        i += 1
        for m in _HEREDOC.finditer(current):
            dash, word = m.group(1), m.group(3)
            while i < len(lines) and (lines[i].lstrip("\t") if dash else lines[i]) != word:
                i += 1
            i += 1  # the delimiter line
    return "\n".join(out)


def tokenize(line: str) -> list[str]:
    """Shell words and operators; unterminated quotes fall back to a plain split."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>\n")
        lexer.whitespace = " \t\r"
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return re.findall(r"[;&|()<>\n]+|[^\s;&|()<>]+", line)


# The descriptor number glued to a redirection (the "2" of ``2>&1``), which the tokenizer would split off as a word.
_FD_REDIRECT = re.compile(r"(?<![^\s;&|(])\d+(?=[<>])")


def simple_commands(line: str) -> list[list[str]]:
    """The line cut into simple commands at ``;``, ``&&``, ``|``, ``&``, newlines and parentheses, with
    redirections (and the file or descriptor they name) removed."""
    out: list[list[str]] = [[]]
    tokens = tokenize(_FD_REDIRECT.sub("", strip_heredocs(line)))
    skip = False
    for tok in tokens:
        if skip:
            skip = False
            continue
        if tok in _SEPARATORS or (tok and set(tok) <= set(";&|\n") and tok not in _REDIRECTS):
            out.append([])
        elif tok in _REDIRECTS or (tok and set(tok) <= set("<>&|") and any(c in tok for c in "<>")):
            skip = True
        elif tok.startswith("#") and not out[-1]:
            continue
        else:
            out[-1].append(tok)
    return [c for c in out if c]


_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


def _port(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    value = int(text)
    return value if 1 <= value <= 65535 else None


def _host_port(text: str) -> int | None:
    """``HOST:PORT``, ``:PORT`` or ``PORT``; IPv6 in brackets."""
    return _port(text.rsplit(":", 1)[-1] if ":" in text else text)


def _strip_prefix(argv: list[str], env: dict[str, str]) -> list[str]:
    """Drop leading ``VAR=value`` words (into ``env``), wrappers (``nohup``, ``env``, ``sudo``, ``nice -n 5``,
    ``timeout 10``, ``uv run``...) and a leading ``python -m`` interpreter; what is left starts at the program."""
    i = 0
    while i < len(argv):
        word = argv[i]
        base = word.rsplit("/", 1)[-1]
        m = _ASSIGNMENT.match(word)
        if m:
            env[m.group(1)] = m.group(2)
            i += 1
        elif base in _WRAPPERS or word in _KEYWORDS:
            i += 1
            while base in _WRAPPERS and i < len(argv) and argv[i].startswith("-"):
                i += 1  # `setsid -f`, `stdbuf -oL`, `caffeinate -i`: flags without a separate value
        elif base in _WRAPPERS_WITH_ARG:
            i += 1
            while i < len(argv) and argv[i].startswith("-"):
                i += 2 if argv[i] in _WRAPPERS_WITH_ARG[base] else 1
            if base in ("timeout", "taskset") and i < len(argv):
                i += 1  # the duration / CPU mask
        elif i + 1 < len(argv) and (base, argv[i + 1]) in _RUNNERS:
            i += 2
            while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
                i += 2 if argv[i] in _RUNNER_VALUE_FLAGS else 1
            i += 1 if i < len(argv) and argv[i] == "--" else 0
        elif base in ("npx", "pnpx", "bunx"):
            i += 1
        else:
            break
    return argv[i:]


def _interpreter(argv: list[str]) -> list[str]:
    """``python3.11 -u -m x ...`` -> ``["-m", "x", ...]``; ``python app.py`` -> ``["app.py", ...]``."""
    if not argv or not re.match(r"^python(\d+(\.\d+)?)?$", argv[0].rsplit("/", 1)[-1]):
        return argv
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m" and argv[i] != "-c":
        i += 1
    return argv[i:]


def _flag_value(argv: list[str], flags: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if flag.startswith("--") and arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def _explicit_port(program: str, args: list[str]) -> tuple[int | None, PortOrigin | None]:
    """A port the command's own flags name: --port N, -p N (not for clients), --bind H:P, docker's -p H:C."""
    named = _flag_value(args, ("--port", "--http-port", "--server.port", "--listen-port"))
    value = _port(named)
    if value is not None:
        return value, "--port"
    if named is not None:
        return None, "--port"  # `--port 0` (the OS picks one) or no port at all: nothing to check, no default
    if program in ("docker", "podman", "nerdctl"):
        published = _flag_value(args, ("-p", "--publish"))
        parts = published.split(":") if published is not None else []
        return (_port(parts[-2]), "--publish") if len(parts) >= 2 and _port(parts[-2]) else (None, None)
    if program not in _CLIENTS:
        short = _flag_value(args, ("-p",))
        if short is None:  # glued: `-p3555`
            short = next((a[2:] for a in args if a.startswith("-p") and a[2:].isdigit()), None)
        value = _port(short)
        if value is not None:
            return value, "-p"
    bind = _flag_value(args, ("--bind", "-b"))
    if bind is not None and ":" in bind and (value := _host_port(bind)) is not None:
        return value, "--bind"
    return None, None


def _positionals(args: list[str], value_flags: tuple[str, ...]) -> list[str]:
    """The arguments that are not flags nor the values of ``value_flags`` (`--bind 127.0.0.1 8555` -> [8555])."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in value_flags
        else:
            out.append(arg)
    return out


def _shell_script(argv: list[str]) -> str | None:
    """The command string of ``sh -c '...'``, also with the option clustered (``bash -lc``, ``sh -ec``) or after
    other options (``bash --login -c``, ``bash -o pipefail -c``)."""
    i = 1
    while i < len(argv) and argv[i][:1] in ("-", "+"):
        word = argv[i]
        if word[0] == "-" and not word.startswith("--") and word[1:].isalpha() and "c" in word[1:]:
            return argv[i + 1] if i + 1 < len(argv) else None
        i += 2 if word in ("-o", "+o", "-O", "+O") else 1
    return None


def _env_port(env: dict[str, str]) -> int | None:
    return _port(env["PORT"].strip()) if "PORT" in env else None


def _gpu_device(env: dict[str, str]) -> int | None:
    text = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else None


def _server_port(program: str, body: list[str], rest: list[str], env: dict[str, str],
                 default: int | None) -> tuple[int | None, PortOrigin | None]:
    """A server's port: its flags, else PORT in its environment, else where its own convention puts it, else its
    documented default."""
    port, origin = _explicit_port(program, rest)
    if origin is not None:
        return port, origin
    if (port := _env_port(env)) is not None:
        return port, "PORT"
    if program == "ollama" and env.get("OLLAMA_HOST") and (port := _host_port(env["OLLAMA_HOST"].strip())):
        return port, "OLLAMA_HOST"
    positional = _positionals(rest[1:], ("-b", "--bind", "-d", "--directory", "-p", "--protocol"))
    if program == "-m" and body[1:2] == ["http.server"] and positional and (port := _port(positional[0])):
        return port, "positional"
    if program.endswith("manage.py") and positional and (port := _host_port(positional[0])):
        return port, "positional"
    return (default, "default") if default is not None else (None, None)


def _classify(argv: list[str], env: dict[str, str], own: dict[str, str]) -> Launch | None:
    """``env``: the variables the command runs with; ``own``: those set on its own line (``PORT=3000 cmd``)."""
    from fleet_watch.core.estimator.commandline import parse_command

    body = _interpreter(argv)
    if not body:
        return None
    program = body[0].rsplit("/", 1)[-1]
    if program in _CLIENTS:
        return None
    rest = body[1:]
    words = " ".join([program, *rest])
    name = program if program != "-m" else f"-m {rest[0] if rest else ''}"
    text = shlex.join(argv)
    device = _gpu_device(env)

    for pattern, framework, default_port in _MODEL_SERVERS:
        if pattern.match(words):
            parsed = parse_command(text if program != "-m" else "python " + shlex.join(body))
            port, origin = _server_port(program, body, rest, env, default_port)
            if parsed is None:
                return Launch("model_server", text, port, origin, framework, gpu_device=device, program=name)
            return Launch("model_server", text, port, origin, framework, parsed.model, parsed.ctx, parsed.kv_dtype,
                          device, name, parsed.flash_attn)

    for pattern, default_port in _DEV_SERVERS:
        if pattern.match(words):
            port, origin = _server_port(program, body, rest, env, default_port)
            return Launch("dev_server", text, port, origin, gpu_device=device, program=name)

    if program in _LISTENS_WITH_L:
        if not any(a == "-l" or (a.startswith("-") and not a.startswith("--") and "l" in a) for a in rest):
            return None
        value = _port(_flag_value(rest, ("-p",))) or next((p for a in rest if (p := _port(a))), None)
        return Launch("listener", text, value, "-p", program=name) if value is not None else None
    if program == "socat":
        m = next((m for a in rest if (m := re.match(r"(?i)^tcp[46]?-listen:(\d+)", a))), None)
        value = _port(m.group(1)) if m else None
        return Launch("listener", text, value, "positional", program=name) if value is not None else None
    port, origin = _explicit_port(program, rest)
    if port is None and (port := _env_port(own)) is not None:
        origin = "PORT"
    return Launch("listener", text, port, origin, gpu_device=device, program=name) if port is not None else None


def parse_launches(line: str, *, depth: int = 0) -> list[Launch]:
    """Every server launch or port binding in a shell command line, in order. ``export VAR=...`` and bare
    assignments reach the servers started after them; ``bash -c '...'`` is read inside (two levels deep at most)."""
    launches: list[Launch] = []
    exported: dict[str, str] = {}
    for words in simple_commands(line):
        own: dict[str, str] = {}
        argv = _strip_prefix(words, own)
        if not argv:
            exported.update(own)  # `PORT=3000` alone sets a shell variable that later commands may read
            continue
        env = {**exported, **own}
        base = argv[0].rsplit("/", 1)[-1]
        if base == "export":
            exported.update((m.group(1), m.group(2)) for word in argv[1:] if (m := _ASSIGNMENT.match(word)))
            continue
        if base in _SHELLS and (script := _shell_script(argv)) is not None:
            if depth < 2:
                prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
                launches.extend(parse_launches(prefix + script, depth=depth + 1))
            continue
        launch = _classify(argv, env, own)
        if launch is not None:
            launches.append(launch)
    return launches
