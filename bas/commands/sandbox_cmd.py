"""`bas sandbox`: the sandbox world and the small models bas trains on it (docs/SANDBOX.md).

    bas sandbox world                      # rewrite the bundled evaluation scenes (a COCO root)
    bas sandbox train [--only base,judge]  # train models from the seed; resumable
    bas sandbox check [--samples 100]      # recompute validity figures of the committed weights
    bas sandbox reference                  # score ground-truth renders: each metric's ceiling and floor
    bas sandbox personalizability          # what a long full fine-tune of a scene puts into the base model
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sandbox", help="the sandbox world and its trained models",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")

    world = sub.add_parser("world", help="write the sandbox evaluation scenes as a COCO root",
                           description="Write sandbox.world_images scenes of novel objects (seed sandbox.seed) "
                                       "as a COCO root: <out>/<split>/*.png + annotations/instances_<split>.json.")
    world.add_argument("--out", type=Path, help="COCO root (default: the bundled one, bas/data/sandbox/world)")
    world.set_defaults(func=run_world)

    train = sub.add_parser("train", help="train the sandbox models from their seed and params",
                           description="Train the sandbox models (stages: vae, base, clip, dino, segmenter, judge, "
                                       "validity) into models.sandbox_weights (empty: the weights bundled with "
                                       "bas), each with its training record. Interrupted runs resume from their "
                                       "checkpoints.")
    train.add_argument("--only", help="comma-separated stages (default: all)")
    train.add_argument("--work-dir", type=Path, default=Path(".cache/bas/sandbox-train"),
                       help="checkpoints of unfinished stages (default: %(default)s)")
    train.add_argument("--device", default="auto",
                       help="where vae, base and validity run: auto (the GPU if torch sees one), cpu, cuda, "
                            "cuda:N (default: %(default)s); the scorers train on the CPU")
    train.add_argument("--workers", type=int,
                       help="processes rendering training batches ahead for vae and base (default: 0 on a CPU, "
                            "up to 8 beside a GPU); results do not depend on it")
    train.set_defaults(func=run_train)

    check = sub.add_parser("check", help="recompute the committed models' validity figures",
                           description="Measure every committed sandbox model on held-out ground truth and "
                                       "compare with its training record.")
    check.add_argument("--samples", type=int, help="base-model samples per set (default: sandbox.validity_samples)")
    check.set_defaults(func=run_check)

    reference = sub.add_parser("reference", help="score ground-truth renders of the staged scenes' objects",
                               description="Render each staged sandbox scene's grid with the true objects "
                                           "(ground_truth: each metric's ceiling) and with same-shape objects "
                                           "of another colour (other_identity: identity's floor), score them "
                                           "with the profile's scorers and print the means.")
    reference.add_argument("--out", type=Path,
                           help="directory of reference_means.csv (default: <storage root>/sandbox-reference); "
                                "renders and scores go where `bas run` keeps a method's")
    reference.set_defaults(func=run_reference)

    personal = sub.add_parser("personalizability",
                              help="how much of a scene a long full fine-tune puts into the base model",
                              description="Train the reference recipe full_finetune (UNet, text encoder and "
                                          "tokens on the scene image, masked loss) on the first --scenes staged "
                                          "scenes, generate the grid plus the training prompt, score them, and "
                                          "record identity per scene and mean in the diffusion model's training "
                                          "record (key personalizability).")
    personal.add_argument("--scenes", type=int, default=2, help="staged scenes to measure (default: %(default)s)")
    personal.add_argument("--no-record", action="store_true", help="print the figures; leave the record as it is")
    personal.set_defaults(func=run_personalizability)


def run_world(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.sandbox.world import write_coco_root
    from bas.scenes.coco import sandbox_world_root

    cfg = load_config(args)
    out = args.out or sandbox_world_root()
    write_coco_root(out, cfg.sandbox.world_split, cfg.sandbox.world_images, cfg.sandbox.seed)
    print(f"sandbox world: {cfg.sandbox.world_images} scenes in {out} (split {cfg.sandbox.world_split})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.sandbox.stages import parse_stages, resolve_device, resolve_workers, run_stages

    cfg = load_config(args)
    device = resolve_device(args.device)
    records = run_stages(cfg, parse_stages(args.only), args.work_dir, device, resolve_workers(args.workers, device))
    for name, record in records.items():
        print(f"{name}: {json.dumps(record.get('validity', record))}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.sandbox.check import check_all

    cfg = load_config(args)
    failures = check_all(cfg, samples=args.samples)
    return 1 if failures else 0


def run_reference(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.pipeline import scene_ids, score_references

    cfg = load_config(args)
    ids = scene_ids(cfg)
    out = args.out or paths.storage_root(cfg) / "sandbox-reference"
    means = score_references(cfg, ids, out)
    table = means.pivot(index="method", columns="metric", values="mean")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"sandbox reference: {len(ids)} scene(s); renders in {paths.runs_dir(cfg)}, scores in "
          f"{paths.scores_dir(cfg)}, means in {out / 'reference_means.csv'}")
    return 0


def run_personalizability(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.errors import ConfigError
    from bas.pipeline import measure_personalizability, scene_ids, stage
    from bas.sandbox.personalizability import METHOD, RECORD_KEY, measuring_config
    from bas.training import get_recipe
    from bas.sandbox.stages import write_record_entry

    cfg = load_config(args)
    if cfg.models.profile != "sandbox":
        raise ConfigError(f"bas sandbox personalizability: models.profile is {cfg.models.profile!r}; it measures "
                          "the sandbox's base model (-S models.profile=sandbox)")
    if args.scenes < 1:
        raise ConfigError(f"--scenes {args.scenes}: must be >= 1")
    stage(cfg)
    ids = scene_ids(cfg)[:args.scenes]
    figures = measure_personalizability(cfg, ids)
    recipe = get_recipe(cfg, METHOD)
    generation = measuring_config(cfg).generation
    figures = {"method": METHOD, "phases": {name: {"steps": p.steps, "lr": p.lr, "trainable": list(p.trainable)}
                                            for name, p in recipe.phases.items() if p.steps},
               "generation": {"templates": list(generation.templates), "seeds": generation.seeds,
                              "steps": generation.steps, "guidance_scale": generation.guidance_scale},
               **figures}
    print(json.dumps(figures, indent=2))
    if not args.no_record:
        path = write_record_entry(cfg, RECORD_KEY, figures)
        print(f"sandbox personalizability: recorded in {path}")
    return 0
