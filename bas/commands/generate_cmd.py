"""`bas generate`: make the image grid of a trained (method, scene), or print grid sizes."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
from pathlib import Path

PAPER_IMAGES_PER_METHOD = 5400  # BaS appendix B.2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate the prompt grid of a trained run (resumable)",
        description="Generate every image of a trained run's grid: every non-empty concept subset x "
                    "every template x generation.seeds seeds. Images already made are kept.")
    parser.add_argument("--method", help="method name (a key of params `methods`)")
    parser.add_argument("--scene", help="scene id")
    parser.add_argument("--run", help="run directory (default: <storage_root>/runs/<method>/<scene>)")
    parser.add_argument("--scenes", help="scenes directory (default: <storage_root>/scenes)")
    parser.add_argument("--out", help="where the images go (default: the run directory); e.g. a second grid "
                                      "of the same run with -S generation.sampler=mifo_box")
    parser.add_argument("--count", action="store_true",
                        help="only print the grid size of every scene in the scenes directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.errors import BasError

    cfg = load_config(args)
    scenes_dir = Path(args.scenes) if args.scenes else paths.scenes_dir(cfg)
    if args.count:
        return _print_count(cfg, scenes_dir)
    if not args.method or not args.scene:
        raise BasError("bas generate needs --method and --scene (or --count)")
    from bas.generation.run import generate_run

    manifest = generate_run(cfg, args.method, args.scene, args.run, scenes_dir, progress=not args.no_progress,
                            out=args.out)
    run_dir = Path(args.run) if args.run else paths.run_dir(cfg, args.method, args.scene)
    run_dir = Path(args.out) if args.out else run_dir
    print(f"{len(manifest)} images in {paths.images_dir(run_dir)}; manifest {paths.manifest_path(run_dir)}")
    return 0


def _print_count(cfg, scenes_dir: Path) -> int:
    from bas.errors import DataError
    from bas.generation.grid import grid_size, seeds_for_total, total_grid_size
    from bas.scenes import load_scenes

    scenes = load_scenes(scenes_dir)
    if not scenes:
        raise DataError(f"no scenes in {scenes_dir} (run `bas stage` or `bas scene add` first)")
    gen = cfg.generation
    counts = []
    for scene in scenes:
        n = len(scene.class_names)
        counts.append(n)
        print(f"{scene.scene_id}: {n} concepts -> {grid_size(n, len(gen.templates), gen.seeds)} images")
    total = total_grid_size(counts, gen)
    print(f"total: {total} images a method ({len(counts)} scenes, {len(gen.templates)} templates, "
          f"{gen.seeds} seed(s))")
    seeds = seeds_for_total(counts, len(gen.templates), PAPER_IMAGES_PER_METHOD)
    if seeds:
        print(f"the paper's {PAPER_IMAGES_PER_METHOD}: set generation.seeds={seeds}")
    else:
        print(f"the paper's {PAPER_IMAGES_PER_METHOD} is not a multiple of {total // gen.seeds} "
              "(images a seed over these scenes): no generation.seeds value reaches it")
    return 0
