"""The one training engine: every method is a recipe (params.yaml `methods:`) this loop runs.

    result = train_scene(cfg, "bas", scene)       # -> <runs>/bas/<scene_id>/train/

Reads as setup / train / save / cleanup. Setup loads the base model, makes (or reuses) the
class images, adds one token per concept, caches the VAE posteriors of the training images
and installs attention recording only on the layers a loss reads. Each phase gets its own
AdamW over the parameters its recipe names; the loss is the weighted sum of the terms in
`bas.training.losses` and of the recipe's named attention terms the phase weights
(`term_weights`, computed by `bas.training.terms` with their step and timestep schedules). A phase that trains `tokens` without the whole text encoder
changes only the new embedding rows: the other rows' gradients are zeroed and the rows
restored after every step, so they stay bitwise equal.

Output, built in a hidden temporary folder and renamed to `train/` only when complete:
`tokens.<phase>.safetensors` after each phase, `tokens.safetensors` (final),
`log.jsonl` (one line per step), `weights/trained.safetensors` when
`training.keep_weights`, and `train.json` last. A finished run with the same key (method,
recipe, scene content, model, training settings) is not redone; a killed one leaves only
the hidden folder, removed when the scene is trained again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from bas import attention as attn, paths
from bas.attention import token_positions
from bas.config import Config, MethodRecipe, PhaseRecipe, to_dict
from bas.errors import BasError, ConfigError, DataError
from bas.io import atomic_dir, atomic_write_json, atomic_write_text, sha256_bytes
from bas.models import load_diffusion, memory, pick_device
from bas.paths import (LOG_FILE, RESUME_DIR, RESUME_STATE, RESUME_TENSORS, TOKENS_FILE, TRAIN_DIR, TRAIN_JSON,
                       TRAINED_WEIGHTS_FILE)
from bas.tokens import add_placeholder_tokens, save_tokens, save_trained_weights
from bas.training.data import SOURCES, ConceptSampler, PriorSource, SceneLike, prompt_ids
from bas.training.losses import downsample_mask, masked_diffusion_loss, prior_loss
from bas.training.methods import get_recipe, trains_weights, uses_prior
from bas.training.prior import class_prompts, ensure_class_images, model_identity, sampler_identity
from bas.training.terms import TermInputs, compute_term, term_active

log = logging.getLogger(__name__)

KV_PATTERN = re.compile(r"\.attn2\.to_(k|v)\.")
K_PATTERN = re.compile(r"\.attn2\.to_k\.")
# Trainable groups that are a subset of the UNet's parameters, by name pattern.
UNET_GROUPS = {"cross_attention_kv": KV_PATTERN, "cross_attention_k": K_PATTERN}

# Training settings that do not change what is learned (so they are not part of a run's key):
# gradient_checkpointing, cache_latents and attention_capture change how a step is computed,
# with results equal up to rounding (tested).
# memory_limit_gb only bounds what `memory: auto` may pick, as the device's size does.
_KEY_EXCLUDED = ("progress_bar", "keep_weights", "gradient_checkpointing", "cache_latents", "attention_capture",
                 "memory_limit_gb")


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any values (stable across runs and machines)."""
    return int(sha256_bytes(*(str(p).encode() for p in parts))[:8], 16) % (2**31)


def phase_token_file(phase: str) -> str:
    return f"tokens.{phase}.safetensors"


def _recipe_key(recipe: MethodRecipe) -> dict:
    """The recipe as a run key sees it: recipe keys added later (attention terms, term weights,
    prior prompt and count, token init, a term's timestep source) are left out while unused,
    so runs finished before they existed keep their key. The method's kind decides nothing a
    run computes, so it is not part of the key."""
    data = to_dict(recipe)
    del data["kind"]
    _bas_term_as_attention_loss(data)
    if not data["attention_terms"]:
        del data["attention_terms"]
    for term in data.get("attention_terms", {}).values():
        if term["timestep_source"] == "instance":
            del term["timestep_source"]
    for key, unused in (("prior_prompt", None), ("prior_num_images", None), ("token_init", "class_name")):
        if data[key] == unused:
            del data[key]
    for phase in data["phases"].values():
        if not phase["term_weights"]:
            del phase["term_weights"]
    return data


