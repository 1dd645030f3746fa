"""Build the demo COCO-format source in bas/data/demo/ from scikit-image's sample photos.

The polygons below were drawn by hand on the sample photos (approximate outlines, in the
photos' own pixel coordinates); the two collages paste crops of two photos side by side or
one above the other, and their polygons are mapped and clipped the same way. Categories
(names and ids) are copied from a real COCO instances file.

    python scripts/make_demo_data.py [--categories-from ../shared/coco-sample/annotations/instances_train2017.json]

Needs scikit-image (for its bundled sample photos); bas itself does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image
from pycocotools import mask as mask_utils
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bas" / "data" / "demo"
SPLIT = "demo"
JPEG_QUALITY = 88

# ----------------------------------------------------------------- hand-drawn polygons
# (x, y) points in the source photo's pixels, clockwise.

COFFEE_CUP = [  # coffee.png 600x400: the cup with its handle
    (175, 75), (185, 45), (210, 28), (250, 18), (300, 16), (350, 22), (385, 38), (405, 60),
    (410, 90), (405, 130), (395, 175), (385, 210), (370, 235), (350, 255), (320, 270), (290, 275),
    (258, 272), (255, 290), (245, 302), (225, 306), (205, 300), (196, 285), (197, 260), (203, 240),
    (215, 228), (200, 210), (188, 180), (180, 140), (174, 105)]
COFFEE_SPOON = [  # the spoon on the saucer (its handle passes behind the cup)
    (412, 68), (422, 72), (418, 100), (405, 110), (392, 200), (385, 240), (398, 255), (405, 280),
    (400, 305), (385, 320), (360, 326), (338, 318), (327, 300), (328, 275), (340, 255), (360, 243),
    (375, 238), (383, 205)]
# The wooden table, outside the saucer, the cup and the dark corner top left; two parts,
# above and below the line through the saucer's leftmost and rightmost points.
COFFEE_TABLE_TOP = [
    (0, 95), (115, 0), (600, 0), (600, 226), (480, 226), (465, 160), (440, 118), (418, 100),
    (422, 72), (412, 68), (405, 60), (385, 38), (350, 22), (300, 16), (250, 18), (210, 28),
    (185, 45), (175, 75), (175, 90), (150, 100), (120, 120), (95, 160), (80, 195), (77, 230),
    (0, 230)]
COFFEE_TABLE_BOTTOM = [
    (0, 230), (77, 230), (80, 270), (100, 310), (150, 355), (210, 380), (280, 388), (350, 380),
    (420, 345), (465, 290), (480, 226), (600, 226), (600, 400), (0, 400)]

ASTRONAUT_PERSON = [  # astronaut.png 512x512: Eileen Collins, without the helmet she holds
    (225, 15), (260, 18), (290, 38), (300, 70), (297, 110), (290, 125), (272, 138), (268, 158),
    (285, 168), (298, 185), (305, 215),
    (300, 245), (330, 265), (350, 285), (360, 320), (362, 345), (330, 360), (300, 385), (285, 420),
    (278, 470), (275, 512), (25, 512), (20, 450), (25, 360), (35, 310), (55, 275), (85, 255),
    (115, 245), (112, 215), (118, 190), (135, 168), (165, 155), (160, 125), (153, 90), (158, 55),
    (185, 25)]
CHELSEA_CAT = [  # chelsea.png 451x300: the cat's face fills all but the blurred right edge
    (0, 0), (370, 0), (372, 30), (360, 60), (362, 100), (365, 140), (355, 180), (345, 220),
    (340, 260), (345, 300), (0, 300)]
# ----------------------------------------------------------------- geometry helpers


def clip_polygon(points, box):
    """Sutherland-Hodgman clip of a polygon to the box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    edges = [(lambda p: p[0] >= x0, lambda a, b: _cross_x(a, b, x0)),
             (lambda p: p[0] <= x1, lambda a, b: _cross_x(a, b, x1)),
             (lambda p: p[1] >= y0, lambda a, b: _cross_y(a, b, y0)),
             (lambda p: p[1] <= y1, lambda a, b: _cross_y(a, b, y1))]
    out = list(points)
    for inside, cross in edges:
        pts, out = out, []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
    return out


def _cross_x(a, b, x):
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + t * (b[1] - a[1]))


def _cross_y(a, b, y):
    t = (y - a[1]) / (b[1] - a[1])
    return (a[0] + t * (b[0] - a[0]), y)


