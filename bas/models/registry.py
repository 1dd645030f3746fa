"""Every model a run needs, loaded by profile through one code path.

A profile resolves to *sources* (hub ids, local directories, checkpoint files); one set of
loaders then reads any source with each library's own `from_pretrained` / `create_model`.
`sd21` points at the real checkpoints on the Hugging Face hub, or at local copies given by
params keys or environment variables; `tiny` points at seeded random models that
`bas.models.tiny` writes to a cache directory once; `sandbox` points at the models `bas`
trains on its sandbox world (`bas sandbox train`, docs/SANDBOX.md), bundled with the package
or in `models.sandbox_weights`. Weights saved in fp16 are loaded as fp32.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import huggingface_hub.constants as hub_constants
import torch

from bas.config import ModelsConfig
from bas.errors import ConfigError, ModelNotAvailableError
from bas.models import tiny
from bas.models.fetch import CLIP_FILES, clip_hub_file, dino_hub_repo
from bas.models.fetch import ENV_OVERRIDES, hub_reachable, sd21_identity  # noqa: F401 (re-exported)
from bas.paths import TRAINING_RECORD_FILE

# diffusers, transformers, open_clip, timm and the hub's download client are imported by the
# loaders that use them: readers of this module's names (DDIM_STEPS_OFFSET, sandbox_weights_dir,
# the digests; bas.done, bas.generation.run, `bas models check`) do not load them.

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sources:
    """Where one profile's models come from."""

    profile: str
    diffusion: str                      # diffusers layout: hub id or directory
    clip_model: str                     # open_clip model name
    clip_pretrained: str                # open_clip tag ("openai") or checkpoint file
    dino: str                           # timm model name (with pretrained tag)
    dino_file: Optional[str] = None     # local weights file for the timm model
    dino_kwargs: dict = field(default_factory=dict)
    maskformer: str = ""                # transformers: hub id or directory
    clip_config_file: Optional[str] = None  # extra open_clip model config to register
    segmenter: str = ""                 # sandbox: the directory of bas.sandbox.classifiers.SandboxSegmenter
    # sd21: the hub revision of each hub source (None for a local copy and other profiles)
    diffusion_revision: Optional[str] = None
    clip_revision: Optional[str] = None
    dino_revision: Optional[str] = None
    maskformer_revision: Optional[str] = None
    clip_tag: Optional[str] = None      # sd21: the open_clip pretrained tag a local CLIP file holds


