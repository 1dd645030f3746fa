"""bench/cpu.py and bench/pipeline.py run and print complete measurement objects.

No timing is asserted: only that every figure of the issue is measured and well formed.
Run as child processes with BAS_BENCH_NO_RECORD=1, so bench/results.jsonl is not touched.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMON = {"name", "date", "device", "profile", "sizes"}
TIMING = {"median_s", "min_s", "max_s", "repeats"}
RATIO = {"ratio", "median", "min", "max", "rounds", "numerator", "denominator"}


def run_script(script: str, *args: str, timeout: int = 300) -> list[dict]:
    env = {**os.environ, "BAS_BENCH_NO_RECORD": "1"}
    results = REPO / "bench" / "results.jsonl"
    before = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (results.read_bytes() if results.exists() else None) == before   # nothing recorded
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), done.stdout[-2000:]   # JSON only on stdout
    return [json.loads(line) for line in lines]


def check_entry(entry: dict) -> None:
    assert COMMON <= set(entry), entry
    assert isinstance(entry["sizes"], dict) and entry["device"].startswith("cpu")
    if entry.get("kind") == "ratio":
        assert RATIO <= set(entry), entry
        assert entry["min"] <= entry["median"] <= entry["max"] and entry["ratio"] > 0
    else:
        assert TIMING <= set(entry) and "peak_rss_mb" in entry, entry
        assert entry["min_s"] <= entry["median_s"] <= entry["max_s"] and entry["peak_rss_mb"] > 0
        # An overhead is a difference of two timings (a cache hit skips the call it wraps, so it
        # can be negative); everything else is a time.
        assert entry["name"] == "pipeline.prefect_task_overhead" or entry["min_s"] > 0, entry


def by_name(entries: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in entries:
        out.setdefault(e["name"], []).append(e)
    return out


def test_cpu_benchmark_quick_prints_every_model_figure():
    entries = run_script("cpu.py", "--quick", "--threads", "1", "--only", "training,generation,scoring")
    for entry in entries:
        check_entry(entry)
        assert entry["profile"] == "tiny"
    names = by_name(entries)
    steps = names["cpu.train_step"]
    assert {(e["variant"], e["sizes"]["phase"]) for e in steps} == {
        (v, p) for v in ("bas", "plain", "official") for p in ("phase1", "phase2")}
    # The configured variants really differ where they should.
    bas = next(e for e in steps if e["variant"] == "bas" and e["sizes"]["phase"] == "phase1")
    official = next(e for e in steps if e["variant"] == "official" and e["sizes"]["phase"] == "phase1")
    plain = next(e for e in steps if e["variant"] == "plain" and e["sizes"]["phase"] == "phase1")
    assert plain["recording_processors"] == 0 < bas["recording_processors"] < official["recording_processors"]
    assert official["vae_encode_every_step"] and not bas["vae_encode_every_step"]
    for ratio in ("cpu.train_step.capture_overhead", "cpu.train_step.speedup_vs_official"):
        assert sorted(e["sizes"]["over"] for e in names[ratio]) == ["phase1", "phase2", "scene"]
    assert names["cpu.train_step.capture_overhead"][0]["target_max"] == 1.15
    for section in ("cpu.generation", "cpu.scoring"):
        assert sorted(e["mode"] for e in names[section]) == ["batched", "one_at_a_time"]
        assert all(e["images_per_s"] > 0 and e["sizes"]["images"] > 0 for e in names[section])
        assert len(names[section + ".batched_speedup"]) == 1


def test_pipeline_benchmark_quick_measures_prefect_and_dvc():
    entries = run_script("pipeline.py", "--quick")
    for entry in entries:
        check_entry(entry)
    names = by_name(entries)
    assert sorted(e["variant"] for e in names["pipeline.prefect_task_overhead"]) == ["cache_hit", "persisted", "plain"]
    assert all(e["library_call_s"] > 0 for e in names["pipeline.prefect_task_overhead"])
    for name in ("pipeline.prefect_first_flow_run", "pipeline.prefect_flow_run_overhead",
                 "pipeline.dvc_repro_no_change"):
        assert len(names[name]) == 1, name


def test_cpu_benchmark_refuses_unknown_sections():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "cpu.py"), "--only", "training,gpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "BAS_BENCH_NO_RECORD": "1"})
    assert done.returncode == 2 and "unknown section(s) gpu" in done.stderr