def place(points, src_box, dst_box):
    """Map polygon points from a source crop box to a destination box, clipped to it."""
    sx0, sy0, sx1, sy1 = src_box
    dx0, dy0, dx1, dy1 = dst_box
    kx, ky = (dx1 - dx0) / (sx1 - sx0), (dy1 - dy0) / (sy1 - sy0)
    clipped = clip_polygon(points, src_box)
    return [(dx0 + (x - sx0) * kx, dy0 + (y - sy0) * ky) for x, y in clipped]


def paste(canvas: Image.Image, photo: Image.Image, src_box, dst_box) -> None:
    size = (dst_box[2] - dst_box[0], dst_box[3] - dst_box[1])
    canvas.paste(photo.crop(src_box).resize(size, Image.Resampling.LANCZOS), dst_box[:2])


# ----------------------------------------------------------------- the demo images


def collage(canvas: Image.Image, panels) -> list:
    """Paste (photo, source box, canvas box, class, polygon) panels; their annotations."""
    objects = []
    for image, src, dst, name, polygon in panels:
        paste(canvas, image, src, dst)
        objects.append((name, [place(polygon, src, dst)]))
    return objects


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def build_images():
    """[(file_name, PIL image, [(category name, [polygon, ...]), ...]), ...]"""
    coffee = photo("coffee")
    scenes = [("coffee.jpg", coffee, [
        ("cup", [COFFEE_CUP]), ("spoon", [COFFEE_SPOON]),
        ("dining table", [COFFEE_TABLE_TOP, COFFEE_TABLE_BOTTOM])])]

    # astronaut | chelsea, side by side on a 480x480 canvas.
    astronaut, chelsea = photo("astronaut"), photo("chelsea")
    canvas = Image.new("RGB", (480, 480))
    panels = [(astronaut, (100, 0, 356, 512), (0, 0, 240, 480), "person", ASTRONAUT_PERSON),
              (chelsea, (175, 0, 325, 300), (240, 0, 480, 480), "cat", CHELSEA_CAT)]
    scenes.append(("astronaut_chelsea.jpg", canvas, collage(canvas, panels)))

    # astronaut | chelsea | coffee, three strips on a 480x480 canvas: a three-concept scene.
    canvas = Image.new("RGB", (480, 480))
    panels = [(astronaut, (142, 0, 312, 510), (0, 0, 160, 480), "person", ASTRONAUT_PERSON),
              (chelsea, (190, 0, 290, 300), (160, 0, 320, 480), "cat", CHELSEA_CAT),
              (coffee, (225, 0, 358, 400), (320, 0, 480, 480), "cup", COFFEE_CUP)]
    scenes.append(("astronaut_chelsea_coffee.jpg", canvas, collage(canvas, panels)))
    return scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories-from", type=Path,
                        default=ROOT.parent / "shared" / "coco-sample" / "annotations" / "instances_train2017.json")
    args = parser.parse_args()
    if not args.categories_from.exists():
        args.categories_from = Path("/work/shared/coco-sample/annotations/instances_train2017.json")
    categories = json.loads(args.categories_from.read_text())["categories"]
    cat_id = {c["name"]: c["id"] for c in categories}

    (OUT / SPLIT).mkdir(parents=True, exist_ok=True)
    (OUT / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, (file_name, image, objects) in enumerate(build_images(), start=1):
        image.save(OUT / SPLIT / file_name, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        w, h = image.size
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h, "license": 1})
        for name, polygons in objects:
            flat = [[round(float(v), 1) for point in poly for v in point] for poly in polygons]
            rle = mask_utils.merge(mask_utils.frPyObjects(flat, h, w))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[name],
                "segmentation": flat, "area": float(mask_utils.area(rle)),
                "bbox": [round(float(v), 1) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    coco = {
        "info": {"description": "bas demo source: scikit-image sample photos with hand-drawn polygons",
                 "version": "1.0", "year": 2026},
        "licenses": [{"id": 1, "name": "see bas/data/demo/README.md (CC0 / public domain)",
                      "url": ""}],
        "categories": categories, "images": images, "annotations": annotations,
    }
    (OUT / "annotations" / f"instances_{SPLIT}.json").write_text(json.dumps(coco, separators=(",", ":")) + "\n")
    print(f"wrote {len(images)} images, {len(annotations)} annotations to {OUT}")


if __name__ == "__main__":
    main()