@dataclass
class DiffusionParts:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any    # DDPMScheduler, for training
    sampler_scheduler: Any  # DDIMScheduler as PROTOCOL.md sec. 4, for generation
    profile: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def resolution(self) -> int:
        """Image side the model works at: latent side x VAE factor (512 sd21, 128 tiny)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


@dataclass
class ScorerParts:
    clip_model: Any
    clip_preprocess: Callable
    clip_tokenizer: Callable
    dino_model: Any
    dino_transform: Callable
    maskformer: Any                     # None in the sandbox profile, which has its own segmenter
    maskformer_processor: Any
    profile: str
    segmenter: Any = None               # sandbox: bas.sandbox.classifiers.SandboxSegmenter

    @property
    def panoptic_id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.maskformer.config.id2label.items()}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_sources(cfg: ModelsConfig) -> Sources:
    if cfg.profile == "sd21":
        src = cfg.sd21
        values = {name: os.environ.get(env) or getattr(src, name) for name, env in ENV_OVERRIDES.items()}
        dino_file = None
        if Path(values["dino"]).is_file():  # a local weights file for the DINO architecture
            dino_file, values["dino"] = values["dino"], src.dino
        if Path(values["dino"]).is_file():
            raise ConfigError(f"params: models.sd21.dino = {src.dino!r}: must be a timm model name")
        def revision(name: str, value: Optional[str]) -> Optional[str]:
            return None if value and Path(value).exists() else getattr(src, f"{name}_revision")

        return Sources(profile="sd21", diffusion=values["diffusion"], clip_model=src.clip_model,
                       clip_pretrained=values["clip_pretrained"], dino=values["dino"],
                       dino_file=dino_file, maskformer=values["maskformer"],
                       diffusion_revision=revision("diffusion", values["diffusion"]),
                       clip_revision=revision("clip", values["clip_pretrained"]),
                       dino_revision=None if dino_file else src.dino_revision,
                       maskformer_revision=revision("maskformer", values["maskformer"]),
                       clip_tag=src.clip_pretrained)
    if cfg.profile == "tiny":
        root = tiny.ensure_tiny(Path(cfg.cache_dir), cfg.tiny_seed)
        return Sources(
            profile="tiny", diffusion=str(root / "diffusion"), clip_model=tiny.CLIP_MODEL_NAME,
            clip_pretrained=str(root / "clip" / "open_clip_model.pt"),
            clip_config_file=str(root / "clip" / f"{tiny.CLIP_MODEL_NAME}.json"),
            dino="vit_base_patch16_224.dino", dino_file=str(root / "dino" / "model.safetensors"),
            dino_kwargs=dict(tiny.DINO_KWARGS), maskformer=str(root / "maskformer"),
        )
    if cfg.profile == "sandbox":
        return sandbox_sources(sandbox_weights_dir(cfg))
    raise ConfigError(f"params: models.profile = {cfg.profile!r}: unknown")


# --------------------------------------------------------------------------- sandbox

SANDBOX_CLIP_MODEL_NAME = "bas-sandbox-clip"    # open_clip config name (= its JSON file's stem)
SANDBOX_CLIP_WEIGHTS = "open_clip_model.safetensors"
SANDBOX_DINO_MODEL_NAME = "vit_base_patch16_224.dino"  # the real DINO's timm class and defaults
SANDBOX_DINO_WEIGHTS = "model.safetensors"
SANDBOX_DINO_KWARGS = "kwargs.json"                # the small architecture: timm create_model kwargs
# part directory -> the `bas sandbox train --only` stages that write it
SANDBOX_PARTS = {"diffusion": "vae,base", "clip": "clip", "dino": "dino", "segmenter": "segmenter",
                 "judge": "judge"}


def sandbox_weights_dir(cfg: ModelsConfig) -> Path:
    """Where the sandbox models live: `models.sandbox_weights`, or the ones bundled with bas."""
    if cfg.sandbox_weights:
        return Path(cfg.sandbox_weights)
    return Path(__file__).resolve().parents[1] / "data" / "sandbox"


def sandbox_sources(root: Path, **part_dirs: Path) -> Sources:
    """The sandbox profile's sources under `root`; `part_dirs` (clip=..., dino=...) move a part.

    Nothing is read here but the DINO architecture's kwargs, when present: a missing part
    fails when it is loaded (`require_sandbox_part`), so a run that needs only the diffusion
    model does not need the scorers.
    """
    dirs = {part: Path(part_dirs.get(part, Path(root) / part)) for part in SANDBOX_PARTS}
    kwargs_file = dirs["dino"] / SANDBOX_DINO_KWARGS
    dino_kwargs = json.loads(kwargs_file.read_text()) if kwargs_file.exists() else {}
    return Sources(
        profile="sandbox", diffusion=str(dirs["diffusion"]), clip_model=SANDBOX_CLIP_MODEL_NAME,
        clip_pretrained=str(dirs["clip"] / SANDBOX_CLIP_WEIGHTS),
        clip_config_file=str(dirs["clip"] / f"{SANDBOX_CLIP_MODEL_NAME}.json"),
        dino=SANDBOX_DINO_MODEL_NAME, dino_file=str(dirs["dino"] / SANDBOX_DINO_WEIGHTS), dino_kwargs=dino_kwargs,
        segmenter=str(dirs["segmenter"]),
    )


def require_sandbox_part(part: str, *files: str) -> None:
    """Fail with one clear error unless every file of a sandbox part exists."""
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        where = Path(missing[0]).parent
        raise ModelNotAvailableError(
            f"sandbox {part} weights not found: {missing[0]} does not exist.\n"
            f"  Train them with `bas sandbox train --only {SANDBOX_PARTS[part]}` (it writes into {where.parent}, "
            "params `models.sandbox_weights`; empty = the weights bundled with bas), or point "
            "`models.sandbox_weights` at a directory that holds them.")


def _unavailable(what: str, source: str, key: str, err: Exception) -> ModelNotAvailableError:
    env = ENV_OVERRIDES.get(key)
    how = f"set params `models.sd21.{key}` to a local copy"
    if env:
        how += f" or the environment variable {env}"
    offline = "" if hub_reachable() else " (the Hugging Face hub is not reachable from here)"
    return ModelNotAvailableError(
        f"{what} could not be loaded from {source!r}{offline}: "
        f"{type(err).__name__}: {str(err).splitlines()[0][:300]}\n"
        f"  It is downloaded from the Hugging Face hub on first use (or by `bas models fetch`); "
        f"without network, {how}."
    )


@contextlib.contextmanager
def _hub_mode() -> Iterator[None]:
    """Run a load with the hub clients offline (cache only) when the hub cannot be reached."""
    if hub_reachable():
        yield
        return
    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before


def _from_pretrained(cls, source: str, what: str, key: str, revision: Optional[str] = None, **kwargs):
    """`cls.from_pretrained` of a directory or hub id (at `revision`), failing with one clear error."""
    if revision and not Path(source).exists():
        kwargs["revision"] = revision
    try:
        with _hub_mode():
            return cls.from_pretrained(source, **kwargs)
    except Exception as err:  # noqa: BLE001: any failure here means "not available"
        raise _unavailable(what, source, key, err) from None


# The DDIM timesteps of Break-A-Scene's samplers (`inference.py` and train.py's validation
# scheduler build DDIMScheduler with diffusers' defaults): offset 0, "leading" spacing, so 50
# steps run 980, 960, ..., 0. SD 2.1's scheduler config says steps_offset 1 (981..1); it is
# not inherited.
DDIM_STEPS_OFFSET = 0
DDIM_TIMESTEP_SPACING = "leading"


def protocol_sampler(noise_scheduler):
    """PROTOCOL.md sec. 4: DDIM, scaled_linear 0.00085-0.012, no clipping, alpha_T not forced to 1,
    timesteps as BaS's code spaces them (`DDIM_STEPS_OFFSET`)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(
        noise_scheduler.config, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=DDIM_STEPS_OFFSET,
        timestep_spacing=DDIM_TIMESTEP_SPACING,
    )


