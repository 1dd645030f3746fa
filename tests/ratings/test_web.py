"""The raters' web app through its HTTP API (FastAPI TestClient): pages, refusals, resume,
assignment to distinct raters, images; and the `bas rate` CLI around it."""

import html
import io
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bas import paths
from bas.cli import main
from bas.ratings import open_study
from bas.ratings.app import create_app
from bas.ratings.store import AlreadyRated, QuestionFull

METHODS = ("break_a_scene", "textual_inversion_m", "dreambooth_m")


@pytest.fixture
def study_env(storage_root, cfg_for):
    cfg = cfg_for(storage_root)
    study = open_study(cfg)
    client = TestClient(create_app(study, paths.storage_root(cfg), paths.scenes_dir(cfg)), follow_redirects=False)
    return study, client, cfg


def _form(page_html: str) -> tuple[str, list[str]]:
    """(question public id, item public ids in page order) of a rating page."""
    question = re.search(r'name="question" value="([0-9a-f]+)"', page_html).group(1)
    return question, re.findall(r'name="rating_([0-9a-f]+)"', page_html)


def _msg(response) -> str:
    return html.unescape(response.text)


def _ratings(conn_path, rater_label=None) -> pd.DataFrame:
    with sqlite3.connect(conn_path) as conn:
        df = pd.read_sql("SELECT rt.label, q.public_id AS question, i.public_id AS item, r.rating, r.position"
                         " FROM ratings r JOIN raters rt ON rt.id = r.rater_id JOIN items i ON i.id = r.item_id"
                         " JOIN questions q ON q.id = r.question_id", conn)
    return df if rater_label is None else df[df.label == rater_label]


def _rate_page(client, token, task, values=None):
    page = client.get(f"/r/{token}/{task}")
    assert page.status_code == 200, page.text
    question, items = _form(page.text)
    values = values or [(i % 5) + 1 for i in range(len(items))]
    data = {"question": question, **{f"rating_{it}": str(v) for it, v in zip(items, values)}}
    return question, items, client.post(f"/r/{token}/{task}", data=data)


@pytest.mark.parametrize("task", ["prompt", "identity"])
def test_a_page_is_rated_and_stored(study_env, task):
    study, client, _ = study_env
    (label, token), = study.add_raters(1)
    question, items, response = _rate_page(client, token, task, values=[5, 1, 4])
    assert response.status_code == 303 and response.headers["location"] == f"/r/{token}/{task}"
    stored = _ratings(study.db_path, label).set_index("item")
    assert stored.loc[items, "rating"].tolist() == [5, 1, 4]
    assert stored.loc[items, "position"].tolist() == [0, 1, 2]
    assert (stored["question"] == question).all()
    # The next page is another question.
    assert _form(client.get(f"/r/{token}/{task}").text)[0] != question


def test_pages_follow_the_questionnaire_wording_and_never_name_a_method(study_env):
    study, client, _ = study_env
    (_, token), = study.add_raters(1)
    prompt = client.get(f"/r/{token}/prompt").text
    assert ("For each of the following images, please rank on a scale of 1 to 5 its correspondence "
            "to this text description:") in prompt
    assert "Do not match at all" in prompt and "Match perfectly" in prompt
    assert re.search(r"“a photo of a [a-z]+( and a [a-z]+)* (at the beach|in the snow)”", prompt)
    identity = client.get(f"/r/{token}/identity").text
    assert ("For each of the following image pairs, please rank on a scale of 1 to 5 if they contain the same "
            "object (1 means that they contain totally different objects and 5 means that they contain exactly "
            "the same object). The images can have different backgrounds") in identity
    assert identity.count(f"/r/{token}/masked/") == len(METHODS)  # the object beside each image
    for page_html in (prompt, identity, client.get(f"/r/{token}").text):
        lowered = page_html.lower()
        assert not any(m in lowered or m.replace("_", "-") in lowered for m in METHODS)
        assert "runs/" not in page_html and "<asset" not in page_html


def test_replayed_submission_is_refused(study_env):
    study, client, _ = study_env
    (label, token), = study.add_raters(1)
    question, items, first = _rate_page(client, token, "prompt", values=[2, 2, 2])
    assert first.status_code == 303
    replay = client.post(f"/r/{token}/prompt",
                         data={"question": question, **{f"rating_{it}": "5" for it in items}})
    assert replay.status_code == 409
    assert "already rated this question" in _msg(replay)
    assert _ratings(study.db_path, label)["rating"].tolist() == [2, 2, 2]  # the first answer stands
    with pytest.raises(AlreadyRated):
        study.submit(study.rater(token), "prompt", question, {it: "1" for it in items})


