"""`bas coco fetch`: a COCO root holding only what the scene selection needs.

COCO 2017 is 18 GB of images, of which the protocol stages about 50. This module fetches
the annotations (COCO ships all splits' in one zip), runs the selection of `bas.scenes.coco`
on them, and downloads only the images it picks, each from its `coco_url` (host replaced by
`scenes.fetch.base_url`, so a mirror serves as well):

1. `<root>/annotations/instances_<split>.json`, extracted from the zip (the zip is kept, so
   the other split needs no second download);
2. images in the selection's rank order: an image qualifying on its annotations is
   downloaded to `<root>/<split>/<file_name>` and checked (it decodes, its size is the
   annotated one, it stages); a failed download is retried `scenes.fetch.retries` times, then
   skipped by name, and the selection moves on to the next image;
3. until `scenes.num_scenes` images stage.

`bas stage` on the root then selects exactly these scenes, as on a full download: every
image ranked before the last one picked either failed the rules on its annotations (then
its file is not needed) or is here. Downloads resume: a file already complete is kept, a
half-written one (`.part`) continues with an HTTP Range request.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from bas.config import ScenesConfig
from bas.errors import DataError
from bas.io import atomic_write_bytes
from bas.scenes.coco import CocoSource, ImageEntry, Skipped, build_scene, ranked_image_ids, read_annotations, \
    select_concepts

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass
class FetchReport:
    root: Path
    split: str
    num_requested: int
    picked: list[str] = field(default_factory=list)       # file names of the images that stage
    downloaded: list[str] = field(default_factory=list)   # ... of which fetched by this run
    failed: list[Skipped] = field(default_factory=list)   # images skipped after their retries
    bytes_downloaded: int = 0

    def summary(self) -> str:
        kept = len(self.picked) - len([n for n in self.downloaded if n in self.picked])
        return (f"{len(self.picked)}/{self.num_requested} scene images in {self.root / self.split} "
                f"({len(self.downloaded)} downloaded, {kept} already here, {len(self.failed)} skipped; "
                f"{self.bytes_downloaded / 1e6:.1f} MB fetched). Stage them with: "
                f"bas stage --coco-root {self.root} --split {self.split}")


def image_url(base_url: str, entry: ImageEntry, split: str) -> str:
    """The image's `coco_url` on `base_url`'s host (its path kept), or <base>/<split>/<file_name>."""
    path = urlsplit(entry.coco_url).path if entry.coco_url else f"/{split}/{entry.file_name}"
    return base_url.rstrip("/") + path


def download(url: str, target: Path, timeout: float, progress: Optional[Callable[[int], None]] = None) -> int:
    """Download `url` to `target` through `<target>.part`, resuming a partial file; bytes read."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    read = 0
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:   # the partial file is already whole
            part.replace(target)
            return 0
        raise
    with response:
        mode = "ab" if have and response.status == 206 else "wb"   # 200: the server ignored Range
        with open(part, mode) as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                read += len(chunk)
                if progress:
                    progress(len(chunk))
    part.replace(target)
    return read


def check_image(path: Path, entry: ImageEntry) -> Optional[str]:
    """Why the file is not the annotated image (None when it is)."""
    try:
        with Image.open(path) as image:
            image.load()
            size = image.size
    except FileNotFoundError:
        return "not downloaded"
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return f"does not decode ({err})"
    if size != (entry.width, entry.height):
        return f"is {size[0]}x{size[1]}, the annotations say {entry.width}x{entry.height}"
    return None


