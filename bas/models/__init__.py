"""The model registry: every model a run needs, by profile (`sd21`, `tiny`).

    parts = load_diffusion(cfg.models)     # UNet, VAE, text encoder, tokenizer, schedulers
    scorers = load_scorers(cfg.models)     # CLIP ViT-L/14, DINO ViT-B/16, MaskFormer Swin-L
"""

from bas.models.registry import (DiffusionParts, ScorerParts, Sources, load_diffusion, load_scorers,
                                 pick_device, resolve_sources)

__all__ = ["DiffusionParts", "ScorerParts", "Sources", "load_diffusion", "load_scorers", "pick_device",
           "resolve_sources"]
