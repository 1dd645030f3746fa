"""Rehearse a real sd21 run at full size on this machine, with random weights (no download).

    python scripts/rehearse_sd21.py [--models DIR] [--work DIR] [--coco-root DIR] [--max-rss-gb 20]

Writes the sd21 models with random weights in their hub layouts (about 7.5 GB, once), points
the sd21 profile at them through the BAS_SD21_* variables a user sets for a local copy, and
runs `bas stage` (one COCO-sample scene, 512 px), `bas train` (BaS, one step of each phase),
`bas generate` (one template, 2 DDIM steps) and `bas score`, each in its own process. Prints
one JSON object: each command's wall time and peak RSS, and the total. Exit status 0 when
every command succeeded. See docs/MODELS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bas import config  # noqa: E402
from bas.models.rehearsal import rehearse, write_models  # noqa: E402
from bas.training.methods import get_recipe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path(".cache/bas/sd21-random"),
                        help="where the random-weight models are written (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path(".cache/bas/rehearsal"), help="storage root of the run")
    parser.add_argument("--coco-root", type=Path, default=Path("../shared/coco-sample"))
    parser.add_argument("--max-rss-gb", type=float, default=20.0, help="kill a command above this RSS")
    parser.add_argument("--method", default="bas", help="the method trained (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    write_models(args.models)
    build_s = round(time.perf_counter() - start, 1)
    recipe = get_recipe(config.load(Path(__file__).resolve().parents[1] / "params.yaml"), args.method)
    summary = rehearse(args.models, args.work, args.coco_root, args.method, recipe, max_rss_gb=args.max_rss_gb)
    summary["build_models_s"] = build_s
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