def fetch_annotations(root: Path, split: str, fetch_cfg, progress: bool = True) -> Path:
    """`<root>/annotations/instances_<split>.json`, from COCO's annotations zip unless it is there."""
    target = root / "annotations" / f"instances_{split}.json"
    if target.exists():
        return target
    zip_path = root / "annotations" / Path(fetch_cfg.annotations_zip).name   # kept: it holds every split
    url = f"{fetch_cfg.base_url.rstrip('/')}/{fetch_cfg.annotations_zip.lstrip('/')}"
    member = f"annotations/instances_{split}.json"
    if not _valid_zip(zip_path):
        zip_path.unlink(missing_ok=True)
        _with_retries(lambda: _download_with_bar(url, zip_path, fetch_cfg.timeout_seconds, progress),
                      fetch_cfg, f"COCO annotations {url}")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            if member not in archive.namelist():
                found = sorted(n for n in archive.namelist() if n.startswith("annotations/instances_"))
                raise DataError(f"{zip_path} has no {member} (it has: {', '.join(found) or 'no instances file'}); "
                                f"is --split right?")
            atomic_write_bytes(target, archive.read(member))
    except zipfile.BadZipFile as err:
        raise DataError(f"{zip_path} (from {url}) is not a zip file: {err}; delete it and run again") from None
    return target


def _valid_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile):
        return False


def _download_with_bar(url: str, target: Path, timeout: float, progress: bool) -> int:
    with tqdm(desc=target.name, unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
        return download(url, target, timeout, bar.update)


def _with_retries(action: Callable[[], int], fetch_cfg, what: str) -> int:
    delay = fetch_cfg.retry_delay_seconds
    for attempt in range(1, fetch_cfg.retries + 1):
        try:
            return action()
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            if attempt == fetch_cfg.retries:
                raise DataError(f"{what}: {err} (after {attempt} tries)") from None
            log.warning("%s: %s; try %d of %d in %.0f s", what, err, attempt + 1, fetch_cfg.retries, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def fetch_coco(scenes_cfg: ScenesConfig, root: str | Path, split: str, progress: bool = True) -> FetchReport:
    """Fetch the annotations of `split` and the images the selection picks into `root`."""
    root = Path(root)
    fetch_cfg = scenes_cfg.fetch
    fetch_annotations(root, split, fetch_cfg, progress)
    source = CocoSource(root, split)
    coco = read_annotations(source)
    report = FetchReport(root, split, scenes_cfg.num_scenes)
    skipped: list[Skipped] = []
    with tqdm(total=scenes_cfg.num_scenes, desc=f"COCO {split} images", unit="image", disable=not progress) as bar:
        for image_id in ranked_image_ids(coco, scenes_cfg.selection_seed):
            if len(report.picked) == scenes_cfg.num_scenes:
                break
            entry = coco.images[image_id]
            candidate = select_concepts(coco, entry, scenes_cfg, skipped)
            if candidate is None:
                continue
            if not _fetch_image(source, entry, fetch_cfg, report):
                continue
            if build_scene(source, coco, candidate, scenes_cfg, skipped) is None:
                continue   # the reason is in `skipped`; staging skips it the same way
            report.picked.append(entry.file_name)
            bar.update(1)
    for item in report.failed:
        log.warning("skipped %s", item)
    if len(report.picked) < scenes_cfg.num_scenes:
        log.warning("only %d of %d scenes: %s has no more qualifying images", len(report.picked),
                    scenes_cfg.num_scenes, source.annotation_file)
    return report


def _fetch_image(source: CocoSource, entry: ImageEntry, fetch_cfg, report: FetchReport) -> bool:
    """Make `<root>/<split>/<file_name>` the annotated image; False (recorded) when it cannot be."""
    target = source.image_dir / entry.file_name
    if target.exists() and check_image(target, entry) is None:
        return True
    url = image_url(fetch_cfg.base_url, entry, source.split)
    delay = fetch_cfg.retry_delay_seconds
    why = ""
    for attempt in range(1, fetch_cfg.retries + 1):
        try:
            report.bytes_downloaded += download(url, target, fetch_cfg.timeout_seconds)
            why = check_image(target, entry) or ""
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            why = f"download failed: {err}"
        if not why:
            report.downloaded.append(entry.file_name)
            return True
        target.unlink(missing_ok=True)      # a bad file is fetched again from the start
        target.with_name(target.name + ".part").unlink(missing_ok=True)
        if attempt < fetch_cfg.retries:
            log.info("%s (%s): %s; retrying", entry.label(), url, why)
            time.sleep(delay)
            delay *= 2
    report.failed.append(Skipped("image", entry.label(), f"{url}: {why} (after {fetch_cfg.retries} tries)"))
    return False
