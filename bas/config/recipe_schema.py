"""The `methods:` section: a method's recipe as frozen dataclasses (phases, data, loss terms).

Recipes are read by bas.training; their includes and step/lr scaling are applied by
`bas.config.recipes` before they are built here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from bas.attention_terms import ATTENTION_TERMS, option_names
from bas.config.builder import _check_field, build
from bas.config.names import did_you_mean
from bas.errors import ConfigError


# What a phase may train. `tokens`: the new concept rows of the embedding matrix only (every
# other row restored after each step); `text_encoder`: the whole text encoder, all embedding
# rows included; `unet`: the whole UNet; `cross_attention_kv`: the UNet's cross-attention
# key/value projections (Custom Diffusion); `cross_attention_k`: only their key projections
# (Separate-and-Enhance).
TRAINABLE = ("tokens", "unet", "text_encoder", "cross_attention_kv", "cross_attention_k")


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term in one phase; 0 switches a term off."""

    diffusion: float
    prior: float


@dataclass(frozen=True)
class PhaseRecipe:
    """One optimisation phase: its own AdamW, schedule, trainable parameters and loss weights."""

    steps: int                       # 0 skips the phase
    trainable: tuple[Literal["tokens", "unet", "text_encoder", "cross_attention_kv", "cross_attention_k"], ...]
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    eps: float
    lr_schedule: Literal["constant", "cosine"]
    warmup_steps: int
    grad_clip: Optional[float]       # max global grad norm; null = no clipping
    loss_weights: LossWeights
    # Weight of each named attention term of the recipe (`attention_terms`) in this phase;
    # a term not listed, or weighted 0, is off.
    term_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_field(self.steps >= 0, "steps", self.steps, "must be >= 0")
        _check_field(len(self.trainable) > 0, "trainable", self.trainable, "a phase must train something")
        _check_field(self.lr > 0, "lr", self.lr, "must be > 0")
        _check_field(all(0 <= b < 1 for b in self.betas), "betas", self.betas, "each must be in [0, 1)")
        _check_field(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")
        _check_field(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip,
               "must be > 0 or null")


@dataclass(frozen=True)
class DataRecipe:
    """What one training sample is."""

    # scene: the real image with its masks (latents encoded once). masked_collection: the
    # chosen concepts cut out and pasted on a random solid colour (BaS's -m baselines).
    source: Literal["scene", "masked_collection"]
    # union: k ~ U{1..N} distinct concepts in random order each sample; an integer: always k.
    concepts_per_sample: Union[Literal["union"], int]
    flip_p: float                    # joint horizontal flip of image and masks
    prompt_template: str             # "{tokens}" becomes "<assetA> and <assetB> ..."
    token_joiner: str

    def __post_init__(self) -> None:
        _check_field(self.concepts_per_sample == "union" or self.concepts_per_sample >= 1,
               "concepts_per_sample", self.concepts_per_sample, "must be 'union' or >= 1")
        _check_field(0.0 <= self.flip_p <= 1.0, "flip_p", self.flip_p, "must be in [0, 1]")
        _check_field("{tokens}" in self.prompt_template, "prompt_template", self.prompt_template,
               "must contain {tokens}")


@dataclass(frozen=True)
class DiffusionLossRecipe:
    masked: bool                     # multiply prediction and target by the union mask
    # all_elements: mean over every latent element (BaS code); mask_area: sum / mask area.
    normalise: Literal["all_elements", "mask_area"]


RESERVED_TERMS = ("diffusion", "prior")


@dataclass(frozen=True)
class AttentionTermRecipe:
    """One named attention loss term: its kind, the layers it reads, when it is on, its options.

    `kind` is a key of `bas.attention_terms.ATTENTION_TERMS`; the kind's own settings are set
    next to it in params (`target_scale: 0.5`) and held in `options`, that kind's dataclass
    (a key the kind does not have is an error); `term.target_scale` reads them too.
    A phase turns the term on with a weight in `term_weights`. `from_step`/`until_step` count
    the phase's own steps (half-open); `max_timestep` keeps only samples noised at t < it.
    """

    kind: str
    layers: tuple[str, ...]          # UNet attention blocks (SD 2.1 names) whose cross-attention is read
    from_step: int = 0
    until_step: Optional[int] = None
    max_timestep: Optional[int] = None
    options: Any = None              # the kind's options dataclass; None: only for a kind without options
    # Whose timestep `max_timestep` reads: the instance sample's own, or that of the class image
    # drawn with it (MIFO's phase 2: its code reads `timesteps[0]`, the class image's); in a
    # phase without class images both mean the instance's.
    timestep_source: Literal["instance", "class_image"] = "instance"

    def __post_init__(self) -> None:
        _check_field(self.kind in ATTENTION_TERMS, "kind", self.kind,
                     f"not an attention term kind (known: {', '.join(ATTENTION_TERMS)})"
                     f"{did_you_mean(self.kind, ATTENTION_TERMS)}")
        _check_field(len(self.layers) >= 1, "layers", self.layers, "needs at least one attention block")
        _check_field(self.from_step >= 0, "from_step", self.from_step, "must be >= 0")
        _check_field(self.until_step is None or self.until_step > self.from_step, "until_step",
                     self.until_step, "must be above from_step (or null)")
        _check_field(self.max_timestep is None or self.max_timestep > 0, "max_timestep", self.max_timestep,
                     "must be > 0 (or null)")
        options_type = ATTENTION_TERMS[self.kind].options
        if self.options is None:
            required = [f.name for f in dataclasses.fields(options_type)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            _check_field(not required, required[0] if required else "options", None,
                         f"kind {self.kind} needs it (its options have no defaults)")
            object.__setattr__(self, "options", options_type())
        _check_field(isinstance(self.options, options_type), "options", self.options,
                     f"must be a {options_type.__name__} (the options of kind {self.kind})")

    @classmethod
    def gather_options(cls, value: dict[str, Any], key: str) -> dict[str, Any]:
        """Params' flat mapping -> the dataclass's fields, the kind's keys built into `options`."""
        kind = value.get("kind")
        if kind not in ATTENTION_TERMS:
            raise ConfigError(f"params: {key}.kind = {kind!r}: not an attention term kind "
                              f"(known: {', '.join(ATTENTION_TERMS)}){did_you_mean(kind, ATTENTION_TERMS)}")
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        raw = dict(value.get("options") or {})
        raw.update({k: v for k, v in value.items() if k not in names and k != "options"})
        allowed = option_names(kind)
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise ConfigError(f"params: unknown key {key}.{unknown[0]} (kind {kind} has options: "
                              f"{', '.join(allowed) or 'none'})")
        options_type = ATTENTION_TERMS[kind].options
        hints = typing.get_type_hints(options_type)
        built = {name: build(hints[name], v, f"{key}.{name}") for name, v in raw.items()}
        missing = [f.name for f in dataclasses.fields(options_type) if f.name not in built
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"params: missing key {key}.{missing[0]} (params.yaml must set it: "
                              f"an option of kind {kind})")
        try:
            options = options_type(**built)
        except ValueError as err:
            name, _, why = str(err).partition(": ")
            raise ConfigError(f"params: {key}.{name} = {built.get(name)!r}: {why}") from None
        return {**{k: v for k, v in value.items() if k in names}, "options": options}

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields: a kind's option, read through the term.
        options = self.__dict__.get("options")
        if options is not None and name in {f.name for f in dataclasses.fields(options)}:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__} of kind {self.__dict__.get('kind')!r} has no {name!r}")

    @property
    def needs_heads(self) -> bool:
        """Whether the term reads every head's map (the store then keeps them)."""
        return ATTENTION_TERMS[self.kind].needs_heads


@dataclass(frozen=True)
class MethodRecipe:
    """A method, declaratively: phases, data sampling, loss terms (`methods.<name>`)."""

    description: str
    # What the method is to the comparison (bas.kinds): the report reads it from the results.
    # `reference`: a measuring run of the sandbox (the personalizability reference), not a method.
    kind: Literal["method", "ablation", "baseline", "successor", "reference"]
    prior_preservation: bool         # class images + unmasked prior loss (phase weight `prior`)
    data: DataRecipe
    diffusion_loss: DiffusionLossRecipe
    phases: dict[str, PhaseRecipe]   # run in this order
    # Where each new token's embedding row starts: class_name = the first BPE token of the
    # concept's class name (BaS); mean = the mean of the vocabulary's rows (what transformers'
    # resize_token_embeddings gives a new row: MIFO, whose code has no initializer);
    # word:<w> = the row of the one BPE token of <w> (e.g. word:sks, Textual Localization).
    token_init: str
    # Named attention-loss terms (BaS's own among them); phases weight them in `term_weights`.
    attention_terms: dict[str, AttentionTermRecipe] = field(default_factory=dict)
    # The prompt of the class images; null = training.prior_images.prompt. "{class_name}" in it
    # makes one class-image set per concept class (e.g. "a photo of a {class_name}").
    prior_prompt: Optional[str] = None
    # Class images a prompt; null = training.prior_images.num_images.
    prior_num_images: Optional[int] = None

    def __post_init__(self) -> None:
        _check_field(len(self.phases) > 0 and any(p.steps > 0 for p in self.phases.values()), "phases",
               list(self.phases), "a method needs at least one phase with steps > 0")
        for name in self.attention_terms:
            _check_field(name not in RESERVED_TERMS, f"attention_terms.{name}", name,
                         f"{', '.join(RESERVED_TERMS)} are the names of loss_weights")
        for phase_name, phase in self.phases.items():
            for name, weight in phase.term_weights.items():
                _check_field(name in self.attention_terms, f"phases.{phase_name}.term_weights.{name}", weight,
                             f"no such term in attention_terms (has: {', '.join(self.attention_terms) or 'none'})"
                             f"{did_you_mean(name, self.attention_terms)}")
                _check_field(weight >= 0, f"phases.{phase_name}.term_weights.{name}", weight, "must be >= 0")
        if self.prior_prompt is not None:
            try:
                self.prior_prompt.format(class_name="x")
            except (KeyError, IndexError, ValueError) as err:
                _check_field(False, "prior_prompt", self.prior_prompt, f"only {{class_name}} may be filled in: {err}")
        _check_field(self.prior_num_images is None or self.prior_num_images >= 1, "prior_num_images",
                     self.prior_num_images, "must be >= 1 (or null)")
        _check_field(self.token_init in ("class_name", "mean") or
                     (self.token_init.startswith("word:") and self.token_init[len("word:"):].strip() != ""),
                     "token_init", self.token_init,
                     f"must be class_name, mean or word:<a word>{did_you_mean(self.token_init, ('class_name', 'mean'))}")
