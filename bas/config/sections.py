"""The sections of params.yaml as frozen dataclasses, and `Config`, the whole file.

Each module that owns a section declares its dataclass here (the method recipes in
`bas.config.recipe_schema`) so that one place describes the whole file. Validation beyond
types lives in each dataclass's `__post_init__` via `_check`.

No field has a default: params.yaml is the only home of every value (a protocol number
restated here could drift from the file). A key params.yaml lacks is a `ConfigError` naming
it; tests start from params.yaml (tests/params_defaults.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from bas.config.builder import _check, _check_field, to_dict
from bas.config.names import did_you_mean
from bas.config.recipe_schema import MethodRecipe
from bas.schema import METRICS

PROFILES = ("sd21", "tiny", "sandbox")


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelSources:
    """Where the `sd21` profile finds its weights: hub ids at a revision, or local copies.

    Each `*_revision` is the hub revision (a commit hash, branch or tag) its model is read
    at; it is ignored when the source is a local path. Both are part of every run key.
    """

    # Stability AI withdrew stabilityai/stable-diffusion-2-1-base from the hub (Nov 2025); the
    # sd2-community organisation keeps a copy of the same weights (it is not Stability's).
    diffusion: str
    diffusion_revision: str
    clip_model: str
    clip_pretrained: str
    clip_revision: str
    dino: str
    dino_revision: str
    maskformer: str
    maskformer_revision: str

    def __post_init__(self) -> None:
        for name in ("diffusion_revision", "clip_revision", "dino_revision", "maskformer_revision"):
            value = getattr(self, name)
            _check(isinstance(value, str) and bool(value) and not any(c.isspace() for c in value),
                   f"models.sd21.{name}", value, "must be a commit hash, branch or tag")


@dataclass(frozen=True)
class ModelsConfig:
    profile: Literal["sd21", "tiny", "sandbox"]
    sd21: ModelSources
    # Where generated models (tiny) are cached; relative paths are under the project root.
    cache_dir: str
    tiny_seed: int
    # The sandbox profile's weights (diffusion/, clip/, dino/, segmenter/, judge/): "" = the ones
    # bundled with bas (bas/data/sandbox); a path = elsewhere. `bas sandbox train` writes there.
    sandbox_weights: str
    # Mixed precision on GPU: autocast dtype with fp32 master weights. CPU always runs fp32.
    gpu_dtype: Literal["bf16", "fp16"]


@dataclass(frozen=True)
class CocoFetchConfig:
    """`bas coco fetch`: where COCO is downloaded from (docs/SCENES.md)."""

    # The COCO image server, or a mirror with the same paths (/annotations/..., /<split>/<file>):
    # each image's `coco_url` is read with its host replaced by this one.
    base_url: str
    annotations_zip: str  # under base_url
    retries: int  # tries an image gets before it is skipped by name
    retry_delay_seconds: float  # doubles each retry
    timeout_seconds: float  # per request

    def __post_init__(self) -> None:
        _check(self.base_url.startswith(("http://", "https://", "file://")), "scenes.fetch.base_url",
               self.base_url, "must be an http(s):// or file:// URL")
        _check(self.retries >= 1, "scenes.fetch.retries", self.retries, "must be >= 1")
        _check(self.retry_delay_seconds >= 0, "scenes.fetch.retry_delay_seconds", self.retry_delay_seconds,
               "must be >= 0")
        _check(self.timeout_seconds > 0, "scenes.fetch.timeout_seconds", self.timeout_seconds, "must be > 0")


@dataclass(frozen=True)
class ScenesConfig:
    """PROTOCOL.md section 1 (BaS appendix B.2)."""

    # A COCO root; when missing, staging uses the demo source in bas/data/demo ("demo" asks
    # for it explicitly). See bas.scenes.resolve_coco_root.
    coco_root: str
    split: str
    min_area_fraction: float
    excluded_classes: tuple[str, ...]
    # A class counts only if exactly one of its instances passes the area bar (DECIDE, sec. 1).
    distinct: Literal["exactly_one_large"]
    max_concepts: int
    # Which concepts to keep when more than max_concepts qualify (DECIDE, sec. 1).
    keep_when_too_many: Literal["largest"]
    num_scenes: int
    selection_seed: int
    resolution: int
    # `bas coco fetch`: download only the images the selection picks (docs/SCENES.md).
    fetch: CocoFetchConfig

    def __post_init__(self) -> None:
        _check(0.0 < self.min_area_fraction < 1.0, "scenes.min_area_fraction", self.min_area_fraction,
               "must be in (0, 1)")
        _check(self.max_concepts >= 2, "scenes.max_concepts", self.max_concepts, "a scene needs >= 2 concepts")
        _check(self.num_scenes >= 1, "scenes.num_scenes", self.num_scenes, "must be >= 1")
        _check(self.resolution >= 8, "scenes.resolution", self.resolution, "must be >= 8")


@dataclass(frozen=True)
class MifoBoxConfig:
    """The `mifo_box` sampler (MIFO's precise synthesis, PROTOCOL.md sec. 3): DDIM + CFG with
    box control. See bas/generation/mifo_box.py and docs/SUCCESSORS.md."""

    guidance_steps: int  # the first denoising steps whose latent is optimised
    iterations: int  # at most this many gradient steps a denoising step
    loss_threshold: float  # stop a step's optimisation once the loss / subjects is below
    step_size_start: float  # latent step size at denoising step 0 ...
    step_size_end: float  # ... moving linearly towards this at step guidance_steps
    cross_weight: float  # loss = cross_weight * L_cross + self_weight * L_self
    self_weight: float
    alpha_start: float  # out-of-box penalty weight: alpha_start until step 1,
    alpha_mid: float  # linearly to alpha_mid at alpha_linear_end,
    alpha_linear_end: int
    alpha_end: float  # then cosine to alpha_end at alpha_cosine_end (MIFO code: 150)
    alpha_cosine_end: int
    loss_layers: tuple[str, ...]  # attention blocks the loss reads
    # Attention blocks whose attention is masked by the boxes; empty = every block (MIFO code).
    mask_layers: tuple[str, ...]

    def __post_init__(self) -> None:
        key = "generation.mifo_box"
        _check(self.guidance_steps >= 0, f"{key}.guidance_steps", self.guidance_steps, "must be >= 0")
        _check(self.iterations >= 1, f"{key}.iterations", self.iterations, "must be >= 1")
        _check(self.loss_threshold >= 0, f"{key}.loss_threshold", self.loss_threshold, "must be >= 0")
        for name in ("step_size_start", "step_size_end", "cross_weight", "self_weight", "alpha_start",
                     "alpha_mid", "alpha_end"):
            _check(getattr(self, name) >= 0, f"{key}.{name}", getattr(self, name), "must be >= 0")
        _check(2 <= self.alpha_linear_end < self.alpha_cosine_end, f"{key}.alpha_linear_end",
               self.alpha_linear_end, "must be >= 2 and below alpha_cosine_end")
        _check(len(self.loss_layers) >= 1, f"{key}.loss_layers", self.loss_layers, "needs at least one block")


# The samplers `generation.sampler` may name: name -> `module:function`, imported on first use
# (`bas.generation.sampler_registry.get_sampler`) so that reading params does not import torch.
# A sampler is called as
#     sampler(parts, items, scene, gen, *, dtype, batch_invariant) -> list[PIL.Image]
# (see bas/generation/sampler_registry.py).
SAMPLERS: dict[str, str] = {
    # PROTOCOL.md sec. 4: DDIM 50 steps, CFG 7.5, the BaS sampler every method uses.
    "ddim": "bas.generation.sampler:sample_ddim",
    # PROTOCOL.md sec. 3: MIFO's synthesis, DDIM + CFG with box control (generation.mifo_box).
    "mifo_box": "bas.generation.mifo_box:sample_mifo_box",
}
# Samplers with their own settings: sampler name -> its `generation` subsection. The settings
# decide pixels, so a run's images are stale when they change.
SAMPLER_SETTINGS: dict[str, str] = {"mifo_box": "mifo_box"}


@dataclass(frozen=True)
class GenerationConfig:
    """PROTOCOL.md sec. 4: the prompt grid and the sampler every method shares."""

    templates: tuple[str, ...]
    # Seeds per (template, subset). Grid size = sum over scenes of (2^N - 1) x templates x seeds;
    # the paper's 5400 a method needs seeds 2 (see docs/GENERATION_AND_SCORING.md).
    seeds: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    # A key of SAMPLERS.
    sampler: str
    # Images a model call handles at once; halved automatically on out-of-memory.
    batch_size: int
    # always: every model call handles one image, so an image is bitwise the same whatever its
    # batch (CPU kernels are not batch-invariant). never: batched calls. auto: always on CPU,
    # never on GPU.
    batch_invariant: Literal["auto", "always", "never"]
    # Settings of the `mifo_box` sampler (used only when `sampler: mifo_box`).
    mifo_box: MifoBoxConfig

    def __post_init__(self) -> None:
        _check(len(self.templates) >= 1, "generation.templates", self.templates, "needs at least one template")
        for i, template in enumerate(self.templates):
            _check(template.count("{tokens}") == 1, f"generation.templates[{i}]", template,
                   "must contain {tokens} exactly once")
            try:
                template.format(tokens="x")
            except (KeyError, IndexError, ValueError) as err:
                _check(False, f"generation.templates[{i}]", template, f"bad placeholder: {err}")
        _check(len(set(self.templates)) == len(self.templates), "generation.templates", self.templates,
               "templates must be distinct")
        _check(self.seeds >= 1, "generation.seeds", self.seeds, "must be >= 1")
        _check(self.steps >= 1, "generation.steps", self.steps, "must be >= 1")
        _check(self.guidance_scale >= 1.0, "generation.guidance_scale", self.guidance_scale, "must be >= 1")
        _check(self.sampler in SAMPLERS, "generation.sampler", self.sampler,
               f"must be one of {', '.join(sorted(SAMPLERS))}{did_you_mean(self.sampler, SAMPLERS)}")
        _check(self.batch_size >= 1, "generation.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class ScoringConfig:
    """PROTOCOL.md sec. 5: how generated images are scored."""

    # Images per model call (CLIP, DINO, MaskFormer); halved automatically on out-of-memory.
    batch_size: int
    # MaskFormer panoptic post-processing (transformers' defaults, which BaS used via HF).
    maskformer_threshold: float
    maskformer_mask_threshold: float
    maskformer_overlap_threshold: float
    # DINO input: fraction kept by the centre crop. 1.0 = the whole image resized, as the HF
    # ViT processor BaS used does (timm's default 0.875 would cut off concept borders).
    dino_crop_pct: float

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "scoring.batch_size", self.batch_size, "must be >= 1")
        for name in ("maskformer_threshold", "maskformer_mask_threshold", "maskformer_overlap_threshold"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"scoring.{name}", value, "must be in [0, 1]")
        _check(0.0 < self.dino_crop_pct <= 1.0, "scoring.dino_crop_pct", self.dino_crop_pct, "must be in (0, 1]")


@dataclass(frozen=True)
class PathsConfig:
    """Every output location, named once. Relative paths are under the storage root."""

    storage_root: str
    scenes: str
    runs: str
    scores: str
    recipes: str
    records: str
    reports: str
    prior_images: str  # class images for prior preservation, shared by runs
    # The human rating study's database (SQLite, WAL) and its Parquet export.
    ratings_db: str
    ratings_export: str


@dataclass(frozen=True)
class RatingsConfig:
    """The human rating study (BaS appendix B.3), run by `bas rate`.

    A question is one page: a prompt question shows every method's image for one
    (scene, template, subset, seed); an identity question shows, for one concept of such a
    group, the masked input object beside every method's image. BaS collected 3 ratings per
    rated image and 1215 ratings per task with 5 methods: 1215 / 3 / 5 = 81 pages a task.
    """

    ratings_per_question: int
    num_prompt_questions: int
    num_identity_questions: int
    # Seeds the question sample and each rater's image order.
    seed: int
    # Methods in the study, as named under runs/; empty = every method with a manifest.
    methods: tuple[str, ...]
    # A page handed to a rater is held for them this long (BaS allotted one hour a task).
    reservation_minutes: int
    # The server binds to loopback unless the user asks otherwise.
    host: str
    port: int

    def __post_init__(self) -> None:
        _check(self.ratings_per_question >= 1, "ratings.ratings_per_question", self.ratings_per_question,
               "must be >= 1")
        _check(self.num_prompt_questions >= 0, "ratings.num_prompt_questions", self.num_prompt_questions,
               "must be >= 0")
        _check(self.num_identity_questions >= 0, "ratings.num_identity_questions",
               self.num_identity_questions, "must be >= 0")
        _check(self.num_prompt_questions + self.num_identity_questions >= 1, "ratings.num_prompt_questions",
               self.num_prompt_questions, "the study needs at least one question of either task")
        _check(len(set(self.methods)) == len(self.methods), "ratings.methods", self.methods,
               "a method is listed twice")
        _check(self.reservation_minutes >= 1, "ratings.reservation_minutes", self.reservation_minutes,
               "must be >= 1")
        _check(1 <= self.port <= 65535, "ratings.port", self.port, "must be a TCP port, 1-65535")


@dataclass(frozen=True)
class SlurmConfig:
    """`bas slurm submit`: the sbatch options of the GPU worker jobs (docs/ORCHESTRATION.md)."""

    job_name: str  # the jobs' name: `bas slurm status` / `cancel` find them by it
    partition: Optional[str]  # --partition; null = the cluster's default
    gres: Optional[str]  # --gres of each job (one worker, one GPU); null = no gres
    time_limit: str  # --time of each job
    account: Optional[str]  # --account
    qos: Optional[str]  # --qos
    cpus_per_task: int  # --cpus-per-task
    mem: Optional[str]  # --mem; null = the partition's default
    signal_seconds: int  # --signal=B:TERM@<this>: SIGTERM this long before the time limit
    idle_timeout_seconds: float  # a worker with no flow run this long exits, freeing its GPU
    extra_sbatch: tuple[str, ...]  # more `#SBATCH` lines, e.g. "--constraint=a100"
    setup: str  # shell line run in the checkout before the worker starts

    def __post_init__(self) -> None:
        _check(bool(self.job_name.strip()) and not any(c.isspace() for c in self.job_name),
               "orchestration.slurm.job_name", self.job_name, "a name without spaces")
        _check(self.cpus_per_task >= 1, "orchestration.slurm.cpus_per_task", self.cpus_per_task, "must be >= 1")
        _check(self.signal_seconds >= 0, "orchestration.slurm.signal_seconds", self.signal_seconds, "must be >= 0")
        _check(self.idle_timeout_seconds > 0, "orchestration.slurm.idle_timeout_seconds",
               self.idle_timeout_seconds, "must be > 0")
        for line in self.extra_sbatch:
            _check(line.startswith("--") and "\n" not in line, "orchestration.slurm.extra_sbatch", line,
                   "each entry is one sbatch option starting with --")


@dataclass(frozen=True)
class OrchestrationConfig:
    """How `full_eval`, `bas train-generate` and dvc.yaml run the stages (docs/ORCHESTRATION.md).

    Only scheduling lives here: nothing in this section changes a result, so none of it is a
    DVC param of a stage that makes results.
    """

    # The methods full_eval and dvc.yaml evaluate (each a recipe under `methods:`).
    methods: tuple[str, ...]
    # Prefect work pool of GPU workers that runs the per-(method, scene) flow runs; null runs
    # them in this process (one GPU, or CPU) on whatever Prefect API is configured.
    work_pool: Optional[str]
    # Work pool of the scheduled full_eval runs (a CPU process pool on the head node): it
    # waits on the GPU pool, so it must not take one of the GPU pool's slots.
    controller_pool: str
    concurrency: int  # concurrency limit of the GPU pool (= its GPUs)
    retries: int  # task retries on a transient error (not on a BasError)
    retry_delay_seconds: float  # first retry delay; doubles each retry (exponential backoff)
    resubmits: int  # times a crashed or orphaned scene run is submitted again
    heartbeat_seconds: float  # a running scene task rewrites its attempt record this often
    stale_after_seconds: float  # a running attempt silent this long is orphaned (worker lost)
    startup_grace_seconds: float  # a claimed run with no attempt record after this is orphaned
    poll_seconds: float  # how often full_eval looks at the runs it submitted
    schedule_cron: str  # the scheduled full evaluation (prefect.yaml), in schedule_timezone
    schedule_timezone: str
    slurm: SlurmConfig  # GPU workers as Slurm jobs (`bas slurm`)

    def __post_init__(self) -> None:
        _check(len(self.methods) >= 1, "orchestration.methods", self.methods, "name at least one method")
        _check(len(set(self.methods)) == len(self.methods), "orchestration.methods", self.methods,
               "a method is listed twice")
        _check(self.concurrency >= 1, "orchestration.concurrency", self.concurrency, "must be >= 1")
        _check(self.retries >= 0, "orchestration.retries", self.retries, "must be >= 0")
        _check(self.resubmits >= 0, "orchestration.resubmits", self.resubmits, "must be >= 0")
        for key in ("retry_delay_seconds", "heartbeat_seconds", "stale_after_seconds",
                    "startup_grace_seconds", "poll_seconds"):
            value = getattr(self, key)
            _check(value > 0, f"orchestration.{key}", value, "must be > 0")
        _check(self.stale_after_seconds > 2 * self.heartbeat_seconds, "orchestration.stale_after_seconds",
               self.stale_after_seconds, "must exceed two heartbeats (orchestration.heartbeat_seconds)")
        _check(len(self.schedule_cron.split()) == 5, "orchestration.schedule_cron", self.schedule_cron,
               "expected a 5-field cron expression")


@dataclass(frozen=True)
class PriorImagesConfig:
    """Class images for prior preservation: made once by the base model, cached, reused."""

    prompt: str
    num_images: int
    sampling_steps: int
    guidance_scale: float
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        _check(self.num_images >= 1, "training.prior_images.num_images", self.num_images, "must be >= 1")
        _check(self.sampling_steps >= 1, "training.prior_images.sampling_steps", self.sampling_steps,
               "must be >= 1")
        _check(self.batch_size >= 1, "training.prior_images.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class TrainingConfig:
    """Settings shared by every method's training (the methods themselves are `methods:`)."""

    # Seed of every run's random streams, combined with the scene id (same for all methods,
    # so an ablation and the full method see the same draws while their choices agree).
    seed: int
    batch_size: int
    # GPU only: autocast in `models.gpu_dtype` with fp32 master weights. CPU runs fp32.
    mixed_precision: bool
    # auto: the two switches below are on at least, and a run turns on more when its largest
    # phase would not fit the device (bas.models.memory); manual: the switches alone.
    memory: Literal["manual", "auto"]
    # What auto may fill, for a device shared with other work; None: the GPU's memory, or on a
    # CPU the RAM free beside the loaded models.
    memory_limit_gb: Optional[float]
    gradient_checkpointing: bool
    use_8bit_adam: bool  # needs bitsandbytes
    # Keep every trained parameter besides the tokens (~2.6 GB a scene on sd21).
    keep_weights: bool
    progress_bar: bool
    # How a step is computed, not what it learns (same draws; results equal up to rounding).
    # cache_latents: VAE-encode the scene and class images once and sample the cached
    # posterior each step; false encodes every step, as the official BaS code does.
    cache_latents: bool
    # loss_layers: record cross-attention only on the layers the attention loss reads (SDPA
    # elsewhere); every_layer: every cross- and self-attention layer through materialised
    # probabilities, as the official code's attention store does. every_layer exists to
    # benchmark the official way (bench/cpu.py); it only costs time and memory.
    attention_capture: Literal["loss_layers", "every_layer"]
    prior_images: PriorImagesConfig
    # Every method's schedule rescaled at once, for a model other than SD 2.1 (the sandbox):
    # each phase's steps, warm-up and attention-term step windows x step_scale (rounded,
    # at least 1 when nonzero), each learning rate x lr_scale. 1.0 = the protocol's numbers.
    step_scale: float
    lr_scale: float

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "training.batch_size", self.batch_size, "must be >= 1")
        _check(self.step_scale > 0, "training.step_scale", self.step_scale, "must be > 0")
        _check(self.lr_scale > 0, "training.lr_scale", self.lr_scale, "must be > 0")
        _check(self.memory_limit_gb is None or self.memory_limit_gb > 0, "training.memory_limit_gb",
               self.memory_limit_gb, "must be > 0 (or null: the device's memory)")


