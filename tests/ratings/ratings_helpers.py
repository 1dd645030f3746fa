"""Helpers of the ratings tests: a small storage root made on the fly (scenes with masks and
several methods' runs), and running `bas` as a real process."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from bas import config

REPO = Path(__file__).resolve().parents[2]
from bas.schema import MANIFEST_COLUMNS, frame
from tests import params_defaults

METHODS = ("break_a_scene", "textual_inversion_m", "dreambooth_m")
# scene id -> class names; two scenes of 3 concepts and one of 2.
SCENES = {
    "coco-train2017-101": ["cat", "dog", "chair"],
    "coco-train2017-202": ["cup", "bowl", "vase"],
    "coco-train2017-303": ["bus", "car"],
}
TEMPLATES = ("a photo of {tokens} at the beach", "a photo of {tokens} in the snow")
SIZE = 96
COLOURS = [(220, 60, 50), (40, 120, 220), (60, 170, 80), (240, 180, 40)]


def _shape_box(index: int) -> tuple[int, int, int, int]:
    step = SIZE // 3
    x = 6 + (index % 3) * step
    return (x, 20 + 8 * index, x + step - 4, 20 + 8 * index + 44)


def _draw(classes_in: list[int], background: tuple[int, int, int], jitter: int = 0) -> tuple[Image.Image, list]:
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    masks = []
    for i in classes_in:
        x0, y0, x1, y1 = _shape_box(i)
        box = (x0 + jitter, y0, x1 + jitter, y1)
        mask = Image.new("L", (SIZE, SIZE), 0)
        if i % 2 == 0:
            draw.ellipse(box, fill=COLOURS[i])
            ImageDraw.Draw(mask).ellipse(box, fill=255)
        else:
            draw.rectangle(box, fill=COLOURS[i])
            ImageDraw.Draw(mask).rectangle(box, fill=255)
        masks.append(mask)
    return image, masks


def make_storage_root(root: Path, methods=METHODS, scenes=SCENES, templates=TEMPLATES, seeds: int = 1) -> Path:
    """Write scenes/<id>/{image.png, mask_<i>.png, scene.json} and runs/<method>/<id>/."""
    for s, (scene_id, classes) in enumerate(scenes.items()):
        scene_dir = root / "scenes" / scene_id
        scene_dir.mkdir(parents=True)
        image, masks = _draw(list(range(len(classes))), (200 - 30 * s, 200, 190 + 20 * s))
        image.save(scene_dir / "image.png")
        concepts = []
        for i, (name, mask) in enumerate(zip(classes, masks)):
            mask.save(scene_dir / f"mask_{i}.png")
            concepts.append({"index": i, "class_name": name, "category_id": i + 1, "mask": f"mask_{i}.png",
                             "coverage": 0.2})
        (scene_dir / "scene.json").write_text(json.dumps({"scene_id": scene_id, "concepts": concepts}))
    for m, method in enumerate(methods):
        for scene_id, classes in scenes.items():
            run = root / "runs" / method / scene_id
            (run / "images").mkdir(parents=True)
            rows = []
            subsets = [c for k in range(1, len(classes) + 1) for c in itertools.combinations(range(len(classes)), k)]
            for t, template in enumerate(templates):
                for subset in subsets:
                    for seed_index in range(seeds):
                        key = f"t{t}_s{'-'.join(map(str, subset))}_k{seed_index}"
                        image, _ = _draw(list(subset), (150 + 30 * t, 210 - 40 * m, 230), jitter=4 * m)
                        image.save(run / "images" / f"{key}.png")
                        tokens = " and ".join(f"<asset{i}>" for i in subset)
                        named = " and ".join(f"a {classes[i]}" for i in subset)
                        rows.append({
                            "method": method, "scene_id": scene_id, "template_id": t, "template": template,
                            "subset": "+".join(map(str, subset)), "subset_size": len(subset),
                            "seed_index": seed_index, "seed": 1000 * t + seed_index,
                            "prompt": template.format(tokens=tokens), "prompt_classes": template.format(tokens=named),
                            "sampler": "ddim", "path": f"images/{key}.png"})
            frame(rows, MANIFEST_COLUMNS).to_parquet(run / "manifest.parquet", index=False)
    return root


def make_config(root: Path, **ratings) -> config.Config:
    defaults = {"num_prompt_questions": 6, "num_identity_questions": 6, "ratings_per_question": 2}
    return params_defaults.parse({"paths": {"storage_root": str(root)}, "ratings": {**defaults, **ratings}})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} within {timeout:.0f} s")
            time.sleep(0.2)


def bas_command(root: Path, *args: str, **ratings) -> list[str]:
    """`python -m bas.cli` on the repo's params with this test's ratings overrides."""
    overrides = {"num_prompt_questions": 6, "num_identity_questions": 6, "ratings_per_question": 2, **ratings}
    cmd = [sys.executable, "-m", "bas.cli", "--params", str(REPO / "params.yaml")]
    for key, value in overrides.items():
        cmd += ["-S", f"ratings.{key}={value}"]
    return cmd + list(args)


def bas_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}
