"""How long the estimator takes over large, damaged and hostile model files (the tests check what it answers;
this measures how fast, since tests hold no timing assertions).

Needs the ``test`` extra (``gguf``, ``numpy``, ``pytest``): the files are built with the tests' own builders.

1. ``read_header`` on a GGUF with Qwen2.5's 151,936-token vocabulary and as many merges (``gguf.GGUFReader``
   takes seconds on it).
2. ``read_gguf`` on a sparse 40 GB header of an 80-layer Q4_K_M model (the tensor data is a hole).
3. ``read_gguf`` refusing hostile counts in a 300 MB sparse file (16,777,215 metadata entries; a string array of
   268,435,456 elements).
4. ``fleet estimate --model <folder> --json`` as a whole cold process on broken Hugging Face folders.

Usage: ``python bench/estimator_inputs.py [--runs 5]``. Prints the median and the worst of ``--runs`` runs, in ms.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' builders: tests/estimator/conftest.py
sys.path.insert(0, str(Path(__file__).parent))
from common import fleet_cmd, installed_env  # noqa: E402


def _times(action: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        action()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


def _refused(action: Callable[[], object]) -> Callable[[], None]:
    from fleet_watch.errors import UsageError

    def run() -> None:
        try:
            action()
        except UsageError:
            return
        raise AssertionError("expected a refusal")
    return run


def _row(what: str, timing: tuple[float, float], note: str = "") -> None:
    print(f"| {what} | {timing[0]:.1f} | {timing[1]:.1f} | {note} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from tests.estimator.conftest import llama_meta, llama_tensors, write_gguf
    from tests.estimator.test_gguf_header import _with_vocab
    from tests.estimator.test_hostile_inputs import BROKEN_CONFIGS, HOSTILE_COUNTS, _folder, write_hostile_counts

    from fleet_watch.probes.gguf_header import read_header
    from fleet_watch.probes.modelfiles import read_gguf

    tmp = Path(tempfile.mkdtemp(prefix="fleet-estimator-inputs-"))
    try:
        print("| input | median ms | worst ms | note |")
        print("|---|---|---|---|")
        vocab = tmp / "vocab.gguf"
        _with_vocab(vocab, 151_936)
        _row("GGUF header, 151,936-token vocabulary + merges", _times(lambda: read_header(vocab), args.runs),
             f"{vocab.stat().st_size / 1e6:.0f} MB file")

        big = tmp / "big-Q4_K_M.gguf"
        layers, hidden, ff, n_vocab = 80, 8192, 28672, 128256
        write_gguf(big, "llama", llama_meta("llama", layers, hidden, 64, 8, ff, ctx=131072, file_type=15),
                   llama_tensors(layers, hidden, 64, 8, ff, n_vocab, matrix="Q4_K", embd="Q4_K"),
                   sparse_size=40 * 1024**3)
        _row("sparse 40 GB header, 80 layers Q4_K_M", _times(lambda: read_gguf(big), args.runs),
             f"{big.stat().st_blocks * 512 / 1e6:.1f} MB on disk")

        for name in sorted(HOSTILE_COUNTS):
            path = tmp / name
            write_hostile_counts(path)
            _row(f"hostile counts ({name}), refused", _times(_refused(functools.partial(read_gguf, path)), args.runs),
                 HOSTILE_COUNTS[name][3])

        home = tmp / "home"
        home.mkdir(mode=0o700)
        env = {**installed_env(), "FLEET_WATCH_HOME": str(home)}
        cmd = fleet_cmd()
        for name in sorted(BROKEN_CONFIGS):
            folder = _folder(tmp, name, BROKEN_CONFIGS[name][0])

            def cli(f: Path = folder) -> None:
                proc = subprocess.run([*cmd, "estimate", "--model", str(f), "--json"], env=env, capture_output=True,
                                      check=False)
                assert proc.returncode == 2, proc.stdout

            _row(f"`fleet estimate` on a broken HF folder ({name}), cold process", _times(cli, args.runs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
