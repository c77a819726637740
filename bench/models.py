"""Wall time of ``fleet models`` with N model servers of which H hang (default 20 and 5; target under 1.5 s).

The servers are the test stand-ins (``tests/servers/stand_in.py``) started under the real programs' names (ollama,
llama-server, vllm, sglang, lms), each listening on 127.0.0.1 and answering with the recorded response shapes; the
hung ones accept connections and never answer. ``fleet models --json`` runs as a fresh CLI process (what a user
pays: interpreter start, one process-table scan, one parallel HTTP round), several times; printed: wall time
(min / median / max), CPU of the CLI process, and how many servers answered.

Run it inside a private PID namespace so only these processes are scanned:
    unshare --pid --fork --mount-proc python bench/models.py
It signals only the processes it started.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "tests" / "servers" / "stand_in.py"
KINDS = [  # (FAKE_PROGRAM, argv)
    ("ollama", ["ollama", "serve"]),
    ("llama-server", ["llama-server", "-m", "/models/qwen2.5-7b-instruct-q4_k_m.gguf", "--port", "0"]),
    ("vllm", ["vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "0"]),
    ("sglang", ["-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B", "--port", "0"]),
    ("lmstudio", ["lms", "server", "start", "--port", "0"]),
]


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start(root: Path, n: int, hung: int) -> list[subprocess.Popen[str]]:
    bin_dir, pkgs = root / "bin", root / "pkgs" / "sglang"
    bin_dir.mkdir()
    pkgs.mkdir(parents=True)
    (pkgs / "__init__.py").write_text("")
    (pkgs / "launch_server.py").write_text(f"import runpy\nrunpy.run_path({str(STAND_IN)!r}, run_name='__main__')\n")
    for name in ("ollama", "llama-server", "vllm", "lms"):
        (bin_dir / name).write_text(f"#!{sys.executable}\nimport runpy\n"
                                    f"runpy.run_path({str(STAND_IN)!r}, run_name='__main__')\n")
        (bin_dir / name).chmod(0o755)
    procs = []
    for i in range(n):
        fake, argv = KINDS[i % len(KINDS)]
        cmd = [sys.executable, *argv] if argv[0] == "-m" else [str(bin_dir / argv[0]), *argv[1:]]
        env = {**os.environ, "PYTHONPATH": str(root / "pkgs"), "FAKE_PROGRAM": fake,
               "FAKE_MODE": "hang" if i < hung else "ok", "FAKE_PORT": "0"}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env))
    for p in procs:
        assert p.stdout is not None
        p.stdout.readline()  # listening
    return procs


def run(n: int, hung: int, repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir(mode=0o700)
        (home / "config.json").write_text(json.dumps({"gpu_total_mb": 65536, "gpu_reserve_mb": 8192}))
        procs = start(root, n, hung)
        try:
            env = {**os.environ, "FLEET_WATCH_HOME": str(home)}
            cmd = [sys.executable, "-m", "fleet_watch", "models", "--json"]
            subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the page cache and bytecode
            walls, cpus, answered = [], [], 0
            for _ in range(repeats):
                c0, t0 = cpu_children(), time.perf_counter()
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                walls.append(time.perf_counter() - t0)
                cpus.append(cpu_children() - c0)
                mine = {p.pid for p in procs}
                servers = [s for s in json.loads(out.stdout)["servers"] if s["pid"] in mine]
                answered = sum(1 for s in servers if s["reachable"])
                assert len(servers) == n, f"found {len(servers)} of {n} servers"
        finally:
            for p in procs:
                p.kill()
                p.wait()
                if p.stdout is not None:
                    p.stdout.close()
    return {"servers": n, "hung": hung, "answered": answered, "wall_min_s": round(min(walls), 3),
            "wall_median_s": round(statistics.median(walls), 3), "wall_max_s": round(max(walls), 3),
            "cpu_median_s": round(statistics.median(cpus), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--hung", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    r = run(args.servers, args.hung, args.repeats)
    print(f"fleet models: {r['servers']} servers, {r['hung']} hung, {r['answered']} answered")
    print(f"  wall  min {r['wall_min_s']} s  median {r['wall_median_s']} s  max {r['wall_max_s']} s "
          f"(target < 1.5 s)")
    print(f"  CPU of the CLI process (median): {r['cpu_median_s']} s")


if __name__ == "__main__":
    main()