@pytest.mark.parametrize("bad, message", [
    ("0", "must be a whole number from 1 to 5, got '0'"),
    ("6", "must be a whole number from 1 to 5, got '6'"),
    ("3.5", "got '3.5'"),
    ("-1", "got '-1'"),
    ("three", "got 'three'"),
    ("", "has no rating"),
])
def test_rating_outside_one_to_five_is_refused(study_env, bad, message):
    study, client, _ = study_env
    (label, token), = study.add_raters(1)
    question, items = _form(client.get(f"/r/{token}/prompt").text)
    data = {"question": question, f"rating_{items[0]}": "3", f"rating_{items[1]}": bad, f"rating_{items[2]}": "4"}
    response = client.post(f"/r/{token}/prompt", data=data)
    assert response.status_code == 422
    assert message in _msg(response) and "image 2" in _msg(response).lower()
    assert _ratings(study.db_path, label).empty  # nothing of the page was stored
    # The same page can still be answered properly.
    data[f"rating_{items[1]}"] = "1"
    assert client.post(f"/r/{token}/prompt", data=data).status_code == 303


def test_incomplete_or_foreign_forms_are_refused(study_env):
    study, client, _ = study_env
    (label, token), = study.add_raters(1)
    question, items = _form(client.get(f"/r/{token}/prompt").text)
    missing = client.post(f"/r/{token}/prompt", data={"question": question, f"rating_{items[0]}": "3"})
    assert missing.status_code == 422 and "has no rating" in _msg(missing)
    full = {"question": question, **{f"rating_{it}": "3" for it in items}}
    extra = client.post(f"/r/{token}/prompt", data={**full, "rating_deadbeef00000000": "3"})
    assert extra.status_code == 422 and "not on this page" in _msg(extra)
    odd = client.post(f"/r/{token}/prompt", data={**full, "method": "break_a_scene"})
    assert odd.status_code == 422 and "does not know" in _msg(odd)
    unknown = client.post(f"/r/{token}/prompt", data={**full, "question": "0123456789abcdef"})
    assert unknown.status_code == 404 and "Unknown question" in _msg(unknown)
    wrong_task = client.post(f"/r/{token}/identity", data=full)  # a prompt question sent as identity
    assert wrong_task.status_code == 404 and "Unknown question" in _msg(wrong_task)
    assert _ratings(study.db_path, label).empty


def test_unknown_link_is_refused(study_env):
    study, client, _ = study_env
    study.add_raters(1)
    for url in ("/r/not-a-token", "/r/not-a-token/prompt"):
        response = client.get(url)
        assert response.status_code == 404 and "This link is not valid" in _msg(response)
    assert client.post("/r/not-a-token/prompt", data={"question": "x"}).status_code == 404
    assert client.get("/r/not-a-token/image/abc").status_code == 404


def test_a_rater_can_stop_and_come_back(study_env):
    study, client, cfg = study_env
    (label, token), = study.add_raters(1)
    first, order = _form(client.get(f"/r/{token}/prompt").text)
    # Reload, or a new browser/server process on the same database: the same page, same order.
    assert _form(client.get(f"/r/{token}/prompt").text) == (first, order)
    fresh = TestClient(create_app(open_study(cfg), paths.storage_root(cfg), paths.scenes_dir(cfg)))
    assert _form(fresh.get(f"/r/{token}/prompt").text) == (first, order)
    assert "Pages rated so far: <strong>0</strong>" in fresh.get(f"/r/{token}").text
    _rate_page(fresh, token, "prompt")
    assert "Pages rated so far: <strong>1</strong>" in client.get(f"/r/{token}").text
    assert _form(client.get(f"/r/{token}/prompt").text)[0] != first


def test_each_question_goes_to_distinct_raters_up_to_ratings_per_question(study_env):
    study, client, _ = study_env  # 6 prompt pages, ratings_per_question = 2
    raters = study.add_raters(3)
    seen = {label: [] for label, _ in raters}
    for _ in range(10):  # raters take turns until nothing is left for anyone
        for label, token in raters:
            page = client.get(f"/r/{token}/prompt")
            if "There are no more pages for you" in page.text:
                continue
            question, _, response = _rate_page(client, token, "prompt")
            assert response.status_code == 303
            seen[label].append(question)
    stored = _ratings(study.db_path)
    per_question = stored.groupby("question")["label"].nunique()
    assert len(per_question) == 6 and (per_question == 2).all()  # every page, exactly 2 raters
    assert all(len(qs) == len(set(qs)) for qs in seen.values())  # nobody saw a page twice
    assert stored.groupby(["label", "item"]).size().max() == 1
    assert sum(len(qs) for qs in seen.values()) == 12
    assert study.summary()["prompt"] == {"pages": 6, "ratings": 12 * len(METHODS), "complete_pages": 6}


def test_image_order_is_random_per_rater(study_env):
    study, client, _ = study_env
    raters = study.add_raters(4)
    orders = {}
    for label, token in raters:
        for _ in range(6):  # each rater answers every page (ratings_per_question 2 -> pages run out)
            page = client.get(f"/r/{token}/prompt")
            if "There are no more pages" in page.text:
                break
            question, items = _form(page.text)
            orders.setdefault(question, []).append(tuple(items))
            _rate_page(client, token, "prompt")
    # Different raters of a page see its images in different orders somewhere in the study.
    assert any(len(set(o)) > 1 for o in orders.values())
    # The stored positions are the displayed order.
    stored = _ratings(study.db_path)
    for question, shown in orders.items():
        for label in stored[stored.question == question].label.unique():
            rows = stored[(stored.question == question) & (stored.label == label)].sort_values("position")
            assert tuple(rows["item"]) in shown