@dataclass(frozen=True)
class ReportConfig:
    """The comparison report (`bas report`, bas/report)."""

    # Bootstrap of method means: images are resampled with replacement, seeded.
    bootstrap_samples: int
    confidence: float
    bootstrap_seed: int
    # Tukey HSD pairs with p below alpha are marked significant.
    alpha: float
    # Metrics (columns of bas.schema.METRICS) tested with Kruskal-Wallis + Tukey HSD.
    test_metrics: tuple[str, ...]
    # Scenes of the picture grid (BaS fig. 9); empty = the first picture_scene_count scene ids.
    picture_scenes: tuple[str, ...]
    picture_scene_count: int
    # The one prompt shown per scene: this template, all concepts, this seed index.
    picture_template_id: int
    picture_seed_index: int
    # BaS fig. 5 draws its ablations apart from the competitors; they join the front only if true.
    pareto_include_ablations: bool

    def __post_init__(self) -> None:
        _check(self.bootstrap_samples >= 10, "report.bootstrap_samples", self.bootstrap_samples,
               "must be >= 10")
        _check(0.0 < self.confidence < 1.0, "report.confidence", self.confidence, "must be in (0, 1)")
        _check(0.0 < self.alpha < 1.0, "report.alpha", self.alpha, "must be in (0, 1)")
        _check(self.picture_scene_count >= 0, "report.picture_scene_count", self.picture_scene_count,
               "must be >= 0")
        _check(self.picture_template_id >= 0, "report.picture_template_id", self.picture_template_id,
               "must be >= 0")
        _check(self.picture_seed_index >= 0, "report.picture_seed_index", self.picture_seed_index,
               "must be >= 0")
        for i, name in enumerate(self.test_metrics):
            _check(name in METRICS, f"report.test_metrics[{i}]", name,
                   f"not a metric (known: {', '.join(METRICS)}){did_you_mean(name, METRICS)}")