# BaS's loss as it hashed when it was a recipe field of its own (`attention_loss`, weighted by
# `loss_weights.attention`), so that runs finished then keep their key.
_BAS_TERM_DEFAULTS = {"kind": "bas", "from_step": 0, "until_step": None, "max_timestep": None, "options": {},
                      "timestep_source": "instance"}


def _bas_term_as_attention_loss(data: dict) -> None:
    term = data["attention_terms"].get("attention")
    if term is None or {k: v for k, v in term.items() if k != "layers"} != _BAS_TERM_DEFAULTS:
        return
    del data["attention_terms"]["attention"]
    data["attention_loss"] = {"kind": "bas", "layers": term["layers"]}
    for phase in data["phases"].values():
        phase["loss_weights"]["attention"] = phase["term_weights"].pop("attention", 0.0)


def run_key(cfg: Config, method: str, recipe: MethodRecipe, scene: SceneLike) -> str:
    """What a finished run depends on; a run with another key is trained again."""
    training = {k: v for k, v in to_dict(cfg.training).items() if k not in _KEY_EXCLUDED}
    # The memory setting is in the key as set, never as resolved (that depends on the device):
    # "auto" may add 8-bit AdamW, whose results differ slightly. "manual" keys as before it existed.
    if training["memory"] == "manual":
        del training["memory"]
    settings = {"method": method, "recipe": _recipe_key(recipe), "scene": scene.content_hash,
                "model": model_identity(cfg.models), "gpu_dtype": cfg.models.gpu_dtype, "training": training}
    if uses_prior(recipe):
        settings["class_image_sampler"] = sampler_identity()   # the class images' pixels depend on it
    return sha256_bytes(json.dumps(settings, sort_keys=True).encode())[:32]