def test_a_reservation_that_ran_out_can_lose_its_slot(storage_root, cfg_for):
    one = open_study(cfg_for(storage_root, ratings_per_question=1))
    (_, a), (_, b) = one.add_raters(2)
    ra, rb = one.rater(a), one.rater(b)
    t0 = 1_000_000.0
    page_a = one.next_page(ra, "prompt", now=t0)
    assert one.next_page(rb, "prompt", now=t0 + 1).public_id != page_a.public_id  # held for A
    # An hour later A's hold is gone: B may be given A's page (least engaged first).
    later = t0 + one.reservation_s + 10
    taken = None
    for _ in range(6):
        page_b = one.next_page(rb, "prompt", now=later)
        if page_b is None or page_b.public_id == page_a.public_id:
            taken = page_b
            break
        one.submit(rb, "prompt", page_b.public_id, {it.public_id: "3" for it in page_b.items}, now=later)
    assert taken is not None and taken.public_id == page_a.public_id
    one.submit(rb, "prompt", taken.public_id, {it.public_id: "4" for it in taken.items}, now=later)
    with pytest.raises(QuestionFull, match="already has all the ratings it needs"):
        one.submit(ra, "prompt", page_a.public_id, {it.public_id: "5" for it in page_a.items}, now=later + 1)


def test_images_are_served_by_opaque_id(study_env, storage_root):
    study, client, _ = study_env
    (_, token), = study.add_raters(1)
    page_html = client.get(f"/r/{token}/identity").text
    srcs = re.findall(r'src="(/r/[^"]+)"', page_html)
    generated = [s for s in srcs if "/image/" in s]
    masked = {s for s in srcs if "/masked/" in s}
    assert len(generated) == len(METHODS) and len(masked) == 1
    for src in generated:
        response = client.get(src)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        rel = study.item_image(src.rsplit("/", 1)[1])
        assert response.content == (storage_root / rel).read_bytes()
    # The masked input object: the scene image inside the concept's mask, black outside.
    response = client.get(masked.pop())
    shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    scene_id, concept = study.identity_concept(re.search(r"/masked/([0-9a-f]+)", page_html).group(1))
    scene = np.asarray(Image.open(storage_root / "scenes" / scene_id / "image.png").convert("RGB"))
    inside = np.asarray(Image.open(storage_root / "scenes" / scene_id / f"mask_{concept}.png")) > 0
    assert inside.any() and (~inside).any()
    assert (shown[inside] == scene[inside]).all() and (shown[~inside] == 0).all()


def test_cli_invite_prints_links_and_stores_only_hashes(storage_root, capsys):
    args = ["-S", "ratings.num_prompt_questions=4", "-S", "ratings.num_identity_questions=4",
            "rate", "invite", "--run", str(storage_root), "--n", "3", "--base-url", "http://example.org:9000/"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    tokens = []
    for i, line in enumerate(lines, 1):
        label, link = line.split("\t")
        assert label == f"r{i:03d}"
        match = re.fullmatch(r"http://example\.org:9000/r/([A-Za-z0-9_-]{32})", link)
        tokens.append(match.group(1))
    assert len(set(tokens)) == 3
    db = storage_root / "ratings.sqlite"
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert not any(t in dump for t in tokens)
    assert main(args[:4] + ["rate", "invite", "--run", str(storage_root), "--n", "1"]) == 0
    assert capsys.readouterr().out.startswith("r004\thttp://127.0.0.1:8000/r/")


def test_cli_export_writes_every_rating(study_env, storage_root, tmp_path, capsys):
    study, client, _ = study_env
    raters = study.add_raters(2)
    for _, token in raters:
        _rate_page(client, token, "prompt", values=[1, 2, 3])
        _rate_page(client, token, "identity", values=[5, 4, 3])
    out = tmp_path / "ratings.parquet"
    overrides = ["-S", "ratings.num_prompt_questions=6", "-S", "ratings.num_identity_questions=6",
                 "-S", "ratings.ratings_per_question=2"]
    assert main(overrides + ["rate", "export", "--run", str(storage_root), "--out", str(out)]) == 0
    assert "12 ratings by 2 raters" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert len(df) == 12 and set(df["rater"]) == {"r001", "r002"}
    assert sorted(df[df.task == "prompt"]["rating"]) == [1, 1, 2, 2, 3, 3]
    assert sorted(df[df.task == "identity"]["rating"]) == [3, 3, 4, 4, 5, 5]
    assert set(df["method"]) == set(METHODS)
    assert df[df.task == "prompt"]["concept_index"].isna().all()
    identity = df[df.task == "identity"]
    assert identity["concept_index"].notna().all() and identity["class_name"].notna().all()
    assert (df.groupby(["rater", "question"])["method"].nunique() == len(METHODS)).all()
    # Default output: <run>/ratings.parquet.
    assert main(overrides + ["rate", "export", "--run", str(storage_root)]) == 0
    assert len(pd.read_parquet(storage_root / "ratings.parquet")) == 12
