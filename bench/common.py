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


def peak_rss_mb() -> float:
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
