"""`bas coco fetch` against a COCO server on 127.0.0.1 serving ../shared/coco-sample."""

import dataclasses
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest

from bas import config
from bas.cli import main
from bas.scenes import load_scenes, stage_coco
from bas.scenes.coco import CocoSource
from bas.scenes.coco_fetch import download, fetch_coco

NUM_SCENES = 3


class CocoServer:
    """A COCO image server: /annotations/annotations_trainval2017.zip and /train2017/<file>.

    Range requests are answered with 206; `missing` names answer 404, `corrupt` names serve
    their first bytes only; `requests` counts what was asked for.
    """

    def __init__(self, sample: Path, zip_bytes: bytes):
        self.sample, self.zip_bytes = sample, zip_bytes
        self.missing: set[str] = set()
        self.corrupt: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                if self.path == "/annotations/annotations_trainval2017.zip":
                    body = server.zip_bytes
                elif self.path.startswith("/train2017/") and name not in server.missing \
                        and (server.sample / "train2017" / name).is_file():
                    body = (server.sample / "train2017" / name).read_bytes()
                    if name in server.corrupt:
                        body = body[: len(body) // 3]
                else:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(coco_root):
    # COCO's zip holds every split's annotations under annotations/.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(coco_root / "annotations" / "instances_train2017.json", "annotations/instances_train2017.json")
        archive.writestr("annotations/captions_train2017.json", json.dumps({"annotations": []}))
    srv = CocoServer(coco_root, buffer.getvalue())
    yield srv
    srv.close()


def _cfg(server, **scenes):
    cfg = config.load("params.yaml")
    fetch = dataclasses.replace(cfg.scenes.fetch, base_url=server.url, retry_delay_seconds=0.0, retries=2)
    return dataclasses.replace(cfg.scenes, num_scenes=NUM_SCENES, resolution=64, fetch=fetch, **scenes)


def _scenes(scenes_cfg, root, out):
    stage_coco(dataclasses.replace(scenes_cfg, coco_root=str(root)), out, source=CocoSource(Path(root), "train2017"))
    return [(s.scene_id, s.content_hash) for s in load_scenes(out)]


def test_fetch_gets_only_the_picked_images_and_stages_the_same_scenes(server, coco_root, tmp_path):
    scenes_cfg = _cfg(server)
    report = fetch_coco(scenes_cfg, tmp_path / "coco", "train2017", progress=False)
    fetched = sorted(p.name for p in (tmp_path / "coco" / "train2017").iterdir())
    assert fetched == sorted(report.picked) and len(fetched) == NUM_SCENES and not report.failed
    assert (tmp_path / "coco" / "annotations" / "instances_train2017.json").read_bytes() == \
        (coco_root / "annotations" / "instances_train2017.json").read_bytes()
    direct = _scenes(scenes_cfg, coco_root, tmp_path / "direct")
    assert _scenes(scenes_cfg, tmp_path / "coco", tmp_path / "from-fetch") == direct
    assert [f"coco-train2017-{int(Path(n).stem)}" for n in report.picked] == [sid for sid, _ in direct]

    # A second run downloads nothing: the annotations and every image are already complete.
    server.requests.clear()
    again = fetch_coco(scenes_cfg, tmp_path / "coco", "train2017", progress=False)
    assert again.picked == report.picked and not again.downloaded and server.requests == []


def test_a_missing_or_corrupt_image_is_retried_then_skipped_and_the_selection_moves_on(server, coco_root, tmp_path):
    scenes_cfg = _cfg(server)
    first = fetch_coco(scenes_cfg, tmp_path / "probe", "train2017", progress=False).picked
    server.missing.add(first[0])
    server.corrupt.add(first[1])
    server.requests.clear()
    report = fetch_coco(scenes_cfg, tmp_path / "coco", "train2017", progress=False)
    assert [item.item for item in report.failed] == [f"image {int(Path(n).stem)} ({n})" for n in first[:2]]
    assert "404" in report.failed[0].reason and "does not decode" in report.failed[1].reason
    assert sum(r.endswith(first[0]) for r in server.requests) == 2    # scenes.fetch.retries
    assert sum(r.endswith(first[1]) for r in server.requests) == 2
    assert len(report.picked) == NUM_SCENES and report.picked[0] == first[2]
    assert not (tmp_path / "coco" / "train2017" / first[1]).exists()
    # Staging the fetched root gives the scenes of the sample without those two images.
    bare = tmp_path / "sample-without-two"
    (bare / "train2017").mkdir(parents=True)
    (bare / "annotations").symlink_to(coco_root / "annotations")
    for image in (coco_root / "train2017").iterdir():
        if image.name not in first[:2]:
            (bare / "train2017" / image.name).symlink_to(image)
    assert _scenes(scenes_cfg, tmp_path / "coco", tmp_path / "a") == _scenes(scenes_cfg, bare, tmp_path / "b")


def test_a_half_written_image_resumes_with_a_range_request(server, coco_root, tmp_path):
    name = sorted(p.name for p in (coco_root / "train2017").iterdir())[0]
    whole = (coco_root / "train2017" / name).read_bytes()
    target = tmp_path / name
    (tmp_path / f"{name}.part").write_bytes(whole[:1000])
    read = download(f"{server.url}/train2017/{name}", target, timeout=10)
    assert read == len(whole) - 1000 and target.read_bytes() == whole
    assert not (tmp_path / f"{name}.part").exists()


def test_cli_fetch_with_a_base_url(server, coco_root, tmp_path, capsys):
    assert main(["-S", "scenes.num_scenes=2", "-S", "scenes.fetch.retry_delay_seconds=0", "coco", "fetch",
                 "--split", "train2017", "--root", str(tmp_path / "coco"), "--base-url", server.url]) == 0
    out = capsys.readouterr().out
    assert "2/2 scene images" in out and f"bas stage --coco-root {tmp_path / 'coco'}" in out
    assert len(list((tmp_path / "coco" / "train2017").iterdir())) == 2
    # A split the zip does not hold is one clear error naming the zip and the member.
    assert main(["coco", "fetch", "--split", "val2017", "--root", str(tmp_path / "coco"),
                 "--base-url", server.url]) == 2
    assert "annotations/instances_val2017.json" in capsys.readouterr().err
