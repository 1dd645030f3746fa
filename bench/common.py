"""Shared measurement code for the benchmarks in bench/.

Each benchmark prints one JSON object per measurement on stdout and appends it, with the
date and device, to `bench/results.jsonl` (kept in the repository). Timings are medians of
repeated runs after warm-up; nothing here asserts a speed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)"


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last `reset_peak_rss()` (else since the process began)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_it(fn: Callable[[], object], repeats: int, warmup: int = 1,
            device: Optional[torch.device] = None) -> dict:
    """Median, min and max seconds of `fn` over `repeats` runs after `warmup` runs."""
    sync = (lambda: torch.cuda.synchronize(device)) if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    out = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}
    if device is not None and device.type == "cuda":
        out["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        out["peak_rss_mb"] = peak_rss_mb()
    return out


def summarise(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Time several CPU functions in alternating rounds (A B C, A B C, ...), so that load from
    other processes on a shared machine falls on all of them alike.

    Returns per name: median/min/max seconds, `times` (one per round, in round order, for
    paired ratios) and `peak_rss_mb` (the highest resident memory seen while it ran).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, float] = {name: 0.0 for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            reset_peak_rss()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], peak_rss_mb())
    return {name: {**summarise(times[name]), "times": times[name], "peak_rss_mb": peaks[name]} for name in fns}


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict:
    """Ratio of two interleaved timings: the ratio of medians, and the median/min/max of the
    per-round ratios (rounds are paired, so a slow moment of the machine cancels out)."""
    rounds = [a / b for a, b in zip(numerator, denominator)]
    return {"ratio": statistics.median(numerator) / statistics.median(denominator),
            "median": statistics.median(rounds), "min": min(rounds), "max": max(rounds), "rounds": len(rounds)}


def record(name: str, device: torch.device, profile: str, sizes: dict, measured: dict, **extra) -> dict:
    """Print one measurement as JSON and append it to bench/results.jsonl."""
    entry = {
        "name": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "profile": profile,
        "sizes": sizes,
        **measured,
        **extra,
    }
    line = json.dumps(entry, sort_keys=False)
    print(line, flush=True)
    if os.environ.get("BAS_BENCH_NO_RECORD") != "1":
        with open(RESULTS, "a") as f:
            f.write(line + "\n")
    return entry
