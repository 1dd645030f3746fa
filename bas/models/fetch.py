"""The hub files each `sd21` model is read from, and `bas models fetch` / the presence check.

Every model of the profile is a `HubModel`: a hub repository at a revision and the files the
loaders read from it (groups of alternatives in order of preference: `a.safetensors` before
`a.bin`, as the libraries themselves prefer), or a local copy (a directory, or for CLIP and
DINO a weights file) named by params or an environment variable.

    models = sd21_models(cfg.models)        # list[HubModel], local copies resolved
    fetch(models)                           # download into the HF cache (resumable), -> list[Fetched]
    present(model)                          # -> Presence: what is in the cache or the local copy

Downloads go through `huggingface_hub.hf_hub_download`, which shows a progress bar per file
and resumes a file a killed download left half-written.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

from bas.config import ModelsConfig
from bas.errors import ModelNotAvailableError

# huggingface_hub's client, open_clip and timm are imported in the functions that use them:
# bas.done and bas.training.prior read `sd21_identity` from here without them (CLI start-up).

# params key under models.sd21 -> the environment variable that names a local copy instead
ENV_OVERRIDES = {
    "diffusion": "BAS_SD21_DIFFUSION",
    "clip_pretrained": "BAS_SD21_CLIP",
    "dino": "BAS_SD21_DINO",
    "maskformer": "BAS_SD21_MASKFORMER",
}

# The diffusers layout of a Stable Diffusion repository, as `load_diffusion` reads it (part by
# part, so the pipeline's model_index.json is not needed).
DIFFUSION_FILES: tuple[tuple[str, ...], ...] = (
    ("scheduler/scheduler_config.json",),
    ("tokenizer/vocab.json",), ("tokenizer/merges.txt",), ("tokenizer/tokenizer_config.json",),
    ("text_encoder/config.json",), ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
    ("unet/config.json",), ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
    ("vae/config.json",), ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
)
# Fetched when the repository has them, not needed by a local copy (the tokenizer's special
# tokens may live in tokenizer_config.json alone).
DIFFUSION_OPTIONAL = ("model_index.json", "tokenizer/special_tokens_map.json")
# open_clip reads a hub checkpoint as open_clip_model.safetensors, else open_clip_pytorch_model.bin.
CLIP_FILES = (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
# timm reads model.safetensors, else pytorch_model.bin.
DINO_FILES = (("model.safetensors", "pytorch_model.bin"),)
MASKFORMER_FILES = (("config.json",), ("preprocessor_config.json",), ("model.safetensors", "pytorch_model.bin"))


@dataclass(frozen=True)
class HubModel:
    """One model of a profile: where it is read from."""

    key: str                            # params key under models.sd21 (and ENV_OVERRIDES)
    what: str                           # for messages: "diffusion model (SD 2.1-base)"
    repo_id: str                        # hub repository ("" for a local copy)
    revision: str                       # hub revision ("" for a local copy)
    files: tuple[tuple[str, ...], ...]  # file groups: one of each group is needed
    local: Optional[str] = None         # a local copy: a directory, or a weights file
    optional: tuple[str, ...] = ()      # fetched too when the repository has them

    @property
    def source(self) -> str:
        return self.local if self.local else f"{self.repo_id}@{self.revision}"

    def how_to_get(self) -> str:
        env = ENV_OVERRIDES[self.key]
        return (f"run `bas models fetch` where the hub is reachable, or point {env} / "
                f"params models.sd21.{self.key} at a local copy (docs/MODELS.md)")


_HUB_REACHABLE: Optional[bool] = None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect (checked once per process).

    Without this, the hub clients retry with back-off for over a minute before giving up;
    a user without network should hear at once which model is missing.
    """
    global _HUB_REACHABLE
    if _HUB_REACHABLE is None:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            _HUB_REACHABLE = False
        else:
            host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
            try:
                socket.create_connection((host, 443), timeout=timeout).close()
                _HUB_REACHABLE = True
            except OSError:
                _HUB_REACHABLE = False
    return _HUB_REACHABLE


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _local(value: str) -> Optional[str]:
    """`value` when it names an existing file or directory (a local copy), else None."""
    return value if value and Path(value).exists() else None


