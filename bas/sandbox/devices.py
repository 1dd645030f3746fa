"""What a sandbox model's training record says about the machine it was trained on."""

from __future__ import annotations

import platform

import torch


def device_record(device: torch.device | str = "cpu", workers: int = 0) -> dict:
    """Where a model was trained: enough to say which figures a rerun should reproduce exactly."""
    device = torch.device(device)
    record = {"device": device.type, "cpu": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    if workers:
        record["render_workers"] = workers
    return record
