"""Class images for prior preservation: generated once by the base model, then reused.

The BaS code samples `num_class_images` images of its class prompt ("a photo at the
beach") with the base pipeline before training. They depend only on the base model, the
prompt and the sampler settings, so this project makes them once per such key, under
`<storage>/prior_images/<key>/`, and every scene and method reuses them. A folder is
complete when its `images.json` exists (written last, the folder renamed into place) and
its images are as it records them (size, mtime, SHA-256): a damaged set is made again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from bas import lease, paths
from bas.config import Config, ModelsConfig, to_dict
from bas.errors import DataError
from bas.io import atomic_dir, atomic_write_json, changed_files, record_files, sha256_bytes

# bas.models and the sampler import torch: imported by the functions that need them so that this
# module stays torch-free (bas.done's run key reads model_identity). The sampler is also looked up
# at call time because tests replace bas.generation.sampler.generate.

log = logging.getLogger(__name__)

MARKER = "images.json"


def model_identity(models: ModelsConfig) -> str:
    """Which base weights a profile means (what a cached result depends on)."""
    if models.profile == "tiny":
        from bas.models.tiny import TINY_VERSION

        return f"tiny:v{TINY_VERSION}:seed{models.tiny_seed}"
    if models.profile == "sandbox":
        # Files that `bas sandbox train` rewrites in place: their content names them.
        from bas.models.registry import sandbox_weights_digest

        return f"sandbox:{sandbox_weights_digest(models, ('diffusion',))}"
    if models.profile == "sd21":   # hub id @ revision, or the local copy (after BAS_SD21_DIFFUSION)
        from bas.models.fetch import sd21_identity

        return f"sd21:{sd21_identity(models, ('diffusion',))['diffusion']}"
    return f"{models.profile}:{models.sd21.diffusion}"


def sampler_identity() -> dict:
    """What the class images' sampler adds to their settings: its DDIM timestep offset (images
    made before it was recorded used 1, so their key differs and they are made again)."""
    from bas.models.registry import DDIM_STEPS_OFFSET

    return {"steps_offset": DDIM_STEPS_OFFSET}


def _prior_settings(cfg: Config, prompt: Optional[str], num_images: Optional[int] = None) -> dict:
    settings = {**to_dict(cfg.training.prior_images), **sampler_identity()}
    if prompt is not None:      # a recipe's own class prompt (e.g. one set per concept class)
        settings["prompt"] = prompt
    if num_images is not None:  # a recipe's own count (methods.<m>.prior_num_images)
        settings["num_images"] = num_images
    return settings


def class_images_key(cfg: Config, prompt: Optional[str] = None, num_images: Optional[int] = None) -> str:
    settings = {"model": model_identity(cfg.models), "prior": _prior_settings(cfg, prompt, num_images)}
    return sha256_bytes(json.dumps(settings, sort_keys=True).encode())[:16]


def class_images_dir(cfg: Config, prompt: Optional[str] = None, num_images: Optional[int] = None) -> Path:
    """Where the class images of `prompt` (default: training.prior_images.prompt) are cached,
    `num_images` of them (default: training.prior_images.num_images)."""
    return paths.prior_images_root(cfg) / class_images_key(cfg, prompt, num_images)


def class_prompts(template: str, class_names: Sequence[str]) -> list[str]:
    """The class-image prompts of a recipe: one per distinct class when the template has
    {class_name}, else the template itself."""
    if "{class_name}" not in template:
        return [template]
    return list(dict.fromkeys(template.format(class_name=name) for name in class_names))


def class_image_seeds(cfg: Config, num_images: Optional[int] = None) -> list[int]:
    prior = cfg.training.prior_images
    count = prior.num_images if num_images is None else num_images
    return [prior.seed * 1_000_003 + i for i in range(count)]


def _load(directory: Path, count: int) -> list[Image.Image]:
    images = []
    for i in range(count):
        path = directory / f"{i:04d}.png"
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"class image {path} is unreadable ({err}); delete {directory} to remake it") from None
    return images


def ensure_class_images(cfg: Config, parts, dtype=None, prompt: Optional[str] = None,
                        num_images: Optional[int] = None) -> list[Image.Image]:
    """The class images of `cfg` (of `prompt`, `num_images` of them, if given), generating them
    with `parts` (the *base* model) if absent."""
    prior = cfg.training.prior_images
    prompt = prior.prompt if prompt is None else prompt
    num_images = None if num_images == prior.num_images else num_images
    count = prior.num_images if num_images is None else num_images
    directory = class_images_dir(cfg, None if prompt == prior.prompt else prompt, num_images)
    if _complete(directory):
        return _recorded(directory, _load(directory, count))
    # One run makes a set; another run that needs it at the same time waits and reads it.
    with lease.hold(cfg, "class_images", "prior", directory.name):
        if _complete(directory):
            return _load(directory, count)
        _generate(cfg, parts, dtype, prompt, num_images, count, directory)
    return _load(directory, count)


def _complete(directory: Path) -> bool:
    """A finished set: its marker, and its images as the marker records them (a set made
    before images were recorded is taken as it is)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        log.warning("%s: its %s is unreadable: making the class images again", directory, MARKER)
        return False
    changes = changed_files(directory, marker["files"]) if isinstance(marker.get("files"), dict) else []
    if changes:
        log.warning("%s: making the class images again: %s", directory, "; ".join(str(c) for c in changes))
    return not changes


def _recorded(directory: Path, images: list[Image.Image]) -> list[Image.Image]:
    """`images`, read from `directory`; a marker written before images were recorded gets
    their record now (they just loaded), so that later runs and `bas verify` can check them."""
    marker = json.loads((directory / MARKER).read_text())
    if "files" not in marker:
        names = sorted(p.name for p in directory.glob("*.png"))
        atomic_write_json(directory / MARKER, {**marker, "files": record_files(directory, names)})
    return images


def _generate(cfg: Config, parts, dtype, prompt: str, num_images: Optional[int], count: int,
              directory: Path) -> None:
    prior = cfg.training.prior_images
    try:
        from bas.generation.sampler import generate
    except ImportError as err:  # the sampler lands with the generation package
        raise DataError(f"class images for prior preservation are missing in {directory} and the "
                        f"sampler (bas.generation.sampler) is not available: {err}") from None
    log.info("generating %d class images %r into %s", count, prompt, directory)
    seeds = class_image_seeds(cfg, count)
    images = generate(parts, [prompt] * len(seeds), seeds, steps=prior.sampling_steps,
                      guidance_scale=prior.guidance_scale, batch_size=prior.batch_size, dtype=dtype)
    with atomic_dir(directory) as tmp:
        names = [f"{i:04d}.png" for i in range(len(images))]
        for name, image in zip(names, images):
            image.save(tmp / name, format="PNG")
        (tmp / MARKER).write_text(json.dumps({
            "model": model_identity(cfg.models), "prompt": prompt, "seeds": seeds,
            "settings": _prior_settings(cfg, prompt, num_images), "files": record_files(tmp, names)},
            indent=2) + "\n")