def clip_hub_file(model_name: str, tag: str) -> tuple[str, str]:
    """(repo_id, file) open_clip reads the pretrained tag `tag` of `model_name` from."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub = (cfg or {}).get("hf_hub", "")
    if not hub:
        raise ModelNotAvailableError(f"params: models.sd21.clip_pretrained = {tag!r}: open_clip has no hub "
                                     f"checkpoint for {model_name} under that tag")
    repo_id, filename = os.path.split(hub.rstrip("/")) if hub.endswith(".bin") else (hub.rstrip("/"), "")
    return repo_id, filename


def dino_hub_repo(model_name: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ModelNotAvailableError(f"params: models.sd21.dino = {model_name!r}: timm has no hub checkpoint for it")
    return cfg.hf_hub_id


def sd21_models(cfg: ModelsConfig) -> list[HubModel]:
    """The four models of the sd21 profile, each a hub repo at a revision or a local copy."""
    src = cfg.sd21
    value = {key: os.environ.get(env) or getattr(src, key) for key, env in ENV_OVERRIDES.items()}
    models = []
    local = _local(value["diffusion"])
    models.append(HubModel("diffusion", "diffusion model (SD 2.1-base)", "" if local else value["diffusion"],
                           "" if local else src.diffusion_revision, DIFFUSION_FILES, local, DIFFUSION_OPTIONAL))
    local = _local(value["clip_pretrained"])
    repo = "" if local else clip_hub_file(src.clip_model, value["clip_pretrained"])[0]
    models.append(HubModel("clip_pretrained", f"CLIP {src.clip_model} ({src.clip_pretrained})", repo,
                           "" if local else src.clip_revision, CLIP_FILES, local))
    local = _local(value["dino"])
    models.append(HubModel("dino", f"DINO {src.dino}", "" if local else dino_hub_repo(value["dino"]),
                           "" if local else src.dino_revision, DINO_FILES, local))
    local = _local(value["maskformer"])
    models.append(HubModel("maskformer", "MaskFormer (Swin-L, COCO panoptic)", "" if local else value["maskformer"],
                           "" if local else src.maskformer_revision, MASKFORMER_FILES, local))
    return models


def sd21_identity(cfg: ModelsConfig, parts: Sequence[str]) -> dict[str, str]:
    """What the sd21 models under `parts` ("diffusion", "clip", "dino", "segmenter") are: hub id
    @ revision, or the local copy's path, after the environment overrides (no library imported)."""
    src = cfg.sd21

    def at(key: str, revision: str) -> str:
        value = os.environ.get(ENV_OVERRIDES[key]) or getattr(src, key)
        return value if _local(value) else f"{value}@{revision}"

    known = {"diffusion": at("diffusion", src.diffusion_revision),
             "clip": f"{src.clip_model}:{at('clip_pretrained', src.clip_revision)}",
             "dino": at("dino", src.dino_revision), "segmenter": at("maskformer", src.maskformer_revision)}
    return {part: known[part] for part in parts if part in known}


def sd21_model(cfg: ModelsConfig, key: str) -> HubModel:
    return next(m for m in sd21_models(cfg) if m.key == key)


# --------------------------------------------------------------------------- presence