def read_train_json(train_dir: Path) -> Optional[dict]:
    try:
        return json.loads((Path(train_dir) / TRAIN_JSON).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_complete(train_dir: Path, key: str, recipe: MethodRecipe, keep_weights: bool) -> bool:
    info = read_train_json(train_dir)
    if info is None or info.get("run_key") != key or not (Path(train_dir) / TOKENS_FILE).exists():
        return False
    return not (keep_weights and trains_weights(recipe)) or (Path(train_dir) / TRAINED_WEIGHTS_FILE).exists()


def remove_partial_runs(run_dir: Path) -> None:
    """Delete what a killed run left (`atomic_dir`'s hidden temporary folders)."""
    for stale in [*Path(run_dir).glob(f".{TRAIN_DIR}.*"), *Path(run_dir).glob(f".{RESUME_DIR}.*")]:
        log.info("removing the unfinished run %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


@dataclass
class TrainResult:
    train_dir: Path
    skipped: bool               # a finished run with the same key was already there
    summary: dict


def train_scene(cfg: Config, method: str, scene: SceneLike, run_dir: Optional[Path] = None, parts=None,
                device: Optional[torch.device] = None) -> TrainResult:
    """Train `method` on `scene` into `run_dir/train` (default `<runs>/<method>/<scene_id>`).

    `parts` (a `DiffusionParts` of the base model) is modified in place; by default the
    base model of `cfg.models` is loaded.
    """
    recipe = get_recipe(cfg, method)
    run_dir = Path(run_dir) if run_dir is not None else paths.run_dir(cfg, method, scene.scene_id)
    train_dir = run_dir / TRAIN_DIR
    key = run_key(cfg, method, recipe, scene)
    if is_complete(train_dir, key, recipe, cfg.training.keep_weights):
        log.info("%s / %s: already trained (%s)", method, scene.scene_id, train_dir)
        return TrainResult(train_dir, True, read_train_json(train_dir) or {})
    remove_partial_runs(run_dir)
    resume_dir = run_dir / RESUME_DIR
    trainer = Trainer(cfg, method, recipe, scene, parts=parts, device=device)
    try:
        with atomic_dir(train_dir) as out:
            trainer.setup()
            trainer.resume(resume_dir, key, out)
            trainer.train(out, resume_dir=resume_dir, key=key)
            summary = trainer.save(out, key)
    finally:
        trainer.cleanup()
    shutil.rmtree(resume_dir, ignore_errors=True)
    return TrainResult(train_dir, False, summary)


@dataclass
class PhaseState:
    """The optimiser side of one running phase."""

    name: str
    recipe: PhaseRecipe
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rows_frozen: bool                       # only the new token rows may change
    frozen_rows: Optional[torch.Tensor] = None   # (V,) bool: rows restored after each step
    original_embeddings: Optional[torch.Tensor] = None  # (V, D)
    trained_names: dict[str, list[str]] = field(default_factory=dict)
    step: int = 0                           # steps done in this phase (term schedules count these)


class Trainer:
    """One method on one scene. `setup()`, `train(out)`, `save(out, key)`, `cleanup()`."""

    def __init__(self, cfg: Config, method: str, recipe: MethodRecipe, scene: SceneLike, parts=None,
                 device: Optional[torch.device] = None) -> None:
        self.cfg, self.method, self.recipe, self.scene = cfg, method, recipe, scene
        self.parts = parts
        self.device = device
        self.history: list[dict] = []
        self.phase_summaries: list[dict] = []
        self.trained_names: dict[str, set[str]] = {"unet": set(), "text_encoder": set()}
        self.phase: Optional[PhaseState] = None
        self.store: Optional[attn.AttentionStore] = None
        self._original_processors: Optional[dict] = None
        self._recording: tuple[str, ...] = ()       # attention blocks recording maps now
        self.recording_processors: list[str] = []   # processor keys that record maps now
        self._started = time.time()
        self.memory: dict = {"setting": cfg.training.memory, "options": []}   # decided in setup()

    # ------------------------------------------------------------------ setup

    def active_phases(self) -> list[tuple[str, PhaseRecipe]]:
        return [(name, phase) for name, phase in self.recipe.phases.items() if phase.steps > 0]

    def setup(self) -> None:
        self._setup_models()
        self._setup_random()
        self._setup_prior()      # before tokens and processors: the base model makes the class images
        self._setup_tokens()
        self._setup_data()
        self._setup_attention()

    def _setup_models(self) -> None:
        if self.parts is None:
            self.parts = load_diffusion(self.cfg.models)
        self.device = self.device or pick_device()
        gpu = self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.cfg.models.gpu_dtype] \
            if gpu and self.cfg.training.mixed_precision else None
        p = self.parts
        for module in (p.unet, p.vae, p.text_encoder):
            module.to(self.device)
            if any(q.dtype != torch.float32 for q in module.parameters()):
                module.float()                            # fp32 master weights; autocast computes
            module.requires_grad_(False)
        p.vae.eval()
        p.unet.train()
        p.text_encoder.train()
        if self.cfg.training.use_8bit_adam and not memory.bitsandbytes_installed():
            raise BasError("params: training.use_8bit_adam = true needs the bitsandbytes package "
                           "(in requirements.txt; CUDA or CPU), or set it to false")
        self.memory = self._memory_choice()
        if "gradient_checkpointing" in self.memory["options"]:
            p.unet.enable_gradient_checkpointing()
            p.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # fp16 needs loss scaling; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def _memory_choice(self) -> dict:
        """The memory options this run uses: the switches, and with `training.memory: auto` what
        the largest phase needs to fit the device (recorded in train.json)."""
        t = self.cfg.training
        switched = memory.switched_options(t)
        if t.memory == "manual":
            return {"setting": "manual", "options": list(switched)}
        p = self.parts
        counts = memory.counts_of(p.unet, p.vae, p.text_encoder)
        # The step memory was measured on the sd21 architectures; other profiles count their state.
        table = memory.measured() if p.profile == "sd21" else None
        budget = t.memory_limit_gb * 1e9 if t.memory_limit_gb is not None else \
            memory.device_memory_bytes(self.device, resident_model_bytes=memory.weight_bytes(counts))
        choice = memory.choose_options(self.recipe, t.batch_size, counts, table, budget,
                                       autocast=self.amp_dtype is not None, switched_on=switched)
        options = list(choice.options)
        record = {"setting": "auto", "options": options, "budget_bytes": int(choice.budget_bytes),
                  "need_bytes": int(choice.need_bytes), "fits": choice.fits, "measured": table is not None}
        level = logging.INFO if choice.fits else logging.WARNING
        log.log(level, "memory: %s (largest phase %.1f GB of %.1f GB%s)", "+".join(options) or "no options needed",
                choice.need_bytes / 1e9, choice.budget_bytes / 1e9,
                "" if choice.fits else "; it may not fit even with every option: lower training.batch_size "
                "or use a device with more memory")
        return record

    def _setup_random(self) -> None:
        self.seed = derive_seed("train", self.cfg.training.seed, self.scene.scene_id)
        self.rng = random.Random(self.seed)                                # sample choices
        self.generator = torch.Generator("cpu").manual_seed(self.seed)    # noise, timesteps, latents

    def _setup_prior(self) -> None:
        """Class images by prompt: one set (BaS), or one per concept class when the recipe's
        `prior_prompt` has {class_name} (a sample then draws a class image of one of its
        concepts' classes)."""
        self.prior: dict[str, PriorSource] = {}
        self.prior_ids: dict[str, torch.Tensor] = {}
        if not uses_prior(self.recipe):
            return
        self.prior_template = self.recipe.prior_prompt or self.cfg.training.prior_images.prompt
        self.prior_class_rng = random.Random(derive_seed("prior-class", self.seed))
        self.parts.unet.eval()
        prompts = class_prompts(self.prior_template, self.scene.class_names)
        for prompt in prompts:
            images = ensure_class_images(self.cfg, self.parts, dtype=self.amp_dtype, prompt=prompt,
                                         num_images=self.recipe.prior_num_images)
            # One prompt keeps the stream BaS always had; several get one stream each.
            rng = random.Random(derive_seed("prior", self.seed) if len(prompts) == 1
                                else derive_seed("prior", self.seed, prompt))
            self.prior[prompt] = PriorSource(self.parts, images, rng, self.generator,
                                             cache_latents=self.cfg.training.cache_latents)
            self.prior_ids[prompt] = prompt_ids(self.parts.tokenizer, [prompt], self.device)   # (1, 77)
        self.parts.unet.train()

    def _prior_prompt_for(self, concepts: list[int]) -> str:
        if "{class_name}" not in self.prior_template:
            return self.prior_template
        concept = concepts[self.prior_class_rng.randrange(len(concepts))]
        return self.prior_template.format(class_name=self.scene.class_names[concept])

    def _setup_tokens(self) -> None:
        p = self.parts
        try:
            self.tokens, self.token_ids = add_placeholder_tokens(p.tokenizer, p.text_encoder, self.scene.class_names,
                                                                 init=self.recipe.token_init)
        except DataError as err:
            raise ConfigError(f"params: methods.{self.method}.token_init: {err}") from None
        p.text_encoder.to(self.device)   # resized embedding

    def _setup_data(self) -> None:
        data = self.recipe.data
        sampler = ConceptSampler(len(self.scene.masks), data.concepts_per_sample, self.rng)
        source = SOURCES[data.source]
        self.source = source(self.scene, self.parts, sampler, self.tokens, data.prompt_template, data.token_joiner,
                             data.flip_p, self.rng, self.generator, self.device,
                             cache_latents=self.cfg.training.cache_latents)
        self.latent_side = self.parts.resolution // self.parts.vae_scale_factor

    def phase_terms(self, recipe: PhaseRecipe) -> dict[str, float]:
        """The recipe's attention terms this phase weights above 0, name -> weight."""
        return {name: weight for name, weight in recipe.term_weights.items() if weight > 0}

    def recording_layers(self, recipe: PhaseRecipe) -> tuple[str, ...]:
        """Attention blocks whose maps a phase's attention terms read."""
        layers: list[str] = []
        for name in self.phase_terms(recipe):
            layers += self.recipe.attention_terms[name].layers
        return tuple(dict.fromkeys(layers))

    def _setup_attention(self) -> None:
        if any(self.recording_layers(phase) for _, phase in self.active_phases()):
            needs_heads = any(self.recipe.attention_terms[name].needs_heads
                              for _, phase in self.active_phases() for name in self.phase_terms(phase))
            self.store = attn.AttentionStore(average_heads=not needs_heads)
            self._original_processors = dict(self.parts.unet.attn_processors)

    def _set_recording(self, layers: tuple[str, ...]) -> None:
        """Recording processors on the blocks a phase's losses read; SDPA everywhere else."""
        if layers == self._recording:
            return
        if self._recording:
            self.parts.unet.set_attn_processor(dict(self._original_processors))
            self.recording_processors = []
        if layers and self.cfg.training.attention_capture == "every_layer":
            # The official code's way, kept to benchmark against: every layer, materialised.
            self.recording_processors = attn.install_every_layer(self.parts.unet, self.store)
        elif layers:
            self.recording_processors = attn.install(self.parts.unet, layers, self.store)
        self._recording = layers

    # ------------------------------------------------------------------ phases

    def _phase_parameters(self, recipe: PhaseRecipe) -> tuple[list[torch.nn.Parameter], bool, dict[str, list[str]]]:
        p = self.parts
        p.unet.requires_grad_(False)
        p.text_encoder.requires_grad_(False)
        names: dict[str, list[str]] = {"unet": [], "text_encoder": []}
        trainable = set(recipe.trainable)
        if "unet" in trainable:
            p.unet.requires_grad_(True)
            names["unet"] = [n for n, _ in p.unet.named_parameters()]
        else:
            patterns = [UNET_GROUPS[group] for group in sorted(trainable & set(UNET_GROUPS))]
            for n, param in p.unet.named_parameters():
                if any(pattern.search("." + n) for pattern in patterns):
                    param.requires_grad_(True)
                    names["unet"].append(n)
        rows_frozen = False
        if "text_encoder" in trainable:
            p.text_encoder.requires_grad_(True)
            names["text_encoder"] = [n for n, _ in p.text_encoder.named_parameters()]
        elif "tokens" in trainable:
            p.text_encoder.get_input_embeddings().weight.requires_grad_(True)
            rows_frozen = True
        params = [q for q in p.unet.parameters() if q.requires_grad] + \
                 [q for q in p.text_encoder.parameters() if q.requires_grad]
        return params, rows_frozen, names

    def _optimizer(self, params: list[torch.nn.Parameter], recipe: PhaseRecipe) -> torch.optim.Optimizer:
        kwargs = dict(lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay, eps=recipe.eps)
        if "use_8bit_adam" in self.memory["options"]:
            import bitsandbytes as bnb   # optional dependency (checked in _setup_models)

            return bnb.optim.AdamW8bit(params, **kwargs)
        return torch.optim.AdamW(params, **kwargs)

    def start_phase(self, name: str, recipe: PhaseRecipe) -> PhaseState:
        # diffusers: only when training runs (bas.done imports this module through bas.training)
        from diffusers.optimization import get_scheduler

        params, rows_frozen, names = self._phase_parameters(recipe)
        optimizer = self._optimizer(params, recipe)
        schedule = recipe.lr_schedule
        if schedule == "constant" and recipe.warmup_steps > 0:
            schedule = "constant_with_warmup"
        scheduler = get_scheduler(schedule, optimizer=optimizer, num_warmup_steps=recipe.warmup_steps,
                                  num_training_steps=recipe.steps)
        state = PhaseState(name, recipe, params, optimizer, scheduler, rows_frozen, trained_names=names)
        if rows_frozen:
            weight = self.parts.text_encoder.get_input_embeddings().weight
            frozen = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)  # (V,)
            frozen[self.token_ids] = False
            state.frozen_rows = frozen
            state.original_embeddings = weight.detach().clone()                           # (V, D)
        self._set_recording(self.recording_layers(recipe))
        self.phase = state
        return state

    def enter_phase(self, name: str) -> PhaseState:
        """Start the recipe's phase `name` alone (after `setup()`), so that single `step()`s can
        be run and measured outside `train()` (benchmarks, probes)."""
        if name not in self.recipe.phases:
            raise BasError(f"method {self.method}: no phase {name!r} (phases: {', '.join(self.recipe.phases)})")
        return self.start_phase(name, self.recipe.phases[name])

    def train(self, out: Path, resume_dir: Optional[Path] = None, key: Optional[str] = None) -> None:
        """Run the phases not yet done; with `resume_dir`, keep the state after each phase that
        another follows there (`resume` restarts from it)."""
        done = {summary["name"] for summary in self.phase_summaries}
        todo = [(name, phase) for name, phase in self.active_phases() if name not in done]
        total = sum(phase.steps for _, phase in todo)
        progress = _progress(total, f"{self.method} {self.scene.scene_id}", self.cfg.training.progress_bar)
        with progress as bar:
            for i, (name, recipe) in enumerate(todo):
                started = time.time()
                state = self.start_phase(name, recipe)
                for _ in range(recipe.steps):
                    record = self.step()
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record["terms"].items()}, refresh=False)
                self.end_phase(state, out, time.time() - started)
                if resume_dir is not None and i + 1 < len(todo):
                    self.keep_phase_state(resume_dir, key, out)

    def keep_phase_state(self, resume_dir: Path, key: str, out: Path) -> None:
        """Write what resuming after the phase just finished needs: the token rows, the weights
        trained so far, every random state, the log, and the phase outputs already in `out`."""
        with atomic_dir(resume_dir) as tmp:
            for produced in out.iterdir():
                shutil.copy2(produced, tmp / produced.name)
            save_file(self._trained_tensors(), tmp / RESUME_TENSORS)
            torch.save({"run_key": key, "history": self.history, "phase_summaries": self.phase_summaries,
                        "trained_names": {k: sorted(v) for k, v in self.trained_names.items()},
                        "rng": self.rng.getstate(), "generator": self.generator.get_state(),
                        "prior": {prompt: (list(source.order), source.rng.getstate())
                                  for prompt, source in self.prior.items()},
                        "prior_class_rng": self.prior_class_rng.getstate() if self.prior else None,
                        "scaler": self.scaler.state_dict()}, tmp / RESUME_STATE)

    def _trained_tensors(self) -> dict[str, torch.Tensor]:
        p = self.parts
        rows = p.text_encoder.get_input_embeddings().weight[self.token_ids]                 # (k, D)
        tensors = {"tokens": rows.detach().cpu().contiguous()}
        for module_name, names in self.trained_names.items():
            params = dict(getattr(p, module_name).named_parameters())
            for name in sorted(names):
                tensors[f"{module_name}.{name}"] = params[name].detach().cpu().contiguous()
        return tensors

    def resume(self, resume_dir: Path, key: str, out: Path) -> None:
        """Continue after the last phase a stopped training finished (after `setup()`); state
        kept for another run key is discarded."""
        state_file = resume_dir / RESUME_STATE
        if not state_file.exists():
            return
        state = torch.load(state_file, weights_only=False)
        if state.get("run_key") != key:
            log.info("%s: kept for other inputs, discarded", resume_dir)
            shutil.rmtree(resume_dir, ignore_errors=True)
            return
        p = self.parts
        tensors = load_file(resume_dir / RESUME_TENSORS)
        params = {f"{module_name}.{name}": param for module_name in self.trained_names
                  for name, param in getattr(p, module_name).named_parameters()}
        with torch.no_grad():
            embeddings = p.text_encoder.get_input_embeddings().weight
            embeddings[self.token_ids] = tensors.pop("tokens").to(embeddings.device, embeddings.dtype)
            for qualified, value in tensors.items():
                params[qualified].copy_(value.to(params[qualified].device, params[qualified].dtype))
        self.history = state["history"]
        self.phase_summaries = state["phase_summaries"]
        self.trained_names = {k: set(v) for k, v in state["trained_names"].items()}
        self.rng.setstate(state["rng"])
        self.generator.set_state(state["generator"])
        for prompt, (order, rng_state) in state["prior"].items():
            self.prior[prompt].order = list(order)
            self.prior[prompt].rng.setstate(rng_state)
        if state["prior_class_rng"] is not None:
            self.prior_class_rng.setstate(state["prior_class_rng"])
        self.scaler.load_state_dict(state["scaler"])
        for kept in resume_dir.iterdir():
            if kept.name not in (RESUME_STATE, RESUME_TENSORS):
                shutil.copy2(kept, out / kept.name)
        log.info("%s / %s: resuming after phase %s", self.method, self.scene.scene_id,
                 self.phase_summaries[-1]["name"])

    def end_phase(self, state: PhaseState, out: Path, wall_s: float) -> dict:
        for module, module_names in state.trained_names.items():
            self.trained_names[module].update(module_names)
        save_tokens(out / phase_token_file(state.name), self.tokens, self.token_ids, self.parts.text_encoder,
                    self.scene.class_names)
        group = state.optimizer.param_groups[0]
        records = [r for r in self.history if r["phase"] == state.name]
        terms = sorted({t for r in records for t in r["terms"]})
        summary = {
            "name": state.name, "steps": len(records), "wall_s": round(wall_s, 2),
            "trainable": list(state.recipe.trainable), "rows_frozen": state.rows_frozen,
            # Read back from the optimiser itself, not from the recipe.
            "optimizer": {"kind": type(state.optimizer).__name__, "lr": group["initial_lr"] if "initial_lr" in group
                          else group["lr"], "betas": list(group["betas"]), "weight_decay": group["weight_decay"],
                          "eps": group["eps"], "num_tensors": len(state.params),
                          "num_elements": int(sum(q.numel() for q in state.params))},
            "loss_weights": to_dict(state.recipe.loss_weights),
            "term_weights": self.phase_terms(state.recipe),
            "recording_processors": list(self.recording_processors),
            "loss_mean": {t: _mean([r["terms"][t] for r in records if t in r["terms"]]) for t in terms},
            "loss_first": records[0]["terms"] if records else {},
            "loss_last": records[-1]["terms"] if records else {},
        }
        self.phase_summaries.append(summary)
        atomic_write_text(out / LOG_FILE, "".join(json.dumps(r) + "\n" for r in self.history))
        self.phase = None
        return summary

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def compute_losses(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """Draw a batch, run the model once, return (weighted loss, terms, step facts)."""
        p, state = self.parts, self.phase
        weights = state.recipe.loss_weights
        batch = self.cfg.training.batch_size
        samples = [self.source.draw() for _ in range(batch)]
        latents = torch.cat([s.latents for s in samples])                           # (B, 4, h, w)
        ids = prompt_ids(p.tokenizer, [s.prompt for s in samples], self.device)     # (B, 77)
        n_prior = 0
        if self.prior and weights.prior > 0:
            # The BaS code's batch order: class images first, then the scene.
            prompts = [self._prior_prompt_for(s.concepts) for s in samples]
            drawn = [self.prior[prompt].draw() for prompt in prompts]
            latents = torch.cat([d[1] for d in drawn] + [latents])                  # (2B, 4, h, w)
            ids = torch.cat([self.prior_ids[prompt] for prompt in prompts] + [ids])  # (2B, 77)
            n_prior = batch
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=self.generator).to(self.device)            # (n, 4, h, w)
        timesteps = torch.randint(0, p.noise_scheduler.config.num_train_timesteps, (n,),
                                  generator=self.generator).to(self.device)                  # (n,)
        noisy = p.noise_scheduler.add_noise(latents, noise, timesteps)
        if p.noise_scheduler.config.prediction_type == "v_prediction":
            target = p.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise

        if self.store is not None:
            self.store.reset()
        with self._autocast():
            hidden = p.text_encoder(ids)[0]                                          # (n, 77, D)
            pred = p.unet(noisy, timesteps, hidden).sample                           # (n, 4, h, w)

        terms: dict[str, torch.Tensor] = {}
        mask_fraction = 1.0
        if weights.diffusion > 0:
            mask = None
            if self.recipe.diffusion_loss.masked:
                union = torch.stack([s.masks.amax(dim=0) for s in samples])[:, None]  # (B, 1, H, W)
                mask = downsample_mask(union, self.latent_side)                       # (B, 1, h, w)
                mask_fraction = float(mask.mean())
            terms["diffusion"] = masked_diffusion_loss(pred[n_prior:], target[n_prior:], mask,
                                                       self.recipe.diffusion_loss.normalise)
        if n_prior:
            terms["prior"] = prior_loss(pred[:n_prior], target[:n_prior])
        term_weights = {name: weight for name, weight in self.phase_terms(state.recipe).items()
                        if term_active(self.recipe.attention_terms[name], state.step)}
        if term_weights:
            positions = [token_positions(ids[n_prior + b], [self.token_ids[i] for i in s.concepts])
                         for b, s in enumerate(samples)]
            inputs = TermInputs(positions, [s.masks for s in samples], timesteps[n_prior:].tolist(), n_prior,
                                self.latent_side, class_timesteps=timesteps[:n_prior].tolist())
            for name in term_weights:
                value = compute_term(self.recipe.attention_terms[name], self.store, inputs)
                if value is not None:          # no sample of the batch takes part (e.g. all t >= 500)
                    terms[name] = value
        all_weights = {**to_dict(weights), **term_weights}
        loss = sum(all_weights[name] * value for name, value in terms.items())
        facts = {"concepts": [s.concepts for s in samples], "flipped": [s.flipped for s in samples],
                 "timesteps": timesteps[n_prior:].tolist(), "class_timesteps": timesteps[:n_prior].tolist(),
                 "mask_fraction": mask_fraction,
                 "prior_images": n_prior, "phase_step": state.step}
        return loss, terms, facts

    def step(self) -> dict:
        state = self.phase
        loss, terms, facts = self.compute_losses()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(state.optimizer)
        # Clip over every trainable tensor's whole gradient, as the BaS code does (in phase 1
        # that is the full embedding matrix's gradient), before other rows are zeroed.
        grad_norm = None
        if state.recipe.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(state.params, state.recipe.grad_clip))
        weight = self.parts.text_encoder.get_input_embeddings().weight
        if state.rows_frozen and weight.grad is not None:
            weight.grad[state.frozen_rows] = 0
        lr = state.optimizer.param_groups[0]["lr"]
        self.scaler.step(state.optimizer)
        self.scaler.update()
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        if state.rows_frozen:
            with torch.no_grad():
                weight[state.frozen_rows] = state.original_embeddings[state.frozen_rows]
        if self.store is not None:
            self.store.reset()
        state.step += 1
        record = {"phase": state.name, "step": len(self.history), "lr": lr, "loss": float(loss.detach()),
                  "terms": {k: float(v.detach()) for k, v in terms.items()}, "grad_norm": grad_norm, **facts}
        self.history.append(record)
        return record

    # ------------------------------------------------------------------ save / cleanup

    def save(self, out: Path, key: str) -> dict:
        p = self.parts
        save_tokens(out / TOKENS_FILE, self.tokens, self.token_ids, p.text_encoder, self.scene.class_names)
        weights_saved = False
        if self.cfg.training.keep_weights and any(self.trained_names.values()):
            save_trained_weights(out / TRAINED_WEIGHTS_FILE, {"unet": p.unet, "text_encoder": p.text_encoder},
                                 {k: sorted(v) for k, v in self.trained_names.items()})
            weights_saved = True
        summary = {
            "method": self.method, "recipe": to_dict(self.recipe), "run_key": key,
            "scene_id": self.scene.scene_id, "content_hash": self.scene.content_hash,
            "placeholders": self.tokens, "token_ids": self.token_ids, "class_names": list(self.scene.class_names),
            "phases": self.phase_summaries, "steps": len(self.history),
            "wall_s": round(time.time() - self._started, 2), "profile": p.profile,
            "model": model_identity(self.cfg.models), "device": str(self.device),
            "autocast": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
            "seed": self.seed, "training": to_dict(self.cfg.training), "memory": self.memory,
            "prior_images": sum(len(source) for source in self.prior.values()),
            "weights_saved": weights_saved,
        }
        atomic_write_json(out / TRAIN_JSON, summary)   # the marker: written last
        return summary

    def cleanup(self) -> None:
        p = self.parts
        if p is None:
            return
        if self._recording:
            self._set_recording(())
        for module in (p.unet, p.text_encoder):
            module.requires_grad_(False)
            module.eval()
        if "gradient_checkpointing" in self.memory["options"]:
            p.unet.disable_gradient_checkpointing()
            p.text_encoder.gradient_checkpointing_disable()
        self.phase = None


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _progress(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)
