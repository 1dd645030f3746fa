"""`bas train`, `bas extract`, `bas imagine`: train a method on a scene, or on your own photo.

    bas train --method bas --scene coco-train2017-650       # a staged scene id, or a scene folder
    bas extract --image photo.jpg --mask cat.png --mask dog.png [--names cat,dog]
    bas imagine --run data/runs/bas/photo "a photo of <asset0> at the beach" --n 4
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import dataclasses
import re
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one method on one scene",
                                  description="Train METHOD (a recipe in params.yaml `methods:`) on a scene. "
                                              "A finished run with the same settings is not redone.")
    train.add_argument("--method", required=True, help="method name, e.g. bas, bas_no_attn_loss, ti_m")
    train.add_argument("--scene", required=True,
                       help="a scene id under <storage_root>/<paths.scenes>, or a scene folder")
    train.add_argument("--out", type=Path, help="run folder (default: <storage_root>/<paths.runs>/METHOD/SCENE)")
    train.set_defaults(func=run_train)

    extract = subparsers.add_parser("extract", help="learn a token per masked concept of your own photo",
                                    description="Make a scene from a photo and one mask per concept, then train "
                                                "Break-A-Scene on it; `bas imagine` then generates with the tokens.")
    extract.add_argument("--image", type=Path, required=True, help="the photo")
    extract.add_argument("--mask", type=Path, action="append", required=True, dest="masks",
                         help="a mask of one concept, same size as the photo (repeat per concept)")
    extract.add_argument("--names", help="comma-separated concept names, one per --mask (default: mask file names)")
    extract.add_argument("--id", dest="scene_id", help="scene id (default: from the photo's file name)")
    extract.add_argument("--method", default="bas", help="method to train (default: %(default)s)")
    extract.add_argument("--replace", action="store_true", help="replace a scene of the same id")
    extract.add_argument("--out", type=Path, help="run folder (default: <storage_root>/<paths.runs>/METHOD/ID)")
    extract.set_defaults(func=run_extract)

    imagine = subparsers.add_parser("imagine", help="generate images with a trained run's tokens",
                                    description="Generate images of PROMPT with the tokens (and weights, if kept) "
                                                "of a finished run; write <asset0>, <asset1>, ... in the prompt.")
    imagine.add_argument("--run", type=Path, required=True, help="a run folder (holding train/) or its train/ folder")
    imagine.add_argument("prompt", help='e.g. "a photo of <asset0> and <asset1> at the beach"')
    imagine.add_argument("--seed", type=int, default=0, help="seed of the first image (default: %(default)s)")
    imagine.add_argument("--n", type=int, default=4, help="number of images, seeds SEED.. (default: %(default)s)")
    imagine.add_argument("--steps", type=int, help="DDIM steps (default: params.yaml generation.steps)")
    imagine.add_argument("--guidance", type=float,
                         help="classifier-free guidance scale (default: params.yaml generation.guidance_scale)")
    imagine.add_argument("--out", type=Path, help="image folder (default: RUN/imagine)")
    imagine.set_defaults(func=run_imagine)


def resolve_scene(cfg, scene: str):
    """A scene folder, or the id of a scene in the scenes directory."""
    from bas import paths
    from bas.errors import DataError
    from bas.scenes import load_scene
    from bas.paths import SCENE_JSON

    given = Path(scene)
    if (given / SCENE_JSON).exists():
        return load_scene(given)
    staged = paths.scenes_dir(cfg) / scene
    if (staged / SCENE_JSON).exists():
        return load_scene(staged)
    raise DataError(f"scene {scene!r}: neither a scene folder nor a scene id in {paths.scenes_dir(cfg)} "
                    "(stage scenes with `bas stage`, or add your photo with `bas scene add`)")


def _report(result, method: str, scene) -> None:
    state = "already trained" if result.skipped else "trained"
    pairs = ", ".join(f"{tok} = {name}" for tok, name in
                      zip(result.summary.get("placeholders", []), result.summary.get("class_names", [])))
    print(f"{method} on {scene.scene_id}: {state} -> {result.train_dir}")
    if pairs:
        print(f"  tokens: {pairs}")


def run_train(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.training import get_recipe, train_scene

    cfg = load_config(args)
    get_recipe(cfg, args.method)    # an unknown or unavailable method fails before loading anything
    scene = resolve_scene(cfg, args.scene)
    result = train_scene(cfg, args.method, scene, run_dir=args.out)
    _report(result, args.method, scene)
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.scenes import add_scene, make_user_scene
    from bas.scenes.user import default_scene_id
    from bas.training import get_recipe, train_scene

    cfg = load_config(args)
    # Your own photo: `bas imagine` later rebuilds the personalised model, so keep its weights.
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, keep_weights=True))
    get_recipe(cfg, args.method)
    names = args.names.split(",") if args.names is not None else None
    scene_id = args.scene_id or default_scene_id(args.image)
    scene = make_user_scene(args.image, args.masks, scene_id, cfg.scenes.resolution, names)
    add_scene(scene, paths.scenes_dir(cfg), replace=args.replace)
    result = train_scene(cfg, args.method, scene, run_dir=args.out)
    _report(result, args.method, scene)
    run_dir = result.train_dir.parent
    tokens = result.summary.get("placeholders", ["<asset0>"])
    print(f'  next: bas imagine --run {run_dir} "a photo of {" and ".join(tokens)} at the beach"')
    return 0


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit] or "image"


def run_imagine(args: argparse.Namespace) -> int:
    import torch

    from bas.cli import load_config
    from bas.errors import BasError
    from bas.generation.sampler import generate
    from bas.io import atomic_save_image
    from bas.models import load_diffusion, pick_device
    from bas.paths import TOKENS_FILE, TRAIN_DIR
    from bas.tokens import apply_trained

    cfg = load_config(args)
    if args.n < 1:
        raise BasError(f"--n {args.n}: must be >= 1")
    train_dir = args.run if (args.run / TOKENS_FILE).exists() else args.run / TRAIN_DIR
    if not (train_dir / TOKENS_FILE).exists():
        raise BasError(f"{args.run}: not a finished run (no {TRAIN_DIR}/{TOKENS_FILE}); train it with "
                       "`bas train` or `bas extract` first")
    parts = load_diffusion(cfg.models)
    tokens = apply_trained(parts, train_dir)
    missing = [t for t in re.findall(r"<asset\d+>", args.prompt) if t not in tokens]
    if missing:
        raise BasError(f"prompt uses {', '.join(missing)} but the run at {args.run} has only {', '.join(tokens)}")
    device = pick_device()
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.models.gpu_dtype] if device.type == "cuda" else None
    seeds = list(range(args.seed, args.seed + args.n))
    gen = cfg.generation
    images = generate(parts, [args.prompt] * args.n, seeds, steps=gen.steps if args.steps is None else args.steps,
                      guidance_scale=gen.guidance_scale if args.guidance is None else args.guidance,
                      batch_size=gen.batch_size, negative_prompt=gen.negative_prompt, dtype=dtype)
    out = args.out or train_dir.parent / "imagine"
    for seed, image in zip(seeds, images):
        path = out / f"{_slug(args.prompt)}-s{seed}.png"
        atomic_save_image(path, image)
        print(path)
    return 0