@dataclass
class Presence:
    model: HubModel
    files: dict[str, Path] = field(default_factory=dict)   # repo file -> local path
    missing: list[str] = field(default_factory=list)       # one name per missing group

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())

    @property
    def where(self) -> str:
        if self.model.local:
            return self.model.local
        first = next(iter(self.files.values()), None)
        if first is None:
            return str(hf_cache_dir())
        # <cache>/models--org--name/snapshots/<commit>/<file>: the snapshot directory
        parts = first.parts
        return str(Path(*parts[:parts.index("snapshots") + 2])) if "snapshots" in parts else str(first.parent)

    def problem(self) -> str:
        """One line: which model is missing what, and how to get it."""
        return (f"{self.model.what}: {self.missing[0]} not found in {self.where if self.model.local else self.model.source}"
                f"{'' if self.model.local else ' (Hugging Face cache ' + str(hf_cache_dir()) + ')'}; "
                f"{self.model.how_to_get()}")


def _local_presence(model: HubModel) -> Presence:
    root = Path(model.local)
    result = Presence(model)
    if root.is_file():  # a CLIP / DINO weights file
        result.files[root.name] = root
        return result
    for group in model.files:
        found = next((root / name for name in group if (root / name).is_file()), None)
        if found is None:
            result.missing.append(str(root / group[0]))
        else:
            result.files[group[0]] = found
    return result


def present(model: HubModel) -> Presence:
    """Which of the model's files are here (in its local copy, or the HF cache at its revision)."""
    if model.local:
        return _local_presence(model)
    from huggingface_hub import try_to_load_from_cache

    result = Presence(model)
    for group in model.files:
        found = None
        for name in group:
            cached = try_to_load_from_cache(model.repo_id, name, revision=model.revision)
            if isinstance(cached, str) and Path(cached).is_file():
                found = Path(cached)
                break
        if found is None:
            result.missing.append(group[0])
        else:
            result.files[group[0]] = found
    return result


# --------------------------------------------------------------------------- fetch


@dataclass
class Fetched:
    model: HubModel
    commit: str                         # the commit the revision resolved to ("" for a local copy)
    where: str                          # the snapshot directory or the local copy
    size: int                           # bytes of the files the loaders read


def _choose(model: HubModel, repo_files: Sequence[str]) -> list[str]:
    """One file of each group that the repository holds, in the group's order of preference."""
    available = set(repo_files)
    chosen = []
    for group in model.files:
        name = next((n for n in group if n in available), None)
        if name is None:
            raise ModelNotAvailableError(f"{model.what}: {model.source} has none of {', '.join(group)}; "
                                         "is the revision right?")
        chosen.append(name)
    return chosen


def _hub_error(model: HubModel, err: Exception) -> ModelNotAvailableError:
    why = "the Hugging Face hub is not reachable from here (or HF_HUB_OFFLINE is set)" if not hub_reachable() \
        else f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return ModelNotAvailableError(f"{model.what} ({model.source}) cannot be downloaded: {why}; "
                                  f"{model.how_to_get()}")


def fetch_one(model: HubModel) -> Fetched:
    """Download the model's files into the HF cache (skipping what is there), or check its local copy."""
    if model.local:
        found = _local_presence(model)
        if not found.ok:
            raise ModelNotAvailableError(found.problem())
        return Fetched(model, "", model.local, found.size)
    from huggingface_hub import HfApi, hf_hub_download

    if not hub_reachable():
        raise _hub_error(model, RuntimeError("offline"))
    try:
        info = HfApi().model_info(model.repo_id, revision=model.revision)
        repo_files = [s.rfilename for s in info.siblings or []]
        names = _choose(model, repo_files) + [name for name in model.optional if name in repo_files]
        paths = [Path(hf_hub_download(model.repo_id, name, revision=info.sha)) for name in names]
    except ModelNotAvailableError:
        raise
    except Exception as err:  # noqa: BLE001: any hub failure is "cannot be downloaded", named
        raise _hub_error(model, err) from None
    where = Path(*paths[0].parts[:paths[0].parts.index("snapshots") + 2]) if "snapshots" in paths[0].parts \
        else paths[0].parent
    return Fetched(model, info.sha or "", str(where), sum(p.stat().st_size for p in paths))


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
