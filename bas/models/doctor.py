"""`bas models check`: are the models here, what is this machine, and what will fit on it.

    report = check(cfg)          # Report: models present, device, disk, per-method memory
    print(report.text())         # the report a user reads
    report.ok                    # False when a model is missing (the CLI exits 1)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bas.config import Config
from bas.models.fetch import Presence, hf_cache_dir, human_size, present, sd21_models
from bas.models.memory import (GB, HEADROOM, choose_options, device_memory_bytes, measured, method_peak,
                               sd21_parameter_counts, switched_options)


@dataclass
class Device:
    kind: str                         # "cuda" | "cpu"
    name: str
    memory_bytes: Optional[int]       # VRAM of the GPU; on the CPU the RAM free (what training.memory: auto fills)
    bf16: bool

    @classmethod
    def detect(cls) -> "Device":
        import torch   # torch: only to probe the device; the rest of the check reads files

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return cls("cuda", props.name, int(props.total_memory), bool(torch.cuda.is_bf16_supported()))
        return cls("cpu", "CPU (no CUDA device found)", int(device_memory_bytes(torch.device("cpu"))), False)


@dataclass
class MethodFit:
    method: str
    need: dict[str, int]              # phase -> peak bytes without options
    options: tuple[str, ...]          # the options picked for the VRAM found
    need_with_options: int
    fits: Optional[bool]              # None when the memory size is unknown


@dataclass
class Report:
    profile: str
    models: list[Presence] = field(default_factory=list)
    device: Optional[Device] = None
    disk_free: dict[str, int] = field(default_factory=dict)
    methods: list[MethodFit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    step_source: str = "measured in fp32 by bench/memory.py, docs/BENCHMARKS.md"
    budget: str = "an unknown memory size"      # what the methods are judged against

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.models)

    def text(self) -> str:
        lines = [f"profile {self.profile}", "", "models:"]
        if not self.models:
            lines.append("  (nothing to download for this profile)")
        for p in self.models:
            if p.ok:
                where = "" if p.model.local else f" in {p.where}"
                lines.append(f"  ok       {p.model.what}: {p.model.source}, {human_size(p.size)}{where}")
            else:
                lines.append(f"  MISSING  {p.problem()}")
        d = self.device
        lines += ["", "device:"]
        if d is not None:
            vram = f", {d.memory_bytes / GB:.1f} GB{'' if d.kind == 'cuda' else ' of RAM free'}" \
                if d.memory_bytes else ""
            lines.append(f"  {d.kind}: {d.name}{vram}, bf16 {'yes' if d.bf16 else 'no'}")
        lines += ["", "free disk:"] + [f"  {human_size(n):>9}  {where}" for where, n in self.disk_free.items()]
        if self.methods:
            lines += ["", f"peak memory per method at 512 px (weights, gradients and AdamW moments counted; "
                          f"the step's activations {self.step_source}), and the options training.memory: auto "
                          f"picks for {self.budget} less {HEADROOM:.0%}:"]
            for m in self.methods:
                phases = ", ".join(f"{phase} {n / GB:.1f} GB" for phase, n in m.need.items())
                opts = "+".join(m.options) or "no memory options"
                verdict = "" if m.fits is None else (" fits" if m.fits else " does NOT fit")
                lines.append(f"  {m.method:<22} {phases}; with {opts}: {m.need_with_options / GB:.1f} GB{verdict}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _disk_free(paths: list[Path]) -> dict[str, int]:
    out = {}
    for path in paths:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        out[str(path)] = shutil.disk_usage(probe).free
    return out


def check(cfg: Config, recipes: dict) -> Report:
    """The report for `cfg.models.profile`; `recipes`: method -> MethodRecipe whose memory to judge."""
    report = Report(cfg.models.profile)
    if cfg.models.profile == "sd21":
        report.models = [present(m) for m in sd21_models(cfg.models)]
    elif cfg.models.profile == "sandbox":
        report.notes.append("the sandbox models are bundled with bas or trained by `bas sandbox train`")
    else:
        report.notes.append("the tiny profile's random models are built on first use; nothing to download")
    report.device = Device.detect()
    report.disk_free = _disk_free([hf_cache_dir(), Path(cfg.paths.storage_root)])
    if cfg.models.profile == "sd21":
        counts = sd21_parameter_counts()
        table = measured()
        if table is None:
            report.step_source = "not measured: state only"
        limit = cfg.training.memory_limit_gb
        d = report.device
        vram = limit * 1e9 if limit is not None else d.memory_bytes
        if vram:
            report.budget = f"{vram / GB:.1f} GB " + ("(training.memory_limit_gb)" if limit is not None else
                                                      "of VRAM" if d.kind == "cuda" else "of RAM free")
        batch = cfg.training.batch_size
        # As the engine runs: bf16 autocast on a GPU keeps cast copies of the trained weights.
        autocast = report.device.kind == "cuda" and cfg.training.mixed_precision
        switched = switched_options(cfg.training)
        for method, recipe in recipes.items():
            need = method_peak(recipe, batch, counts, (), table, autocast)
            if not need:
                continue
            choice = choose_options(recipe, batch, counts, table, vram if vram else float("inf"), autocast, switched)
            report.methods.append(MethodFit(method, need, choice.options, choice.need_bytes,
                                            choice.fits if vram else None))
        if report.device.kind != "cuda":
            report.notes.append("no CUDA device: the sd21 profile runs on the CPU only as a slow rehearsal; "
                                "docs/BENCHMARKS.md says which methods fit a 12-80 GB GPU")
    return report