@dataclass(frozen=True)
class SandboxStage:
    """One model's training run in the sandbox world (docs/SANDBOX.md)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int

    def __post_init__(self) -> None:
        _check_field(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _check_field(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check_field(self.lr > 0, "lr", self.lr, "must be > 0")
        _check_field(0 <= self.warmup_steps <= self.steps, "warmup_steps", self.warmup_steps,
                     "must be between 0 and steps")


@dataclass(frozen=True)
class SandboxLayout:
    """What a base-training image holds: how many objects (drawn with `count_probs`) of which sides."""

    counts: tuple[int, ...]
    count_probs: tuple[float, ...]
    sides: tuple[int, int]  # pixels, inclusive

    def __post_init__(self) -> None:
        _check_field(len(self.counts) == len(self.count_probs) and len(self.counts) >= 1, "count_probs",
                     self.count_probs, "needs one probability per count")
        _check_field(all(1 <= c <= 4 for c in self.counts), "counts", self.counts, "each must be 1-4")
        _check_field(abs(sum(self.count_probs) - 1) < 1e-6 and min(self.count_probs) >= 0, "count_probs",
                     self.count_probs, "must be >= 0 and sum to 1")
        _check_field(8 <= self.sides[0] <= self.sides[1] <= 64, "sides", self.sides, "must be 8 <= low <= high <= 64")


@dataclass(frozen=True)
class SandboxConfig:
    """The sandbox profile: a procedural world and the small models bas trains on it."""

    seed: int
    # COCO-format root of evaluation scenes (novel objects) that `bas sandbox world` writes.
    world_root: str
    world_split: str
    world_images: int
    vae: SandboxStage
    # What the trained VAE's latents become before the base model trains on them
    # (bas.sandbox.train_diffusion.calibrate_vae): the encoder made deterministic, and each
    # channel centred and scaled to unit spread.
    vae_calibration: Literal["none", "deterministic", "deterministic_per_channel"]
    base: SandboxStage
    # A second cosine cycle of base training that continues from `base`'s last step (a warm
    # restart, SGDR), so more compute extends a finished run instead of repeating it.
    base_restart: Optional[SandboxStage]
    clip: SandboxStage
    dino: SandboxStage
    segmenter: SandboxStage
    judge: SandboxStage
    ema_decay: float
    # The base model's text encoder: trained with the UNet (joint), or first pretrained on world
    # captions alone (`text_pretrain`, bas.sandbox.text_pretrain) and frozen, as SD freezes OpenCLIP.
    base_text: Literal["joint", "frozen"]
    text_pretrain: SandboxStage
    base_layout: SandboxLayout
    object_loss_weight: float  # the diffusion loss on object pixels, relative to the background
    caption_dropout: float  # empty caption, so classifier-free guidance works
    attribute_dropout: float  # a colour/pattern word left out of a caption
    min_snr_gamma: float  # Min-SNR loss weighting (Hang et al. 2023)
    validity_samples: int  # held-out captions sampled to judge the base model
    validity_steps: int  # DDIM steps for those samples
    validity_guidance: float

    def __post_init__(self) -> None:
        _check(0 <= self.ema_decay < 1, "sandbox.ema_decay", self.ema_decay, "must be in [0, 1)")
        _check(0 <= self.caption_dropout < 1, "sandbox.caption_dropout", self.caption_dropout, "must be in [0, 1)")
        _check(self.world_images >= 1, "sandbox.world_images", self.world_images, "must be >= 1")
        _check(self.object_loss_weight > 0, "sandbox.object_loss_weight", self.object_loss_weight, "must be > 0")


# --------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class Config:
    seed: int
    models: ModelsConfig
    scenes: ScenesConfig
    generation: GenerationConfig
    scoring: ScoringConfig
    paths: PathsConfig
    report: ReportConfig
    orchestration: OrchestrationConfig
    training: TrainingConfig
    ratings: RatingsConfig
    sandbox: SandboxConfig

    # Resolved recipes (includes expanded by `parse`); look them up with bas.training.methods.
    methods: dict[str, MethodRecipe]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
