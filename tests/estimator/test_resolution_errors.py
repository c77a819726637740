"""What a new user hit (issue #8): OS errors while resolving a model, files that are not files, the unknown-model
answer under ``--json``, and ``--ram-mb`` planning with a broken registry. All through the real CLI."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from fleet_watch.core.estimator.naming import shown

FAILURE_KEYS = {"allowed", "reason", "error", "exit_code"}


def test_a_300_character_model_name_is_not_known_not_a_crash(fleet: Any) -> None:
    name = "a" * 300
    for model in (name, name + ".gguf"):
        out = fleet("estimate", "--model", model, "--json")
        assert out.returncode == 3, out.stdout + out.stderr
        doc = out.json()
        assert (doc["error"], doc["exit_code"]) == ("not_found", 3)
        assert "Traceback" not in out.stderr


def test_a_name_too_long_for_the_file_system_inside_a_path_is_not_a_file(fleet: Any, tmp_path: Path) -> None:
    out = fleet("estimate", "--model", str(tmp_path / ("d" * 300) / "model.gguf"), "--json")
    assert (out.returncode, out.json()["error"]) == (3, "not_found")


def test_a_100000_character_name_is_not_echoed_whole(fleet: Any) -> None:
    name = "qwen-" + "x" * 100_000
    for args in (("--json",), ()):
        out = fleet("estimate", "--model", name, *args)
        assert out.returncode == 3
        assert len(out.stdout) + len(out.stderr) < 2000, (len(out.stdout), len(out.stderr))
        assert "100005 characters" in out.stdout + out.stderr


def test_guard_with_an_overlong_model_name_answers(fleet: Any) -> None:
    out = fleet("guard", "--model", "b" * 300, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.json()["checks"]["gpu"]["working_set"]["source"] == "insufficient_input"


def test_an_unreadable_hugging_face_cache_is_a_one_line_error(fleet: Any, tmp_path: Path) -> None:
    hub = tmp_path / ("h" * 300)  # a cache path this file system cannot hold
    out = fleet("estimate", "--model", "org/tiny", "--json", env={"HF_HUB_CACHE": str(hub)})
    assert out.returncode == 2, out.stdout + out.stderr
    doc = out.json()
    assert doc["error"] == "usage_error"
    assert "Hugging Face cache" in doc["reason"]
    assert "File name too long" in doc["reason"]
    assert len(doc["reason"]) < 400


def test_an_unknown_home_in_a_tilde_path_is_not_a_crash(fleet: Any) -> None:
    out = fleet("estimate", "--model", "~no-such-user-here/model.gguf", "--json")
    assert (out.returncode, out.json()["error"]) == (3, "not_found")


@pytest.mark.parametrize(("make", "kind"), [
    (lambda tmp: Path("/dev/zero"), "character device"),
    (lambda tmp: _fifo(tmp / "model"), "FIFO"),
    (lambda tmp: _socket(tmp / "model.sock"), "socket"),
])
def test_a_path_that_is_not_a_file_says_what_it_is(fleet: Any, tmp_path: Path, make: Any, kind: str) -> None:
    path = make(tmp_path)
    out = fleet("estimate", "--model", str(path), "--json", timeout=20)
    assert out.returncode == 2, out.stdout
    reason = out.json()["reason"]
    assert f"is a {kind}, not a model file" in reason
    assert "no such" not in reason


def test_a_gguf_named_device_says_what_it_is(fleet: Any, tmp_path: Path) -> None:
    fifo = _fifo(tmp_path / "model.gguf")
    out = fleet("estimate", "--model", str(fifo), "--json", timeout=20)
    assert out.returncode == 2
    assert out.json()["reason"].endswith("not a regular file (a FIFO)")


def test_unknown_model_json_is_a_failure_like_the_others(fleet: Any) -> None:
    out = fleet("estimate", "--model", "my-favourite-model", "--json")
    assert out.returncode == 3
    doc = out.json()
    assert set(doc) >= FAILURE_KEYS
    assert (doc["allowed"], doc["error"], doc["exit_code"]) == (False, "not_found", 3)
    assert doc["fits"] is None
    assert doc["working_set"]["fits"] is None
    assert doc["reason"] == "model 'my-favourite-model' is not a file, a cached repo, a known model or a size"
    # The shape every other failure has (a usage error, here) for comparison:
    bad = fleet("estimate", "--model", "qwen2.5-7B", "--ctx", "0", "--json").json()
    assert set(bad) >= FAILURE_KEYS


def test_ram_mb_planning_needs_no_registry(fleet: Any, fleet_home: Path) -> None:
    (fleet_home / "registry.db").write_bytes(b"this is not a SQLite database" * 100)
    planned = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--ram-mb", "16384", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert planned.json()["working_set"]["allocated_mb"] == 0
    here = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--json")  # this machine's claims are needed
    assert (here.returncode, here.json()["error"]) == (5, "database_error")


def test_shown_truncates_and_escapes() -> None:
    assert shown("abc") == "'abc'"
    long = shown("z" * 1000, limit=10)
    assert long == "'zzzzzzzzzz'... (1000 characters)"
    assert shown("a\nb") == "'a\\nb'"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the socket file stays
    return path