def load_diffusion(cfg: ModelsConfig, sources: Optional[Sources] = None) -> DiffusionParts:
    """The SD 2.1-base pipeline parts for `cfg.profile`, on the CPU in fp32."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    s = sources or resolve_sources(cfg)
    if s.profile == "sandbox":
        require_sandbox_part("diffusion", *(str(Path(s.diffusion) / sub) for sub in
                                            ("unet", "vae", "text_encoder", "tokenizer", "scheduler")))
    what = f"{s.profile} diffusion model"
    rev = s.diffusion_revision
    # fp32 whatever the files hold (the sandbox's are fp16): transformers would otherwise keep
    # the saved dtype ("auto").
    unet = _from_pretrained(UNet2DConditionModel, s.diffusion, f"{what} (unet)", "diffusion", rev, subfolder="unet",
                            torch_dtype=torch.float32)
    vae = _from_pretrained(AutoencoderKL, s.diffusion, f"{what} (vae)", "diffusion", rev, subfolder="vae",
                           torch_dtype=torch.float32)
    text_encoder = _from_pretrained(CLIPTextModel, s.diffusion, f"{what} (text_encoder)", "diffusion", rev,
                                    subfolder="text_encoder", dtype=torch.float32)
    tokenizer = _from_pretrained(CLIPTokenizer, s.diffusion, f"{what} (tokenizer)", "diffusion", rev,
                                 subfolder="tokenizer")
    noise_scheduler = _from_pretrained(DDPMScheduler, s.diffusion, f"{what} (scheduler)", "diffusion", rev,
                                       subfolder="scheduler")
    sampler = protocol_sampler(noise_scheduler)
    for module in (unet, vae, text_encoder):
        module.eval()
    return DiffusionParts(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          noise_scheduler=noise_scheduler, sampler_scheduler=sampler, profile=s.profile)


def load_clip(s: Sources) -> tuple[Any, Callable, Callable]:
    """(open_clip model, its eval preprocess, its tokenizer) of `s`, in eval mode and fp32."""
    import open_clip

    if s.profile == "sandbox":
        require_sandbox_part("clip", s.clip_config_file, s.clip_pretrained)
    if s.clip_config_file:
        open_clip.add_model_config(s.clip_config_file)
    try:
        with _hub_mode():
            if s.profile == "sd21":
                model, preprocess = _sd21_clip(open_clip, s)
            else:
                model, _, preprocess = open_clip.create_model_and_transforms(s.clip_model, pretrained=s.clip_pretrained)
        tokenizer = open_clip.get_tokenizer(s.clip_model)
    except Exception as err:  # noqa: BLE001
        raise _unavailable(f"{s.profile} CLIP model {s.clip_model}", s.clip_pretrained, "clip_pretrained", err) from None
    return model.eval(), preprocess, tokenizer


def _sd21_clip(open_clip, s: Sources):
    """The sd21 CLIP from a checkpoint file: the hub's at `clip_revision`, or a local copy.

    open_clip reads a pretrained tag from the hub at no chosen revision, so bas downloads the
    tag's file itself; a file loses what the tag implies (OpenAI's models use QuickGELU), so
    the tag's settings are applied to the file explicitly.
    """
    tag_cfg = open_clip.get_pretrained_cfg(s.clip_model, s.clip_tag or "") or {}
    path = s.clip_pretrained
    if not Path(path).is_file():
        from huggingface_hub import hf_hub_download

        repo_id, _ = clip_hub_file(s.clip_model, s.clip_pretrained)
        tag_cfg = open_clip.get_pretrained_cfg(s.clip_model, s.clip_pretrained) or {}
        last: Optional[Exception] = None
        for name in CLIP_FILES[0]:
            try:
                path = hf_hub_download(repo_id, name, revision=s.clip_revision)
                break
            except Exception as err:  # noqa: BLE001: try the next alternative
                last = err
        else:
            raise last  # type: ignore[misc]
    preprocess_kwargs = {k: tag_cfg[src] for k, src in (("image_mean", "mean"), ("image_std", "std"),
                         ("image_interpolation", "interpolation"), ("image_resize_mode", "resize_mode"))
                         if src in tag_cfg}
    model, _, preprocess = open_clip.create_model_and_transforms(
        s.clip_model, pretrained=path, force_quick_gelu=bool(tag_cfg.get("quick_gelu")), **preprocess_kwargs)
    return model, preprocess


def load_dino(s: Sources) -> tuple[Any, Callable]:
    """(timm DINO ViT returning its CLS embedding, timm's eval transform) of `s`, eval mode, fp32."""
    import timm

    if s.profile == "sandbox":
        require_sandbox_part("dino", s.dino_file, str(Path(s.dino_file).parent / SANDBOX_DINO_KWARGS))
    try:
        overlay = {"file": s.dino_file} if s.dino_file else {}
        if s.dino_revision and not s.dino_file:   # timm reads "<repo>@<revision>"
            overlay["hf_hub_id"] = f"{dino_hub_repo(s.dino)}@{s.dino_revision}"
        if "img_size" in s.dino_kwargs:  # the pretrained tag's input size is not this model's
            overlay["input_size"] = (3, s.dino_kwargs["img_size"], s.dino_kwargs["img_size"])
        with _hub_mode():
            model = timm.create_model(s.dino, pretrained=True, pretrained_cfg_overlay=overlay or None,
                                      num_classes=0, **s.dino_kwargs)
        data_cfg = timm.data.resolve_data_config({}, model=model)
        transform = timm.data.create_transform(**data_cfg)
    except Exception as err:  # noqa: BLE001
        raise _unavailable(f"{s.profile} DINO model", s.dino_file or s.dino, "dino", err) from None
    return model.eval(), transform


def load_scorers(cfg: ModelsConfig, sources: Optional[Sources] = None) -> ScorerParts:
    """CLIP (open_clip), DINO (timm) and the segmenter for `cfg.profile`, eval mode.

    The segmenter is MaskFormer (transformers), or in the sandbox profile its own
    `SandboxSegmenter`, loaded when its directory exists.
    """
    s = sources or resolve_sources(cfg)
    clip_model, clip_preprocess, clip_tokenizer = load_clip(s)
    dino_model, dino_transform = load_dino(s)
    if s.profile == "sandbox":
        return ScorerParts(clip_model=clip_model, clip_preprocess=clip_preprocess, clip_tokenizer=clip_tokenizer,
                           dino_model=dino_model, dino_transform=dino_transform, maskformer=None,
                           maskformer_processor=None, profile=s.profile, segmenter=_load_sandbox_segmenter(s))

    from transformers import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor

    what = f"{s.profile} MaskFormer"
    maskformer = _from_pretrained(MaskFormerForInstanceSegmentation, s.maskformer, what, "maskformer",
                                  s.maskformer_revision)
    processor = _from_pretrained(MaskFormerImageProcessor, s.maskformer, f"{what} (processor)", "maskformer",
                                 s.maskformer_revision)
    maskformer.eval()
    return ScorerParts(clip_model=clip_model, clip_preprocess=clip_preprocess, clip_tokenizer=clip_tokenizer,
                       dino_model=dino_model, dino_transform=dino_transform, maskformer=maskformer,
                       maskformer_processor=processor, profile=s.profile)


def _load_sandbox_segmenter(s: Sources):
    """The sandbox segmenter, or None (with a warning) when it has not been trained."""
    if not Path(s.segmenter).is_dir():
        log.warning("no sandbox segmenter in %s: scoring cannot segment generated images until "
                    "`bas sandbox train --only segmenter` has written it", s.segmenter)
        return None
    # Imported here: it imports PIL and scipy, which only the sandbox profile's scoring needs
    # (bas.models is imported by the engine, and through it by bas.done and the CLI's stages).
    from bas.models.sandbox_segmenter import SandboxSegmenter

    return SandboxSegmenter.load(Path(s.segmenter))


def sandbox_weights_digest(models_cfg, parts: tuple[str, ...]) -> str:
    """A digest of the sandbox model files under `parts` (weights and configs, not the records).

    The training record gains validity figures after training (`bas sandbox train --only
    validity`), which changes no output, so it is left out.
    """
    root = sandbox_weights_dir(models_cfg)
    files = sorted(f for part in parts if (root / part).is_dir() for f in (root / part).rglob("*")
                   if f.is_file() and f.name != TRAINING_RECORD_FILE)
    return _files_digest(tuple((f.relative_to(root).as_posix(), str(f), f.stat().st_mtime_ns, f.stat().st_size)
                               for f in files))


@functools.lru_cache(maxsize=32)
def _files_digest(files: tuple[tuple[str, str, int, int], ...]) -> str:
    # Keyed by (path, mtime, size): a few MB hashed once per change, not once per use. The
    # digest covers relative names and bytes only, so another checkout of the same weights agrees.
    h = hashlib.sha256()
    for name, path, _, _ in files:
        h.update(name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]
