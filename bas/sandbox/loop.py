"""The one training loop of the sandbox's models (VAE, base model, CLIP, DINO, segmenter, judge).

Every sandbox model trains the same way: AdamW, a learning rate set each step by a schedule
(`lr_at`: linear warm-up, cosine decay to a tenth), a loss that is a function of the step
alone (its batch is drawn from the step's own seed), and a checkpoint in
`work_dir/<name>.pt` every `checkpoint_every` steps, so that a run stopped anywhere resumes
with exactly the weights of an uninterrupted one. What differs between models is passed in:
the state the checkpoint keeps, the loss of a step, gradient clipping, and what happens
after each optimizer step (an EMA update, a clamp).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
import torch

from bas.config import SandboxStage
from bas.io import atomic_path

log = logging.getLogger(__name__)


def stage_rng(seed: int, stage: str, step: int) -> np.random.Generator:
    """The random stream of one step of one stage: a function of (seed, stage, step) alone."""
    digest = hashlib.sha256(f"{seed}:{stage}:{step}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def lr_at(stage: SandboxStage, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Checkpointer:
    """A stage's resumable state in `work_dir/<stage>.pt`, written atomically every `every` steps."""

    def __init__(self, work_dir: Path, stage: str, every: int = 100):
        self.path = Path(work_dir) / f"{stage}.pt"
        self.every = every
        Path(work_dir).mkdir(parents=True, exist_ok=True)

    def load(self) -> Optional[dict]:
        if self.path.exists():
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            log.info("resuming %s at step %d", self.path, state["step"])
            return state
        return None

    def maybe_save(self, step: int, make_state: Callable[[], dict], force: bool = False) -> None:
        if force or (step % self.every == 0 and step > 0):
            with atomic_path(self.path) as tmp:
                torch.save(make_state(), tmp)


def progress(stage: str, step: int, total: int, started: float, first_step: int, **values) -> None:
    done = step - first_step
    rate = (time.time() - started) / max(1, done)
    shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
    log.info("%s step %d/%d %s (%.2f s/step, %.0f min left)", stage, step, total, shown, rate,
             rate * (total - step) / 60)


@dataclass
class LoopOutcome:
    resumed_at: int                 # the step the run started from (0: from scratch)
    losses: list[float]             # the losses of the steps this call ran
    cpu_s_per_step: float

    def final_loss(self, last: int) -> Optional[float]:
        return round(float(np.mean(self.losses[-last:])), 4) if self.losses else None


def train_steps(name: str, state: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int,
                lr_of: Callable[[int], float], loss_of: Callable[[int, Any], torch.Tensor], work_dir: Path, *,
                batches: Optional[Callable[[int], Iterable]] = None,
                clip: Optional[tuple[list[torch.nn.Parameter], float]] = None,
                after_step: Callable[[int], None] = lambda step: None,
                checkpoint_every: int = 100, log_every: int = 50) -> LoopOutcome:
    """Run steps `resumed_at..total_steps-1` of one model's training.

    `state` names what the checkpoint keeps (modules and the optimizer, each with
    `state_dict`/`load_state_dict`; the optimizer must be among them). Each step sets every
    group's lr to `lr_of(step)`, computes `loss_of(step, batch)` (`batch` from
    `batches(resumed_at)`, an iterable of the remaining steps' batches, or None), steps the
    optimizer (after clipping `clip = (params, max_norm)`), then calls `after_step(step)`.
    """
    ckpt = Checkpointer(work_dir, name, every=checkpoint_every)
    start = 0
    if (saved := ckpt.load()) is not None:
        for key, holder in state.items():
            holder.load_state_dict(saved[key])
        start = saved["step"]

    def snapshot(step: int) -> dict:
        return {"step": step, **{key: holder.state_dict() for key, holder in state.items()}}

    stream = batches(start) if batches is not None else (None for _ in range(start, total_steps))
    started, cpu_started, losses = time.time(), time.process_time(), []
    for step, batch in zip(range(start, total_steps), stream):
        for group in optimizer.param_groups:
            group["lr"] = lr_of(step)
        loss = loss_of(step, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
        optimizer.step()
        after_step(step)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            progress(name, step + 1, total_steps, started, start, loss=float(np.mean(losses[-log_every:])))
        ckpt.maybe_save(step + 1, lambda: snapshot(step + 1))
    ckpt.maybe_save(total_steps, lambda: snapshot(total_steps), force=True)
    return LoopOutcome(start, losses, round((time.process_time() - cpu_started) / max(1, total_steps - start), 3))
