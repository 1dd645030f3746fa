"""The raters' web app: server-rendered pages over a `Study` (FastAPI + Jinja2).

Routes (TOKEN is the rater's opaque link token, TASK is `prompt` or `identity`):
  GET  /                         a neutral landing page
  GET  /r/TOKEN                  the rater's start page: instructions and progress
  GET  /r/TOKEN/TASK             the rater's current page of that task (or "all done")
  POST /r/TOKEN/TASK             submit it (form: question=..., rating_<item>=1..5); 303 to the next
  GET  /r/TOKEN/image/ITEM       a generated image, by its item's opaque id
  GET  /r/TOKEN/masked/QUESTION  the masked input object of an identity question
Refusals are a page with the reason and the matching status (404 unknown link or question,
409 replayed or full, 422 a bad rating). Nothing a rater sees names a method.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.concurrency import run_in_threadpool

from bas.errors import DataError
from bas.paths import SCENE_IMAGE_FILE, SCENE_JSON
from bas.ratings.questions import TASKS
from bas.ratings.store import Rater, RatingRefused, Study
from bas.scenes.masking import masked_concept

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 64 * 1024  # a page of a dozen ratings is well under 1 KB

# The questionnaires as BaS appendix B.3 words them.
INSTRUCTIONS = {
    "prompt": "For each of the following images, please rank on a scale of 1 to 5 its correspondence "
              "to this text description: {prompt}",
    "identity": "For each of the following image pairs, please rank on a scale of 1 to 5 if they contain "
                "the same object (1 means that they contain totally different objects and 5 means that "
                "they contain exactly the same object). The images can have different backgrounds",
}
SCALE_ENDS = {
    "prompt": ("Do not match at all", "Match perfectly"),
    "identity": ("Totally different objects", "Exactly the same object"),
}
TASK_TITLES = {"prompt": "Text correspondence", "identity": "Same object"}


def _masked_png(scenes_dir: Path, scene_id: str, concept_index: int) -> bytes:
    scene_dir = scenes_dir / scene_id
    try:
        meta = json.loads((scene_dir / SCENE_JSON).read_text())
        concept = next(c for c in meta["concepts"] if c["index"] == concept_index)
        image = Image.open(scene_dir / SCENE_IMAGE_FILE)
        mask = Image.open(scene_dir / concept["mask"])
    except (FileNotFoundError, StopIteration, KeyError) as err:
        raise DataError(f"{scene_dir}: cannot read concept {concept_index} ({err})") from None
    buf = io.BytesIO()
    masked_concept(image, mask).save(buf, format="PNG")
    return buf.getvalue()


def create_app(study: Study, storage_root: Path, scenes_dir: Path) -> FastAPI:
    app = FastAPI(title="Image rating study", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    storage_root = Path(storage_root)
    masked_png = functools.lru_cache(maxsize=256)(functools.partial(_masked_png, Path(scenes_dir)))

    @app.middleware("http")
    async def privacy_headers(request: Request, call_next):
        response = await call_next(request)
        # The link token is in the path: never send it on as a Referer.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def refusal(request: Request, message: str, status: int, token: str | None = None) -> HTMLResponse:
        return page(request, "error.html", status, message=message, token=token)

    def rater_or_none(token: str) -> Rater | None:
        return study.rater(token) if len(token) <= 128 else None

    bad_link = "This link is not valid. Please use the exact link you were given."

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return page(request, "index.html")

    @app.get("/r/{token}", response_class=HTMLResponse)
    def start(request: Request, token: str):
        rater = rater_or_none(token)
        if rater is None:
            return refusal(request, bad_link, 404)
        return page(request, "start.html", token=token, progress=study.progress(rater), titles=TASK_TITLES)

    @app.get("/r/{token}/{task}", response_class=HTMLResponse)
    def show(request: Request, token: str, task: str):
        rater = rater_or_none(token)
        if rater is None:
            return refusal(request, bad_link, 404)
        if task not in TASKS:
            return refusal(request, f"There is no task called {task!r} in this study.", 404, token)
        current = study.next_page(rater, task)
        progress = study.progress(rater)[task]
        if current is None:
            return page(request, "done.html", token=token, task=task, progress=progress, titles=TASK_TITLES)
        return page(request, f"{task}.html", token=token, task=task, page=current, progress=progress,
                    instruction=INSTRUCTIONS[task].split("{prompt}")[0], prompt=current.prompt_classes,
                    low=SCALE_ENDS[task][0], high=SCALE_ENDS[task][1], title=TASK_TITLES[task])

    @app.post("/r/{token}/{task}")
    async def submit(request: Request, token: str, task: str):
        rater = await run_in_threadpool(rater_or_none, token)
        if rater is None:
            return refusal(request, bad_link, 404)
        if task not in TASKS:
            return refusal(request, f"There is no task called {task!r} in this study.", 404, token)
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return refusal(request, "The submitted form is too large.", 413, token)
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            return refusal(request, "The submitted form is not valid UTF-8 text.", 400, token)
        question = fields.pop("question", "")
        ratings = {k[len("rating_"):]: v for k, v in fields.items() if k.startswith("rating_")}
        if set(fields) - {f"rating_{k}" for k in ratings}:
            unknown = sorted(set(fields) - {f"rating_{k}" for k in ratings})[0]
            return refusal(request, f"The form has a field this study does not know ({unknown[:40]!r}).", 422, token)
        try:
            await run_in_threadpool(study.submit, rater, task, question, ratings)
        except RatingRefused as err:
            log.info("refused a %s submission from %s: %s", task, rater.label, err)
            return refusal(request, str(err), err.status, token)
        log.info("stored a %s page from %s", task, rater.label)
        return RedirectResponse(f"/r/{token}/{task}", status_code=303)

    @app.get("/r/{token}/image/{item}")
    def image(token: str, item: str):
        if rater_or_none(token) is None:
            return Response(bad_link, status_code=404, media_type="text/plain")
        rel = study.item_image(item)
        if rel is None:
            return Response("Unknown image.", status_code=404, media_type="text/plain")
        return FileResponse(storage_root / rel, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/r/{token}/masked/{question}")
    def masked(token: str, question: str):
        if rater_or_none(token) is None:
            return Response(bad_link, status_code=404, media_type="text/plain")
        concept = study.identity_concept(question)
        if concept is None:
            return Response("Unknown question.", status_code=404, media_type="text/plain")
        return Response(masked_png(*concept), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400"})

    return app
