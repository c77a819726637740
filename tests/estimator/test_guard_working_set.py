"""The working set inside ``fleet guard``, through the real CLI: the README's Candle example, the same numbers as
``fleet estimate``, claims that already hold memory, and bad input that fails closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Children

README_KEYS = {"weights_mb", "kv_cache_mb", "activations_mb", "overhead_multiplier", "total_mb", "framework",
               "model_size", "quantization", "physical_ram_mb", "available_after_reserve_mb", "fits", "grounded",
               "source", "suggestion"}
GPU_KEYS = {"allowed", "reason", "detail", "requested_mb", "available_mb", "suggested_max_mb", "working_set"}
CANDLE = ("--gpu", "4096", "--framework", "candle", "--model", "qwen2.5-7B-Q4_K_M")


def guard_json(fleet: Any, *args: str) -> tuple[int, dict[str, Any]]:
    out = fleet("guard", *args, "--json")
    return out.returncode, out.json()


def test_readme_candle_example_denies_on_an_8gb_machine(fleet: Any) -> None:
    code, doc = guard_json(fleet, *CANDLE, "--ram-mb", "8192")
    gpu = doc["checks"]["gpu"]
    assert (code, doc["allowed"], gpu["allowed"]) == (1, False, False)
    assert set(gpu) >= GPU_KEYS
    assert set(gpu["working_set"]) >= README_KEYS
    assert gpu["reason"] == "working_set_exceeds_physical_ram"
    assert "exceeds physical RAM (8192MB)" in gpu["detail"]
    ws = gpu["working_set"]
    assert (ws["fits"], ws["framework"], ws["quantization"], ws["physical_ram_mb"]) == (False, "candle", "Q4_K_M", 8192)
    assert ws["available_after_reserve_mb"] == 6144
    assert ws["total_mb"] > 6144
    assert ws["suggestion"]
    assert ws["total_mb"] == ws["weights_mb"] + round(
        (ws["kv_cache_mb"] + ws["activations_mb"]) * ws["overhead_multiplier"]) + ws["fixed_overhead_mb"]


def test_readme_candle_example_allows_on_a_128gb_machine(fleet: Any) -> None:
    code, doc = guard_json(fleet, *CANDLE, "--ram-mb", "131072")
    ws = doc["checks"]["gpu"]["working_set"]
    assert (code, doc["allowed"], ws["fits"], ws["suggestion"]) == (0, True, True, None)
    assert ws["available_after_reserve_mb"] == 114688
    assert doc["checks"]["gpu"]["requested_mb"] == 4096
    assert "warning" in doc["checks"]["gpu"]  # the 4096MB claim is smaller than the working set


def test_physical_ram_in_config_plans_like_the_flag(fleet: Any, fleet_home: Path) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "physical_ram_mb": 8192}))
    code, doc = guard_json(fleet, *CANDLE)
    assert (code, doc["checks"]["gpu"]["reason"]) == (1, "working_set_exceeds_physical_ram")
    code, doc = guard_json(fleet, *CANDLE, "--ram-mb", "131072")  # the flag wins over the file
    assert code == 0


@pytest.mark.parametrize("extra", [(), ("--ctx", "8192"), ("--ctx", "4096", "--kv-dtype", "q8_0")])
def test_guard_and_estimate_give_the_same_numbers(fleet: Any, extra: tuple[str, ...]) -> None:
    common = ("--framework", "llama_cpp", "--model", "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "--ram-mb", "16384",
              *extra)
    _, doc = guard_json(fleet, *common)
    est = fleet("estimate", *common, "--json").json()
    ws = doc["checks"]["gpu"]["working_set"]
    skip = {"requested_mb"}
    assert {k: v for k, v in ws.items() if k not in skip} == est["working_set"]
    if extra:
        assert ws["context_tokens"] == int(extra[1])
    if "--kv-dtype" in extra:
        assert ws["kv_dtype"] == "q8_0"


def test_model_without_gpu_claims_its_working_set(fleet: Any) -> None:
    code, doc = guard_json(fleet, "--model", "qwen2.5-0.5B-Q8_0", "--framework", "llama_cpp", "--ctx", "4096")
    gpu = doc["checks"]["gpu"]
    assert code == 0
    assert doc["request"]["gpu_mb"] is None
    assert gpu["requested_mb"] == gpu["working_set"]["total_mb"] > 0


def test_registered_claims_shrink_what_is_available(fleet: Any, fleet_home: Path, children: Children) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "physical_ram_mb": 65536}))
    holder = children.sleeper()
    reg = fleet("register", "--pid", str(holder.pid), "--name", "big", "--workstream", "w", "--gpu", "54000")
    assert reg.returncode == 0, reg.stderr
    args = ("--framework", "llama_cpp", "--model", "qwen2.5-7B-Q4_K_M", "--ctx", "8192")
    code, doc = guard_json(fleet, *args)
    ws = doc["checks"]["gpu"]["working_set"]
    assert (ws["allocated_mb"], ws["available_after_reserve_mb"]) == (54000, 65536 - 8192 - 54000)
    assert code == 1
    assert doc["checks"]["gpu"]["reason"] == "working_set_exceeds_physical_ram"
    est = fleet("estimate", *args, "--json")
    assert est.returncode == 1
    assert est.json()["working_set"] == {k: v for k, v in ws.items() if k != "requested_mb"}
    # --ram-mb plans for another machine: nothing registered here holds its memory, and nothing is claimed from
    # this machine's ledger either (it has only 3344MB left; the model would be refused here).
    code, doc = guard_json(fleet, *args, "--ram-mb", "65536")
    planned = doc["checks"]["gpu"]
    assert (planned["working_set"]["allocated_mb"], planned["working_set"]["fits"]) == (0, True)
    assert (code, planned["requested_mb"], planned["reason"]) == (0, 0, "no GPU claim")
    holder.kill()
    holder.wait()
    code, doc = guard_json(fleet, *args)  # a dead holder frees its share, without a write
    assert code == 0, doc["checks"]["gpu"]
    assert doc["checks"]["gpu"]["working_set"]["allocated_mb"] == 0
    assert fleet("estimate", *args).returncode == 0


def test_unknown_model_is_not_a_guess_and_does_not_deny(fleet: Any) -> None:
    code, doc = guard_json(fleet, "--gpu", "1024", "--framework", "candle", "--model", "my-favourite-model")
    ws = doc["checks"]["gpu"]["working_set"]
    assert (code, ws["source"], ws["fits"], ws["grounded"]) == (0, "insufficient_input", None, False)
    assert "No estimate" in ws["suggestion"]


def test_human_output_shows_breakdown_and_suggestion(fleet: Any) -> None:
    out = fleet("guard", *CANDLE, "--ram-mb", "8192")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == "DENY"
    assert "working set" in lines[1]
    assert "exceeds physical RAM (8192MB)" in lines[1]
    text = out.stdout
    assert "weights" in text
    assert "kv_cache" in text
    assert "x 2.0" in text
    assert "Physical RAM available after reserve: 6144MB" in text
    assert "Suggestion: " in text
    assert "IQ" not in text  # Candle cannot load i-quants


@pytest.mark.parametrize(("args", "needle"), [
    (("--model", "qwen2.5-7B", "--ctx", "0"), "--ctx"),
    (("--model", "qwen2.5-7B", "--kv-dtype", "q3_weird"), "--kv-dtype"),
    (("--model", "qwen2.5-7B", "--ram-mb", "-5"), "--ram-mb"),
    (("--model", "qwen2.5-7B", "--framework", "exllama-nope"), "unknown framework"),
])
def test_bad_estimate_input_fails_closed(fleet: Any, args: tuple[str, ...], needle: str) -> None:
    out = fleet("guard", *args, "--json")
    doc = out.json()
    assert out.returncode == 2
    assert doc["allowed"] is False
    assert needle in doc["reason"]
    assert out.stderr == ""  # the one JSON document on stdout, nothing else


def test_estimate_says_which_machine_sizes_fit(fleet: Any) -> None:
    doc = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--framework", "candle", "--json").json()
    by_size = {m["memory_gb"]: m for m in doc["fits_on"]}
    assert by_size[8]["fits"] is False
    assert by_size[128]["fits"] is True
    flags = [m["fits"] for m in doc["fits_on"]]
    assert flags == sorted(flags)  # once it fits, it fits on every larger machine
    planned = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--framework", "candle", "--ram-mb", "8192",
                    "--json").json()["working_set"]
    assert (by_size[8]["total_mb"], by_size[8]["available_mb"]) == (planned["total_mb"],
                                                                     planned["available_after_reserve_mb"])
    text = fleet("estimate", "--model", "qwen2.5-7B-Q4_K_M", "--framework", "candle").stdout
    assert "Fits on (RAM, same context, no other workloads): 16 GB and up" in text


def test_vllm_fits_an_80gb_gpu_its_utilization_is_its_reserve(fleet: Any) -> None:
    out = fleet("guard", "--model", "Meta-Llama-3.1-8B-Instruct", "--framework", "vllm", "--ctx", "8192",
                "--ram-mb", "81920", "--json")
    ws = out.json()["checks"]["gpu"]["working_set"]
    assert ws["fits"] is True, ws
    assert (ws["total_mb"], ws["reserve_mb"], ws["available_after_reserve_mb"]) == (int(0.9 * 81920), 0, 81920)


def test_the_gpu_flag_does_not_change_the_working_set(fleet: Any, fleet_home: Path, children: Children) -> None:
    config = json.loads((fleet_home / "config.json").read_text())
    (fleet_home / "config.json").write_text(json.dumps({**config, "physical_ram_mb": 24576}))
    live, dead = children.sleeper(), children.sleeper()
    for proc, mb in ((live, "5000"), (dead, "4000")):
        assert fleet("register", "--pid", str(proc.pid), "--name", "w", "--workstream", "w",
                     "--gpu", mb).returncode == 0
    dead.kill()
    dead.wait()
    args = ("--model", "0.5B", "--framework", "llama_cpp", "--ctx", "4096")
    small = guard_json(fleet, "--gpu", "100", *args)[1]["checks"]["gpu"]
    large = guard_json(fleet, "--gpu", "60000", *args)[1]["checks"]["gpu"]  # the ledger prunes the dead claim
    est = fleet("estimate", *args, "--json").json()["working_set"]
    strip = ("requested_mb",)
    assert {k: v for k, v in small["working_set"].items() if k not in strip} == est
    assert {k: v for k, v in large["working_set"].items() if k not in strip} == est
    assert (small["working_set"]["requested_mb"], large["working_set"]["requested_mb"]) == (100, 60000)


def test_guard_errors_keep_the_contract_keys(fleet: Any) -> None:
    out = fleet("guard", "--model", "qwen2.5-7B", "--ctx", "0", "--json")
    doc = out.json()
    assert out.returncode == 2
    assert {"allowed", "request", "checks", "state"} <= set(doc)
    assert (doc["allowed"], doc["checks"]) == (False, {})


@pytest.mark.parametrize("extra", [("--ctx", "4096"), ("--kv-dtype", "q8_0"), ("--ram-mb", "8192")])
def test_model_flags_without_a_model_are_a_usage_error(fleet: Any, extra: tuple[str, ...]) -> None:
    out = fleet("guard", "--port", "18999", *extra, "--json")
    assert (out.returncode, out.json()["allowed"]) == (2, False)
    assert "--model" in out.json()["reason"]
